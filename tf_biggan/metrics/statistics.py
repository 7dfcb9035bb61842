"""Feature statistics and the distances between them: FID, Inception Score, KID, P&R, accuracy.

BigGAN (Brock et al., ICLR 2019) reports Inception Score (IS, Salimans et al. 2016) and
Fréchet Inception Distance (FID, Heusel et al. 2017). This module holds the numbers computed
from features, with no network in sight:

* `StreamingStats`: float64 mean and covariance of feature vectors accumulated batch by batch
  (Chan et al. pairwise merge), plus a uniform reservoir sample of raw features for KID and
  precision/recall. Saved as `.npz` with keys `mu`, `sigma`, `count` (and `features`,
  `extractor` when known). `StreamingStats.load` also reads the `mu`/`sigma` files of TTUR and
  pytorch-fid, which have no `count`: FID works with them, KID and precision/recall do not.
* `frechet_distance`, `inception_score`, `kernel_inception_distance` (Bińkowski et al. 2018),
  `precision_recall` (Kynkäänniemi et al. 2019), `class_accuracy` and `softmax`: pure numpy
  functions.

Deviations from the reference implementations:

* The matrix square root in FID is not computed with `scipy.linalg.sqrtm` (scipy is not a
  dependency of the package). `tr(sqrtm(S1 S2))` equals the sum of the square roots of the
  eigenvalues of the symmetric PSD matrix `sqrt(S1) S2 sqrt(S1)`, which `numpy.linalg.eigh`
  computes stably; tiny negative eigenvalues from round-off are clipped to 0.
* The Inception Score splits the samples with `numpy.array_split`, so a sample count that is
  not a multiple of `splits` still uses every sample.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf

from tf_biggan import paths

__all__ = [
    "StreamingStats",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
    "class_accuracy",
    "softmax",
]


class StreamingStats:
    """Streaming float64 mean and covariance of feature vectors.

    Batches are merged with the pairwise update of Chan, Golub and LeVeque (1979): each batch's
    own mean and centred scatter matrix `M2` are combined with the running ones, which avoids the
    cancellation of the naive `E[xxᵀ] - E[x]E[x]ᵀ` formula. A uniform random sample of at most
    `max_kid_features` raw feature vectors is kept by reservoir sampling (Vitter's algorithm R)
    for KID and precision/recall.

    Args:
        dim: Feature dimension D.
        max_kid_features: Size of the reservoir of raw features; 0 keeps none.
        seed: Seed of the reservoir sampler.
        extractor: Name of the extractor that produced the features, stored with the
            statistics so that incompatible reference files are detected.
    """

    def __init__(
        self,
        dim: int,
        max_kid_features: int = 10_000,
        seed: int = 0,
        extractor: str | None = None,
    ):
        if dim <= 0:
            raise ValueError(f"StreamingStats: dim must be positive, got {dim}.")
        if max_kid_features < 0:
            raise ValueError(f"max_kid_features must be >= 0, got {max_kid_features}.")
        self.dim = int(dim)
        self.max_kid_features = int(max_kid_features)
        self.extractor = extractor
        self._count = 0
        # Set by `load` for a file without `count`: the covariance as read, frozen.
        self._loaded_cov = None
        self._mean = np.zeros([self.dim], np.float64)
        self._m2 = np.zeros([self.dim, self.dim], np.float64)
        self._reservoir = np.zeros([self.max_kid_features, self.dim], np.float32)
        self._rng = np.random.default_rng(seed)

    @property
    def count(self) -> int | None:
        """Number of feature vectors accumulated; None when loaded from a file without one."""
        return None if self._loaded_cov is not None else self._count

    @property
    def mean(self) -> np.ndarray:
        """Mean, float64 `[D]`."""
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1, as `np.cov`), float64 `[D, D]`."""
        if self._loaded_cov is not None:
            return self._loaded_cov.copy()
        if self._count < 2:
            raise ValueError(f"Covariance needs at least 2 samples, have {self._count}.")
        return self._m2 / (self._count - 1)

    @property
    def features(self) -> np.ndarray:
        """The reservoir sample of raw features, float32 `[min(count, max_kid_features), D]`."""
        return self._reservoir[: min(self._count, self.max_kid_features)].copy()

    def update(self, features) -> None:
        """Adds a batch of feature vectors.

        Args:
            features: Array-like `[N, D]` (any float dtype, any N >= 0).
        """
        if self._loaded_cov is not None:
            raise ValueError(
                "Statistics loaded without `count` cannot keep accumulating: the weight of the "
                "loaded mean and covariance is unknown."
            )
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Expected features of shape [N, {self.dim}], got {x.shape}.")
        n_b = x.shape[0]
        if n_b == 0:
            return
        if not np.all(np.isfinite(x)):
            raise ValueError("Features contain NaN or Inf values.")
        self._fill_reservoir(x)
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        n_a = self._count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self._count = n

    def _fill_reservoir(self, x: np.ndarray) -> None:
        cap = self.max_kid_features
        if cap == 0:
            return
        first = self._count
        # Rows whose global index is below the capacity fill the reservoir directly.
        n_direct = max(0, min(cap - first, x.shape[0]))
        if n_direct:
            self._reservoir[first : first + n_direct] = x[:n_direct]
        # Later row i replaces a uniformly chosen slot with probability cap / (i + 1).
        rest = np.arange(first + n_direct, first + x.shape[0])
        if rest.size:
            slots = self._rng.integers(0, rest + 1)
            for row, slot in zip(rest - first, slots, strict=True):
                if slot < cap:
                    self._reservoir[slot] = x[row]

    def save(self, path: str) -> None:
        """Writes `mu`, `sigma`, `count` (and `features`, `extractor`) to an `.npz` file.

        Args:
            path: Destination; any `tf.io.gfile` path (local or e.g. `gs://`).
        """
        if self._loaded_cov is not None:
            raise ValueError(f"Refusing to save statistics without a sample count to {path}.")
        if self._count < 2:
            raise ValueError(f"Refusing to save statistics of {self._count} sample(s) to {path}.")
        arrays = {
            "mu": self._mean,
            "sigma": self.cov,
            "count": np.int64(self._count),
        }
        if self.max_kid_features:
            arrays["features"] = self.features
        if self.extractor is not None:
            arrays["extractor"] = np.array(self.extractor)
        parent = os.path.dirname(path)
        if parent:
            tf.io.gfile.makedirs(parent)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str) -> StreamingStats:
        """Reads statistics written by `save`, or any `.npz` with `mu` and `sigma`.

        With `count`, the loaded object can keep accumulating: the scatter matrix is rebuilt as
        `sigma * (count - 1)`. Without it (the files of TTUR and pytorch-fid), `count` is None,
        `mean` and `cov` are the file's, the object holds no raw features (any `features` in the
        file are ignored) and cannot accumulate or be saved: FID works, KID does not.
        """
        path = paths.expand(path)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Statistics file not found: {path}")
        with tf.io.gfile.GFile(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks the key(s) {sorted(missing)}.")
            mu = np.asarray(data["mu"], np.float64)
            sigma = np.asarray(data["sigma"], np.float64)
            count = int(data["count"]) if "count" in data else None
            features = None
            if "features" in data and count is not None:
                features = np.asarray(data["features"], np.float32)
            extractor = str(data["extractor"]) if "extractor" in data else None
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{path}: bad shapes mu {mu.shape}, sigma {sigma.shape}.")
        n_feat = 0 if features is None else features.shape[0]
        stats = cls(mu.shape[0], max_kid_features=n_feat, extractor=extractor)
        stats._mean = mu
        if count is None:
            stats._loaded_cov = sigma
            return stats
        stats._count = count
        stats._m2 = sigma * (count - 1)
        if n_feat:
            stats._reservoir = features
        return stats


# --------------------------------------------------------------------------------------------
# Metrics (pure numpy).
# --------------------------------------------------------------------------------------------


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh(matrix)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    `d² = ‖mu1 − mu2‖² + tr(S1) + tr(S2) − 2 tr(sqrtm(S1 S2))`. Because S1 S2 is similar to the
    symmetric PSD matrix `A = sqrt(S1) S2 sqrt(S1)`, `tr(sqrtm(S1 S2))` is the sum of the square
    roots of A's eigenvalues; they come from `numpy.linalg.eigh`, with round-off negatives
    clipped to 0. This avoids `scipy.linalg.sqrtm` and its complex-valued outputs.

    Args:
        mu1, mu2: Means, `[D]`.
        sigma1, sigma2: Covariances, symmetric PSD `[D, D]`.

    Returns:
        The squared Fréchet distance (the FID when the inputs are Inception statistics), >= 0.
    """
    mu1 = np.asarray(mu1, np.float64)
    mu2 = np.asarray(mu2, np.float64)
    sigma1 = np.asarray(sigma1, np.float64)
    sigma2 = np.asarray(sigma2, np.float64)
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,):
        raise ValueError(f"Means must both be [D]; got {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Covariances must be [{dim}, {dim}]; got {sigma1.shape} and {sigma2.shape}."
        )
    sqrt1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    inner = sqrt1 @ sigma2 @ sqrt1
    eigvals = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016), as in TF-GAN and the BigGAN paper.

    For each split, `exp(mean_x KL(p(y|x) ‖ p(y)))` with p(y) the split's marginal.

    Args:
        probs: Class probabilities `[N, K]`, rows summing to 1 (softmax of the logits).
        splits: Number of disjoint splits (10 in the literature).

    Returns:
        `(mean, std)` of the per-split scores; the score lies in [1, K].
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, K], got shape {probs.shape}.")
    if splits < 1 or probs.shape[0] < splits:
        raise ValueError(f"Need 1 <= splits <= N; got splits={splits}, N={probs.shape[0]}.")
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs rows must be non-negative and sum to 1 (apply softmax first).")
    scores = []
    for part in np.array_split(probs, splits):
        marginal = part.mean(axis=0, keepdims=True)
        # 0 · log 0 = 0: classes with zero probability contribute nothing.
        safe = np.where(part > 0, part, 1.0)
        kl = np.sum(part * (np.log(safe) - np.log(np.where(part > 0, marginal, 1.0))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(
    feats1, feats2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., ICLR 2018).

    The unbiased estimate of MMD² with the kernel `k(x, y) = (xᵀy / D + 1)³`, averaged over
    `num_subsets` random subsets (drawn without replacement within a subset) of each sample.

    Args:
        feats1, feats2: Features `[N1, D]`, `[N2, D]`.
        num_subsets: Number of subset pairs.
        subset_size: Subset size m, clipped to `min(N1, N2)`.
        seed: Seed of the subset sampler.

    Returns:
        `(mean, std)` of the per-subset MMD² estimates (can be slightly negative).
    """
    x = np.asarray(feats1, np.float64)
    y = np.asarray(feats2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"Features must be [N, D] with equal D; got {x.shape} and {y.shape}.")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set; got {x.shape[0]}, {y.shape[0]}.")
    rng = np.random.default_rng(seed)
    estimates = np.empty([num_subsets], np.float64)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        k_xx = _polynomial_kernel(xs, xs)
        k_yy = _polynomial_kernel(ys, ys)
        k_xy = _polynomial_kernel(xs, ys)
        estimates[i] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2.0 * k_xy.mean()
        )
    return float(estimates.mean()), float(estimates.std())


def _pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _knn_radii(feats: np.ndarray, k: int, batch: int) -> np.ndarray:
    radii = np.empty([feats.shape[0]], np.float64)
    for start in range(0, feats.shape[0], batch):
        d = _pairwise_sq_dists(feats[start : start + batch], feats)
        # Column k of the sorted row: index 0 is the point itself at distance 0.
        radii[start : start + batch] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, batch: int) -> float:
    inside = 0
    for start in range(0, queries.shape[0], batch):
        d = _pairwise_sq_dists(queries[start : start + batch], manifold)
        inside += int(np.any(d <= radii[None, :], axis=1).sum())
    return inside / queries.shape[0]


def precision_recall(real_feats, fake_feats, k: int = 3, batch_size: int = 1000) -> dict:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

    Each sample set's manifold is the union of balls around its points with radius the distance
    to the k-th nearest neighbour. Precision is the fraction of fake samples inside the real
    manifold, recall the fraction of real samples inside the fake manifold.

    Args:
        real_feats: Real features `[N1, D]`, N1 > k.
        fake_feats: Generated features `[N2, D]`, N2 > k.
        k: Neighbourhood size (3 in the paper).
        batch_size: Rows per distance block, bounding memory at `batch_size × N` floats.

    Returns:
        `{"precision": float, "recall": float}`, both in [0, 1].
    """
    real = np.asarray(real_feats, np.float64)
    fake = np.asarray(fake_feats, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"Features must be [N, D] with equal D; got {real.shape} and {fake.shape}."
        )
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(
            f"Need more than k={k} samples per set; got {real.shape[0]}, {fake.shape[0]}."
        )
    real_radii = _knn_radii(real, k, batch_size)
    fake_radii = _knn_radii(fake, k, batch_size)
    return {
        "precision": _coverage(real, real_radii, fake, batch_size),
        "recall": _coverage(fake, fake_radii, real, batch_size),
    }


def softmax(logits) -> np.ndarray:
    """Row-wise softmax of logits `[N, K]` in float64 (max-shifted, so large logits are safe)."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def class_accuracy(probs, labels) -> dict:
    """How often a classifier finds generated images in their conditioning class.

    Args:
        probs: `[N, K]` class probabilities (or logits: only the argmax is used).
        labels: int `[N]`, the classes the images were generated for.

    Returns:
        `{"class_accuracy": float, "per_class_accuracy": [K floats]}`: the fraction of all
        images whose argmax is their label, and the same fraction within each class (None for
        a class with no images).
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(
            f"Expected probs [N, K] and labels [N], got {probs.shape}, {labels.shape}."
        )
    correct = np.argmax(probs, axis=1) == labels
    per_class = [
        float(np.mean(correct[labels == k])) if np.any(labels == k) else None
        for k in range(probs.shape[1])
    ]
    return {"class_accuracy": float(np.mean(correct)), "per_class_accuracy": per_class}
