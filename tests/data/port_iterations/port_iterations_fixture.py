"""Makes a K-iteration training fixture of the reference port (BigGAN-PyTorch) in float64.

The one-iteration fixtures (`../port_step/`) give every SN weight a dominant singular value
with its exact singular vector stored, so that no power-iteration schedule can change their
σ. This one starts where a training run starts: the reference's own initialisation for the
seed (orthogonal weights, PyTorch's default biases, Gaussian `u0`), and runs K iterations of
`train_fns.GAN_training_function` (`num_D_steps` D updates on `cat[G(z), x]`, then one G
update) in float64, so that what accumulates over iterations is compared too: each SN
layer's `u` (one power iteration per training forward pass), Adam's moments and step
count, and the batch norms' moving statistics.

One change to the initialisation: D's class embedding gets twice its top singular value,
with the exact singular vector as `u0`. tf_biggan keeps that layer's power-iteration vector
on the other side of the table (docs/quality.md, "One iteration against the reference's"),
and an orthogonal table, whose singular values are all equal, gives the two sides' σ
gradients different random directions; with a dominant direction both start on it.

Float64, because a float32 run's rounding can grow over iterations (a ReLU input within
rounding of zero flips, Adam's first steps are nearly the sign of each gradient): at ch 16
and batch 16, the reference's float32 and float64 runs of the same ten iterations differ by
a median 2% of a tensor's change.

Writes OUT/ with the one-iteration fixture's files (`config.json`, `G.pth`, `D.pth`,
`batch.npz`, `G_after.pth`, `D_after.pth`, `losses.json`). Differences: `config.json` has
`iterations` (K); every `batch.npz` array has a leading axis of K; the after-files are
float64 and hold the state after the K-th iteration, `losses.json` the K-th iteration's
losses.

Run with the reference's venv (`../shared/reference/setup.sh`), from `../shared/reference/`:
  $PY <repo>/tests/data/port_iterations/port_iterations_fixture.py OUT --iterations 10 ...
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.getcwd())
import peer_common as pc  # noqa: E402  (../shared/reference, the working directory)

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--iterations", type=int, default=10)
ap.add_argument("--res", type=int, default=32)
ap.add_argument("--ch", type=int, default=8)
ap.add_argument("--bs", type=int, default=8)
ap.add_argument("--num_D_steps", type=int, default=2)
ap.add_argument("--n_classes", type=int, default=10)
ap.add_argument("--G_lr", type=float, default=2e-4)
ap.add_argument("--D_lr", type=float, default=2e-4)
ap.add_argument("--dim_z", type=int, default=120)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

torch.manual_seed(a.seed)
cfg = pc.imagenet_config(
    res=a.res,
    ch=a.ch,
    n_classes=a.n_classes,
    attn="0",
    dim_z=a.dim_z,
    G_lr=a.G_lr,
    D_lr=a.D_lr,
    num_D_steps=a.num_D_steps,
)
G, D, GD, _ = pc.build(cfg)  # float32, as training initialises them

with torch.no_grad():
    table = D.embed.weight.double()
    U, S, Vh = torch.linalg.svd(table, full_matrices=False)
    S[0] *= 2.0
    D.embed.weight.copy_(((U * S) @ Vh).float())
    D.embed.u0.copy_(U[:, 0].float()[None])
    D.embed.sv0.fill_(float(S[0]))

K, steps, B, dz = a.iterations, a.num_D_steps, a.bs, G.dim_z
g = torch.Generator().manual_seed(a.seed + 1)
# Smooth random "real" images in [-1, 1], as the one-iteration fixtures' harness makes them.
x = torch.tanh(
    F.interpolate(
        torch.randn(K * steps * B, 3, a.res // 4, a.res // 4, generator=g),
        size=a.res,
        mode="bilinear",
        align_corners=False,
    )
    * 1.5
).view(K, steps, B, 3, a.res, a.res)
batch = {
    "x": x,
    "y": torch.randint(0, a.n_classes, (K, steps, B), generator=g),
    "z_d": torch.randn(K, steps, B, dz, generator=g),
    "y_fake_d": torch.randint(0, a.n_classes, (K, steps, B), generator=g),
    "z_g": torch.randn(K, B, dz, generator=g),
    "y_g": torch.randint(0, a.n_classes, (K, B), generator=g),
}
os.makedirs(a.out, exist_ok=True)
torch.save(G.state_dict(), os.path.join(a.out, "G.pth"))
torch.save(D.state_dict(), os.path.join(a.out, "D.pth"))
np.savez(os.path.join(a.out, "batch.npz"), **{k: v.numpy() for k, v in batch.items()})

G.double()
D.double()
# The optimizers the port's models make for themselves, over the float64 parameters.
for net, prefix in ((G, "G"), (D, "D")):
    net.optim = torch.optim.Adam(
        net.parameters(),
        lr=cfg[f"{prefix}_lr"],
        betas=(cfg[f"{prefix}_B1"], cfg[f"{prefix}_B2"]),
        weight_decay=0,
        eps=cfg["adam_eps"],
    )
G.train()
D.train()
for k in range(K):
    losses = {"d_loss_real": [], "d_loss_fake": []}
    pc.toggle_grad(D, True)
    pc.toggle_grad(G, False)
    for s in range(steps):
        D.optim.zero_grad()
        D_fake, D_real = GD(
            batch["z_d"][k, s].double(),
            batch["y_fake_d"][k, s],
            batch["x"][k, s].double(),
            batch["y"][k, s],
            train_G=False,
            split_D=False,
        )
        loss_real, loss_fake = F.relu(1.0 - D_real).mean(), F.relu(1.0 + D_fake).mean()
        (loss_real + loss_fake).backward()
        D.optim.step()
        losses["d_loss_real"].append(loss_real.item())
        losses["d_loss_fake"].append(loss_fake.item())
    pc.toggle_grad(D, False)
    pc.toggle_grad(G, True)
    G.optim.zero_grad()
    G_loss = -GD(batch["z_g"][k].double(), batch["y_g"][k], train_G=True, split_D=False).mean()
    G_loss.backward()
    G.optim.step()
    losses["g_loss"] = G_loss.item()

torch.save(G.state_dict(), os.path.join(a.out, "G_after.pth"))
torch.save(D.state_dict(), os.path.join(a.out, "D_after.pth"))
keys = [
    "resolution",
    "G_ch",
    "D_ch",
    "n_classes",
    "G_attn",
    "D_attn",
    "G_shared",
    "hier",
    "shared_dim",
    "dim_z",
    "BN_eps",
    "SN_eps",
    "G_lr",
    "D_lr",
    "G_B1",
    "G_B2",
    "D_B1",
    "D_B2",
    "adam_eps",
    "num_D_steps",
]
config = {**{k: cfg[k] for k in keys}, "batch_size": B, "iterations": K}
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
with open(os.path.join(a.out, "losses.json"), "w") as f:
    json.dump(losses, f)
print(json.dumps(losses))
