"""Tests for tf_biggan.data.tfrecord and tools/make_tfrecords.py, which writes its format."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from data_testlib import (
    FOLDER_CLASSES,
    REPO,
    first_batches,
    folder_source,
    png,
    solid,
)
from tools_testlib import load_tool

from tf_biggan import data
from tf_biggan.data import tfrecord


@pytest.fixture(scope="module")
def records(image_folder, tmp_path_factory):
    """The folder converted in folder order to two shards: (output folder, dataset info)."""
    root, _ = image_folder
    out = tmp_path_factory.mktemp("records")
    info = load_tool("make_tfrecords").convert_folder(
        str(root), str(out), num_shards=2, seed=-1, verbose=False
    )
    return out, info


def test_records_hold_the_features_of_the_format(image_folder, records):
    root, expected = image_folder
    out, _ = records
    first = next(iter(tf.data.TFRecordDataset(str(out / "train-00000-of-00002.tfrecord"))))
    features = tf.train.Example.FromString(first.numpy()).features.feature
    assert set(features) == {tfrecord.IMAGE_KEY, tfrecord.LABEL_KEY, tfrecord.FILENAME_KEY}
    rel, label, _, _ = expected[0]
    assert features[tfrecord.IMAGE_KEY].bytes_list.value == [(root / rel).read_bytes()]
    assert features[tfrecord.LABEL_KEY].int64_list.value == [label]
    assert features[tfrecord.FILENAME_KEY].bytes_list.value == [rel.encode()]
    assert (data.TFRECORD_IMAGE_KEY, data.TFRECORD_LABEL_KEY) == (
        "image/encoded",
        "image/class/label",
    )


def test_tfrecord_round_trip_equals_folder(image_folder, records):
    root, expected = image_folder
    out, info = records
    assert info["num_examples"] == len(expected)
    assert len(info["skipped"]) == 1 and info["skipped"][0].endswith("c2_broken.png")
    assert json.loads((out / "classes.json").read_text()) == {"apple": 0, "bird": 1, "cat": 2}
    assert sorted(os.listdir(out)) == [
        "classes.json",
        "dataset_info.json",
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    common = dict(batch_size=3, resolution=8, num_classes=3, shuffle_buffer=0)
    from_folder = data.make_dataset(source=folder_source(root), **common)
    from_records = data.make_dataset(
        source=functools.partial(data.tfrecord_source, file_pattern=str(out / "train-*")),
        **common,
    )
    assert from_records.class_names == FOLDER_CLASSES
    assert from_records.num_examples == len(expected)
    assert from_records.examples_per_class == {"apple": 3, "bird": 3, "cat": 3}
    assert from_records.skipped is None
    images_f, labels_f = first_batches(from_folder, 3)
    images_r, labels_r = first_batches(from_records, 3)
    np.testing.assert_array_equal(labels_r, labels_f)
    np.testing.assert_array_equal(images_r, images_f)


def test_tfrecord_files_sharded_per_pipeline(image_folder, records):
    _, expected = image_folder
    out, _ = records
    labels_seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        src = data.tfrecord_source(
            data.SourceRequest(resolution=8, num_classes=3, input_context=context),
            file_pattern=str(out / "train-*"),
        )
        assert src.presharded
        labels_seen += [int(label) for _, label in src.dataset]
    assert sorted(labels_seen) == sorted(e[1] for e in expected)


def test_tfrecord_label_out_of_range_fails_in_graph(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in (0, 1, 5):
            example = tfrecord.make_example(png(solid((9, 9, 9))), label, "x.png")
            writer.write(example.SerializeToString())
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=functools.partial(data.tfrecord_source, file_pattern=str(path)),
        shuffle_buffer=0,
    )
    assert input_data.class_names == ("0", "1", "2")
    assert input_data.num_examples is None
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


@pytest.mark.slow
def test_make_tfrecords_command_line(image_folder, tmp_path):
    root, expected = image_folder
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
        load_tool("make_tfrecords").convert_folder(
            str(root), str(tmp_path / "strict"), 2, strict=True
        )
