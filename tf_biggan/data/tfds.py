"""The TensorFlow Datasets source (`tfds_source`), e.g. "cifar10" or "imagenet2012".

`tensorflow_datasets` is imported only when the source is built (it is slow to import and
optional: `pip install 'tf_biggan[tfds]'`; without it, building the source says so). Data sets TFDS cannot download (ImageNet) are checked for their manually
downloaded files before preparing, so the error names the missing files.
"""

from __future__ import annotations

import os

import gin
import tensorflow as tf

from tf_biggan import paths
from tf_biggan.data.decode import decode_to_rgb_uint8
from tf_biggan.data.source import GIN_MODULE, Source, SourceRequest, check_label

__all__ = ["MANUAL_DOWNLOAD_FILES", "import_tfds", "tfds_source"]


def import_tfds():
    """The `tensorflow_datasets` module, imported on first use (it is slow to import).

    Raises:
      ImportError: TensorFlow Datasets is not installed; the message names the extra.
    """
    try:
        import tensorflow_datasets
    except ImportError as error:
        raise ImportError(
            "TFDS sources need TensorFlow Datasets, an optional dependency of tf_biggan: "
            "pip install 'tf_biggan[tfds]' (or pip install tensorflow-datasets)"
        ) from error
    return tensorflow_datasets


# Files TFDS needs in `manual_dir` to prepare a data set it cannot download.
MANUAL_DOWNLOAD_FILES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}


@gin.configurable(module=GIN_MODULE)
def tfds_source(
    request: SourceRequest,
    *,
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
      request: uses `num_classes` (must equal the number of names of the label feature),
        `seed` (file shuffling seed) and `input_context` (per-pipeline file sharding);
        decode errors raise, and `make_dataset` resizes.
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
    num_classes, input_context = request.num_classes, request.input_context
    tfds = import_tfds()

    if not name:
        raise ValueError("tfds_source needs a data set name")
    builder = _prepared_builder(name, paths.expand(data_dir), paths.expand(manual_dir), download)
    info = builder.info
    class_names = _class_names(info, name, image_key, label_key)
    if split not in info.splits:
        raise ValueError(f"TFDS {name} has splits {sorted(info.splits.keys())}, not {split!r}")
    num_examples = int(info.splits[split].num_examples)
    read_config = tfds.ReadConfig(
        input_context=input_context, shuffle_seed=request.seed, interleave_cycle_length=4
    )
    elements = builder.as_dataset(
        split=split,
        shuffle_files=True,
        read_config=read_config,
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    where = f"TFDS {name}[{split}]"

    def decode(example):
        label = check_label(example[label_key], num_classes, where)
        return decode_to_rgb_uint8(example[image_key]), label

    return Source(
        elements=elements.map(lambda ex: {image_key: ex[image_key], label_key: ex[label_key]}),
        decode=decode,
        num_examples=num_examples,
        class_names=class_names,
        examples_per_class=None,
        presharded=input_context is not None,
    )


def _prepared_builder(name: str, data_dir: str | None, manual_dir: str | None, download: bool):
    """The TFDS builder of `name`, prepared first when `download` and not yet prepared."""
    tfds = import_tfds()

    builder = tfds.builder(name, data_dir=data_dir)
    if download and not _tfds_prepared(builder):
        _check_manual_files(builder, manual_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    return builder


def _class_names(info, name: str, image_key: str, label_key: str) -> tuple[str, ...]:
    """The names of the `ClassLabel` feature `label_key`, after checking both keys exist."""
    if image_key not in info.features or label_key not in info.features:
        raise ValueError(
            f"TFDS {name} has features {sorted(info.features.keys())}; "
            f"image_key={image_key!r} / label_key={label_key!r} not found"
        )
    label_feature = info.features[label_key]
    if not hasattr(label_feature, "names"):
        raise ValueError(f"TFDS {name}: feature {label_key!r} is not a ClassLabel")
    return tuple(label_feature.names)


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
