"""Tests for tf_biggan.data.source: what every source shares (the request, the `Source`
type, the in-graph label check, classes.json and the shortened name lists)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import data
from tf_biggan.data import source


def test_a_request_without_an_input_context_is_the_only_pipeline():
    request = data.SourceRequest(resolution=32, num_classes=10)
    assert (request.num_pipelines, request.pipeline_id) == (1, 0)
    assert (request.strict, request.seed) == (False, 0)
    sharded = data.SourceRequest(32, 10, input_context=tf.distribute.InputContext(4, 3, 8))
    assert (sharded.num_pipelines, sharded.pipeline_id) == (4, 3)


def test_a_source_decodes_its_elements_in_order():
    elements = tf.data.Dataset.from_tensor_slices(np.arange(5))
    decoded = data.Source(
        elements=elements,
        decode=lambda i: (tf.fill([2, 2, 3], tf.cast(i, tf.uint8)), tf.cast(i % 2, tf.int32)),
        num_examples=5,
        class_names=("even", "odd"),
    )
    pairs = [(int(image[0, 0, 0]), int(label)) for image, label in decoded.dataset]
    assert pairs == [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]


def test_labels_out_of_range_fail_when_read():
    labels = tf.data.Dataset.from_tensor_slices([0, 2, 3])
    checked = labels.map(lambda y: source.check_label(y, 3, "records.tfrecord"))
    iterator = iter(checked)
    assert [int(next(iterator)), int(next(iterator))] == [0, 2]
    with pytest.raises(tf.errors.InvalidArgumentError, match="records.tfrecord: label >= num"):
        next(iterator)
    negative = tf.data.Dataset.from_tensor_slices([-1]).map(
        lambda y: source.check_label(y, 3, "idx")
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="idx: negative label"):
        next(iter(negative))


def test_classes_json_maps_names_to_indices(tmp_path):
    folder = tmp_path / "new" / "model"
    source.write_classes_json(str(folder), ["cat", "dog", "bird"])
    with open(folder / source.CLASSES_JSON) as f:
        assert json.load(f) == {"cat": 0, "dog": 1, "bird": 2}


def test_preview_shortens_long_lists():
    assert source.preview(["a", "b"]) == "a, b"
    names = [f"n{k}" for k in range(12)]
    assert source.preview(names, limit=3) == "n0, n1, n2, ... (12 in all)"
