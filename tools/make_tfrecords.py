"""Converts an image folder (one subfolder per class) into sharded TFRecord files.

    python tools/make_tfrecords.py --input_dir=/data/flowers --output_dir=/data/flowers_tfr \\
        --num_shards=16

Writes `train-SSSSS-of-NNNNN.tfrecord` files of `tf.train.Example` records in the format
that `tf_biggan.data.tfrecord` defines and `tfrecord_source` reads: the original file
contents (JPEG/PNG/BMP/GIF), the class index (sorted subfolder names) and the path relative
to `input_dir`; and beside them `classes.json` (class name -> index) and `dataset_info.json` (number of
examples, examples per class). Every image is decoded once while converting; corrupt files
are skipped and listed (or abort the conversion with `--strict`). The example order is
shuffled with `--seed` across shards so that reading the shards in turn mixes classes;
`--seed=-1` keeps the folder order (shards then hold consecutive runs of it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tf_biggan.data.decode import decode_to_rgb_uint8
from tf_biggan.data.folder import IMAGE_EXTENSIONS, list_image_folder
from tf_biggan.data.source import write_classes_json
from tf_biggan.data.tfrecord import DATASET_INFO_JSON, make_example


def convert_folder(
    input_dir: str,
    output_dir: str,
    num_shards: int,
    seed: int = 0,
    strict: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    verbose: bool = True,
) -> dict:
    """Writes the TFRecord shards, classes.json and dataset_info.json.

    Args:
      input_dir: image folder with one subfolder per class.
      output_dir: created if missing.
      num_shards: number of output files (>= 1).
      seed: example-order shuffle seed; negative keeps the folder order.
      strict: raise on a corrupt file instead of skipping it.
      extensions: accepted file extensions.
      verbose: show a progress bar.

    Returns:
      The dataset_info dict (`num_examples`, `examples_per_class`, `skipped`, `files`).
    """
    import keras  # only for the progress bar

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    class_names, paths, labels = list_image_folder(input_dir, extensions)
    order = np.arange(len(paths))
    if seed >= 0:
        order = np.random.default_rng(seed).permutation(len(paths))
    num_shards = min(num_shards, len(paths))
    tf.io.gfile.makedirs(output_dir)
    shard_paths = [
        os.path.join(output_dir, f"train-{s:05d}-of-{num_shards:05d}.tfrecord")
        for s in range(num_shards)
    ]
    bounds = np.linspace(0, len(order), num_shards + 1).round().astype(int)
    counts = np.zeros(len(class_names), np.int64)
    skipped: list[str] = []
    progbar = keras.utils.Progbar(len(paths), unit_name="image") if verbose else None
    done = 0
    for shard, shard_path in enumerate(shard_paths):
        with tf.io.TFRecordWriter(shard_path) as writer:
            for i in order[bounds[shard] : bounds[shard + 1]]:
                path, label = paths[i], labels[i]
                with tf.io.gfile.GFile(path, "rb") as f:
                    contents = f.read()
                try:
                    decode_to_rgb_uint8(tf.constant(contents))
                except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
                    if strict:
                        raise ValueError(f"corrupt image file {path}: {e.message}") from e
                    logging.warning("skipping corrupt image %s", path)
                    skipped.append(path)
                else:
                    rel = os.path.relpath(path, input_dir)
                    writer.write(make_example(contents, label, rel).SerializeToString())
                    counts[label] += 1
                done += 1
                if progbar is not None:
                    progbar.update(done)
    write_classes_json(output_dir, class_names)
    info = {
        "num_examples": int(counts.sum()),
        "examples_per_class": {name: int(counts[k]) for k, name in enumerate(class_names)},
        "skipped": skipped,
        "files": [os.path.basename(p) for p in shard_paths],
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, DATASET_INFO_JSON), "w") as f:
        json.dump(info, f, indent=1)
    logging.info(
        "wrote %d examples of %d classes to %d shards in %s (%d corrupt files skipped)",
        info["num_examples"],
        len(class_names),
        num_shards,
        output_dir,
        len(skipped),
    )
    return info


def _define_flags() -> None:
    # Defined only when run as a script, so importing convert_folder (e.g. in tests) does
    # not add flags to the process-wide registry.
    flags.DEFINE_string("input_dir", None, "Image folder, one subfolder per class.")
    flags.DEFINE_string("output_dir", None, "Where to write the TFRecord shards.")
    flags.DEFINE_integer("num_shards", 16, "Number of TFRecord files.")
    flags.DEFINE_integer("seed", 0, "Example-order shuffle seed; -1 keeps the folder order.")
    flags.DEFINE_bool("strict", False, "Abort on a corrupt image instead of skipping it.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    flag_values = flags.FLAGS
    convert_folder(
        flag_values.input_dir,
        flag_values.output_dir,
        flag_values.num_shards,
        seed=flag_values.seed,
        strict=flag_values.strict,
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
