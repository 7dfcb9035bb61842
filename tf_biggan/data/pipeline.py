"""The training pipeline: `make_dataset`, its result `InputData`, and `pipeline_throughput`.

`make_dataset` calls a source builder with a `SourceRequest`, shards the source's cheap
un-decoded elements per input pipeline before shuffling (so workers see disjoint shards and
shuffle buffers hold paths or records rather than decoded pictures), and decodes after
shuffling. The iterator of `InputData.dataset` is a plain `tf.data` iterator and can be
saved in a `tf.train.Checkpoint`; it restores to the exact next batch. All random choices
are seeded.

Training checkpoints hold this iterator's state, so the sequence of `tf.data`
transformations in `_input_data` is part of the checkpoint format: checkpoints of
earlier releases restore only while it stays the same.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import gin
import numpy as np
import tensorflow as tf

from tf_biggan.data.decode import check_fit, fit_image, flip_and_scale
from tf_biggan.data.source import GIN_MODULE, Source, SourceRequest, preview, write_classes_json

__all__ = ["InputData", "make_dataset", "pipeline_throughput"]


@dataclasses.dataclass(frozen=True)
class InputData:
    """A ready training pipeline.

    The stream is a function of the configuration: every `dataset` read from this object,
    and every pipeline rebuilt from the same arguments, yields the same batches whatever
    other readers do meanwhile, and a checkpointed iterator resumes at the exact next batch.

    Attributes:
      build: returns a new pipeline (see `dataset`).
      num_examples: images in the source (None when unknown).
      class_names: `len(class_names) == num_classes`.
      skipped: int64 counter of corrupt images skipped (None if the source cannot skip).
      examples_per_class: class name -> images in the source, or None when unknown.
    """

    build: Callable[[], tf.data.Dataset]
    num_examples: int | None
    class_names: tuple[str, ...]
    skipped: tf.Variable | None
    examples_per_class: dict[str, int] | None = None

    @property
    def dataset(self) -> tf.data.Dataset:
        """A new pipeline object on each access, yielding `(images float32 [B, R, R, 3] in
        [-1, 1], labels int32 [B])`, repeated forever, incomplete batches dropped.

        A new object per reader matters: iterators of one `tf.data` object that reshuffles
        each epoch share its seed generator, so one iterator reading ahead would change the
        order another one sees.
        """
        return self.build()


# What the training loop passes in: the resolution and class count are the networks', the
# batch and the shard the step's and the strategy's. Binding them in gin is an error.
@gin.configurable(
    module=GIN_MODULE,
    denylist=["batch_size", "resolution", "num_classes", "input_context", "model_dir", "seed"],
)
def make_dataset(
    *,
    batch_size: int,
    resolution: int,
    num_classes: int,
    source: Callable[[SourceRequest], Source] = gin.REQUIRED,
    input_context: tf.distribute.InputContext | None = None,
    model_dir: str | None = None,
    shuffle_buffer: int = 10_000,
    random_flip: bool = False,
    cache: bool = False,
    seed: int = 0,
    strict: bool = False,
    fit: str = "resize",
) -> InputData:
    """Builds the repeated, batched training pipeline.

    Order: shard (per input pipeline) -> [decode, fit, cache] -> shuffle -> repeat -> decode,
    fit (centre crop and resize, or pad), flip, scale -> batch (drop remainder) -> prefetch.
    With `cache`, the cache holds uint8 images at `resolution` (decoded once), otherwise
    images are decoded after shuffling.

    Args:
      batch_size: per-pipeline batch (global batch / number of input pipelines).
      resolution: output side length R.
      num_classes: must equal the source's number of classes.
      source: a source builder (e.g. `synthetic_source`), called with one positional
        `SourceRequest` of `resolution`, `num_classes`, `strict`, `seed`, `input_context`.
      input_context: `tf.distribute.InputContext`; the data is sharded by its
        `num_input_pipelines` / `input_pipeline_id` before shuffling.
      model_dir: if given, `classes.json` (class name -> index) is written there.
      shuffle_buffer: shuffle buffer size; 0 disables shuffling (source order).
      random_flip: random horizontal flips.
      cache: cache decoded, resized images in memory (one cache per `dataset` object, so
        only the training iterator's is kept for the run).
      seed: shuffle / flip seed.
      strict: corrupt images raise instead of being skipped.
      fit: how images reach `resolution`: "resize" (centre square crop, antialiased
        bilinear resize) or "pad" (unresampled on a black canvas; never upsamples). See
        `tf_biggan.data.decode.fit_image`.

    Returns:
      `InputData`.

    Raises:
      ValueError: `fit` not one of "resize", "pad"; class-count mismatch, or fewer examples
        per pipeline than one batch (checked from `num_examples`, or by counting the first
        batch of elements when the source does not know its size).
    """
    _check_arguments(batch_size, resolution, shuffle_buffer, fit)
    request = SourceRequest(resolution, num_classes, strict, seed, input_context)
    src = source(request)
    if len(src.class_names) != num_classes:
        raise ValueError(
            f"the data source has {len(src.class_names)} classes "
            f"({preview(src.class_names)}) but num_classes={num_classes}"
        )
    if src.num_examples is not None:
        _check_known_size(src.num_examples, request.num_pipelines, batch_size)
    if model_dir and request.pipeline_id == 0:
        write_classes_json(model_dir, src.class_names)
    elements = _shard(src, request, batch_size)
    return _input_data(
        src,
        elements,
        request,
        batch_size=batch_size,
        shuffle_buffer=shuffle_buffer,
        random_flip=random_flip,
        cache=cache,
        fit=fit,
    )


def _check_arguments(batch_size: int, resolution: int, shuffle_buffer: int, fit: str) -> None:
    """Raises on arguments of `make_dataset` out of range, before building the source."""
    check_fit(fit)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")


def _check_known_size(num_examples: int, num_pipelines: int, batch_size: int) -> None:
    """Raises when a source of known size leaves a pipeline less than one batch."""
    per_pipeline = num_examples // num_pipelines
    if per_pipeline < batch_size:
        raise ValueError(
            f"the data set has {num_examples} examples ({per_pipeline} per input "
            f"pipeline, {num_pipelines} pipeline(s)), fewer than one batch of {batch_size}; "
            "lower the batch size or add data"
        )


def _shard(src: Source, request: SourceRequest, batch_size: int) -> tf.data.Dataset:
    """This input pipeline's elements of `src`, checked to hold one batch if size unknown.

    The check of a source of unknown size (e.g. TFRecords without dataset_info.json) counts
    the first batch's worth of un-decoded elements of the shard, which is cheap, rather than
    let a tiny set repeat forever unnoticed.
    """
    num_pipelines = request.num_pipelines
    elements = src.elements
    if num_pipelines > 1 and not src.presharded:
        elements = elements.shard(num_pipelines, request.pipeline_id)
    if src.num_examples is None:
        available = int(elements.take(batch_size).reduce(np.int64(0), lambda count, _: count + 1))
        if available < batch_size:
            raise ValueError(
                f"the data source yields only {available} examples per input pipeline "
                f"({num_pipelines} pipeline(s)), fewer than one batch of {batch_size}; lower "
                "the batch size or add data"
            )
    return elements


def _input_data(
    src: Source,
    elements: tf.data.Dataset,
    request: SourceRequest,
    *,
    batch_size: int,
    shuffle_buffer: int,
    random_flip: bool,
    cache: bool,
    fit: str,
) -> InputData:
    """The `InputData` whose `build` makes a new pipeline over this pipeline's `elements`.

    The transformations and their order are those listed in `make_dataset`; they define the
    iterator state stored in training checkpoints, so changing them breaks resuming.
    """
    resolution, seed = request.resolution, request.seed

    def decode_resize(*element):
        image, label = src.decode(*element)
        return fit_image(image, resolution, fit), tf.cast(label, tf.int32)

    flip_base = tf.constant(seed, tf.int64) * 1_000_003 + request.pipeline_id

    def preprocess(position, element):
        if cache:
            image, label = element
        elif isinstance(element, tuple):
            image, label = decode_resize(*element)
        else:
            image, label = decode_resize(element)
        flip_seed = tf.stack([flip_base, position]) if random_flip else None
        return flip_and_scale(image, flip_seed), label

    def build() -> tf.data.Dataset:
        ds = elements
        if cache:
            ds = ds.map(decode_resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            ds = ds.cache()
        if shuffle_buffer > 0:
            # Each epoch's order comes from a seed generator shared by all iterators of this
            # dataset object; `build` makes a new object per reader so that no other reader
            # (the start-up summary, a benchmark) can shift the training iterator's order.
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
        # The stream position seeds the flip, so flips are reproducible and survive
        # checkpoints.
        ds = ds.enumerate()
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options)

    return InputData(
        build=build,
        num_examples=src.num_examples,
        class_names=src.class_names,
        skipped=src.skipped,
        examples_per_class=src.examples_per_class,
    )


def pipeline_throughput(input_data: InputData, num_batches: int, warmup: int = 2) -> float:
    """Measures the pipeline alone: images per second over `num_batches` batches.

    Args:
      input_data: from `make_dataset`.
      num_batches: timed batches (>= 1).
      warmup: untimed batches first (fills buffers, traces functions).

    Returns:
      Images per second.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    iterator = iter(input_data.dataset)
    for _ in range(warmup):
        next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch, _ = next(iterator)
        images += int(batch.shape[0])
    return images / (time.perf_counter() - start)
