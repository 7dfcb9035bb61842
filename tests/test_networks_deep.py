"""Tests for BigGAN-deep (tf_biggan.networks_deep, built by tf_biggan.networks with
`architecture="deep"`): the blocks against numpy references, the parameter counts against a
formula written from the port's tables (which gives its 50,244,484 / 34,590,210 at 128 px),
block and attention placement, gin selection, errors and config round trips."""

import gin
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import kernels, layers, model_files, networks, networks_deep

# The port's BigGANdeep.py tables (G_arch / D_arch) and DeepMind's biggan-deep-512 module,
# written out independently of networks_deep: per stage (in, out) multipliers of ch.
DEEP_G = {
    32: ((4, 4), (4, 4), (4, 4)),
    64: ((16, 16), (16, 8), (8, 4), (4, 2)),
    128: ((16, 16), (16, 8), (8, 4), (4, 2), (2, 1)),
    256: ((16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1)),
    512: ((16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1), (1, 1)),
}
DEEP_D = {
    32: ((4, 4), (4, 4), (4, 4)),
    64: ((1, 2), (2, 4), (4, 8), (8, 16)),
    128: ((1, 2), (2, 4), (4, 8), (8, 16), (16, 16)),
    256: ((1, 2), (2, 4), (4, 8), (8, 8), (8, 16), (16, 16)),
    512: ((1, 1), (1, 2), (2, 4), (4, 8), (8, 8), (8, 16), (16, 16)),
}


def _attention_params(c):
    return 2 * c * (c // 8) + 2 * c * (c // 2) + 1


def expected_deep_g_params(resolution, ch, classes, dim_z, shared, attention_channels, depth=2):
    cond = shared + dim_z
    c0 = DEEP_G[resolution][0][0] * ch
    total = classes * shared + cond * 16 * c0 + 16 * c0  # embedding, linear with bias
    for cin_m, cout_m in DEEP_G[resolution]:
        for index in range(depth):
            cin = cin_m * ch
            cout = (cout_m if index == depth - 1 else cin_m) * ch
            hidden = cin // 4
            total += 2 * cond * (cin + 3 * hidden)  # four CBNs: gain and bias, no bias
            total += cin * hidden + hidden + 2 * (9 * hidden * hidden + hidden)
            total += hidden * cout + cout
    c_last = DEEP_G[resolution][-1][1] * ch
    total += sum(_attention_params(c) for c in attention_channels)
    return total + 2 * c_last + 9 * c_last * 3 + 3  # output BN, conv to RGB


def expected_deep_d_params(resolution, ch, classes, attention_channels, depth=2):
    c0 = DEEP_D[resolution][0][0] * ch
    total = 9 * 3 * c0 + c0  # stem conv
    for cin_m, cout_m in DEEP_D[resolution]:
        for index in range(depth):
            cin, cout = (cin_m if index == 0 else cout_m) * ch, cout_m * ch
            hidden = cout // 4
            total += cin * hidden + hidden + 2 * (9 * hidden * hidden + hidden)
            total += hidden * cout + cout
            if cout > cin:
                total += cin * (cout - cin) + (cout - cin)  # the skip's learnt channels
    c_last = DEEP_D[resolution][-1][1] * ch
    total += sum(_attention_params(c) for c in attention_channels)
    return total + c_last + 1 + classes * c_last  # linear psi, projection embedding


def test_the_formula_gives_the_ports_counts_at_128px():
    # launch_BigGAN_deep.sh: ch 128, depth 2, dim_z 128, shared 128, attention 64 in G (after
    # the 4 -> 2 stage: 256 channels) and D (after the first stage: 256 channels).
    assert expected_deep_g_params(128, 128, 1000, 128, 128, [256]) == 50_244_484
    assert expected_deep_d_params(128, 128, 1000, [256]) == 34_590_210


def test_the_tables_are_the_ports_and_the_modules():
    for resolution in DEEP_G:
        assert networks_deep.DEEP_G_ARCH[resolution].stages == DEEP_G[resolution]
        assert networks_deep.DEEP_D_ARCH[resolution].stages == DEEP_D[resolution]
    # D keeps 8x8 for its last stage at 32 px and ends at 4x4 above; G always upsamples.
    assert networks_deep.DEEP_D_ARCH[32].resample == (True, True, False)
    assert all(
        networks_deep.DEEP_D_ARCH[r].resample == (True,) * len(DEEP_D[r]) for r in DEEP_D if r > 32
    )
    assert all(all(networks_deep.DEEP_G_ARCH[r].resample) for r in DEEP_G)


@pytest.mark.slow
def test_built_networks_have_the_formulas_parameter_count():
    # 64 px: every kind of stage (G narrows, D widens through learnt skip channels).
    g = networks.Generator(
        resolution=64, ch=4, num_classes=3, dim_z=16, shared_dim=8, attention=32,
        architecture="deep",
    )  # fmt: skip
    d = networks.Discriminator(
        resolution=64, ch=4, num_classes=3, attention=32, architecture="deep"
    )
    out = g(tf.random.normal([2, 16]), tf.one_hot([0, 2], 3), training=False)
    assert out.shape == (2, 64, 64, 3)
    assert d.features(tf.zeros([1, 64, 64, 3])).shape == (1, 4, 4, 64)
    d.build_by_call()
    # Attention at 32 px sees 4 * ch = 16 channels in G (after the third stage) and 2 * ch = 8
    # in D (after the first).
    assert networks.count_trainable_parameters(g) == expected_deep_g_params(64, 4, 3, 16, 8, [16])
    assert networks.count_trainable_parameters(d) == expected_deep_d_params(64, 4, 3, [8])
    # The whole z with the embedding conditions every block (no chunks): CBN input 8 + 16.
    assert g.blocks[7].bn4.gain.kernel.shape == (24, 4)  # 16 channels in, bottleneck 4
    assert g.linear.kernel.shape == (24, 16 * 64)


def test_blocks_stages_and_attention_placement_at_128px():
    g = networks.Generator(resolution=128, ch=4, num_classes=3, architecture="deep", depth=3)
    d = networks.Discriminator(resolution=128, ch=4, num_classes=3, architecture="deep")
    # G: 5 stages of 3 blocks, the last of each upsampling; attention after the stage that
    # reaches 64 px (the fourth: blocks 9-11).
    assert len(g.blocks) == 15
    assert [b.upsample for b in g.blocks] == [False, False, True] * 5
    assert [b.filters for b in g.blocks[9:12]] == [16, 16, 8]
    assert [b.hidden for b in g.blocks[9:12]] == [4, 4, 4]
    assert list(g.attention_blocks) == [11]
    # D: 5 stages of 2 blocks, the first of each downsampling; attention after stage one.
    assert [b.downsample for b in d.blocks] == [True, False] * 5
    assert [b.filters for b in d.blocks] == [8, 8, 16, 16, 32, 32, 64, 64, 64, 64]
    assert [b.hidden for b in d.blocks[:2]] == [2, 2]
    assert list(d.attention_blocks) == [1]


def _conv(x, kernel, bias):
    """numpy 'same' convolution, NHWC, `kernel` [k, k, in, out]."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[1:3]
    out = sum(
        np.einsum("bhwc,co->bhwo", padded[:, i : i + h, j : j + w], kernel[i, j])
        for i in range(k)
        for j in range(k)
    )
    return out + (0 if bias is None else bias)


def _np_layer(layer):
    kernel = layer.normalized_kernel(training=False).numpy()
    bias = None if layer.bias is None else layer.bias.numpy()
    return lambda x: _conv(x, kernel, bias)


def _relu(x):
    return np.maximum(x, 0)


def _randomize(block, rng):
    for weight in block.weights:
        if weight.name in ("bias", "moving_mean"):
            weight.assign(0.3 * rng.standard_normal(weight.shape))
        elif weight.name == "moving_variance":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))


def test_generator_block_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    block = networks_deep.DeepGeneratorBlock(filters=8, hidden=4, upsample=True)
    x = rng.standard_normal((2, 4, 4, 16)).astype(np.float32)
    c = rng.standard_normal((2, 5)).astype(np.float32)
    block(x, c, training=False)
    _randomize(block, rng)

    def cbn(bn, h):
        stats = bn.batch_norm
        gain = c @ bn.gain.normalized_kernel(training=False).numpy()
        bias = c @ bn.bias.normalized_kernel(training=False).numpy()
        normalized = (h - stats.moving_mean.numpy()) / np.sqrt(stats.moving_variance.numpy() + 1e-5)
        return normalized * (1 + gain[:, None, None]) + bias[:, None, None]

    def up(h):
        return h.repeat(2, axis=1).repeat(2, axis=2)

    h = _np_layer(block.conv1)(_relu(cbn(block.bn1, x)))
    h = up(_relu(cbn(block.bn2, h)))
    h = _np_layer(block.conv2)(h)
    h = _np_layer(block.conv3)(_relu(cbn(block.bn3, h)))
    h = _np_layer(block.conv4)(_relu(cbn(block.bn4, h)))
    expected = h + up(x[..., :8])  # the skip keeps the first 8 channels
    np.testing.assert_allclose(block(x, c, training=False), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_upsample_and_its_gradient_match_numpy(dtype):
    # The gradient is written by hand (4 x average pooling): it must be the sum over each
    # 2x2 block of the incoming gradient, in float32 and in bfloat16.
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((2, 3, 5, 4)), dtype)
    dy = rng.standard_normal((2, 6, 10, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kernels.upsample(x)
    dx = tape.gradient(y, x, output_gradients=tf.constant(dy, dtype))
    assert y.dtype == dtype and dx.dtype == dtype
    x64 = tf.cast(x, tf.float64).numpy()
    np.testing.assert_array_equal(
        tf.cast(y, tf.float64).numpy(), x64.repeat(2, axis=1).repeat(2, axis=2)
    )
    dy64 = tf.cast(tf.constant(dy, dtype), tf.float64).numpy()
    expected = dy64.reshape(2, 3, 2, 5, 2, 4).sum(axis=(2, 4))
    tolerance = 1e-6 if dtype == tf.float32 else 2e-2
    np.testing.assert_allclose(
        tf.cast(dx, tf.float64).numpy(), expected, rtol=tolerance, atol=tolerance
    )


def test_discriminator_block_matches_a_numpy_reference():
    rng = np.random.default_rng(1)
    block = networks_deep.DeepDiscriminatorBlock(filters=16, hidden=4, downsample=True)
    x = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
    block(x, training=False)
    _randomize(block, rng)

    def pool(h):
        return h.reshape(2, 4, 2, 4, 2, -1).mean(axis=(2, 4))

    h = _np_layer(block.conv1)(_relu(x))
    h = _np_layer(block.conv2)(_relu(h))
    h = pool(_relu(_np_layer(block.conv3)(_relu(h))))
    h = _np_layer(block.conv4)(h)
    skip = pool(x)
    expected = h + np.concatenate([skip, _np_layer(block.conv_shortcut)(skip)], axis=-1)
    assert block.conv_shortcut.kernel.shape == (1, 1, 6, 10)  # only the 10 new channels
    np.testing.assert_allclose(block(x, training=False), expected, rtol=1e-4, atol=1e-4)


def test_blocks_that_keep_the_width_have_a_plain_skip():
    block = networks_deep.DeepDiscriminatorBlock(filters=8, hidden=2, downsample=False)
    block(tf.zeros([1, 4, 4, 8]))
    assert block.conv_shortcut is None


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="architecture must be one of"):
        networks.Generator(resolution=32, architecture="deeper")
    with pytest.raises(ValueError, match="depth=2 is a BigGAN-deep setting"):
        networks.Discriminator(resolution=32, depth=2)
    with pytest.raises(ValueError, match="depth .* must be >= 1"):
        networks.Generator(resolution=32, architecture="deep", depth=0)
    with pytest.raises(ValueError, match="shared_dim > 0 and hierarchical_z"):
        networks.Generator(resolution=32, architecture="deep", shared_dim=0)
    with pytest.raises(ValueError, match="shared_dim > 0 and hierarchical_z"):
        networks.Generator(resolution=32, architecture="deep", hierarchical_z=False)
    with pytest.raises(ValueError, match="resolution must be one of"):
        networks.Discriminator(resolution=48, architecture="deep")
    with pytest.raises(ValueError, match="cannot widen 4 channels to 8"):
        networks_deep.DeepGeneratorBlock(8, 1, True)(tf.zeros([1, 4, 4, 4]), tf.zeros([1, 2]))
    with pytest.raises(ValueError, match="cannot narrow 8 channels to 4"):
        networks_deep.DeepDiscriminatorBlock(4, 1, True)(tf.zeros([1, 4, 4, 8]))


def test_gin_selects_the_deep_networks():
    gin.clear_config()
    try:
        gin.parse_config(
            [
                'Generator.architecture = "deep"',
                'Discriminator.architecture = "deep"',
                "Generator.resolution = 32",
                "Discriminator.resolution = 32",
            ]
        )
        g, d = networks.Generator(ch=4, num_classes=2), networks.Discriminator(ch=4, num_classes=2)
    finally:
        gin.clear_config()
    assert isinstance(g.blocks[0], networks_deep.DeepGeneratorBlock)
    assert isinstance(d.blocks[0], networks_deep.DeepDiscriminatorBlock)
    assert (g.depth, d.depth, g.dim_z) == (2, 2, 128)


@pytest.mark.slow
def test_deep_networks_round_trip_through_their_configs():
    kwargs = dict(resolution=32, ch=4, num_classes=3, attention=16, architecture="deep", depth=1)
    g = networks.Generator(dim_z=20, shared_dim=8, **kwargs)
    d = networks.Discriminator(**kwargs)
    inputs = (tf.random.normal([2, 20]), tf.one_hot([0, 1], 3))
    g(*inputs, training=False)
    assert g.get_config()["architecture"] == "deep" and g.get_config()["depth"] == 1
    tiny_models.assert_rebuilt_computes_the_same(
        g, model_files.generator_from_config(g.get_config()), inputs
    )
    images = (tf.random.uniform([2, 32, 32, 3], -1, 1), tf.constant([0, 2]))
    d(*images, training=False)
    tiny_models.assert_rebuilt_computes_the_same(
        d, networks.Discriminator.from_config(d.get_config()), images
    )
    # SN on every kernel: the linear, per block 4 CBNs x (gain, bias) and 4 convs, the
    # attention's 4 convs, the output conv.
    assert len(layers.spectral_layers(g)) == 1 + 3 * 12 + 4 + 1
    block = networks_deep.DeepGeneratorBlock(8, 4, True, name="b")
    rebuilt = networks_deep.DeepGeneratorBlock.from_config(block.get_config())
    assert rebuilt.get_config() == block.get_config()
