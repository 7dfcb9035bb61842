"""Each option of the train step (`tf_biggan.step.make_train_step`) changes the update as its closed
form says.

Every test runs the real step on a tiny BigGAN with plain SGD, whose update is `-lr * g`, so
the difference between a step with an option and the same step without it is `-lr` times
the option's own gradient, computed here independently with numpy or with separate tapes.
Kernels are first given Gaussian values: at the orthogonal initialisation the orthogonal
regulariser has no gradient and every singular value is 1.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import augment, kernels, layers, losses
from tf_biggan import state as state_lib
from tf_biggan import step as step_lib

CLASSES = 3
DIM_Z = 32
BATCH = 8
LR = 0.01
SEED = 5


def _state(seed=0):
    keras.utils.set_random_seed(seed)
    state = tiny_models.train_state(lambda: keras.optimizers.SGD(learning_rate=LR), CLASSES, DIM_Z)
    rng = np.random.default_rng(seed)
    for model in (state.generator, state.discriminator):
        for v in model.trainable_variables:
            if len(v.shape) >= 2:
                v.assign(rng.normal(0.0, 0.3, size=v.shape).astype(np.float32))
    state_lib.copy_variables(state.generator.variables, state.ema_generator.variables)
    return state


def _twin(state):
    """A second state holding the same values (networks and SN/BN state)."""
    other = _state(seed=99)
    for name in ("generator", "discriminator", "ema_generator"):
        state_lib.copy_variables(getattr(state, name).variables, getattr(other, name).variables)
    return other


def _batch(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, size=(n, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=n).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


def _weights(variables):
    return [v.numpy().copy() for v in variables]


def _step(state, batch=None, **options):
    config = step_lib.StepConfig(batch_size=BATCH, seed=SEED, **options)
    images, labels = batch if batch is not None else _batch(config.images_per_step)
    return step_lib.make_train_step(state, tf.distribute.get_strategy(), config)(images, labels)


def _ortho_gradient(w, beta):
    """4β W (WᵀW ⊙ (1 − I)) for a kernel of any rank (as its [fan_in, out] matrix), float64."""
    matrix = w.reshape(-1, w.shape[-1]).astype(np.float64)
    gram = matrix.T @ matrix
    np.fill_diagonal(gram, 0.0)
    return (4.0 * beta * matrix @ gram).reshape(w.shape)


def _assert_difference_is(with_option, without, expected, names, rtol=2e-3):
    """(after_with − before) − (after_without − before) == −LR · expected, variable by variable."""
    scale = max(float(np.max(np.abs(e))) for e in expected)
    assert scale > 1e-3, "the option's gradient is too small to test"
    for a, b, e, name in zip(with_option, without, expected, names, strict=True):
        np.testing.assert_allclose(a - b, -LR * e, rtol=rtol, atol=1e-3 * LR * scale, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("accumulation_steps", [1, 2])
@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_orthogonal_regularisation_adds_its_gradient_once_per_update(network, accumulation_steps):
    plain = _state()
    regularised = _twin(plain)
    beta = 1e-2
    before = _weights(getattr(plain, network).trainable_variables)
    option = {"generator": "g_ortho_beta", "discriminator": "d_ortho_beta"}[network]
    _step(plain, accumulation_steps=accumulation_steps)
    _step(regularised, accumulation_steps=accumulation_steps, **{option: beta})
    # D's update comes first: with the regulariser on G it is the same in both runs, so G's
    # loss gradient is too. The paper leaves G's shared class embedding out.
    variables = getattr(plain, network).trainable_variables
    excluded = set()
    if network == "generator":
        excluded = {id(v) for v in plain.generator.shared_embedding.trainable_variables}
        assert excluded and excluded <= {id(v) for v in variables}
    expected = [
        _ortho_gradient(w, beta) if w.ndim >= 2 and id(v) not in excluded else 0 * w
        for v, w in zip(variables, before, strict=True)
    ]
    _assert_difference_is(
        _weights(getattr(regularised, network).trainable_variables),
        _weights(variables),
        expected,
        [v.path for v in variables],
    )


@pytest.mark.slow
def test_r1_adds_the_gradient_of_half_gamma_mean_squared_input_gradient_on_reals():
    plain = _state()
    penalised = _twin(plain)
    reference = _twin(plain)
    gamma = 10.0
    images, labels = _batch()
    _step(plain, (images, labels))
    _step(penalised, (images, labels), r1_gamma=gamma)

    # By hand: γ/2 · mean_i ‖∇ₓ D(x_i, y_i)‖² on the real batch, differentiated in D's weights
    # (one training call: the step's D also runs one power iteration from the same u).
    d = reference.discriminator
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(images)
            logits_sum = tf.reduce_sum(d(images, labels, training=True))
        input_grads = inner.gradient(logits_sum, images)
        per_example = tf.reduce_sum(tf.square(input_grads), axis=[1, 2, 3])
        penalty = gamma / 2.0 * tf.reduce_mean(per_example)
    expected = [
        np.zeros(v.shape, np.float32) if g is None else g.numpy()  # None: no path to ∇ₓD
        for v, g in zip(
            d.trainable_variables, outer.gradient(penalty, d.trainable_variables), strict=True
        )
    ]
    np.testing.assert_allclose(
        losses.r1_penalty(input_grads, gamma).numpy(), gamma / 2 * per_example.numpy(), rtol=1e-6
    )
    _assert_difference_is(
        _weights(penalised.discriminator.trainable_variables),
        _weights(plain.discriminator.trainable_variables),
        expected,
        [v.path for v in d.trainable_variables],
        rtol=5e-3,
    )


@pytest.mark.slow
def test_diff_augment_feeds_d_the_augmented_reals_and_fakes_of_the_step_seed():
    state = _state()
    reference = _twin(state)
    policy = "color,translation,cutout"
    images, labels = _batch()
    metrics = _step(state, (images, labels), augment_policy=policy)

    # The step's seeds: (seed, step 0, update 0, micro 0, replica 0, 2 for reals / 3 for fakes).
    z, fake_labels = step_lib.draw_latents(SEED, 0, 0, BATCH, DIM_Z, CLASSES)
    fake = reference.generator(z, tf.one_hot(fake_labels, CLASSES), training=True)
    real_in = augment.diff_augment(images, policy, seed=step_lib.fold_in(SEED, 0, 0, 0, 0, 2))
    fake_in = augment.diff_augment(fake, policy, seed=step_lib.fold_in(SEED, 0, 0, 0, 0, 3))
    logits = reference.discriminator(
        tf.concat([real_in, fake_in], 0), tf.concat([labels, fake_labels], 0), training=True
    ).numpy()
    np.testing.assert_allclose(float(metrics["d/real"]), logits[:BATCH].mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["d/fake"]), logits[BATCH:].mean(), rtol=1e-4)
    # Without augmentation D would have seen other logits: the option did something.
    plain = reference.discriminator(images, labels, training=False).numpy()
    assert abs(plain.mean() - logits[:BATCH].mean()) > 1e-3


def _svd(kernel):
    matrix = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    return np.linalg.svd(matrix, full_matrices=False)


@pytest.mark.slow
@pytest.mark.parametrize("clamp", [{"sigma0_clamp": 1.5}, {"sigma0_clamp_ratio": 1.02}])
def test_sigma0_clamp_lowers_only_the_top_singular_value(clamp):
    plain = _state()
    clamped = _twin(plain)
    _step(plain)
    _step(clamped, **clamp)
    lowered = 0
    for layer, layer_clamped in zip(
        layers.spectral_layers(plain.generator),
        layers.spectral_layers(clamped.generator),
        strict=True,
    ):
        # Without the clamp the G update is the same, so the unclamped kernel is the one the
        # clamp started from.
        kernel = layer.kernel.numpy()
        after = layer_clamped.kernel.numpy().reshape(-1, kernel.shape[-1]).astype(np.float64)
        u, s, vt = _svd(kernel)
        target = clamp.get("sigma0_clamp") or clamp["sigma0_clamp_ratio"] * s[1]
        expected = s.copy()
        expected[0] = min(s[0], target)
        lowered += s[0] > target
        # The singular vectors stay: W' v_i = σ'_i u_i for every i, σ'_0 the clamp.
        np.testing.assert_allclose(
            after @ vt.T, u[:, : len(s)] * expected, rtol=1e-3, atol=1e-4 * s[0], err_msg=layer.path
        )
        np.testing.assert_allclose(
            np.linalg.svd(after, compute_uv=False),
            np.sort(expected)[::-1],
            rtol=1e-3,
            err_msg=layer.path,
        )
    assert lowered >= 3, "the clamp should act on several layers"


def test_sigma0_clamp_options_are_checked():
    with pytest.raises(ValueError, match="not both"):
        step_lib.StepConfig(4, sigma0_clamp=1.0, sigma0_clamp_ratio=2.0)
    with pytest.raises(ValueError, match="sigma0_clamp must be > 0"):
        step_lib.StepConfig(4, sigma0_clamp=0.0)
    with pytest.raises(ValueError, match="r1_gamma must be >= 0"):
        step_lib.StepConfig(4, r1_gamma=-1.0)


def _sgd_d_updates_by_hand(reference, images, labels, updates):
    """The step's D updates, by hand, on `reference` (a twin): update u uses real batch u
    and fakes drawn for (seed, step 0, update u), G in training mode (one more power
    iteration each time, as in the step). Returns D and each update's (real, fake) logits
    before its update."""
    g, d = reference.generator, reference.discriminator
    logits_of_updates = []
    for update in range(updates):
        real = images[update * BATCH : (update + 1) * BATCH]
        real_labels = labels[update * BATCH : (update + 1) * BATCH]
        z, fake_labels = step_lib.draw_latents(SEED, 0, update, BATCH, DIM_Z, CLASSES)
        fake = g(z, tf.one_hot(fake_labels, CLASSES), training=True)
        with tf.GradientTape() as tape:
            logits = d(
                tf.concat([real, fake], 0), tf.concat([real_labels, fake_labels], 0), training=True
            )
            real_logits, fake_logits = tf.split(logits, 2)
            loss = tf.reduce_mean(losses.hinge_discriminator_loss(real_logits, fake_logits))
        logits_of_updates.append((real_logits.numpy(), fake_logits.numpy()))
        for v, grad in zip(
            d.trainable_variables, tape.gradient(loss, d.trainable_variables), strict=True
        ):
            v.assign_sub(LR * grad)
    return d, logits_of_updates


@pytest.mark.slow
def test_two_d_steps_are_two_sgd_updates_on_consecutive_halves_of_the_batch():
    state = _state()
    reference = _twin(state)
    images, labels = _batch(2 * BATCH, seed=3)
    _step(state, (images, labels), d_steps=2)

    d = _sgd_d_updates_by_hand(reference, images, labels, 2)[0]
    assert int(state.d_optimizer.iterations) == 2 and int(state.g_optimizer.iterations) == 1
    for v, expected in zip(
        state.discriminator.trainable_variables, d.trainable_variables, strict=True
    ):
        np.testing.assert_allclose(
            v.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6, err_msg=v.path
        )


def _averaged_pairs(state):
    """(G variable, EMA variable) pairs that the EMA averages (SN state is copied instead)."""
    spectral = state_lib.spectral_state_variables(state.generator)
    return [
        (g, e)
        for g, e in zip(state.generator.variables, state.ema_generator.variables, strict=True)
        if id(g) not in spectral
    ]


@pytest.mark.slow
def test_ema_is_a_copy_before_its_start_step_and_an_average_from_it():
    state = _state()
    config = step_lib.StepConfig(batch_size=BATCH, seed=SEED, ema_decay=0.75, ema_start_step=2)
    step = step_lib.make_train_step(state, tf.distribute.get_strategy(), config)
    pairs = _averaged_pairs(state)
    for index in range(3):
        ema_before = [e.numpy().copy() for _, e in pairs]
        step(*_batch(seed=index))
        for (g, e), previous in zip(pairs, ema_before, strict=True):
            if index < 2:  # steps 0 and 1: before the start step the EMA is G
                np.testing.assert_array_equal(e.numpy(), g.numpy(), err_msg=g.path)
            else:  # step 2: the first average
                np.testing.assert_allclose(
                    e.numpy(), 0.75 * previous + 0.25 * g.numpy(), rtol=1e-6, atol=1e-7
                )
    assert any(not np.array_equal(e.numpy(), g.numpy()) for g, e in pairs)


@pytest.mark.slow
def test_ema_warmup_ramps_the_decay_up_from_the_start_step():
    # decay_n = min(ema_decay, (1 + n) / (10 + n)) at the n-th update from the start step:
    # 0.1 at the start step, 2/11 at the next, where the plain EMA would use 0.9 at once.
    state = _state()
    config = step_lib.StepConfig(
        batch_size=BATCH, seed=SEED, ema_decay=0.9, ema_start_step=1, ema_warmup=True
    )
    step = step_lib.make_train_step(state, tf.distribute.get_strategy(), config)
    pairs = _averaged_pairs(state)
    for index, decay in enumerate([0.0, 0.1, 2 / 11]):
        ema_before = [e.numpy().copy() for _, e in pairs]
        step(*_batch(seed=index))
        for (g, e), previous in zip(pairs, ema_before, strict=True):
            np.testing.assert_allclose(
                e.numpy(), decay * previous + (1 - decay) * g.numpy(), rtol=1e-5, atol=1e-7,
                err_msg=g.path,
            )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mirrored", [False, True])
def test_ema_update_is_the_closed_form_at_each_step(mirrored, request):
    # ema_update alone, with G's weights redrawn before every call: an exact copy before the
    # start step (3), then d·t + (1 − d)·s with the warmed-up decay d = min(0.9, (1+n)/(10+n)),
    # n updates after the start; the SN vectors are copied throughout.
    strategy = (
        request.getfixturevalue("mirrored_strategy") if mirrored else tf.distribute.get_strategy()
    )
    with strategy.scope():
        state = tiny_models.train_state(lambda: keras.optimizers.SGD(LR), CLASSES, DIM_Z)
    config = step_lib.StepConfig(batch_size=BATCH, ema_decay=0.9, ema_start_step=3, ema_warmup=True)
    update = tf.function(lambda step: step_lib.ema_update(state, strategy, config, step))
    pairs = list(zip(state.generator.variables, state.ema_generator.variables, strict=True))
    spectral = state_lib.spectral_state_variables(state.generator)
    rng = np.random.default_rng(3)
    for step, decay in [(0, 0.0), (2, 0.0), (3, 0.1), (4, 2 / 11), (5, 3 / 12), (200, 0.9)]:
        for g, _ in pairs:
            g.assign(rng.normal(0.0, 1.0, g.shape).astype(np.float32))
        before = [e.numpy().astype(np.float64) for _, e in pairs]
        update(tf.constant(step, tf.int64))
        for (g, e), previous in zip(pairs, before, strict=True):
            if decay == 0.0 or id(g) in spectral:
                np.testing.assert_array_equal(e.numpy(), g.numpy(), err_msg=f"{step} {g.path}")
            else:
                expected = decay * previous + (1.0 - decay) * g.numpy().astype(np.float64)
                np.testing.assert_allclose(
                    e.numpy(), expected, rtol=1e-6, atol=1e-6, err_msg=f"{step} {g.path}"
                )
            if mirrored:  # every replica holds the same value
                copies = [v.numpy() for v in strategy.experimental_local_results(e.value)]
                np.testing.assert_array_equal(copies[0], copies[1])


@pytest.mark.slow
def test_the_step_with_batch_norm_relu_updates_g_as_with_the_separate_ops(monkeypatch):
    """The real step on one device with every BN-ReLU of G through `kernels.batch_norm_relu`
    (floor 0; BigGAN-size activations take it by default) against the same step with the
    floor lifted: the same metrics and, under SGD, the same G, D and BN statistics after it."""
    calls = []
    fused_op = kernels.batch_norm_relu
    monkeypatch.setattr(kernels, "batch_norm_relu", lambda *a: calls.append(1) or fused_op(*a))
    states, metrics = [], []
    for floor in (2**62, 0):
        with kernels.policy_scope(kernels.KernelPolicy(batch_norm_relu_min_elements=floor)):
            states.append(_state())
        metrics.append({name: float(v) for name, v in _step(states[-1]).items()})
    # Traced once, with the floor at 0: G's 7 BN-ReLUs in the D update's and G update's passes.
    assert len(calls) == 2 * len(layers.batch_norm_layers(states[1].generator)) == 14
    assert metrics[1].keys() == metrics[0].keys()
    for name in metrics[0]:
        assert metrics[1][name] == pytest.approx(metrics[0][name], rel=1e-4, abs=1e-6), name
    start = _state()
    for model in ("generator", "discriminator"):
        separate, fused = (getattr(state, model).variables for state in states)
        before = _weights(getattr(start, model).variables)
        moved = 0
        for a, b, initial in zip(fused, separate, before, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.name)
            moved += not np.array_equal(b.numpy(), initial)
        assert moved > len(separate) // 2, model  # the step did update them


def _drawn_latents(d_steps):
    """The latents the step draws itself at step 0, as a `Latents`."""
    drawn = [
        step_lib.draw_latents(SEED, 0, update, BATCH, DIM_Z, CLASSES)
        for update in range(d_steps + 1)
    ]
    return step_lib.Latents(
        z=tf.stack([z for z, _ in drawn]), labels=tf.stack([labels for _, labels in drawn])
    )


@pytest.mark.slow
@pytest.mark.parametrize("d_steps", [1, 2])
def test_given_latents_equal_to_the_drawn_ones_give_the_drawn_step(d_steps):
    """`train_step(..., latents)` replaces exactly the draws: nothing else changes."""
    state = _state()
    reference = _twin(state)
    batch = _batch(d_steps * BATCH, seed=4)
    config = step_lib.StepConfig(batch_size=BATCH, seed=SEED, d_steps=d_steps)
    strategy = tf.distribute.get_strategy()
    drawn = step_lib.make_train_step(reference, strategy, config)(*batch)
    given = step_lib.make_train_step(state, strategy, config)(*batch, _drawn_latents(d_steps))
    for name in drawn:
        np.testing.assert_array_equal(given[name].numpy(), drawn[name].numpy(), err_msg=name)
    for ours, theirs in zip(state.generator.variables, reference.generator.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


@pytest.mark.slow
def test_given_latents_are_the_ones_g_draws_from():
    """Other given latents give another step: G's update follows the given z and classes,
    computed by hand on a twin with the given G-update latents."""
    state = _state()
    reference = _twin(state)
    latents = step_lib.Latents(
        z=tf.random.stateless_normal([2, BATCH, DIM_Z], seed=[1, 2]),
        labels=tf.constant(np.arange(2 * BATCH).reshape(2, BATCH) % CLASSES, tf.int32),
    )
    images, labels = _batch(BATCH, seed=6)
    config = step_lib.StepConfig(batch_size=BATCH, seed=SEED)
    step_lib.make_train_step(state, tf.distribute.get_strategy(), config)(images, labels, latents)

    # By hand: the D update on the given fakes, then G's gradient at the given G latents.
    g, d = reference.generator, reference.discriminator
    fake = g(latents.z[0], tf.one_hot(latents.labels[0], CLASSES), training=True)
    with tf.GradientTape() as tape:
        logits = d(
            tf.concat([images, fake], 0), tf.concat([labels, latents.labels[0]], 0), training=True
        )
        loss = tf.reduce_mean(losses.hinge_discriminator_loss(*tf.split(logits, 2)))
    for v, grad in zip(
        d.trainable_variables, tape.gradient(loss, d.trainable_variables), strict=True
    ):
        v.assign_sub(LR * grad)
    with tf.GradientTape() as tape:
        fake = g(latents.z[1], tf.one_hot(latents.labels[1], CLASSES), training=True)
        loss = tf.reduce_mean(-d(fake, latents.labels[1], training=True))
    for v, grad in zip(
        g.trainable_variables, tape.gradient(loss, g.trainable_variables), strict=True
    ):
        if grad is not None:
            v.assign_sub(LR * grad)
    for ours, expected in zip(
        state.generator.trainable_variables, g.trainable_variables, strict=True
    ):
        np.testing.assert_allclose(
            ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6, err_msg=ours.path
        )


@pytest.mark.slow
def test_given_latents_of_the_wrong_shape_or_range_are_refused():
    state = _state()
    config = step_lib.StepConfig(batch_size=BATCH, seed=SEED)
    train_step = step_lib.make_train_step(state, tf.distribute.get_strategy(), config)
    images, labels = _batch(BATCH)
    z = tf.zeros([2, BATCH, DIM_Z])
    with pytest.raises(ValueError, match=r"latents must be z \[2, 8, 32\] and labels \[2, 8\]"):
        train_step(images, labels, step_lib.Latents(z[:1], tf.zeros([1, BATCH], tf.int32)))
    with pytest.raises(ValueError, match="must be integers"):
        train_step(images, labels, step_lib.Latents(z, tf.zeros([2, BATCH])))
    with pytest.raises(tf.errors.InvalidArgumentError, match="< num_classes"):
        train_step(images, labels, step_lib.Latents(z, tf.fill([2, BATCH], CLASSES)))


@pytest.mark.slow
def test_the_d_loss_terms_are_the_hinge_means_of_each_update():
    """`loss/d_real`, `loss/d_fake` (and per update with two D updates) are the hinge terms'
    means on D's logits before its update, `loss/d` their sum."""
    state = _state()
    reference = _twin(state)
    images, labels = _batch(2 * BATCH, seed=7)
    metrics = _step(state, (images, labels), d_steps=2)
    _, logits_of_updates = _sgd_d_updates_by_hand(reference, images, labels, 2)
    for update, (real_logits, fake_logits) in enumerate(logits_of_updates):
        real_hinge = np.mean(np.maximum(0.0, 1.0 - real_logits))
        fake_hinge = np.mean(np.maximum(0.0, 1.0 + fake_logits))
        np.testing.assert_allclose(metrics[f"loss/d_real/update{update}"], real_hinge, rtol=1e-5)
        np.testing.assert_allclose(metrics[f"loss/d_fake/update{update}"], fake_hinge, rtol=1e-5)
    for name in ("real", "fake"):
        mean = (metrics[f"loss/d_{name}/update0"] + metrics[f"loss/d_{name}/update1"]) / 2
        np.testing.assert_allclose(metrics[f"loss/d_{name}"], mean, rtol=1e-6)
    np.testing.assert_allclose(
        metrics["loss/d"], metrics["loss/d_real"] + metrics["loss/d_fake"], rtol=1e-6
    )
    assert "loss/d_real/update0" not in _step(_state(), d_steps=1)
