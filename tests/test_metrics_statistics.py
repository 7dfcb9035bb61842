"""Tests for tf_biggan.metrics.statistics: streaming statistics and metrics in closed form."""

import numpy as np
import pytest
import scipy.linalg

from tf_biggan.metrics import statistics


def _random_cov(rng, dim, scale=1.0):
    a = rng.standard_normal([dim, dim])
    return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


# ---- FID -------------------------------------------------------------------------------------


def test_fid_of_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(64)
    sigma = _random_cov(rng, 64)
    assert statistics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_scipy_closed_form():
    rng = np.random.default_rng(1)
    dim = 32
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim) + 0.5
    s1, s2 = _random_cov(rng, dim), _random_cov(rng, dim, scale=2.0)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert expected > 1.0
    assert statistics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_diagonal_gaussians_is_analytic():
    # For diagonal covariances tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert statistics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="Covariances"):
        statistics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# ---- Streaming statistics --------------------------------------------------------------------


def test_streaming_stats_match_batch_stats_over_uneven_batches():
    rng = np.random.default_rng(2)
    # A large offset makes the naive E[xx^T] - E[x]E[x]^T formula lose digits; the merge must not.
    data = rng.standard_normal([517, 8]) * [1, 2, 3, 4, 5, 6, 7, 8] + 1e4
    stats = statistics.StreamingStats(8, max_kid_features=0)
    start = 0
    for size in [1, 7, 100, 0, 3, 256, 150]:
        stats.update(data[start : start + size])
        start += size
    assert start == data.shape[0]
    assert stats.count == 517
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(data, rowvar=False), rtol=1e-9, atol=1e-9)


def test_streaming_stats_rejects_wrong_dim():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        statistics.StreamingStats(4).update(np.zeros([2, 5]))


def test_reservoir_is_uniform_sample_of_the_stream():
    stats = statistics.StreamingStats(1, max_kid_features=100, seed=3)
    for start in range(0, 10_000, 64):
        stats.update(np.arange(start, min(start + 64, 10_000), dtype=np.float64)[:, None])
    kept = stats.features[:, 0]
    assert kept.shape == (100,)
    assert len(np.unique(kept)) == 100
    assert set(kept.astype(int)) <= set(range(10_000))
    # A uniform sample of 0..9999 has mean 4999.5 with standard error ~ 289.
    assert abs(kept.mean() - 4999.5) < 4 * 289
    # Items from the end of the stream must be represented, not only the first 100.
    assert kept.max() > 5000


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    stats = statistics.StreamingStats(5, max_kid_features=30, extractor="test_net")
    stats.update(rng.standard_normal([50, 5]))
    path = str(tmp_path / "sub" / "ref.npz")
    stats.save(path)
    with np.load(path) as raw:
        assert {"mu", "sigma", "count"} <= set(raw.files)
        np.testing.assert_array_equal(raw["mu"], stats.mean)
    loaded = statistics.StreamingStats.load(path)
    assert loaded.count == 50
    assert loaded.extractor == "test_net"
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_allclose(loaded.cov, stats.cov, rtol=1e-14)
    np.testing.assert_array_equal(loaded.features, stats.features)
    # A loaded object keeps accumulating exactly.
    more = rng.standard_normal([20, 5])
    loaded.update(more)
    stats.update(more)
    np.testing.assert_allclose(loaded.cov, stats.cov, rtol=1e-12)


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        statistics.StreamingStats.load(str(tmp_path / "nope.npz"))


# ---- Inception Score -------------------------------------------------------------------------


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = statistics.inception_score(np.full([100, 7], 1 / 7), splits=10)
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_evenly_spread_predictions_is_k():
    k = 8
    probs = np.eye(k)[np.arange(160) % k]
    mean, std = statistics.inception_score(probs, splits=10)
    assert mean == pytest.approx(k)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(6) * 0.3, size=90)
    mean, _ = statistics.inception_score(probs, splits=3)
    direct = []
    for part in np.split(probs, 3):
        py = part.mean(0)
        direct.append(np.exp(np.mean(np.sum(part * np.log(part / py), axis=1))))
    assert mean == pytest.approx(np.mean(direct), rel=1e-10)


def test_inception_score_of_two_mirrored_confidences_is_exact():
    # Half the rows [p, 1 - p], half [1 - p, p]: the marginal is uniform, every row's KL is
    # log 2 - H(p), so IS = 2 p^p (1 - p)^(1 - p) in every split.
    p = 0.9
    probs = np.array([[p, 1 - p], [1 - p, p]] * 20)
    mean, std = statistics.inception_score(probs, splits=4)
    assert mean == pytest.approx(2 * p**p * (1 - p) ** (1 - p), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        statistics.inception_score(np.random.default_rng(0).standard_normal([20, 4]), splits=2)


# ---- KID and precision/recall ----------------------------------------------------------------


def polynomial_mmd2_of_shifted_gaussians(dim, shift):
    """Population MMD² of N(0, I) and N(shift·1, I) in `dim` dimensions under KID's kernel.

    With k(x, y) = (u + 1)³, u = xᵀy / D, and c = shift²: for x, x' ~ N(0, I), E u = 0,
    E u² = 1/D, E u³ = 0; for y, y' ~ N(m, I), u = c + w with E w² = (2c + 1)/D and
    E w³ = 6c/D²; across the two, E u = 0, E u² = (c + 1)/D, E u³ = 0.
    """
    c, v = shift**2, 1.0 + shift**2
    k_xx = 1.0 + 3.0 / dim
    k_yy = v**3 + 3.0 * v * (2.0 * c + 1.0) / dim + 6.0 * c / dim**2
    k_xy = 1.0 + 3.0 * (c + 1.0) / dim
    return k_xx + k_yy - 2.0 * k_xy


def test_kid_same_distribution_is_near_zero_and_shifted_matches_population_value():
    rng = np.random.default_rng(6)
    x = rng.standard_normal([600, 16])
    y = rng.standard_normal([600, 16])
    mean, std = statistics.kernel_inception_distance(x, y, num_subsets=20, subset_size=200)
    assert abs(mean) < max(3 * std, 1e-2)
    shifted_mean, shifted_std = statistics.kernel_inception_distance(
        x, y + 1.0, num_subsets=20, subset_size=200
    )
    assert shifted_mean > 10 * max(abs(mean), shifted_std)
    # The estimator is unbiased; 600 samples per set leave a few percent of sampling error.
    expected = polynomial_mmd2_of_shifted_gaussians(16, 1.0)
    assert shifted_mean == pytest.approx(expected, rel=0.1)


def test_kid_single_subset_matches_explicit_formula():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal([10, 3]), rng.standard_normal([10, 3]) + 0.3
    # subset_size is clipped to 10, so the only subset is a permutation of everything.
    mean, std = statistics.kernel_inception_distance(x, y, num_subsets=1, subset_size=50)

    def k(a, b):
        return (a @ b.T / 3 + 1) ** 3

    m = 10
    kxx, kyy = k(x, x), k(y, y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == 0.0


def test_precision_recall_detects_mode_collapse():
    rng = np.random.default_rng(8)
    real = rng.standard_normal([400, 4])
    same = statistics.precision_recall(real, rng.standard_normal([400, 4]), k=3, batch_size=128)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = statistics.precision_recall(real, 0.05 * rng.standard_normal([400, 4]), k=3)
    assert collapsed["precision"] > 0.95
    assert collapsed["recall"] < 0.2


def test_class_accuracy_closed_form_and_checks():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    result = statistics.class_accuracy(probs, np.array([0, 1, 1, 1, 0]))
    assert result == {"class_accuracy": 0.6, "per_class_accuracy": [0.5, 2 / 3]}
    assert statistics.class_accuracy(probs[:2], np.array([0, 0]))["per_class_accuracy"] == [
        0.5,
        None,
    ]
    with pytest.raises(ValueError, match="labels"):
        statistics.class_accuracy(probs, np.array([0, 1]))


def test_softmax_of_log_weights_and_of_huge_logits():
    logits = np.log([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]]) + [[0.0], [1000.0]]
    np.testing.assert_allclose(
        statistics.softmax(logits), [[1 / 6, 2 / 6, 3 / 6], [0.25, 0.25, 0.5]], rtol=1e-12
    )


def test_load_of_mu_sigma_file_without_count_as_ttur_and_pytorch_fid_write(tmp_path):
    rng = np.random.default_rng(8)
    mu, sigma = rng.standard_normal(5), _random_cov(rng, 5)
    path = str(tmp_path / "fid_stats.npz")
    np.savez(path, mu=mu, sigma=sigma)
    loaded = statistics.StreamingStats.load(path)
    assert loaded.count is None and loaded.extractor is None
    np.testing.assert_array_equal(loaded.mean, mu)
    np.testing.assert_array_equal(loaded.cov, sigma)
    assert loaded.features.shape == (0, 5)
    with pytest.raises(ValueError, match="without `count`"):
        loaded.update(rng.standard_normal([3, 5]))
    with pytest.raises(ValueError, match="without a sample count"):
        loaded.save(str(tmp_path / "again.npz"))
    np.savez(path, sigma=sigma)
    with pytest.raises(ValueError, match="mu"):
        statistics.StreamingStats.load(path)
