"""Tests for tf_biggan.kernels: each CPU kernel against numpy and against autodiff of the plain
ops it replaces, and `KernelPolicy`'s routing of the layers' calls at BigGAN's shapes."""

import numpy as np
import pytest
import tensorflow as tf
from test_layers import EPS, _cbn, _np_bn, _np_sn, _rng, _traced_operations

from tf_biggan import kernels, layers
from tf_biggan.kernels import KernelPolicy


def _np_same_conv(x, kernel):
    """'same' stride-1 cross-correlation in float64, one shifted product per kernel tap."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    k, height, width = kernel.shape[0], x.shape[1], x.shape[2]
    pad = k // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    out = np.zeros(x.shape[:3] + kernel.shape[-1:])
    for i in range(k):
        for j in range(k):
            out += padded[:, i : i + height, j : j + width, :] @ kernel[i, j]
    return out


@pytest.mark.parametrize("k, shape", [(3, (2, 4, 4, 6)), (3, (1, 5, 3, 2)), (5, (2, 4, 6, 3))])
def test_conv_as_matmul_is_the_convolution_and_has_its_gradients(k, shape):
    rng = _rng(7)
    x = tf.constant(rng.randn(*shape).astype(np.float32))
    kernel = tf.constant(rng.randn(k, k, shape[-1], 4).astype(np.float32))
    upstream = tf.constant(rng.randn(*shape[:3], 4).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        ours = kernels.conv_as_matmul(x, kernel)
        reference = tf.nn.conv2d(x, kernel, 1, "SAME")
        ours_loss = tf.reduce_sum(ours * upstream)
        reference_loss = tf.reduce_sum(reference * upstream)
    np.testing.assert_allclose(ours.numpy(), _np_same_conv(x, kernel), rtol=1e-5, atol=1e-5)
    ours_grads = tape.gradient(ours_loss, [x, kernel])
    reference_grads = tape.gradient(reference_loss, [x, kernel])
    for ours_grad, reference_grad in zip(ours_grads, reference_grads, strict=True):
        np.testing.assert_allclose(ours_grad.numpy(), reference_grad.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_as_matmul_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="odd square kernel"):
        kernels.conv_as_matmul(tf.zeros([1, 4, 4, 2]), tf.zeros([2, 2, 2, 3]))


@pytest.mark.parametrize(
    "filters, input_channels, input_shape, as_matmul",
    [
        # BigGAN at 128 px, ch 96: G's first block and D's last two (1536 channels at 8x8
        # and 4x4, batch 8 or 16); D's 768 -> 1536 at batch 8 (kernel 13.5x the output).
        (1536, 1536, (8, 8, 8), True),
        (1536, 1536, (16, 4, 4), True),
        (1536, 768, (8, 8, 8), True),
        # The same at batch 16: the kernel is only 6.75x the output.
        (1536, 768, (16, 8, 8), False),
        # BigGAN-deep's 512-channel bottleneck: a 2.4M-element kernel.
        (512, 512, (8, 4, 4), False),
        # release 0.2's checkpoint test config (ch 1): G's 8x8 conv at batch 2.
        (4, 4, (2, 8, 8), False),
    ],
)
def test_sn_conv_runs_only_large_weight_heavy_kernels_as_matmul(
    filters, input_channels, input_shape, as_matmul
):
    layer = layers.SNConv2D(filters, 3)
    assert layer.runs_as_matmul((*input_shape, input_channels)) is as_matmul


@pytest.mark.parametrize(
    "filters, kernel_size, padding, input_shape, as_matmul",
    [
        # kernel 3*3*64*64 = 36,864 > 8 x output 2*4*4*64 = 16,384.
        (64, 3, "same", (2, 4, 4, 64), True),
        # output 2*8*8*64 = 8,192, and 8 x 8,192 > 36,864: the direct convolution.
        (64, 3, "same", (2, 8, 8, 64), False),
        # a dynamic batch, a 1x1 kernel, 'valid' padding: the direct convolution.
        (64, 3, "same", (None, 4, 4, 64), False),
        (512, 1, "same", (2, 2, 2, 512), False),
        (64, 3, "valid", (2, 4, 4, 64), False),
    ],
)
def test_sn_conv_as_matmul_routing_and_values(
    filters, kernel_size, padding, input_shape, as_matmul
):
    # Small layers with the kernel-size floor lifted: the ratio rule, the graph and values.
    policy = KernelPolicy(matmul_conv_min_kernel=0)
    layer = layers.SNConv2D(filters, kernel_size, padding=padding, kernel_policy=policy)
    layer.build((None, *input_shape[1:]))
    assert layer.runs_as_matmul(input_shape) is as_matmul
    types = {
        op.type
        for op in _traced_operations(
            lambda x: layer(x, training=True), tf.TensorSpec(input_shape, tf.float32)
        )
    }
    assert ("Conv2D" in types) is not as_matmul
    assert ("ConcatV2" in types) is as_matmul
    x = _rng(3).randn(*[d or 3 for d in input_shape]).astype(np.float32)
    layer.bias.assign(np.linspace(-1, 1, filters).astype(np.float32))
    normalized = _np_sn(layer.kernel.numpy(), layer.u.numpy())[0].astype(np.float32)
    expected = tf.nn.conv2d(x, normalized, 1, padding.upper()) + layer.bias.value
    np.testing.assert_allclose(
        layer(x, training=False).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4
    )


def _np_upsample(x):
    return np.repeat(np.repeat(np.asarray(x, np.float64), 2, axis=1), 2, axis=2)


def _np_avg_pool(x):
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


@pytest.mark.parametrize("k, shape", [(3, (2, 4, 4, 6)), (3, (1, 3, 5, 2)), (1, (2, 4, 2, 3))])
@pytest.mark.parametrize("resample", ["up", "down"])
def test_resampling_convs_are_the_resampled_convolution_and_have_its_gradients(resample, k, shape):
    """`upsample_conv` against numpy's upsample-then-convolve and `conv_avg_pool` against
    convolve-then-average-pool, in float64; their gradients against TensorFlow's
    gradients of the unfused ops."""
    if resample == "down":
        shape = (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
    rng = _rng(11)
    x = tf.constant(rng.randn(*shape).astype(np.float32))
    kernel = tf.constant(rng.randn(k, k, shape[-1], 5).astype(np.float32))
    if resample == "up":
        fused, expected = kernels.upsample_conv, _np_same_conv(_np_upsample(x), kernel)

        def unfused(x, kernel):
            return tf.nn.conv2d(kernels.upsample(x), kernel, 1, "SAME")
    else:
        fused, expected = kernels.conv_avg_pool, _np_avg_pool(_np_same_conv(x, kernel))

        def unfused(x, kernel):
            return kernels.downsample(tf.nn.conv2d(x, kernel, 1, "SAME"))

    upstream = tf.constant(rng.randn(*expected.shape).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        ours = fused(x, kernel)
        ours_loss = tf.reduce_sum(ours * upstream)
        reference_loss = tf.reduce_sum(unfused(x, kernel) * upstream)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)
    ours_grads = tape.gradient(ours_loss, [x, kernel])
    reference_grads = tape.gradient(reference_loss, [x, kernel])
    for ours_grad, reference_grad in zip(ours_grads, reference_grads, strict=True):
        np.testing.assert_allclose(ours_grad.numpy(), reference_grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resample", ["up", "down"])
def test_resampling_convs_in_float64_keep_float64(resample):
    """A float64 kernel's combined taps are summed in float64 (a float32 sum of them would be
    off by ~1e-7), so the fused convs stay the resampled convolution to float64 rounding."""
    rng = _rng(12)
    shape = (2, 4, 4, 3) if resample == "up" else (2, 8, 8, 3)
    x = tf.constant(rng.randn(*shape))
    kernel = tf.constant(rng.randn(3, 3, 3, 4))
    if resample == "up":
        ours, expected = kernels.upsample_conv(x, kernel), _np_same_conv(_np_upsample(x), kernel)
    else:
        ours, expected = kernels.conv_avg_pool(x, kernel), _np_avg_pool(_np_same_conv(x, kernel))
    assert ours.dtype == tf.float64
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_resampling_convs_refuse_other_kernels():
    for fused in (kernels.upsample_conv, kernels.conv_avg_pool):
        with pytest.raises(ValueError, match="1x1 or 3x3 kernel"):
            fused(tf.zeros([1, 4, 4, 2]), tf.zeros([5, 5, 2, 3]))


@pytest.mark.parametrize(
    "filters, input_shape, resample, fused",
    [
        # BigGAN at 32 px, ch 64, batch 64: G's 8 -> 16 px conv and D's 32 px pooled conv.
        (256, (64, 8, 8, 256), "up", True),
        (256, (64, 32, 32, 256), "down", True),
        # 128 px, ch 96, batch 8: G's 32 -> 64 px conv, D's 16 px pooled conv (batch 16).
        (192, (8, 32, 32, 384), "up", True),
        (768, (16, 16, 16, 768), "down", True),
        # G's first block and D's 8 px block at 128 px run as `conv_as_matmul` instead.
        (1536, (8, 4, 4, 1536), "up", False),
        (1536, (16, 8, 8, 1536), "down", False),
        # The Fashion-MNIST width (ch 16, batch 32): all of G's convs, D's at 32 and 16 px.
        (64, (32, 16, 16, 64), "up", True),
        (64, (32, 4, 4, 64), "up", True),
        (64, (64, 32, 32, 64), "down", True),
        (64, (64, 16, 16, 64), "down", True),
        # ... but at batch 8 the 4 -> 8 px conv would not pay.
        (64, (8, 4, 4, 64), "up", False),
        # A dynamic batch counts one example: 128 px's G at 16 -> 32 px, and ch 16 at 32 px.
        (384, (None, 16, 16, 768), "up", True),
        (64, (None, 16, 16, 64), "up", False),
        # release 0.2's checkpoint test config (ch 1): G's 4 -> 8 px conv at batch 2.
        (4, (2, 4, 4, 4), "up", False),
        # An odd size is pooled as the unfused ops pool it.
        (256, (64, 31, 32, 256), "down", False),
    ],
)
def test_sn_conv_fuses_resampling_only_where_it_pays(filters, input_shape, resample, fused):
    layer = layers.SNConv2D(filters, 3)
    assert layer.fuses_resampling(input_shape, resample) is fused


@pytest.mark.parametrize(
    "kernel_size, resample, input_shape, fused",
    [
        (3, "up", (2, 4, 4, 8), True),
        (1, "up", (2, 4, 4, 8), True),
        (3, "down", (2, 8, 8, 8), True),
        (1, "down", (2, 8, 8, 8), True),
        (3, "up", (None, 4, 4, 8), True),
    ],
)
def test_sn_conv_resampling_routing_and_values(kernel_size, resample, input_shape, fused):
    # Small layers with the work floor lifted: the graph's op types and the values against
    # the SN formula applied to the resampled convolution in numpy.
    filters = 6
    policy = KernelPolicy(upsample_conv_min_macs=0, pooled_conv_min_macs=0)
    layer = layers.SNConv2D(filters, kernel_size, kernel_policy=policy)
    layer.build((None, *input_shape[1:]))
    assert layer.fuses_resampling(input_shape, resample) is fused
    types = [
        op.type
        for op in _traced_operations(
            lambda x: layer(x, training=True, resample=resample),
            tf.TensorSpec(input_shape, tf.float32),
        )
    ]
    if kernel_size == 3:
        # One strided 4x4 convolution, transposed to upsample; no resampling op either way.
        expected_conv = "Conv2DBackpropInput" if resample == "up" else "Conv2D"
        assert [t for t in types if t.startswith("Conv2D")] == [expected_conv]
        assert "AvgPool" not in types and "BroadcastTo" not in types
    x = _rng(5).randn(*[d or 3 for d in input_shape]).astype(np.float32)
    layer.bias.assign(np.linspace(-1, 1, filters).astype(np.float32))
    normalized = _np_sn(layer.kernel.numpy(), layer.u.numpy())[0]
    if resample == "up":
        expected = _np_same_conv(_np_upsample(x), normalized)
    else:
        expected = _np_avg_pool(_np_same_conv(x, normalized))
    np.testing.assert_allclose(
        layer(x, training=False, resample=resample).numpy(),
        expected + layer.bias.numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="resample must be"):
        layer(x, resample="sideways")


def _bn_relu_composition(x, scale, offset):
    """What autodiff sees without `batch_norm_relu`: the fused BN kernel, then scale, offset
    and ReLU as separate ops."""
    channels = x.shape[-1]
    normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, tf.ones([channels]), tf.zeros([channels]), epsilon=EPS, is_training=True
    )
    return tf.nn.relu(normalized * scale + offset)


@pytest.mark.parametrize("per_example", [True, False])
def test_batch_norm_relu_is_the_composition_and_has_its_gradients(per_example):
    """Values and statistics against numpy in float64; the gradients with respect to x, the
    scale and the offset against autodiff of the composition."""
    x, scale, offset, upstream = _bn_relu_inputs(per_example)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, scale, offset])
        ours, mean, variance = kernels.batch_norm_relu(x, scale, offset, EPS)
        ours_loss = tf.reduce_sum(ours * upstream)
        reference_loss = tf.reduce_sum(_bn_relu_composition(x, scale, offset) * upstream)
    expected = np.maximum(_np_bn(x) * scale.numpy() + offset.numpy(), 0.0)
    assert 0.2 < np.mean(expected > 0) < 0.8  # both sides of the ReLU are exercised
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance.numpy(), x.numpy().var(axis=(0, 1, 2)), rtol=1e-5)
    ours_grads = tape.gradient(ours_loss, [x, scale, offset])
    reference_grads = tape.gradient(reference_loss, [x, scale, offset])
    for ours_grad, reference_grad in zip(ours_grads, reference_grads, strict=True):
        assert ours_grad.shape == reference_grad.shape
        np.testing.assert_allclose(ours_grad.numpy(), reference_grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per_example", [True, False])
def test_batch_norm_relu_in_bfloat16_is_the_composition_in_bfloat16(per_example):
    # Mixed precision: bfloat16 activations; the statistics in float32.
    *inputs, upstream = _bn_relu_inputs(per_example)
    x, scale, offset = (tf.cast(t, tf.bfloat16) for t in inputs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, scale, offset])
        ours, mean, variance = kernels.batch_norm_relu(x, scale, offset, EPS)
        reference = _bn_relu_composition(x, scale, offset)
        ours_loss = tf.reduce_sum(tf.cast(ours, tf.float32) * upstream)
        reference_loss = tf.reduce_sum(tf.cast(reference, tf.float32) * upstream)
    assert ours.dtype == tf.bfloat16 and mean.dtype == variance.dtype == tf.float32
    pairs = [(ours, reference)]
    pairs += zip(
        tape.gradient(ours_loss, [x, scale, offset]),
        tape.gradient(reference_loss, [x, scale, offset]),
        strict=True,
    )
    for ours_tensor, reference_tensor in pairs:
        assert ours_tensor.dtype == tf.bfloat16
        ours_value, expected = (
            tf.cast(t, tf.float32).numpy() for t in (ours_tensor, reference_tensor)
        )
        # Rounded to bfloat16's 8 bits at other points: within 2% of the largest element.
        np.testing.assert_allclose(ours_value, expected, rtol=0, atol=0.02 * np.abs(expected).max())


def _bn_relu_inputs(per_example):
    """x `[4, 3, 5, 6]`, a scale and an offset (`[4, 1, 1, 6]` or `[6]`), an upstream gradient."""
    rng = _rng(21)
    x = tf.constant((rng.randn(4, 3, 5, 6) * 3 + 1).astype(np.float32))
    shape = (4, 1, 1, 6) if per_example else (6,)
    scale = tf.constant((rng.randn(*shape) + 1).astype(np.float32))
    offset = tf.constant((rng.randn(*shape) * 0.5).astype(np.float32))
    upstream = tf.constant(rng.randn(4, 3, 5, 6).astype(np.float32))
    return x, scale, offset, upstream


def _backward_readers(bn_relu, name="previous_layer"):
    """The backward-pass ops that read BN's input, an op's output named `name`."""

    def step(a, scale, offset):
        with tf.GradientTape() as tape:
            tape.watch(a)
            x = tf.multiply(a, 2.0, name=name)  # stands for the previous conv's output
            loss = tf.reduce_sum(bn_relu(x, scale, offset))
        return tape.gradient(loss, a)

    graph = (
        tf.function(step)
        .get_concrete_function(
            tf.TensorSpec([4, 3, 3, 6]), tf.TensorSpec([4, 1, 1, 6]), tf.TensorSpec([4, 1, 1, 6])
        )
        .graph
    )
    x = graph.get_operation_by_name(name).outputs[0]
    return [op.type for op in x.consumers() if op.name.startswith("gradient_tape")]


def test_batch_norm_relu_backward_does_not_read_its_input():
    # The memory it saves: the composition's backward pass reads BN's input (so the
    # previous layer's output stays alive until then); batch_norm_relu's does not.
    assert _backward_readers(_bn_relu_composition) == ["FusedBatchNormGradV3"]
    assert _backward_readers(lambda x, s, o: kernels.batch_norm_relu(x, s, o, EPS)[0]) == []


@pytest.mark.parametrize("floor", [0, 2**62])
def test_batch_norm_layers_with_relu_are_the_relu_of_their_output(floor):
    """Training calls with `relu=True`, through `batch_norm_relu` (floor 0) or the separate
    ops: values and moving statistics against numpy; inference calls unchanged."""
    rng = _rng(22)
    x = (rng.randn(4, 3, 3, 5) * 2 + 1).astype(np.float32)
    c = rng.randn(4, 6).astype(np.float32)
    with kernels.policy_scope(KernelPolicy(batch_norm_relu_min_elements=floor)):
        conditional = _cbn()
        plain = layers.SyncBatchNorm()
    plain.build((4, 3, 3, 5))
    plain.gamma.assign([0.5, 2.0, -1.0, 1.0, 0.1])
    plain.beta.assign([1.0, 0.0, 3.0, -0.5, 0.2])
    assert conditional.batch_norm._fuses_relu(tf.constant(x), True) is (floor == 0)
    for layer, args in ((conditional, (x, c)), (plain, (x,))):
        reference = layer(*args, training=True).numpy()
        bn = layer.batch_norm if layer is conditional else layer
        moving = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        out = layer(*args, training=True, relu=True).numpy()
        np.testing.assert_allclose(out, np.maximum(reference, 0.0), rtol=1e-5, atol=1e-5)
        expected_mean = 0.9 * moving[0] + 0.1 * x.mean(axis=(0, 1, 2))
        expected_variance = 0.9 * moving[1] + 0.1 * x.var(axis=(0, 1, 2), ddof=1)
        np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), expected_variance, rtol=1e-5)
        np.testing.assert_array_equal(
            layer(*args, training=False, relu=True).numpy(),
            np.maximum(layer(*args, training=False).numpy(), 0.0),
        )


@pytest.mark.parametrize(
    "input_shape, fused",
    [
        # G's last BNs at 32 px (ch 64, batch 64) and 128 px (ch 96, batch 8).
        ((64, 32, 32, 256), True),
        ((8, 128, 128, 96), True),
        # The first blocks' small activations, and a dynamic batch (one example counted).
        ((64, 4, 4, 256), False),
        ((None, 32, 32, 256), False),
        # release 0.2's checkpoint test config (ch 1, batch 2).
        ((2, 32, 32, 4), False),
    ],
)
def test_batch_norm_relu_runs_where_the_activation_is_large(input_shape, fused):
    layer = layers.SyncBatchNorm()
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, input_shape)
        assert layer._fuses_relu(x, True) is fused
        assert layer._fuses_relu(x, False) is False


def test_a_layer_keeps_the_policy_it_was_constructed_with():
    """Routing is decided by the policy a layer received when it was constructed: a scope
    entered later does not change it, and the policy is not part of the layer's config."""
    lifted = KernelPolicy(matmul_conv_min_kernel=0)
    before = layers.SNConv2D(64, 3)
    with kernels.policy_scope(lifted) as policy:
        assert policy is lifted and kernels.current_policy() is lifted
        inside = layers.SNConv2D(64, 3)
        conditional = layers.ConditionalBatchNorm()
    assert kernels.current_policy() == KernelPolicy()
    after = layers.SNConv2D(64, 3)
    shape = (2, 4, 4, 64)  # kernel 36,864 > 8 x output 8,192, but under the default floor
    assert [layer.runs_as_matmul(shape) for layer in (before, inside, after)] == [
        False,
        True,
        False,
    ]
    assert conditional.batch_norm.kernel_policy is lifted
    assert "kernel_policy" not in inside.get_config()
    rebuilt = layers.SNConv2D.from_config(inside.get_config())
    assert rebuilt.kernel_policy == KernelPolicy()
    with pytest.raises(TypeError, match="KernelPolicy"):
        with kernels.policy_scope({"matmul_conv_min_kernel": 0}):
            pass


def test_without_cpu_kernels_every_call_takes_the_plain_ops():
    """`cpu_kernels=False`, as on a GPU or TPU: no routing question answers yes, and the
    layer's graph has the plain convolution, resampling and batch norm."""
    plain = KernelPolicy(
        cpu_kernels=False,
        matmul_conv_min_kernel=0,
        upsample_conv_min_macs=0,
        pooled_conv_min_macs=0,
        batch_norm_relu_min_elements=0,
    )
    assert not plain.uses_conv_as_matmul(3, "same", 64, (2, 4, 4, 64), (2, 4, 4, 64))
    assert not plain.uses_fused_resampling(3, "same", 8, (2, 4, 4, 8), "up")
    assert not plain.uses_fused_resampling(3, "same", 8, (2, 8, 8, 8), "down")
    assert not plain.uses_batch_norm_relu((64, 32, 32, 256))
    enabled = KernelPolicy(**{**plain.__dict__, "cpu_kernels": True})
    assert enabled.uses_conv_as_matmul(3, "same", 64, (2, 4, 4, 64), (2, 4, 4, 64))
    assert enabled.uses_fused_resampling(3, "same", 8, (2, 4, 4, 8), "up")
    assert enabled.uses_batch_norm_relu((64, 32, 32, 256))
    layer = layers.SNConv2D(8, 3, kernel_policy=plain)
    layer.build((None, 4, 4, 8))
    types = {
        op.type
        for op in _traced_operations(
            lambda x: layer(x, training=True, resample="up"),
            tf.TensorSpec((2, 4, 4, 8), tf.float32),
        )
    }
    assert "Conv2D" in types and "Conv2DBackpropInput" not in types
