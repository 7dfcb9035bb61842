"""Tests for tf_biggan.data.decode: file decoding to uint8 RGB, crop/resize or pad, scaling."""

import numpy as np
import pytest
import tensorflow as tf
from data_testlib import bmp, over_white, png, scaled, solid

from tf_biggan import data
from tf_biggan.data import decode


@pytest.mark.parametrize(
    "contents, rgb, tol",
    [
        (png(solid((200, 10, 10))), (200, 10, 10), 0),
        (png(solid((90,), channels=1)), (90, 90, 90), 0),
        (png(solid((100, 0, 50, 128), channels=4)), over_white((100, 0, 50), 128), 0),
        (png(solid((100, 64), channels=2)), over_white((100, 100, 100), 64), 0),
        # 16-bit grey 40000 -> 8 bits by dropping the low byte: 40000 >> 8 = 156.
        (png(solid((40000,), channels=1, dtype=np.uint16)), (156, 156, 156), 0),
        (bmp(solid((70, 80, 90))), (70, 80, 90), 0),
        (tf.io.encode_jpeg(solid((20, 20, 220)), quality=95).numpy(), (20, 20, 220), 4),
    ],
    ids=["rgb", "grey", "rgba", "grey_alpha", "grey16", "bmp", "jpeg"],
)
def test_decode_to_rgb_uint8_gives_the_colour_of_every_format(contents, rgb, tol):
    image = data.decode_to_rgb_uint8(tf.constant(contents)).numpy()
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image.reshape(-1, 3), np.broadcast_to(rgb, (12 * 16, 3)), atol=tol)


def test_crop_resize_takes_the_centre_square():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    # Same side: the centre 4 x 4 columns 1..4, unchanged by the resize.
    np.testing.assert_array_equal(decode.crop_resize(tf.constant(image), 4).numpy(), image[:, 1:5])
    wide = np.zeros((4, 8, 3), np.uint8)
    wide[:, 2:6] = 100
    wide[:, 6:] = 255
    np.testing.assert_array_equal(
        decode.crop_resize(tf.constant(wide), 2).numpy(), np.full((2, 2, 3), 100, np.uint8)
    )


def test_preprocess_image_scales_uint8_to_minus_one_one():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 1] = image[1, 0] = 255
    image[1, 1] = 51
    out = data.preprocess_image(tf.constant(image), 2).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, scaled(image))
    np.testing.assert_array_equal(out[..., 0], [[-1.0, 1.0], [1.0, scaled(51)]])


def test_fit_pad_never_upsamples():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (5, 3, 3), np.uint8)
    # Both sides at most R: unresampled in the centre; the odd margin's extra pixel goes to
    # the bottom and the right.
    padded = decode.fit_image(tf.constant(small), 8, "pad").numpy()
    expected = np.zeros((8, 8, 3), np.uint8)
    expected[1:6, 2:5] = small
    np.testing.assert_array_equal(padded, expected)
    # One side longer than R: that side is centre cropped, the other padded.
    tall = rng.integers(0, 256, (12, 4, 3), np.uint8)
    expected = np.zeros((8, 8, 3), np.uint8)
    expected[:, 2:6] = tall[2:10]
    np.testing.assert_array_equal(decode.fit_image(tf.constant(tall), 8, "pad").numpy(), expected)
    # Both sides longer: centre crop and resize down, as "resize" does.
    large = tf.constant(rng.integers(0, 256, (20, 16, 3), np.uint8))
    np.testing.assert_array_equal(
        decode.fit_image(large, 8, "pad").numpy(), decode.crop_resize(large, 8).numpy()
    )
    # "resize" upsamples the small image: no black border.
    assert decode.fit_image(tf.constant(small + 1), 8).numpy().min() > 0
    with pytest.raises(ValueError, match=r"fit must be one of 'resize', 'pad', got 'crop'"):
        decode.fit_image(tf.constant(small), 8, "crop")
