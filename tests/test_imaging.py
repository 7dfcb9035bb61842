"""Tests for tf_biggan.imaging: truncation against scipy, pixel mappings, grids, PNG I/O."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_biggan import imaging

# ~20000 samples per distribution check, as in the KS tests below.
_B, _DIM_Z = 160, 125


@pytest.mark.parametrize("truncation", [0.02, 0.5, 1.0, 2.5])
def test_truncated_z_matches_scipy_truncnorm(truncation):
    z = imaging.truncated_z(_B, _DIM_Z, truncation, seed=7)
    assert z.shape == (_B, _DIM_Z) and z.dtype == np.float32
    assert np.all(np.abs(z) <= np.float32(truncation))
    samples = z.astype(np.float64).ravel()
    dist = stats.truncnorm(-truncation, truncation)
    assert stats.kstest(samples, dist.cdf).pvalue > 0.01
    n = samples.size
    mean_se = np.sqrt(dist.var() / n)
    var_se = np.sqrt((dist.moment(4) - dist.var() ** 2) / n)
    assert abs(samples.mean() - 0.0) < 5 * mean_se
    assert abs(samples.var() - dist.var()) < 5 * var_se


def test_truncated_z_without_truncation_is_standard_normal():
    samples = imaging.truncated_z(_B, _DIM_Z, None, seed=0).astype(np.float64).ravel()
    assert stats.kstest(samples, "norm").pvalue > 0.01
    assert np.abs(samples).max() > 3.0  # a truncated sampler would not reach this tail
    assert abs(samples.var() - 1.0) < 5 * np.sqrt(2.0 / samples.size)


def test_truncated_z_is_deterministic_per_seed():
    a = imaging.truncated_z(4, 16, 0.7, seed=123)
    b = imaging.truncated_z(4, 16, 0.7, seed=123)
    c = imaging.truncated_z(4, 16, 0.7, seed=124)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.9
    # Fresh randomness without a seed.
    assert np.mean(imaging.truncated_z(4, 16) != imaging.truncated_z(4, 16)) > 0.9


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0, dim_z=4),
        dict(batch_size=2, dim_z=2.5),
        dict(batch_size=2, dim_z=4, truncation=0.0),
        dict(batch_size=2, dim_z=4, truncation=-1.0),
        dict(batch_size=2, dim_z=4, truncation=float("nan")),
        dict(batch_size=2, dim_z=4, seed=1.5),
    ],
)
def test_truncated_z_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        imaging.truncated_z(**kwargs)


def test_truncated_normal_stateless_traces_with_tensor_inputs():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([2], tf.int64),
        ]
    )
    def sample(labels, truncation, seed):
        # The batch size is only known at run time, as in the serving signature.
        return imaging.truncated_normal_stateless([tf.shape(labels)[0], 32], truncation, seed)

    seed = tf.constant([5, 0], tf.int64)
    labels = tf.zeros([64], tf.int32)
    z = sample(labels, tf.constant(0.4), seed).numpy()
    assert z.shape == (64, 32)
    assert np.all(np.abs(z) <= np.float32(0.4))
    # One trace serves every truncation value, and matches the eager host-side API.
    np.testing.assert_array_equal(sample(labels, tf.constant(0.4), seed).numpy(), z)
    np.testing.assert_array_equal(imaging.truncated_z(64, 32, 0.4, seed=5), z)
    z_wide = sample(labels, tf.constant(1.5), seed).numpy()
    assert np.abs(z_wide).max() > 0.4 and np.all(np.abs(z_wide) <= np.float32(1.5))
    # Entries already inside the bound are the untruncated draws themselves.
    plain = sample(labels, tf.constant(0.0), seed).numpy()
    inside = np.abs(plain) <= 1.5
    np.testing.assert_array_equal(z_wide[inside], plain[inside])
    assert np.all(z_wide[~inside] != plain[~inside])
    assert sample.experimental_get_tracing_count() == 1


def test_truncated_normal_stateless_non_positive_or_infinite_means_no_truncation():
    seed = tf.constant([9, 1], tf.int64)
    plain = imaging.truncated_normal_stateless([100, 100], None, seed).numpy()
    for t in (0.0, -1.0, float("inf"), float("nan")):
        got = imaging.truncated_normal_stateless([100, 100], t, seed).numpy()
        np.testing.assert_array_equal(got, plain)
    assert np.all(np.isfinite(plain))
    assert stats.kstest(plain.astype(np.float64).ravel(), "norm").pvalue > 0.01


def test_truncated_normal_stateless_small_truncation_matches_truncnorm():
    # At t = 0.01 almost every entry comes from the inverse-CDF branch.
    t = 0.01
    z = imaging.truncated_normal_stateless([20000], t, tf.constant([1, 2], tf.int32)).numpy()
    assert np.all(np.abs(z) <= np.float32(t))
    assert stats.kstest(z.astype(np.float64), stats.truncnorm(-t, t).cdf).pvalue > 0.01


def test_truncated_normal_stateless_huge_truncation_stays_finite():
    z = imaging.truncated_normal_stateless([1000], 60.0, tf.constant([3, 3], tf.int32)).numpy()
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 10.0


def test_truncated_normal_stateless_rejects_bad_seed_and_truncation():
    with pytest.raises(ValueError, match="seed"):
        imaging.truncated_normal_stateless([2], 0.5, tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="scalar"):
        imaging.truncated_normal_stateless([2], [0.5, 1.0], tf.constant([1, 2]))


def test_to_uint8_maps_range_rounds_half_up_and_clips():
    x = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, 0.5, -0.5, 1.0 / 127.5 - 1.0], np.float32)
    got = imaging.to_uint8(x)
    assert got.dtype == tf.uint8
    # 0 -> 127.5 -> 128; 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64; -1 + 1/127.5 -> 1.
    np.testing.assert_array_equal(got.numpy(), [0, 255, 128, 0, 255, 191, 64, 1])
    with pytest.raises(ValueError, match="float"):
        imaging.to_uint8(np.zeros(3, np.uint8))


def test_to_uint8_matches_numpy_on_random_images():
    x = np.random.default_rng(0).uniform(-1.2, 1.2, size=(2, 5, 5, 3)).astype(np.float32)
    expected = np.clip(np.floor((x.astype(np.float64) + 1.0) * 127.5 + 0.5), 0, 255)
    np.testing.assert_array_equal(imaging.to_uint8(x).numpy(), expected.astype(np.uint8))


def test_image_grid_places_image_k_at_row_k_div_cols_col_k_mod_cols():
    rows, cols, h, w, pad = 2, 3, 4, 5, 2
    # Image k is filled with value 10 * k + channel so every pixel names its source.
    images = (10 * np.arange(6)[:, None, None, None] + np.arange(3)).astype(np.uint8)
    images = np.broadcast_to(images, (6, h, w, 3))
    grid = imaging.image_grid(images, rows, cols, pad=pad, pad_value=255).numpy()
    assert grid.dtype == np.uint8
    assert grid.shape == (rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3)
    covered = np.zeros(grid.shape[:2], bool)
    for k in range(6):
        r, c = k // cols, k % cols
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        np.testing.assert_array_equal(grid[y0 : y0 + h, x0 : x0 + w], images[k])
        covered[y0 : y0 + h, x0 : x0 + w] = True
    assert np.all(grid[~covered] == 255)


def test_image_grid_grey_and_float_inputs():
    grey = np.zeros((4, 2, 2, 1), np.float32)
    grey[3] = 1.0
    grid = imaging.image_grid(grey, 2, 2, pad=1, pad_value=7).numpy()
    assert grid.shape == (7, 7, 3)
    np.testing.assert_array_equal(grid[1:3, 1:3], np.full((2, 2, 3), 128))  # image 0: 0.0
    np.testing.assert_array_equal(grid[4:6, 4:6], np.full((2, 2, 3), 255))  # image 3: 1.0
    assert grid[0, 0, 0] == 7 and grid[3, 3, 2] == 7
    no_pad = imaging.image_grid(np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1), 2, 2, pad=0)
    np.testing.assert_array_equal(no_pad.numpy()[..., 0], [[0, 1], [2, 3]])


def test_image_grid_rejects_wrong_count_and_channels():
    with pytest.raises(ValueError, match="5 images for a 2 x 3 grid"):
        imaging.image_grid(np.zeros((5, 2, 2, 3), np.uint8), 2, 3)
    with pytest.raises(ValueError, match="channels"):
        imaging.image_grid(np.zeros((4, 2, 2, 2), np.uint8), 2, 2)


def test_png_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    for channels in (1, 3):
        image = rng.integers(0, 256, size=(6, 7, channels), dtype=np.uint8)
        path = str(tmp_path / "nested" / "dir" / f"img{channels}.png")
        imaging.write_png(path, image)
        back = imaging.read_png(path)
        assert back.dtype == tf.uint8
        np.testing.assert_array_equal(back.numpy(), image)


def test_png_write_float_and_missing_file(tmp_path):
    path = str(tmp_path / "f.png")
    imaging.write_png(path, np.array([[[-1.0, 0.0, 1.0]]], np.float32))
    np.testing.assert_array_equal(imaging.read_png(path).numpy(), [[[0, 128, 255]]])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        imaging.read_png(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="H, W"):
        imaging.write_png(path, np.zeros((2, 2), np.uint8))


def test_interpolate_includes_both_ends_and_is_linear():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 8)).astype(np.float32)
    b = rng.normal(size=(3, 8)).astype(np.float32)
    path = imaging.interpolate(a, b, 5)
    assert path.shape == (5, 3, 8) and path.dtype == np.float32
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    np.testing.assert_allclose(path[2], 0.5 * (a + b), rtol=1e-6)
    np.testing.assert_allclose(
        np.diff(path, axis=0), np.broadcast_to((b - a) / 4, (4, 3, 8)), atol=1e-6
    )
    np.testing.assert_array_equal(
        imaging.interpolate([0, 0], [3, 6], 4), [[0, 0], [1, 2], [2, 4], [3, 6]]
    )
    with pytest.raises(ValueError, match="num_steps"):
        imaging.interpolate(a, b, 1)
    with pytest.raises(ValueError, match="equal shapes"):
        imaging.interpolate(a, b[:2], 3)
