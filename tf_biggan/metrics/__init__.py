"""Sample-quality metrics for BigGAN: FID, Inception Score, KID, precision/recall.

Both FID and IS move with the extractor's weights, the resizing of the images, the number of
samples and the truncation threshold, so every result produced here records the extractor, the
sample count and the truncation it was measured with.

Modules:

* `statistics`: `StreamingStats` (streaming mean / covariance and a feature reservoir) and the
  pure numpy metrics (`frechet_distance`, `inception_score`, `kernel_inception_distance`,
  `precision_recall`, `class_accuracy`).
* `extractors`: `FeatureExtractor` and its subclasses (TF-GAN Inception, Keras InceptionV3, a
  user Keras model), `make_extractor` and the extractor flag helpers of the CLIs.
* `runners`: `compute_generator_stats`, `compute_dataset_stats`, `evaluate`,
  `PeriodicEvaluator`, `open_generator` and `json_line`.

The command-line program is `python -m tf_biggan.eval`.
"""

from tf_biggan.metrics.extractors import (
    EXTRACTOR_KINDS,
    TFGAN_INCEPTION_URL,
    FeatureExtractor,
    KerasInceptionV3Extractor,
    KerasModelExtractor,
    TFGANInceptionExtractor,
    define_extractor_flags,
    extractor_from_flags,
    make_extractor,
)
from tf_biggan.metrics.runners import (
    PeriodicEvaluator,
    compute_dataset_stats,
    compute_generator_stats,
    evaluate,
    generated_labels,
    json_line,
    open_generator,
)
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
    "StreamingStats",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
    "class_accuracy",
    "softmax",
    "FeatureExtractor",
    "TFGANInceptionExtractor",
    "KerasInceptionV3Extractor",
    "KerasModelExtractor",
    "make_extractor",
    "define_extractor_flags",
    "extractor_from_flags",
    "TFGAN_INCEPTION_URL",
    "EXTRACTOR_KINDS",
    "generated_labels",
    "compute_generator_stats",
    "compute_dataset_stats",
    "evaluate",
    "PeriodicEvaluator",
    "open_generator",
    "json_line",
]
