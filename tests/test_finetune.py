"""Tests for tf_biggan.finetune: a new run initialised from another run's checkpoint."""

import numpy as np
import pytest
import tensorflow as tf
from test_state import _all_variables, _randomize, _state

from tf_biggan import finetune, model_files


@pytest.mark.slow
def test_initialize_from_other_classes_loads_all_but_the_embeddings(tmp_path):
    source = _state(num_classes=3)
    _randomize(source, seed=5)
    model_dir = str(tmp_path)
    model_files.write_model_config(model_dir, source.generator)
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
    finetune.initialize_from(target, model_dir)

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
