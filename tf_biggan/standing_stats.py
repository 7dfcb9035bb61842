"""Truncation-indexed "standing" batch-norm statistics of a generator (Brock et al., 2019,
appendix: re-estimate G's BN statistics by running it in training mode over many batches).

    python tools/standing_stats.py --model_dir=runs/imagenet128 [--num_entries=51]
        [--num_batches=16] [--batch_size=64] [--seed=0]

For each entry k of the table (truncation `t_k = k / (T - 1)`, T = `num_entries`; 51 as
in DeepMind's modules: 0 to 1 in steps of 0.02) the generator runs `num_batches` batches
with its batch norms normalising by the batch's statistics (training-mode BN) and the rest
in inference mode, and each BN's entry k is the average over the batches of the batch
mean and of the (biased) batch variance of its input. Batch b of entry k has
`z = imaging.truncated_z(batch_size, dim_z, t_k, seed=batch_seed(seed, k, b))` (z = 0
for t_0 = 0, the limit of truncation) and labels drawn uniformly from all classes
(`standing_batch`). Spectral norms are first set exactly
(`layers.refine_spectral_norms(exact=True)`), as `sample` and `export` use them.

The table is written to `model_dir/standing_stats.npz` with the checkpoint it was computed
for; `model_files.restore_ema_generator` (and so `sample`, `export`, `eval`, `tf_biggan.load`)
uses it with that checkpoint: then a truncation `0 < t <= 1` picks the table's entry for t
(interpolated between entries), see `layers.SyncBatchNorm`.
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np
import tensorflow as tf

from tf_biggan import imaging, layers, model_files, paths

DEFAULT_ENTRIES = 51


class _Collector:
    """Sums of the batch means and variances one BN layer reports, and their count."""

    def __init__(self, channels: int):
        self.mean = tf.Variable(tf.zeros([channels]), trainable=False)
        self.variance = tf.Variable(tf.zeros([channels]), trainable=False)
        self.count = tf.Variable(0.0, trainable=False)

    def add(self, mean, variance) -> None:
        self.mean.assign_add(mean)
        self.variance.assign_add(variance)
        self.count.assign_add(1.0)

    def reset(self) -> None:
        for variable in (self.mean, self.variance, self.count):
            variable.assign(tf.zeros_like(variable))

    def averages(self) -> tuple[np.ndarray, np.ndarray]:
        count = float(self.count.numpy())
        return self.mean.numpy() / count, self.variance.numpy() / count


def batch_seed(seed: int, entry: int, batch: int) -> int:
    """The seed of batch `batch` of table entry `entry`."""
    return (int(seed) * 1_000_003 + entry) * 10_007 + batch


def standing_batch(generator, truncation: float, seed: int, batch_size: int):
    """`(z float32 [B, dim_z], y one-hot float32 [B, num_classes])` of one batch."""
    if truncation > 0:
        z = imaging.truncated_z(batch_size, generator.dim_z, truncation, seed=seed)
    else:
        z = np.zeros([batch_size, generator.dim_z], np.float32)
    labels = np.random.default_rng(seed).integers(generator.num_classes, size=batch_size)
    return z, np.eye(generator.num_classes, dtype=np.float32)[labels]


def accumulate_table(
    generator,
    num_entries: int = DEFAULT_ENTRIES,
    num_batches: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    verbose: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Accumulates the table of every BN of a built `generator` (see the module docstring).

    The generator's weights, SN state and moving statistics are not changed, except that
    the spectral norms are first set exactly.

    Args:
      generator: a built `networks.Generator`.
      num_entries: T >= 2, entries for truncation `k / (T - 1)`.
      num_batches, batch_size: batches averaged per entry and their size.
      seed: seed of the latents and labels.
      verbose: 1 shows a `keras.utils.Progbar` over all batches.

    Returns:
      One `(mean [T, C], variance [T, C])` float32 pair per layer of
      `layers.batch_norm_layers(generator)`, in that order.
    """
    if num_entries < 2 or num_batches < 1 or batch_size < 1:
        raise ValueError(
            f"need num_entries >= 2, num_batches >= 1, batch_size >= 1; got {num_entries}, "
            f"{num_batches}, {batch_size}"
        )
    layers.refine_spectral_norms(generator, exact=True)
    norms = layers.batch_norm_layers(generator)
    collectors = [_Collector(bn.moving_mean.shape[0]) for bn in norms]

    @tf.function
    def run(z, y):
        generator(z, y, training=False)

    shapes = [(num_entries, collector.mean.shape[0]) for collector in collectors]
    tables = [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for shape in shapes]
    progress = keras.utils.Progbar(num_entries * num_batches, verbose=verbose)
    try:
        for bn, collector in zip(norms, collectors, strict=True):
            bn.collect_batch_statistics(collector)
        for entry in range(num_entries):
            truncation = entry / (num_entries - 1)
            for collector in collectors:
                collector.reset()
            for batch in range(num_batches):
                z, y = standing_batch(
                    generator, truncation, batch_seed(seed, entry, batch), batch_size
                )
                run(tf.constant(z), tf.constant(y))
                progress.add(1)
            for table, collector in zip(tables, collectors, strict=True):
                table[0][entry], table[1][entry] = collector.averages()
    finally:
        for bn in norms:
            bn.collect_batch_statistics(None)
    return tables


def write_table(model_dir: str, tables, checkpoint_path: str) -> str:
    """Writes `tables` (from `accumulate_table`) for `checkpoint_path` into `model_dir`
    (`model_files.STANDING_STATS_FILE`); returns the file's path."""
    arrays = {"checkpoint": np.array(os.path.basename(checkpoint_path))}
    for index, (mean, variance) in enumerate(tables):
        arrays[f"mean_{index}"] = mean
        arrays[f"variance_{index}"] = variance
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = os.path.join(model_dir, model_files.STANDING_STATS_FILE)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    model_dir = paths.expand(f.model_dir)
    generator, _, checkpoint_path = model_files.restore_ema_generator(model_dir, f.checkpoint)
    tables = accumulate_table(generator, f.num_entries, f.num_batches, f.batch_size, f.seed)
    print(write_table(model_dir, tables, checkpoint_path), flush=True)


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model_dir", None, "Training or converted model_dir (EMA generator).")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix; default the latest.")
    flags.DEFINE_integer("num_entries", DEFAULT_ENTRIES, "Table entries, truncation 0 to 1.")
    flags.DEFINE_integer("num_batches", 16, "Batches averaged per entry.")
    flags.DEFINE_integer("batch_size", 64, "Images per batch.")
    flags.DEFINE_integer("seed", 0, "Seed of the latents and labels.")
    flags.mark_flags_as_required(["model_dir"])


def cli() -> None:
    """The `tf-biggan-standing-stats` console script."""
    from tf_biggan import cli as cli_lib

    cli_lib.run("tf_biggan.standing_stats", define_flags, main)


if __name__ == "__main__":
    cli()
