"""tf_biggan.convert: BigGAN-PyTorch state dicts → a tf_biggan model_dir.

The state dicts are built here with torch from the port's key names and shapes (written
below for its `--G_shared --hier` G and its D, at 32 px and width 8), not with the port's
code. The mapping is checked tensor by tensor against an independent statement of the
correspondence, and G's first layer and first block against a numpy forward pass of the
port's own semantics (NCHW, `W / sv` with the port's power iteration).
"""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf
import torch

import tf_biggan
from tf_biggan import finetune, gin_config, loader, model_files, networks, optimizers
from tf_biggan import state as state_lib
from tf_biggan.convert import biggan_pytorch, imagenet, model_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES, CH, CLASSES, SHARED, CHUNK = 32, 8, 1000, 16, 8
G_BLOCKS = [(4 * CH, 4 * CH)] * 3  # (in, out) channels per block at 32 px
G_ATTENTION = {1: 16}  # block index -> resolution (after block 1, 16x16)
D_BLOCKS = [(3, 4 * CH)] + [(4 * CH, 4 * CH)] * 3
D_ATTENTION = {0: 16}


def _sn(prefix, out, inp, k=None, bias=True):
    shapes = {f"{prefix}.weight": (out, inp) if k is None else (out, inp, k, k)}
    if bias:
        shapes[f"{prefix}.bias"] = (out,)
    shapes.update({f"{prefix}.u0": (1, out), f"{prefix}.sv0": (1,)})
    return shapes


def _attention(prefix, ch):
    shapes = {f"{prefix}.gamma": ()}
    for name, out, inp in (("theta", ch // 8, ch), ("phi", ch // 8, ch), ("g", ch // 2, ch)):
        shapes.update(_sn(f"{prefix}.{name}", out, inp, 1, bias=False))
    shapes.update(_sn(f"{prefix}.o", ch, ch // 2, 1, bias=False))
    return shapes


def port_generator_shapes():
    """Key → shape of the port's `Generator(G_shared=True, hier=True)` state dict."""
    shapes = {"shared.weight": (CLASSES, SHARED)}
    shapes.update(_sn("linear", 16 * G_BLOCKS[0][0], CHUNK))
    for i, (cin, cout) in enumerate(G_BLOCKS):
        p = f"blocks.{i}.0"
        shapes.update(_sn(f"{p}.conv1", cout, cin, 3))
        shapes.update(_sn(f"{p}.conv2", cout, cout, 3))
        shapes.update(_sn(f"{p}.conv_sc", cout, cin, 1))
        for bn, ch in (("bn1", cin), ("bn2", cout)):
            shapes.update({f"{p}.{bn}.stored_mean": (ch,), f"{p}.{bn}.stored_var": (ch,)})
            shapes.update(_sn(f"{p}.{bn}.gain", ch, SHARED + CHUNK, bias=False))
            shapes.update(_sn(f"{p}.{bn}.bias", ch, SHARED + CHUNK, bias=False))
        if i in G_ATTENTION:
            shapes.update(_attention(f"blocks.{i}.1", cout))
    out = G_BLOCKS[-1][1]
    for name in ("gain", "bias", "stored_mean", "stored_var"):
        shapes[f"output_layer.0.{name}"] = (out,)
    shapes.update(_sn("output_layer.2", 3, out, 3))
    return shapes


def port_discriminator_shapes():
    """Key → shape of the port's `Discriminator` state dict (32 px: blocks 2, 3 keep 8x8)."""
    shapes = {}
    for i, (cin, cout) in enumerate(D_BLOCKS):
        p = f"blocks.{i}.0"
        shapes.update(_sn(f"{p}.conv1", cout, cin, 3))
        shapes.update(_sn(f"{p}.conv2", cout, cout, 3))
        if cin != cout or i < 2:
            shapes.update(_sn(f"{p}.conv_sc", cout, cin, 1))
        if i in D_ATTENTION:
            shapes.update(_attention(f"blocks.{i}.1", cout))
    shapes.update(_sn("linear", 1, D_BLOCKS[-1][1]))
    shapes.update({"embed.weight": (CLASSES, D_BLOCKS[-1][1]), "embed.u0": (1, CLASSES)})
    shapes["embed.sv0"] = (1,)
    return shapes


def random_state_dict(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("stored_var"):
            value = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("sv0"):
            value = 1.0 + torch.rand(shape, generator=g)
        else:
            value = 0.3 * torch.randn(shape, generator=g)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def port_run(tmp_path_factory):
    """A port run folder: G.pth, G_ema.pth, D.pth; returns (folder, {file: state dict})."""
    folder = tmp_path_factory.mktemp("port_run")
    dicts = {
        "G.pth": random_state_dict(port_generator_shapes(), 1),
        "G_ema.pth": random_state_dict(port_generator_shapes(), 2),
        "D.pth": random_state_dict(port_discriminator_shapes(), 3),
    }
    for name, state in dicts.items():
        torch.save(state, folder / name)
    numpy_dicts = {name: {k: v.numpy() for k, v in s.items()} for name, s in dicts.items()}
    return str(folder), numpy_dicts


@pytest.fixture(scope="module")
def converted(port_run):
    return biggan_pytorch.convert(port_run[0], RES)


def _our_path(key: str, attention: dict) -> str:
    """Our variable path (below the network) of a port key, stated independently."""
    parts = key.split(".")
    if parts[0] == "blocks":
        index = int(parts[1])
        head = f"block{index}" if parts[2] == "0" else f"attention{attention[index]}"
        parts = [head] + parts[3:]
    renames = {
        "shared": "shared_embedding",
        "embed": "embedding",
        "conv_sc": "conv_shortcut",
        "u0": "sn_u",
        "sv0": "sn_sigma",
        "stored_mean": "moving_mean",
        "stored_var": "moving_variance",
    }
    parts = [renames.get(p, p) for p in parts]
    if parts[:2] == ["output_layer", "0"]:
        parts = ["output_bn", {"gain": "gamma", "bias": "beta"}.get(parts[2], parts[2])]
    elif parts[:2] == ["output_layer", "2"]:
        parts = ["output_conv"] + parts[2:]
    elif parts[-1].startswith("moving_"):
        parts = parts[:-1] + ["bn", parts[-1]]
    if parts[-1] == "weight":
        parts[-1] = "embeddings" if parts[0] == "embedding" else "kernel"
    return "/".join(parts)


def _expected(key: str, value: np.ndarray, channels: int) -> np.ndarray:
    """The port tensor in our layout."""
    if key.endswith("sv0") or key.endswith("gamma"):
        return value.reshape(())
    if key in ("shared.weight", "embed.weight"):
        return value
    if key.startswith("linear.") and channels:
        # G's first linear: output units from [C, 4, 4] (NCHW) to [4, 4, C] (NHWC).
        moved = value.T if key == "linear.weight" else value.reshape(1, -1)
        moved = moved.reshape(moved.shape[0], channels, 4, 4).transpose(0, 2, 3, 1)
        moved = moved.reshape(moved.shape[0], -1)
        return moved if key != "linear.bias" else moved[0]
    if key.endswith("weight"):
        return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    return value


def _port_sigma(weight: np.ndarray, u: np.ndarray) -> float:
    """The port's eval-mode estimate: one power iteration from `u0` on `W.view(out, -1)`."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    v = u @ w
    v /= np.linalg.norm(v)
    u2 = v @ w.T
    u2 /= np.linalg.norm(u2)
    return float((v @ w.T @ u2.T).squeeze())


@pytest.mark.slow
@pytest.mark.parametrize(
    "file, network, attention, channels",
    [
        ("G.pth", "generator", G_ATTENTION, G_BLOCKS[0][0]),
        ("G_ema.pth", "ema_generator", G_ATTENTION, G_BLOCKS[0][0]),
        ("D.pth", "discriminator", D_ATTENTION, 0),
    ],
)
def test_every_tensor_lands_in_its_variable(
    port_run, converted, file, network, attention, channels
):
    state = port_run[1][file]
    net = getattr(converted, network)
    variables = {v.path.split("/", 1)[1]: v.numpy() for v in net.variables}
    mapped = {}
    for key, value in state.items():
        path = _our_path(key, attention)
        assert path in variables, (key, path)
        mapped[path] = key
        if key == "embed.u0":
            continue  # u on the other side of the table: checked through sigma below
        np.testing.assert_array_equal(variables[path], _expected(key, value, channels), key)
    assert set(mapped) == set(variables)
    if network == "discriminator":
        table = state["embed.weight"]
        ours = net.embedding.normalized_kernel(training=False).numpy()
        port = table / _port_sigma(table, state["embed.u0"])
        np.testing.assert_allclose(ours, port, rtol=2e-5, atol=1e-7)


def _normalized(state, prefix):
    weight = state[f"{prefix}.weight"]
    return weight / _port_sigma(weight, state[f"{prefix}.u0"])


def _conv(x, weight, bias=None):
    """NCHW 'same' convolution with an [out, in, k, k] weight (stride 1)."""
    k = weight.shape[-1]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, w = x.shape[2:]
    out = sum(
        np.einsum("bchw,oc->bohw", padded[:, :, i : i + h, j : j + w], weight[:, :, i, j])
        for i in range(k)
        for j in range(k)
    )
    return out if bias is None else out + bias[None, :, None, None]


def _port_cbn(state, prefix, x, c):
    mean, var = state[f"{prefix}.stored_mean"], state[f"{prefix}.stored_var"]
    normalized = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    gain = 1.0 + c @ _normalized(state, f"{prefix}.gain").T
    bias = c @ _normalized(state, f"{prefix}.bias").T
    return normalized * gain[:, :, None, None] + bias[:, :, None, None]


def _port_generator_block(state, prefix, x, c):
    """The port's GBlock in eval mode, in numpy (NCHW)."""

    def up(t):
        return t.repeat(2, axis=2).repeat(2, axis=3)

    def conv(name, t):
        return _conv(t, _normalized(state, f"{prefix}.{name}"), state[f"{prefix}.{name}.bias"])

    h = np.maximum(_port_cbn(state, f"{prefix}.bn1", x, c), 0)
    h = conv("conv1", up(h))
    h = np.maximum(_port_cbn(state, f"{prefix}.bn2", h, c), 0)
    return conv("conv2", h) + conv("conv_sc", up(x))


def test_first_linear_and_block_match_a_numpy_forward_pass(port_run, converted):
    state = {k: v.astype(np.float64) for k, v in port_run[1]["G_ema.pth"].items()}
    generator = converted.ema_generator
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(2, CHUNK))
    port_h = (z0 @ _normalized(state, "linear").T + state["linear.bias"]).reshape(2, -1, 4, 4)
    ours_h = generator.linear(tf.constant(z0, tf.float32), training=False).numpy()
    ours_h = ours_h.reshape(2, 4, 4, -1).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ours_h, port_h, atol=1e-4, rtol=1e-4)

    c = rng.normal(size=(2, SHARED + CHUNK))
    port_block = _port_generator_block(state, "blocks.0.0", port_h, c)
    ours_block = generator.blocks[0](
        tf.constant(port_h.transpose(0, 2, 3, 1), tf.float32),
        tf.constant(c, tf.float32),
        training=False,
    ).numpy()
    assert np.abs(port_block).max() > 1.0  # a block that does something
    np.testing.assert_allclose(ours_block.transpose(0, 3, 1, 2), port_block, atol=1e-4, rtol=1e-4)


def test_config_read_from_shapes(converted):
    config = converted.generator_config
    assert (config["resolution"], config["ch"], config["num_classes"]) == (RES, CH, CLASSES)
    assert (config["dim_z"], config["shared_dim"], config["attention"]) == (4 * CHUNK, SHARED, [16])
    assert converted.discriminator.attention == (16,)
    assert converted.networks == ["ema_generator", "generator", "discriminator"]


def test_imagenet_classes_from_tensorflow_datasets():
    classes = imagenet.imagenet_classes()
    assert len(classes) == 1000 and len({c["name"] for c in classes}) == 1000
    assert classes[0] == {
        "index": 0,
        "name": "tench",
        "wnid": "n01440764",
        "label": "tench, Tinca tinca",
    }
    assert (classes[1]["name"], classes[207]["name"]) == ("goldfish", "golden retriever")
    assert classes[207]["wnid"] == "n02099601"
    assert classes[639]["name"] == "maillot (n03710721)"  # a first synonym two classes share
    assert not any("," in c["name"] for c in classes)


@pytest.fixture(scope="module")
def cli_model_dir(port_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("converted") / "model")
    command = [
        sys.executable,
        "-m",
        "tf_biggan.convert",
        "--from=biggan_pytorch",
        f"--checkpoint={port_run[0]}",
        f"--resolution={RES}",
        f"--model_dir={out}",
    ]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_cli_writes_a_model_dir_that_samples_by_class_name(cli_model_dir):
    with open(os.path.join(cli_model_dir, model_dir.CLASSES_FILE)) as f:
        classes = json.load(f)["classes"]
    assert classes[207] == {
        "index": 207,
        "name": "golden retriever",
        "wnid": "n02099601",
        "label": "golden retriever",
    }
    config = model_files.read_model_config(cli_model_dir)
    assert config["networks"] == ["ema_generator", "generator", "discriminator"]
    assert "BigGAN-PyTorch" in config["converted_from"]
    gen = tf_biggan.load(cli_model_dir)
    assert loader.parse_classes(gen, "golden retriever,goldfish") == [207, 1]
    images = gen.sample(classes=["golden retriever", "goldfish"], n=2, seed=0)
    assert images.shape == (2, RES, RES, 3) and images.dtype == np.uint8


def test_config_gin_builds_the_converted_networks(cli_model_dir, converted):
    gin.clear_config()
    try:
        gin_config.parse_gin([os.path.join(cli_model_dir, model_dir.GIN_FILE)], finalize=False)
        generator, discriminator = networks.Generator(), networks.Discriminator()
    finally:
        gin.clear_config()
    assert generator.get_config() == dict(converted.generator.get_config(), name=generator.name)
    d_config = converted.discriminator.get_config()
    assert discriminator.get_config() == dict(d_config, name=discriminator.name)


def _train_state(num_classes):
    config = dict(
        resolution=RES,
        ch=CH,
        num_classes=num_classes,
        dim_z=4 * CHUNK,
        shared_dim=SHARED,
        attention=16,
    )
    state = state_lib.TrainState(
        networks.Generator(**config, name="generator"),
        networks.Discriminator(
            resolution=RES, ch=CH, num_classes=num_classes, attention=16, name="discriminator"
        ),
        networks.Generator(**config, name="ema_generator"),
        optimizers.make_optimizer(),
        optimizers.make_optimizer(),
    )
    state.build()
    return state


@pytest.mark.slow
def test_train_init_from_converted_model_dirs(port_run, cli_model_dir, converted, tmp_path):
    # A generator-only release (G_ema.pth alone): G gets the EMA weights, D stays fresh.
    _save(tmp_path / "ema_only", "G_ema.pth", port_run[1]["G_ema.pth"])
    ema_only = biggan_pytorch.convert(str(tmp_path / "ema_only" / "G_ema.pth"), RES)
    assert ema_only.networks == ["ema_generator"]
    out = str(tmp_path / "model")
    model_dir.write_model_dir(ema_only, out)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        model_dir.write_model_dir(ema_only, out)
    state = _train_state(CLASSES)
    fresh_d = state.discriminator.linear.kernel.numpy()
    finetune.initialize_from(state, out)
    expected = converted.ema_generator.blocks[0].conv1.kernel.numpy()
    for network in (state.generator, state.ema_generator):
        np.testing.assert_array_equal(network.blocks[0].conv1.kernel.numpy(), expected)
    np.testing.assert_array_equal(state.discriminator.linear.kernel.numpy(), fresh_d)
    # The full release: G, D and EMA G each from its own file.
    finetune.initialize_from(state, cli_model_dir)
    for name in ("generator", "discriminator", "ema_generator"):
        ours, source = getattr(state, name), getattr(converted, name)
        for a, b in zip(ours.variables, source.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), a.path)


def _save(folder, name, state):
    folder.mkdir(exist_ok=True)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, folder / name)
    return str(folder / name)


def test_errors_name_what_is_wrong(port_run, tmp_path):
    folder, dicts = port_run
    with pytest.raises(FileNotFoundError, match="nope.pth: no such checkpoint"):
        biggan_pytorch.convert(str(tmp_path / "nope.pth"), RES)
    with pytest.raises(FileNotFoundError, match="holds none of G.pth, G_ema.pth, D.pth"):
        biggan_pytorch.convert(str(tmp_path), RES)
    data = open(os.path.join(folder, "G_ema.pth"), "rb").read()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "G_ema.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(biggan_pytorch.ConversionError, match="G_ema.pth cannot be read.*truncated"):
        biggan_pytorch.convert(str(tmp_path / "cut"), RES)
    with pytest.raises(biggan_pytorch.ConversionError, match=r"3 residual blocks \(a 32 px"):
        biggan_pytorch.convert(folder, 64)
    d_only = _save(tmp_path / "d_only", "D.pth", dicts["D.pth"])
    for path in (d_only, os.path.dirname(d_only)):
        with pytest.raises(biggan_pytorch.ConversionError, match="a discriminator only"):
            biggan_pytorch.convert(path, RES)
    extra = dict(dicts["G_ema.pth"], **{"extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(biggan_pytorch.ConversionError, match=r"not used .*'extra.weight'"):
        biggan_pytorch.convert(_save(tmp_path / "extra", "G_ema.pth", extra), RES)
    missing = {k: v for k, v in dicts["G_ema.pth"].items() if k != "blocks.2.0.conv1.bias"}
    with pytest.raises(biggan_pytorch.ConversionError, match="'blocks.2.0.conv1.bias' is missing"):
        biggan_pytorch.convert(_save(tmp_path / "missing", "G_ema.pth", missing), RES)


def test_without_torch_the_error_names_the_extra(monkeypatch, port_run):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"tf_biggan\[convert\]"):
        biggan_pytorch.read_state_dict(os.path.join(port_run[0], "G.pth"))


# BigGAN-deep (the port's BigGANdeep.py, launch_BigGAN_deep.sh layout) at 64 px and width 4:
# the smallest resolution whose G drops channels in its skip and whose D widens with conv_sc.
DEEP_RES, DEEP_CH, DEPTH, DEEP_Z = 64, 4, 2, 8
DEEP_G_STAGES = [(16, 16), (16, 8), (8, 4), (4, 2)]  # (in, out) multipliers of ch per stage
DEEP_D_STAGES = [(1, 2), (2, 4), (4, 8), (8, 16)]
DEEP_G_ATTENTION = {3: 16}  # after block 3, the last of stage 1 (16x16): key blocks.3.1
DEEP_D_ATTENTION = {1: 16}  # after stage 1 (16x16): key blocks.1.2


def _deep_g_blocks():
    """(in, out) channels of G's blocks in order: a stage's last block changes the width."""
    return [
        (cin * DEEP_CH, (cout if d == DEPTH - 1 else cin) * DEEP_CH)
        for cin, cout in DEEP_G_STAGES
        for d in range(DEPTH)
    ]


def _deep_convs(prefix, cin, hidden, cout):
    shapes = _sn(f"{prefix}.conv1", hidden, cin, 1)
    shapes.update(_sn(f"{prefix}.conv2", hidden, hidden, 3))
    shapes.update(_sn(f"{prefix}.conv3", hidden, hidden, 3))
    shapes.update(_sn(f"{prefix}.conv4", cout, hidden, 1))
    return shapes


def port_deep_generator_shapes():
    """Key → shape of the port's BigGAN-deep `Generator(G_shared=True, hier=True)`."""
    condition = SHARED + DEEP_Z
    shapes = {"shared.weight": (CLASSES, SHARED)}
    shapes.update(_sn("linear", 16 * 16 * DEEP_CH, condition))
    for i, (cin, cout) in enumerate(_deep_g_blocks()):
        p, hidden = f"blocks.{i}.0", cin // 4
        shapes.update(_deep_convs(p, cin, hidden, cout))
        for bn, ch in (("bn1", cin), ("bn2", hidden), ("bn3", hidden), ("bn4", hidden)):
            shapes.update({f"{p}.{bn}.stored_mean": (ch,), f"{p}.{bn}.stored_var": (ch,)})
            shapes.update(_sn(f"{p}.{bn}.gain", ch, condition, bias=False))
            shapes.update(_sn(f"{p}.{bn}.bias", ch, condition, bias=False))
        if i in DEEP_G_ATTENTION:
            shapes.update(_attention(f"blocks.{i}.1", cout))
    out = 2 * DEEP_CH
    for name in ("gain", "bias", "stored_mean", "stored_var"):
        shapes[f"output_layer.0.{name}"] = (out,)
    shapes.update(_sn("output_layer.2", 3, out, 3))
    return shapes


def port_deep_discriminator_shapes():
    """Key → shape of the port's BigGAN-deep `Discriminator`: blocks keyed by stage."""
    shapes = _sn("input_conv", DEEP_CH, 3, 3)
    for s, (cin, cout) in enumerate(DEEP_D_STAGES):
        for d in range(DEPTH):
            p, inp, out = f"blocks.{s}.{d}", (cin if d == 0 else cout) * DEEP_CH, cout * DEEP_CH
            shapes.update(_deep_convs(p, inp, out // 4, out))
            if inp != out:
                shapes.update(_sn(f"{p}.conv_sc", out - inp, inp, 1))
        if s in DEEP_D_ATTENTION:
            shapes.update(_attention(f"blocks.{s}.{DEPTH}", cout * DEEP_CH))
    features = 16 * DEEP_CH
    shapes.update(_sn("linear", 1, features))
    shapes.update({"embed.weight": (CLASSES, features), "embed.u0": (1, CLASSES)})
    shapes["embed.sv0"] = (1,)
    return shapes


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    """A BigGAN-deep run folder (G_ema.pth, D.pth) and its converted networks."""
    folder = tmp_path_factory.mktemp("deep_run")
    dicts = {
        "G_ema.pth": random_state_dict(port_deep_generator_shapes(), 4),
        "D.pth": random_state_dict(port_deep_discriminator_shapes(), 5),
    }
    for name, state in dicts.items():
        torch.save(state, folder / name)
    numpy_dicts = {name: {k: v.numpy() for k, v in s.items()} for name, s in dicts.items()}
    return str(folder), numpy_dicts, biggan_pytorch.convert(str(folder), DEEP_RES)


def _deep_d_key_as_flat(key: str) -> str:
    """The port's deep D key `blocks.<stage>.<i>` as if its blocks were numbered in order
    (`blocks.<block>.0`, attention `blocks.<stage's last block>.1`), as _our_path reads."""
    parts = key.split(".")
    if parts[0] != "blocks":
        return key
    stage, index = int(parts[1]), int(parts[2])
    if index == DEPTH:  # the stage's attention block
        return ".".join(["blocks", str(stage * DEPTH + DEPTH - 1), "1"] + parts[3:])
    return ".".join(["blocks", str(stage * DEPTH + index), "0"] + parts[3:])


@pytest.mark.slow
@pytest.mark.parametrize("file", ["G_ema.pth", "D.pth"])
def test_deep_every_tensor_lands_in_its_variable(deep_run, file):
    _, dicts, converted = deep_run
    state = dicts[file]
    if file == "G_ema.pth":
        net, attention, channels = converted.ema_generator, DEEP_G_ATTENTION, 16 * DEEP_CH
        rename = str
    else:
        net, channels, rename = converted.discriminator, 0, _deep_d_key_as_flat
        attention = {s * DEPTH + DEPTH - 1: r for s, r in DEEP_D_ATTENTION.items()}
    variables = {v.path.split("/", 1)[1]: v.numpy() for v in net.variables}
    mapped = set()
    for key, value in state.items():
        path = _our_path(rename(key), attention)
        assert path in variables, (key, path)
        mapped.add(path)
        if key != "embed.u0":  # checked through sigma in the BigGAN test
            np.testing.assert_array_equal(variables[path], _expected(key, value, channels), key)
    assert mapped == set(variables)


def test_deep_config_read_from_shapes(deep_run):
    _, _, converted = deep_run
    config = converted.generator_config
    assert (config["architecture"], config["depth"], config["ch"]) == ("deep", DEPTH, DEEP_CH)
    assert (config["dim_z"], config["shared_dim"], config["attention"]) == (DEEP_Z, SHARED, [16])
    d_config = converted.discriminator.get_config()
    assert (d_config["architecture"], d_config["depth"], d_config["ch"]) == ("deep", 2, DEEP_CH)
    assert d_config["attention"] == [16]
    assert converted.networks == ["ema_generator", "discriminator"]


def _port_deep_generator_block(state, prefix, x, c, out):
    """The port's BigGAN-deep GBlock (last of a stage: drops channels, upsamples), numpy."""

    def up(t):
        return t.repeat(2, axis=2).repeat(2, axis=3)

    def conv(name, t):
        return _conv(t, _normalized(state, f"{prefix}.{name}"), state[f"{prefix}.{name}.bias"])

    def cbn_relu(name, t):
        return np.maximum(_port_cbn(state, f"{prefix}.{name}", t, c), 0)

    h = cbn_relu("bn2", conv("conv1", cbn_relu("bn1", x)))
    h = conv("conv2", up(h))
    h = conv("conv3", cbn_relu("bn3", h))
    h = conv("conv4", cbn_relu("bn4", h))
    return h + up(x[:, :out])


def _port_deep_discriminator_block(state, prefix, x):
    """The port's BigGAN-deep DBlock (first of a stage: downsamples, widens), numpy."""

    def pool(t):
        b, ch, hh, ww = t.shape
        return t.reshape(b, ch, hh // 2, 2, ww // 2, 2).mean(axis=(3, 5))

    def conv(name, t):
        return _conv(t, _normalized(state, f"{prefix}.{name}"), state[f"{prefix}.{name}.bias"])

    h = conv("conv1", np.maximum(x, 0))
    h = conv("conv3", np.maximum(conv("conv2", np.maximum(h, 0)), 0))
    h = conv("conv4", pool(np.maximum(h, 0)))
    skip = pool(x)
    return h + np.concatenate([skip, conv("conv_sc", skip)], axis=1)


def test_deep_blocks_match_a_numpy_forward_pass(deep_run):
    _, dicts, converted = deep_run
    rng = np.random.default_rng(1)
    g_state = {k: v.astype(np.float64) for k, v in dicts["G_ema.pth"].items()}
    x = rng.normal(size=(2, 16 * DEEP_CH, 4, 4))
    c = rng.normal(size=(2, SHARED + DEEP_Z))
    # Block 3 ends stage 1: 16 ch -> 8 ch (the skip drops channels), 4x4 -> 8x8.
    port = _port_deep_generator_block(g_state, "blocks.3.0", x, c, 8 * DEEP_CH)
    ours = converted.ema_generator.blocks[3](
        tf.constant(x.transpose(0, 2, 3, 1), tf.float32), tf.constant(c, tf.float32), training=False
    ).numpy()
    assert ours.shape == (2, 8, 8, 8 * DEEP_CH) and np.abs(port).max() > 1.0
    np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), port, atol=1e-4, rtol=1e-4)

    d_state = {k: v.astype(np.float64) for k, v in dicts["D.pth"].items()}
    x = rng.normal(size=(2, 2 * DEEP_CH, 8, 8))
    # Stage 1's first block: 2 ch -> 4 ch (conv_sc adds 2 ch to the skip), 8x8 -> 4x4.
    port = _port_deep_discriminator_block(d_state, "blocks.1.0", x)
    ours = converted.discriminator.blocks[DEPTH](
        tf.constant(x.transpose(0, 2, 3, 1), tf.float32), training=False
    ).numpy()
    assert ours.shape == (2, 4, 4, 4 * DEEP_CH) and np.abs(port).max() > 1.0
    np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), port, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_deep_generator_only_release_samples_and_builds_a_deep_d(deep_run, tmp_path):
    folder, dicts, converted = deep_run
    out = str(tmp_path / "model")
    from tf_biggan.convert import __main__ as convert_main

    g_only = convert_main.convert_source("biggan_pytorch", os.path.join(folder, "G_ema.pth"), 64)
    model_dir.write_model_dir(g_only, out)
    gen = tf_biggan.load(out)
    images = gen.sample(classes=["golden retriever"], n=1, seed=0)
    assert images.shape == (1, DEEP_RES, DEEP_RES, 3)
    gin.clear_config()
    try:
        gin_config.parse_gin([os.path.join(out, model_dir.GIN_FILE)], finalize=False)
        generator, discriminator = networks.Generator(), networks.Discriminator()
    finally:
        gin.clear_config()
    assert generator.get_config() == dict(converted.generator_config, name=generator.name)
    assert (discriminator.architecture, discriminator.depth, discriminator.ch) == ("deep", 2, 4)


@pytest.mark.slow
def test_deep_errors_name_what_is_wrong(deep_run, tmp_path):
    _, dicts, _ = deep_run
    g_file = _save(tmp_path / "g", "G_ema.pth", dicts["G_ema.pth"])
    with pytest.raises(biggan_pytorch.ConversionError, match="8 BigGAN-deep generator blocks"):
        biggan_pytorch.convert(g_file, 128)
    narrow = dict(dicts["G_ema.pth"], **{"blocks.3.0.conv4.weight": np.zeros((64, 16, 1, 1))})
    with pytest.raises(biggan_pytorch.ConversionError, match="blocks.3.0 maps 64 to 64 .*to 32"):
        biggan_pytorch.convert(_save(tmp_path / "n", "G_ema.pth", narrow), DEEP_RES)
    with pytest.raises(biggan_pytorch.ConversionError, match="4 BigGAN-deep stages .*64 px D"):
        biggan_pytorch.discriminator_config(dicts["D.pth"], 128, "D.pth")
    missing = {k: v for k, v in dicts["G_ema.pth"].items() if k != "blocks.5.0.bn3.gain.u0"}
    with pytest.raises(biggan_pytorch.ConversionError, match="'blocks.5.0.bn3.gain.u0' is missing"):
        biggan_pytorch.convert(_save(tmp_path / "m", "G_ema.pth", missing), DEEP_RES)
    extra = dict(dicts["G_ema.pth"], **{"blocks.0.0.conv5.weight": np.zeros(3, np.float32)})
    with pytest.raises(biggan_pytorch.ConversionError, match=r"not used .*conv5.weight"):
        biggan_pytorch.convert(_save(tmp_path / "e", "G_ema.pth", extra), DEEP_RES)
