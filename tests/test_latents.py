"""Tests for tf_biggan.latents: z from integer bits against scipy's inverse normal CDF, the
drawn batch's moments and classes, and the checks of given latents. (The step with given
latents: tests/test_step.py.)"""

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tf_biggan import latents


def test_latents_are_finite_normal_quantiles_of_their_bits():
    # The uniform is (bits + 0.5) / 2^24 as float32 rounds it (from 2^23 up, + 0.5 rounds
    # to an even integer); the top code rounds to 1, where the inverse CDF is +inf, and is
    # capped just below 1.
    bits = np.array([0, 1, 1 << 22, (1 << 23) - 1, 1 << 23, (1 << 24) - 3, (1 << 24) - 1])
    z = latents.normal_from_bits(tf.constant(bits, tf.int32)).numpy()
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 5.5
    uniform = (bits.astype(np.float32) + np.float32(0.5)).astype(np.float64) / (1 << 24)
    assert uniform[-1] == 1.0
    uniform[-1] = 1 - 2.0**-24
    np.testing.assert_allclose(z, scipy.special.ndtri(uniform), rtol=1e-5, atol=2e-5)
    assert z[-1] > z[-2] > 5.1 and z[0] < -5.4
    # draw_latents uses it: a batch's z has the moments of a standard normal.
    drawn, labels = latents.draw_latents(3, 5, 0, 512, 64, 10)
    assert abs(float(tf.reduce_mean(drawn))) < 0.01
    assert abs(float(tf.math.reduce_std(drawn)) - 1.0) < 0.01
    assert sorted(set(labels.numpy().tolist())) == list(range(10))


def test_draws_depend_on_seed_step_and_update_only():
    """The same (seed, step, update) gives the same draw in any order; changing any of them
    changes it."""
    first = [latents.draw_latents(7, 3, 1, 8, 4, 5)[i].numpy() for i in (0, 1)]
    again = [latents.draw_latents(7, 3, 1, 8, 4, 5)[i].numpy() for i in (0, 1)]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    for other in ((8, 3, 1), (7, 4, 1), (7, 3, 0)):
        z, _ = latents.draw_latents(*other, 8, 4, 5)
        assert not np.array_equal(z.numpy(), first[0]), other


def test_check_latents_names_the_shapes_a_step_needs():
    z, labels = tf.zeros([3, 4, 6]), tf.zeros([3, 4], tf.int64)
    checked = latents.check_latents(latents.Latents(z, labels), 3, 4, 6, 10)
    assert checked.labels.dtype == tf.int32 and checked.z.shape == (3, 4, 6)
    with pytest.raises(ValueError, match=r"z \[3, 4, 6\] and labels \[3, 4\]"):
        latents.check_latents(latents.Latents(z[:2], labels[:2]), 3, 4, 6, 10)
    with pytest.raises(ValueError, match="integers"):
        latents.check_latents(latents.Latents(z, tf.zeros([3, 4])), 3, 4, 6, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="< num_classes"):
        latents.check_latents(latents.Latents(z, tf.fill([3, 4], 10)), 3, 4, 6, 10)
