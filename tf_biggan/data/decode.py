"""Image decoding and preprocessing shared by every source and the pipeline.

The preprocessing follows the paper's ImageNet pipeline (Brock et al. 2019, after SA-GAN):
centre crop to a square, resize to the training resolution (bilinear with antialiasing, which
averages like an area filter when shrinking), optional random horizontal flip, values scaled
to [-1, 1]. The resized image is rounded to uint8 before the flip and the scaling, so a
cached pipeline (which caches the uint8 image) and a streamed one yield the same bits.

The alternative `fit="pad"` does not upscale an image no larger than the resolution: it
places it in the centre of a black canvas, as the reference port's 28 px Fashion-MNIST runs
pad with zeros, since an upscale blurs the details that tell such small images apart.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "FITS",
    "check_fit",
    "crop_pad",
    "crop_resize",
    "decode_to_rgb_uint8",
    "fit_image",
    "flip_and_scale",
    "preprocess_image",
]

FITS = ("resize", "pad")
"""How an image is brought to the training resolution (see `fit_image`)."""


def decode_to_rgb_uint8(contents: tf.Tensor) -> tf.Tensor:
    """Decodes a JPEG/PNG/BMP/GIF file to uint8 RGB.

    Grey is replicated to three channels; an alpha channel is composited over white (so
    transparent areas do not show whatever colour they happen to store); 16-bit PNGs are
    reduced to 8 bits; only the first frame of an animated GIF is kept.

    Args:
      contents: scalar string tensor, the file's bytes.

    Returns:
      uint8 `[H, W, 3]`.
    """
    image = tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)
    channels = tf.shape(image)[-1]

    def grey_to_rgb(grey):
        return tf.tile(grey, [1, 1, 3])

    def over_white(rgb, alpha):
        alpha = tf.cast(alpha, tf.float32) / 255.0
        mixed = tf.cast(rgb, tf.float32) * alpha + 255.0 * (1.0 - alpha)
        return tf.cast(tf.round(mixed), tf.uint8)

    rgb = tf.case(
        [
            (channels == 1, lambda: grey_to_rgb(image[..., :1])),
            (channels == 2, lambda: over_white(grey_to_rgb(image[..., :1]), image[..., 1:2])),
            (channels == 4, lambda: over_white(image[..., :3], image[..., 3:4])),
        ],
        default=lambda: image[..., :3],
    )
    rgb.set_shape([None, None, 3])
    return rgb


def _centre_crop(image: tf.Tensor, height, width) -> tf.Tensor:
    """The centred `[height, width]` window of `image [H, W, C]` (height <= H, width <= W)."""
    shape = tf.shape(image)
    top = (shape[0] - height) // 2
    left = (shape[1] - width) // 2
    return image[top : top + height, left : left + width, :]


def crop_resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Centre square crop and antialiased bilinear resize, rounded back to uint8.

    Args:
      image: uint8 `[H, W, 3]`.
      resolution: output side length R.

    Returns:
      uint8 `[R, R, 3]`.
    """
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = _centre_crop(image, side, side)
    image = tf.image.resize(
        tf.cast(image, tf.float32), [resolution, resolution], method="bilinear", antialias=True
    )
    # Rounding to 8 bits keeps the cached and the streamed paths bit-identical and lets the
    # cache hold uint8 (4x smaller than float).
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    image.set_shape([resolution, resolution, 3])
    return image


def crop_pad(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Centre crop of each side to at most R, then centre placement on a black R×R canvas.

    No pixel is resampled. For a 28×28 image at R = 32 the canvas has 2 black (0) rows and
    columns on each side; an odd margin puts the extra pixel at the bottom or right.

    Args:
      image: uint8 `[H, W, 3]`.
      resolution: output side length R.

    Returns:
      uint8 `[R, R, 3]`.
    """
    shape = tf.shape(image)
    kept_height = tf.minimum(shape[0], resolution)
    kept_width = tf.minimum(shape[1], resolution)
    image = _centre_crop(image, kept_height, kept_width)
    pad_top = (resolution - kept_height) // 2
    pad_left = (resolution - kept_width) // 2
    image = tf.image.pad_to_bounding_box(image, pad_top, pad_left, resolution, resolution)
    image.set_shape([resolution, resolution, 3])
    return image


def check_fit(fit: str) -> None:
    """Raises `ValueError` unless `fit` is one of `FITS`."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(map(repr, FITS))}, got {fit!r}")


def fit_image(image: tf.Tensor, resolution: int, fit: str = "resize") -> tf.Tensor:
    """Brings an image to the training resolution, as uint8.

    Args:
      image: uint8 `[H, W, 3]`.
      resolution: output side length R.
      fit: "resize": centre square crop and antialiased bilinear resize (`crop_resize`),
        up or down. "pad": never upsamples. An image whose sides are both at most R (a
        28×28 image at R = 32) is placed, unresampled, in the centre of a black canvas
        (pixel value 0, which the scaling maps to -1); an image whose sides both exceed R is
        centre cropped and resized down as with "resize"; one with a single side longer
        than R has that side centre cropped to R and the other padded (`crop_pad`).

    Returns:
      uint8 `[R, R, 3]`.

    Raises:
      ValueError: `fit` is not one of `FITS`.
    """
    check_fit(fit)
    if fit == "resize":
        return crop_resize(image, resolution)
    shape = tf.shape(image)
    return tf.cond(
        tf.minimum(shape[0], shape[1]) > resolution,
        lambda: crop_resize(image, resolution),
        lambda: crop_pad(image, resolution),
    )


def flip_and_scale(image: tf.Tensor, flip_seed: tf.Tensor | None) -> tf.Tensor:
    """Optional stateless horizontal flip, then uint8 -> float32 in [-1, 1].

    Args:
      image: uint8 `[H, W, 3]`.
      flip_seed: int64 `[2]` seed of a random left-right flip, or None for no flip.

    Returns:
      float32 `[H, W, 3]` in [-1, 1].
    """
    if flip_seed is not None:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def preprocess_image(image: tf.Tensor, resolution: int, fit: str = "resize") -> tf.Tensor:
    """Deterministic preprocessing of one image (no flip).

    Args:
      image: uint8 `[H, W, 3]`.
      resolution: output side length.
      fit: "resize" or "pad" (see `fit_image`).

    Returns:
      float32 `[resolution, resolution, 3]` in [-1, 1].
    """
    return flip_and_scale(fit_image(image, resolution, fit), None)
