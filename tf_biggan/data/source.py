"""The `Source` type every data source returns, and what the sources share.

A source builder (one per module: `synthetic`, `idx`, `folder`, `tfrecord`, `tfds`) is called
as `builder(request, **its_own_gin_parameters)` with a `SourceRequest` (the settings of
`make_dataset` every source sees) and returns a `Source`: cheap, un-decoded elements plus a
`decode` function. This module also holds the
in-graph label check of the sources that only see labels while reading, and the
`classes.json` file (class name -> index) that the pipeline writes into a model folder and
that `tools/make_tfrecords.py` writes beside the records it converts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import tensorflow as tf

__all__ = [
    "CLASSES_JSON",
    "GIN_MODULE",
    "Source",
    "SourceRequest",
    "check_label",
    "preview",
    "write_classes_json",
]

CLASSES_JSON = "classes.json"
# The module gin knows the data configurables by (`tf_biggan.data.make_dataset`, ...): the
# package, whichever of its modules defines them, so full names in gin files keep working.
GIN_MODULE = "tf_biggan.data"


@dataclasses.dataclass(frozen=True)
class SourceRequest:
    """The settings of `make_dataset` that every source builder receives.

    A builder uses those it needs and ignores the rest; its own parameters (file paths,
    names, sizes) are separate keyword arguments, bound by gin.

    Attributes:
      resolution: the training side length R (the pipeline crops and resizes; sources that
        draw their images draw them at R).
      num_classes: the number of classes the model expects.
      strict: corrupt images raise instead of being skipped (sources that can skip).
      seed: the data seed (generation, file shuffling).
      input_context: `tf.distribute.InputContext` of this input pipeline, or None for one
        pipeline; sources that shard by files use it.
    """

    resolution: int
    num_classes: int
    strict: bool = False
    seed: int = 0
    input_context: tf.distribute.InputContext | None = None

    @property
    def num_pipelines(self) -> int:
        """The number of input pipelines (1 without an input context)."""
        return 1 if self.input_context is None else self.input_context.num_input_pipelines

    @property
    def pipeline_id(self) -> int:
        """This input pipeline's index in [0, num_pipelines)."""
        return 0 if self.input_context is None else self.input_context.input_pipeline_id


@dataclasses.dataclass(frozen=True)
class Source:
    """An un-batched data source before preprocessing.

    Attributes:
      elements: un-decoded elements (paths, serialized records, array rows or indices), in a
        fixed order. Cheap to shard and shuffle.
      decode: maps one element to `(image, label)`: image uint8 `[H, W, 3]` (any H, W), label
        int32 scalar. Traceable by `tf.data` (no Python side effects).
      num_examples: number of usable examples in the whole source, or None when unknown.
      class_names: one name per class; `len(class_names)` is the number of classes.
      examples_per_class: class name -> count, or None when unknown.
      skipped: int64 variable counting corrupt images left out, or None if the source
        cannot skip (decode errors then raise).
      presharded: True when `elements` is already restricted to this input pipeline's shard
        (the source sharded by files), so `make_dataset` must not shard again.
    """

    elements: tf.data.Dataset
    decode: Callable[..., tuple[tf.Tensor, tf.Tensor]]
    num_examples: int | None
    class_names: tuple[str, ...]
    examples_per_class: dict[str, int] | None = None
    skipped: tf.Variable | None = None
    presharded: bool = False

    @property
    def dataset(self) -> tf.data.Dataset:
        """Un-batched `(image uint8 [H,W,3], label int32 [])` in source order."""
        return self.elements.map(
            self.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )


def preview(names: Sequence[str], limit: int = 10) -> str:
    """Comma-separated names, shortened for error messages."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_label(label: tf.Tensor, num_classes: int, where: str) -> tf.Tensor:
    """In-graph range check, for sources whose labels are only seen while reading.

    Args:
      label: integer scalar tensor.
      num_classes: labels must lie in [0, num_classes).
      where: names the source in the error message.

    Returns:
      The label as int32, raising `InvalidArgumentError` when read if it is out of range.
    """
    label = tf.cast(label, tf.int32)
    with tf.control_dependencies(
        [
            tf.debugging.assert_greater_equal(label, 0, message=f"{where}: negative label"),
            tf.debugging.assert_less(
                label, num_classes, message=f"{where}: label >= num_classes={num_classes}"
            ),
        ]
    ):
        return tf.identity(label)


def write_classes_json(folder: str, class_names: Sequence[str]) -> None:
    """Writes `folder/classes.json` (class name -> index), creating `folder` if missing."""
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(os.path.join(folder, CLASSES_JSON), "w") as f:
        json.dump({name: k for k, name in enumerate(class_names)}, f, indent=1)
