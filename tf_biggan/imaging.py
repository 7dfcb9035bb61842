"""Image and latent utilities shared by sampling, training summaries and export.

Pure TensorFlow / numpy; nothing here knows about the networks.

The truncation trick follows BigGAN (Brock, Donahue, Simonyan, "Large Scale GAN
Training for High Fidelity Natural Image Synthesis", ICLR 2019, Section 3.1):
z is drawn from N(0, I) and every entry whose magnitude exceeds the threshold
is re-sampled, i.e. each entry follows a normal distribution truncated to
``[-t, t]``. Instead of an unbounded re-sampling loop, which cannot run inside
a fixed graph, an entry that falls outside is replaced once by a draw from the
truncated normal made by inverse-CDF sampling. Both parts of that mixture have
the truncated-normal distribution, so the result has exactly the distribution
of the re-sampling loop (not the same numbers).

Functions that the SavedModel export and in-graph summaries use
(``truncated_normal_stateless``, ``to_uint8``, ``image_grid``) are TensorFlow
ops that trace inside ``tf.function`` and return tensors; host-side helpers
(``truncated_z``, ``interpolate``) return numpy arrays.
"""

import os

import numpy as np
import tensorflow as tf

from tf_biggan import paths

__all__ = [
    "image_grid",
    "interpolate",
    "read_png",
    "to_uint8",
    "truncated_normal_stateless",
    "truncated_z",
    "write_png",
]

# Smallest normal float32: keeps the inverse CDF finite when Phi(-t) underflows to 0.
_TINY = float(np.finfo(np.float32).tiny)


def truncated_normal_stateless(shape, truncation, seed) -> tf.Tensor:
    """Standard normal samples truncated to ``[-truncation, truncation]``, stateless.

    Usable inside a ``tf.function`` with tensor arguments (the export samples z
    with it), with no Python branching on tensor values. Each entry is first
    drawn from N(0, 1); entries with ``|z| > truncation`` are replaced by an
    inverse-CDF draw from the truncated normal,
    ``|z| = -ndtri(Phi(-t) + v * (1/2 - Phi(-t)))`` with ``v ~ U[0, 1)`` and a
    random sign. This is the folded form of
    ``z = ndtri(Phi(-t) + u * (Phi(t) - Phi(-t)))``: it works in the lower tail,
    where float32 keeps its relative precision, and computes ``Phi(-t)`` with
    ``erfc``. The output therefore has exactly the distribution of BigGAN's
    re-sample-until-inside rule.

    A truncation that is not ``> 0`` (0, negative, NaN), ``+inf`` or ``None``
    means no truncation: the output is plain N(0, 1).

    Args:
      shape: 1-D int list or tensor, the output shape.
      truncation: float scalar (Python number, tensor or ``None``), the threshold t.
      seed: shape ``[2]`` int32/int64 tensor, the stateless RNG seed; the same
        seed gives the same samples.

    Returns:
      float32 tensor of ``shape``; with a positive finite truncation every entry
      satisfies ``|z| <= truncation``.
    """
    if truncation is None:
        truncation = 0.0
    t = tf.convert_to_tensor(truncation, dtype=tf.float32)
    if t.shape.rank not in (None, 0):
        raise ValueError(f"truncation must be a scalar, got shape {t.shape}.")
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise ValueError(f"seed must be an int tensor of shape [2], got shape {seed.shape}.")
    normal_seed, uniform_seed = tf.unstack(tf.random.split(seed, num=2))

    z = tf.random.stateless_normal(shape, seed=normal_seed, dtype=tf.float32)
    uniforms = tf.random.stateless_uniform(
        tf.concat([[2], tf.cast(shape, tf.int32)], axis=0), seed=uniform_seed, dtype=tf.float32
    )
    sign = tf.where(uniforms[0] < 0.5, -1.0, 1.0)

    # Replace t by 1 where it means "no truncation" so no NaN or inf is formed below.
    truncating = tf.logical_and(t > 0.0, tf.math.is_finite(t))
    t_safe = tf.where(truncating, t, 1.0)
    lower = 0.5 * tf.math.erfc(t_safe / np.sqrt(2.0))  # Phi(-t)
    p = tf.maximum(lower + uniforms[1] * (0.5 - lower), _TINY)
    # Rounding in erfc/ndtri can overshoot t by an ulp; the clip keeps the bound exact.
    resampled = sign * tf.minimum(-tf.math.ndtri(p), t_safe)

    outside = tf.logical_and(truncating, tf.abs(z) > t_safe)
    return tf.where(outside, resampled, z)


def truncated_z(batch_size: int, dim_z: int, truncation=None, seed=None) -> np.ndarray:
    """Samples latent vectors with BigGAN's truncation trick.

    Runs ``truncated_normal_stateless`` eagerly (inverse-CDF re-sampling of the
    entries outside ``[-t, t]``; see there), so an int seed gives the same z
    here and inside a traced function given the seed tensor ``[seed, 0]``.

    Args:
      batch_size: positive int B.
      dim_z: positive int, the latent size.
      truncation: ``None`` for plain N(0, I), or a positive float t.
      seed: int for reproducible samples, or ``None`` for fresh randomness.

    Returns:
      float32 numpy array ``[B, dim_z]``; with truncation, ``|z| <= t`` everywhere.
    """
    for name, value in (("batch_size", batch_size), ("dim_z", dim_z)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if truncation is not None and not (np.isfinite(truncation) and truncation > 0):
        raise ValueError(f"truncation must be None or a positive finite float, got {truncation!r}.")
    if seed is None:
        seed = int(np.random.default_rng().integers(np.iinfo(np.int64).max))
    elif not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None, got {seed!r}.")
    z = truncated_normal_stateless(
        [int(batch_size), int(dim_z)],
        truncation,
        tf.constant([int(seed), 0], dtype=tf.int64),
    )
    return z.numpy()


def latent_batches(num_samples: int, batch_size: int, dim_z: int, truncation=None, seed: int = 0):
    """The latents of a long run of samples, batch by batch, as evaluation and dumps draw them.

    Batch k holds samples `[k * batch_size, min((k + 1) * batch_size, num_samples))` with
    `truncated_z(b, dim_z, truncation, seed * 1_000_003 + k)`, so the same arguments give the
    same z in `tf_biggan.metrics.evaluate` and `tf_biggan.dump.dump_samples`.

    Yields:
      `(start, z)`: the index of the batch's first sample and float32 numpy `[b, dim_z]`.
    """
    for batch_index, start in enumerate(range(0, num_samples, batch_size)):
        b = min(batch_size, num_samples - start)
        yield start, truncated_z(b, dim_z, truncation, seed=seed * 1_000_003 + batch_index)


def to_uint8(images) -> tf.Tensor:
    """Maps float images in ``[-1, 1]`` to uint8 ``[0, 255]``.

    ``x -> floor((x + 1) * 127.5 + 0.5)``: round half up, so -1 -> 0, 1 -> 255
    and 0 (127.5) -> 128. Values outside ``[-1, 1]`` are clipped.

    Args:
      images: float tensor or array of any shape, nominally in ``[-1, 1]``.

    Returns:
      uint8 tensor of the same shape.
    """
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(f"to_uint8 expects float images in [-1, 1], got {images.dtype.name}.")
    scaled = tf.floor((tf.cast(images, tf.float32) + 1.0) * 127.5 + 0.5)
    return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


def image_grid(images, rows: int, cols: int, pad: int = 2, pad_value: int = 255) -> tf.Tensor:
    """Tiles a batch of images into one RGB image.

    Image ``k`` goes to row ``k // cols``, column ``k % cols``; its top-left
    pixel is at ``(pad + r * (H + pad), pad + c * (W + pad))``. Padding
    surrounds every image, including the outer border.

    Args:
      images: ``[N, H, W, C]`` with ``N == rows * cols`` and C in {1, 3}; uint8
        in ``[0, 255]`` or float in ``[-1, 1]`` (converted with ``to_uint8``).
        Grey images (C = 1) are repeated to RGB. Static shape required.
      rows: positive int.
      cols: positive int.
      pad: non-negative int, pixels between and around the images.
      pad_value: int in ``[0, 255]``, the padding grey level (255 = white).

    Returns:
      uint8 tensor ``[rows * H + (rows + 1) * pad, cols * W + (cols + 1) * pad, 3]``.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_floating:
        images = to_uint8(images)
    elif images.dtype != tf.uint8:
        raise ValueError(f"image_grid expects uint8 or float images, got {images.dtype.name}.")
    if images.shape.rank != 4 or not images.shape.is_fully_defined():
        raise ValueError(f"image_grid expects a static [N, H, W, C] shape, got {images.shape}.")
    n, h, w, c = images.shape
    if rows < 1 or cols < 1 or n != rows * cols:
        raise ValueError(f"image_grid got {n} images for a {rows} x {cols} grid.")
    if c not in (1, 3):
        raise ValueError(f"image_grid expects 1 or 3 channels, got {c}.")
    if pad < 0 or not 0 <= pad_value <= 255:
        raise ValueError(f"Need pad >= 0 and pad_value in [0, 255], got {pad} and {pad_value}.")
    if c == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    fill = tf.constant(pad_value, tf.uint8)
    # Pad bottom/right of each tile, interleave, then add the top/left border once.
    tiles = tf.pad(images, [[0, 0], [0, pad], [0, pad], [0, 0]], constant_values=fill)
    tiles = tf.reshape(tiles, [rows, cols, h + pad, w + pad, 3])
    grid = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3, 4]), [rows * (h + pad), cols * (w + pad), 3])
    return tf.pad(grid, [[pad, 0], [pad, 0], [0, 0]], constant_values=fill)


def write_png(path: str, image) -> None:
    """Writes one image as PNG, creating parent folders; works for gs:// paths.

    Args:
      path: destination file name (`~` and `$VARIABLES` expanded).
      image: ``[H, W, C]`` with C in {1, 3, 4}; uint8, or float in ``[-1, 1]``
        (converted with ``to_uint8``).
    """
    path = paths.expand(path)
    image = tf.convert_to_tensor(image)
    if image.dtype.is_floating:
        image = to_uint8(image)
    elif image.dtype != tf.uint8:
        raise ValueError(f"write_png({path!r}) expects uint8 or float, got {image.dtype.name}.")
    if image.shape.rank != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png({path!r}) expects [H, W, 1|3|4], got {image.shape}.")
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tf.io.write_file(path, tf.io.encode_png(image))


def read_png(path: str) -> tf.Tensor:
    """Reads a PNG file (local or gs://) as a uint8 ``[H, W, C]`` tensor."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"No PNG file at {path!r}.")
    return tf.io.decode_png(tf.io.read_file(path))


def interpolate(a, b, num_steps: int) -> np.ndarray:
    """Linear interpolation from ``a`` to ``b``, both ends included.

    Computed as ``(1 - s) * a + s * b`` for ``s = 0, 1/(n-1), ..., 1`` so the
    first and last entries equal ``a`` and ``b`` exactly.

    Args:
      a: array of any shape (e.g. a latent ``[dim_z]`` or a batch ``[B, dim_z]``).
      b: array of the same shape.
      num_steps: int >= 2, the number of points.

    Returns:
      numpy array ``[num_steps, *a.shape]``, float (float32 unless the inputs
      are float64).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"interpolate needs equal shapes, got {a.shape} and {b.shape}.")
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}.")
    dtype = np.float32
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        dtype = np.result_type(a.dtype, b.dtype, np.float32)
    s = np.linspace(0.0, 1.0, num_steps, dtype=dtype).reshape((num_steps,) + (1,) * a.ndim)
    return (1 - s) * a.astype(dtype) + s * b.astype(dtype)
