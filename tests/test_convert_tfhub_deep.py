"""tf_biggan.convert.tfhub_deep: a module folder with the variable names and shapes of
DeepMind's biggan-deep-128 module (at width 4) and a `saved_model.pb` whose graph holds the
51-row truncation tables as Pack nodes is converted and checked variable by variable, table
by table, and against a numpy forward pass of the module's block and output layers."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from test_convert_tfhub import _module_variables as _biggan_module_variables
from test_convert_tfhub import _write_module

import tf_biggan
from tf_biggan.convert import __main__ as convert_main
from tf_biggan.convert import tfhub_deep, write_model_dir

EMA = "ema_0.9999"
CH = 4
DIM_Z = 6  # z and embedding of different sizes, so a wrong row order cannot pass
SHARED = 10
CLASSES = 1000
ROWS = 51
# 128 px: (input, output) multipliers of ch per stage; 2 blocks per stage.
STAGES = ((16, 16), (16, 8), (8, 4), (4, 2), (2, 1))
BLOCKS = [(a, a if k == 0 else b) for a, b in STAGES for k in range(2)]
NUM_BN = 4 * len(BLOCKS) + 1


def _module_variables(seed=0):
    """name -> value of every checkpoint variable of a biggan-deep-128 module at width CH."""
    rng = np.random.default_rng(seed)
    v = {}

    def normal(*shape):
        return rng.normal(size=shape).astype(np.float32)

    def weight(name, *shape):
        v[f"{name}/{EMA}"] = normal(*shape)
        v[name] = normal(*shape)  # the raw weight, set aside

    def sn(scope, shape, bias=True):
        weight(f"{scope}/w", *shape)
        if bias:
            weight(f"{scope}/b", shape[-1])
        v[f"{scope}/u0"] = normal(1, shape[-1])

    weight("linear/w", CLASSES, SHARED)
    sn("Generator/GenZ/G_linear", (DIM_Z + SHARED, 16 * 16 * CH))
    for i, (a, b) in enumerate(BLOCKS):
        scope = "Generator/GBlock" + (f"_{i}" if i else "")
        c_in, mid, c_out = a * CH, a * CH // 4, b * CH
        for k, shape in enumerate(
            [(1, 1, c_in, mid), (3, 3, mid, mid), (3, 3, mid, mid), (1, 1, mid, c_out)]
        ):
            sn(f"{scope}/conv{k}", shape)
            bn = f"{scope}/BatchNorm" + (f"_{k}" if k else "")
            for name in ("scale", "offset"):
                sn(f"{bn}/{name}", (DIM_Z + SHARED, c_in if k == 0 else mid), bias=False)
    c = 2 * CH  # attention after the fourth stage, at 64 px
    for name, shape in (("theta", (c, c // 8)), ("phi", (c, c // 8)), ("g", (c, c // 2))):
        sn(f"Generator/attention/{name}", (1, 1, *shape), bias=False)
    sn("Generator/attention/o_conv", (1, 1, c // 2, c), bias=False)
    weight("Generator/attention/gamma", 1)  # [1], as pytorch-pretrained-BigGAN's loader needs
    weight("Generator/BatchNorm/scale", CH)
    weight("Generator/BatchNorm/offset", CH)
    sn("Generator/conv_to_rgb", (3, 3, CH, CH))
    return v


def _bn_channels():
    """Channels of BN j, in the module's order (4 per block, then the output BN)."""
    channels = []
    for a, _ in BLOCKS:
        channels += [a * CH] + [a * CH // 4] * 3
    return channels + [CH]


def _tables(seed=1):
    """stack number -> [ROWS, C]: BN j's means at 5j + 1, its variances at 5j + 3."""
    rng = np.random.default_rng(seed)
    tables = {}
    for j, c in enumerate(_bn_channels()):
        tables[5 * j + 1] = rng.normal(size=(ROWS, c)).astype(np.float32)
        tables[5 * j + 3] = rng.uniform(0.5, 2.0, size=(ROWS, c)).astype(np.float32)
    return tables


def _stack_name(number):
    return "stack" if number == 0 else f"stack_{number}"


def _node(graph, name, op, inputs=(), **attrs):
    node = graph.node.add(name=name, op=op, input=list(inputs))
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return name


def _const(graph, name, value):
    value = np.asarray(value, np.float32)
    return _node(
        graph,
        name,
        "Const",
        value=tf.compat.v1.AttrValue(tensor=tf.make_tensor_proto(value)),
        dtype=tf.compat.v1.AttrValue(type=tf.float32.as_datatype_enum),
    )


def _pack(graph, name, inputs):
    return _node(
        graph,
        name,
        "Pack",
        inputs,
        N=tf.compat.v1.AttrValue(i=len(inputs)),
        T=tf.compat.v1.AttrValue(type=tf.float32.as_datatype_enum),
        axis=tf.compat.v1.AttrValue(i=0),
    )


def _write_graph(folder, tables, extra_stacks=()):
    """`saved_model.pb` of a graph as the module's: per BN five `stack_*` (Pack) nodes, of
    which 5j + 1 and 5j + 3 stack constant rows (the variances through Identity nodes);
    5j stacks 51 scalar constants and 5j + 2, 5j + 4 computed values. (`tables` holds
    the stacks of constant rows by number.)"""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    graph = saved_model.meta_graphs.add().graph_def
    t = _node(graph, "truncation", "Placeholder")
    keys = [_const(graph, f"key_{k}", k / 50) for k in range(ROWS)]
    computed = [t, _node(graph, "Floor", "Floor", [t])]

    def rows(number, identity=False):
        names = [_const(graph, f"c{number}_{k}", row) for k, row in enumerate(tables[number])]
        if identity:
            names = [_node(graph, f"{n}/read", "Identity", [n]) for n in names]
        return names

    for j in range(NUM_BN):
        _pack(graph, _stack_name(5 * j), keys)
        for offset in (1, 3):
            number = 5 * j + offset
            inputs = rows(number, offset == 3) if number in tables else computed
            _pack(graph, _stack_name(number), inputs)
        _pack(graph, _stack_name(5 * j + 2), computed)
        _pack(graph, _stack_name(5 * j + 4), computed)
    # A stack of constant rows inside a layer's scope is not a table.
    _pack(
        graph, "Generator/GBlock/stack_1", [_const(graph, f"inner_{k}", [k, k]) for k in range(3)]
    )
    for number, value in extra_stacks:
        tables = {**tables, number: value}
        _pack(graph, _stack_name(number), rows(number))
    with open(os.path.join(folder, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())


def _write_deep_module(folder, variables, tables, extra_stacks=()):
    folder = _write_module(folder, variables)
    _write_graph(folder, tables, extra_stacks)
    return folder


@pytest.fixture(scope="module")
def module():
    return _module_variables(), _tables()


@pytest.fixture(scope="module")
def converted(module, tmp_path_factory):
    # `convert_source` is what `python -m tf_biggan.convert --from=tfhub` runs.
    variables, tables = module
    folder = _write_deep_module(tmp_path_factory.mktemp("hub") / "deep", variables, tables)
    result = convert_main.convert_source("tfhub", module_dir=folder)
    return variables, tables, folder, result


def _reordered(w):
    # The module's condition is [z, embedding]; tf_biggan's is [embedding, z].
    return np.concatenate([w[DIM_Z:], w[:DIM_Z]])


def _assert_sn(layer, v, scope, kernel=None, bias=True):
    w = v[f"{scope}/w/{EMA}"]
    np.testing.assert_array_equal(layer.kernel.numpy(), w if kernel is None else kernel(w), scope)
    np.testing.assert_array_equal(layer.u.numpy(), v[f"{scope}/u0"], scope)
    if bias:
        np.testing.assert_array_equal(layer.bias.numpy(), v[f"{scope}/b/{EMA}"], scope)


def _top_sigma(w):
    return np.linalg.svd(w.reshape(-1, w.shape[-1]).astype(np.float64), compute_uv=False)[0]


@pytest.mark.slow
def test_settings_come_from_the_shapes_and_the_tables(converted):
    *_, result = converted
    g = result.ema_generator
    config = g.get_config()
    assert (config["architecture"], config["depth"], config["resolution"]) == ("deep", 2, 128)
    assert (config["ch"], config["num_classes"], config["dim_z"]) == (CH, CLASSES, DIM_Z)
    assert (config["shared_dim"], config["bn_epsilon"]) == (SHARED, 1e-4)
    assert config["num_standing_stats"] == ROWS and config["attention"] == [64]


def test_every_variable_and_table_lands_where_the_module_uses_it(converted):
    v, tables, _, result = converted
    g = result.ema_generator
    np.testing.assert_array_equal(g.shared_embedding.kernel.numpy(), v[f"linear/w/{EMA}"])
    _assert_sn(g.linear, v, "Generator/GenZ/G_linear", _reordered)
    for i, block in enumerate(g.blocks):
        scope = "Generator/GBlock" + (f"_{i}" if i else "")
        for k in range(4):
            _assert_sn(getattr(block, f"conv{k + 1}"), v, f"{scope}/conv{k}")
            cbn = getattr(block, f"bn{k + 1}")
            bn = f"{scope}/BatchNorm" + (f"_{k}" if k else "")
            _assert_sn(cbn.gain, v, f"{bn}/scale", _reordered, bias=False)
            _assert_sn(cbn.bias, v, f"{bn}/offset", _reordered, bias=False)
            j = 4 * i + k
            np.testing.assert_array_equal(cbn.batch_norm.standing_mean.numpy(), tables[5 * j + 1])
            np.testing.assert_array_equal(
                cbn.batch_norm.standing_variance.numpy(), tables[5 * j + 3]
            )
            np.testing.assert_array_equal(cbn.batch_norm.moving_mean.numpy(), tables[5 * j + 1][-1])
    attention = g.attention64
    for name, layer in (("theta", attention.theta), ("phi", attention.phi), ("g", attention.g)):
        _assert_sn(layer, v, f"Generator/attention/{name}", bias=False)
    _assert_sn(attention.o, v, "Generator/attention/o_conv", bias=False)
    assert attention.gamma.numpy() == v[f"Generator/attention/gamma/{EMA}"][0]
    # The output conv keeps the module's first 3 outputs; sigma(full) / sigma(first 3) is
    # folded into the output BN.
    w = v[f"Generator/conv_to_rgb/w/{EMA}"]
    np.testing.assert_array_equal(g.output_conv.kernel.numpy(), w[..., :3])
    np.testing.assert_array_equal(
        g.output_conv.bias.numpy(), v[f"Generator/conv_to_rgb/b/{EMA}"][:3]
    )
    factor = _top_sigma(w[..., :3]) / _top_sigma(w)
    assert 0 < factor < 1
    for ours, theirs in ((g.output_bn.gamma, "scale"), (g.output_bn.beta, "offset")):
        expected = v[f"Generator/BatchNorm/{theirs}/{EMA}"] * factor
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
    last = 5 * (NUM_BN - 1)
    np.testing.assert_array_equal(g.output_bn.standing_mean.numpy(), tables[last + 1])
    np.testing.assert_array_equal(g.output_bn.moving_variance.numpy(), tables[last + 3][-1])


def _interpolated(table, t):
    position = t * (ROWS - 1)
    i = int(np.floor(position))
    f = position - i
    return (1 - f) * table[i] + f * table[i + 1]


def _conv(x, w):
    """SAME, stride-1 convolution of NHWC `x` with the HWIO kernel `w`, float64."""
    k = w.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, width = x.shape[1:3]
    return sum(
        padded[:, dy : dy + h, dx : dx + width] @ w[dy, dx] for dy in range(k) for dx in range(k)
    )


def _module_sn(v, scope):
    """The module's inference kernel: w / sigma, sigma from one power iteration from u0."""
    w = v[f"{scope}/w/{EMA}"].astype(np.float64)
    matrix = w.reshape(-1, w.shape[-1])
    u = v[f"{scope}/u0"].astype(np.float64)
    left = u @ matrix.T
    left /= np.linalg.norm(left)
    right = left @ matrix
    right /= np.linalg.norm(right)
    return w / (left @ matrix @ right.T).item()


def _upsample(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def test_a_block_computes_the_modules_function_between_two_table_rows(converted):
    # Block 3 upsamples and halves the width (16ch -> 8ch, the skip keeps 8ch channels).
    # The module: every BN is (x - m(t)) / sqrt(v(t) + 1e-4) * (1 + [z, e] S) + [z, e] O.
    v, tables, _, result = converted
    g = result.ema_generator
    t = 0.37  # between rows 18 (t = 0.36) and 19 (t = 0.38)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 4, 16 * CH))
    z = rng.normal(size=(2, DIM_Z))
    e = np.eye(CLASSES)[[1, 999]] @ v[f"linear/w/{EMA}"]
    condition = np.concatenate([z, e], axis=1)
    scope = "Generator/GBlock_3"

    def bn(h, k):
        name = f"{scope}/BatchNorm" + (f"_{k}" if k else "")
        j = 4 * 3 + k
        mean, var = _interpolated(tables[5 * j + 1], t), _interpolated(tables[5 * j + 3], t)
        gain = 1 + condition @ _module_sn(v, f"{name}/scale")
        bias = condition @ _module_sn(v, f"{name}/offset")
        normalized = (h - mean) / np.sqrt(var + 1e-4)
        return np.maximum(normalized * gain[:, None, None] + bias[:, None, None], 0)

    def conv(h, k):
        return _conv(h, _module_sn(v, f"{scope}/conv{k}")) + v[f"{scope}/conv{k}/b/{EMA}"]

    h = conv(bn(x, 0), 0)
    h = conv(_upsample(bn(h, 1)), 1)
    h = conv(bn(h, 2), 2)
    h = conv(bn(h, 3), 3)
    expected = h + _upsample(x[..., : 8 * CH])
    ours = np.concatenate([e, z], axis=1).astype(np.float32)
    got = g.blocks[3](x.astype(np.float32), ours, training=False, statistics_at=t).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # On a row's own truncation the row is used as it is (t = 0.3: row 15).
    # (pytorch-pretrained-BigGAN's math.modf(0.3 / 0.02) rounds to row 14 there.)
    mean, _ = g.blocks[3].bn2.batch_norm.standing_statistics(0.3)
    np.testing.assert_allclose(mean.numpy(), tables[5 * 13 + 1][15], atol=1e-5)


def test_the_output_layers_equal_the_modules_sliced_full_sigma_conv(converted):
    # The module: conv(ReLU(BN(h)), W / sigma(W))[..., :3] + b[:3] with the whole kernel's
    # sigma; sample and export (and the converted conv's own u) use exact singular values.
    v, tables, _, result = converted
    g = result.ema_generator
    t = 0.5
    h = np.random.default_rng(3).normal(size=(2, 8, 8, CH))
    last = 5 * (NUM_BN - 1)
    mean, var = _interpolated(tables[last + 1], t), _interpolated(tables[last + 3], t)
    normalized = (h - mean) / np.sqrt(var + 1e-4)
    scale, offset = (v[f"Generator/BatchNorm/{n}/{EMA}"] for n in ("scale", "offset"))
    w = v[f"Generator/conv_to_rgb/w/{EMA}"].astype(np.float64)
    full = _conv(np.maximum(normalized * scale + offset, 0), w / _top_sigma(w))
    expected = full[..., :3] + v[f"Generator/conv_to_rgb/b/{EMA}"][:3]
    features = tf.nn.relu(g.output_bn(h.astype(np.float32), training=False, statistics_at=t))
    got = g.output_conv(features, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_deep_and_biggan_modules_are_told_apart(converted, tmp_path):
    *_, folder, result = converted
    biggan = _write_module(tmp_path / "biggan-128_2", _biggan_module_variables())
    assert tfhub_deep.is_deep_module(folder) and not tfhub_deep.is_deep_module(biggan)
    assert "BigGAN-deep TF-Hub module" in result.source


@pytest.mark.slow
def test_convert_writes_a_model_dir_that_samples_by_class_name(converted, tmp_path):
    *_, result = converted
    model_dir = str(tmp_path / "hubdeep128")
    write_model_dir(result, model_dir)
    with open(os.path.join(model_dir, "model_config.json")) as f:
        config = json.load(f)["generator"]
    assert (config["architecture"], config["num_standing_stats"]) == ("deep", ROWS)
    with open(os.path.join(model_dir, "config.gin")) as f:
        assert "Discriminator.architecture = 'deep'" in f.read()
    gen = tf_biggan.load(model_dir)
    images = gen.sample(["goldfish"], n=1, truncation=0.5, seed=0)
    assert images.shape == (1, 128, 128, 3) and images.dtype == np.uint8


@pytest.mark.slow
def test_a_missing_or_leftover_variable_is_named(module, tmp_path):
    variables, tables = module
    missing = dict(variables)
    del missing["Generator/GBlock_3/BatchNorm_2/offset/u0"]
    folder = _write_deep_module(tmp_path / "missing", missing, tables)
    with pytest.raises(KeyError, match="Generator/GBlock_3/BatchNorm_2/offset/u0"):
        tfhub_deep.load_generator(folder)
    extra = dict(variables, **{f"Generator/GBlock_2/conv4/w/{EMA}": np.zeros(3, np.float32)})
    folder = _write_deep_module(tmp_path / "extra", extra, tables)
    with pytest.raises(ValueError, match=f"Generator/GBlock_2/conv4/w/{EMA}"):
        tfhub_deep.load_generator(folder)


def test_a_missing_or_leftover_table_is_named(module, tmp_path):
    variables, tables = module
    last = 5 * (NUM_BN - 1) + 3
    missing = {n: value for n, value in tables.items() if n != last}
    folder = _write_deep_module(tmp_path / "missing", variables, missing)
    with pytest.raises(KeyError, match=f"stack_{last} .the variances of Generator/BatchNorm"):
        tfhub_deep.load_generator(folder)
    extra = [(5 * NUM_BN + 1, np.zeros((ROWS, CH), np.float32))]
    folder = _write_deep_module(tmp_path / "extra", variables, tables, extra)
    with pytest.raises(ValueError, match=f"stack_{5 * NUM_BN + 1}"):
        tfhub_deep.load_generator(folder)


def test_a_module_without_tables_is_refused(module, tmp_path):
    variables, _ = module
    folder = _write_module(tmp_path / "no_graph", variables)
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        tfhub_deep.load_generator(folder)
    _write_graph(folder, {})
    with pytest.raises(ValueError, match="no truncation-indexed batch-norm statistics"):
        tfhub_deep.load_generator(folder)
