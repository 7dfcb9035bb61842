"""Tests for tf_biggan.augment (DiffAugment)."""

import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import augment


def _images(batch=4, side=16, seed=0):
    return tf.constant(
        np.random.default_rng(seed).uniform(-1, 1, (batch, side, side, 3)).astype(np.float32)
    )


def test_empty_policy_is_identity_and_unknown_policy_raises():
    x = _images()
    np.testing.assert_array_equal(augment.diff_augment(x, policy="").numpy(), x.numpy())
    with pytest.raises(ValueError, match=r"unknown DiffAugment policy \['rotate'\]"):
        augment.diff_augment(x, policy="color,rotate")


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_gradient_flows_to_images(policy):
    x = _images()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment.diff_augment(x, policy=policy, seed=[1, 2])
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, x).numpy()
    assert np.abs(grad).sum() > 0
    if policy in ("translation", "cutout"):
        # Pure selection ops: the gradient is 2*x on the kept pixels and 0 elsewhere.
        kept = grad != 0
        np.testing.assert_allclose(grad[kept], 2 * x.numpy()[kept], rtol=1e-6)


def test_translation_shifts_the_pixel_set_with_zero_padding():
    side = 16
    x = tf.reshape(tf.range(1, 2 * side * side * 3 + 1, dtype=tf.float32), [2, side, side, 3])
    y = augment.diff_augment(x, policy="translation", seed=5).numpy()
    x = x.numpy()
    for xi, yi in zip(x, y, strict=True):
        # Find the shift: the output equals the input moved by (dy, dx), zero outside.
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = np.zeros_like(xi)
                src = xi[max(dy, 0) : side + min(dy, 0), max(dx, 0) : side + min(dx, 0)]
                want[max(-dy, 0) : side + min(-dy, 0), max(-dx, 0) : side + min(-dx, 0)] = src
                if np.array_equal(want, yi):
                    matches.append((dy, dx))
        assert len(matches) == 1, matches


def test_translation_draws_every_shift_up_to_one_eighth():
    x = tf.ones([400, 16, 16, 1])
    y = augment.diff_augment(x, policy="translation", seed=0).numpy()
    zero_rows = (y[:, :, :, 0].sum(2) == 0).sum(1)  # rows shifted out, per image
    assert set(zero_rows.tolist()) == {0, 1, 2}


def test_cutout_zeroes_a_clipped_half_size_square_at_the_expected_rate():
    side, batch = 16, 2000
    x = tf.ones([batch, side, side, 1])
    y = augment.diff_augment(x, policy="cutout", seed=3).numpy()[..., 0]
    size = side // 2
    for yi in y[:50]:
        zero_rows = np.nonzero((yi == 0).any(1))[0]
        zero_cols = np.nonzero((yi == 0).any(0))[0]
        # The zeroed set is exactly one axis-aligned rectangle of at most size x size.
        assert (yi == 0).sum() == len(zero_rows) * len(zero_cols)
        assert len(zero_rows) <= size and len(zero_cols) <= size
    # Closed form: offset o uniform in [0, side + 1 - size % 2) covers
    # |[o - size/2, o + size/2) ∩ [0, side)| rows; axes independent.
    offsets = np.arange(side + 1 - size % 2)
    covered = np.clip(offsets + size - size // 2, 0, side) - np.clip(offsets - size // 2, 0, side)
    expected = (covered.mean() / side) ** 2
    assert abs((y == 0).mean() - expected) < 0.01
    assert (y == 0).mean() > 0.15  # at least most of a quarter


def test_color_matches_closed_form_factors():
    x = _images(batch=3)
    y = augment.diff_augment(x, policy="color", seed=[4, 4]).numpy()
    x = x.numpy()
    # Colour is affine per image: y = a*x + B(mean terms); the per-pixel luminance
    # differences scale by saturation*contrast and chroma by both too; check the range of
    # the overall affine factor: y - mean(y) == s*c*(x - mean_c(x)) + c*(mean_c(x) - mean(x)).
    for xi, yi in zip(x, y, strict=True):
        grey = xi.mean(-1, keepdims=True)
        chroma_x = xi - grey
        chroma_y = yi - yi.mean(-1, keepdims=True)
        ratio = (chroma_y * chroma_x).sum() / (chroma_x * chroma_x).sum()
        np.testing.assert_allclose(chroma_y, ratio * chroma_x, atol=1e-4)
        assert 0.0 <= ratio < 3.0  # saturation [0, 2) x contrast [0.5, 1.5)


@pytest.mark.slow
def test_runs_under_xla_and_is_deterministic_with_seed():
    x = _images()
    fn = tf.function(lambda images, seed: augment.diff_augment(images, seed=seed), jit_compile=True)
    a = fn(x, tf.constant([7, 8], tf.int64)).numpy()
    b = augment.diff_augment(x, seed=tf.constant([7, 8], tf.int64)).numpy()
    c = fn(x, tf.constant([7, 9], tf.int64)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a, c)
    unseeded = tf.function(lambda images: augment.diff_augment(images), jit_compile=True)
    assert unseeded(x).shape == x.shape
