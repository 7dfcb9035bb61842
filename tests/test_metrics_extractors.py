"""Tests for tf_biggan.metrics.extractors: resizing, named layers, InceptionV3, construction."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_biggan.metrics import extractors, statistics


def tiny_classifier(num_classes=5):
    """A 16×16 RGB classifier with a 4-wide `features` layer and a `logits` layer."""
    inputs = keras.Input([16, 16, 3])
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(logits), name="tiny")


def test_keras_model_extractor_resizes_and_reads_named_layers():
    model = tiny_classifier()
    extractor = extractors.make_extractor(
        "keras_model", path=model, feature_layer="features", logits_layer="logits"
    )
    assert extractor.input_size == (16, 16)
    assert extractor.name == "keras_model:tiny/features"
    images = np.random.default_rng(9).uniform(-1, 1, [3, 32, 32, 3]).astype(np.float32)
    out = extractor(images)
    assert out["pool"].shape == (3, 4)
    assert out["logits"].shape == (3, 5)
    resized = tf.image.resize(images, [16, 16], method="bilinear")
    sub = keras.Model(model.inputs, model.get_layer("features").output)
    np.testing.assert_allclose(out["pool"], sub(resized).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        statistics.softmax(out["logits"]), model(resized).numpy(), rtol=1e-4, atol=1e-6
    )


def test_keras_model_extractor_unknown_layer_is_clear():
    with pytest.raises(ValueError, match="no layer 'pool5'"):
        extractors.make_extractor("keras_model", path=tiny_classifier(), feature_layer="pool5")


def test_tfgan_inception_missing_local_path_is_clear(tmp_path):
    missing = str(tmp_path / "inception_module")
    with pytest.raises(FileNotFoundError, match="inception_module"):
        extractors.make_extractor("tfgan_inception", path=missing)


def test_unknown_extractor_kind():
    with pytest.raises(ValueError, match="Unknown extractor kind"):
        extractors.make_extractor("vgg")


@pytest.mark.slow
def test_keras_inception_v3_features_and_input_range():
    # Random weights: the network's shapes and the extractor's input scaling, not ImageNet's
    # features, are under test (the build takes about 2 s).
    extractor = extractors.make_extractor("keras_inception_v3", weights=None)
    assert extractor.input_size == (299, 299)
    # The network expects `inception_v3.preprocess_input` of 8-bit images: u / 127.5 - 1,
    # which maps 0 to -1 and 255 to 1 exactly, the generator's range.
    pixels = np.arange(256, dtype=np.float32)
    preprocessed = keras.applications.inception_v3.preprocess_input(pixels.copy())
    np.testing.assert_array_equal(preprocessed, pixels / 127.5 - 1.0)
    assert preprocessed[0] == -1.0 and preprocessed[-1] == 1.0
    # So images in [-1, 1] reach the network as preprocessed 8-bit images would.
    uint8 = np.random.default_rng(10).integers(0, 256, [2, 32, 32, 3]).astype(np.float32)
    out = extractor(uint8 / 127.5 - 1.0)
    resized = tf.image.resize(
        keras.applications.inception_v3.preprocess_input(uint8.copy()), [299, 299]
    )
    pool, logits = extractor._model(resized, training=False)
    assert out["pool"].shape == (2, 2048)
    assert out["logits"].shape == (2, 1000)
    np.testing.assert_allclose(out["pool"], pool.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    # The pool layer follows a ReLU, so features are non-negative.
    assert out["pool"].min() >= 0.0
