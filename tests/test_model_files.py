"""Tests for tf_biggan.model_files: the EMA generator restored from a model_dir gives the saved
outputs; a missing checkpoint names the folder. (find_checkpoint: tests/test_paths.py and
tests/test_sample.py; standing statistics: tests/test_standing_stats.py.)"""

import numpy as np
import pytest
import tensorflow as tf
from test_state import _inputs, _state

from tf_biggan import model_files


@pytest.mark.slow
def test_restore_ema_generator_gives_the_saved_outputs(tmp_path):
    state = _state()
    # An EMA different from G, so restoring G by mistake would show.
    for v in state.ema_generator.trainable_variables:
        v.assign(v + 0.05 * tf.random.stateless_normal(v.shape, [3, 4]))
    model_dir = str(tmp_path)
    model_files.write_model_config(model_dir, state.generator, ["a", "b", "c"])
    state.step.assign(17)
    manager = tf.train.CheckpointManager(state.checkpoint(), model_dir, max_to_keep=1)
    manager.save(checkpoint_number=17)

    generator, config, path = model_files.restore_ema_generator(model_dir)
    assert config["step"] == 17 and config["class_names"] == ["a", "b", "c"]
    assert path.endswith("ckpt-17")
    z, y = _inputs()
    expected = state.ema_generator(z, y, training=False).numpy()
    np.testing.assert_allclose(generator(z, y, training=False).numpy(), expected, atol=1e-6)
    assert np.max(np.abs(state.generator(z, y, training=False).numpy() - expected)) > 1e-3


def test_restore_ema_generator_without_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        model_files.restore_ema_generator(str(tmp_path))
