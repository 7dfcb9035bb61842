"""Tests for tf_biggan.state: the checkpoint round trip of every variable, restoring the EMA
generator from a training directory, and fine-tuning initialisation with other classes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import state as state_lib

DIM_Z = 32


def _state(num_classes=3, make_optimizer=state_lib.make_optimizer):
    return tiny_models.train_state(make_optimizer, num_classes, dim_z=DIM_Z)


def _all_variables(state):
    """Every checkpointed variable by a stable name: networks, optimizer slots, counters."""
    out = {}
    for name in ("generator", "discriminator", "ema_generator"):
        for v in getattr(state, name).variables:
            out[f"{name}:{v.path.split('/', 1)[1]}"] = v
    for name in ("g_optimizer", "d_optimizer"):
        for i, v in enumerate(getattr(state, name).variables):
            out[f"{name}:{i}"] = v
    out["step"] = state.step
    out["skipped_updates"] = state.skipped_updates
    out["learning_rate_factors"] = state.learning_rate_factors
    return out


def _randomize(state, seed):
    """Gives every variable a distinct random value, so a missed one cannot match by chance."""
    rng = np.random.default_rng(seed)
    for v in _all_variables(state).values():
        dtype = np.dtype(tf.as_dtype(v.dtype).as_numpy_dtype)
        if np.issubdtype(dtype, np.integer):
            v.assign(rng.integers(1, 1000, size=v.shape).astype(dtype))
        else:
            v.assign(rng.normal(size=v.shape).astype(np.float32))


def _numpy(variables):
    return {k: np.array(v.numpy()) for k, v in variables.items()}


def test_checkpoint_round_trip_restores_every_variable(tmp_path):
    saved = _state()
    _randomize(saved, seed=1)
    path = saved.checkpoint().save(str(tmp_path / "ckpt"))
    expected = _numpy(_all_variables(saved))
    # Optimizer slots (Adam moments, iterations) and SN u vectors are part of it.
    assert sum("g_optimizer" in k for k in expected) > 2
    assert any(k.endswith("sn_u") for k in expected)

    fresh = _state()
    _randomize(fresh, seed=2)
    fresh.checkpoint().restore(path).assert_consumed()
    restored = _numpy(_all_variables(fresh))
    assert restored.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)


def _inputs(num_classes=3, n=4):
    z = tf.random.stateless_normal([n, DIM_Z], [1, 2])
    y = tf.one_hot(np.arange(n) % num_classes, num_classes)
    return z, y


def test_restore_ema_generator_gives_the_saved_outputs(tmp_path):
    state = _state()
    # An EMA different from G, so restoring G by mistake would show.
    for v in state.ema_generator.trainable_variables:
        v.assign(v + 0.05 * tf.random.stateless_normal(v.shape, [3, 4]))
    model_dir = str(tmp_path)
    state_lib.write_model_config(model_dir, state.generator, ["a", "b", "c"])
    state.step.assign(17)
    manager = tf.train.CheckpointManager(state.checkpoint(), model_dir, max_to_keep=1)
    manager.save(checkpoint_number=17)

    generator, config, path = state_lib.restore_ema_generator(model_dir)
    assert config["step"] == 17 and config["class_names"] == ["a", "b", "c"]
    assert path.endswith("ckpt-17")
    z, y = _inputs()
    expected = state.ema_generator(z, y, training=False).numpy()
    np.testing.assert_allclose(generator(z, y, training=False).numpy(), expected, atol=1e-6)
    assert np.max(np.abs(state.generator(z, y, training=False).numpy() - expected)) > 1e-3


def test_checkpoint_holds_every_variable_once(tmp_path):
    state = _state()
    path = state.checkpoint().save(str(tmp_path / "ckpt"))
    stored = [
        name
        for name, _ in tf.train.list_variables(path)
        if name not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    # A variable reachable along several paths (a trainable weight is also tracked by its
    # optimizer) is stored once, so the count is that of distinct variables.
    assert len(stored) == len({id(v) for v in _all_variables(state).values()})


def test_restore_ema_generator_without_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        state_lib.restore_ema_generator(str(tmp_path))


def test_initialize_from_other_classes_loads_all_but_the_embeddings(tmp_path):
    source = _state(num_classes=3)
    _randomize(source, seed=5)
    model_dir = str(tmp_path)
    state_lib.write_model_config(model_dir, source.generator)
    tf.train.CheckpointManager(source.checkpoint(), model_dir, max_to_keep=1).save(1)

    target = _state(num_classes=5)
    embeddings = {
        id(v)
        for layer in (
            target.generator.shared_embedding,
            target.ema_generator.shared_embedding,
            target.discriminator.embedding,
        )
        for v in layer.variables
    }
    fresh = {id(v): v.numpy() for v in _all_variables(target).values()}
    state_lib.initialize_from(target, model_dir)

    loaded = kept = 0
    for name in ("generator", "discriminator", "ema_generator"):
        source_values = {
            v.path.split("/", 1)[1]: v.numpy() for v in getattr(source, name).variables
        }
        for v in getattr(target, name).variables:
            if id(v) in embeddings:
                # The class embeddings keep their fresh initialisation (other shape).
                np.testing.assert_array_equal(v.numpy(), fresh[id(v)], err_msg=v.path)
                kept += 1
            else:
                np.testing.assert_array_equal(
                    v.numpy(), source_values[v.path.split("/", 1)[1]], err_msg=v.path
                )
                loaded += 1
    # G, EMA G: shared embedding kernel; D: embedding kernel, u and sigma.
    assert kept >= 3 and loaded > 50
    # The optimizers and the step start afresh.
    assert int(target.step) == 0
    assert int(target.g_optimizer.iterations) == 0


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
    lean = state_lib.LeanAdam(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=eps)
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
    got = _adam_steps(state_lib.make_optimizer(learning_rate=1e-3), gradients, initial)
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
    ours = _adam_steps(state_lib.make_optimizer(learning_rate=lr), [g], np.zeros(3, np.float32))
    np.testing.assert_allclose(ours[0], expected, rtol=1e-5)
    keras_form = state_lib.make_optimizer(learning_rate=lr, epsilon_after_correction=False)
    old = _adam_steps(keras_form, [g], np.zeros(3, np.float32))
    np.testing.assert_allclose(old[0], -lr * g / (np.abs(g) + 1e-6 / np.sqrt(1e-3)), rtol=1e-5)
    assert abs(old[0][0]) < 0.07 * abs(ours[0][0])


@pytest.mark.parametrize("beta_1", [0.0, 0.5])
def test_lean_adam_with_epsilon_before_the_correction_is_keras_adam(beta_1):
    """`epsilon_after_correction=False`: the form of tf_biggan <= 0.2, Keras' Adam bit for bit."""
    gradients, initial = _gradients(1, (5,), 4)
    lean = state_lib.LeanAdam(learning_rate=1e-2, beta_1=beta_1, epsilon_after_correction=False)
    got = _adam_steps(lean, gradients, initial)
    expected = _adam_steps(
        keras.optimizers.Adam(learning_rate=1e-2, beta_1=beta_1), gradients, initial
    )
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_make_optimizer_takes_the_epsilon_placement_from_gin():
    import gin

    gin.clear_config()
    try:
        gin.parse_config("make_optimizer.epsilon_after_correction = False")
        assert not state_lib.make_optimizer().epsilon_after_correction
    finally:
        gin.clear_config()
    assert state_lib.make_optimizer().epsilon_after_correction
    restored = state_lib.LeanAdam.from_config(state_lib.make_optimizer().get_config())
    assert restored.epsilon_after_correction


def _keras_adam():
    return keras.optimizers.Adam(beta_1=0.0, epsilon=1e-6)


def test_checkpoint_with_other_optimizer_slots_is_refused_by_name(tmp_path):
    # A checkpoint whose Adam kept a first moment (beta_1 != 0, or tf_biggan before 0.2).
    old = _state(make_optimizer=_keras_adam)
    path = old.checkpoint().save(str(tmp_path / "ckpt"))
    with pytest.raises(
        state_lib.IncompatibleCheckpointError, match="g_optimizer has .*--init_from"
    ):
        state_lib.check_optimizer_slots(_state(), path)

    same = _state()
    same_path = same.checkpoint().save(str(tmp_path / "same"))
    state_lib.check_optimizer_slots(_state(), same_path)
    state_lib.check_optimizer_slots(_state(make_optimizer=_keras_adam), path)


def test_a_checkpoint_without_learning_rate_factors_restores_with_factors_of_one(tmp_path):
    # The layout of tf_biggan 0.2: the same objects, no learning_rate_factors.
    old = _state(make_optimizer=lambda: state_lib.make_optimizer(learning_rate=3e-4))
    _randomize(old, seed=2)
    path = tf.train.Checkpoint(
        generator=old.generator,
        discriminator=old.discriminator,
        ema_generator=old.ema_generator,
        g_optimizer=old.g_optimizer,
        d_optimizer=old.d_optimizer,
        step=old.step,
        skipped_updates=old.skipped_updates,
    ).save(str(tmp_path / "ckpt"))
    assert not any(
        name.startswith(state_lib.LEARNING_RATE_FACTORS)
        for name, _ in tf.train.list_variables(path)
    )
    new = _state(make_optimizer=lambda: state_lib.make_optimizer(learning_rate=1e-4))
    new.learning_rate_factors.assign([0.5, 0.25])
    new.restore(path)
    expected = _numpy(_all_variables(old))
    for name, value in _numpy(_all_variables(new)).items():
        if name == "learning_rate_factors":
            np.testing.assert_array_equal(value, [1.0, 1.0])
        else:
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    # The checkpoint's rate (randomised) was restored; the configured one then applies.
    changes = new.apply_learning_rate_factors()
    assert [(name, rate) for name, _, rate in changes] == [
        ("generator", pytest.approx(1e-4)),
        ("discriminator", pytest.approx(1e-4)),
    ]
    assert float(new.g_optimizer.learning_rate) == pytest.approx(1e-4)


def test_learning_rate_factors_multiply_the_configured_rates():
    state = _state(make_optimizer=lambda: state_lib.make_optimizer(learning_rate=2e-4))
    state.scale_learning_rates(0.5)
    state.scale_learning_rates(0.5)
    np.testing.assert_array_equal(state.learning_rate_factors.numpy(), [0.25, 0.25])
    assert float(state.d_optimizer.learning_rate) == pytest.approx(5e-5)
    assert state.apply_learning_rate_factors() == []  # already applied: nothing changes


# --------------------------------------------------------------------------- 0.2 checkpoints

RELEASE_0_2 = os.path.join(os.path.dirname(__file__), "data", "checkpoint_0_2")


def _variable_digest(value) -> str:
    value = np.asarray(value)
    return (
        f"{value.dtype.str}{list(value.shape)}:{hashlib.sha256(value.tobytes()).hexdigest()[:16]}"
    )


# Each way of resuming the 0.2 checkpoint, and the digests of step 6 it must give:
# - `keras_adam`: with Adam's ε in Keras' place (`make_optimizer.epsilon_after_correction =
#   False`, 0.2's form), 0.2's own run from ckpt-3 to step 6, bit for bit;
# - `default`: with today's default, PyTorch's place (0.3), a run of this code resuming the
#   same checkpoint: the checkpoint resumes, and a later change of the numerics shows here.
RESUMES = {
    "keras_adam": (["make_optimizer.epsilon_after_correction = False"], "step6_sha256_adam_keras"),
    "default": ([], "step6_sha256_adam_after_correction"),
}


def cpu_kind() -> str:
    """The CPU's vendor and widest matrix/vector unit, e.g. "GenuineIntel-amx".

    TensorFlow's CPU kernels (Eigen's) pick their code path by instruction set, and the
    paths round differently: the same run ends with other bits on AVX-512 and on AMX.
    """
    vendor, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                vendor = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    unit = "amx" if "amx_tile" in flags else "avx512" if "avx512f" in flags else "avx2"
    return f"{vendor}-{unit}"


@pytest.mark.parametrize("resume", sorted(RESUMES))
def test_a_checkpoint_of_release_0_2_resumes_bit_identically(tmp_path, resume):
    """A step-3 checkpoint written by tf_biggan 0.2 (tests/data/checkpoint_0_2/README.md),
    resumed by `python -m tf_biggan.train` to step 6 with the config it was written with,
    ends with every variable bit-identical to the run of `RESUMES` on this kind of CPU: the
    networks, EMA, optimizer slots, SN vectors, BN statistics, counters and the input
    iterator's position all carry over. Where no digests are recorded for this kind of CPU
    (bits differ between kinds), the run must still resume at step 3 and end finite with
    the same variables; the bit-for-bit part is skipped, saying so."""
    bindings, digests = RESUMES[resume]
    model_dir = tmp_path / "run"
    shutil.copytree(RELEASE_0_2, model_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_biggan.train",
            f"--gin_config={os.path.join(RELEASE_0_2, 'train_0_2.gin')}",
            f"--model_dir={model_dir}",
            *(f"--gin_bindings={binding}" for binding in bindings),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # oneDNN picks its kernels by the CPU's instruction set (AVX2, AVX-512, AMX), and
        # their rounding differs even between CPUs of one kind; off, Eigen's kernels give
        # the same bits on every CPU of a kind (`cpu_kind`).
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "at step 3" in result.stderr
    with open(os.path.join(RELEASE_0_2, f"{digests}.json")) as f:
        by_cpu = json.load(f)
    reader = tf.train.load_checkpoint(str(model_dir / "ckpt-6"))
    saved = {
        name
        for name in reader.get_variable_to_shape_map()
        if "ITERATOR" not in name and "OBJECT_GRAPH" not in name and "save_counter" not in name
    }
    assert all(set(expected) == saved for expected in by_cpu.values())
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 6
    assert all(np.all(np.isfinite(reader.get_tensor(name))) for name in saved)
    if cpu_kind() not in by_cpu:
        pytest.skip(f"no step-6 digests of {digests} for a {cpu_kind()} CPU (has {sorted(by_cpu)})")
    expected = by_cpu[cpu_kind()]
    differ = [
        name
        for name in sorted(expected)
        if _variable_digest(reader.get_tensor(name)) != expected[name]
    ]
    assert not differ, f"{len(differ)} of {len(expected)} variables differ, e.g. {differ[:5]}"
