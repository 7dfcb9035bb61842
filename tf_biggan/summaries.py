"""What the training loop reports: scalars, sample grids and periodic evaluations.

- `write_scalars`: losses, D's mean logits, img/s, learning rates, skipped updates and
  images, and every SN layer's top singular value (`spectral_norm_summaries`).
- `sample_grid`: a uint8 grid of the EMA generator's samples, one row per class.
- `PeriodicEvaluation` (configured by `EvalConfig`): FID / IS / KID / class accuracy of
  the EMA generator every `every` steps, keeping the best checkpoint by FID in
  `model_dir/best/`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import imaging, layers, model_files, paths
from tf_biggan import state as state_lib

SAMPLE_BATCH_SIZE = 8
"""Images per generator call when drawing the sample grids."""


def spectral_norm_summaries(state: state_lib.TrainState) -> dict[str, float]:
    """`sigma/G/<layer path>` and `sigma/D/<layer path>` for every SN layer."""
    out = {}
    for prefix, model in (("G", state.generator), ("D", state.discriminator)):
        for layer in layers.spectral_layers(model):
            out[f"sigma/{prefix}/{layer.path}"] = float(layer.top_singular_value())
    return out


def write_scalars(state, metrics: dict, step: int, skipped_images, sigmas: dict) -> None:
    """Writes the step's scalars to the default summary writer.

    Args:
      state: the `TrainState` (learning rates, skipped updates).
      metrics: name -> float (the step's metrics and `img/s`).
      step: the summary step.
      skipped_images: the input pipeline's counter of skipped images, or None.
      sigmas: from `spectral_norm_summaries`.
    """
    for name, value in {**metrics, **sigmas}.items():
        tf.summary.scalar(name, value, step=step)
    for name, optimizer in (("g", state.g_optimizer), ("d", state.d_optimizer)):
        tf.summary.scalar(
            f"learning_rate/{name}", float(optimizer.learning_rate.numpy()), step=step
        )
    tf.summary.scalar("updates/skipped_nonfinite", int(state.skipped_updates.numpy()), step=step)
    if skipped_images is not None:
        tf.summary.scalar("data/skipped_images", int(skipped_images.numpy()), step=step)


def write_run_description(operative_config: str, settings: dict, real_examples_png, step: int):
    """TensorBoard's view of what the run is: the operative gin config as text, the settings
    as hparams (HParams tab) and the real-examples grid, under the default writer.

    Args:
      operative_config: `gin.operative_config_str()`.
      settings: flat name -> value (None values are left out).
      real_examples_png: path of `real_examples.png`, or None when there is none.
      step: the summary step.
    """
    from tensorboard.plugins.hparams import api as hparams_api

    # Markdown: indented lines are shown as code, as written.
    text = "\n".join("    " + line for line in operative_config.splitlines())
    tf.summary.text("config/operative", text, step=step)
    hparams_api.hparams({k: v for k, v in settings.items() if v is not None})
    if real_examples_png and tf.io.gfile.exists(real_examples_png):
        grid = tf.io.decode_png(tf.io.read_file(real_examples_png), channels=3)
        tf.summary.image("data/real_examples", grid[None], step=step)


def sample_grid(generator, z, labels, batch_size: int = SAMPLE_BATCH_SIZE) -> np.ndarray:
    """A uint8 grid of `generator` samples, one row per class (`labels` sorted by class).

    The samples are generated `batch_size` at a time: self-attention at high resolution
    holds a `[batch, HW, HW/4]` matrix (268 MB per image at 128 px), so a whole grid of 80
    images at once would need 21 GB at 256 px.
    """
    onehot = tf.one_hot(labels, generator.num_classes)
    images = tf.concat(
        [
            generator(z[i : i + batch_size], onehot[i : i + batch_size], training=False)
            for i in range(0, len(labels), batch_size)
        ],
        axis=0,
    )
    classes = len(np.unique(labels))
    return imaging.image_grid(images, rows=classes, cols=len(labels) // classes).numpy()


class SampleGrids:
    """The EMA generator's grid at fixed z: `samples_per_class` images per class."""

    def __init__(
        self, dim_z: int, num_classes: int, samples_per_class: int, max_classes: int, seed: int
    ):
        classes = np.arange(min(num_classes, max_classes))
        self.labels = np.repeat(classes, samples_per_class).astype(np.int32)
        self.z = imaging.truncated_z(len(self.labels), dim_z, seed=seed)

    def write(self, generator, model_dir: str, step: int, chief: bool) -> None:
        """Writes the grid as a summary image and `model_dir/samples/step_<step>.png`."""
        # The EMA's `u` is G's; re-estimate σ for the averaged weights first.
        layers.refine_spectral_norms(generator)
        grid = sample_grid(generator, self.z, self.labels)
        if chief:
            tf.summary.image("images/ema", grid[None], step=step)
            imaging.write_png(os.path.join(model_dir, "samples", f"step_{step:08d}.png"), grid)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The periodic evaluation of the EMA generator during training.

    Attributes:
      every: steps between evaluations (0 = off).
      reference_stats: `.npz` from `tools/reference_stats.py`, made with the same extractor.
      num_samples, batch_size: generated images per evaluation, per batch.
      extractor, extractor_path, feature_layer, logits_layer: the feature extractor (see
        `tf_biggan.metrics.make_extractor`).
    """

    every: int = 0
    reference_stats: str | None = None
    num_samples: int = 5000
    batch_size: int = 50
    extractor: str = "tfgan_inception"
    extractor_path: str | None = None
    feature_layer: str | None = None
    logits_layer: str | None = None

    def __post_init__(self):
        if self.every < 0:
            raise ValueError(f"eval every must be >= 0, got {self.every}")
        if self.every and not self.reference_stats:
            raise ValueError(
                "eval_every > 0 needs eval_reference_stats (see tools/reference_stats.py)"
            )


class PeriodicEvaluation:
    """Evaluates the EMA generator and keeps the best checkpoint by FID in `out_dir/best/`.

    Every worker evaluates the same (mirrored) generator, but whether the FID improved is
    the chief's decision (`decide`, e.g. `JobDecision.chief_says`): the workers' FIDs
    could differ in the last bits, and saving the best checkpoint is a collective
    operation that all must join or none.

    The best checkpoint is written beside the previous one and the `checkpoint` file is
    renamed into place before the previous one is deleted; `best_fid.json` is written
    under a temporary name and renamed over the old record. A crash leaves the old best
    or the new one, never a mix that cannot be read.
    """

    def __init__(
        self,
        config: EvalConfig,
        num_classes: int,
        dim_z: int,
        out_dir: str,
        checkpoint,
        seed: int,
        decide=lambda improved: improved,
    ):
        from tf_biggan import metrics

        self.every = config.every
        self.decide = decide
        self.evaluator = metrics.PeriodicEvaluator(
            metrics.make_extractor(
                config.extractor,
                paths.expand(config.extractor_path),
                config.feature_layer,
                config.logits_layer,
            ),
            paths.expand(config.reference_stats),
            num_samples=config.num_samples,
            batch_size=config.batch_size,
            num_classes=num_classes,
            dim_z=dim_z,
            seed=seed,
        )
        self.best = tf.train.CheckpointManager(
            checkpoint, os.path.join(out_dir, model_files.BEST_DIR), max_to_keep=1
        )

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, generator, step: int) -> dict:
        """Evaluates `generator` (the EMA G), writes summaries, saves when FID improves."""
        layers.refine_spectral_norms(generator)

        def generate(z, y):
            return generator(z, y, training=False)

        metrics = self.evaluator(generate)
        logging.info("step %d evaluation: %s", step, metrics)
        for name in ("fid", "inception_score_mean", "kid_mean", "class_accuracy"):
            if metrics.get(name) is not None:
                tf.summary.scalar(f"eval/{name}", metrics[name], step=step)
        for k, value in enumerate(metrics.get("per_class_accuracy") or ()):
            if value is not None:
                tf.summary.scalar(f"eval/class_accuracy/{k}", value, step=step)
        best_file = os.path.join(self.best.directory, "best_fid.json")
        previous = None
        if tf.io.gfile.exists(best_file):
            with tf.io.gfile.GFile(best_file) as f:
                previous = json.load(f)["fid"]
        if self.decide(previous is None or metrics["fid"] < previous):
            self.best.save(checkpoint_number=step)
            _write_atomically(best_file, json.dumps({"fid": metrics["fid"], "step": step}))
        return metrics


def _write_atomically(path: str, text: str) -> None:
    """Writes `path` under a temporary name beside it, then renames it into place."""
    temp = f"{path}.tmp"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temp, path, overwrite=True)
