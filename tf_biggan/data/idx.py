"""The IDX source (`idx_source`): MNIST / Fashion-MNIST format files, gzipped or not.

The arrays are read and validated whole when the source is built (magic number, data type,
dimensions, sizes, label range), so the pipeline never meets a bad example.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import gin
import numpy as np
import tensorflow as tf

from tf_biggan import paths
from tf_biggan.data.source import GIN_MODULE, Source, SourceRequest, preview

__all__ = ["FASHION_MNIST_CLASS_NAMES", "idx_source"]

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_idx(path: str, expected_ndim: int) -> np.ndarray:
    """Reads an IDX file of uint8 data (gzipped or not), validating magic and sizes."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise ValueError(
            f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim} "
            f"({'images' if expected_ndim == 3 else 'labels'})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: IDX header promises {dims} = {size} bytes of data, file has "
            f"{len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@gin.configurable(module=GIN_MODULE)
def idx_source(
    request: SourceRequest,
    *,
    images_path: str = gin.REQUIRED,
    labels_path: str = gin.REQUIRED,
    class_names: Sequence[str] | None = None,
) -> Source:
    """Greyscale IDX images (MNIST / Fashion-MNIST format) with IDX labels.

    Args:
      request: uses `num_classes` (labels must lie in [0, num_classes)); the arrays are
        validated whole, and `make_dataset` resizes (or pads, `fit`) and shards.
      images_path: IDX3 uint8 file `[N, H, W]`, optionally gzipped.
      labels_path: IDX1 uint8 file `[N]`, optionally gzipped.
      class_names: names of the classes; default: the Fashion-MNIST names when
        `images_path` contains "fashion", else "0" .. "K-1" with K = num_classes.

    Returns:
      A `Source` whose elements are `(uint8 [H, W], label)` rows.
    """
    num_classes = request.num_classes
    images_path, labels_path = paths.expand(images_path), paths.expand(labels_path)
    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{images_path} holds no images")
    if class_names is None:
        if "fashion" in images_path.lower():
            class_names = FASHION_MNIST_CLASS_NAMES
        else:
            class_names = tuple(str(k) for k in range(num_classes))
    class_names = tuple(class_names)
    if len(class_names) != num_classes:
        raise ValueError(
            f"{labels_path}: {len(class_names)} classes ({preview(class_names)}) but "
            f"num_classes={num_classes}"
        )
    if int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise ValueError(
            f"{labels_path}: label {int(labels[bad])} at index {bad} is out of range for "
            f"num_classes={num_classes}"
        )
    counts = np.bincount(labels, minlength=len(class_names))
    per_class = {name: int(counts[k]) for k, name in enumerate(class_names)}

    def decode(image, label):
        return tf.image.grayscale_to_rgb(image[..., None]), tf.cast(label, tf.int32)

    return Source(
        elements=tf.data.Dataset.from_tensor_slices((images, labels)),
        decode=decode,
        num_examples=int(images.shape[0]),
        class_names=class_names,
        examples_per_class=per_class,
    )
