"""Training iterations of tf_biggan against the reference port's, from a fixture.

    python tools/port_step_parity.py FIXTURE_DIR --output=AFTER.npz [--dtype=float64]

FIXTURE_DIR is written by the reference harness `port_step_fixture.py` (one iteration of
BigGAN-PyTorch's `train_fns.GAN_training_function`; format in tests/data/port_step/README.md):
`config.json`, `G.pth`, `D.pth` (before), `batch.npz` (reals, their labels, and G's latents
and classes of every update), and, to compare with, `G_after.pth`, `D_after.pth`,
`losses.json`. A fixture of several iterations (tests/data/port_iterations/) says so with
`"iterations": K` in `config.json` and a leading axis of K on every `batch.npz` array; the
after-files and losses are then those of the K-th iteration, and the tool runs the step K
times (the comparison below is of Δ over all K).

The tool builds G and D from `G.pth` / `D.pth` with the project's converter (SN vectors
included), sets Adam from `config.json`, and runs the training step the loop runs
(`step.make_train_step`, one replica) once per iteration, with the fixture's latents given
to it (`step.Latents`). It writes AFTER.npz: every G and D tensor after the iteration under the
port's keys and layouts (`G.<key>`, `D.<key>`, by the converter's inverse,
`biggan_pytorch.port_state_dict`) and the losses, `loss.d_real` [S] and `loss.d_fake` [S]
(the hinge terms' means of each D update) and `loss.g`.

With the port's after-files present it prints one JSON line: the worst trainable tensor by
`‖Δours − Δport‖ / ‖Δport‖` (Δ = after − before), the worst loss by relative difference,
and whether both meet the standard (≤ 0.01 and ≤ 1e-4); the exit status is 1 when not. It
also gives the worst of G's batch-norm moving statistics by the same measure
(`worst_statistic`), outside the standard.

`--dtype=float64` runs the same step with every layer, weight and optimizer slot in float64
(Keras' float64 policy; the fixture's float32 values are exact in it). Adam's first update is
`lr · g / (|g| + ε)`, nearly a sign function of each gradient, and a float32 forward pass
puts a ReLU input that lies within float32 rounding of zero (about 1e-6 of its layer's RMS,
one in a million in these fixtures) on either side, which moves G's gradient by ~1e-4 and
flips the update of the weights whose gradient is that small: float32 against float32 the
comparison then measures how two roundings fall, not the step (docs/quality.md, "One
iteration against the reference's"). In float64 our rounding is gone, and what is left is
the reference's own float32 rounding.

One kind of tensor is not compared that way: the bias of a convolution whose output goes
straight into a batch norm (every conv of G's blocks). The norm subtracts the batch mean, so
the bias's gradient is zero in exact arithmetic and what either side computes is rounding
noise (|g| ~ 1e-9); Adam's first step, `lr · g / (|g| + ε)`, turns that noise into a
movement of a few percent of `lr`, different on each side. For these the report gives the
largest movement of ours as a fraction of a full step (`lr · √n`), which must stay below
`ROUNDING_ONLY_LIMIT`: a real gradient would move them by about a full step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np
from absl import app, flags

TENSOR_TOLERANCE = 0.01
"""Largest `‖Δours − Δport‖ / ‖Δport‖` of a trainable tensor for the step to be equal."""
LOSS_TOLERANCE = 1e-4
"""Largest relative difference of a loss for the step to be equal."""
ROUNDING_ONLY_LIMIT = 0.25
"""Largest step of a zero-gradient bias, as a fraction of a full Adam step `lr · √n`."""
BN_STATISTICS = ("stored_mean", "stored_var")
"""Key endings of the port's batch-norm statistics: not trained, but moved by every forward
pass of G in training mode. Reported by the same measure (`worst_statistic`) but not part of
`equal`, which is the standard's (trainable tensors and losses)."""
_SETTINGS = ("resolution", "num_D_steps", "batch_size", "G_lr", "D_lr", "adam_eps", "BN_eps")


def read_fixture(fixture_dir: str) -> dict:
    """The fixture's `config`, `G` and `D` state dicts (before) and `batch` arrays, these
    with a leading axis of `config["iterations"]` (1 when the config does not say).

    Raises:
      FileNotFoundError: a file the run needs is missing (named).
      ValueError: `config.json` lacks a setting, or `batch.npz` does not fit it.
    """
    from tf_biggan.convert import biggan_pytorch

    def path(name):
        file = os.path.join(fixture_dir, name)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file}: missing; is {fixture_dir} a step fixture?")
        return file

    with open(path("config.json")) as f:
        config = json.load(f)
    missing = [key for key in _SETTINGS if key not in config]
    if missing:
        raise ValueError(f"{path('config.json')} lacks {missing}")
    iterations = config.get("iterations", 1)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(
            f"{path('config.json')}: iterations must be an int >= 1, got {iterations!r}"
        )
    with np.load(path("batch.npz")) as batch:
        # One iteration's arrays have no iteration axis; give them one.
        batch = {k: v if iterations > 1 else v[None] for k, v in batch.items()}
    steps, size = config["num_D_steps"], config["batch_size"]
    if batch["x"].shape[:3] != (iterations, steps, size) or batch["z_g"].shape[:2] != (
        iterations,
        size,
    ):
        raise ValueError(
            f"batch.npz has x {batch['x'].shape} and z_g {batch['z_g'].shape}, but config.json "
            f"says {iterations} iteration(s) of {steps} D steps of batch {size}"
        )
    return {
        "config": config,
        "G": biggan_pytorch.read_state_dict(path("G.pth")),
        "D": biggan_pytorch.read_state_dict(path("D.pth")),
        "batch": batch,
    }


def rounding_only(key: str) -> bool:
    """Whether G's port tensor `key` is the bias of a conv that feeds a batch norm directly.

    In the port's G every block conv (`blocks.<i>.0.conv1/conv2/conv_sc`, BigGAN-deep's
    `conv1`..`conv4` too) feeds the next conditional BN or the output BN; only the output
    conv (`output_layer.2`) and the first linear layer do not.
    """
    parts = key.split(".")
    return parts[0] == "blocks" and parts[-1] == "bias" and parts[-2].startswith("conv")


DTYPES = ("float32", "float64")
"""What the step can compute in: float32 (training's) or float64 (no rounding of ours)."""


@contextlib.contextmanager
def _dtype_policy(dtype: str):
    """Builds layers under the Keras dtype policy `dtype`, and optimizers with a learning
    rate of that dtype (Keras' floatx); restores both."""
    import keras

    saved_policy, saved_floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy(dtype)
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(saved_policy)
        keras.config.set_floatx(saved_floatx)


def build_state(
    fixture: dict, fixture_dir: str, epsilon_after_correction: bool = True, dtype="float32"
):
    """The `TrainState` with G and D as in the fixture and Adam as its config says
    (`epsilon_after_correction`: PyTorch's ε placement, see `optimizers.LeanAdam`), every
    variable in `dtype` (one of `DTYPES`)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    with _dtype_policy(dtype):
        return _build_state(fixture, fixture_dir, epsilon_after_correction)


def _build_state(fixture: dict, fixture_dir: str, epsilon_after_correction: bool):
    from tf_biggan import layers, networks, optimizers
    from tf_biggan import state as state_lib
    from tf_biggan.convert import biggan_pytorch

    config = fixture["config"]
    if not np.isclose(config.get("SN_eps", layers.SN_EPSILON), layers.SN_EPSILON):
        raise ValueError(f"SN_eps {config['SN_eps']} is not tf_biggan's {layers.SN_EPSILON}")
    resolution = config["resolution"]
    g_file, d_file = (os.path.join(fixture_dir, name) for name in ("G.pth", "D.pth"))
    g_config = {
        **biggan_pytorch.generator_config(fixture["G"], resolution, g_file),
        "bn_epsilon": config["BN_eps"],
    }
    d_config = biggan_pytorch.discriminator_config(fixture["D"], resolution, d_file)

    def adam(prefix):
        return optimizers.make_optimizer(
            learning_rate=config[f"{prefix}_lr"],
            beta_1=config.get(f"{prefix}_B1", 0.0),
            beta_2=config.get(f"{prefix}_B2", 0.999),
            epsilon=config["adam_eps"],
            epsilon_after_correction=epsilon_after_correction,
        )

    state = state_lib.TrainState(
        networks.Generator(**g_config, name="generator"),
        networks.Discriminator(**d_config, name="discriminator"),
        networks.Generator(**g_config, name="ema_generator"),
        adam("G"),
        adam("D"),
    )
    state.build()
    biggan_pytorch.load_generator(state.generator, fixture["G"], g_file)
    biggan_pytorch.load_discriminator(state.discriminator, fixture["D"], d_file)
    return state


def run_iteration(
    fixture: dict, fixture_dir: str, epsilon_after_correction: bool = True, dtype="float32"
) -> dict[str, np.ndarray]:
    """Our iterations on the fixture (one training step per iteration), computed in `dtype`:
    the AFTER.npz arrays (`G.<key>`, `D.<key>` in `dtype` after the last iteration, `loss.*`
    of the last iteration), and `trainable.<G|D>.<key>` flags (not written)."""
    import tensorflow as tf

    from tf_biggan import step as step_lib
    from tf_biggan.convert import biggan_pytorch

    config, batch = fixture["config"], fixture["batch"]
    steps, size = config["num_D_steps"], config["batch_size"]
    state = build_state(fixture, fixture_dir, epsilon_after_correction, dtype)
    step_config = step_lib.StepConfig(batch_size=size, d_steps=steps, loss="hinge")
    train_step = step_lib.make_train_step(state, tf.distribute.get_strategy(), step_config)
    for k in range(batch["x"].shape[0]):
        # The port's reals are NCHW; the step takes D update s's batch at rows [s*B, (s+1)*B).
        x = batch["x"][k]
        images = x.transpose(0, 1, 3, 4, 2).reshape(steps * size, *x.shape[3:], 3)
        latents = step_lib.Latents(
            z=np.concatenate([batch["z_d"][k], batch["z_g"][k][None]]).astype(np.float32),
            labels=np.concatenate([batch["y_fake_d"][k], batch["y_g"][k][None]]).astype(np.int32),
        )
        metrics = train_step(images, batch["y"][k].reshape(-1).astype(np.int32), latents)
    metrics = {name: float(value) for name, value in metrics.items()}
    if steps == 1:
        d_real, d_fake = [metrics["loss/d_real"]], [metrics["loss/d_fake"]]
    else:
        d_real = [metrics[f"loss/d_real/update{k}"] for k in range(steps)]
        d_fake = [metrics[f"loss/d_fake/update{k}"] for k in range(steps)]
    after = {
        "loss.d_real": np.array(d_real, np.float32),
        "loss.d_fake": np.array(d_fake, np.float32),
        "loss.g": np.array(metrics["loss/g"], np.float32),
    }
    for prefix, tensors in (
        ("G", biggan_pytorch.generator_tensors(state.generator)),
        ("D", biggan_pytorch.discriminator_tensors(state.discriminator)),
    ):
        after.update(
            {f"{prefix}.{k}": v for k, v in biggan_pytorch.port_state_dict(tensors).items()}
        )
        after.update(
            {f"trainable.{prefix}.{t.key}": np.array(t.variable.trainable) for t in tensors}
        )
    return after


def compare(fixture: dict, fixture_dir: str, after: dict[str, np.ndarray]) -> dict:
    """Our iteration against the port's after-files: per trainable tensor and per loss.

    Returns:
      `{"tensors": {name: relative difference of Δ}, "rounding_only": {name: our step as a
      fraction of a full step}, "losses": {name: relative difference}}`. A tensor that the
      port's step leaves exactly as it was (its gradient cancels to zero on that batch)
      is measured against a full step `lr · √n` instead of `‖Δport‖`.
    """
    from tf_biggan.convert import biggan_pytorch

    config = fixture["config"]
    tensors, rounding, statistics = {}, {}, {}
    for prefix in ("G", "D"):
        port_after = biggan_pytorch.read_state_dict(
            os.path.join(fixture_dir, f"{prefix}_after.pth")
        )
        for key, before in fixture[prefix].items():
            port_delta = port_after[key].astype(np.float64) - before
            our_delta = after[f"{prefix}.{key}"].astype(np.float64) - before
            if key.endswith(BN_STATISTICS):
                statistics[f"{prefix}.{key}"] = float(
                    np.linalg.norm(our_delta - port_delta) / np.linalg.norm(port_delta)
                )
            if not after[f"trainable.{prefix}.{key}"]:
                continue
            full_step = config[f"{prefix}_lr"] * np.sqrt(before.size)
            if prefix == "G" and rounding_only(key):
                rounding[f"{prefix}.{key}"] = float(np.linalg.norm(our_delta) / full_step)
                continue
            scale = np.linalg.norm(port_delta) or full_step
            tensors[f"{prefix}.{key}"] = float(np.linalg.norm(our_delta - port_delta) / scale)
    with open(os.path.join(fixture_dir, "losses.json")) as f:
        port_losses = json.load(f)
    losses = {}
    for name, port_name in (("d_real", "d_loss_real"), ("d_fake", "d_loss_fake"), ("g", "g_loss")):
        ours = np.atleast_1d(after[f"loss.{name}"]).astype(np.float64)
        port = np.atleast_1d(np.asarray(port_losses[port_name], np.float64))
        for k, (a, b) in enumerate(zip(ours, port, strict=True)):
            losses[f"loss.{name}" + (f"[{k}]" if port.size > 1 or name != "g" else "")] = float(
                abs(a - b) / max(abs(b), 1e-12)
            )
    return {
        "tensors": tensors,
        "rounding_only": rounding,
        "statistics": statistics,
        "losses": losses,
    }


def summary(comparison: dict) -> dict:
    """The one-line report: the worst tensor and loss, and whether the step is equal."""
    tensor = max(comparison["tensors"], key=comparison["tensors"].get)
    loss = max(comparison["losses"], key=comparison["losses"].get)
    worst_tensor, worst_loss = comparison["tensors"][tensor], comparison["losses"][loss]
    rounding = max(comparison["rounding_only"].values(), default=0.0)
    statistic = max(comparison["statistics"], key=comparison["statistics"].get, default=None)
    worst_statistic = comparison["statistics"][statistic] if statistic else 0.0
    return {
        "worst_tensor": tensor,
        "worst_tensor_relative_difference": worst_tensor,
        "worst_loss": loss,
        "worst_loss_relative_difference": worst_loss,
        "tensors_compared": len(comparison["tensors"]),
        "rounding_only_largest_step": rounding,
        "worst_statistic": statistic,
        "worst_statistic_relative_difference": worst_statistic,
        "equal": worst_tensor <= TENSOR_TOLERANCE
        and worst_loss <= LOSS_TOLERANCE
        and rounding <= ROUNDING_ONLY_LIMIT,
    }


def parity(
    fixture_dir: str,
    output: str | None = None,
    epsilon_after_correction: bool = True,
    dtype: str = "float32",
) -> dict:
    """Runs our iteration on `fixture_dir` in `dtype`, writes `output` (if given), and
    returns the `summary` (or `{}` when the fixture has no after-files to compare with)."""
    fixture = read_fixture(fixture_dir)
    after = run_iteration(fixture, fixture_dir, epsilon_after_correction, dtype)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        np.savez(output, **{k: v for k, v in after.items() if not k.startswith("trainable.")})
    if not all(
        os.path.isfile(os.path.join(fixture_dir, name))
        for name in ("G_after.pth", "D_after.pth", "losses.json")
    ):
        return {}
    return summary(compare(fixture, fixture_dir, after))


FLAGS = flags.FLAGS


def _define_flags():
    """The command line's flags; defined only when run as a program, so that tests can
    import this module beside other tools."""
    flags.DEFINE_string(
        "output", None, "AFTER.npz to write (the port's keys, after the iteration)."
    )
    flags.DEFINE_boolean(
        "adam_epsilon_after_correction",
        True,
        "Adam's ε in PyTorch's place (the default); false: Keras' (tf_biggan <= 0.2), to "
        "measure it.",
    )
    flags.DEFINE_enum(
        "dtype",
        "float32",
        list(DTYPES),
        "What our step computes in: float32, as training does, or float64, which leaves only "
        "the reference's own float32 rounding in the comparison.",
    )


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: port_step_parity.py FIXTURE_DIR --output=AFTER.npz")
    # oneDNN's kernels round by instruction set; off, the comparison is the same on every CPU.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    report = parity(argv[1], FLAGS.output, FLAGS.adam_epsilon_after_correction, FLAGS.dtype)
    print(json.dumps(report))
    if report and not report["equal"]:
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
