"""Tests for tf_biggan.layers: numbers against numpy, single vs two-replica runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import dtypes, layers

EPS = 1e-5


def _np_normalize(x):
    return x / max(np.linalg.norm(x), layers.SN_EPSILON)


def _np_sn(kernel, u):
    """`(kernel / sigma, sigma, v, u1)`: one power iteration from the stored `u`.

    `v = normalize(u W^T)`, `u1 = normalize(v W)`, `sigma = v W u1^T`: the estimate of a
    training call, which an inference call computes too (without writing `u1` and sigma).
    """
    kernel = np.asarray(kernel, np.float64)
    matrix = kernel.reshape(-1, kernel.shape[-1])
    u = _np_normalize(np.asarray(u, np.float64))
    v = _np_normalize(u @ matrix.T)
    u1 = _np_normalize(v @ matrix)
    sigma = (v @ matrix @ u1.T).item()
    return kernel / sigma, sigma, v, u1


def _top_sv(kernel):
    kernel = np.asarray(kernel, np.float64)
    return np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]


def _np_bn(x, mean=None, var=None):
    x = np.asarray(x, np.float64)
    if mean is None:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + EPS)


def _rng(seed=0):
    return np.random.RandomState(seed)


def _sn_layer(kind):
    """A built SN layer with a fixed Gaussian kernel (distinct singular values) and an input."""
    rng = _rng(1)
    if kind == "dense":
        layer = layers.SNDense(6)
        layer.build((None, 10))
        x = rng.randn(3, 10).astype(np.float32)
    elif kind == "embedding":
        layer = layers.SNEmbedding(9, 5)
        layer.build((None,))
        x = np.array([3, 0, 8, 3])
    else:
        layer = layers.SNConv2D(5, 3)
        layer.build((None, 6, 6, 4))
        x = rng.randn(2, 6, 6, 4).astype(np.float32)
    layer.kernel.assign(rng.randn(*layer.kernel.shape).astype(np.float32))
    return layer, x


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_sigma_after_power_iterations_matches_svd(kind):
    layer, x = _sn_layer(kind)
    kernel = layer.kernel.numpy()
    for _ in range(50):
        layer(x, training=True)
    expected = _top_sv(kernel)
    np.testing.assert_allclose(float(layer.top_singular_value()), expected, rtol=0.01)
    normalized = layer.normalized_kernel(training=False).numpy()
    np.testing.assert_allclose(_top_sv(normalized), 1.0, rtol=0.01)
    # The kernel variable itself is untouched (SN is a reparametrisation).
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_power_iteration_runs_only_in_training(kind):
    layer, x = _sn_layer(kind)
    u0 = layer.u.numpy().copy()
    sigma0 = float(layer.sigma.numpy())
    layer(x, training=False)
    layer(x)
    np.testing.assert_array_equal(layer.u.numpy(), u0)
    assert float(layer.sigma.numpy()) == sigma0
    layer(x, training=True)
    assert np.abs(layer.u.numpy() - u0).max() > 1e-3
    # One iteration from u0: u1 = normalize(v W), sigma1 = v W u1^T.
    _, sigma1, _, u1 = _np_sn(layer.kernel.numpy(), u0)
    np.testing.assert_allclose(layer.u.numpy(), u1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(layer.sigma.numpy()), sigma1, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_inference_sigma_is_the_training_estimate_and_writes_nothing(kind):
    layer, x = _sn_layer(kind)
    layer.u.assign(_rng(3).randn(*layer.u.shape).astype(np.float32))  # a stale u
    u0 = layer.u.numpy().copy()
    sigma0 = float(layer.sigma.numpy())
    _, inverse_sigma = layer.kernel_and_inverse_sigma(training=False)
    inference_out = layer(x, training=False).numpy()
    inference_kernel = layer.inference_kernel().numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u0)
    assert float(layer.sigma.numpy()) == sigma0
    # A training call from the same u computes (and now writes) the same sigma.
    training_out = layer(x, training=True).numpy()
    np.testing.assert_allclose(1.0 / float(inverse_sigma), float(layer.sigma.numpy()), rtol=1e-6)
    np.testing.assert_allclose(float(layer.sigma.numpy()), _np_sn(layer.kernel, u0)[1], rtol=1e-5)
    np.testing.assert_allclose(inference_out, training_out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        inference_kernel, layer.kernel.numpy() / float(layer.sigma.numpy()), rtol=1e-6
    )
    assert np.abs(layer.u.numpy() - u0).max() > 1e-3


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_refine_converges_to_the_top_singular_value(kind):
    layer, x = _sn_layer(kind)
    kernel = layer.kernel.numpy()
    expected = _top_sv(kernel)
    layer.refine_sigma(iterations=1)
    assert abs(float(layer.sigma.numpy()) / expected - 1.0) > 1e-4  # one iteration is not enough
    sigma = layer.refine_sigma(iterations=500)
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-4)
    np.testing.assert_allclose(float(layer.top_singular_value()), expected, rtol=1e-4)
    # Inference starts from the refined u, so it uses the converged sigma too.
    np.testing.assert_allclose(_top_sv(layer.inference_kernel().numpy()), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_exact_refine_and_inference_kernel_use_the_svd(kind):
    layer, _ = _sn_layer(kind)
    matrix = layer.kernel.numpy().astype(np.float64).reshape(-1, layer.kernel.shape[-1])
    _, singular_values, right = np.linalg.svd(matrix)
    u0, sigma0 = layer.u.numpy().copy(), float(layer.sigma.numpy())
    exact = layer.inference_kernel(exact=True).numpy()
    np.testing.assert_allclose(exact, layer.kernel.numpy() / singular_values[0], rtol=1e-5)
    np.testing.assert_array_equal(layer.u.numpy(), u0)  # inference_kernel writes nothing
    assert float(layer.sigma.numpy()) == sigma0
    layer.refine_sigma(exact=True)
    np.testing.assert_allclose(float(layer.sigma.numpy()), singular_values[0], rtol=1e-5)
    np.testing.assert_allclose(np.abs(layer.u.numpy()[0] @ right[0]), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_refine_spectral_norms_reaches_every_nested_layer():
    layer = layers.SelfAttention()
    layer(_rng(4).randn(1, 4, 4, 16).astype(np.float32))
    rng = _rng(5)
    for sn in layers.spectral_layers(layer):
        sn.kernel.assign(rng.randn(*sn.kernel.shape).astype(np.float32))
    layers.refine_spectral_norms(layer, iterations=500)
    for sn in layers.spectral_layers(layer):
        np.testing.assert_allclose(float(sn.sigma.numpy()), _top_sv(sn.kernel), rtol=1e-4)


def test_refine_spectral_norms_in_cross_replica_context(strategy):
    # How the training loop refines the EMA generator: eagerly, outside strategy.run.
    with strategy.scope():
        layer = layers.SNConv2D(4, 3)
        layer.build((None, 4, 4, 3))
    layer.kernel.assign(_rng(6).randn(3, 3, 3, 4).astype(np.float32))
    layers.refine_spectral_norms(layer, iterations=500)
    first, second = _locals(strategy, layer.u)
    np.testing.assert_array_equal(first, second)
    for sigma in _locals(strategy, layer.sigma):
        np.testing.assert_allclose(sigma, _top_sv(layer.kernel.numpy()), rtol=1e-4)


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_fold_stores_the_exact_inference_kernel_and_drops_the_power_iteration(kind):
    layer, x = _sn_layer(kind)
    exact = layer.inference_kernel(exact=True).numpy()
    layer.fold()
    assert layer.folded and layer.get_config()["folded"] is True
    np.testing.assert_allclose(layer.kernel.numpy(), exact, rtol=1e-6)
    np.testing.assert_allclose(_top_sv(layer.kernel.numpy()), 1.0, rtol=1e-5)
    assert float(layer.top_singular_value()) == 1.0
    u = layer.u.numpy().copy()
    traced = tf.function(lambda inputs: layer(inputs, training=True)).get_concrete_function(x)
    captured = {id(v) for v in traced.variables}
    assert id(layer.u.value) not in captured and id(layer.sigma.value) not in captured
    assert id(layer.kernel.value) in captured
    expected_out = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer.u.numpy(), u)
    layer.fold()  # a second fold changes nothing
    np.testing.assert_array_equal(layer(x, training=False).numpy(), expected_out)


def test_inference_before_training_uses_a_unit_u():
    # u is drawn unnormalised; inference must not scale sigma by |u|.
    layer = layers.SNDense(32)
    layer.build((None, 32))
    assert abs(np.linalg.norm(layer.u.numpy()) - 1.0) > 0.5
    normalized = layer.normalized_kernel(training=False).numpy()
    expected = _np_sn(layer.kernel.numpy(), layer.u.numpy())[0]
    np.testing.assert_allclose(normalized, expected, rtol=1e-4, atol=1e-6)
    # An orthogonal square kernel has all singular values 1, so the estimate is exact.
    np.testing.assert_allclose(_top_sv(normalized), 1.0, rtol=1e-4)


def test_sn_dense_output_and_kernel_gradient_through_sigma():
    layer, x = _sn_layer("dense")
    layer.bias.assign(np.linspace(-1, 1, 6).astype(np.float32))
    for _ in range(3):
        layer(x, training=True)
    kernel = layer.kernel.numpy().astype(np.float64)
    normalized, sigma, v, u = _np_sn(kernel, layer.u.numpy())
    with tf.GradientTape() as tape:
        out = layer(x, training=False)
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, layer.kernel).numpy()
    np.testing.assert_allclose(
        out.numpy(), x @ normalized + layer.bias.numpy(), rtol=1e-4, atol=1e-5
    )
    # f(W) = sum(x W) / sigma(W), sigma = v W u^T with u, v held fixed.
    s = float(np.sum(x.astype(np.float64) @ kernel))
    d_s = np.outer(x.sum(axis=0), np.ones(6))
    expected = d_s / sigma - s / sigma**2 * (v.T @ u)
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-5)
    # Without the sigma term the gradient would be measurably different.
    assert np.abs(grad - d_s / sigma).max() > 1e-2


# 1/sigma scales the output when it is smaller than the kernel (3*3*4*5 = 180 elements),
# else the kernel: [2, 6, 6, 5] outputs take the kernel path, [1, 2, 2, 5] the output path.
@pytest.mark.parametrize("input_shape", [(2, 6, 6, 4), (1, 2, 2, 4)])
def test_sn_conv_kernel_gradient_matches_explicit_computation(input_shape):
    layer, _ = _sn_layer("conv")
    x = _rng(5).randn(*input_shape).astype(np.float32)
    layer.bias.assign(np.linspace(-1, 1, 5).astype(np.float32))
    for _ in range(3):
        layer(x, training=True)
    _, _, v, u = _np_sn(layer.kernel.numpy(), layer.u.numpy())
    u = tf.constant(u, tf.float32)
    v = tf.constant(v, tf.float32)
    kernel = tf.Variable(layer.kernel.numpy())
    with tf.GradientTape(persistent=True) as tape:
        total = tf.reduce_sum(tf.square(layer(x, training=False)))
        sigma = tf.reduce_sum(tf.matmul(v, tf.reshape(kernel, [-1, 5])) * u)
        explicit = tf.reduce_sum(
            tf.square(tf.nn.conv2d(x, kernel / sigma, 1, "SAME") + layer.bias.value)
        )
    np.testing.assert_allclose(total.numpy(), explicit.numpy(), rtol=1e-4)
    np.testing.assert_allclose(
        tape.gradient(total, layer.kernel).numpy(),
        tape.gradient(explicit, kernel).numpy(),
        rtol=1e-3,
        atol=1e-5,
    )


def test_sn_embedding_rows_are_rows_of_normalized_table():
    layer = layers.SNEmbedding(7, 4)
    layer.build((None,))
    layer.kernel.assign(_rng(2).randn(7, 4).astype(np.float32))
    labels = np.array([3, 0, 6, 3])
    out = layer(labels, training=False).numpy()
    table = _np_sn(layer.kernel.numpy(), layer.u.numpy())[0]
    np.testing.assert_allclose(out, table[labels], rtol=1e-4, atol=1e-6)
    out = layer(labels, training=True).numpy()
    table = layer.kernel.numpy() / float(layer.sigma.numpy())
    np.testing.assert_allclose(out, table[labels], rtol=1e-5, atol=1e-6)


def test_sn_embedding_under_mixed_bfloat16_picks_rows_above_256():
    # bfloat16 holds integers exactly only up to 256: labels must never pass through it.
    layer = layers.SNEmbedding(1000, 4, dtype="mixed_bfloat16")
    layer.build((None,))
    labels = np.array([257, 999, 3])
    out = layer(labels, training=False)
    assert out.dtype == tf.bfloat16
    table = _np_sn(layer.kernel.numpy(), layer.u.numpy())[0]
    np.testing.assert_allclose(out.numpy().astype(np.float32), table[labels], rtol=1e-2, atol=1e-3)


def _cbn(x_shape=(4, 3, 3, 5), c_dim=6):
    layer = layers.ConditionalBatchNorm()
    layer.build(x_shape, (x_shape[0], c_dim))
    return layer


def test_conditional_bn_with_zero_condition_is_plain_bn():
    layer = _cbn()
    x = (_rng(3).randn(4, 3, 3, 5) * 2 + 1).astype(np.float32)
    out = layer(x, np.zeros((4, 6), np.float32), training=True).numpy()
    np.testing.assert_allclose(out, _np_bn(x), rtol=1e-4, atol=1e-4)


def test_conditional_bn_gain_is_centred_at_one():
    layer = _cbn()
    rng = _rng(4)
    x = (rng.randn(4, 3, 3, 5) * 2 + 1).astype(np.float32)
    c = rng.randn(4, 6).astype(np.float32)
    layer.gain.kernel.assign(rng.randn(6, 5).astype(np.float32))
    layer.bias.kernel.assign(rng.randn(6, 5).astype(np.float32))
    out = layer(x, c, training=True).numpy()
    gain_kernel = layer.gain.kernel.numpy() / float(layer.gain.sigma.numpy())
    bias_kernel = layer.bias.kernel.numpy() / float(layer.bias.sigma.numpy())
    gain = (c @ gain_kernel)[:, None, None, :]
    bias = (c @ bias_kernel)[:, None, None, :]
    np.testing.assert_allclose(out, _np_bn(x) * (1 + gain) + bias, rtol=1e-4, atol=1e-4)


def test_conditional_bn_moving_statistics_and_inference():
    layer = _cbn()
    rng = _rng(5)
    c = rng.randn(4, 6).astype(np.float32)
    mean, var = np.zeros(5), np.ones(5)
    for step in range(3):
        x = (rng.randn(4, 3, 3, 5) * (step + 1) + step).astype(np.float32)
        layer(x, c, training=True)
        mean = 0.9 * mean + 0.1 * x.mean(axis=(0, 1, 2))
        var = 0.9 * var + 0.1 * x.var(axis=(0, 1, 2), ddof=1)
    bn = layer.batch_norm
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)

    x = rng.randn(2, 3, 3, 5).astype(np.float32)
    u_gain = layer.gain.u.numpy().copy()
    out = layer(x, c[:2], training=False).numpy()
    np.testing.assert_array_equal(layer.gain.u.numpy(), u_gain)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    gain_kernel = _np_sn(layer.gain.kernel.numpy(), layer.gain.u.numpy())[0]
    bias_kernel = _np_sn(layer.bias.kernel.numpy(), layer.bias.u.numpy())[0]
    gain = (c[:2] @ gain_kernel)[:, None, None, :]
    bias = (c[:2] @ bias_kernel)[:, None, None, :]
    expected = _np_bn(x, mean, var) * (1 + gain) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def _traced_operations(fn, *specs):
    """The operations of `fn`'s graph traced for input `specs`."""
    return tf.function(fn).get_concrete_function(*specs).graph.get_operations()


def _full_size_elementwise_ops(fn, *specs):
    """Types of the ops in `fn`'s graph whose output has the first spec's full shape."""
    shape = specs[0].shape.as_list()
    return sorted(
        op.type
        for op in _traced_operations(fn, *specs)
        if op.outputs
        and op.outputs[0].shape.as_list() == shape
        and op.type not in ("Placeholder", "Identity")
    )


def test_batch_norm_inference_is_one_multiply_add_per_element():
    # The statistics, gamma/beta or the conditional gain/bias fold into a scale and an
    # offset; only those two ops touch every element (the values: the tests above).
    x_spec = tf.TensorSpec([4, 3, 3, 5], tf.float32)
    conditional = _cbn()
    assert _full_size_elementwise_ops(
        lambda x, c: conditional(x, c, training=False), x_spec, tf.TensorSpec([4, 6])
    ) == ["AddV2", "Mul"]
    plain = layers.SyncBatchNorm()
    plain.build((4, 3, 3, 5))
    assert _full_size_elementwise_ops(lambda x: plain(x, training=False), x_spec) == [
        "AddV2",
        "Mul",
    ]


def test_batch_norm_moving_statistics_skip_a_non_finite_batch():
    # The train step skips an update whose forward pass overflowed, but that pass has
    # already run; averaged in, its statistics would make every later inference NaN.
    layer = _cbn()
    rng = _rng(8)
    c = rng.randn(4, 6).astype(np.float32)
    layer(rng.randn(4, 3, 3, 5).astype(np.float32), c, training=True)
    bn = layer.batch_norm
    mean, var = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    overflowed = rng.randn(4, 3, 3, 5).astype(np.float32)
    overflowed[1, 2, 0, 3] = np.inf
    assert not np.all(np.isfinite(layer(overflowed, c, training=True).numpy()))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), var)
    # The next finite batch moves them by the usual formula.
    x = (rng.randn(4, 3, 3, 5) * 2 + 1).astype(np.float32)
    layer(x, c, training=True)
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), 0.9 * mean + 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(),
        0.9 * var + 0.1 * x.var(axis=(0, 1, 2), ddof=1),
        rtol=1e-5,
        atol=1e-6,
    )
    assert np.all(np.isfinite(layer(x, c, training=False).numpy()))


@pytest.mark.parametrize("unbiased", [True, False])
def test_sync_batch_norm_affine_and_inference(unbiased):
    """The moving variance averages the unbiased batch variance (PyTorch's batch norm, the
    reference's), or the biased one (tf_biggan <= 0.2) with `unbiased_moving_variance=False`;
    training normalises with the biased one either way."""
    layer = layers.SyncBatchNorm(unbiased_moving_variance=unbiased)
    layer.build((4, 2, 2, 3))
    rng = _rng(6)
    layer.gamma.assign([0.5, 2.0, -1.0])
    layer.beta.assign([1.0, 0.0, 3.0])
    x = (rng.randn(4, 2, 2, 3) + 2).astype(np.float32)
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(
        out, _np_bn(x) * [0.5, 2.0, -1.0] + [1.0, 0.0, 3.0], rtol=1e-4, atol=1e-4
    )
    ddof = 1 if unbiased else 0
    mean, var = 0.1 * x.mean(axis=(0, 1, 2)), 0.9 + 0.1 * x.var(axis=(0, 1, 2), ddof=ddof)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-6)
    out = layer(x, training=False).numpy()
    np.testing.assert_allclose(
        out, _np_bn(x, mean, var) * [0.5, 2.0, -1.0] + [1.0, 0.0, 3.0], rtol=1e-4, atol=1e-4
    )


# ---- Cross-replica: two logical CPUs, each replica sees a different half of the batch.


@pytest.fixture
def strategy(mirrored_strategy):
    return mirrored_strategy


def _per_replica(strategy, array):
    half = array.shape[0] // 2
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * half :][:half])
    )


def _locals(strategy, variable):
    return [v.numpy() for v in strategy.experimental_local_results(variable.value)]


def _halves_with_different_means(shape, seed):
    x = _rng(seed).randn(*shape).astype(np.float32)
    x[shape[0] // 2 :] = x[shape[0] // 2 :] * 3.0 + 4.0
    return x


def test_sync_batch_norm_across_replicas_equals_one_device(strategy):
    x = _halves_with_different_means((8, 3, 3, 4), 7)
    with strategy.scope():
        layer = layers.SyncBatchNorm()
        layer.build(x.shape)
    reference = layers.SyncBatchNorm()
    reference.build(x.shape)
    gamma = np.array([0.5, 1.5, -1.0, 2.0], np.float32)
    for each in (layer, reference):
        each.gamma.assign(gamma)
        each.beta.assign([0.1, 0.2, 0.3, 0.4])

    step = tf.function(lambda v: strategy.run(lambda a: layer(a, training=True), args=(v,)))
    for _ in range(2):
        out = step(_per_replica(strategy, x))
        expected = reference(x, training=True).numpy()
    got = np.concatenate([o.numpy() for o in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Per-half statistics would give a visibly different answer.
    per_half = np.concatenate([_np_bn(x[:4]), _np_bn(x[4:])]) * gamma + [0.1, 0.2, 0.3, 0.4]
    assert np.abs(got - per_half).max() > 0.1
    for name in ("moving_mean", "moving_variance"):
        for local in _locals(strategy, getattr(layer, name)):
            np.testing.assert_allclose(
                local, getattr(reference, name).numpy(), rtol=1e-5, atol=1e-6
            )


def test_conditional_bn_across_replicas_equals_one_device(strategy):
    x = _halves_with_different_means((8, 3, 3, 5), 8)
    c = _rng(9).randn(8, 6).astype(np.float32)
    with strategy.scope():
        layer = layers.ConditionalBatchNorm()
        layer.build((4, 3, 3, 5), (4, 6))
    reference = layers.ConditionalBatchNorm()
    reference.build((8, 3, 3, 5), (8, 6))
    rng = _rng(10)
    layer.gain.kernel.assign(rng.randn(6, 5).astype(np.float32))
    layer.bias.kernel.assign(rng.randn(6, 5).astype(np.float32))
    reference.set_weights(layer.get_weights())

    step = tf.function(
        lambda a, b: strategy.run(lambda xa, cb: layer(xa, cb, training=True), args=(a, b))
    )
    for _ in range(2):
        out = step(_per_replica(strategy, x), _per_replica(strategy, c))
        expected = reference(x, c, training=True).numpy()
    got = np.concatenate([o.numpy() for o in strategy.experimental_local_results(out)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        for local in _locals(strategy, getattr(layer.batch_norm, name)):
            np.testing.assert_allclose(
                local, getattr(reference.batch_norm, name).numpy(), rtol=1e-5, atol=1e-6
            )
    # The power iteration ran once per call on each replica and left u identical.
    for sn, ref in ((layer.gain, reference.gain), (layer.bias, reference.bias)):
        first, second = _locals(strategy, sn.u)
        np.testing.assert_array_equal(first, second)
        np.testing.assert_allclose(first, ref.u.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(*_locals(strategy, sn.sigma))


def test_sn_u_identical_on_replicas_after_training_call(strategy):
    with strategy.scope():
        layer = layers.SNConv2D(4, 3)
        layer.build((None, 4, 4, 3))
    u0 = layer.u.numpy().copy()
    x = _halves_with_different_means((4, 4, 4, 3), 11)
    tf.function(lambda v: strategy.run(lambda a: layer(a, training=True), args=(v,)))(
        _per_replica(strategy, x)
    )
    first, second = _locals(strategy, layer.u)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - u0).max() > 1e-3


# ---- Self-attention.


def _np_conv1x1(x, kernel):
    return np.einsum("bhwc,cd->bhwd", x, kernel[0, 0])


def _np_maxpool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_self_attention_identity_at_init_and_matches_numpy():
    layer = layers.SelfAttention()
    x = _rng(12).randn(2, 4, 6, 16).astype(np.float32)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    assert float(layer.gamma.numpy()) == 0.0

    layer.gamma.assign(0.7)
    out = layer(x, training=False).numpy()
    assert np.abs(out - x).max() > 1e-2
    k = {
        name: _np_sn(getattr(layer, name).kernel.numpy(), getattr(layer, name).u.numpy())[0]
        for name in ("theta", "phi", "g", "o")
    }
    xd = x.astype(np.float64)
    theta = _np_conv1x1(xd, k["theta"]).reshape(2, 24, 2)
    phi = _np_maxpool2(_np_conv1x1(xd, k["phi"])).reshape(2, 6, 2)
    g = _np_maxpool2(_np_conv1x1(xd, k["g"])).reshape(2, 6, 8)
    logits = theta @ phi.transpose(0, 2, 1)
    attention = np.exp(logits - logits.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    o = _np_conv1x1((attention @ g).reshape(2, 4, 6, 8), k["o"])
    np.testing.assert_allclose(out, xd + 0.7 * o, rtol=1e-4, atol=1e-5)


def test_self_attention_rejects_channels_not_divisible_by_8():
    with pytest.raises(ValueError, match="divisible by 8"):
        layers.SelfAttention()(np.zeros((1, 2, 2, 12), np.float32))


# ---- initialisation.


def test_layers_sharing_one_initializer_draw_their_own_kernels():
    # Keras repeats an unseeded initializer's draw: one object shared by every layer gave
    # every kernel of a shape the same matrix. Each layer draws from its own copy.
    shared = keras.initializers.Orthogonal()
    np.testing.assert_array_equal(shared((6, 4)), shared((6, 4)))
    dense = [layers.SNDense(4, kernel_initializer=shared) for _ in range(2)]
    convs = [layers.SNConv2D(4, 1, kernel_initializer=shared) for _ in range(2)]
    attention = layers.SelfAttention(kernel_initializer=shared)
    for layer in dense:
        layer.build((None, 6))
    for layer in convs:
        layer.build((None, 2, 2, 6))
    attention.build((None, 2, 2, 16))
    kernels = [layer.kernel.numpy().reshape(6, 4) for layer in dense + convs]
    for i in range(len(kernels)):
        for j in range(i):
            assert not np.array_equal(kernels[i], kernels[j])
    assert not np.array_equal(attention.theta.kernel.numpy(), attention.phi.kernel.numpy())
    assert dense[0].get_config()["kernel_initializer"] == keras.initializers.serialize(shared)


def test_a_seeded_kernel_initializer_is_refused():
    # Every copy of a seeded initializer draws the same values.
    with pytest.raises(ValueError, match="has a seed"):
        layers.SNDense(4, kernel_initializer=keras.initializers.Orthogonal(seed=1))
    with pytest.raises(ValueError, match="has a seed"):
        layers.ConditionalBatchNorm(
            kernel_initializer={"class_name": "RandomNormal", "config": {"seed": 3}}
        )
    with pytest.raises(TypeError, match="Keras initializer"):
        layers.SNConv2D(4, kernel_initializer=lambda shape, dtype=None: tf.zeros(shape))


@pytest.mark.parametrize(
    "layer, input_shape, fan_in",
    [
        (layers.SNDense(3000), (None, 20), 20),
        (layers.SNConv2D(3000, 3), (None, 4, 4, 5), 45),
        (layers.SNConv2D(3000, 1), (None, 4, 4, 5), 5),
    ],
    ids=["dense", "conv3", "conv1"],
)
def test_biases_start_uniform_within_one_over_sqrt_fan_in(layer, input_shape, fan_in):
    layer.build(input_shape)
    assert layer.get_config()["bias_initializer"] == "fan_in_uniform"
    scaled = layer.bias.numpy() * np.sqrt(fan_in)  # U(-1, 1): mean 0, variance 1/3
    assert np.all(np.abs(scaled) <= 1.0) and scaled.min() < -0.99 and scaled.max() > 0.99
    n = scaled.size
    assert abs(scaled.mean()) < 5 * np.sqrt(1 / (3 * n))
    assert abs(np.mean(scaled**2) - 1 / 3) < 5 * np.sqrt(4 / (45 * n))


def test_zero_biases_on_request_and_unknown_choices_refused():
    layer = layers.SNConv2D(4, 3, bias_initializer="zeros")
    layer.build((None, 4, 4, 2))
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(4))
    with pytest.raises(ValueError, match="bias_initializer must be one of"):
        layers.SNDense(4, bias_initializer="glorot_uniform")


# ---- get_config / from_config.


def _round_trip_cases():
    rng = _rng(13)
    image = rng.randn(2, 4, 4, 8).astype(np.float32)
    return [
        (layers.SNDense(5, use_bias=False), (rng.randn(2, 3).astype(np.float32),)),
        (layers.SNConv2D(3, 1, padding="valid"), (image,)),
        (layers.SNConv2D(4, 3), (image,)),
        (layers.SNConv2D(4, 3, bias_initializer="zeros"), (image,)),
        (layers.SNEmbedding(6, 3), (np.array([0, 5, 2]),)),
        (layers.SNDense(4, folded=True), (rng.randn(2, 3).astype(np.float32),)),
        (layers.SyncBatchNorm(momentum=0.8, epsilon=1e-3, affine=True), (image,)),
        (layers.SyncBatchNorm(affine=False), (image,)),
        (layers.ConditionalBatchNorm(momentum=0.7), (image, rng.randn(2, 3).astype(np.float32))),
        (layers.SelfAttention(), (image,)),
    ]


@pytest.mark.parametrize("index", range(len(_round_trip_cases())))
def test_layer_config_round_trip(index):
    layer, inputs = _round_trip_cases()[index]
    layer(*inputs, training=True)  # builds, and moves u / statistics off their initial values
    if isinstance(layer, layers.SelfAttention):
        layer.gamma.assign(0.5)
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    tiny_models.assert_rebuilt_computes_the_same(layer, rebuilt, inputs, rtol=1e-6)


def test_spectral_layers_finds_nested_sn_layers():
    layer = layers.SelfAttention()
    layer(np.zeros((1, 2, 2, 8), np.float32))
    found = layers.spectral_layers(layer)
    assert len(found) == 4
    assert {id(f) for f in found} == {id(layer.theta), id(layer.phi), id(layer.g), id(layer.o)}


def _standing_bn(entries=6, channels=3):
    layer = layers.SyncBatchNorm(affine=False, num_standing_stats=entries)
    layer.build((2, 2, 2, channels))
    rng = _rng(11)
    layer.standing_mean.assign(rng.randn(entries, channels).astype(np.float32))
    layer.standing_variance.assign(rng.uniform(0.5, 2.0, (entries, channels)).astype(np.float32))
    layer.moving_mean.assign(rng.randn(channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    return layer


@pytest.mark.parametrize("truncation", [0.01, 0.2, 0.3, 0.47, 0.6, 0.99, 1.0])
def test_standing_statistics_interpolate_between_the_entries_around_t(truncation):
    # 6 entries: truncation 0, 0.2, ..., 1. Between k/5 and (k+1)/5 the weights are linear.
    layer = _standing_bn()
    mean, var = layer.standing_mean.numpy(), layer.standing_variance.numpy()
    k = min(int(np.floor(truncation * 5 + 1e-9)), 4)
    f = truncation * 5 - k
    expected_mean = (1 - f) * mean[k] + f * mean[k + 1]
    expected_var = (1 - f) * var[k] + f * var[k + 1]
    got_mean, got_var = layer.standing_statistics(truncation)
    np.testing.assert_allclose(got_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var.numpy(), expected_var, rtol=1e-5, atol=1e-6)
    x = _rng(12).randn(2, 2, 2, 3).astype(np.float32)
    out = layer(x, training=False, statistics_at=tf.constant(truncation)).numpy()
    np.testing.assert_allclose(
        out, (x - expected_mean) / np.sqrt(expected_var + EPS), rtol=1e-4, atol=1e-5
    )


def test_standing_statistics_at_an_entry_are_that_entry():
    layer = _standing_bn()
    for k in range(6):
        mean, var = layer.standing_statistics(k / 5)
        np.testing.assert_allclose(mean.numpy(), layer.standing_mean.numpy()[k], atol=1e-6)
        np.testing.assert_allclose(var.numpy(), layer.standing_variance.numpy()[k], atol=1e-6)


@pytest.mark.parametrize("truncation", [None, 0.0, -1.0, 1.5, float("inf")])
def test_outside_the_table_inference_uses_the_moving_statistics(truncation):
    layer = _standing_bn()
    x = _rng(13).randn(2, 2, 2, 3).astype(np.float32)
    out = layer(x, training=False, statistics_at=truncation).numpy()
    expected = _np_bn(x, layer.moving_mean.numpy(), layer.moving_variance.numpy())
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_standing_table_is_non_trainable_round_trips_and_rejects_one_entry():
    layer = _standing_bn(entries=51, channels=4)
    assert layer.standing_mean.shape == (51, 4) and not layer.standing_mean.trainable
    assert layer.num_standing_stats == 51
    config = layer.get_config()
    assert layers.SyncBatchNorm.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="num_standing_stats"):
        layers.SyncBatchNorm(num_standing_stats=1)
    with pytest.raises(ValueError, match="no standing statistics"):
        _cbn().batch_norm.standing_statistics(0.5)


def test_statistics_dtype_is_float32_but_under_float64():
    for name in ("bfloat16", "float16", "float32", tf.bfloat16, tf.float32):
        assert dtypes.statistics_dtype(name) == tf.float32
    assert dtypes.statistics_dtype("float64") == dtypes.statistics_dtype(tf.float64) == tf.float64
    assert layers.statistics_dtype is dtypes.statistics_dtype


@pytest.fixture
def float64_policy():
    """Layers built in the test compute in float64 (Keras' float64 policy)."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_dtype_policy(saved)


def test_layers_under_a_float64_policy_keep_float64(float64_policy):
    """Under a float64 policy the power iteration, the batch statistics (the unfused path:
    the fused kernel has no float64 on CPU) and the attention logits are float64 too, so a
    training call equals numpy's float64 formulas to float64 rounding, not float32's."""
    rng = _rng(21)
    dense = layers.SNDense(6)
    dense.build((None, 10))
    u0 = dense.u.numpy()
    x = rng.randn(3, 10)
    out = dense(x, training=True)
    expected_kernel, sigma, _, u1 = _np_sn(dense.kernel.numpy(), u0)
    assert out.dtype == tf.float64 and dense.u.dtype == "float64"
    np.testing.assert_allclose(out.numpy(), x @ expected_kernel + dense.bias.numpy(), rtol=1e-12)
    np.testing.assert_allclose(float(dense.sigma.numpy()), sigma, rtol=1e-13)
    np.testing.assert_allclose(dense.u.numpy(), u1, rtol=1e-12)

    batch_norm = layers.SyncBatchNorm()
    h = rng.randn(4, 3, 3, 5) * 3 + 2
    out = batch_norm(h, training=True)
    assert out.dtype == tf.float64
    np.testing.assert_allclose(out.numpy(), _np_bn(h), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        batch_norm.moving_mean.numpy(), 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-12
    )

    attention = layers.SelfAttention()
    image = rng.randn(2, 4, 4, 16)
    attention.build(image.shape)
    attention.gamma.assign(0.5)
    assert attention(image, training=True).dtype == tf.float64
