"""Tests for tf_biggan.recovery: resuming from the newest readable checkpoint, the settings'
checks. The guard's restores during a run are in test_reliability.py."""

import glob
import logging
import os

import keras
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import recovery
from tf_biggan import state as state_lib


def _restorer(checkpoint):
    return lambda path: checkpoint.restore(path).assert_existing_objects_matched()


def _tiny_state(make_optimizer=lambda: state_lib.make_optimizer(learning_rate=1e-3)):
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
