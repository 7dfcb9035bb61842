"""Differentiable augmentation (DiffAugment) for GAN training on small data sets.

Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020 (https://arxiv.org/abs/2006.10738). The same random transformation family is
applied to real and generated images before the discriminator; every op is differentiable
with respect to the images, so the generator is trained through it.

Policies (comma-separated, applied in this order of appearance):
  * "color": per-image brightness shift in [-0.5, 0.5), saturation factor in [0, 2),
    contrast factor in [0.5, 1.5) (values on the [-1, 1] scale);
  * "translation": per-image integer shift of up to 1/8 of the height/width in each axis,
    with zero padding;
  * "cutout": one zeroed square of half the image size per image, at a random centre; the
    square is clipped at the borders.

All ops are plain gathers, comparisons and arithmetic, so the function runs inside
`tf.function` and compiles under XLA. With `seed` given, stateless random ops make the
result a pure function of `(images, seed)`.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["POLICIES", "diff_augment"]

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


class _Rng:
    """Uniform samples, stateless when a seed is given (one sub-seed per call)."""

    def __init__(self, seed):
        self._seed = None if seed is None else tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if self._seed is not None and self._seed.shape.rank == 0:
            self._seed = tf.stack([self._seed, tf.constant(0, tf.int64)])
        self._calls = 0

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        self._calls += 1
        if self._seed is None:
            return tf.random.uniform(shape, minval, maxval, dtype=dtype)
        # Philox explicitly, and floats built from integers: "auto_select" and the float
        # kernel differ under XLA, the integer Philox stream does not, and the same seed must
        # give the same augmentation with and without jit_compile.
        seed = tf.random.experimental.stateless_fold_in(self._seed, self._calls, alg="philox")
        if dtype.is_integer:
            return tf.random.stateless_uniform(
                shape, seed, minval, maxval, dtype=dtype, alg="philox"
            )
        bits = tf.random.stateless_uniform(shape, seed, 0, 1 << 24, dtype=tf.int32, alg="philox")
        unit = tf.cast(bits, dtype) * (1.0 / (1 << 24))
        return minval + unit * (maxval - minval)


def _color(images, rng):
    batch = tf.shape(images)[0]
    dtype = images.dtype
    images = images + (tf.cast(rng.uniform([batch, 1, 1, 1]), dtype) - 0.5)
    mean = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - mean) * tf.cast(rng.uniform([batch, 1, 1, 1]) * 2.0, dtype) + mean
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * tf.cast(rng.uniform([batch, 1, 1, 1]) + 0.5, dtype) + mean
    return images


def _translation(images, rng, ratio=TRANSLATION_RATIO):
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    ty = rng.uniform([batch, 1], -shift_y, shift_y + 1, dtype=tf.int32)
    tx = rng.uniform([batch, 1], -shift_x, shift_x + 1, dtype=tf.int32)
    # Output pixel (y, x) reads input (y + ty, x + tx); indices that fall outside read the
    # one-pixel zero border of the padded image.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = tf.clip_by_value(tf.range(height)[None, :] + ty + 1, 0, height + 1)  # [B, H]
    cols = tf.clip_by_value(tf.range(width)[None, :] + tx + 1, 0, width + 1)  # [B, W]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W+2, C]
    return tf.gather(out, cols, axis=2, batch_dims=1)  # [B, H, W, C]


def _cutout(images, rng, ratio=CUTOUT_RATIO):
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    offset_y = rng.uniform([batch, 1, 1], 0, height + (1 - size_y % 2), dtype=tf.int32)
    offset_x = rng.uniform([batch, 1, 1], 0, width + (1 - size_x % 2), dtype=tf.int32)
    ys = tf.range(height)[None, :, None]
    xs = tf.range(width)[None, None, :]
    top = offset_y - size_y // 2
    left = offset_x - size_x // 2
    inside = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    mask = tf.cast(tf.logical_not(inside), images.dtype)[..., None]  # [B, H, W, 1]
    return images * mask


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(
    images: tf.Tensor, policy: str = "color,translation,cutout", seed=None
) -> tf.Tensor:
    """Applies DiffAugment.

    Args:
      images: float `[B, H, W, C]` with static H, W; values in [-1, 1].
      policy: comma-separated subset of "color", "translation", "cutout"; "" is identity.
      seed: None (stateful random ops) or an int / int `[2]` tensor for stateless ops.

    Returns:
      Augmented images, same shape and dtype (values may leave [-1, 1] after "color").

    Raises:
      ValueError: unknown policy name or images without static height/width.
    """
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in _OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {POLICIES}")
    if not names:
        return images
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[2] is None:
        raise ValueError(f"diff_augment needs [B, H, W, C] with static H, W; got {images.shape}")
    rng = _Rng(seed)
    for name in names:
        images = _OPS[name](images, rng)
    return images
