"""Standing statistics: each table entry is the average batch mean / variance of the BN
inputs over the batches drawn for its truncation, and the stored table is used."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import layers, model_files, networks, standing_stats

DIM_Z = 32
CLASSES = 3


def _generator(name="ema_generator"):
    generator = tiny_models.generator(CLASSES, DIM_Z, name)
    generator.build_by_call()
    rng = np.random.default_rng(0)
    for variable in generator.trainable_variables:
        variable.assign(variable + 0.2 * rng.standard_normal(variable.shape).astype(np.float32))
    return generator


def test_entries_are_the_average_moments_of_the_first_bn_inputs():
    generator = _generator()
    u_before = generator.linear.u.numpy().copy()
    moving_before = generator.output_bn.moving_mean.numpy().copy()
    tables = standing_stats.accumulate_table(
        generator, num_entries=3, num_batches=3, batch_size=4, seed=1, verbose=0
    )
    norms = layers.batch_norm_layers(generator)
    assert len(tables) == len(norms) and tables[0][0].shape == (3, norms[0].moving_mean.shape[0])
    first = [id(bn) for bn in norms].index(id(generator.blocks[0].bn1.batch_norm))
    # The first BN's input is the linear layer's output on the first z chunk, as [4, 4, C].
    kernel = generator.linear.kernel.numpy().astype(np.float64)
    kernel /= np.linalg.svd(kernel, compute_uv=False)[0]
    bias = generator.linear.bias.numpy()
    chunk = generator.z_chunk_size
    for entry, truncation in enumerate((0.0, 0.5, 1.0)):
        means, variances = [], []
        for batch in range(3):
            seed = standing_stats.batch_seed(1, entry, batch)
            z, _ = standing_stats.standing_batch(generator, truncation, seed, 4)
            if truncation == 0.0:
                assert not z.any()
            else:
                assert np.abs(z).max() <= truncation
            h = (z[:, :chunk] @ kernel + bias).reshape(4, 4, 4, -1)
            means.append(h.mean(axis=(0, 1, 2)))
            variances.append(h.var(axis=(0, 1, 2)))
        np.testing.assert_allclose(tables[first][0][entry], np.mean(means, 0), atol=1e-4)
        np.testing.assert_allclose(tables[first][1][entry], np.mean(variances, 0), rtol=1e-3)
    # Inference-mode SN and moving statistics: nothing but the exact sigma is written.
    np.testing.assert_array_equal(generator.output_bn.moving_mean.numpy(), moving_before)
    assert not np.array_equal(generator.linear.u.numpy(), u_before)  # refined exactly


@pytest.mark.slow
def test_cli_table_reproduces_training_mode_bn_for_its_batch(tmp_path):
    generator = _generator()
    model_dir = str(tmp_path / "run")
    model_files.write_model_config(model_dir, generator, ["a", "b", "c"])
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 2).save(checkpoint_number=3)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    completed = subprocess.run(
        [
            sys.executable,
            "tools/standing_stats.py",
            f"--model_dir={model_dir}",
            "--num_entries=3",
            "--num_batches=1",
            "--batch_size=4",
            "--seed=5",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    assert completed.stdout.strip().endswith(model_files.STANDING_STATS_FILE)
    restored, _, _ = model_files.restore_ema_generator(model_dir)
    assert restored.num_standing_stats == 3
    layers.refine_spectral_norms(restored, exact=True)
    for entry, truncation in enumerate((0.5, 1.0), start=1):
        z, y = standing_stats.standing_batch(
            restored, truncation, standing_stats.batch_seed(5, entry, 0), 4
        )
        with_table = restored(z, y, training=False, truncation=truncation).numpy()
        batch_mode = restored(z, y, training=True).numpy()
        np.testing.assert_allclose(with_table, batch_mode, atol=2e-4)
    # A later checkpoint does not get the table computed for an earlier one.
    tf.train.CheckpointManager(checkpoint, model_dir, 2).save(checkpoint_number=4)
    later, _, _ = model_files.restore_ema_generator(model_dir)
    assert later.num_standing_stats == 0
    assert isinstance(later, networks.Generator)
