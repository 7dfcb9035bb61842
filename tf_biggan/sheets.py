"""Sample sheets of a `LoadedGenerator`: class grids, truncation grids and interpolations.

Every sheet is a uint8 image `[rows * R + (rows + 1) * pad, cols * R + (cols + 1) * pad, 3]`
made by `imaging.image_grid`; classes are indices or names (`loader.parse_classes`), and
latents are `imaging.truncated_z` draws (see `tf_biggan.loader` on truncation).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_biggan import imaging, loader

DEFAULT_MAX_CLASSES = 10


def default_classes(num_classes: int, limit: int = DEFAULT_MAX_CLASSES) -> list[int]:
    """The classes drawn when none are named: all of them up to `limit`, else `limit`
    classes spread evenly over the index range (a 1000-class model: 0, 111, ..., 999)."""
    if num_classes <= limit:
        return list(range(num_classes))
    return [round(k * (num_classes - 1) / (limit - 1)) for k in range(limit)]


def _render(gen, z, y, rows, cols, batch_size, pad, truncation=None) -> np.ndarray:
    """The grid of G(z, y); `truncation` is one value for every image or a list of one
    value per row (the truncation grid), passed to `generate` with the row's images."""
    if isinstance(truncation, list):
        spans = [(row * cols, (row + 1) * cols, t) for row, t in enumerate(truncation)]
    else:
        spans = [(0, len(z), truncation)]
    images = [
        gen.generate(z[i : min(i + batch_size, stop)], y[i : min(i + batch_size, stop)], t)
        for begin, stop, t in spans
        for i in range(begin, stop, batch_size)
    ]
    images = tf.concat(images, axis=0)
    return imaging.image_grid(images, rows, cols, pad=pad).numpy()


def class_grid(
    gen, classes, samples_per_class: int, truncation=None, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """Rows are classes, columns samples; column j uses the same z in every row.

    Args:
      gen: a `LoadedGenerator`.
      classes: class indices or names (see `parse_classes`).
      samples_per_class: columns.
      truncation: None (no truncation) or a positive threshold.
      seed: int seed of the latents.

    Returns:
      uint8 grid of `len(classes)` x `samples_per_class` images.
    """
    classes = loader.parse_classes(gen, classes)
    z = imaging.truncated_z(samples_per_class, gen.dim_z, truncation, seed)
    z = np.tile(z, [len(classes), 1])
    y = loader.onehot(gen, np.repeat(classes, samples_per_class))
    return _render(gen, z, y, len(classes), samples_per_class, batch_size, pad, truncation)


def truncation_grid(
    gen, class_id, truncations, samples: int, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """The same z at several thresholds: rows are thresholds, columns samples.

    Row i uses `imaging.truncated_z(samples, dim_z, truncations[i], seed)`:
    the same N(0, I) draw with its out-of-range entries re-sampled from the
    same uniforms (see the module docstring). `None` means no truncation.

    Returns:
      uint8 grid of `len(truncations)` x `samples` images of one class.
    """
    (class_id,) = loader.parse_classes(gen, [class_id])
    truncations = list(truncations)
    z = np.concatenate([imaging.truncated_z(samples, gen.dim_z, t, seed) for t in truncations])
    y = loader.onehot(gen, [class_id] * len(z))
    return _render(gen, z, y, len(truncations), samples, batch_size, pad, truncations)


def z_interpolation_sheet(
    gen, classes, num_steps: int, truncation=None, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """One row per class: z moves linearly between two latents, the class is fixed.

    Row i interpolates between latents `2i` and `2i + 1` of
    `truncated_z(2 * len(classes), ...)`, both ends included.

    Returns:
      uint8 grid of `len(classes)` x `num_steps` images.
    """
    classes = loader.parse_classes(gen, classes)
    ends = imaging.truncated_z(2 * len(classes), gen.dim_z, truncation, seed)
    path = imaging.interpolate(ends[0::2], ends[1::2], num_steps)  # [steps, rows, dim_z]
    z = np.transpose(path, [1, 0, 2]).reshape(-1, gen.dim_z)
    y = loader.onehot(gen, np.repeat(classes, num_steps))
    return _render(gen, z, y, len(classes), num_steps, batch_size, pad, truncation)


def class_interpolation_sheet(
    gen,
    class_a,
    class_b,
    num_steps: int,
    num_rows: int,
    truncation=None,
    seed: int = 0,
    batch_size=64,
    pad=2,
) -> np.ndarray:
    """One z per row; y moves linearly from one-hot `class_a` to one-hot `class_b`.

    The generator's shared class embedding is linear in y, so a mixture of
    one-hots interpolates the class embedding, as in the paper's figures. The
    first and last columns are exactly the pure-class images.

    Returns:
      uint8 grid of `num_rows` x `num_steps` images.
    """
    class_a, class_b = loader.parse_classes(gen, [class_a, class_b])
    z = imaging.truncated_z(num_rows, gen.dim_z, truncation, seed)
    z = np.repeat(z, num_steps, axis=0)
    ys = imaging.interpolate(loader.onehot(gen, class_a), loader.onehot(gen, class_b), num_steps)
    y = np.tile(ys, [num_rows, 1])
    return _render(gen, z, y, num_rows, num_steps, batch_size, pad, truncation)
