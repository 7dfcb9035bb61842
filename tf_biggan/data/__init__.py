"""tf.data input pipelines for BigGAN training.

Every pipeline yields `(images, labels)` batches: images float32 `[B, R, R, 3]` in [-1, 1],
labels int32 `[B]` in `[0, num_classes)`. The preprocessing follows the paper's ImageNet
pipeline (Brock et al. 2019, after SA-GAN): centre crop to a square, resize to the training
resolution (bilinear with antialiasing), optional random horizontal flip, values scaled to
[-1, 1]. With `make_dataset.fit = "pad"` an image no larger than the resolution (28 px
Fashion-MNIST at 32) is padded with black instead of upscaled.

A data set is described by a *source* builder (gin-configurable), called with a
`SourceRequest` (resolution, num_classes, strict, seed, input_context), that returns a `Source`:
cheap, un-decoded elements plus a `decode` function turning one element into
`(image, label)`. `make_dataset` shards, shuffles and repeats the elements, then decodes
and preprocesses them.

Modules (each imports only those above it):
  * `source`: the `Source` and `SourceRequest` types, the in-graph label check,
    `classes.json`.
  * `decode`: image decoding (`decode_to_rgb_uint8`), crop and resize or pad (`fit_image`),
    `preprocess_image`.
  * `synthetic`: `synthetic_source`, procedural coloured shapes, one class per
    (shape, colour) pair.
  * `idx`: `idx_source`, IDX files (MNIST / Fashion-MNIST format), gzipped or not.
  * `folder`: `image_folder_source`, one subfolder per class, JPEG/PNG/BMP/GIF, corrupt
    files found and left out when the source is built.
  * `tfrecord`: `tfrecord_source` and the record format (`IMAGE_KEY`, `LABEL_KEY`) that
    `tools/make_tfrecords.py` writes.
  * `tfds`: `tfds_source`, any TFDS image/label data set.
  * `pipeline`: `make_dataset` -> `InputData`, and `pipeline_throughput`.
  * `report`: `summarize_dataset` (images per class, a grid of real examples).

Importing this package registers every gin configurable of the data sets.
"""

from tf_biggan.data import decode, folder, idx, pipeline, report, source, synthetic, tfds, tfrecord
from tf_biggan.data.decode import FITS, decode_to_rgb_uint8, fit_image, preprocess_image
from tf_biggan.data.folder import IMAGE_EXTENSIONS, image_folder_source, list_image_folder
from tf_biggan.data.idx import FASHION_MNIST_CLASS_NAMES, idx_source
from tf_biggan.data.pipeline import InputData, make_dataset, pipeline_throughput
from tf_biggan.data.report import summarize_dataset
from tf_biggan.data.source import CLASSES_JSON, Source, SourceRequest
from tf_biggan.data.synthetic import SYNTHETIC_COLOURS, SYNTHETIC_SHAPES, synthetic_source
from tf_biggan.data.tfds import MANUAL_DOWNLOAD_FILES, tfds_source
from tf_biggan.data.tfrecord import DATASET_INFO_JSON, tfrecord_source
from tf_biggan.data.tfrecord import IMAGE_KEY as TFRECORD_IMAGE_KEY
from tf_biggan.data.tfrecord import LABEL_KEY as TFRECORD_LABEL_KEY

__all__ = [
    "CLASSES_JSON",
    "DATASET_INFO_JSON",
    "FASHION_MNIST_CLASS_NAMES",
    "FITS",
    "IMAGE_EXTENSIONS",
    "InputData",
    "MANUAL_DOWNLOAD_FILES",
    "Source",
    "SourceRequest",
    "SYNTHETIC_COLOURS",
    "SYNTHETIC_SHAPES",
    "TFRECORD_IMAGE_KEY",
    "TFRECORD_LABEL_KEY",
    "decode",
    "decode_to_rgb_uint8",
    "fit_image",
    "folder",
    "idx",
    "idx_source",
    "image_folder_source",
    "list_image_folder",
    "make_dataset",
    "pipeline",
    "pipeline_throughput",
    "preprocess_image",
    "report",
    "source",
    "summarize_dataset",
    "synthetic",
    "synthetic_source",
    "tfds",
    "tfds_source",
    "tfrecord",
    "tfrecord_source",
]
