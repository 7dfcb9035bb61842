"""tools/fmnist_classifier.py: the judge of Fashion-MNIST runs, at a small size."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tools_testlib import load_tool

from tf_biggan import data, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = "/usr/share/datasets/fashion-mnist"

needs_data = pytest.mark.skipif(
    not os.path.isdir(DATA_DIR), reason="needs the Debian package dataset-fashion-mnist"
)


@pytest.mark.parametrize("fit", ["resize", "pad"])
def test_real_images_are_fitted_as_the_run_fits_them(fit):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
    seen = load_tool("fmnist_classifier").as_training_sees_them(
        images, resolution=32, fit=fit, batch_size=2
    )
    assert seen.shape == (5, 32, 32, 3) and seen.dtype == np.float32
    for image, want in zip(images, seen, strict=True):
        rgb = tf.image.grayscale_to_rgb(tf.constant(image[..., None]))
        np.testing.assert_array_equal(want, data.preprocess_image(rgb, 32, fit).numpy())
    if fit == "pad":
        np.testing.assert_array_equal(seen[:, 2:30, 2:30, 0], images / np.float32(127.5) - 1)


@needs_data
def test_the_classifier_sees_real_images_as_the_extractor_will_show_them(tmp_path):
    tool = load_tool("fmnist_classifier")
    images, labels = tool.load_split(DATA_DIR, "test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    pipeline = tool.as_training_sees_them(images[:6], resolution=32)
    assert pipeline.shape == (6, 32, 32, 3)
    # Exactly the training pipeline's preprocessing of each image.
    for image, seen in zip(images[:6], pipeline, strict=True):
        rgb = tf.image.grayscale_to_rgb(tf.constant(image[..., None]))
        np.testing.assert_array_equal(seen, data.preprocess_image(rgb, 32).numpy())
    model = tool.build_classifier(width=4)
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    extractor = metrics.make_extractor(
        "keras_model", path, feature_layer=tool.FEATURE_LAYER, logits_layer=tool.LOGITS_LAYER
    )
    # What the classifier is trained on is exactly what the extractor feeds it.
    import keras

    features = keras.Model(model.inputs, model.get_layer(tool.FEATURE_LAYER).output)
    expected = features(tool.as_the_extractor_sees_them(pipeline), training=False).numpy()
    np.testing.assert_allclose(extractor(pipeline)["pool"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@needs_data
def test_cli_trains_a_classifier_that_finds_the_classes_and_writes_test_statistics(tmp_path):
    # One epoch at width 8 on the full training set: a real, if small, classifier.
    output, stats = str(tmp_path / "c.keras"), str(tmp_path / "test.npz")
    completed = subprocess.run(
        [sys.executable, "tools/fmnist_classifier.py", f"--output={output}",
         f"--stats_output={stats}", "--epochs=1", "--width=8"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = json.loads(completed.stdout.strip())
    assert record["output"] == output and record["stats_output"] == stats
    assert record["test_accuracy"] >= 0.8, record
    assert abs(record["test_accuracy_original"] - record["test_accuracy"]) < 0.05, record
    reference = metrics.StreamingStats.load(stats)
    assert reference.count == 10_000 and reference.dim == 128
    assert reference.extractor == "keras_model:fmnist_classifier/features"
