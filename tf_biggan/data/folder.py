"""The image folder source (`image_folder_source`): one subfolder per class.

`list_image_folder` lists the files (sorted class folders -> indices, files found
recursively); the source decodes every file once when it is built, in one parallel
`tf.data` pass followed by `ignore_errors`, whose surviving indices are the good files. This
is exact: each corrupt file is counted once, named in the log and left out of training, and
`strict=True` turns it into an error naming the files. For very large sets, convert the
folder to TFRecords once with `tools/make_tfrecords.py`, which performs the same check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import paths
from tf_biggan.data.decode import decode_to_rgb_uint8
from tf_biggan.data.source import GIN_MODULE, Source, SourceRequest, preview

__all__ = ["IMAGE_EXTENSIONS", "image_folder_source", "list_image_folder"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "gif")


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


@gin.configurable(module=GIN_MODULE)
def image_folder_source(
    request: SourceRequest,
    *,
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
      request: uses `num_classes` (must equal the number of class subfolders) and `strict`
        (raise on corrupt files instead of skipping them); `make_dataset` resizes and shards.
      root: the folder.
      extensions: accepted extensions.

    Returns:
      A `Source` whose elements are `(path, label)`.
    """
    num_classes = request.num_classes
    root = paths.expand(root)
    class_names, image_paths, labels = list_image_folder(root, extensions)
    if len(class_names) != num_classes:
        raise ValueError(
            f"image folder {root} has {len(class_names)} class subfolders "
            f"({preview(class_names)}) but num_classes={num_classes}"
        )
    bad = _find_undecodable(image_paths)
    if bad and request.strict:
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
