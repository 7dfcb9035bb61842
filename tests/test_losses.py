"""Tests for tf_biggan.losses: values against hand-computed numbers and numpy."""

import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import losses

# Chosen to cover both sides of each hinge: examples 2 and 3 sit in the zero-loss region
# (real >= 1, fake <= -1), example 0 is badly wrong on both, example 4 is at D = 0.
REAL = np.array([-2.0, 0.5, 1.0, 3.0, 0.0], np.float32)
FAKE = np.array([1.5, -0.5, -1.0, -4.0, 0.0], np.float32)
# relu(1 - real) = [3, 0.5, 0, 0, 1]; relu(1 + fake) = [2.5, 0.5, 0, 0, 1].
HINGE_D = np.array([5.5, 1.0, 0.0, 0.0, 2.0], np.float32)
HINGE_G = np.array([-1.5, 0.5, 1.0, 4.0, 0.0], np.float32)


def _softplus(x):
    return np.logaddexp(0.0, x.astype(np.float64))


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_hinge_losses_match_hand_computed_values(shape):
    d = losses.hinge_discriminator_loss(REAL.reshape(shape), FAKE.reshape(shape))
    g = losses.hinge_generator_loss(FAKE.reshape(shape))
    assert d.shape == (5,) and g.shape == (5,)
    assert d.dtype == tf.float32 and g.dtype == tf.float32
    np.testing.assert_allclose(d.numpy(), HINGE_D, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g.numpy(), HINGE_G, rtol=0, atol=1e-6)


def test_hinge_discriminator_loss_is_zero_when_margins_are_met():
    d = losses.hinge_discriminator_loss([1.0, 7.0, 1.5], [-1.0, -3.0, -20.0])
    np.testing.assert_array_equal(d.numpy(), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_nonsaturating_losses_match_numpy(shape):
    d = losses.nonsaturating_discriminator_loss(REAL.reshape(shape), FAKE.reshape(shape))
    g = losses.nonsaturating_generator_loss(FAKE.reshape(shape))
    assert d.shape == (5,) and g.shape == (5,)
    np.testing.assert_allclose(d.numpy(), _softplus(-REAL) + _softplus(FAKE), rtol=1e-6)
    np.testing.assert_allclose(g.numpy(), _softplus(-FAKE), rtol=1e-6)
    # At D = 0 both terms are log 2.
    np.testing.assert_allclose(d.numpy()[4], 2 * np.log(2.0), rtol=1e-6)


def test_nonsaturating_losses_are_stable_for_large_logits():
    d = losses.nonsaturating_discriminator_loss([200.0, -200.0], [-200.0, 200.0])
    np.testing.assert_allclose(d.numpy(), [0.0, 400.0], rtol=1e-6)


def test_hinge_discriminator_gradient_matches_closed_form():
    # Away from the kinks at real = 1 and fake = -1: d/d real = -[real < 1], d/d fake = [fake > -1].
    real = tf.constant([-2.0, 0.5, 1.5, 3.0], tf.float32)
    fake = tf.constant([1.5, -0.5, -1.5, 0.2], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([real, fake])
        loss = tf.reduce_sum(losses.hinge_discriminator_loss(real, fake))
        g_loss = tf.reduce_sum(losses.hinge_generator_loss(fake))
    d_real, d_fake = tape.gradient(loss, [real, fake])
    np.testing.assert_array_equal(d_real.numpy(), -(real.numpy() < 1.0).astype(np.float32))
    np.testing.assert_array_equal(d_fake.numpy(), (fake.numpy() > -1.0).astype(np.float32))
    np.testing.assert_array_equal(tape.gradient(g_loss, fake).numpy(), -np.ones(4, np.float32))


@pytest.mark.parametrize(
    "fn", [losses.hinge_discriminator_loss, losses.nonsaturating_discriminator_loss]
)
def test_discriminator_losses_reject_bad_shapes(fn):
    with pytest.raises(ValueError, match=r"\[B\] or \[B, 1\]"):
        fn(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="same batch size"):
        fn(np.zeros((4,), np.float32), np.zeros((3,), np.float32))


def _numpy_ortho(kernels, beta):
    total = 0.0
    for k in kernels:
        w = np.asarray(k, np.float64).reshape(-1, k.shape[-1])
        gram = w.T @ w
        total += np.sum((gram * (1.0 - np.eye(gram.shape[0]))) ** 2)
    return beta * total


def test_orthogonal_regularizer_matches_numpy_for_dense_and_conv_kernels():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(7, 5)).astype(np.float32)
    conv = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    beta = 1e-4
    for kernels in ([dense], [conv], [dense, conv]):
        got = losses.orthogonal_regularizer([tf.Variable(k) for k in kernels], beta=beta)
        assert got.shape == () and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), _numpy_ortho(kernels, beta), rtol=1e-5)


def test_orthogonal_regularizer_uses_output_gram_for_conv_kernels():
    # Reshaping [kh, kw, in, out] -> [kh*kw*in, out] (not [kh*kw*out, in] or the transpose)
    # matters: these two layouts give different values for a non-square kernel.
    rng = np.random.default_rng(1)
    conv = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    w = conv.reshape(18, 5).astype(np.float64)
    expected = np.sum((w.T @ w * (1 - np.eye(5))) ** 2)
    wrong = np.sum((w @ w.T * (1 - np.eye(18))) ** 2)
    got = losses.orthogonal_regularizer([conv], beta=1.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert abs(got - wrong) > 1e-3 * wrong


def test_orthogonal_regularizer_is_zero_for_orthogonal_columns():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    # Columns scaled differently are still mutually orthogonal: the diagonal is not penalised.
    w = (q[:, :6] * np.arange(1, 7)).astype(np.float32)
    got = losses.orthogonal_regularizer([w], beta=1.0).numpy()
    assert got < 1e-9
    assert losses.orthogonal_regularizer([rng.normal(size=(8, 6))], beta=1.0).numpy() > 1.0


def test_orthogonal_regularizer_is_linear_in_beta():
    rng = np.random.default_rng(3)
    kernels = [rng.normal(size=(4, 4)).astype(np.float32)]
    r1 = losses.orthogonal_regularizer(kernels, beta=1e-4).numpy()
    r3 = losses.orthogonal_regularizer(kernels, beta=3e-4).numpy()
    np.testing.assert_allclose(r3, 3.0 * r1, rtol=1e-6)
    assert losses.orthogonal_regularizer(kernels, beta=0.0).numpy() == 0.0
    assert losses.orthogonal_regularizer([], beta=1e-4).numpy() == 0.0


def test_orthogonal_regularizer_gradient_matches_closed_form():
    rng = np.random.default_rng(4)
    w = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    beta = 0.5
    with tf.GradientTape() as tape:
        r = losses.orthogonal_regularizer([w], beta=beta)
    w_np = w.numpy().astype(np.float64)
    off = w_np.T @ w_np * (1 - np.eye(4))
    np.testing.assert_allclose(tape.gradient(r, w).numpy(), 4 * beta * w_np @ off, rtol=1e-5)


@pytest.mark.parametrize(
    "shape",
    [(9, 4), (4, 9), (6, 6), (3, 3, 4, 6), (1, 1, 3, 7)],
    ids=["tall", "wide", "square", "conv", "wide_conv"],
)
def test_orthogonal_regularizer_float64_matches_direct_numpy_form(shape):
    # Wide kernels go through ||W W^T||^2 - sum_j ||w_j||^4, the others through W^T W.
    kernel = np.random.default_rng(7).normal(size=shape)
    got = losses.orthogonal_regularizer([tf.constant(kernel, tf.float64)], beta=0.3)
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), _numpy_ortho([kernel], 0.3), rtol=1e-6)


def test_orthogonal_regularizer_wide_kernel_gradient_matches_closed_form():
    rng = np.random.default_rng(8)
    w_np = rng.normal(size=(5, 12))
    w = tf.Variable(w_np)  # float64
    beta = 0.25
    with tf.GradientTape() as tape:
        r = losses.orthogonal_regularizer([w], beta=beta)
    off = w_np.T @ w_np * (1 - np.eye(12))
    np.testing.assert_allclose(
        tape.gradient(r, w).numpy(), 4 * beta * w_np @ off, rtol=1e-10, atol=1e-12
    )


def _largest_op_output(fn, spec):
    """Largest number of elements of any op output in the graph of `fn` (traced, not run)."""
    graph = tf.function(fn).get_concrete_function(spec).graph
    largest = 0
    for op in graph.get_operations():
        for output in op.outputs:
            if output.shape.rank is not None and output.shape.is_fully_defined():
                largest = max(largest, output.shape.num_elements())
    return largest


def test_orthogonal_regularizer_gradient_of_wide_kernel_stays_small():
    # G's first linear layer at 128 px: the out x out Gram would hold 24576^2 floats (2.4 GB).
    spec = tf.TensorSpec([20, 24576], tf.float32)
    limit = 24576 * 24576 // 100

    def gradient(regularizer):
        def fn(w):
            with tf.GradientTape() as tape:
                tape.watch(w)
                r = regularizer([w], 1e-4)
            return tape.gradient(r, w)

        return fn

    def direct_form(kernels, beta):
        w = kernels[0]
        gram = tf.matmul(w, w, transpose_a=True)
        return beta * tf.reduce_sum(tf.square(gram - tf.linalg.diag(tf.linalg.diag_part(gram))))

    assert _largest_op_output(gradient(losses.orthogonal_regularizer), spec) < limit
    # The check can fail: the direct form builds the [24576, 24576] Gram.
    assert _largest_op_output(gradient(direct_form), spec) >= 24576 * 24576


def test_orthogonal_regularizer_rejects_vectors_and_negative_beta():
    with pytest.raises(ValueError, match="rank >= 2"):
        losses.orthogonal_regularizer([tf.Variable(tf.zeros([5]), name="bias")])
    with pytest.raises(ValueError, match="non-negative"):
        losses.orthogonal_regularizer([np.eye(3, dtype=np.float32)], beta=-1.0)


def test_r1_penalty_matches_numpy():
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    got = losses.r1_penalty(grads, gamma=10.0)
    assert got.shape == (3,)
    expected = 5.0 * np.sum(grads.astype(np.float64) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_r1_penalty_of_linear_discriminator_is_closed_form():
    # D(x) = <a, x> has gradient a for every example, so R1 = gamma/2 * ||a||^2.
    rng = np.random.default_rng(6)
    a = tf.constant(rng.normal(size=(1, 2, 2, 3)).astype(np.float32))
    x = tf.constant(rng.normal(size=(4, 2, 2, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.reduce_sum(a * x, axis=[1, 2, 3])
        total = tf.reduce_sum(logits)
    grads = tape.gradient(total, x)
    expected = 0.5 * 2.0 * np.sum(a.numpy().astype(np.float64) ** 2)
    np.testing.assert_allclose(
        losses.r1_penalty(grads, gamma=2.0).numpy(), [expected] * 4, rtol=1e-5
    )


def test_loss_functions_returns_pairs_and_rejects_unknown_names():
    assert losses.loss_functions("hinge") == (
        losses.hinge_discriminator_loss,
        losses.hinge_generator_loss,
    )
    assert losses.loss_functions("nonsaturating") == (
        losses.nonsaturating_discriminator_loss,
        losses.nonsaturating_generator_loss,
    )
    with pytest.raises(ValueError, match=r"'wasserstein'.*\['hinge', 'nonsaturating'\]"):
        losses.loss_functions("wasserstein")
