"""Tests for tf_biggan.optimizers: LeanAdam against PyTorch's Adam (in float64 and
torch.optim.Adam itself) and, in Keras' form, against Keras' Adam bit for bit; the gin
bindings of make_optimizer."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import optimizers


def _adam_steps(optimizer, gradients, initial):
    """Applies `gradients` (a list of arrays, one per step) to one variable; returns its values."""
    variable = tf.Variable(initial)
    optimizer.build([variable])
    values = []
    for gradient in gradients:
        optimizer.apply([tf.constant(gradient)], [variable])
        values.append(variable.numpy().copy())
    return values


def _torch_adam(gradients, initial, lr, beta_1, beta_2, eps):
    """PyTorch's Adam (`torch.optim.Adam`, the reference's optimizer) in float64:
    `w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`."""
    w, m, v = initial.astype(np.float64), np.zeros(initial.shape), np.zeros(initial.shape)
    values = []
    for t, g in enumerate(gradients, start=1):
        g = g.astype(np.float64)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        w = w - lr / (1 - beta_1**t) * m / (np.sqrt(v) / np.sqrt(1 - beta_2**t) + eps)
        values.append(w)
    return values


def _gradients(seed, shape, count):
    rng = np.random.default_rng(seed)
    # Gradients of very different scales, some near ε, so the second moment and ε matter.
    first = rng.normal(size=shape) * 10.0 ** rng.integers(-7, 1, size=shape)
    rest = [rng.normal(size=shape) * 10.0 ** rng.integers(-6, 0) for _ in range(count - 1)]
    return [g.astype(np.float32) for g in [first, *rest]], rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("beta_1", [0.0, 0.5])
def test_lean_adam_is_pytorchs_adam(beta_1):
    gradients, initial = _gradients(0, (6, 8), 6)
    lr, beta_2, eps = 1e-2, 0.999, 1e-6
    lean = optimizers.LeanAdam(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=eps)
    got = _adam_steps(lean, gradients, initial)
    # With β1 = 0 one slot (v) per weight next to the iteration count and the learning rate.
    assert len(lean.variables) == (3 if beta_1 == 0 else 4)
    expected = _torch_adam(gradients, initial, lr, beta_1, beta_2, eps)
    for value, w in zip(got, expected, strict=True):
        np.testing.assert_allclose(value, w, rtol=1e-5, atol=1e-7)


def test_lean_adam_matches_torch_optim_adam():
    torch = pytest.importorskip("torch")
    gradients, initial = _gradients(2, (5, 7), 4)
    weight = torch.nn.Parameter(torch.tensor(initial))
    adam = torch.optim.Adam([weight], lr=1e-3, betas=(0.0, 0.999), eps=1e-6)
    got = _adam_steps(optimizers.make_optimizer(learning_rate=1e-3), gradients, initial)
    for g, ours in zip(gradients, got, strict=True):
        weight.grad = torch.tensor(g)
        adam.step()
        np.testing.assert_allclose(ours, weight.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_adams_first_step_is_pytorchs_for_gradients_near_epsilon():
    """Step 1 moves each weight by `lr · g / (|g| + ε)`: half the rate at |g| = ε. Keras' form,
    `lr · g / (|g| + ε / √(1 − β2))`, gives 3% of it there (ε 1e-6, β2 0.999)."""
    g = np.array([1e-6, 3e-5, -1e-3], np.float32)
    lr = 1e-4
    expected = -lr * g / (np.abs(g) + 1e-6)
    ours = _adam_steps(optimizers.make_optimizer(learning_rate=lr), [g], np.zeros(3, np.float32))
    np.testing.assert_allclose(ours[0], expected, rtol=1e-5)
    keras_form = optimizers.make_optimizer(learning_rate=lr, epsilon_after_correction=False)
    old = _adam_steps(keras_form, [g], np.zeros(3, np.float32))
    np.testing.assert_allclose(old[0], -lr * g / (np.abs(g) + 1e-6 / np.sqrt(1e-3)), rtol=1e-5)
    assert abs(old[0][0]) < 0.07 * abs(ours[0][0])


@pytest.mark.parametrize("beta_1", [0.0, 0.5])
def test_lean_adam_with_epsilon_before_the_correction_is_keras_adam(beta_1):
    """`epsilon_after_correction=False`: the form of tf_biggan <= 0.2, Keras' Adam bit for bit."""
    gradients, initial = _gradients(1, (5,), 4)
    lean = optimizers.LeanAdam(learning_rate=1e-2, beta_1=beta_1, epsilon_after_correction=False)
    got = _adam_steps(lean, gradients, initial)
    expected = _adam_steps(
        keras.optimizers.Adam(learning_rate=1e-2, beta_1=beta_1), gradients, initial
    )
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_make_optimizer_takes_the_epsilon_placement_from_gin():
    gin.clear_config()
    try:
        gin.parse_config("make_optimizer.epsilon_after_correction = False")
        assert not optimizers.make_optimizer().epsilon_after_correction
    finally:
        gin.clear_config()
    assert optimizers.make_optimizer().epsilon_after_correction
    restored = optimizers.LeanAdam.from_config(optimizers.make_optimizer().get_config())
    assert restored.epsilon_after_correction


def test_optimizer_for_takes_each_networks_scoped_bindings():
    """`optimizer_for("generator")` reads `generator/make_optimizer.*`, as the configs bind
    G's and D's learning rates."""
    gin.clear_config()
    try:
        gin.parse_config(
            "generator/make_optimizer.learning_rate = 3e-4\n"
            "discriminator/make_optimizer.learning_rate = 5e-4\n"
            "make_optimizer.beta_2 = 0.99"
        )
        g, d = optimizers.optimizer_for("generator"), optimizers.optimizer_for("discriminator")
        assert float(g.learning_rate) == pytest.approx(3e-4)
        assert float(d.learning_rate) == pytest.approx(5e-4)
        assert g.beta_2 == d.beta_2 == 0.99
    finally:
        gin.clear_config()


def test_lean_adam_in_float64_is_pytorchs_adam_to_float64_rounding():
    """With float64 weights every constant is float64: β2 rounded to float32 (0.999 is then
    1.3e-5 too large in 1 − β2) would scale each first step by 1 − 6.4e-6."""
    gradients = [np.array([1e-6, 3e-5, -1e-3, 2.0]), np.array([-2e-6, 1e-4, 5e-4, -1.0])]
    initial = np.array([0.5, -0.25, 0.125, 1.0])
    saved = keras.config.floatx()
    keras.config.set_floatx("float64")  # a float64 learning rate too
    try:
        optimizer = optimizers.make_optimizer(learning_rate=1e-3)
    finally:
        keras.config.set_floatx(saved)
    got = _adam_steps(optimizer, gradients, initial)
    expected = _torch_adam(gradients, initial, 1e-3, 0.0, 0.999, 1e-6)
    for value, w in zip(got, expected, strict=True):
        assert value.dtype == np.float64
        np.testing.assert_allclose(value - initial, w - initial, rtol=1e-12)
