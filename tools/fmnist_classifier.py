"""Trains a small Fashion-MNIST classifier: the feature space and the judge of Fashion-MNIST runs.

Inception features mean little for 28×28 greyscale clothes. This classifier (four 3×3 convs and
two dense layers, 92% test accuracy after 8.5 minutes on 2 CPU cores) gives
`tf_biggan.metrics` a feature layer for FID and logits for the class accuracy of the samples: the
fraction of images generated for class k that it classifies as k.

    python tools/fmnist_classifier.py --output=stats/fmnist_classifier.keras \\
        --stats_output=stats/fmnist_test.npz
    python -m tf_biggan.eval --model_dir=runs/fmnist --reference_stats=stats/fmnist_test.npz \\
        --extractor=keras_model --extractor_path=stats/fmnist_classifier.keras \\
        --feature_layer=features --logits_layer=logits --num_samples=10000

Real and generated images reach the classifier the same way. A real image is brought to the
training resolution as the training pipeline does (`--fit`, the run's `make_dataset.fit`: by
default upscaled, antialiased bilinear rounded to 8 bits; with "pad", centred on black).
Generated and real images alike are then resized back to 28×28 (bilinear) and converted to grey
by the `keras_model` extractor. The classifier trains on images made exactly so, and the
reference statistics (`--stats_output`) are those of the 10,000 test images made so.

Prints one JSON line: the output paths, the test accuracy on those images
(`test_accuracy`) and on the original 28×28 images (`test_accuracy_original`).
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
from absl import app, flags

DATA_DIR = "/usr/share/datasets/fashion-mnist"
FEATURE_LAYER = "features"
LOGITS_LAYER = "logits"
IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def load_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The IDX files of one split: uint8 images `[N, 28, 28]` and int labels `[N]`."""
    from tf_biggan import data, paths

    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    images_file, labels_file = SPLIT_FILES[split]
    source = data.idx_source(
        data.SourceRequest(IMAGE_SIZE, NUM_CLASSES),
        images_path=os.path.join(paths.expand(data_dir), images_file),
        labels_path=os.path.join(paths.expand(data_dir), labels_file),
    )
    images, labels = [], []
    for image, label in source.dataset.batch(10_000):
        images.append(image.numpy()[..., 0])  # The source gives grey as RGB.
        labels.append(label.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def as_training_sees_them(
    images: np.ndarray, resolution: int, fit: str = "resize", batch_size: int = 5000
) -> np.ndarray:
    """Real images as the training pipeline feeds them to D: float32 `[N, R, R, 3]` in [-1, 1].

    Each grey image, made RGB as `idx_source` makes it, goes through
    `tf_biggan.data.preprocess_image` (no flip): the pipeline's own operations.

    Args:
      images: uint8 `[N, 28, 28]`.
      resolution: the training resolution R.
      fit: the run's `make_dataset.fit`: "resize" (antialiased bilinear upscale, rounded to
        8 bits) or "pad" (the 28×28 image in the centre of a black canvas).
    """
    import tensorflow as tf

    from tf_biggan import data

    data.decode.check_fit(fit)

    def preprocess(image):
        return data.preprocess_image(tf.image.grayscale_to_rgb(image[..., None]), resolution, fit)

    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return np.concatenate([batch.numpy() for batch in dataset.batch(batch_size)])


def as_the_extractor_sees_them(images) -> np.ndarray:
    """The `keras_model` extractor's own input transform: bilinear to 28×28, then grey.

    Args:
      images: float32 `[N, H, W, 3]` in [-1, 1].

    Returns:
      float32 `[N, 28, 28, 1]` in [-1, 1].
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    if tuple(images.shape[1:3]) != (IMAGE_SIZE, IMAGE_SIZE):
        images = tf.image.resize(images, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear")
    return tf.image.rgb_to_grayscale(images).numpy()


def originals(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, 28, 28]` → float32 `[N, 28, 28, 1]` in [-1, 1]."""
    return images[..., None].astype(np.float32) / 127.5 - 1.0


def build_classifier(
    width: int = 32,
    seed: int = 0,
    image_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
    num_classes: int = NUM_CLASSES,
    name: str = "fmnist_classifier",
    bn_momentum: float = 0.99,
):
    """The classifier: `[B, 28, 28, 1]` in [-1, 1] → logits `[B, 10]` (by default).

    Two stages of two 3×3 conv-BN-ReLU (`width`, then `2·width` channels) with 2×2 max pooling,
    then the 128-unit ReLU layer named `features` (FID's feature space) and the layer `logits`.
    `image_shape` `[H, W, C]` and `num_classes` size it for other images (tools/shape_judge.py);
    `bn_momentum` is the batch norms' moving-average momentum.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(list(image_shape), name="image")
    h = inputs
    for channels in (width, width, None, 2 * width, 2 * width, None):
        if channels is None:
            h = keras.layers.MaxPooling2D(2)(h)
            continue
        h = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=bn_momentum)(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.3)(h)
    features = keras.layers.Dense(128, activation="relu", name=FEATURE_LAYER)(h)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(keras.layers.Dropout(0.3)(features))
    return keras.Model(inputs, logits, name=name)


def train_classifier(
    x,
    y,
    epochs: int,
    batch_size: int = 128,
    width: int = 32,
    seed: int = 0,
    verbose: int = 1,
    num_classes: int = NUM_CLASSES,
    name: str = "fmnist_classifier",
    bn_momentum: float = 0.99,
):
    """Trains `build_classifier` with Adam (1e-3, cosine decay to 0) on `x [N, H, W, C]`, `y [N]`
    (int in `[0, num_classes)`)."""
    import keras

    model = build_classifier(width, seed, x.shape[1:], num_classes, name, bn_momentum)
    steps = epochs * (len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    return model


def accuracy(model, x, y, batch_size: int = 1000) -> float:
    """Fraction of `x` classified as `y`."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def reference_stats(model_path: str, images: np.ndarray, seed: int = 0):
    """Feature statistics of real images in the saved classifier, through `tf_biggan.metrics`.

    Args:
      images: float32 `[N, R, R, 3]` from `as_training_sees_them`, which the extractor then
        treats as it treats generated images (see the module docstring).
    """
    import tensorflow as tf

    from tf_biggan import metrics

    extractor = metrics.make_extractor(
        "keras_model", model_path, feature_layer=FEATURE_LAYER, logits_layer=LOGITS_LAYER
    )
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(500)
    return metrics.compute_dataset_stats(
        dataset, extractor, num_samples=len(images), seed=seed, verbose=0
    )


def main(argv):
    del argv
    import keras

    from tf_biggan import metrics, paths

    f = flags.FLAGS
    output = paths.expand(f.output)
    with contextlib.redirect_stdout(sys.stderr):
        train_images, train_labels = load_split(f.data_dir, "train")
        test_images, test_labels = load_split(f.data_dir, "test")
        x_train = as_the_extractor_sees_them(
            as_training_sees_them(train_images, f.resolution, f.fit)
        )
        test_pipeline = as_training_sees_them(test_images, f.resolution, f.fit)
        x_test = as_the_extractor_sees_them(test_pipeline)
        model = train_classifier(x_train, train_labels, f.epochs, f.batch_size, f.width, f.seed)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        model.save(output)
        # The saved file, not the object in memory, is what evaluation will load.
        model = keras.models.load_model(output, compile=False)
        record = {
            "output": output,
            "test_accuracy": accuracy(model, x_test, test_labels),
            "test_accuracy_original": accuracy(model, originals(test_images), test_labels),
            "feature_layer": FEATURE_LAYER,
            "logits_layer": LOGITS_LAYER,
        }
        if f.stats_output:
            stats = reference_stats(output, test_pipeline, f.seed)
            stats.save(paths.expand(f.stats_output))
            record["stats_output"] = paths.expand(f.stats_output)
    print(metrics.json_line(record), flush=True)


def _define_flags():
    flags.DEFINE_string("data_dir", DATA_DIR, "Folder of the Fashion-MNIST IDX files.")
    flags.DEFINE_string("output", None, "Where to save the classifier (a .keras file).")
    flags.DEFINE_string("stats_output", None, "Optional .npz of the test set's statistics.")
    flags.DEFINE_integer("resolution", 32, "Training resolution of the generators to judge.")
    flags.DEFINE_enum(
        "fit", "resize", ["resize", "pad"], "The runs' make_dataset.fit: how 28 px reach it."
    )
    flags.DEFINE_integer("epochs", 6, "Training epochs.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_integer("width", 32, "Channels of the first conv stage.")
    flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the shuffling.")
    flags.mark_flag_as_required("output")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
