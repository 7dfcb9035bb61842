"""Sample-quality metrics for BigGAN: FID, Inception Score, KID, precision/recall.

BigGAN (Brock et al., ICLR 2019) reports Inception Score (IS, Salimans et al. 2016) and
Fréchet Inception Distance (FID, Heusel et al. 2017) computed with the TF-GAN Inception
network. Both numbers move with the network's weights, the resizing of the images, the number
of samples and the truncation threshold, so every result produced here records the extractor,
the sample count and the truncation it was measured with.

Contents:

* `StreamingStats`: float64 mean and covariance of feature vectors accumulated batch by batch
  (Chan et al. pairwise merge), plus a uniform reservoir sample of raw features for KID and
  precision/recall. Saved as `.npz` with keys `mu`, `sigma`, `count` (and `features`,
  `extractor` when known).
* `frechet_distance`, `inception_score`, `kernel_inception_distance` (Bińkowski et al. 2018)
  and `precision_recall` (Kynkäänniemi et al. 2019): pure numpy functions.
* Feature extractors selected by name with `make_extractor`: the TF-GAN Inception network from
  TF-Hub, Keras' InceptionV3, or any user Keras model / SavedModel with a named feature layer.
  Images are resized to the extractor's input with bilinear interpolation as TF-GAN does.
* `compute_generator_stats`, `compute_dataset_stats`, `evaluate` and `PeriodicEvaluator`.
* A CLI, `python -m tf_biggan.eval`, that prints one JSON line on stdout.

Deviations from the reference implementations:

* The matrix square root in FID is not computed with `scipy.linalg.sqrtm` (scipy is not a
  dependency of the package). `tr(sqrtm(S1 S2))` equals the sum of the square roots of the
  eigenvalues of the symmetric PSD matrix `sqrt(S1) S2 sqrt(S1)`, which `numpy.linalg.eigh`
  computes stably; tiny negative eigenvalues from round-off are clipped to 0.
* The Inception Score splits the samples with `numpy.array_split`, so a sample count that is
  not a multiple of `splits` still uses every sample.
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_biggan import paths
from tf_biggan.imaging import truncated_z

__all__ = [
    "StreamingStats",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
    "FeatureExtractor",
    "TFGANInceptionExtractor",
    "KerasInceptionV3Extractor",
    "KerasModelExtractor",
    "make_extractor",
    "compute_generator_stats",
    "compute_dataset_stats",
    "evaluate",
    "PeriodicEvaluator",
    "open_generator",
    "TFGAN_INCEPTION_URL",
    "EXTRACTOR_KINDS",
]

TFGAN_INCEPTION_URL = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
EXTRACTOR_KINDS = ("tfgan_inception", "keras_inception_v3", "keras_model")
_INCEPTION_SIZE = 299


# --------------------------------------------------------------------------------------------
# Streaming statistics.
# --------------------------------------------------------------------------------------------


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
        self._mean = np.zeros([self.dim], np.float64)
        self._m2 = np.zeros([self.dim, self.dim], np.float64)
        self._reservoir = np.zeros([self.max_kid_features, self.dim], np.float32)
        self._rng = np.random.default_rng(seed)

    @property
    def count(self) -> int:
        """Number of feature vectors accumulated."""
        return self._count

    @property
    def mean(self) -> np.ndarray:
        """Mean, float64 `[D]`."""
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1, as `np.cov`), float64 `[D, D]`."""
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
        """Reads statistics written by `save` (or any `.npz` with `mu`, `sigma`, `count`).

        The loaded object can keep accumulating: the scatter matrix is rebuilt as
        `sigma * (count - 1)`.
        """
        path = paths.expand(path)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Statistics file not found: {path}")
        with tf.io.gfile.GFile(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
            missing = {"mu", "sigma", "count"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks the key(s) {sorted(missing)}.")
            mu = np.asarray(data["mu"], np.float64)
            sigma = np.asarray(data["sigma"], np.float64)
            count = int(data["count"])
            features = np.asarray(data["features"], np.float32) if "features" in data else None
            extractor = str(data["extractor"]) if "extractor" in data else None
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{path}: bad shapes mu {mu.shape}, sigma {sigma.shape}.")
        n_feat = 0 if features is None else features.shape[0]
        stats = cls(mu.shape[0], max_kid_features=n_feat, extractor=extractor)
        stats._count = count
        stats._mean = mu
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


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Feature extractors.
# --------------------------------------------------------------------------------------------


class FeatureExtractor(abc.ABC):
    """Maps images to pooled features (for FID/KID) and class logits (for IS).

    Subclasses implement `_forward` on images already resized to `input_size`.

    Attributes:
        name: Identifies the network; stored with reference statistics.
        input_size: `(height, width)` the network expects, or None to keep the image size.
    """

    name: str = "extractor"
    input_size: tuple[int, int] | None = None

    def __call__(self, images) -> dict:
        """Runs the extractor.

        Args:
            images: float32 `[B, H, W, 3]` in [-1, 1].

        Returns:
            `{"pool": float32 np.ndarray [B, D], "logits": float32 [B, K] or None}`.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected images [B, H, W, 3], got {images.shape}.")
        images = self._resize(images)
        out = self._forward(images)
        pool = np.asarray(out["pool"], np.float32).reshape([images.shape[0], -1])
        logits = out.get("logits")
        if logits is not None:
            logits = np.asarray(logits, np.float32).reshape([images.shape[0], -1])
        return {"pool": pool, "logits": logits}

    def _resize(self, images: tf.Tensor) -> tf.Tensor:
        if self.input_size is None or tuple(images.shape[1:3]) == tuple(self.input_size):
            return images
        # TF-GAN resizes with plain bilinear interpolation (no antialiasing); matching it keeps
        # FID numbers comparable with published ones.
        return tf.image.resize(images, list(self.input_size), method="bilinear")

    @abc.abstractmethod
    def _forward(self, images: tf.Tensor) -> dict:
        """Runs the network on resized images; returns `pool` and `logits` (or None)."""


class TFGANInceptionExtractor(FeatureExtractor):
    """The TF-GAN Inception network from TF-Hub, the one behind BigGAN's published numbers.

    Input: 299×299 images in [-1, 1]. Outputs `pool_3` (2048) and `logits` (1008 classes; the
    Inception Score uses their softmax, as TF-GAN does).

    Args:
        path: TF-Hub URL or a local directory holding a copy of the module.
    """

    name = "tfgan_inception"
    input_size = (_INCEPTION_SIZE, _INCEPTION_SIZE)

    def __init__(self, path: str | None = None):
        import tensorflow_hub as hub

        path = path or TFGAN_INCEPTION_URL
        if "://" not in path and not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"TF-GAN Inception module not found at {path}. Pass a local copy of "
                f"{TFGAN_INCEPTION_URL} (a directory with saved_model.pb) or the URL itself."
            )
        self.path = path
        self._module = hub.load(path)

    def _forward(self, images: tf.Tensor) -> dict:
        out = self._module(images)
        return {"pool": out["pool_3"], "logits": out["logits"]}


class KerasInceptionV3Extractor(FeatureExtractor):
    """Keras' InceptionV3 (`keras.applications`) with its top classifier.

    Input: 299×299 images in [-1, 1], which is exactly the range `inception_v3.preprocess_input`
    produces, so generator outputs are fed directly. `pool` is the global average pool (2048),
    `logits` the pre-softmax output of the 1000-way classifier.

    Args:
        weights: `"imagenet"`, a path to a weights file, or None for random weights.
    """

    name = "keras_inception_v3"
    input_size = (_INCEPTION_SIZE, _INCEPTION_SIZE)

    def __init__(self, weights: str | None = "imagenet"):
        if weights not in (None, "imagenet") and not tf.io.gfile.exists(weights):
            raise FileNotFoundError(f"InceptionV3 weights file not found: {weights}")
        base = keras.applications.InceptionV3(
            include_top=True, weights=weights, classifier_activation=None
        )
        self._model = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])

    def _forward(self, images: tf.Tensor) -> dict:
        pool, logits = self._model(images, training=False)
        return {"pool": pool, "logits": logits}


class KerasModelExtractor(FeatureExtractor):
    """A user classifier with a named feature layer, for domains where Inception is meaningless.

    Accepts a built `keras.Model`, a Keras model file (`.keras`, `.h5`) or a TF SavedModel
    directory. For Keras models, `feature_layer` and `logits_layer` name layers whose outputs
    are read; for a SavedModel they name outputs of its `serving_default` signature. Images are
    given in [-1, 1] (put any other input scaling inside the model), resized to the model's
    input size, and converted to grey when the model takes one channel.

    Args:
        model: A `keras.Model`, or a path to a model file / SavedModel directory.
        feature_layer: Layer (or signature output) giving the features used for FID/KID.
        logits_layer: Optional layer (or output) giving pre-softmax class logits, for IS.
    """

    def __init__(self, model, feature_layer: str, logits_layer: str | None = None):
        if not feature_layer:
            raise ValueError("keras_model extractor needs feature_layer (a layer name).")
        self._signature = None
        if isinstance(model, str):
            if not tf.io.gfile.exists(model):
                raise FileNotFoundError(f"Extractor model not found: {model}")
            if tf.io.gfile.isdir(model):
                self._init_saved_model(model, feature_layer, logits_layer)
                return
            model = keras.models.load_model(model, compile=False)
        if not isinstance(model, keras.Model):
            raise TypeError(f"Expected a keras.Model or a path, got {type(model).__name__}.")
        layer_names = [layer.name for layer in model.layers]
        outputs = []
        for layer_name in filter(None, (feature_layer, logits_layer)):
            if layer_name not in layer_names:
                raise ValueError(
                    f"Model {model.name!r} has no layer {layer_name!r}; layers: {layer_names}."
                )
            outputs.append(model.get_layer(layer_name).output)
        self._model = keras.Model(model.inputs, outputs)
        self._has_logits = logits_layer is not None
        shape = model.inputs[0].shape
        self._channels = shape[-1]
        self.input_size = None if None in (shape[1], shape[2]) else (shape[1], shape[2])
        self.name = f"keras_model:{model.name}/{feature_layer}"

    def _init_saved_model(self, path: str, feature_layer: str, logits_layer: str | None):
        loaded = tf.saved_model.load(path)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"SavedModel {path} has no serving_default signature.")
        signature = loaded.signatures["serving_default"]
        output_names = sorted(signature.structured_outputs)
        for key in filter(None, (feature_layer, logits_layer)):
            if key not in output_names:
                raise ValueError(
                    f"SavedModel {path} has no output {key!r}; outputs: {output_names}."
                )
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"SavedModel {path} must take one image input; has {sorted(inputs)}.")
        self._input_name, spec = next(iter(inputs.items()))
        self._loaded = loaded  # Keeps the signature's variables alive.
        self._signature = signature
        self._outputs = (feature_layer, logits_layer)
        self._has_logits = logits_layer is not None
        self._channels = spec.shape[-1]
        height, width = spec.shape[1], spec.shape[2]
        self.input_size = None if None in (height, width) else (height, width)
        self.name = f"keras_model:{os.path.basename(os.path.normpath(path))}/{feature_layer}"

    def _forward(self, images: tf.Tensor) -> dict:
        if self._channels == 1:
            images = tf.image.rgb_to_grayscale(images)
        if self._signature is not None:
            out = self._signature(**{self._input_name: images})
            feature_key, logits_key = self._outputs
            return {"pool": out[feature_key], "logits": out[logits_key] if logits_key else None}
        outputs = self._model(images, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {"pool": outputs[0], "logits": outputs[1] if self._has_logits else None}


def make_extractor(
    kind: str,
    path=None,
    feature_layer: str | None = None,
    logits_layer: str | None = None,
    weights: str | None = "imagenet",
) -> FeatureExtractor:
    """Builds a feature extractor by name.

    Args:
        kind: One of `EXTRACTOR_KINDS`: `"tfgan_inception"`, `"keras_inception_v3"`,
            `"keras_model"`.
        path: For `tfgan_inception`, a TF-Hub URL or local module directory (default: the
            TF-Hub URL); for `keras_inception_v3`, a weights file (overrides `weights`); for
            `keras_model`, a model file / SavedModel directory or a built `keras.Model`.
        feature_layer: Feature layer name (`keras_model` only).
        logits_layer: Optional logits layer name (`keras_model` only).
        weights: `keras_inception_v3` weights when `path` is None: `"imagenet"` or None.

    Returns:
        A `FeatureExtractor`.
    """
    if kind == "tfgan_inception":
        return TFGANInceptionExtractor(path)
    if kind == "keras_inception_v3":
        return KerasInceptionV3Extractor(weights=path if path is not None else weights)
    if kind == "keras_model":
        if path is None:
            raise ValueError("keras_model extractor needs path (a model file or keras.Model).")
        return KerasModelExtractor(path, feature_layer, logits_layer)
    raise ValueError(f"Unknown extractor kind {kind!r}; expected one of {EXTRACTOR_KINDS}.")


# --------------------------------------------------------------------------------------------
# Running a generator / a data set through an extractor.
# --------------------------------------------------------------------------------------------


def _progbar(target: int, verbose: int):
    return keras.utils.Progbar(target, verbose=verbose, unit_name="image")


def generated_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """The conditioning labels of an evaluation's samples: the classes in turn, `i % K`."""
    return np.arange(num_samples) % num_classes


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


def compute_generator_stats(
    generate_fn: Callable,
    extractor: FeatureExtractor,
    num_samples: int,
    batch_size: int,
    num_classes: int,
    dim_z: int,
    truncation: float | None = None,
    seed: int = 0,
    max_kid_features: int = 10_000,
    verbose: int = 1,
) -> tuple[StreamingStats, np.ndarray | None]:
    """Generates `num_samples` images and accumulates their feature statistics.

    Labels cycle over the classes (so every class gets `num_samples / num_classes` images up to
    one), z comes from `tf_biggan.imaging.truncated_z` with a per-batch seed derived from `seed`.

    Args:
        generate_fn: `(z float32 [B, dim_z], y_onehot float32 [B, K]) -> images [B, H, W, 3]`
            in [-1, 1].
        extractor: A `FeatureExtractor`.
        num_samples: Number of images.
        batch_size: Images per generator call (the last batch may be smaller).
        num_classes: K.
        dim_z: Latent size.
        truncation: Truncation threshold or None.
        seed: Seed of the latents and of the KID reservoir.
        max_kid_features: Raw features kept for KID.
        verbose: 1 shows a progress bar.

    Returns:
        `(stats, probs)`: the pool-feature `StreamingStats` and the class probabilities
        float64 `[num_samples, K']` (None if the extractor has no logits).
    """
    if num_samples < 2 or batch_size < 1 or num_classes < 1:
        raise ValueError(
            f"Bad sizes: num_samples={num_samples}, batch_size={batch_size}, "
            f"num_classes={num_classes}."
        )
    stats = None
    probs = []
    progbar = _progbar(num_samples, verbose)
    done = 0
    batch_index = 0
    while done < num_samples:
        b = min(batch_size, num_samples - done)
        z = truncated_z(b, dim_z, truncation, seed=seed * 1_000_003 + batch_index)
        labels = generated_labels(num_samples, num_classes)[done : done + b]
        y_onehot = np.eye(num_classes, dtype=np.float32)[labels]
        images = generate_fn(tf.constant(z), tf.constant(y_onehot))
        out = extractor(images)
        if stats is None:
            stats = StreamingStats(
                out["pool"].shape[1], max_kid_features, seed=seed, extractor=extractor.name
            )
        stats.update(out["pool"])
        if out["logits"] is not None:
            probs.append(_softmax(out["logits"]))
        done += b
        batch_index += 1
        progbar.update(done)
    return stats, (np.concatenate(probs) if probs else None)


def compute_dataset_stats(
    dataset,
    extractor: FeatureExtractor,
    num_samples: int,
    max_kid_features: int = 10_000,
    seed: int = 0,
    verbose: int = 1,
) -> StreamingStats:
    """Feature statistics of the first `num_samples` images of a data set.

    Args:
        dataset: Iterable of `(images float32 [B, H, W, 3] in [-1, 1], labels)` batches, e.g.
            `make_dataset(...).dataset`.
        extractor: A `FeatureExtractor`.
        num_samples: Number of images to use; the data set must hold at least this many.
        max_kid_features: Raw features kept for KID.
        seed: Seed of the KID reservoir.
        verbose: 1 shows a progress bar.

    Returns:
        A `StreamingStats` with `count == num_samples`.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}.")
    stats = None
    progbar = _progbar(num_samples, verbose)
    for images, _ in dataset:
        remaining = num_samples - (stats.count if stats is not None else 0)
        images = images[:remaining]
        grey = images.shape[-1] == 1
        if grey:
            images = tf.image.grayscale_to_rgb(images)
        out = extractor(images)
        if stats is None:
            stats = StreamingStats(
                out["pool"].shape[1], max_kid_features, seed=seed, extractor=extractor.name
            )
        stats.update(out["pool"])
        progbar.update(stats.count)
        if stats.count >= num_samples:
            return stats
    raise ValueError(
        f"The data set ended after {0 if stats is None else stats.count} images; "
        f"{num_samples} were requested."
    )


def _check_compatible(reference: StreamingStats, generated: StreamingStats, where: str) -> None:
    if reference.dim != generated.dim:
        raise ValueError(
            f"Reference statistics {where} have dimension {reference.dim}, but the extractor "
            f"{generated.extractor!r} gives {generated.dim}."
        )
    if reference.extractor is not None and reference.extractor != generated.extractor:
        raise ValueError(
            f"Reference statistics {where} were computed with {reference.extractor!r}, not "
            f"with {generated.extractor!r}; metrics across extractors are not comparable."
        )


def evaluate(
    generate_fn: Callable,
    extractor: FeatureExtractor,
    reference_stats: str | StreamingStats,
    num_samples: int,
    batch_size: int,
    num_classes: int,
    dim_z: int,
    truncation: float | None = None,
    seed: int = 0,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    verbose: int = 1,
) -> dict:
    """FID, Inception Score and KID of a generator against reference statistics.

    Args:
        generate_fn: See `compute_generator_stats`.
        extractor: A `FeatureExtractor`; must be the one the reference was computed with.
        reference_stats: Path of an `.npz` written by `StreamingStats.save`, or the object.
        num_samples, batch_size, num_classes, dim_z, truncation, seed: See
            `compute_generator_stats`.
        is_splits: Inception Score splits.
        kid_subsets, kid_subset_size: See `kernel_inception_distance`.
        verbose: 1 shows a progress bar.

    Returns:
        `{"fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std",
        "class_accuracy", "per_class_accuracy", "num_samples", "truncation", "extractor",
        "reference_stats"}`. The IS fields are None when the extractor has no logits, the KID
        fields when the reference holds no feature sample. The accuracy fields (see
        `class_accuracy`) are set when the extractor is a classifier of the generator's own
        classes (its logits have `num_classes` entries), e.g. `tools/fmnist_classifier.py`.
    """
    if isinstance(reference_stats, StreamingStats):
        reference, reference_name = reference_stats, None
    else:
        reference, reference_name = StreamingStats.load(reference_stats), str(reference_stats)
    generated, probs = compute_generator_stats(
        generate_fn,
        extractor,
        num_samples=num_samples,
        batch_size=batch_size,
        num_classes=num_classes,
        dim_z=dim_z,
        truncation=truncation,
        seed=seed,
        verbose=verbose,
    )
    _check_compatible(reference, generated, reference_name or "(in memory)")
    fid = frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
    is_mean = is_std = None
    accuracy = {"class_accuracy": None, "per_class_accuracy": None}
    if probs is not None:
        is_mean, is_std = inception_score(probs, splits=min(is_splits, num_samples))
        if probs.shape[1] == num_classes:
            accuracy = class_accuracy(probs, generated_labels(num_samples, num_classes))
    kid_mean = kid_std = None
    ref_features = reference.features
    if ref_features.shape[0] >= 2:
        kid_mean, kid_std = kernel_inception_distance(
            generated.features,
            ref_features,
            num_subsets=kid_subsets,
            subset_size=kid_subset_size,
            seed=seed,
        )
    return {
        "fid": fid,
        "inception_score_mean": is_mean,
        "inception_score_std": is_std,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **accuracy,
        "num_samples": int(num_samples),
        "truncation": None if truncation is None else float(truncation),
        "extractor": extractor.name,
        "reference_stats": reference_name,
    }


class PeriodicEvaluator:
    """Evaluation run from the training loop every N steps.

    Loads the reference statistics once; each call generates `num_samples` images with the
    same seed, so successive results differ only through the generator.

    Args:
        extractor: A `FeatureExtractor`.
        reference_stats_path: `.npz` written by `StreamingStats.save` with the same extractor.
        num_samples: Images per evaluation.
        batch_size: Images per generator call.
        num_classes: K.
        dim_z: Latent size.
        truncation: Truncation threshold or None.
        seed: Seed of the latents.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        reference_stats_path: str,
        num_samples: int,
        batch_size: int,
        num_classes: int,
        dim_z: int,
        truncation: float | None = None,
        seed: int = 0,
    ):
        self.extractor = extractor
        self.reference_stats_path = reference_stats_path
        self.reference = StreamingStats.load(reference_stats_path)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.dim_z = dim_z
        self.truncation = truncation
        self.seed = seed

    def __call__(self, generate_fn: Callable) -> dict:
        """Evaluates `generate_fn`; returns the dict of `evaluate` (with this reference path)."""
        metrics = evaluate(
            generate_fn,
            self.extractor,
            self.reference,
            num_samples=self.num_samples,
            batch_size=self.batch_size,
            num_classes=self.num_classes,
            dim_z=self.dim_z,
            truncation=self.truncation,
            seed=self.seed,
            verbose=0,
        )
        metrics["reference_stats"] = self.reference_stats_path
        return metrics


# --------------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------------


def define_extractor_flags(flags_module) -> None:
    """Defines the extractor flags shared by the evaluation CLIs."""
    flags_module.DEFINE_enum("extractor", "tfgan_inception", list(EXTRACTOR_KINDS), "Extractor.")
    flags_module.DEFINE_string(
        "extractor_path",
        None,
        "tfgan_inception: TF-Hub URL or local module; keras_inception_v3: weights file; "
        "keras_model: model file or SavedModel directory.",
    )
    flags_module.DEFINE_string("feature_layer", None, "keras_model: feature layer name.")
    flags_module.DEFINE_string("logits_layer", None, "keras_model: logits layer name (for IS).")


def extractor_from_flags(flags_values) -> FeatureExtractor:
    """Builds the extractor named by the flags of `define_extractor_flags`."""
    return make_extractor(
        flags_values.extractor,
        path=flags_values.extractor_path,
        feature_layer=flags_values.feature_layer,
        logits_layer=flags_values.logits_layer,
    )


def json_line(record) -> str:
    """One line of strict JSON (NaN/Inf become null)."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(record), allow_nan=False)


def open_generator(model_dir: str | None = None, saved_model: str | None = None):
    """Loads the generator to evaluate from a training directory or an exported SavedModel.

    Args:
        model_dir: Training directory (restored by `tf_biggan.sample.load_generator`, which
            re-estimates the spectral norms of the EMA generator for its own weights).
        saved_model: SavedModel directory with the `default` signature and
            `assets/config.json`.

    Returns:
        An object with `generate(z, y_onehot)`, `dim_z`, `num_classes`, `resolution` and
        `class_names`.
    """
    if bool(model_dir) == bool(saved_model):
        raise ValueError("Give exactly one of model_dir and saved_model.")
    from tf_biggan.sample import load_generator

    return load_generator(model_dir=model_dir, saved_model=saved_model)


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    if bool(f.model_dir) == bool(f.saved_model):
        raise flags.ValidationError("Give exactly one of --model_dir and --saved_model.")
    # stdout carries only the JSON result; progress bars and library prints go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        generator = open_generator(f.model_dir, f.saved_model)
        extractor = extractor_from_flags(f)
        metrics = evaluate(
            generator.generate,
            extractor,
            f.reference_stats,
            num_samples=f.num_samples,
            batch_size=f.batch_size,
            num_classes=generator.num_classes,
            dim_z=generator.dim_z,
            truncation=f.truncation,
            seed=f.seed,
            kid_subsets=f.kid_subsets,
            kid_subset_size=f.kid_subset_size,
        )
    print(json_line(metrics), flush=True)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model_dir", None, "Training directory (latest checkpoint, EMA G).")
    flags.DEFINE_string("saved_model", None, "Exported SavedModel directory.")
    flags.DEFINE_string("reference_stats", None, "Reference .npz (tools/reference_stats.py).")
    flags.DEFINE_integer("num_samples", 50_000, "Number of generated images.")
    flags.DEFINE_integer("batch_size", 50, "Images per generator call.")
    flags.DEFINE_float("truncation", None, "Truncation threshold on |z|; unset: none.")
    flags.DEFINE_integer("seed", 0, "Seed of latents and KID subsets.")
    flags.DEFINE_integer("kid_subsets", 100, "KID subsets.")
    flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size.")
    define_extractor_flags(flags)
    flags.mark_flag_as_required("reference_stats")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
