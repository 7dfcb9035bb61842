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

from tf_biggan import optimizers
from tf_biggan import state as state_lib

DIM_Z = 32


def _state(num_classes=3, make_optimizer=optimizers.make_optimizer):
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _keras_adam():
    return keras.optimizers.Adam(beta_1=0.0, epsilon=1e-6)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_checkpoint_without_learning_rate_factors_restores_with_factors_of_one(tmp_path):
    # The layout of tf_biggan 0.2: the same objects, no learning_rate_factors.
    old = _state(make_optimizer=lambda: optimizers.make_optimizer(learning_rate=3e-4))
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
    new = _state(make_optimizer=lambda: optimizers.make_optimizer(learning_rate=1e-4))
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


@pytest.mark.slow
def test_learning_rate_factors_multiply_the_configured_rates():
    state = _state(make_optimizer=lambda: optimizers.make_optimizer(learning_rate=2e-4))
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
# - `keras_adam`: with 0.2's numerics (Adam's ε in Keras' place,
#   `make_optimizer.epsilon_after_correction = False`, and BN moving variances averaged from
#   biased batch variances, `Generator.bn_unbiased_moving_variance = False`), 0.2's own run
#   from ckpt-3 to step 6, bit for bit;
# - `default`: with today's defaults, the reference's forms (0.3), a run of this code resuming
#   the same checkpoint: the checkpoint resumes, and a later change of the numerics shows here.
RESUMES = {
    "keras_adam": (
        [
            "make_optimizer.epsilon_after_correction = False",
            "Generator.bn_unbiased_moving_variance = False",
        ],
        "step6_sha256_adam_keras",
    ),
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


@pytest.mark.slow
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
