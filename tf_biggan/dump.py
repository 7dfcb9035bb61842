"""Many generated samples as uint8 files, for FID tools outside TensorFlow.

`python -m tf_biggan.sample --mode=dump --num_samples=50000 --output=OUT` (or `dump_samples`)
writes, by the form of `OUT`:

* `OUT` ending in `.npz`: key `arr_0`, uint8 `[N, R, R, 3]` (the layout of the reference batches
  common in the diffusion literature, and what `np.savez(path, images)` writes), and key
  `labels`, int64 `[N]`, the class of each image.
* any other `OUT`: a folder (created; it must be empty or absent) of `000000.png`,
  `000001.png`, ... (RGB, R × R) and `labels.csv` (`file,label`, one row per image), which
  pytorch-fid (`python -m pytorch_fid OUT reference`) and clean-fid (`fid.compute_fid(OUT, ...)`)
  read as a folder of images.

Image i is of class `classes[i % len(classes)]` (all classes by default): the classes in
turn, so every class gets N / K images up to one, as `tf_biggan.metrics.evaluate` draws them.
z comes from `tf_biggan.imaging.latent_batches`: with the same seed, truncation and batch
size the dump holds exactly the images `tf-biggan-eval` measures, rounded to uint8 with
`imaging.to_uint8` as eval rounds them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zipfile

import keras
import numpy as np
import tensorflow as tf

from tf_biggan import imaging, paths

__all__ = ["LABELS_CSV", "dump_samples", "dump_labels"]

LABELS_CSV = "labels.csv"


def dump_labels(num_samples: int, classes) -> np.ndarray:
    """int64 `[num_samples]`: the class of each dumped image, `classes[i % len(classes)]`."""
    classes = np.asarray(list(classes), np.int64)
    if num_samples < 1 or classes.size == 0:
        raise ValueError(f"need num_samples >= 1 and some classes, got {num_samples}, {classes}")
    return classes[np.arange(num_samples) % classes.size]


def dump_samples(
    gen,
    output: str,
    num_samples: int,
    classes=None,
    truncation=None,
    seed: int = 0,
    batch_size: int = 50,
    verbose: int = 1,
) -> np.ndarray:
    """Generates `num_samples` images and writes them as uint8 to `output` (see the module).

    Args:
      gen: a `tf_biggan.loader.LoadedGenerator` (`generate`, `dim_z`, `num_classes`).
      output: a `.npz` path, or a folder (absent or empty).
      num_samples: N.
      classes: class indices to cycle over; None for all `gen.num_classes`.
      truncation: None for z ~ N(0, I), or t > 0 to resample entries with |z| > t.
      seed: seed of z (`imaging.latent_batches`).
      batch_size: images per generator call (part of the z seeding, as in eval).
      verbose: 1 shows a progress bar (on stdout; a line every 30 s when it is not a
        terminal).

    Returns:
      The labels written, int64 `[N]`.
    """
    output = paths.expand(output)
    labels = dump_labels(num_samples, range(gen.num_classes) if classes is None else classes)
    if labels.min() < 0 or labels.max() >= gen.num_classes:
        raise ValueError(f"classes must lie in [0, {gen.num_classes}), got {sorted(set(labels))}")
    writer = _NpzWriter if output.endswith(".npz") else _FolderWriter
    # Off a terminal (a log file, nohup) each update is a new line: one every 30 s, not per batch.
    interval = 0.05 if sys.stdout.isatty() else 30.0
    progbar = keras.utils.Progbar(
        num_samples, verbose=verbose, interval=interval, unit_name="image"
    )
    with writer(output, num_samples, gen.resolution, labels) as write:
        for start, z in imaging.latent_batches(
            num_samples, batch_size, gen.dim_z, truncation, seed
        ):
            y = np.eye(gen.num_classes, dtype=np.float32)[labels[start : start + len(z)]]
            write(start, imaging.to_uint8(gen.generate(z, y)).numpy())
            progbar.update(start + len(z))
    return labels


class _NpzWriter:
    """Fills a memory-mapped `.npy` in a temporary folder (50,000 images at 256 px are 9.8 GB,
    more than fits in memory), then stores it uncompressed as `arr_0` of the `.npz`."""

    def __init__(self, output, num_samples, resolution, labels):
        self.output, self.labels = output, labels
        self.tmp = tempfile.mkdtemp(prefix="tf_biggan_dump_")
        self.images = np.lib.format.open_memmap(
            os.path.join(self.tmp, "arr_0.npy"),
            mode="w+",
            dtype=np.uint8,
            shape=(num_samples, resolution, resolution, 3),
        )

    def __enter__(self):
        return self.write

    def write(self, start, images):
        self.images[start : start + len(images)] = images

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self._finish()
        finally:
            del self.images
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _finish(self):
        self.images.flush()
        np.save(os.path.join(self.tmp, "labels.npy"), self.labels)
        staged = os.path.join(self.tmp, "samples.npz")
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key in ("arr_0", "labels"):
                archive.write(os.path.join(self.tmp, f"{key}.npy"), f"{key}.npy")
        parent = os.path.dirname(self.output)
        if parent:
            tf.io.gfile.makedirs(parent)
        if "://" in self.output:
            tf.io.gfile.copy(staged, self.output, overwrite=True)
        else:
            shutil.move(staged, self.output)


class _FolderWriter:
    """PNG files `%06d.png` and `labels.csv` in a new (or empty) folder."""

    def __init__(self, output, num_samples, resolution, labels):
        del num_samples, resolution
        if tf.io.gfile.exists(output) and (
            not tf.io.gfile.isdir(output) or tf.io.gfile.listdir(output)
        ):
            raise FileExistsError(
                f"{output} exists and is not an empty folder; give a new folder or a .npz path"
            )
        tf.io.gfile.makedirs(output)
        self.output, self.labels = output, labels

    def __enter__(self):
        return self.write

    def write(self, start, images):
        for i, image in enumerate(images, start):
            imaging.write_png(os.path.join(self.output, f"{i:06d}.png"), image)

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            rows = [f"{i:06d}.png,{label}" for i, label in enumerate(self.labels)]
            with tf.io.gfile.GFile(os.path.join(self.output, LABELS_CSV), "w") as f:
                f.write("file,label\n" + "\n".join(rows) + "\n")
