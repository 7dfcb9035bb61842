"""Running generators and data sets through a feature extractor, and evaluating generators.

* `compute_generator_stats` and `compute_dataset_stats`: feature statistics of generated or
  real images (`tf_biggan.metrics.statistics.StreamingStats`).
* `evaluate`: FID, Inception Score, KID and class accuracy of a generator against reference
  statistics; `PeriodicEvaluator` runs it from the training loop every N steps.
* `open_generator`: the generator to evaluate, from a training directory or a SavedModel.
* `json_line`: the one line of strict JSON the evaluation CLIs print.

Every result records the extractor, the sample count and the truncation it was measured with:
the metrics move with all three. Its `pipeline` object states the whole measurement (extractor
path, input size and resize, reference file and its sample count, uint8 quantisation) so that
two numbers can be compared by reading their records.

Generated images are rounded to uint8 and mapped back to [-1, 1] before the extractor, exactly
as real images reach it through the data pipeline (`tf_biggan.data.decode`), so FID against
reference statistics of real images does not count 8-bit quantisation as a difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_biggan.data.decode import flip_and_scale
from tf_biggan.imaging import latent_batches, to_uint8
from tf_biggan.metrics.extractors import FeatureExtractor
from tf_biggan.metrics.statistics import (
    StreamingStats,
    class_accuracy,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    softmax,
)

__all__ = [
    "quantise_like_real_images",
    "generated_labels",
    "compute_generator_stats",
    "compute_dataset_stats",
    "evaluate",
    "PeriodicEvaluator",
    "open_generator",
    "json_line",
]


def _progbar(target: int, verbose: int):
    return keras.utils.Progbar(target, verbose=verbose, unit_name="image")


def quantise_like_real_images(images) -> tf.Tensor:
    """Float images in [-1, 1] as the data pipeline would give them after storing as uint8.

    `tf_biggan.imaging.to_uint8` (clip, round half up), then the pipeline's uint8 -> [-1, 1]
    mapping `x / 127.5 - 1` (`tf_biggan.data.decode.flip_and_scale`, no flip): a generated
    image saved as PNG and read back as real data gives the same values.
    """
    return flip_and_scale(to_uint8(images), None)


def generated_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """The conditioning labels of an evaluation's samples: the classes in turn, `i % K`."""
    return np.arange(num_samples) % num_classes


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
    quantise: bool = True,
) -> tuple[StreamingStats, np.ndarray | None]:
    """Generates `num_samples` images and accumulates their feature statistics.

    Labels cycle over the classes (so every class gets `num_samples / num_classes` images up to
    one), z comes from `tf_biggan.imaging.latent_batches` (a per-batch seed derived from `seed`):
    `python -m tf_biggan.sample --mode=dump` with the same seed, truncation and batch size
    writes these very images.

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
        quantise: Round the images to uint8 and back (`quantise_like_real_images`) before the
            extractor, as real images are; False feeds the generator's floats unchanged.

    Returns:
        `(stats, probs)`: the pool-feature `StreamingStats` and the class probabilities
        float64 `[num_samples, K']` (None if the extractor has no logits).
    """
    if num_samples < 2 or batch_size < 1 or num_classes < 1:
        raise ValueError(
            f"Bad sizes: num_samples={num_samples}, batch_size={batch_size}, "
            f"num_classes={num_classes}."
        )
    labels = generated_labels(num_samples, num_classes)

    def batches():
        for start, z in latent_batches(num_samples, batch_size, dim_z, truncation, seed):
            y_onehot = np.eye(num_classes, dtype=np.float32)[labels[start : start + len(z)]]
            images = generate_fn(tf.constant(z), tf.constant(y_onehot))
            yield quantise_like_real_images(images) if quantise else images

    return _accumulate(
        batches(), extractor, num_samples, max_kid_features, seed, verbose, keep_probs=True
    )


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

    def batches():
        for images, _ in dataset:
            yield tf.image.grayscale_to_rgb(images) if images.shape[-1] == 1 else images

    stats, _ = _accumulate(batches(), extractor, num_samples, max_kid_features, seed, verbose)
    return stats


def _accumulate(
    batches, extractor, num_samples, max_kid_features, seed, verbose, keep_probs=False
) -> tuple[StreamingStats, np.ndarray | None]:
    """Feature statistics of the first `num_samples` images of an iterable of image batches.

    Returns:
        `(stats, probs)`: the pool-feature `StreamingStats` and, with `keep_probs`, the class
        probabilities float64 `[num_samples, K']` (otherwise, or without logits, None).

    Raises:
        ValueError: the batches ended before `num_samples` images.
    """
    stats = None
    probs = []
    progbar = _progbar(num_samples, verbose)
    for images in batches:
        out = extractor(images[: num_samples - (0 if stats is None else stats.count)])
        if stats is None:
            stats = StreamingStats(
                out["pool"].shape[1], max_kid_features, seed=seed, extractor=extractor.name
            )
        stats.update(out["pool"])
        if keep_probs and out["logits"] is not None:
            probs.append(softmax(out["logits"]))
        progbar.update(stats.count)
        if stats.count >= num_samples:
            return stats, (np.concatenate(probs) if probs else None)
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


def _load_reference(reference_stats, precision_recall_k=None) -> tuple[StreamingStats, str | None]:
    """The reference statistics and their path (None for an object given in memory).

    Raises:
        ValueError: precision / recall are asked for and the reference holds too few features
            (checked here, before minutes of generation).
    """
    if isinstance(reference_stats, StreamingStats):
        reference, name = reference_stats, None
    else:
        reference, name = StreamingStats.load(reference_stats), str(reference_stats)
    if precision_recall_k is not None and reference.features.shape[0] <= precision_recall_k:
        raise ValueError(_too_few_features(precision_recall_k, name, reference.features))
    return reference, name


def _too_few_features(k, reference_name, real, fake=None) -> str:
    generated = "" if fake is None else f", the generated sample {fake.shape[0]}"
    return (
        f"Precision/recall with k={k} need more than {k} feature vectors on each side; the "
        f"reference statistics {reference_name or '(in memory)'} hold {real.shape[0]} (a file "
        f"with only mu and sigma holds none: compute it with tools/reference_stats.py)"
        f"{generated}."
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
    quantise: bool = True,
    precision_recall_k: int | None = None,
) -> dict:
    """FID, Inception Score, KID (and precision / recall) of a generator against reference
    statistics.

    Args:
        generate_fn: See `compute_generator_stats`.
        extractor: A `FeatureExtractor`; must be the one the reference was computed with.
        reference_stats: Path of an `.npz` written by `StreamingStats.save`, or the object.
        num_samples, batch_size, num_classes, dim_z, truncation, seed, quantise: See
            `compute_generator_stats`.
        is_splits: Inception Score splits.
        kid_subsets, kid_subset_size: See `kernel_inception_distance`.
        verbose: 1 shows a progress bar.
        precision_recall_k: If set, the improved precision and recall (Kynkäänniemi et al.,
            2019, `statistics.precision_recall`) with this k, between the reference's feature
            sample and the generated one (up to 10,000 each, the reservoirs KID uses).

    Returns:
        `{"fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std",
        "class_accuracy", "per_class_accuracy", "precision", "recall", "num_samples",
        "truncation", "extractor", "reference_stats", "pipeline"}`. None: the IS fields when
        the extractor has no logits; the KID fields when the reference holds no feature sample
        (a TTUR or pytorch-fid file with only `mu` and `sigma`); precision and recall unless
        asked for; the accuracy fields (`class_accuracy`) unless the extractor classifies the
        generator's own `num_classes` classes (`tools/fmnist_classifier.py`). `pipeline` is
        `_pipeline_record` with the precision / recall settings.
    """
    reference, reference_name = _load_reference(reference_stats, precision_recall_k)
    generated, probs = compute_generator_stats(
        generate_fn, extractor, num_samples, batch_size, num_classes, dim_z, truncation, seed,
        verbose=verbose, quantise=quantise,
    )  # fmt: skip
    _check_compatible(reference, generated, reference_name or "(in memory)")
    fid = frechet_distance(generated.mean, generated.cov, reference.mean, reference.cov)
    is_mean = is_std = None
    accuracy = {"class_accuracy": None, "per_class_accuracy": None}
    if probs is not None:
        is_mean, is_std = inception_score(probs, splits=min(is_splits, num_samples))
        if probs.shape[1] == num_classes:
            accuracy = class_accuracy(probs, generated_labels(num_samples, num_classes))
    kid_mean, kid_std = _kid(reference, generated, kid_subsets, kid_subset_size, seed)
    pr_metrics, pr_settings = _precision_recall(
        reference, generated, precision_recall_k, reference_name
    )
    pipeline = _pipeline_record(
        extractor, reference, reference_name, num_samples, truncation, quantise
    )
    return {
        "fid": fid,
        "inception_score_mean": is_mean,
        "inception_score_std": is_std,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **accuracy,
        **pr_metrics,
        "num_samples": int(num_samples),
        "truncation": None if truncation is None else float(truncation),
        "extractor": extractor.name,
        "reference_stats": reference_name,
        "pipeline": {**pipeline, "precision_recall": pr_settings},
    }


def _kid(reference, generated, subsets, subset_size, seed) -> tuple[float | None, float | None]:
    """KID's mean and std, or `(None, None)` when the reference holds no feature sample."""
    if reference.features.shape[0] < 2:
        return None, None
    return kernel_inception_distance(
        generated.features, reference.features, subsets, subset_size, seed=seed
    )


def _precision_recall(reference, generated, k, reference_name) -> tuple[dict, dict | None]:
    """`({"precision", "recall"}, settings)` of `evaluate`: None values and None settings when
    `k` is None, else the metrics and `{"k", "reference_features", "generated_features"}`."""
    if k is None:
        return {"precision": None, "recall": None}, None
    real, fake = reference.features, generated.features
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(_too_few_features(k, reference_name, real, fake))
    settings = {
        "k": int(k),
        "reference_features": int(real.shape[0]),
        "generated_features": int(fake.shape[0]),
    }
    return precision_recall(real, fake, k=k), settings


def _pipeline_record(extractor, reference, reference_name, num_samples, truncation, quantise):
    """How an `evaluate` number was measured: two numbers compare when these agree."""
    return {
        "extractor": extractor.describe(),
        "num_samples": int(num_samples),
        "truncation": None if truncation is None else float(truncation),
        "reference_stats": reference_name,
        "reference_count": reference.count,
        "reference_extractor": reference.extractor,
        "reference_features": int(reference.features.shape[0]),
        "generated_images": ("quantised to uint8" if quantise else "float, not quantised to uint8"),
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
        # The arguments of `evaluate` that stay the same from one evaluation to the next.
        self.settings = dict(
            num_samples=num_samples,
            batch_size=batch_size,
            num_classes=num_classes,
            dim_z=dim_z,
            truncation=truncation,
            seed=seed,
        )

    def __call__(self, generate_fn: Callable) -> dict:
        """Evaluates `generate_fn`; returns the dict of `evaluate` (with this reference path)."""
        metrics = evaluate(generate_fn, self.extractor, self.reference, verbose=0, **self.settings)
        metrics["reference_stats"] = self.reference_stats_path
        metrics["pipeline"]["reference_stats"] = self.reference_stats_path
        return metrics


def json_line(record) -> str:
    """One line of strict JSON (NaN/Inf become null), as the evaluation CLIs print.

    Args:
        record: JSON-serialisable dicts, lists and scalars, e.g. an `evaluate` record.

    Returns:
        The JSON text, without a newline.
    """

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(record), allow_nan=False)


def open_generator(
    model_dir: str | None = None,
    saved_model: str | None = None,
    step: int | None = None,
    best: bool = False,
    precision: str | None = None,
):
    """Loads the generator to evaluate from a training directory or an exported SavedModel.

    Args:
        model_dir: Training directory (restored by `tf_biggan.loader.load_generator`, which
            re-estimates the spectral norms of the EMA generator for its own weights).
        saved_model: SavedModel directory with the `default` signature and
            `assets/config.json`.
        step: With `model_dir`, the checkpoint of this step (default the latest).
        best: With `model_dir`, the best checkpoint kept by the periodic evaluation.
        precision: "float32" or "bfloat16" (`tf_biggan.precision`); None: float32 for a
            `model_dir`, the export's own for a `saved_model`.

    Returns:
        A `tf_biggan.loader.LoadedGenerator`: `generate(z, y_onehot)`, `dim_z`, `num_classes`,
        `resolution`, `class_names` and `describe()` (source, checkpoint and step).
    """
    if bool(model_dir) == bool(saved_model):
        raise ValueError("Give exactly one of model_dir and saved_model.")
    # Imported here: loading a generator needs the networks, computing metrics does not.
    from tf_biggan.loader import load_generator

    return load_generator(
        model_dir=model_dir, saved_model=saved_model, step=step, best=best, precision=precision
    )
