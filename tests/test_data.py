"""Tests for tf_biggan.data: sources, preprocessing, sharding, checkpointing, bad input."""

import dataclasses
import functools
import gzip
import importlib.util
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import data

FASHION = "/usr/share/datasets/fashion-mnist"
REPO = pathlib.Path(__file__).resolve().parents[1]


@functools.cache
def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_tfrecords", REPO / "tools" / "make_tfrecords.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solid(colour, height=12, width=16, channels=3, dtype=np.uint8):
    return np.broadcast_to(np.asarray(colour, dtype), (height, width, channels)).copy()


def _write(path, contents):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(contents)


def _bmp(rgb):
    """A 24-bit uncompressed BMP (bottom-up rows of BGR, each padded to 4 bytes)."""
    height, width, _ = rgb.shape
    stride = (width * 3 + 3) // 4 * 4
    rows = b"".join(
        rgb[y, :, ::-1].tobytes() + b"\0" * (stride - width * 3) for y in reversed(range(height))
    )
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(rows), 0, 0, 14 + len(info))
    return header + info + rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of solid-colour images; returns (root, expected) in listing order.

    expected: list of (relative path, label, RGB colour, tolerance) for the readable files.
    Includes an RGBA PNG, a 16-bit grey PNG, a JPEG and one truncated PNG.
    """
    root = tmp_path_factory.mktemp("folder")
    expected = []

    def png(rel, array, label, rgb, tol=0):
        _write(root / rel, tf.io.encode_png(array).numpy())
        expected.append((rel, label, rgb, tol))

    png("apple/a0.png", _solid((200, 10, 10)), 0, (200, 10, 10))
    png("apple/a1.png", _solid((180, 30, 20)), 0, (180, 30, 20))
    # RGBA (100, 0, 50) at alpha 128 over white: c*a + 255*(1-a).
    alpha = 128 / 255
    rgba_rgb = tuple(round(c * alpha + 255 * (1 - alpha)) for c in (100, 0, 50))
    png("apple/a2_rgba.png", _solid((100, 0, 50, 128), channels=4), 0, rgba_rgb)
    png("bird/b0.png", _solid((10, 200, 10)), 1, (10, 200, 10))
    # 16-bit grey 40000 -> 8 bits by dropping the low byte: 40000 >> 8 = 156.
    png("bird/b1_grey16.png", _solid((40000,), channels=1, dtype=np.uint16), 1, (156,) * 3)
    _write(root / "bird/b2.BMP", _bmp(_solid((70, 80, 90))))
    expected.append(("bird/b2.BMP", 1, (70, 80, 90), 0))
    jpeg = tf.io.encode_jpeg(_solid((20, 20, 220)), quality=95).numpy()
    _write(root / "cat/c0.jpg", jpeg)
    expected.append(("cat/c0.jpg", 2, (20, 20, 220), 4))
    png("cat/c1.png", _solid((30, 40, 200)), 2, (30, 40, 200))
    whole = tf.io.encode_png(_solid((1, 2, 3))).numpy()
    _write(root / "cat/c2_broken.png", whole[: len(whole) // 2])
    png("cat/nested/c3.png", _solid((0, 60, 250)), 2, (0, 60, 250))
    _write(root / "cat/notes.txt", b"not an image")
    return root, expected


def _folder_source(root, **kwargs):
    return functools.partial(data.image_folder_source, root=str(root), **kwargs)


def _first_epoch(input_data, num_batches):
    it = iter(input_data.dataset)
    batches = [next(it) for _ in range(num_batches)]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    return images, labels


def _colour_of(image):
    return (image.reshape(-1, 3).mean(0) + 1.0) * 127.5


def test_folder_pipeline_decodes_counts_corrupt_once_and_writes_class_map(folder, tmp_path):
    root, expected = folder
    model_dir = tmp_path / "run"
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=_folder_source(root),
        model_dir=str(model_dir),
        shuffle_buffer=0,
    )
    assert input_data.num_examples == len(expected) == 9
    assert input_data.class_names == ("apple", "bird", "cat")
    assert json.loads((model_dir / "classes.json").read_text()) == {
        "apple": 0,
        "bird": 1,
        "cat": 2,
    }
    images, labels = _first_epoch(input_data, 3)
    assert images.shape == (9, 8, 8, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [e[1] for e in expected])
    for image, (rel, _, rgb, tol) in zip(images, expected, strict=True):
        np.testing.assert_allclose(_colour_of(image), rgb, atol=tol + 0.01, err_msg=rel)
        assert image.min() >= -1.0 and image.max() <= 1.0
    # Reading three more epochs does not count the corrupt file again.
    it = iter(input_data.dataset)
    for _ in range(9):
        next(it)
    assert int(input_data.skipped.numpy()) == 1


def test_folder_strict_names_the_corrupt_file(folder):
    root, _ = folder
    with pytest.raises(ValueError, match=r"strict=True.*c2_broken\.png"):
        data.make_dataset(
            batch_size=2, resolution=8, num_classes=3, source=_folder_source(root), strict=True
        )


def test_folder_shuffled_flipped_pipeline_keeps_labels_with_images(folder):
    root, expected = folder
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=_folder_source(root),
        shuffle_buffer=100,
        random_flip=True,
        seed=3,
    )
    colours = {tuple(np.round(rgb)): label for _, label, rgb, _ in expected}
    images, labels = _first_epoch(input_data, 3)
    for image, label in zip(images, labels, strict=True):
        colour = _colour_of(image)
        nearest = min(colours, key=lambda c: np.abs(np.subtract(c, colour)).max())
        assert colours[nearest] == label
    assert sorted(labels.tolist()) == sorted(e[1] for e in expected)


@pytest.mark.parametrize(
    "layout, num_classes, message",
    [
        (None, 2, r"image folder not found.*missing"),
        ({}, 2, r"no class subfolders"),
        ({"x.png": True}, 1, r"1 image files directly; put them in one subfolder per class"),
        ({"a/x.png": True, "b/readme.txt": False}, 2, r"class folder .*b holds no images"),
        ({"a/x.png": True, "b/y.png": True}, 3, r"2 class subfolders \(a, b\) but num_classes=3"),
        ({"a/x.png": True, "b/y.png": True}, 2, r"3 examples .*fewer than one batch of 4"),
    ],
)
def test_folder_bad_input_errors(tmp_path, layout, num_classes, message):
    root = tmp_path / "missing"
    if layout is not None:
        root.mkdir()
        for rel, is_image in layout.items():
            contents = tf.io.encode_png(_solid((1, 2, 3))).numpy() if is_image else b"text"
            _write(root / rel, contents)
        if "b/y.png" in layout:
            _write(root / "b/z.png", tf.io.encode_png(_solid((1, 2, 3))).numpy())
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.make_dataset(
            batch_size=4, resolution=8, num_classes=num_classes, source=_folder_source(root)
        )


def test_tfrecord_round_trip_equals_folder(folder, tmp_path):
    root, expected = folder
    tool = _load_tool()
    out = tmp_path / "records"
    info = tool.convert_folder(str(root), str(out), num_shards=2, seed=-1, verbose=False)
    assert info["num_examples"] == len(expected)
    assert len(info["skipped"]) == 1 and info["skipped"][0].endswith("c2_broken.png")
    assert json.loads((out / "classes.json").read_text()) == {"apple": 0, "bird": 1, "cat": 2}
    assert sorted(os.listdir(out))[:2] == [
        "classes.json",
        "dataset_info.json",
    ]
    common = dict(batch_size=3, resolution=8, num_classes=3, shuffle_buffer=0)
    from_folder = data.make_dataset(source=_folder_source(root), **common)
    from_records = data.make_dataset(
        source=functools.partial(data.tfrecord_source, file_pattern=str(out / "train-*")),
        **common,
    )
    assert from_records.class_names == ("apple", "bird", "cat")
    assert from_records.num_examples == len(expected)
    assert from_records.skipped is None
    images_f, labels_f = _first_epoch(from_folder, 3)
    images_r, labels_r = _first_epoch(from_records, 3)
    np.testing.assert_array_equal(labels_r, labels_f)
    np.testing.assert_array_equal(images_r, images_f)


def test_tfrecord_label_out_of_range_fails_in_graph(tmp_path):
    tool = _load_tool()
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in (0, 1, 5):
            png = tf.io.encode_png(_solid((9, 9, 9))).numpy()
            writer.write(tool._example(png, label, "x.png").SerializeToString())
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=functools.partial(data.tfrecord_source, file_pattern=str(path)),
        shuffle_buffer=0,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bad.tfrecord: label >= num_class"):
        next(iter(input_data.dataset))
    # Without dataset_info.json the size is unknown; a set smaller than a batch still raises.
    with pytest.raises(ValueError, match=r"only 3 examples per input pipeline .* batch of 4"):
        data.make_dataset(
            batch_size=4,
            resolution=8,
            num_classes=3,
            source=functools.partial(data.tfrecord_source, file_pattern=str(path)),
        )


def _write_idx(path, array, magic_dtype=0x08, gz=False):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, magic_dtype, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return str(path)


def _index_idx(tmp_path, count=24, side=4, num_classes=3):
    """IDX files whose image i is filled with the value i (so examples identify themselves)."""
    images = np.repeat(np.arange(count, dtype=np.uint8), side * side).reshape(count, side, side)
    labels = np.arange(count) % num_classes
    return (
        _write_idx(tmp_path / "img.idx.gz", images, gz=True),
        _write_idx(tmp_path / "lab.idx", labels),
    )


def _example_ids(images):
    return np.round((images[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def test_two_input_pipelines_see_disjoint_shards_covering_the_set(tmp_path):
    images_path, labels_path = _index_idx(tmp_path)
    source = functools.partial(data.idx_source, images_path=images_path, labels_path=labels_path)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        input_data = data.make_dataset(
            batch_size=4, resolution=4, num_classes=3, source=source, input_context=context
        )
        images, labels = _first_epoch(input_data, 3)  # 12 examples per shard
        ids = _example_ids(images)
        np.testing.assert_array_equal(labels, ids % 3)
        seen.append(set(ids.tolist()))
        assert len(seen[-1]) == 12
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(24))


def test_tfrecord_files_sharded_per_pipeline(folder, tmp_path):
    root, expected = folder
    out = tmp_path / "records"
    _load_tool().convert_folder(str(root), str(out), num_shards=2, seed=0, verbose=False)
    labels_seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        src = data.tfrecord_source(
            resolution=8,
            num_classes=3,
            input_context=context,
            file_pattern=str(out / "train-*"),
        )
        assert src.presharded
        labels_seen += [int(label) for _, label in src.dataset]
    assert sorted(labels_seen) == sorted(e[1] for e in expected)


def test_checkpointed_iterator_resumes_at_the_next_batch(tmp_path):
    config = dict(
        batch_size=4,
        resolution=8,
        num_classes=5,
        source=functools.partial(data.synthetic_source, num_examples=30),
        shuffle_buffer=16,
        random_flip=True,
        seed=7,
    )
    input_data = data.make_dataset(**config)
    it = iter(input_data.dataset)
    first = next(it)
    for _ in range(8):  # crosses an epoch boundary (7 batches per epoch)
        next(it)
    checkpoint = tf.train.Checkpoint(it=it)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    after = [next(it) for _ in range(3)]
    checkpoint.restore(path).assert_consumed()
    for want in after:
        got = next(it)
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    # A second pipeline built from the same config yields the same stream.
    again = next(iter(data.make_dataset(**config).dataset))
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())


def test_every_iterator_yields_the_same_stream_whatever_others_read():
    """A reader that went ahead across epochs does not change a later reader's order.

    Training relies on this: the start-up summary reads the training dataset, and the
    training iterator (and a run resumed from its checkpoint) must not depend on how far the
    summary's prefetch threads got.
    """
    input_data = data.make_dataset(
        batch_size=4,
        resolution=8,
        num_classes=5,
        source=functools.partial(data.synthetic_source, num_examples=30),
        shuffle_buffer=16,
        seed=3,
    )
    ahead = iter(input_data.dataset)
    first = [next(ahead) for _ in range(30)]  # four epochs of 30 examples
    later = iter(input_data.dataset)
    for want in first:
        got = next(later)
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    # Still shuffled (synthetic example i has label i % 5 in source order), epoch by epoch.
    labels = np.concatenate([b[1].numpy() for b in first])
    assert not np.array_equal(labels[:30], np.arange(30) % 5)
    for epoch in range(4):
        np.testing.assert_array_equal(np.bincount(labels[30 * epoch : 30 * (epoch + 1)]), [6] * 5)


def test_cache_gives_the_same_batches(folder):
    root, _ = folder
    common = dict(batch_size=4, resolution=8, num_classes=3, source=_folder_source(root), seed=1)
    plain = _first_epoch(data.make_dataset(**common), 6)
    cached = _first_epoch(data.make_dataset(cache=True, **common), 6)
    np.testing.assert_array_equal(plain[0], cached[0])
    np.testing.assert_array_equal(plain[1], cached[1])


def test_random_flip_mirrors_some_images(tmp_path):
    # Left half black, right half white: a flip swaps them.
    image = np.zeros((4, 8, 8), np.uint8)
    image[:, :, 4:] = 255
    images_path = _write_idx(tmp_path / "img.idx", image)
    labels_path = _write_idx(tmp_path / "lab.idx", [0, 0, 0, 0])
    input_data = data.make_dataset(
        batch_size=4,
        resolution=8,
        num_classes=1,
        source=functools.partial(data.idx_source, images_path=images_path, labels_path=labels_path),
        shuffle_buffer=0,
        random_flip=True,
    )
    it = iter(input_data.dataset)
    left = np.concatenate([next(it)[0].numpy()[:, 0, 0, 0] for _ in range(8)])
    assert set(left.tolist()) == {-1.0, 1.0}


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
    assert len(input_data.class_names) == 10 and input_data.class_names[9] == "Ankle boot"
    images, labels = next(iter(input_data.dataset))
    images, labels = images.numpy(), labels.numpy()
    assert images.shape == (16, 32, 32, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() == -1.0 and images.max() > 0.9
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey replicated
    with gzip.open(f"{FASHION}/train-labels-idx1-ubyte.gz") as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(f"{FASHION}/train-images-idx3-ubyte.gz") as f:
        raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(labels, raw_labels[:16])
    # Bilinear upsampling keeps the mean brightness.
    np.testing.assert_allclose(
        (images[..., 0].mean((1, 2)) + 1) * 127.5, raw_images[:16].mean((1, 2)), atol=1.5
    )
    src = source(resolution=32, num_classes=10)
    assert src.examples_per_class["Bag"] == 6000


def test_idx_bad_input_errors(tmp_path):
    images_path, labels_path = _index_idx(tmp_path)

    def build(num_classes=3, **kwargs):
        paths = dict(images_path=images_path, labels_path=labels_path)
        paths.update(kwargs)
        return data.idx_source(resolution=4, num_classes=num_classes, **paths)

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
    fewer = _write_idx(tmp_path / "fewer.idx", np.zeros(5))
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


def test_synthetic_classes_are_distinct_and_deterministic():
    src = data.synthetic_source(resolution=32, num_classes=10, num_examples=400, seed=0)
    assert src.class_names[:6] == (
        "red circle",
        "green square",
        "blue triangle",
        "yellow cross",
        "magenta ring",
        "cyan circle",
    )
    images, labels = zip(*[(i.numpy(), int(y)) for i, y in src.dataset], strict=True)
    images = np.stack(images).astype(np.float32) / 255.0
    labels = np.asarray(labels)
    means = np.stack([images[labels == k].mean(0) for k in range(10)])
    distances = np.sqrt(((means[:, None] - means[None]) ** 2).sum((2, 3, 4)))
    off_diagonal = distances[~np.eye(10, dtype=bool)]
    assert off_diagonal.min() > 1.0, distances
    # Per-example variation exists within a class.
    assert images[labels == 0].std(0).mean() > 0.05
    again = next(iter(src.dataset))[0].numpy()
    other = data.synthetic_source(resolution=32, num_classes=10, seed=1)
    np.testing.assert_array_equal(again, images[0] * 255.0)
    assert not np.array_equal(next(iter(other.dataset))[0].numpy(), again)
    with pytest.raises(ValueError, match=r"1..40 classes, got num_classes=41"):
        data.synthetic_source(resolution=32, num_classes=41)


def test_summarize_writes_grid_and_counts(folder, tmp_path):
    root, _ = folder
    src = _folder_source(root)(resolution=8, num_classes=3)
    counts = data.summarize_dataset(src, str(tmp_path), resolution=8, examples_per_class=4)
    assert counts == {"apple": 3, "bird": 3, "cat": 3}
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "real_examples.png"))).numpy()
    # 8-px tiles with 2-px padding: 3 rows x 4 columns.
    assert grid.shape == (3 * 8 + 4 * 2, 4 * 8 + 5 * 2, 3)
    # Row 1, column 0 is the first bird image: solid (10, 200, 10).
    np.testing.assert_array_equal(grid[12:20, 2:10].reshape(-1, 3).min(0), [10, 200, 10])
    np.testing.assert_array_equal(grid[12:20, 2:10].reshape(-1, 3).max(0), [10, 200, 10])
    # Bird has three readable images (PNG, 16-bit PNG, BMP): its fourth tile is black.
    assert grid[12:20, 32:40].max() == 0

    input_data = data.make_dataset(
        batch_size=4,
        resolution=8,
        num_classes=3,
        source=functools.partial(data.synthetic_source, num_examples=300),
    )
    out = tmp_path / "synthetic"
    exact = data.summarize_dataset(input_data, str(out), resolution=8, max_scan=300)
    assert exact == {"red circle": 100, "green square": 100, "blue triangle": 100}
    assert (out / "real_examples.png").exists()
    # Without known counts the summary estimates them from the examples it reads.
    unknown = dataclasses.replace(input_data, examples_per_class=None)
    estimate = data.summarize_dataset(unknown, str(out), resolution=8, max_scan=300)
    assert sum(estimate.values()) == 300
    assert all(80 <= v <= 120 for v in estimate.values())
    assert (out / "real_examples.png").exists()


def test_pipeline_throughput_is_positive():
    input_data = data.make_dataset(
        batch_size=8,
        resolution=16,
        num_classes=4,
        source=functools.partial(data.synthetic_source, num_examples=64),
    )
    assert data.pipeline_throughput(input_data, num_batches=3) > 0
    with pytest.raises(ValueError, match="num_batches"):
        data.pipeline_throughput(input_data, num_batches=0)


def test_tfds_source_with_a_local_builder(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """Six 6x6 images of three classes, generated locally."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(6, 6, 3)),
                        "label": tfds.features.ClassLabel(names=["low", "mid", "high"]),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(6):
                yield i, {"image": _solid((i * 40,) * 3, 6, 6), "label": i % 3}

    source = functools.partial(data.tfds_source, name="tiny_shapes", data_dir=str(tmp_path))
    input_data = data.make_dataset(
        batch_size=3, resolution=6, num_classes=3, source=source, shuffle_buffer=0
    )
    assert input_data.class_names == ("low", "mid", "high")
    assert input_data.num_examples == 6
    images, labels = _first_epoch(input_data, 2)
    ids = np.round((images[:, 0, 0, 0] + 1.0) * 127.5 / 40).astype(int)
    assert sorted(ids.tolist()) == list(range(6))
    np.testing.assert_array_equal(labels, ids % 3)
    with pytest.raises(ValueError, match=r"3 classes .* but num_classes=4"):
        data.make_dataset(batch_size=3, resolution=6, num_classes=4, source=source)
    with pytest.raises(ValueError, match=r"not 'test'"):
        data.tfds_source(
            resolution=6, num_classes=3, name="tiny_shapes", data_dir=str(tmp_path), split="test"
        )


def test_gin_binds_source_and_its_parameters():
    import gin

    with gin.unlock_config():
        gin.parse_config(
            [
                "make_dataset.source = @synthetic_source",
                "make_dataset.shuffle_buffer = 0",
                "synthetic_source.num_examples = 12",
            ]
        )
    try:
        input_data = data.make_dataset(batch_size=4, resolution=8, num_classes=3)
        assert input_data.num_examples == 12
        _, labels = _first_epoch(input_data, 3)
        np.testing.assert_array_equal(labels, np.arange(12) % 3)
    finally:
        gin.clear_config()


def test_make_tfrecords_command_line(folder, tmp_path):
    root, expected = folder
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "make_tfrecords.py"),
            f"--input_dir={root}",
            f"--output_dir={out}",
            "--num_shards=3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("train-*")) == [
        f"train-{s:05d}-of-00003.tfrecord" for s in range(3)
    ]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["num_examples"] == len(expected)
    assert info["examples_per_class"] == {"apple": 3, "bird": 3, "cat": 3}
    with pytest.raises(ValueError, match=r"corrupt image file .*c2_broken\.png"):
        _load_tool().convert_folder(str(root), str(tmp_path / "strict"), 2, strict=True)
