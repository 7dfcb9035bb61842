"""Reliability of training: exact resume after `kill -9`, SIGTERM, the non-finite guard,
the collapse watch, multi-worker training and the XLA-compiled step.

Subprocess tests run `python -m tf_biggan.train` on `gin_configs/tiny_test.gin` (32 px,
ch 8, 3 classes, batch 4) and compare checkpoints variable by variable with
`tf.train.load_checkpoint`, which covers G, D, EMA G, both optimizers' slots, the SN `u`
vectors, BN moving statistics, the step and the skipped-update counter.
"""

import dataclasses
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import data, gin_config, optimizers, train
from tf_biggan import recovery as recovery_lib
from tf_biggan import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "gin_configs", "tiny_test.gin")
PYTHON = sys.executable


# --------------------------------------------------------------------------- helpers


def _env(**extra):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _start(model_dir, bindings, env=None, log=None):
    command = [
        PYTHON,
        "-m",
        "tf_biggan.train",
        f"--gin_config={TINY}",
        f"--model_dir={model_dir}",
    ] + [f"--gin_bindings={b}" for b in bindings]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env or _env(),
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )


def _wait(process, timeout=300):
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def _checkpoint_values(prefix, skip=("iterator", "save_counter")):
    """Every saved variable of a checkpoint as numpy, keyed by its checkpoint name."""
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith(skip)
    }


def _assert_same_checkpoints(a, b):
    values_a, values_b = _checkpoint_values(a), _checkpoint_values(b)
    assert sorted(values_a) == sorted(values_b)
    differ = [k for k in values_a if not np.array_equal(values_a[k], values_b[k])]
    assert not differ, f"{len(differ)} of {len(values_a)} variables differ, e.g. {differ[:5]}"
    return values_a


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(model_dir)
    return None if latest is None else int(latest.rsplit("-", 1)[1])


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- kill -9 and resume


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path):
    """With op determinism, kill -9 + restart ends bit-identical to an uninterrupted run."""
    steps = 12
    bindings = [
        f"train.total_steps = {steps}",
        "train.checkpoint_every = 3",
        "train.deterministic = True",
    ]
    dir_a, dir_b = str(tmp_path / "a"), str(tmp_path / "b")
    run_a = _start(dir_a, bindings)
    run_b = _start(dir_b, bindings)
    deadline = time.time() + 240
    while _latest_step(dir_b) is None:
        assert run_b.poll() is None, "run B ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    # A random moment after the first checkpoint: between steps, inside a step, or inside a
    # checkpoint write.
    time.sleep(random.uniform(0.0, 0.6))
    assert run_b.poll() is None, "run B finished before it could be killed; raise total_steps"
    os.kill(run_b.pid, signal.SIGKILL)
    assert run_b.wait(timeout=30) == -signal.SIGKILL
    killed_at = _latest_step(dir_b)
    assert killed_at is not None and killed_at < steps
    assert _wait(_start(dir_b, bindings)) == 0
    assert _wait(run_a) == 0
    values = _assert_same_checkpoints(
        os.path.join(dir_a, f"ckpt-{steps}"), os.path.join(dir_b, f"ckpt-{steps}")
    )
    names = " ".join(values)
    # The comparison really covered the optimizers, SN state, BN statistics and counters.
    for part in ("g_optimizer", "d_optimizer", "ema_generator", "/u/", "moving_mean", "step"):
        assert part in names, part
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == steps


# --------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_0_and_the_restart_continues(tmp_path):
    model_dir = str(tmp_path / "run")
    bindings = ["train.total_steps = 100000", "train.checkpoint_every = 5"]
    run = _start(model_dir, bindings)
    deadline = time.time() + 240
    while _latest_step(model_dir) is None:
        assert run.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(random.uniform(0.1, 0.5))
    sent = time.time()
    run.send_signal(signal.SIGTERM)
    assert _wait(run, timeout=60) == 0
    assert time.time() - sent < 20
    stopped_at = _latest_step(model_dir)
    values = _checkpoint_values(tf.train.latest_checkpoint(model_dir))
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == stopped_at

    log_path = tmp_path / "restart.log"
    with open(log_path, "w") as log:
        restart = _start(
            model_dir,
            [f"train.total_steps = {stopped_at + 2}", "train.checkpoint_every = 1000"],
            log=log,
        )
        assert _wait(restart) == 0
    assert f"at step {stopped_at}" in log_path.read_text()
    assert _latest_step(model_dir) == stopped_at + 2


# --------------------------------------------------------------------------- non-finite guard


def _tiny_state(make_optimizer=lambda: optimizers.make_optimizer(learning_rate=1e-3)):
    keras.utils.set_random_seed(1)
    return tiny_models.train_state(make_optimizer, dim_z=16)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, size=(4, 32, 32, 3)).astype(np.float32)
    return images, tf.constant([0, 1, 2, 0])


@pytest.fixture
def tiny_gin():
    gin.clear_config()
    gin_config.parse_gin([TINY], finalize=False)
    yield
    gin.clear_config()


def _poison_batches(monkeypatch, is_bad):
    """Makes `train` read a data set whose batch `i` is all NaN when `is_bad(i)`."""
    make_dataset = data.make_dataset

    def poisoned(**kwargs):
        input_data = make_dataset(**kwargs)

        def poison(index, batch):
            images, labels = batch
            images = tf.where(is_bad(index), tf.fill(tf.shape(images), np.nan), images)
            return images, labels

        return dataclasses.replace(
            input_data, build=lambda: input_data.build().enumerate().map(poison)
        )

    monkeypatch.setattr(data, "make_dataset", poisoned)


@pytest.mark.slow
def test_repeated_nans_restore_the_last_checkpoint_with_a_lower_learning_rate(
    tmp_path, tiny_gin, monkeypatch, caplog
):
    # Batches 4-6 (steps 5-7) are bad: the checkpoint of step 6 is skipped, the third bad
    # step in a row restores ckpt-4, and the data goes on with batch 7 to the end.
    _poison_batches(monkeypatch, lambda i: (i >= 4) & (i <= 6))
    with caplog.at_level(logging.WARNING):
        result = train.train(
            str(tmp_path),
            total_steps=8,
            checkpoint_every=2,
            max_consecutive_nonfinite=3,
            max_restores=2,
            lr_decay_on_restore=0.5,
        )
    assert result["step"] == 8 and result["restores"] == 1
    assert "restored" in caplog.text and "ckpt-4" in caplog.text
    assert "checkpoint skipped after a non-finite step" in caplog.text
    values = _checkpoint_values(os.path.join(str(tmp_path), "ckpt-8"))
    for name, value in values.items():
        if value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    # The restore brought back the skipped counter of step 4 (0); no bad step followed.
    assert int(values["skipped_updates/.ATTRIBUTES/VARIABLE_VALUE"]) == 0
    lr = {k.split("/")[0]: float(v) for k, v in values.items() if "/_learning_rate/" in k}
    np.testing.assert_allclose(lr["g_optimizer"], 0.5 * 2e-4, rtol=1e-6)
    np.testing.assert_allclose(lr["d_optimizer"], 0.5 * 4e-4, rtol=1e-6)


@pytest.mark.slow
def test_endless_nans_give_up_after_max_restores(tmp_path, tiny_gin, monkeypatch, caplog):
    _poison_batches(monkeypatch, lambda i: i >= 2)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            FloatingPointError, match=r"2 consecutive non-finite steps .* after 2 restores"
        ),
    ):
        train.train(
            str(tmp_path),
            total_steps=50,
            checkpoint_every=2,
            max_consecutive_nonfinite=2,
            max_restores=2,
        )
    assert caplog.text.count("restored") == 2
    assert _latest_step(str(tmp_path)) == 2


# --------------------------------------------------------------------------- collapse watch


@pytest.mark.slow
def test_on_collapse_stop_ends_the_run_without_saving_the_collapsed_state(
    tmp_path, tiny_gin, caplog
):
    # A gap threshold below any possible gap makes the first summary (step 1) a collapse.
    with caplog.at_level(logging.WARNING):
        result = train.train(str(tmp_path), total_steps=6, collapse_gap=-1e9, on_collapse="stop")
    assert result["stopped_by_collapse"] and result["step"] == 1
    assert "collapse watch: step 1" in caplog.text
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    with pytest.raises(ValueError, match="on_collapse"):
        train.train(str(tmp_path), on_collapse="panic")


@pytest.mark.slow
def test_on_collapse_restore_goes_back_to_the_last_checkpoint_and_lowers_the_rates(
    tmp_path, tiny_gin, caplog
):
    # A gap threshold below any gap makes every summary (each 3 steps) a collapse. Step 3
    # restores ckpt-2 and halves both rates; the run then reaches step 3 again and, with no
    # restore left, stops there.
    with caplog.at_level(logging.WARNING):
        result = train.train(
            str(tmp_path),
            total_steps=12,
            summary_every=3,
            checkpoint_every=2,
            collapse_gap=-1e9,
            on_collapse="restore",
            max_restores=1,
            lr_decay_on_restore=0.5,
        )
    assert result["restores"] == 1 and result["stopped_by_collapse"] and result["step"] == 3
    assert "step 3: collapse; restored" in caplog.text and "ckpt-2 (step 2)" in caplog.text
    # Nothing was saved after the restore (ckpt-2 is the last); its rates are the old ones.
    assert _latest_step(str(tmp_path)) == 2


@pytest.mark.slow
def test_max_minutes_saves_and_stops_after_the_step_that_passes_the_budget(
    tmp_path, tiny_gin, caplog
):
    with caplog.at_level(logging.INFO, logger="absl"):
        result = train.train(str(tmp_path), total_steps=10, max_minutes=0.0)
    # A budget of 0 is passed by the first step: it is saved and the run stops there.
    assert result["step"] == 1 and _latest_step(str(tmp_path)) == 1
    assert "stopping at step 1 (max_minutes reached)" in caplog.text
    assert not os.path.exists(tmp_path / "export")
    # A restart with a budget that lasts finishes the run from there.
    result = train.train(str(tmp_path), total_steps=3, max_minutes=60.0)
    assert result["start_step"] == 1 and result["step"] == 3


@pytest.mark.slow
def test_a_failing_save_keeps_the_earlier_checkpoints_retries_and_names_the_last_good(
    tmp_path, monkeypatch, caplog
):
    # The run's own saving (`Run.save`, as the loop calls it), with the retries bound in gin.
    gin.clear_config()
    retries = ["train.save_retries = 2", "train.save_retry_seconds = 0.01"]
    gin_config.parse_gin([TINY], retries, finalize=False)
    config, network_settings = train.TrainConfig.from_settings(train.train_settings())
    model_dir = str(tmp_path)
    run = train.Run(model_dir, config, network_settings)
    run.state.step.assign(2)
    run.save(2)
    last_good = os.path.join(model_dir, "ckpt-2")

    # Then the disk is "full": the writer leaves a truncated file of the new checkpoint and
    # raises, as TensorFlow's writer does on ENOSPC.
    write = tf.train.Checkpoint._write

    def full_disk(self, file_prefix, *args, **kwargs):
        with open(file_prefix + ".index", "wb") as f:
            f.write(b"\x00" * 7)
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", full_disk)
    run.state.step.assign(4)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            recovery_lib.CheckpointSaveError,
            match=r"step 4 after 2 retries \(ResourceExhaustedError: No space left on device\)"
            rf"; the last good checkpoint is {re.escape(last_good)},",
        ),
    ):
        run.save(4)
    gin.clear_config()
    assert "saving the checkpoint of step 4 failed" in caplog.text
    assert "retry 1 of 2 in 0.01 s" in caplog.text and "retry 2 of 2 in 0.02 s" in caplog.text
    # The earlier checkpoint is still the listed one, whole and loadable.
    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
    assert tf.train.latest_checkpoint(model_dir) == last_good
    run.state.restore(last_good)
    assert int(run.state.step.numpy()) == 2
    assert int(_checkpoint_values(last_good)["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 2


def _d_updates(model_dir, before, after):
    """D's trainable weights and Adam second moments, before and after one step."""
    read = {
        step: tf.train.load_checkpoint(os.path.join(model_dir, f"ckpt-{step}"))
        for step in (before, after)
    }
    out = []
    for name, shape in tf.train.list_variables(os.path.join(model_dir, f"ckpt-{after}")):
        prefix = "d_optimizer/_trainable_variables/"
        if not name.startswith(prefix):
            continue
        index = int(name[len(prefix) :].split("/")[0])
        # LeanAdam's variables: iterations, learning rate, then one velocity per weight.
        slot = f"d_optimizer/_variables/{index + 2}/.ATTRIBUTES/VARIABLE_VALUE"
        assert list(read[after].get_tensor(slot).shape) == shape
        out.append(
            {
                "w0": read[before].get_tensor(name).astype(np.float64),
                "w1": read[after].get_tensor(name).astype(np.float64),
                "v0": read[before].get_tensor(slot).astype(np.float64),
                "v1": read[after].get_tensor(slot).astype(np.float64),
            }
        )
    return out


@pytest.mark.slow
def test_a_resumed_run_uses_the_configured_learning_rate_beta_2_and_epsilon(
    tmp_path, tiny_gin, caplog
):
    """The config wins over the checkpoint, and the change is logged.

    From the same checkpoint (step 2, deterministic, so every resumed run sees the same
    batch, z and gradient g), one more step with LeanAdam (β1 = 0):
    `v' = β2 v + (1 − β2) g²` and `w' = w − lr g / (√v' / √(1 − β2³) + ε)` (ε after the
    bias correction, as PyTorch's Adam).
    """
    base = str(tmp_path / "base")
    train.train(base, total_steps=2, deterministic=True)
    runs = {
        "same": [],
        "double_lr": [
            ("generator/make_optimizer.learning_rate", 4e-4),
            ("discriminator/make_optimizer.learning_rate", 8e-4),
        ],
        "adam": [
            ("discriminator/make_optimizer.beta_2", 0.99),
            ("discriminator/make_optimizer.epsilon", 1e-3),
        ],
    }
    updates = {}
    for name, bindings in runs.items():
        model_dir = str(tmp_path / name)
        shutil.copytree(base, model_dir)
        gin.clear_config()
        gin_config.parse_gin([TINY], [f"{key} = {value}" for key, value in bindings], False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="absl"):
            train.train(model_dir, total_steps=3, deterministic=True)
        if name == "double_lr":
            assert "generator learning rate 0.0002 → 0.0004 from the config" in caplog.text
            assert "discriminator learning rate 0.0004 → 0.0008 from the config" in caplog.text
        if name == "same":
            assert "learning rate" not in caplog.text
        updates[name] = _d_updates(model_dir, 2, 3)

    lr, t = 4e-4, 3
    checked = 0
    for same, double, adam in zip(
        updates["same"], updates["double_lr"], updates["adam"], strict=True
    ):
        np.testing.assert_array_equal(same["w0"], adam["w0"])
        step_same = same["w1"] - same["w0"]
        # Twice the rate, twice the update: the same g and v. (atol: float32 rounding of
        # weights of magnitude ~1; the updates are ~1e-4.)
        np.testing.assert_allclose(double["w1"] - double["w0"], 2 * step_same, rtol=1e-4, atol=1e-7)
        # g² from the unchanged run's second moment, then the new β2 and ε in closed form,
        # where g² is known to float32 precision: v1 − 0.999 v0 cancels where g² ≪ v0.
        g_squared = (same["v1"] - 0.999 * same["v0"]) / 0.001
        known = g_squared > 0.01 * same["v0"]
        np.testing.assert_allclose(
            adam["v1"][known], 0.99 * adam["v0"][known] + 0.01 * g_squared[known], rtol=1e-3
        )
        g = np.sign(-step_same[known]) * np.sqrt(g_squared[known])
        expected = -lr * g / (np.sqrt(adam["v1"][known]) / np.sqrt(1 - 0.99**t) + 1e-3)
        np.testing.assert_allclose((adam["w1"] - adam["w0"])[known], expected, rtol=2e-3, atol=1e-7)
        checked += int(np.sum(np.abs(expected) > 1e-6))
    assert checked >= 100


@pytest.mark.slow
def test_a_learning_rate_decay_of_a_restore_survives_kill_9_and_restart(
    tmp_path, tiny_gin, monkeypatch
):
    # In process: the 5th-7th calls of the step get NaN images (the data pipeline stays the
    # plain one, so its checkpointed position restores in a fresh process); the third bad
    # step restores ckpt-4 and halves the rates, and ckpt-8 is written after it.
    make_train_step = step_lib.make_train_step
    calls = []

    def poisoned(state, strategy, config):
        step = make_train_step(state, strategy, config)

        def run(images, labels):
            calls.append(None)
            if 5 <= len(calls) <= 7:
                images = tf.fill(tf.shape(images), np.nan)
            return step(images, labels)

        return run

    monkeypatch.setattr(step_lib, "make_train_step", poisoned)
    model_dir = str(tmp_path)
    train.train(
        model_dir,
        total_steps=8,
        checkpoint_every=2,
        max_consecutive_nonfinite=3,
        lr_decay_on_restore=0.5,
    )
    gin.clear_config()
    # As a user would: the same command again, killed with -9 after a checkpoint, then again.
    run = _start(model_dir, ["train.total_steps = 100000", "train.checkpoint_every = 2"])
    deadline = time.time() + 240
    while (_latest_step(model_dir) or 0) < 10:
        assert run.poll() is None, "the resumed run ended early"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    killed_at = _latest_step(model_dir)
    assert _wait(_start(model_dir, [f"train.total_steps = {killed_at + 2}"])) == 0
    values = _checkpoint_values(os.path.join(model_dir, f"ckpt-{killed_at + 2}"))
    np.testing.assert_array_equal(
        values["learning_rate_factors/.ATTRIBUTES/VARIABLE_VALUE"], [0.5, 0.5]
    )
    lr = {k.split("/")[0]: float(v) for k, v in values.items() if "_learning_rate" in k}
    np.testing.assert_allclose(lr["g_optimizer"], 0.5 * 2e-4, rtol=1e-6)
    np.testing.assert_allclose(lr["d_optimizer"], 0.5 * 4e-4, rtol=1e-6)


# --------------------------------------------------------------------------- multi-worker


# The training CLI with Grappler off, as in conftest.py: tracing the step with it takes most
# of a worker's time on a busy CPU, and it changes only how TensorFlow schedules the graph.
_CLI_WITHOUT_GRAPPLER = """
import tensorflow as tf
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
from absl import app
from tf_biggan import train
train.define_flags()
app.run(train.main)
"""


class _Job:
    """Two `MultiWorkerMirroredStrategy` workers of `tiny_test.gin` on localhost ports."""

    def __init__(self, model_dir, logs_dir, name):
        self.model_dir, self.logs_dir, self.name = model_dir, logs_dir, name
        self.cluster = {"worker": [f"localhost:{_free_port()}" for _ in range(2)]}
        self.workers, self.logs = [], []

    def start(self, bindings, per_worker=((), ())):
        for index in range(2):
            task = {"cluster": self.cluster, "task": {"type": "worker", "index": index}}
            log = open(self.log_path(index), "w")
            command = [PYTHON, "-c", _CLI_WITHOUT_GRAPPLER, f"--gin_config={TINY}"]
            command += [
                f"--model_dir={self.model_dir}",
                '--gin_bindings=train.strategy = "multi_worker"',
            ]
            command += [f"--gin_bindings={b}" for b in [*bindings, *per_worker[index]]]
            env = _env(TF_CONFIG=json.dumps(task))
            self.logs.append(log)
            self.workers.append(
                subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        return self

    def log_path(self, index):
        return os.path.join(self.logs_dir, f"{self.name}_worker{index}.log")

    def log(self, index):
        with open(self.log_path(index)) as f:
            return f.read()

    def wait(self, timeout=400):
        """Waits for both workers to exit, `timeout` seconds in all; asserts both exit 0."""
        deadline = time.time() + timeout
        try:
            codes = [_wait(w, max(deadline - time.time(), 0.1)) for w in self.workers]
        finally:
            self.close()
        assert codes == [0, 0], f"exit codes {codes}: {self.log(1)[-3000:]}"

    def close(self):
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in self.logs:
            log.close()


def _wait_for(condition, job, what, timeout=400):
    deadline = time.time() + timeout
    while not condition():
        assert all(w.poll() is None for w in job.workers), f"a worker ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_workers_stop_together_on_sigterm_max_minutes_and_a_lost_worker(tmp_path):
    """Every stop of a two-worker job is one decision; the restarts repeat a run bit for bit.

    A reference job trains `steps` steps uninterrupted. A second job on the same config:
    1. SIGTERM to worker 1 only, at a random moment after its first checkpoint: both
       workers save the same step S and exit 0;
    2. restarted with budgets that run out at different steps (worker 0, the chief: 0
       minutes, so after one step; worker 1: an hour): both stop at S + 1;
    3. restarted, worker 1 killed with -9 while training: worker 0 stops with
       WorkerLostError (the coordination service's heartbeat check), not the test's
       timeout, and names the checkpoint to resume from;
    4. restarted: both resume from S + 1 and end bit-identical to the reference.
    """
    steps = 16
    bindings = [
        f"train.total_steps = {steps}",
        "train.deterministic = True",
        "train.checkpoint_every = 2",
        "train.summary_every = 1000",
    ]
    logs = str(tmp_path)
    reference_dir, model_dir = str(tmp_path / "reference"), str(tmp_path / "run")
    worker_copy = os.path.join(model_dir, "workertemp_worker_1")
    reference = _Job(reference_dir, logs, "reference").start(bindings)
    job = _Job(model_dir, logs, "sigterm").start(bindings)
    try:
        # 1. SIGTERM to worker 1 at a random (seeded) moment after the first checkpoint.
        _wait_for(lambda: _latest_step(model_dir) is not None, job, "first checkpoint")
        time.sleep(random.Random(19).uniform(0.0, 0.5))
        assert all(w.poll() is None for w in job.workers), "raise total_steps"
        job.workers[1].send_signal(signal.SIGTERM)
        sent = time.time()
        job.wait(timeout=60)  # both workers saved and exited 0 within 60 s of the signal
        print(f"SIGTERM: both workers exited {time.time() - sent:.1f} s after the signal")
    finally:
        job.close()
    stopped = _latest_step(model_dir)
    assert _latest_step(worker_copy) == stopped < steps
    for index in range(2):
        assert f"stopping at step {stopped} (signal)" in job.log(index)

    # 2. The chief's budget runs out after one step, worker 1's would not for an hour.
    job = _Job(model_dir, logs, "max_minutes")
    job.start(bindings, per_worker=(["train.max_minutes = 0.0"], ["train.max_minutes = 60.0"]))
    job.wait(timeout=400)
    assert _latest_step(model_dir) == _latest_step(worker_copy) == stopped + 1
    for index in range(2):
        assert f"stopping at step {stopped + 1} (max_minutes reached)" in job.log(index)

    # 3. kill -9 of worker 1 once this run has trained a step (the chief writes
    # operative_config.gin after its first step); no checkpoint is due before the end.
    operative = os.path.join(model_dir, "operative_config.gin")
    written = os.path.getmtime(operative)
    job = _Job(model_dir, logs, "kill9").start([*bindings, "train.checkpoint_every = 1000"])
    try:
        _wait_for(lambda: os.path.getmtime(operative) > written, job, "a trained step")
        os.kill(job.workers[1].pid, signal.SIGKILL)
        killed = time.time()
        # Bounded: the coordination service's heartbeat check stops worker 0 (about 20 s
        # measured); a hang would end in this wait's TimeoutExpired, not in an exit code.
        code = _wait(job.workers[0], timeout=120)
        print(f"kill -9: worker 0 exited {time.time() - killed:.1f} s after the kill")
    finally:
        job.close()
    log = job.log(0)
    assert code != 0, log[-3000:]
    assert "WorkerLostError: worker 0 of 2 stops: another worker of the job died" in log
    assert f"they resume from {os.path.join(model_dir, f'ckpt-{stopped + 1}')}" in log

    # 4. The restart resumes at S + 1 and ends where the uninterrupted run ends.
    job = _Job(model_dir, logs, "resume").start(bindings)
    job.wait(timeout=400)
    assert f"ckpt-{stopped + 1} at step {stopped + 1}" in job.log(0)
    reference.wait(timeout=400)
    values = _assert_same_checkpoints(
        os.path.join(reference_dir, f"ckpt-{steps}"), os.path.join(model_dir, f"ckpt-{steps}")
    )
    assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == steps
    # Both workers of the reference hold the same weights too.
    _assert_same_checkpoints(
        os.path.join(reference_dir, f"ckpt-{steps}"),
        os.path.join(reference_dir, "workertemp_worker_1", f"ckpt-{steps}"),
    )


# --------------------------------------------------------------------------- XLA


@pytest.mark.slow
def test_the_step_compiles_with_xla_and_matches_the_plain_step():
    results = {}
    for jit in (False, True):
        # SGD: its update is linear in the gradient, so close gradients give close weights
        # (Adam's first step is about lr * sign(g), which flips on tiny differences).
        state = _tiny_state(lambda: keras.optimizers.SGD(learning_rate=0.01))
        config = step_lib.StepConfig(4, ema_start_step=0, ema_decay=0.5, jit_compile=jit)
        step = step_lib.make_train_step(state, tf.distribute.get_strategy(), config)
        images, labels = _batch()
        metrics = {k: float(v) for k, v in step(tf.constant(images), labels).items()}
        results[jit] = (
            metrics,
            [
                v.numpy()
                for model in (state.generator, state.discriminator, state.ema_generator)
                for v in model.variables
            ],
        )
    (plain, plain_weights), (xla, xla_weights) = results[False], results[True]
    for name in ("loss/d", "loss/g", "d/real", "d/fake"):
        np.testing.assert_allclose(xla[name], plain[name], rtol=1e-3, atol=1e-3, err_msg=name)
    for a, b in zip(plain_weights, xla_weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
