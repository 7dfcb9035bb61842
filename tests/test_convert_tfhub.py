"""tf_biggan.convert.tfhub: a checkpoint with the variable names and shapes of DeepMind's
BigGAN TF-Hub modules (at a small width) is converted and checked variable by variable."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tf_biggan
from tf_biggan import layers
from tf_biggan.convert import __main__ as convert_main
from tf_biggan.convert import tfhub, write_model_dir

EMA = "ema_b999900"
CH = 4
CHUNK = 4
SHARED = 16
CLASSES = 1000
# 128 px: the first block's input and each block's output, in multiples of ch.
MULTIPLIERS = (16, 16, 8, 4, 2, 1)
COUNTER = 4.0


def _module_variables(seed=0):
    """name -> value of every variable of a 128 px module, as the module's checkpoint names
    them (EMA weights, raw weights, u0/u1, standing-statistics accumulators)."""
    rng = np.random.default_rng(seed)
    v = {}

    def normal(*shape):
        return rng.normal(size=shape).astype(np.float32)

    def weight(name, *shape):
        v[f"{name}/{EMA}"] = normal(*shape)
        v[name] = normal(*shape)

    def sn(scope, shape, bias=True):
        weight(f"{scope}/w", *shape)
        if bias:
            weight(f"{scope}/b", shape[-1])
        v[f"{scope}/u0"] = normal(1, shape[-1])
        v[f"{scope}/u1"] = normal(1, int(np.prod(shape[:-1])))

    def stats(scope, channels):
        v[f"{scope}/accumulated_mean"] = normal(channels) * COUNTER
        v[f"{scope}/accumulated_var"] = rng.uniform(0.5, 2, channels).astype(np.float32) * COUNTER
        v[f"{scope}/accumulation_counter"] = np.float32(COUNTER)

    weight("linear/w", CLASSES, SHARED)
    sn("Generator/G_Z/G_linear", (CHUNK, 16 * MULTIPLIERS[0] * CH))
    for i in range(5):
        scope = "Generator/GBlock" + (f"_{i}" if i else "")
        c_in, c_out = MULTIPLIERS[i] * CH, MULTIPLIERS[i + 1] * CH
        sn(f"{scope}/conv0", (3, 3, c_in, c_out))
        sn(f"{scope}/conv1", (3, 3, c_out, c_out))
        sn(f"{scope}/conv_sc", (1, 1, c_in, c_out))
        for suffix, channels in (("", c_in), ("_1", c_out)):
            for name in ("gamma", "beta"):
                sn(f"{scope}/HyperBN{suffix}/{name}", (CHUNK + SHARED, channels), bias=False)
            stats(f"{scope}/CrossReplicaBN{suffix}", channels)
    c = 2 * CH  # attention after the 64 px block
    for name, shape in (("theta", (c, c // 8)), ("phi", (c, c // 8)), ("g", (c, c // 2))):
        sn(f"Generator/attention/{name}", (1, 1, *shape), bias=False)
    sn("Generator/attention/o_conv", (1, 1, c // 2, c), bias=False)
    weight("Generator/attention/gamma")
    weight("Generator/ScaledCrossReplicaBN/gamma", CH)
    weight("Generator/ScaledCrossReplicaBN/beta", CH)
    stats("Generator/ScaledCrossReplicaBNbn", CH)
    sn("Generator/conv_2d", (3, 3, CH, 3))
    return v


def _write_module(folder, variables):
    """A module folder whose variables/variables checkpoint holds `variables`."""
    os.makedirs(os.path.join(folder, "variables"), exist_ok=True)
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=os.path.join(folder, "variables", "variables"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(variables[n]) for n in names],
    )
    return str(folder)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    variables = _module_variables()
    folder = _write_module(tmp_path_factory.mktemp("hub") / "biggan-128_2", variables)
    return variables, folder, tfhub.load_generator(folder)


def _sn_expected(v, scope, bias=True):
    out = {"kernel": v[f"{scope}/w/{EMA}"], "u": v[f"{scope}/u0"]}
    if bias:
        out["bias"] = v[f"{scope}/b/{EMA}"]
    return out


def _check_sn(layer, expected, scope):
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(layer, name).numpy(), value, err_msg=scope)


@pytest.mark.slow
def test_settings_come_from_the_shapes(converted):
    _, _, g = converted
    config = g.get_config()
    assert (config["resolution"], config["ch"], config["num_classes"]) == (128, CH, CLASSES)
    assert (config["dim_z"], config["shared_dim"]) == (6 * CHUNK, SHARED)
    assert config["bn_epsilon"] == 1e-4 and config["num_standing_stats"] == 0
    assert {bn.epsilon for bn in layers.batch_norm_layers(g)} == {1e-4}


def test_every_variable_lands_where_the_module_uses_it(converted):
    v, _, g = converted
    np.testing.assert_array_equal(g.shared_embedding.kernel.numpy(), v[f"linear/w/{EMA}"])
    _check_sn(g.linear, _sn_expected(v, "Generator/G_Z/G_linear"), "G_linear")
    for i, block in enumerate(g.blocks):
        scope = "Generator/GBlock" + (f"_{i}" if i else "")
        for source, layer in (
            ("conv0", block.conv1),
            ("conv1", block.conv2),
            ("conv_sc", block.conv_shortcut),
        ):
            _check_sn(layer, _sn_expected(v, f"{scope}/{source}"), f"{scope}/{source}")
        for suffix, cbn in (("", block.bn1), ("_1", block.bn2)):
            for source, layer in (("gamma", cbn.gain), ("beta", cbn.bias)):
                name = f"{scope}/HyperBN{suffix}/{source}"
                w = v[f"{name}/w/{EMA}"]
                # The module's condition is [z chunk, embedding]; ours [embedding, z chunk].
                reordered = np.concatenate([w[CHUNK:], w[:CHUNK]])
                _check_sn(layer, {"kernel": reordered, "u": v[f"{name}/u0"]}, name)
            stats = f"{scope}/CrossReplicaBN{suffix}"
            np.testing.assert_allclose(
                cbn.batch_norm.moving_mean.numpy(), v[f"{stats}/accumulated_mean"] / COUNTER
            )
            np.testing.assert_allclose(
                cbn.batch_norm.moving_variance.numpy(), v[f"{stats}/accumulated_var"] / COUNTER
            )
    attention = g.attention64
    for source, layer in (("theta", attention.theta), ("phi", attention.phi), ("g", attention.g)):
        _check_sn(layer, _sn_expected(v, f"Generator/attention/{source}", False), source)
    _check_sn(attention.o, _sn_expected(v, "Generator/attention/o_conv", False), "o_conv")
    assert attention.gamma.numpy() == v[f"Generator/attention/gamma/{EMA}"]
    bn = g.output_bn
    np.testing.assert_array_equal(
        bn.gamma.numpy(), v[f"Generator/ScaledCrossReplicaBN/gamma/{EMA}"]
    )
    np.testing.assert_array_equal(bn.beta.numpy(), v[f"Generator/ScaledCrossReplicaBN/beta/{EMA}"])
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), v["Generator/ScaledCrossReplicaBNbn/accumulated_mean"] / COUNTER
    )
    _check_sn(g.output_conv, _sn_expected(v, "Generator/conv_2d"), "conv_2d")


def test_conditional_bn_computes_the_modules_function(converted):
    # The module: BN(x) * (1 + [z, e] W_gamma / sigma) + [z, e] W_beta / sigma, eps 1e-4.
    v, _, g = converted
    layers.refine_spectral_norms(g, exact=True)
    rng = np.random.default_rng(1)
    c = MULTIPLIERS[0] * CH
    x = rng.normal(size=(2, 4, 4, c)).astype(np.float32)
    z = rng.normal(size=(2, CHUNK)).astype(np.float32)
    y = np.eye(CLASSES, dtype=np.float32)[[1, 999]]
    e = y @ v[f"linear/w/{EMA}"]
    module_condition = np.concatenate([z, e], axis=1)

    def sn(name):
        w = v[f"Generator/GBlock/HyperBN/{name}/w/{EMA}"].astype(np.float64)
        return w / np.linalg.svd(w, compute_uv=False)[0]

    stats = "Generator/GBlock/CrossReplicaBN"
    mean = v[f"{stats}/accumulated_mean"] / COUNTER
    var = v[f"{stats}/accumulated_var"] / COUNTER
    gain = (module_condition @ sn("gamma"))[:, None, None, :]
    bias = (module_condition @ sn("beta"))[:, None, None, :]
    expected = (x - mean) / np.sqrt(var + 1e-4) * (1 + gain) + bias
    got = g.blocks[0].bn1(x, np.concatenate([e, z], axis=1), training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_convert_writes_a_model_dir_that_samples_by_class_name(converted, tmp_path):
    # `convert_source` is what `python -m tf_biggan.convert --from=tfhub` runs.
    _, folder, _ = converted
    with pytest.raises(ValueError, match="--module_dir"):
        convert_main.convert_source("tfhub")
    model_dir = str(tmp_path / "hub128")
    write_model_dir(convert_main.convert_source("tfhub", module_dir=folder), model_dir)
    with open(os.path.join(model_dir, "classes.json")) as f:
        classes = json.load(f)["classes"]
    assert classes[1]["name"] == "goldfish" and classes[1]["wnid"] == "n01443537"
    gen = tf_biggan.load(model_dir)
    images = gen.sample(["goldfish", "golden retriever"], truncation=0.5, seed=0)
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.uint8


def test_missing_folder_and_checkpoint_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tfhub.load_generator(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="variables/variables.index"):
        tfhub.load_generator(str(tmp_path / "empty"))


@pytest.mark.slow
def test_a_missing_variable_is_named(tmp_path):
    variables = _module_variables()
    del variables["Generator/GBlock_3/HyperBN_1/beta/u0"]
    folder = _write_module(tmp_path / "m", variables)
    with pytest.raises(KeyError, match="Generator/GBlock_3/HyperBN_1/beta/u0"):
        tfhub.load_generator(folder)


@pytest.mark.slow
def test_a_leftover_variable_is_named(tmp_path):
    variables = _module_variables()
    variables["Generator/GBlock_2/conv2/w/ema_b999900"] = np.zeros((3, 3, 8, 8), np.float32)
    folder = _write_module(tmp_path / "m", variables)
    with pytest.raises(ValueError, match="Generator/GBlock_2/conv2/w/ema_b999900"):
        tfhub.load_generator(folder)


@pytest.mark.slow
def test_a_wrong_shape_is_named(tmp_path):
    variables = _module_variables()
    variables[f"Generator/conv_2d/w/{EMA}"] = np.zeros((3, 3, CH, 4), np.float32)
    folder = _write_module(tmp_path / "m", variables)
    with pytest.raises(ValueError, match="Generator/conv_2d/w/ema_b999900"):
        tfhub.load_generator(folder)
