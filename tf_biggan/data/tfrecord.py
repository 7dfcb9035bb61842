"""The TFRecord source (`tfrecord_source`) and the record format it reads.

The format is defined here once, for this reader and for the writer in
`tools/make_tfrecords.py` (the TF-Slim / TFDS ImageNet convention): each record is a
`tf.train.Example` with

  `IMAGE_KEY` ("image/encoded"): bytes, a JPEG/PNG/BMP/GIF file's contents;
  `LABEL_KEY` ("image/class/label"): int64 class index in [0, num_classes);
  `FILENAME_KEY` ("image/filename"): bytes, the file's path relative to the converted folder
  (written for people reading the records; the reader ignores it).

Beside the record files, `classes.json` (class name -> index) gives the class names and
`DATASET_INFO_JSON` the example counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import gin
import tensorflow as tf

from tf_biggan import paths
from tf_biggan.data.decode import decode_to_rgb_uint8
from tf_biggan.data.source import CLASSES_JSON, GIN_MODULE, Source, SourceRequest, check_label

__all__ = [
    "DATASET_INFO_JSON",
    "FILENAME_KEY",
    "IMAGE_KEY",
    "LABEL_KEY",
    "make_example",
    "tfrecord_source",
]

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
FILENAME_KEY = "image/filename"
DATASET_INFO_JSON = "dataset_info.json"


def make_example(contents: bytes, label: int, filename: str) -> tf.train.Example:
    """One record of the format `tfrecord_source` reads with its default keys.

    Args:
      contents: the image file's bytes (JPEG/PNG/BMP/GIF).
      label: class index in [0, num_classes).
      filename: the file's path, stored for reference.

    Returns:
      A `tf.train.Example` (serialize it with `SerializeToString`).
    """
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[contents])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        FILENAME_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[filename.encode("utf-8")])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


@gin.configurable(module=GIN_MODULE)
def tfrecord_source(
    request: SourceRequest,
    *,
    file_pattern: str = gin.REQUIRED,
    image_key: str = IMAGE_KEY,
    label_key: str = LABEL_KEY,
    class_names: Sequence[str] | None = None,
) -> Source:
    """`tf.train.Example` records holding encoded images and int64 labels.

    Feature keys (the defaults are what `tools/make_tfrecords.py` writes):
      `image_key` ("image/encoded"): bytes, a JPEG/PNG/BMP/GIF file;
      `label_key` ("image/class/label"): int64 class index in [0, num_classes).
    Files matching `file_pattern` are read in sorted order. If `classes.json` (class name ->
    index) lies beside the files it gives the class names, and `dataset_info.json` the
    example counts. Labels are range-checked in the graph while reading. Decode errors raise
    (records written by the converter were validated when written).

    Args:
      request: uses `num_classes` and `input_context` (when it has several pipelines and
        there are at least as many files, each pipeline reads its own files); decode errors
        always raise, the file order is fixed, and `make_dataset` resizes.
      file_pattern: glob, e.g. "/data/flowers/train-*.tfrecord".
      image_key: feature holding the encoded image.
      label_key: feature holding the label.
      class_names: overrides classes.json; default "0" .. "K-1".

    Returns:
      A `Source` whose elements are serialized records.
    """
    num_classes = request.num_classes
    file_pattern = paths.expand(file_pattern)
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern}")
    folder = os.path.dirname(files[0])
    num_examples, per_class = _example_counts(folder)
    elements, presharded = _records(files, request)
    features = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        label_key: tf.io.FixedLenFeature([], tf.int64),
    }
    where = f"TFRecords {file_pattern}"

    def decode(record):
        parsed = tf.io.parse_single_example(record, features)
        label = check_label(parsed[label_key], num_classes, where)
        return decode_to_rgb_uint8(parsed[image_key]), label

    return Source(
        elements=elements,
        decode=decode,
        num_examples=num_examples,
        class_names=_class_names(folder, class_names, num_classes),
        examples_per_class=per_class,
        presharded=presharded,
    )


def _class_names(
    folder: str, class_names: Sequence[str] | None, num_classes: int
) -> tuple[str, ...]:
    """The given names, else those of `folder/classes.json`, else "0" .. "K-1"."""
    classes_json = os.path.join(folder, CLASSES_JSON)
    if class_names is None and tf.io.gfile.exists(classes_json):
        with tf.io.gfile.GFile(classes_json) as f:
            mapping = json.load(f)
        class_names = tuple(sorted(mapping, key=mapping.get))
    if class_names is None:
        class_names = tuple(str(k) for k in range(num_classes))
    return tuple(class_names)


def _example_counts(folder: str) -> tuple[int | None, dict[str, int] | None]:
    """`(num_examples, examples_per_class)` from `folder/dataset_info.json`, else Nones."""
    info_json = os.path.join(folder, DATASET_INFO_JSON)
    if not tf.io.gfile.exists(info_json):
        return None, None
    with tf.io.gfile.GFile(info_json) as f:
        info = json.load(f)
    num_examples = int(info["num_examples"])
    per_class = {k: int(v) for k, v in info["examples_per_class"].items()}
    return num_examples, per_class


def _records(files: Sequence[str], request: SourceRequest) -> tuple[tf.data.Dataset, bool]:
    """The serialized records of `files` in turn, and whether they are this pipeline's shard.

    Each input pipeline reads its own files when there are at least as many files as
    pipelines; otherwise every pipeline reads all of them and `make_dataset` shards records.
    """
    presharded = False
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if 1 < request.num_pipelines <= len(files):
        file_ds = file_ds.shard(request.num_pipelines, request.pipeline_id)
        presharded = True
    return file_ds.flat_map(tf.data.TFRecordDataset), presharded
