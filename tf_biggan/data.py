"""tf.data input pipelines for BigGAN training.

Every pipeline yields `(images, labels)` batches: images float32 `[B, R, R, 3]` in [-1, 1],
labels int32 `[B]` in `[0, num_classes)`. The preprocessing follows the paper's ImageNet
pipeline (Brock et al. 2019, after SA-GAN): centre crop to a square, resize to the training
resolution (bilinear with antialiasing, which averages like an area filter when shrinking),
optional random horizontal flip, values scaled to [-1, 1].

A data set is described by a *source* builder (gin-configurable) that returns a `Source`:
cheap, un-decoded elements (file paths, serialized records, array rows or indices) plus a
`decode` function turning one element into `(image, label)`. `make_dataset` shards the cheap
elements per input pipeline before shuffling, so workers see disjoint shards and shuffle
buffers hold paths or records rather than decoded pictures; it decodes after shuffling.

Sources:
  * `synthetic_source`: procedural coloured shapes, one class per (shape, colour) pair.
  * `idx_source`: IDX files (MNIST / Fashion-MNIST format), gzipped or not.
  * `image_folder_source`: one subfolder per class, JPEG/PNG/BMP/GIF.
  * `tfrecord_source`: `tf.train.Example` records (see `tools/make_tfrecords.py`).
  * `tfds_source`: any TFDS image/label data set.

Corrupt images in an image folder are found by one parallel decode pass when the source is
built (a `tf.data` map over all files followed by `ignore_errors`; the surviving indices are
the good files). This is exact: each corrupt file is counted once, named in the log, and
left out of training, and `strict=True` turns it into an error naming the files. It costs one
decode of the folder at start; for very large sets convert the folder to TFRecords once with
`tools/make_tfrecords.py`, which performs the same check while converting.

The iterator of `InputData.dataset` is a plain `tf.data` iterator and can be saved in a
`tf.train.Checkpoint`; it restores to the exact next batch. All random choices are seeded.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import time
from collections.abc import Callable, Sequence

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import imaging, paths

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "IMAGE_EXTENSIONS",
    "InputData",
    "Source",
    "SYNTHETIC_COLOURS",
    "SYNTHETIC_SHAPES",
    "TFRECORD_IMAGE_KEY",
    "TFRECORD_LABEL_KEY",
    "decode_to_rgb_uint8",
    "idx_source",
    "image_folder_source",
    "list_image_folder",
    "make_dataset",
    "pipeline_throughput",
    "preprocess_image",
    "summarize_dataset",
    "synthetic_source",
    "tfds_source",
    "tfrecord_source",
]

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
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "gif")

# Feature keys of the records written by tools/make_tfrecords.py (the TF-Slim / TFDS ImageNet
# convention): "image/encoded" bytes (JPEG/PNG/BMP/GIF file contents), "image/class/label"
# int64 class index in [0, num_classes). The converter also writes "image/filename" (bytes).
TFRECORD_IMAGE_KEY = "image/encoded"
TFRECORD_LABEL_KEY = "image/class/label"
CLASSES_JSON = "classes.json"
# Files TFDS needs in `manual_dir` to prepare a data set it cannot download.
MANUAL_DOWNLOAD_FILES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}
DATASET_INFO_JSON = "dataset_info.json"

SYNTHETIC_SHAPES = ("circle", "square", "triangle", "cross", "ring")
SYNTHETIC_COLOURS = (
    ("red", (0.95, 0.15, 0.15)),
    ("green", (0.15, 0.85, 0.2)),
    ("blue", (0.2, 0.35, 1.0)),
    ("yellow", (0.95, 0.9, 0.15)),
    ("magenta", (0.9, 0.2, 0.9)),
    ("cyan", (0.15, 0.9, 0.95)),
    ("orange", (1.0, 0.55, 0.1)),
    ("white", (0.97, 0.97, 0.97)),
)
_MAX_GRID_CLASSES = 20


def _preview(names: Sequence[str], limit: int = 10) -> str:
    """Comma-separated names, shortened for error messages."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


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


# --------------------------------------------------------------------------------------------
# Image decoding and preprocessing.


def decode_to_rgb_uint8(contents: tf.Tensor) -> tf.Tensor:
    """Decodes a JPEG/PNG/BMP/GIF file to uint8 RGB.

    Grey is replicated to three channels; an alpha channel is composited over white (so
    transparent areas do not show whatever colour they happen to store); 16-bit PNGs are
    reduced to 8 bits; only the first frame of an animated GIF is kept.

    Args:
      contents: scalar string tensor, the file's bytes.

    Returns:
      uint8 `[H, W, 3]`.
    """
    image = tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)
    channels = tf.shape(image)[-1]

    def grey_to_rgb(grey):
        return tf.tile(grey, [1, 1, 3])

    def over_white(rgb, alpha):
        alpha = tf.cast(alpha, tf.float32) / 255.0
        mixed = tf.cast(rgb, tf.float32) * alpha + 255.0 * (1.0 - alpha)
        return tf.cast(tf.round(mixed), tf.uint8)

    rgb = tf.case(
        [
            (channels == 1, lambda: grey_to_rgb(image[..., :1])),
            (channels == 2, lambda: over_white(grey_to_rgb(image[..., :1]), image[..., 1:2])),
            (channels == 4, lambda: over_white(image[..., :3], image[..., 3:4])),
        ],
        default=lambda: image[..., :3],
    )
    rgb.set_shape([None, None, 3])
    return rgb


def _crop_resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Centre square crop and antialiased bilinear resize, rounded back to uint8."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    image = image[top : top + side, left : left + side, :]
    image = tf.image.resize(
        tf.cast(image, tf.float32), [resolution, resolution], method="bilinear", antialias=True
    )
    # Rounding to 8 bits keeps the cached and the streamed paths bit-identical and lets the
    # cache hold uint8 (4x smaller than float).
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    image.set_shape([resolution, resolution, 3])
    return image


def _finish(image: tf.Tensor, flip_seed: tf.Tensor | None) -> tf.Tensor:
    """Optional stateless horizontal flip, then uint8 -> float32 in [-1, 1]."""
    if flip_seed is not None:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def preprocess_image(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Deterministic preprocessing of one image (no flip).

    Args:
      image: uint8 `[H, W, 3]`.
      resolution: output side length.

    Returns:
      float32 `[resolution, resolution, 3]` in [-1, 1].
    """
    return _finish(_crop_resize(image, resolution), None)


# --------------------------------------------------------------------------------------------
# Synthetic source.


def _render_shape(index, *, resolution, num_classes, seed):
    """Draws one coloured shape; label = index mod num_classes."""
    index = tf.cast(index, tf.int64)
    label = tf.cast(index % num_classes, tf.int32)
    shape_id = label % len(SYNTHETIC_SHAPES)
    colour_id = label % len(SYNTHETIC_COLOURS)
    rnd = tf.random.stateless_uniform([10], seed=tf.stack([tf.constant(seed, tf.int64), index]))
    centre_x = (rnd[0] - 0.5) * 0.6
    centre_y = (rnd[1] - 0.5) * 0.6
    radius = 0.4 + 0.25 * rnd[2]
    colours = tf.constant([c for _, c in SYNTHETIC_COLOURS], tf.float32)
    colour = tf.clip_by_value(tf.gather(colours, colour_id) + (rnd[3:6] - 0.5) * 0.15, 0.0, 1.0)
    background = 0.05 + 0.3 * rnd[6] + (rnd[7:10] - 0.5) * 0.1

    coords = (tf.range(resolution, dtype=tf.float32) + 0.5) / resolution * 2.0 - 1.0
    dy = coords[:, None] - centre_y  # [R, 1], y grows downwards
    dx = coords[None, :] - centre_x  # [1, R]
    ady, adx = tf.abs(dy), tf.abs(dx)
    dist = tf.sqrt(dx * dx + dy * dy)
    masks = tf.stack(
        [
            dist < radius,
            tf.maximum(adx, ady) < 0.8 * radius,
            (dy < 0.7 * radius) & (adx < 0.55 * (dy + radius)),
            ((adx < 0.28 * radius) & (ady < radius)) | ((ady < 0.28 * radius) & (adx < radius)),
            (dist < radius) & (dist > 0.6 * radius),
        ]
    )
    mask = tf.cast(tf.gather(masks, shape_id), tf.float32)[..., None]  # [R, R, 1]
    image = mask * colour + (1.0 - mask) * background
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    image.set_shape([resolution, resolution, 3])
    return image, label


@gin.configurable
def synthetic_source(
    *,
    resolution: int,
    num_classes: int,
    strict: bool = False,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    num_examples: int = 10_000,
) -> Source:
    """Procedural class-conditional images: one class per (shape, colour) pair.

    Class k has shape `SYNTHETIC_SHAPES[k % 5]` and colour `SYNTHETIC_COLOURS[k % 8]` (distinct
    pairs for k < 40, and the first classes differ in both shape and colour), drawn
    over a dark jittered background with random position, size and colour jitter. Images
    are generated on the fly at `resolution` from `(seed, index)`, so the set is fixed for a
    given seed; example i has label `i % num_classes`.

    Args:
      resolution: side of the generated images.
      num_classes: 1..40.
      strict: unused (nothing can be corrupt).
      seed: generation seed.
      input_context: unused (sharded by `make_dataset`).
      num_examples: size of the set.

    Returns:
      A `Source`.
    """
    del strict, input_context
    max_classes = len(SYNTHETIC_SHAPES) * len(SYNTHETIC_COLOURS)
    if not 1 <= num_classes <= max_classes:
        raise ValueError(
            f"synthetic_source supports 1..{max_classes} classes, got num_classes={num_classes}"
        )
    if num_examples < 1:
        raise ValueError(f"synthetic_source needs num_examples >= 1, got {num_examples}")
    names = tuple(
        f"{SYNTHETIC_COLOURS[k % len(SYNTHETIC_COLOURS)][0]} "
        f"{SYNTHETIC_SHAPES[k % len(SYNTHETIC_SHAPES)]}"
        for k in range(num_classes)
    )
    counts = {
        name: num_examples // num_classes + (1 if k < num_examples % num_classes else 0)
        for k, name in enumerate(names)
    }

    def decode(index):
        return _render_shape(index, resolution=resolution, num_classes=num_classes, seed=seed)

    return Source(
        elements=tf.data.Dataset.range(num_examples),
        decode=decode,
        num_examples=num_examples,
        class_names=names,
        examples_per_class=counts,
    )


# --------------------------------------------------------------------------------------------
# IDX source.


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


@gin.configurable
def idx_source(
    *,
    resolution: int,
    num_classes: int,
    strict: bool = False,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    images_path: str = gin.REQUIRED,
    labels_path: str = gin.REQUIRED,
    class_names: Sequence[str] | None = None,
) -> Source:
    """Greyscale IDX images (MNIST / Fashion-MNIST format) with IDX labels.

    Args:
      resolution: unused here (resized by `make_dataset`).
      num_classes: labels must lie in [0, num_classes).
      strict: unused (the arrays are validated whole).
      seed: unused.
      input_context: unused (sharded by `make_dataset`).
      images_path: IDX3 uint8 file `[N, H, W]`, optionally gzipped.
      labels_path: IDX1 uint8 file `[N]`, optionally gzipped.
      class_names: names of the classes; default: the Fashion-MNIST names when
        `images_path` contains "fashion", else "0" .. "K-1" with K = num_classes.

    Returns:
      A `Source` whose elements are `(uint8 [H, W], label)` rows.
    """
    del resolution, strict, seed, input_context
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
            f"{labels_path}: {len(class_names)} classes ({_preview(class_names)}) but "
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


# --------------------------------------------------------------------------------------------
# Image folder source.


def list_image_folder(
    root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[tuple[str, ...], list[str], list[int]]:
    """Lists an image folder with one subfolder per class.

    Class indices follow the sorted subfolder names; files are found recursively within each
    class folder and listed in sorted order.

    Args:
      root: folder holding one subfolder per class.
      extensions: accepted file extensions (case-insensitive, without dot).

    Returns:
      `(class_names, image_paths, labels)`.

    Raises:
      FileNotFoundError: `root` does not exist.
      ValueError: `root` has no class subfolders, or a class folder holds no images.
    """
    root = paths.expand(root)
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"image folder not found (or not a folder): {root}")
    suffixes = tuple("." + e.lower().lstrip(".") for e in extensions)
    entries = sorted(tf.io.gfile.listdir(root))
    classes = [e.rstrip("/") for e in entries if tf.io.gfile.isdir(os.path.join(root, e))]
    if not classes:
        loose = [e for e in entries if e.lower().endswith(suffixes)]
        hint = (
            f" It holds {len(loose)} image files directly; put them in one subfolder per class."
            if loose
            else ""
        )
        raise ValueError(f"image folder {root} has no class subfolders.{hint}")
    image_paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, filenames in tf.io.gfile.walk(folder)
            for f in filenames
            if f.lower().endswith(suffixes)
        )
        if not files:
            raise ValueError(
                f"class folder {folder} holds no images with extensions {sorted(suffixes)}"
            )
        image_paths.extend(files)
        labels.extend([index] * len(files))
    if len(classes) == 1:
        logging.warning(
            "image folder %s has a single class subfolder %r; if that folder holds the class "
            "folders, point root one level down",
            root,
            classes[0],
        )
    return tuple(classes), image_paths, labels


def _find_undecodable(image_paths: Sequence[str]) -> list[int]:
    """Indices of files that fail to decode, found by one parallel decode pass."""
    index_ds = tf.data.Dataset.range(len(image_paths))
    path_table = tf.constant(list(image_paths))

    def try_decode(i):
        image = decode_to_rgb_uint8(tf.io.read_file(path_table[i]))
        # Returning the decoded shape keeps the decode from being pruned as unused.
        return i, tf.shape(image)

    good = index_ds.map(try_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    good = good.ignore_errors()
    # Large folders take minutes (about 400 JPEGs/s on 2 cores): show progress.
    progress = (
        keras.utils.Progbar(len(image_paths), unit_name="image")
        if len(image_paths) > 2000
        else None
    )
    good_set = set()
    for i, _ in good.as_numpy_iterator():
        good_set.add(int(i))
        if progress is not None and len(good_set) % 500 == 0:
            progress.update(len(good_set))
    if progress is not None:
        progress.update(len(image_paths), finalize=True)
    return [i for i in range(len(image_paths)) if i not in good_set]


@gin.configurable
def image_folder_source(
    *,
    resolution: int,
    num_classes: int,
    strict: bool = False,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    root: str = gin.REQUIRED,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Source:
    """A folder of images with one subfolder per class (sorted names -> indices).

    JPEG, PNG, BMP and GIF are read with `tf.io.decode_image`; grey, grey+alpha, RGBA and
    16-bit images become uint8 RGB (see `decode_to_rgb_uint8`). Every file is decoded once
    when the source is built; files that fail are left out, logged and counted in `skipped`
    (each once), or raise when `strict`. Every input pipeline validates the whole folder, so
    all of them agree on the file list before sharding it. The check decodes about 400
    500x375 JPEGs per second on 2 CPU cores; for sets of hundreds of thousands of images
    convert once with `tools/make_tfrecords.py` and use `tfrecord_source`.

    Args:
      resolution: unused here (resized by `make_dataset`).
      num_classes: must equal the number of class subfolders.
      strict: raise on the first corrupt file instead of skipping.
      seed: unused.
      input_context: unused (sharded by `make_dataset`).
      root: the folder.
      extensions: accepted extensions.

    Returns:
      A `Source` whose elements are `(path, label)`.
    """
    del resolution, seed, input_context
    root = paths.expand(root)
    class_names, image_paths, labels = list_image_folder(root, extensions)
    if len(class_names) != num_classes:
        raise ValueError(
            f"image folder {root} has {len(class_names)} class subfolders "
            f"({_preview(class_names)}) but num_classes={num_classes}"
        )
    bad = _find_undecodable(image_paths)
    if bad and strict:
        listed = ", ".join(image_paths[i] for i in bad[:5])
        raise ValueError(f"{len(bad)} corrupt or unreadable image file(s) (strict=True): {listed}")
    for i in bad:
        logging.warning("skipping corrupt or unreadable image %s", image_paths[i])
    bad_set = set(bad)
    image_paths = [p for i, p in enumerate(image_paths) if i not in bad_set]
    labels = [lab for i, lab in enumerate(labels) if i not in bad_set]
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    empty = [class_names[k] for k in range(num_classes) if counts[k] == 0]
    if empty:
        raise ValueError(f"class folder {os.path.join(root, empty[0])} holds no readable images")
    skipped = tf.Variable(len(bad), dtype=tf.int64, trainable=False, name="skipped_images")

    def decode(path, label):
        return decode_to_rgb_uint8(tf.io.read_file(path)), label

    return Source(
        elements=tf.data.Dataset.from_tensor_slices(
            (tf.constant(image_paths), tf.constant(labels, tf.int32))
        ),
        decode=decode,
        num_examples=len(image_paths),
        class_names=class_names,
        examples_per_class={name: int(counts[k]) for k, name in enumerate(class_names)},
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------
# TFRecord source.


def _check_label(label: tf.Tensor, num_classes: int, where: str) -> tf.Tensor:
    """In-graph range check, for sources whose labels are only seen while reading."""
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


@gin.configurable
def tfrecord_source(
    *,
    resolution: int,
    num_classes: int,
    strict: bool = False,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    file_pattern: str = gin.REQUIRED,
    image_key: str = TFRECORD_IMAGE_KEY,
    label_key: str = TFRECORD_LABEL_KEY,
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
      resolution: unused here (resized by `make_dataset`).
      num_classes: number of classes.
      strict: unused (decode errors always raise).
      seed: unused (the file order is fixed).
      input_context: when it has several pipelines and there are at least as many files,
        each pipeline reads its own files.
      file_pattern: glob, e.g. "/data/flowers/train-*.tfrecord".
      image_key: feature holding the encoded image.
      label_key: feature holding the label.
      class_names: overrides classes.json; default "0" .. "K-1".

    Returns:
      A `Source` whose elements are serialized records.
    """
    del resolution, strict, seed
    file_pattern = paths.expand(file_pattern)
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern}")
    folder = os.path.dirname(files[0])
    classes_json = os.path.join(folder, CLASSES_JSON)
    if class_names is None and tf.io.gfile.exists(classes_json):
        with tf.io.gfile.GFile(classes_json) as f:
            mapping = json.load(f)
        class_names = tuple(sorted(mapping, key=mapping.get))
    if class_names is None:
        class_names = tuple(str(k) for k in range(num_classes))
    class_names = tuple(class_names)
    num_examples = None
    per_class = None
    info_json = os.path.join(folder, DATASET_INFO_JSON)
    if tf.io.gfile.exists(info_json):
        with tf.io.gfile.GFile(info_json) as f:
            info = json.load(f)
        num_examples = int(info["num_examples"])
        per_class = {k: int(v) for k, v in info["examples_per_class"].items()}

    presharded = False
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            file_ds = file_ds.shard(
                input_context.num_input_pipelines, input_context.input_pipeline_id
            )
            presharded = True
    elements = file_ds.flat_map(tf.data.TFRecordDataset)
    features = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        label_key: tf.io.FixedLenFeature([], tf.int64),
    }
    where = f"TFRecords {file_pattern}"

    def decode(record):
        parsed = tf.io.parse_single_example(record, features)
        label = _check_label(parsed[label_key], num_classes, where)
        return decode_to_rgb_uint8(parsed[image_key]), label

    return Source(
        elements=elements,
        decode=decode,
        num_examples=num_examples,
        class_names=class_names,
        examples_per_class=per_class,
        presharded=presharded,
    )


# --------------------------------------------------------------------------------------------
# TFDS source.


@gin.configurable
def tfds_source(
    *,
    resolution: int,
    num_classes: int,
    strict: bool = False,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    name: str = gin.REQUIRED,
    split: str = "train",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    download: bool = True,
) -> Source:
    """A TensorFlow Datasets image/label data set, e.g. "cifar10" or "imagenet2012".

    The builder is prepared (downloaded, or built from `manual_dir` for ImageNet) on first
    use. Files are shuffled with `seed` and, under an input context, each input pipeline
    reads its own files (`tfds.ReadConfig(input_context=...)`). Images are decoded after
    shuffling (`tfds.decode.SkipDecoding`), so shuffle buffers hold encoded bytes.

    Args:
      resolution: unused here (resized by `make_dataset`).
      num_classes: must equal the number of names of the label feature.
      strict: unused (decode errors raise).
      seed: file shuffling seed.
      input_context: per-pipeline file sharding.
      name: TFDS name, optionally with config/version ("imagenet2012:5.1.0").
      split: split spec ("train", "train[:90%]").
      data_dir: TFDS data folder (default ~/tensorflow_datasets).
      manual_dir: folder with manually downloaded archives (ImageNet).
      image_key: image feature name.
      label_key: `ClassLabel` feature name.
      download: call `download_and_prepare` when the data is not yet prepared.

    Returns:
      A `Source` whose elements are feature dicts with encoded images.
    """
    del resolution, strict
    import tensorflow_datasets as tfds  # lazy: importing tfds is slow and optional

    if not name:
        raise ValueError("tfds_source needs a data set name")
    data_dir, manual_dir = paths.expand(data_dir), paths.expand(manual_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    if download and not _tfds_prepared(builder):
        _check_manual_files(builder, manual_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    info = builder.info
    if image_key not in info.features or label_key not in info.features:
        raise ValueError(
            f"TFDS {name} has features {sorted(info.features.keys())}; "
            f"image_key={image_key!r} / label_key={label_key!r} not found"
        )
    label_feature = info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise ValueError(f"TFDS {name}: feature {label_key!r} is not a ClassLabel")
    class_names = tuple(label_feature.names)
    if split not in info.splits:
        raise ValueError(f"TFDS {name} has splits {sorted(info.splits.keys())}, not {split!r}")
    num_examples = int(info.splits[split].num_examples)
    read_config = tfds.ReadConfig(
        input_context=input_context, shuffle_seed=seed, interleave_cycle_length=4
    )
    elements = builder.as_dataset(
        split=split,
        shuffle_files=True,
        read_config=read_config,
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    where = f"TFDS {name}[{split}]"

    def decode(example):
        label = _check_label(example[label_key], num_classes, where)
        return decode_to_rgb_uint8(example[image_key]), label

    return Source(
        elements=elements.map(lambda ex: {image_key: ex[image_key], label_key: ex[label_key]}),
        decode=decode,
        num_examples=num_examples,
        class_names=class_names,
        examples_per_class=None,
        presharded=input_context is not None,
    )


def _tfds_prepared(builder) -> bool:
    """True when the builder's data is already prepared in its data folder."""
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _check_manual_files(builder, manual_dir: str | None) -> None:
    """Raises before preparing a data set whose manual download is missing.

    TFDS asks for some data sets (ImageNet) to be downloaded by hand into `manual_dir`, and
    without them fails deep inside the preparation with a message about the folder. This
    names the files instead. With no `manual_dir`, TFDS's default folder and check apply.

    Raises:
      FileNotFoundError: `manual_dir` is missing, empty, or lacks a file the data set needs.
    """
    if manual_dir is None or not getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        return
    needed = MANUAL_DOWNLOAD_FILES.get(builder.name, ())
    exists = tf.io.gfile.isdir(manual_dir)
    present = set(tf.io.gfile.listdir(manual_dir)) if exists else set()
    missing = [name for name in needed if name not in present]
    if present and not missing:
        return
    if missing:
        what = " and ".join(missing)
    else:
        instructions = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
        what = f"its manually downloaded files ({instructions})"
    folder_state = "does not exist" if not exists else "is empty" if not present else "lacks them"
    raise FileNotFoundError(
        f"TFDS {builder.name} is not prepared yet and needs {what} in manual_dir "
        f"{manual_dir}, which {folder_state}. TFDS cannot download them: get them by hand "
        "(for ImageNet, from image-net.org after registering), put them there, or bind "
        "make_dataset.source = @image_folder_source to read a folder of images instead"
    )


# --------------------------------------------------------------------------------------------
# The training pipeline.


def _write_classes_json(model_dir: str, class_names: Sequence[str]) -> None:
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, CLASSES_JSON), "w") as f:
        json.dump({name: k for k, name in enumerate(class_names)}, f, indent=1)


@gin.configurable
def make_dataset(
    *,
    batch_size: int,
    resolution: int,
    num_classes: int,
    source: Callable[..., Source] = gin.REQUIRED,
    input_context: tf.distribute.InputContext | None = None,
    model_dir: str | None = None,
    shuffle_buffer: int = 10_000,
    random_flip: bool = False,
    cache: bool = False,
    seed: int = 0,
    strict: bool = False,
) -> InputData:
    """Builds the repeated, batched training pipeline.

    Order: shard (per input pipeline) -> [decode, crop, resize, cache] -> shuffle -> repeat
    -> decode, centre crop, resize, flip, scale -> batch (drop remainder) -> prefetch. With
    `cache`, the cache holds uint8 images at `resolution` (decoded once), otherwise images
    are decoded after shuffling.

    Args:
      batch_size: per-pipeline batch (global batch / number of input pipelines).
      resolution: output side length R.
      num_classes: must equal the source's number of classes.
      source: a source builder (e.g. `synthetic_source`), called with `resolution`,
        `num_classes`, `strict`, `seed`, `input_context`.
      input_context: `tf.distribute.InputContext`; the data is sharded by its
        `num_input_pipelines` / `input_pipeline_id` before shuffling.
      model_dir: if given, `classes.json` (class name -> index) is written there.
      shuffle_buffer: shuffle buffer size; 0 disables shuffling (source order).
      random_flip: random horizontal flips.
      cache: cache decoded, resized images in memory (one cache per `dataset` object, so
        only the training iterator's is kept for the run).
      seed: shuffle / flip seed.
      strict: corrupt images raise instead of being skipped.

    Returns:
      `InputData`.

    Raises:
      ValueError: class-count mismatch, or fewer examples per pipeline than one batch
        (checked from `num_examples`, or by counting the first batch of elements when the
        source does not know its size).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
    src = source(
        resolution=resolution,
        num_classes=num_classes,
        strict=strict,
        seed=seed,
        input_context=input_context,
    )
    if len(src.class_names) != num_classes:
        raise ValueError(
            f"the data source has {len(src.class_names)} classes "
            f"({_preview(src.class_names)}) but num_classes={num_classes}"
        )
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
    if src.num_examples is not None:
        per_pipeline = src.num_examples // num_pipelines
        if per_pipeline < batch_size:
            raise ValueError(
                f"the data set has {src.num_examples} examples ({per_pipeline} per input "
                f"pipeline, {num_pipelines} pipeline(s)), fewer than one batch of {batch_size}; "
                "lower the batch size or add data"
            )
    if model_dir and pipeline_id == 0:
        _write_classes_json(model_dir, src.class_names)

    elements = src.elements
    if num_pipelines > 1 and not src.presharded:
        elements = elements.shard(num_pipelines, pipeline_id)

    if src.num_examples is None:
        # Size unknown (e.g. TFRecords without dataset_info.json): count the first batch's
        # worth of un-decoded elements of this shard, which is cheap, rather than let a tiny
        # set repeat forever unnoticed.
        available = int(elements.take(batch_size).reduce(np.int64(0), lambda count, _: count + 1))
        if available < batch_size:
            raise ValueError(
                f"the data source yields only {available} examples per input pipeline "
                f"({num_pipelines} pipeline(s)), fewer than one batch of {batch_size}; lower "
                "the batch size or add data"
            )

    def decode_resize(*element):
        image, label = src.decode(*element)
        return _crop_resize(image, resolution), tf.cast(label, tf.int32)

    flip_base = tf.constant(seed, tf.int64) * 1_000_003 + pipeline_id

    def preprocess(position, element):
        if cache:
            image, label = element
        elif isinstance(element, tuple):
            image, label = decode_resize(*element)
        else:
            image, label = decode_resize(element)
        flip_seed = tf.stack([flip_base, position]) if random_flip else None
        return _finish(image, flip_seed), label

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


# --------------------------------------------------------------------------------------------
# Data set summary.


def summarize_dataset(
    input_data_or_source: InputData | Source,
    model_dir: str | None,
    resolution: int,
    examples_per_class: int = 8,
    max_scan: int = 20_000,
) -> dict[str, int]:
    """Logs the data set and writes `model_dir/real_examples.png`.

    Logs the resolution, the total and the number of images per class (exact when the
    source knows it, otherwise estimated from up to `max_scan` examples), and writes a grid
    with one row per class (at most 20 classes) of `examples_per_class` preprocessed real
    images, so a wrong class mapping shows at a glance.

    Args:
      input_data_or_source: an `InputData` (its batches are read from a fresh iterator) or
        a `Source` (read in source order).
      model_dir: where to write the PNG; None logs only.
      resolution: the training resolution (images of a `Source` are resized to it).
      examples_per_class: columns of the grid.
      max_scan: most examples read to fill the grid and estimate counts.

    Returns:
      Class name -> number of images (exact or estimated).
    """
    data = input_data_or_source
    class_names = data.class_names
    num_classes = len(class_names)
    shown = min(num_classes, _MAX_GRID_CLASSES)
    if isinstance(data, Source):
        stream = data.dataset.map(
            lambda image, label: (preprocess_image(image, resolution), label)
        ).batch(256)
    else:
        stream = data.dataset
    picked: list[list[np.ndarray]] = [[] for _ in range(shown)]
    seen = np.zeros(num_classes, np.int64)
    scanned = 0
    for images, labels in stream:
        images, labels = images.numpy(), labels.numpy()
        for image, label in zip(images, labels, strict=True):
            seen[label] += 1
            if label < shown and len(picked[label]) < examples_per_class:
                picked[label].append(image)
        scanned += len(labels)
        full = all(len(p) >= examples_per_class for p in picked)
        if scanned >= max_scan or (full and scanned >= 2_000):
            break
        if isinstance(data, Source) and data.num_examples and scanned >= data.num_examples:
            break

    known = data.examples_per_class
    total = data.num_examples
    if known is not None:
        counts = dict(known)
        how = "exact"
    else:
        estimate_total = total if total is not None else scanned
        counts = {
            name: int(round(seen[k] / max(scanned, 1) * estimate_total))
            for k, name in enumerate(class_names)
        }
        how = f"estimated from {scanned} examples"
    logging.info(
        "data: %s images, %d classes, resolution %d; images per class (%s):",
        "unknown number of" if total is None else total,
        num_classes,
        resolution,
        how,
    )
    for name, count in counts.items():
        logging.info("  %6d  %s", count, name)
    missing = [class_names[k] for k in range(shown) if not picked[k]]
    if missing:
        logging.warning("no examples seen for classes %s in %d examples", missing, scanned)

    if model_dir:
        blank = np.full((resolution, resolution, 3), -1.0, np.float32)
        tiles = [
            picked[k][j] if j < len(picked[k]) else blank
            for k in range(shown)
            for j in range(examples_per_class)
        ]
        grid = imaging.image_grid(np.stack(tiles), shown, examples_per_class)
        path = os.path.join(model_dir, "real_examples.png")
        imaging.write_png(path, grid)
        logging.info("wrote %s (one row per class, first %d classes)", path, shown)
    return counts
