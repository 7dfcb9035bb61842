"""Tests for tf_biggan.summaries: the sample grid and the periodic evaluation's settings
(the evaluation during a run is in test_train.py)."""

import numpy as np
import pytest
import tiny_models

from tf_biggan import summaries

CLASSES = 3
DIM_Z = 32


@pytest.mark.slow
def test_sample_grid_in_small_batches_equals_one_call():
    generator = tiny_models.generator(num_classes=CLASSES, dim_z=DIM_Z)
    generator.build_by_call()
    labels = np.repeat(np.arange(CLASSES), 4).astype(np.int32)
    z = np.random.default_rng(0).normal(size=(len(labels), DIM_Z)).astype(np.float32)
    whole = summaries.sample_grid(generator, z, labels, batch_size=len(labels))
    chunked = summaries.sample_grid(generator, z, labels, batch_size=5)
    # 2 px of padding around 32 px images: rows x 34 + 2 by cols x 34 + 2.
    assert whole.shape == (CLASSES * 34 + 2, 4 * 34 + 2, 3)
    np.testing.assert_allclose(chunked.astype(int), whole.astype(int), atol=1)
    assert len(np.unique(whole)) > 10


def test_sample_grids_hold_samples_per_class_of_the_first_classes_at_fixed_z():
    grids = summaries.SampleGrids(
        dim_z=DIM_Z, num_classes=12, samples_per_class=3, max_classes=10, seed=5
    )
    np.testing.assert_array_equal(grids.labels, np.repeat(np.arange(10), 3))
    again = summaries.SampleGrids(DIM_Z, 12, 3, 10, seed=5)
    np.testing.assert_array_equal(grids.z, again.z)
    assert grids.z.shape == (30, DIM_Z)


def test_evaluation_settings_are_checked():
    with pytest.raises(ValueError, match="needs eval_reference_stats"):
        summaries.EvalConfig(every=100)
    with pytest.raises(ValueError, match="must be >= 0"):
        summaries.EvalConfig(every=-1)
    assert summaries.EvalConfig().every == 0
