"""Tests for tf_biggan.data.idx: IDX files (MNIST / Fashion-MNIST format)."""

import functools
import gzip
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from data_testlib import FASHION, index_idx, write_idx

from tf_biggan import data


def test_fashion_mnist_idx():
    source = functools.partial(
        data.idx_source,
        images_path=f"{FASHION}/train-images-idx3-ubyte.gz",
        labels_path=f"{FASHION}/train-labels-idx1-ubyte.gz",
    )
    input_data = data.make_dataset(
        batch_size=16, resolution=32, num_classes=10, source=source, shuffle_buffer=0
    )
    assert input_data.num_examples == 60000
    assert input_data.class_names == data.FASHION_MNIST_CLASS_NAMES
    assert input_data.class_names[9] == "Ankle boot"
    images, labels = next(iter(input_data.dataset))
    images, labels = images.numpy(), labels.numpy()
    assert images.shape == (16, 32, 32, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey replicated
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    with gzip.open(f"{FASHION}/train-labels-idx1-ubyte.gz") as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(f"{FASHION}/train-images-idx3-ubyte.gz") as f:
        raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(labels, raw_labels[:16])
    # 28 -> 32 px: antialiased bilinear, rounded to 8 bits, then scaled to [-1, 1].
    resized = tf.image.resize(
        raw_images[:16, ..., None].astype(np.float32), [32, 32], "bilinear", antialias=True
    )
    rounded = np.clip(np.round(resized.numpy()[..., 0]), 0, 255).astype(np.float32)
    np.testing.assert_array_equal(images[..., 0], rounded / np.float32(127.5) - np.float32(1))
    # Bilinear upsampling keeps the mean brightness.
    np.testing.assert_allclose(
        (images[..., 0].mean((1, 2)) + 1) * 127.5, raw_images[:16].mean((1, 2)), atol=1.5
    )
    src = source(data.SourceRequest(resolution=32, num_classes=10))
    assert src.examples_per_class == {name: 6000 for name in data.FASHION_MNIST_CLASS_NAMES}


def test_idx_bad_input_errors(tmp_path):
    images_path, labels_path = index_idx(tmp_path)

    def build(num_classes=3, **kwargs):
        paths = dict(images_path=images_path, labels_path=labels_path)
        paths.update(kwargs)
        return data.idx_source(data.SourceRequest(resolution=4, num_classes=num_classes), **paths)

    with pytest.raises(FileNotFoundError, match="IDX file not found: .*nope"):
        build(images_path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"lab.idx: label 2 at index 2 is out of range"):
        build(num_classes=2)
    bad_magic = tmp_path / "magic.idx"
    bad_magic.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"magic.idx: not an IDX file"):
        build(images_path=str(bad_magic))
    short = tmp_path / "short.idx"
    short.write_bytes(pathlib.Path(labels_path).read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"short.idx: IDX header promises \(24,\) = 24 bytes"):
        build(labels_path=str(short))
    with pytest.raises(ValueError, match=r"lab.idx: IDX file has 1 dimensions, expected 3"):
        build(images_path=labels_path)
    fewer = write_idx(tmp_path / "fewer.idx", np.zeros(5))
    with pytest.raises(ValueError, match=r"holds 24 images but .*fewer.idx holds 5 labels"):
        build(labels_path=fewer)
    with pytest.raises(
        ValueError, match=r"t10k-labels.*: 10 classes \(T-shirt/top, .*num_classes=3"
    ):
        data.make_dataset(
            batch_size=4,
            resolution=32,
            num_classes=3,
            source=functools.partial(
                data.idx_source,
                images_path=f"{FASHION}/t10k-images-idx3-ubyte.gz",
                labels_path=f"{FASHION}/t10k-labels-idx1-ubyte.gz",
            ),
        )
