"""Tests for tf_biggan.recovery: resuming from the newest readable checkpoint, the settings'
checks. The guard's restores during a run are in test_reliability.py."""

import glob
import logging
import os

import keras
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import optimizers, recovery
from tf_biggan import state as state_lib


def _restorer(checkpoint):
    return lambda path: checkpoint.restore(path).assert_existing_objects_matched()


def _tiny_state(make_optimizer=lambda: optimizers.make_optimizer(learning_rate=1e-3)):
    keras.utils.set_random_seed(1)
    return tiny_models.train_state(make_optimizer, dim_z=16)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    """A truncated newest checkpoint is skipped with a warning; the previous one restores."""
    value = tf.Variable(0.0)
    checkpoint = tf.train.Checkpoint(value=value)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    for number in (1, 2):
        value.assign(float(number))
        manager.save(checkpoint_number=number)
    (data_file,) = glob.glob(str(tmp_path / "ckpt-2.data-*"))
    with open(data_file, "r+b") as f:
        f.truncate(1)
    value.assign(-1.0)
    fresh = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    with caplog.at_level(logging.WARNING):
        restored = recovery.restore_latest(_restorer(checkpoint), fresh)
    assert restored == str(tmp_path / "ckpt-1")
    assert float(value) == 1.0
    assert "ckpt-2" in caplog.text and "cannot be read" in caplog.text

    os.remove(str(tmp_path / "ckpt-1.index"))
    with pytest.raises(RuntimeError, match="none of the checkpoints"):
        recovery.restore_latest(_restorer(checkpoint), fresh)


@pytest.mark.slow
def test_a_checkpoint_of_other_optimizer_settings_stops_the_resume(tmp_path):
    """Not damage: no fallback to an older checkpoint, and the error says what to do."""
    old = _tiny_state(lambda: keras.optimizers.Adam(learning_rate=1e-3, beta_1=0.0))
    manager = tf.train.CheckpointManager(old.checkpoint(), str(tmp_path), max_to_keep=3)
    manager.save(checkpoint_number=1)
    manager.save(checkpoint_number=2)
    new = _tiny_state()
    checkpoint = new.checkpoint()
    fresh = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    with pytest.raises(state_lib.IncompatibleCheckpointError, match="ckpt-2: g_optimizer"):
        recovery.restore_latest(
            new.restore, fresh, validate=lambda path: state_lib.check_optimizer_slots(new, path)
        )


def test_an_empty_directory_restores_nothing(tmp_path):
    checkpoint = tf.train.Checkpoint(value=tf.Variable(3.0))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=1)
    assert recovery.restore_latest(_restorer(checkpoint), manager) is None


def test_an_index_file_without_timestamps_still_resumes(tmp_path):
    """`CheckpointManager.checkpoints` is empty for an index file written without
    timestamps (by hand, or by other tools); the newest checkpoint is restored anyway."""
    value = tf.Variable(0.0)
    checkpoint = tf.train.Checkpoint(value=value)
    value.assign(7.0)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
    )
    value.assign(0.0)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    assert manager.checkpoints == []
    assert recovery.restore_latest(_restorer(checkpoint), manager) == path
    assert float(value) == 7.0


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"on_collapse": "panic"}, "on_collapse must be one of"),
        ({"lr_decay_on_restore": 0.0}, "lr_decay_on_restore must be > 0"),
        ({"max_consecutive_nonfinite": 0}, "max_consecutive_nonfinite must be >= 1"),
    ],
)
def test_recovery_settings_are_checked(setting, message):
    with pytest.raises(ValueError, match=message):
        recovery.RecoveryConfig(**setting)


def test_save_settings_are_checked():
    with pytest.raises(ValueError, match="save_retries and save_retry_seconds must be >= 0"):
        recovery.RecoveryConfig(save_retries=-1)


def _failing_writes(failures):
    """A `save()` that raises `failures` times (a full disk), then writes."""
    calls = []

    def save():
        calls.append(None)
        if len(calls) <= failures:
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device\nmore")

    return save, calls


def test_a_failed_save_is_retried_with_a_log_line_and_then_succeeds(caplog):
    save, calls = _failing_writes(2)
    answers = []

    def agree(*flags):  # one worker: the flags as they are, recorded
        answers.append(flags)
        return flags

    config = recovery.RecoveryConfig(save_retries=2, save_retry_seconds=0.0)
    with caplog.at_level(logging.WARNING):
        recovery.save_checkpoint(save, 7, config, agree, last_good=lambda: "d/ckpt-5")
    assert len(calls) == 3 and answers == [(True,), (True,), (False,)]
    assert caplog.text.count("saving the checkpoint of step 7 failed") == 2
    assert "(ResourceExhaustedError: No space left on device); retry 1 of 2 in 0 s" in caplog.text


def test_a_save_failing_on_another_worker_is_retried_here_too():
    save, calls = _failing_writes(0)
    others_fail = iter([True, False])  # the job's answer: another worker failed once
    config = recovery.RecoveryConfig(save_retries=1, save_retry_seconds=0.0)
    recovery.save_checkpoint(save, 3, config, lambda flag: (next(others_fail),), lambda: None)
    assert len(calls) == 2


def test_a_save_that_keeps_failing_names_the_last_good_checkpoint():
    save, calls = _failing_writes(10)
    config = recovery.RecoveryConfig(save_retries=1, save_retry_seconds=0.0)
    with pytest.raises(
        recovery.CheckpointSaveError,
        match=r"step 9 after 1 retries \(ResourceExhaustedError: No space left on device\); "
        r"the last good checkpoint is d/ckpt-8",
    ):
        recovery.save_checkpoint(save, 9, config, lambda f: (f,), lambda: "d/ckpt-8")
    assert len(calls) == 2


@pytest.mark.parametrize("first", ["SIGTERM", "SIGINT"])
def test_a_signal_is_a_flag_and_a_ctrl_c_after_it_stops_at_once(first):
    import signal

    first = getattr(signal, first)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with recovery.StopRequest() as stop:
            assert stop.signal is None
            os.kill(os.getpid(), first)  # handled before the next line runs
            assert stop.signal == first
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second request did not stop at once")
    assert signal.getsignal(signal.SIGINT) is before
