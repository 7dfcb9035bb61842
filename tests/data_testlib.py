"""Helpers of the `tf_biggan.data` tests: small image files, IDX files and pipeline readers."""

import functools
import gzip
import pathlib
import struct

import numpy as np
import tensorflow as tf

from tf_biggan import data

FASHION = "/usr/share/datasets/fashion-mnist"
REPO = pathlib.Path(__file__).resolve().parents[1]
FOLDER_CLASSES = ("apple", "bird", "cat")


def solid(colour, height=12, width=16, channels=3, dtype=np.uint8):
    """An image `[height, width, channels]` filled with `colour`."""
    return np.broadcast_to(np.asarray(colour, dtype), (height, width, channels)).copy()


def png(array) -> bytes:
    return tf.io.encode_png(array).numpy()


def write(path, contents):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents)


def bmp(rgb):
    """A 24-bit uncompressed BMP (bottom-up rows of BGR, each padded to 4 bytes)."""
    height, width, _ = rgb.shape
    stride = (width * 3 + 3) // 4 * 4
    rows = b"".join(
        rgb[y, :, ::-1].tobytes() + b"\0" * (stride - width * 3) for y in reversed(range(height))
    )
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(rows), 0, 0, 14 + len(info))
    return header + info + rows


def over_white(rgb, alpha):
    """The 8-bit colour `rgb` at 8-bit `alpha` composited over white: c*a + 255*(1-a)."""
    a = alpha / 255
    return tuple(round(c * a + 255 * (1 - a)) for c in rgb)


def make_folder(root):
    """Writes three classes of solid-colour images under `root`.

    Includes an RGBA PNG, a 16-bit grey PNG, a BMP, a JPEG, a nested file, a text file and
    one truncated PNG.

    Returns:
      `(root, expected)`; expected lists `(relative path, label, RGB colour, tolerance)` for
      the readable files, in listing order.
    """
    expected = []

    def add_png(rel, array, label, rgb, tol=0):
        write(root / rel, png(array))
        expected.append((rel, label, rgb, tol))

    add_png("apple/a0.png", solid((200, 10, 10)), 0, (200, 10, 10))
    add_png("apple/a1.png", solid((180, 30, 20)), 0, (180, 30, 20))
    add_png(
        "apple/a2_rgba.png", solid((100, 0, 50, 128), channels=4), 0, over_white((100, 0, 50), 128)
    )
    add_png("bird/b0.png", solid((10, 200, 10)), 1, (10, 200, 10))
    # 16-bit grey 40000 -> 8 bits by dropping the low byte: 40000 >> 8 = 156.
    add_png("bird/b1_grey16.png", solid((40000,), channels=1, dtype=np.uint16), 1, (156,) * 3)
    write(root / "bird/b2.BMP", bmp(solid((70, 80, 90))))
    expected.append(("bird/b2.BMP", 1, (70, 80, 90), 0))
    write(root / "cat/c0.jpg", tf.io.encode_jpeg(solid((20, 20, 220)), quality=95).numpy())
    expected.append(("cat/c0.jpg", 2, (20, 20, 220), 4))
    add_png("cat/c1.png", solid((30, 40, 200)), 2, (30, 40, 200))
    whole = png(solid((1, 2, 3)))
    write(root / "cat/c2_broken.png", whole[: len(whole) // 2])
    add_png("cat/nested/c3.png", solid((0, 60, 250)), 2, (0, 60, 250))
    write(root / "cat/notes.txt", b"not an image")
    return root, expected


def folder_source(root, **kwargs):
    return functools.partial(data.image_folder_source, root=str(root), **kwargs)


def first_batches(input_data, num_batches):
    """The first `num_batches` batches of a new iterator, concatenated: (images, labels)."""
    it = iter(input_data.dataset)
    batches = [next(it) for _ in range(num_batches)]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    return images, labels


def colour_of(image):
    """Mean 8-bit RGB colour of a preprocessed image in [-1, 1]."""
    return (image.reshape(-1, 3).mean(0) + 1.0) * 127.5


def scaled(rgb):
    """The pipeline's float32 value of the 8-bit colour `rgb`: c / 127.5 - 1."""
    return np.asarray(rgb, np.float32) / np.float32(127.5) - np.float32(1.0)


def write_idx(path, array, magic_dtype=0x08, gz=False):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, magic_dtype, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return str(path)


def index_idx(tmp_path, count=24, side=4, num_classes=3):
    """IDX files whose image i is filled with the value i (so examples identify themselves)."""
    images = np.repeat(np.arange(count, dtype=np.uint8), side * side).reshape(count, side, side)
    labels = np.arange(count) % num_classes
    return (
        write_idx(tmp_path / "img.idx.gz", images, gz=True),
        write_idx(tmp_path / "lab.idx", labels),
    )


def example_ids(images):
    """The value i of `index_idx` images back from preprocessed batches."""
    return np.round((images[:, 0, 0, 0] + 1.0) * 127.5).astype(int)
