"""Tests for tf_biggan.networks: shapes and ranges at every resolution, parameter counts
computed from the architecture formula, attention placement, config round trips."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import kernels, layers, networks, networks_biggan

CH = 8
CLASSES = 3
SHARED = 16

# The paper's channel tables (DESIGN.md), written out here independently of networks_biggan.G_ARCH:
# input multiplier, block multipliers; D: block multipliers, downsampling flags.
PAPER_G = {
    32: (4, (4, 4, 4)),
    64: (16, (16, 8, 4, 2)),
    128: (16, (16, 8, 4, 2, 1)),
    256: (16, (16, 8, 8, 4, 2, 1)),
    512: (16, (16, 8, 8, 4, 2, 1, 1)),
}
PAPER_D = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True,) * 4 + (False,)),
    128: ((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
    512: ((1, 1, 2, 4, 8, 8, 16, 16), (True,) * 7 + (False,)),
}
# Default attention resolution and the (height, channels / ch) of the features it sees.
PAPER_ATTENTION_G = {32: None, 64: (32, 4), 128: (64, 2), 256: (128, 2), 512: (64, 4)}
PAPER_ATTENTION_D = {32: None, 64: (32, 1), 128: (64, 1), 256: (128, 1), 512: (64, 2)}


# D's final feature map before the sum pooling (BigGAN-PyTorch's D_arch): the blocks after
# the last downsampling keep 4x4 at 64-512 px and 8x8 at 32 px.
PAPER_D_FINAL_SIZE = {32: 8, 64: 4, 128: 4, 256: 4, 512: 4}


def _attention_params(c):
    # theta, phi: C -> C/8; g: C -> C/2; o: C/2 -> C; no biases; scalar gamma.
    return 2 * c * (c // 8) + 2 * c * (c // 2) + 1


def expected_g_params(resolution, ch, num_classes, dim_z, shared_dim, attention_channels):
    input_multiplier, multipliers = PAPER_G[resolution]
    chunk = dim_z // (len(multipliers) + 1)
    cond = shared_dim + chunk
    total = num_classes * shared_dim  # shared embedding, no bias
    c_in = input_multiplier * ch
    total += chunk * 16 * c_in + 16 * c_in  # SN linear to 4x4xC, with bias
    for multiplier in multipliers:
        c_out = multiplier * ch
        total += 2 * cond * c_in  # CBN 1 gain + bias (SN linear, no bias)
        total += 9 * c_in * c_out + c_out  # conv1 3x3
        total += 2 * cond * c_out  # CBN 2
        total += 9 * c_out * c_out + c_out  # conv2 3x3
        total += c_in * c_out + c_out  # shortcut 1x1
        c_in = c_out
    total += sum(_attention_params(c) for c in attention_channels)
    total += 2 * c_in  # output BN scale and offset
    total += 9 * c_in * 3 + 3  # output conv to RGB
    return total


def expected_d_params(resolution, ch, num_classes, attention_channels):
    multipliers, downsample = PAPER_D[resolution]
    total = 0
    c_in = 3
    for multiplier, down in zip(multipliers, downsample, strict=True):
        c_out = multiplier * ch
        total += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out
        if c_in != c_out or down:
            total += c_in * c_out + c_out
        c_in = c_out
    total += sum(_attention_params(c) for c in attention_channels)
    total += c_in + 1  # linear psi
    total += num_classes * c_in  # projection embedding
    return total


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [32, 64])
def test_tiny_parameter_counts_match_hand_formula(resolution):
    dim_z = 20 if resolution == 32 else 25
    generator = networks.Generator(
        resolution=resolution, ch=CH, num_classes=CLASSES, dim_z=dim_z, shared_dim=SHARED
    )
    discriminator = networks.Discriminator(resolution=resolution, ch=CH, num_classes=CLASSES)
    generator.build_by_call()
    discriminator.build_by_call()
    g_attention = [] if resolution == 32 else [4 * CH]
    d_attention = [] if resolution == 32 else [CH]
    expected_g = expected_g_params(resolution, CH, CLASSES, dim_z, SHARED, g_attention)
    expected_d = expected_d_params(resolution, CH, CLASSES, d_attention)
    assert networks.count_trainable_parameters(generator) == expected_g
    assert networks.count_trainable_parameters(discriminator) == expected_d
    # SN u, sigma and BN moving statistics exist but are not trainable.
    non_trainable = {v.path.split("/")[-1] for v in generator.non_trainable_variables}
    assert non_trainable == {"sn_u", "sn_sigma", "moving_mean", "moving_variance"}


@pytest.mark.slow
@pytest.mark.parametrize("resolution", sorted(PAPER_D_FINAL_SIZE))
def test_discriminator_final_features_have_the_ports_size(resolution):
    # ch 2 without attention keeps 512 px cheap; the spatial sizes do not depend on ch.
    ch = 2
    discriminator = networks.Discriminator(
        resolution=resolution, ch=ch, num_classes=CLASSES, attention=0
    )
    rng = np.random.default_rng(resolution)
    images = tf.constant(rng.uniform(-1, 1, [1, resolution, resolution, 3]), tf.float32)
    labels = tf.constant([1])
    logits = discriminator(images, labels, training=False)
    features = discriminator.features(images, training=False)
    size = PAPER_D_FINAL_SIZE[resolution]
    channels = PAPER_D[resolution][0][-1] * ch
    assert tuple(features.shape) == (1, size, size, channels)
    # `call` sum-pools these ReLU'd features into psi and the projection.
    h = tf.reduce_sum(tf.nn.relu(features), axis=[1, 2])
    psi = discriminator.linear.normalized_kernel(training=False)
    embedding = discriminator.embedding.normalized_kernel(training=False)
    expected = (
        tf.matmul(h, psi)[:, 0]
        + discriminator.linear.bias
        + tf.reduce_sum(tf.gather(embedding, labels) * h, axis=-1)
    )
    np.testing.assert_allclose(
        logits.numpy(),
        expected.numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.fixture
def attention_inputs(monkeypatch):
    """Records `(height, width, channels)` of the input of each SelfAttention layer called.

    Keras may run `call` more than once on a layer's first use, so each layer is
    recorded once, in the order of first calls.
    """
    seen = []
    called = set()
    original = layers.SelfAttention.call

    def recording_call(self, x, training=None):
        if id(self) not in called:
            called.add(id(self))
            seen.append((x.shape[1], x.shape[2], x.shape[3]))
        return original(self, x, training=training)

    monkeypatch.setattr(layers.SelfAttention, "call", recording_call)
    return seen


def _self_attention_layers(model):
    return [sub for sub in model._flatten_layers() if isinstance(sub, layers.SelfAttention)]


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [32, 64, 128, 256, 512])
def test_networks_at_every_resolution(resolution, attention_inputs):
    batch = 2
    generator = networks.Generator(
        resolution=resolution, ch=CH, num_classes=CLASSES, shared_dim=SHARED
    )
    discriminator = networks.Discriminator(resolution=resolution, ch=CH, num_classes=CLASSES)
    assert generator.dim_z == {32: 128, 64: 120, 128: 120, 256: 140, 512: 128}[resolution]
    rng = np.random.RandomState(resolution)
    z = rng.randn(batch, generator.dim_z).astype(np.float32)
    y = tf.one_hot([0, 2], CLASSES)
    images = generator(z, y, training=True)
    assert images.shape == (batch, resolution, resolution, 3)
    assert images.dtype == tf.float32
    images = images.numpy()
    assert np.all(np.isfinite(images))
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 1e-3  # not a constant image
    g_seen = list(attention_inputs)
    logits = discriminator(images, tf.constant([0, 2]), training=True)
    assert logits.shape == (batch,)
    assert logits.dtype == tf.float32
    assert np.all(np.isfinite(logits.numpy()))
    d_seen = attention_inputs[len(g_seen) :]

    for seen, expected, model in (
        (g_seen, PAPER_ATTENTION_G[resolution], generator),
        (d_seen, PAPER_ATTENTION_D[resolution], discriminator),
    ):
        if expected is None:
            assert seen == [] and _self_attention_layers(model) == []
        else:
            size, multiplier = expected
            assert seen == [(size, size, multiplier * CH)]
            assert len(_self_attention_layers(model)) == 1


def _built_networks(resolution, g_attention, d_attention):
    generator = networks.Generator(
        resolution=resolution, ch=CH, num_classes=CLASSES, shared_dim=SHARED, attention=g_attention
    )
    discriminator = networks.Discriminator(
        resolution=resolution, ch=CH, num_classes=CLASSES, attention=d_attention
    )
    generator.build_by_call()
    discriminator.build_by_call()
    return generator, discriminator


@pytest.mark.slow
def test_attention_zero_means_no_attention(attention_inputs):
    generator, discriminator = _built_networks(64, g_attention=0, d_attention=0)
    assert _self_attention_layers(generator) == []
    assert _self_attention_layers(discriminator) == []
    assert attention_inputs == []
    expected = expected_g_params(64, CH, CLASSES, 120, SHARED, [])
    assert networks.count_trainable_parameters(generator) == expected


@pytest.mark.slow
def test_attention_at_a_chosen_resolution(attention_inputs):
    generator, discriminator = _built_networks(32, g_attention=16, d_attention=8)
    # G 32 px: 4 -> 8 -> 16 (4ch); D: 32 -> 16 -> 8 (4ch), then two blocks at 8 (one attention).
    assert attention_inputs == [(16, 16, 4 * CH), (8, 8, 4 * CH)]


def test_bad_dim_z_resolution_and_attention_raise():
    with pytest.raises(ValueError, match="dim_z=121"):
        networks.Generator(resolution=128, ch=CH, num_classes=CLASSES, dim_z=121)
    # Without the hierarchical split any size works.
    networks.Generator(resolution=128, ch=CH, num_classes=CLASSES, dim_z=121, hierarchical_z=False)
    for resolution in (48, 1024):
        with pytest.raises(ValueError, match=str(resolution)):
            networks.Generator(resolution=resolution, ch=CH, num_classes=CLASSES)
        with pytest.raises(ValueError, match=str(resolution)):
            networks.Discriminator(resolution=resolution, ch=CH, num_classes=CLASSES)
    with pytest.raises(ValueError, match="attention"):
        networks.Generator(resolution=32, ch=CH, num_classes=CLASSES, attention=12)
    with pytest.raises(ValueError, match="attention"):
        networks.Discriminator(resolution=32, ch=CH, num_classes=CLASSES, attention=64)


@pytest.mark.slow
def test_hierarchical_z_chunks_reach_the_blocks():
    generator = networks.Generator(
        resolution=32, ch=CH, num_classes=CLASSES, dim_z=20, shared_dim=SHARED
    )
    z = np.random.RandomState(0).randn(2, 20).astype(np.float32)
    y = tf.one_hot([1, 1], CLASSES)
    base = generator(z, y, training=False).numpy()
    # Every chunk of 5 changes the output; the first feeds the linear layer, the others CBN.
    for k in range(4):
        changed = z.copy()
        changed[:, 5 * k : 5 * (k + 1)] += 1.0
        assert np.abs(generator(changed, y, training=False).numpy() - base).max() > 1e-4
    # Labels only enter through the shared embedding, a linear map of y.
    mixed = generator(z, 0.5 * tf.one_hot([0, 0], CLASSES) + 0.5 * y, training=False)
    assert np.abs(mixed.numpy() - base).max() > 1e-4


@pytest.mark.slow
def test_generator_and_discriminator_share_no_variables():
    generator = networks.Generator(resolution=32, ch=CH, num_classes=CLASSES, shared_dim=SHARED)
    discriminator = networks.Discriminator(resolution=32, ch=CH, num_classes=CLASSES)
    generator.build_by_call()
    discriminator.build_by_call()
    g_ids = {id(v) for v in generator.variables}
    d_ids = {id(v) for v in discriminator.variables}
    assert len(g_ids) == len(generator.variables) and len(d_ids) == len(discriminator.variables)
    assert g_ids and d_ids and not g_ids & d_ids


@pytest.mark.parametrize(
    "block, shape",
    [
        (
            networks_biggan.DiscriminatorBlock(16, downsample=True, preactivation=False),
            (2, 8, 8, 3),
        ),
        (networks_biggan.DiscriminatorBlock(16, downsample=True, preactivation=True), (2, 8, 8, 8)),
        (networks_biggan.DiscriminatorBlock(8, downsample=False, preactivation=True), (2, 4, 4, 8)),
    ],
)
def test_discriminator_block_round_trip(block, shape):
    x = np.random.RandomState(1).randn(*shape).astype(np.float32)
    out = block(x, training=True)
    down = 2 if block.downsample else 1
    assert out.shape == (shape[0], shape[1] // down, shape[2] // down, block.filters)
    assert (block.conv_shortcut is None) == (shape[-1] == block.filters and not block.downsample)
    config = block.get_config()
    rebuilt = networks_biggan.DiscriminatorBlock.from_config(config)
    assert rebuilt.get_config() == config
    tiny_models.assert_rebuilt_computes_the_same(block, rebuilt, (x,))


def test_generator_block_round_trip():
    rng = np.random.RandomState(2)
    x = rng.randn(2, 4, 4, 8).astype(np.float32)
    c = rng.randn(2, 6).astype(np.float32)
    block = networks_biggan.GeneratorBlock(16, bn_momentum=0.8)
    out = block(x, c, training=True)
    assert out.shape == (2, 8, 8, 16)
    config = block.get_config()
    rebuilt = networks_biggan.GeneratorBlock.from_config(config)
    assert rebuilt.get_config() == config
    tiny_models.assert_rebuilt_computes_the_same(block, rebuilt, (x, c))


@pytest.mark.slow
def test_generator_and_discriminator_round_trip():
    generator = networks.Generator(
        resolution=32, ch=CH, num_classes=CLASSES, dim_z=20, shared_dim=SHARED, attention=16
    )
    discriminator = networks.Discriminator(resolution=32, ch=CH, num_classes=CLASSES, attention=16)
    z = np.random.RandomState(3).randn(2, 20).astype(np.float32)
    y = tf.one_hot([0, 2], CLASSES)
    images = generator(z, y, training=True)  # moves u and the BN statistics
    discriminator(images, tf.constant([0, 2]), training=True)
    for model, inputs in ((generator, (z, y)), (discriminator, (images, tf.constant([0, 2])))):
        config = model.get_config()
        rebuilt = type(model).from_config(config)
        assert rebuilt.get_config() == config
        tiny_models.assert_rebuilt_computes_the_same(model, rebuilt, inputs)


def test_the_networks_are_the_one_source_of_resolution_and_classes():
    generator = networks.Generator(resolution=32, ch=CH, num_classes=CLASSES)
    discriminator = networks.Discriminator(resolution=32, ch=CH, num_classes=CLASSES)
    networks.check_same_task(generator, discriminator)
    networks.check_same_task(generator, discriminator, resolution=32, num_classes=CLASSES)
    with pytest.raises(ValueError, match="Generator.resolution = 32, .* train.resolution = 64"):
        networks.check_same_task(generator, discriminator, resolution=64)
    other = networks.Discriminator(resolution=32, ch=CH, num_classes=CLASSES + 1)
    with pytest.raises(ValueError, match="disagree on num_classes"):
        networks.check_same_task(generator, other)


def test_the_configured_task_is_read_without_building_the_networks():
    gin.clear_config()
    try:
        assert networks.configured_task() == (128, 1000)  # the constructor's defaults
        gin.parse_config("Generator.resolution = 32\nGenerator.num_classes = 5")
        assert networks.configured_task() == (32, 5)
        assert networks.configured_task(networks.Discriminator) == (128, 1000)
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_bn_epsilon_is_a_gin_setting_of_every_batch_norm_of_g():
    gin.clear_config()
    try:
        gin.parse_config("Generator.bn_epsilon = 0.25")
        generator = networks.Generator(
            resolution=32, ch=CH, num_classes=CLASSES, dim_z=20, shared_dim=SHARED, attention=0
        )
    finally:
        gin.clear_config()
    generator.build_by_call()
    norms = layers.batch_norm_layers(generator)
    assert len(norms) == 2 * 3 + 1  # two conditional BNs per block, then the last BN
    assert {bn.epsilon for bn in norms} == {0.25}
    assert generator.get_config()["bn_epsilon"] == 0.25
    # The closed form (x - mean) / sqrt(var + eps) * gamma + beta with the bound eps.
    bn = generator.output_bn
    rng = np.random.RandomState(7)
    bn.moving_mean.assign(rng.randn(4 * CH).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.01, 0.1, 4 * CH).astype(np.float32))
    bn.gamma.assign(rng.randn(4 * CH).astype(np.float32))
    x = rng.randn(2, 4, 4, 4 * CH).astype(np.float32)
    expected = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 0.25)
    expected = expected * bn.gamma.numpy() + bn.beta.numpy()
    np.testing.assert_allclose(bn(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert networks.Generator(resolution=32, ch=CH).bn_epsilon == 1e-5
    with pytest.raises(ValueError, match="bn_epsilon"):
        networks.Generator(resolution=32, ch=CH, bn_epsilon=0.0)


@pytest.mark.parametrize("architecture", ["biggan", "deep"])
def test_the_moving_variance_estimator_is_a_gin_setting_of_every_batch_norm_of_g(architecture):
    """`Generator.bn_unbiased_moving_variance = False` (0.2's biased form) reaches every batch
    norm of G, and survives get_config; the default is the reference's unbiased form. A
    training pass then moves each moving variance by the batch's biased variance."""
    settings = dict(resolution=32, ch=CH, num_classes=CLASSES, dim_z=20, attention=0)
    if architecture == "deep":
        settings.update(architecture="deep", shared_dim=SHARED, depth=1)
    gin.clear_config()
    try:
        gin.parse_config("Generator.bn_unbiased_moving_variance = False")
        generator = networks.Generator(**settings)
    finally:
        gin.clear_config()
    generator.build_by_call()
    norms = layers.batch_norm_layers(generator)
    assert len(norms) >= 7 and {bn.unbiased_moving_variance for bn in norms} == {False}
    rebuilt = networks.Generator.from_config(generator.get_config())
    rebuilt.build_by_call()
    assert {bn.unbiased_moving_variance for bn in layers.batch_norm_layers(rebuilt)} == {False}
    default = networks.Generator(**settings)
    default.build_by_call()
    assert {bn.unbiased_moving_variance for bn in layers.batch_norm_layers(default)} == {True}
    # One training pass of both from the same weights: each BN's moving variance moves by
    # 0.1 * (var - 1), with var n / (n - 1) times larger in the default (n = B * H * W
    # values per channel; B = 4 and H = W = 4 to 32 here).
    default.set_weights(generator.get_weights())
    z = np.random.RandomState(3).randn(4, 20).astype(np.float32)
    y = tf.one_hot([0, 1, 2, 0], CLASSES)
    generator(z, y, training=True)
    default(z, y, training=True)
    candidates = np.array([4 * size * size for size in (4, 8, 16, 32)], np.float64)
    ratios = candidates / (candidates - 1)
    for biased, unbiased in zip(norms, layers.batch_norm_layers(default), strict=True):
        moved_biased = np.sum(biased.moving_variance.numpy().astype(np.float64) - 0.9)
        moved_unbiased = np.sum(unbiased.moving_variance.numpy().astype(np.float64) - 0.9)
        ratio = moved_unbiased / moved_biased
        assert np.min(np.abs(ratio - ratios)) < 1e-5, (biased.path, ratio, ratios)
        np.testing.assert_array_equal(biased.moving_mean.numpy(), unbiased.moving_mean.numpy())


@pytest.mark.slow
def test_truncation_reaches_every_batch_norm_table_through_g():
    kwargs = dict(resolution=32, ch=CH, num_classes=CLASSES, dim_z=20, shared_dim=SHARED)
    generator = networks.Generator(attention=0, num_standing_stats=3, **kwargs)
    generator.build_by_call()
    rng = np.random.RandomState(8)
    norms = layers.batch_norm_layers(generator)
    for bn in norms:
        shape = bn.standing_mean.shape
        bn.standing_mean.assign(rng.randn(*shape).astype(np.float32))
        bn.standing_variance.assign(rng.uniform(0.5, 2, shape).astype(np.float32))
    z = rng.randn(2, 20).astype(np.float32)
    y = tf.one_hot([0, 2], CLASSES)
    # The same G with the entry of t = 0.5 (the middle one) as its moving statistics.
    reference = networks.Generator(attention=0, **kwargs)
    reference.build_by_call()
    for bn, ref in zip(norms, layers.batch_norm_layers(reference), strict=True):
        ref.moving_mean.assign(bn.standing_mean[1])
        ref.moving_variance.assign(bn.standing_variance[1])
    by_name = {v.path.split("/", 1)[1]: v for v in reference.weights}
    for v in generator.weights:
        name = v.path.split("/", 1)[1]
        if "standing" not in name and "moving" not in name:
            by_name[name].assign(v)
    expected = reference(z, y, training=False).numpy()
    got = generator(z, y, training=False, truncation=tf.constant(0.5)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    untruncated = generator(z, y, training=False).numpy()
    assert np.abs(untruncated - got).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["biggan", "deep"])
def test_g_training_pass_is_the_same_with_batch_norm_relu(monkeypatch, architecture):
    """Every BN-ReLU of G (both architectures' blocks and the output BN) through
    `kernels.batch_norm_relu` (floor 0) gives the outputs, the gradients of every trainable
    variable and the moving statistics of the separate ops."""
    rng = np.random.RandomState(9)
    z = tf.constant(rng.randn(4, 32).astype(np.float32))
    y = tf.one_hot([0, 2, 1, 2], CLASSES)
    upstream = tf.constant(rng.randn(4, 32, 32, 3).astype(np.float32))
    generators = []
    for floor in (2**62, 0):
        with kernels.policy_scope(kernels.KernelPolicy(batch_norm_relu_min_elements=floor)):
            generators.append(tiny_models.generator(architecture=architecture))
        generators[-1](z, y, training=False)
    start = [v.numpy() for v in generators[0].variables]
    calls = []
    fused_op = kernels.batch_norm_relu
    monkeypatch.setattr(kernels, "batch_norm_relu", lambda *a: calls.append(1) or fused_op(*a))
    results = []
    for generator in generators:
        batch_norms = layers.batch_norm_layers(generator)
        for variable, value in zip(generator.variables, start, strict=True):
            variable.assign(value)
        with tf.GradientTape() as tape:
            images = generator(z, y, training=True)
            loss = tf.reduce_sum(images * upstream)
        grads = tape.gradient(loss, generator.trainable_variables)
        moving = [bn.moving_variance.numpy() for bn in batch_norms]
        results.append((images.numpy(), [g.numpy() for g in grads], moving))
    assert len(calls) == len(batch_norms) >= 7  # each BN once, with the floor at 0 only
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for fused, separate in zip(results[1][1], results[0][1], strict=True):
        # Float32 sums in another order: within 1e-4 of each gradient's largest element, or
        # 1e-4 for the biases of the convs before a BN, whose gradient is 0 up to rounding.
        atol = 1e-4 * max(np.abs(separate).max(), 1.0)
        np.testing.assert_allclose(fused, separate, rtol=0, atol=atol)
    for fused, separate in zip(results[1][2], results[0][2], strict=True):
        np.testing.assert_allclose(fused, separate, rtol=1e-5)


def test_a_training_step_computes_in_float64_under_a_float64_policy():
    """G and D built under Keras' float64 policy: every variable, G's images and D's logits
    are float64, and one training step (the loop's `make_train_step`) keeps them so; this
    is what `tools/port_step_parity.py --dtype=float64` runs."""
    from tf_biggan import optimizers, state, step

    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        config = dict(resolution=32, ch=4, num_classes=3, dim_z=16, shared_dim=8)
        train_state = state.TrainState(
            networks.Generator(**config, name="generator"),
            networks.Discriminator(resolution=32, ch=4, num_classes=3, name="discriminator"),
            networks.Generator(**config, name="ema_generator"),
            optimizers.make_optimizer(learning_rate=1e-3),
            optimizers.make_optimizer(learning_rate=1e-3),
        )
        train_state.build()
    finally:
        keras.config.set_dtype_policy(saved)
    g, d = train_state.generator, train_state.discriminator
    assert {v.dtype for v in g.variables + d.variables} == {"float64"}
    images = g(tf.zeros([2, 16]), tf.one_hot([0, 2], 3), training=True)
    assert images.dtype == tf.float64
    assert d(images, tf.constant([0, 2]), training=True).dtype == tf.float64
    before = [v.numpy() for v in g.trainable_variables]
    train_step = step.make_train_step(
        train_state, tf.distribute.get_strategy(), step.StepConfig(batch_size=2)
    )
    reals = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    metrics = train_step(reals, np.array([1, 2], np.int32))
    assert all(np.isfinite(float(value)) for value in metrics.values())
    after = [v.numpy() for v in g.trainable_variables]
    assert all(a.dtype == np.float64 for a in after)
    assert any(np.any(a != b) for a, b in zip(after, before, strict=True))
