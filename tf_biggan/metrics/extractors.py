"""Feature extractors: networks that map images to pooled features and class logits.

* `FeatureExtractor`, the interface: images in [-1, 1] in, `{"pool", "logits"}` out. Images
  are resized to the network's input with bilinear interpolation, as TF-GAN does.
* `TFGANInceptionExtractor` (the TF-GAN Inception network from TF-Hub, behind BigGAN's
  published numbers), `KerasInceptionV3Extractor` (`keras.applications`) and
  `KerasModelExtractor` (any user Keras model / SavedModel with a named feature layer).
* `make_extractor`, which builds one by name (`EXTRACTOR_KINDS`), and the absl flag helpers
  `define_extractor_flags` / `extractor_from_flags` shared by the evaluation CLIs.
"""

from __future__ import annotations

import abc
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "FeatureExtractor",
    "TFGANInceptionExtractor",
    "KerasInceptionV3Extractor",
    "KerasModelExtractor",
    "make_extractor",
    "define_extractor_flags",
    "extractor_from_flags",
    "TFGAN_INCEPTION_URL",
    "EXTRACTOR_KINDS",
]

TFGAN_INCEPTION_URL = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
EXTRACTOR_KINDS = ("tfgan_inception", "keras_inception_v3", "keras_model")
_INCEPTION_SIZE = 299


class FeatureExtractor(abc.ABC):
    """Maps images to pooled features (for FID/KID) and class logits (for IS).

    Subclasses implement `_forward` on images already resized to `input_size`.

    Attributes:
        name: Identifies the network; stored with reference statistics.
        input_size: `(height, width)` the network expects, or None to keep the image size.
        kind: The `make_extractor` kind (one of `EXTRACTOR_KINDS`), or None.
        path: Where the network came from (URL, file or directory; `"imagenet"` for Keras'
            weights), or None for a network built in memory.
    """

    name: str = "extractor"
    input_size: tuple[int, int] | None = None
    kind: str | None = None
    path: str | None = None
    # How images of another size are brought to `input_size`: `tf.image.resize` with this
    # method and no antialiasing.
    resize_method: str = "bilinear"

    def describe(self) -> dict:
        """What a result depends on, for evaluation records: name, kind, path, input size and
        resize method (used only for images whose size differs from `input_size`)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "input_size": None if self.input_size is None else list(self.input_size),
            "resize": None if self.input_size is None else f"{self.resize_method}, no antialias",
        }

    def __call__(self, images) -> dict:
        """Runs the extractor.

        Args:
            images: float32 `[B, H, W, 3]` in [-1, 1].

        Returns:
            `{"pool": float32 np.ndarray [B, D], "logits": float32 [B, K] or None}`.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected images [B, H, W, 3], got {images.shape}.")
        images = self._resize(images)
        out = self._forward(images)
        pool = np.asarray(out["pool"], np.float32).reshape([images.shape[0], -1])
        logits = out.get("logits")
        if logits is not None:
            logits = np.asarray(logits, np.float32).reshape([images.shape[0], -1])
        return {"pool": pool, "logits": logits}

    def _resize(self, images: tf.Tensor) -> tf.Tensor:
        if self.input_size is None or tuple(images.shape[1:3]) == tuple(self.input_size):
            return images
        # TF-GAN resizes with plain bilinear interpolation (no antialiasing); matching it keeps
        # FID numbers comparable with published ones.
        return tf.image.resize(images, list(self.input_size), method=self.resize_method)

    @abc.abstractmethod
    def _forward(self, images: tf.Tensor) -> dict:
        """Runs the network on resized images; returns `pool` and `logits` (or None)."""


class TFGANInceptionExtractor(FeatureExtractor):
    """The TF-GAN Inception network from TF-Hub, the one behind BigGAN's published numbers.

    Input: 299×299 images in [-1, 1]. Outputs `pool_3` (2048) and `logits` (1008 classes; the
    Inception Score uses their softmax, as TF-GAN does).

    Args:
        path: TF-Hub URL or a local directory holding a copy of the module.
    """

    name = "tfgan_inception"
    kind = "tfgan_inception"
    input_size = (_INCEPTION_SIZE, _INCEPTION_SIZE)

    def __init__(self, path: str | None = None):
        import tensorflow_hub as hub

        path = path or TFGAN_INCEPTION_URL
        if "://" not in path and not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"TF-GAN Inception module not found at {path}. Pass a local copy of "
                f"{TFGAN_INCEPTION_URL} (a directory with saved_model.pb) or the URL itself."
            )
        self.path = path
        self._module = hub.load(path)

    def _forward(self, images: tf.Tensor) -> dict:
        out = self._module(images)
        return {"pool": out["pool_3"], "logits": out["logits"]}


class KerasInceptionV3Extractor(FeatureExtractor):
    """Keras' InceptionV3 (`keras.applications`) with its top classifier.

    Input: 299×299 images in [-1, 1], which is exactly the range `inception_v3.preprocess_input`
    produces, so generator outputs are fed directly. `pool` is the global average pool (2048),
    `logits` the pre-softmax output of the 1000-way classifier.

    Args:
        weights: `"imagenet"`, a path to a weights file, or None for random weights.
    """

    name = "keras_inception_v3"
    kind = "keras_inception_v3"
    input_size = (_INCEPTION_SIZE, _INCEPTION_SIZE)

    def __init__(self, weights: str | None = "imagenet"):
        if weights not in (None, "imagenet") and not tf.io.gfile.exists(weights):
            raise FileNotFoundError(f"InceptionV3 weights file not found: {weights}")
        self.path = weights
        base = keras.applications.InceptionV3(
            include_top=True, weights=weights, classifier_activation=None
        )
        self._model = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])

    def _forward(self, images: tf.Tensor) -> dict:
        pool, logits = self._model(images, training=False)
        return {"pool": pool, "logits": logits}


class KerasModelExtractor(FeatureExtractor):
    """A user classifier with a named feature layer, for domains where Inception is meaningless.

    Accepts a built `keras.Model`, a Keras model file (`.keras`, `.h5`) or a TF SavedModel
    directory. For Keras models, `feature_layer` and `logits_layer` name layers whose outputs
    are read; for a SavedModel they name outputs of its `serving_default` signature. Images are
    given in [-1, 1] (put any other input scaling inside the model), resized to the model's
    input size, and converted to grey when the model takes one channel.

    Args:
        model: A `keras.Model`, or a path to a model file / SavedModel directory.
        feature_layer: Layer (or signature output) giving the features used for FID/KID.
        logits_layer: Optional layer (or output) giving pre-softmax class logits, for IS.
    """

    kind = "keras_model"

    def __init__(self, model, feature_layer: str, logits_layer: str | None = None):
        if not feature_layer:
            raise ValueError("keras_model extractor needs feature_layer (a layer name).")
        self._signature = None
        if isinstance(model, str):
            self.path = model
            if not tf.io.gfile.exists(model):
                raise FileNotFoundError(f"Extractor model not found: {model}")
            if tf.io.gfile.isdir(model):
                self._init_saved_model(model, feature_layer, logits_layer)
                return
            model = keras.models.load_model(model, compile=False)
        if not isinstance(model, keras.Model):
            raise TypeError(f"Expected a keras.Model or a path, got {type(model).__name__}.")
        layer_names = [layer.name for layer in model.layers]
        outputs = []
        for layer_name in filter(None, (feature_layer, logits_layer)):
            if layer_name not in layer_names:
                raise ValueError(
                    f"Model {model.name!r} has no layer {layer_name!r}; layers: {layer_names}."
                )
            outputs.append(model.get_layer(layer_name).output)
        self._model = keras.Model(model.inputs, outputs)
        self._has_logits = logits_layer is not None
        shape = model.inputs[0].shape
        self._channels = shape[-1]
        self.input_size = None if None in (shape[1], shape[2]) else (shape[1], shape[2])
        self.name = f"keras_model:{model.name}/{feature_layer}"

    def _init_saved_model(self, path: str, feature_layer: str, logits_layer: str | None):
        loaded = tf.saved_model.load(path)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"SavedModel {path} has no serving_default signature.")
        signature = loaded.signatures["serving_default"]
        output_names = sorted(signature.structured_outputs)
        for key in filter(None, (feature_layer, logits_layer)):
            if key not in output_names:
                raise ValueError(
                    f"SavedModel {path} has no output {key!r}; outputs: {output_names}."
                )
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"SavedModel {path} must take one image input; has {sorted(inputs)}.")
        self._input_name, spec = next(iter(inputs.items()))
        self._loaded = loaded  # Keeps the signature's variables alive.
        self._signature = signature
        self._outputs = (feature_layer, logits_layer)
        self._has_logits = logits_layer is not None
        self._channels = spec.shape[-1]
        height, width = spec.shape[1], spec.shape[2]
        self.input_size = None if None in (height, width) else (height, width)
        self.name = f"keras_model:{os.path.basename(os.path.normpath(path))}/{feature_layer}"

    def _forward(self, images: tf.Tensor) -> dict:
        if self._channels == 1:
            images = tf.image.rgb_to_grayscale(images)
        if self._signature is not None:
            out = self._signature(**{self._input_name: images})
            feature_key, logits_key = self._outputs
            return {"pool": out[feature_key], "logits": out[logits_key] if logits_key else None}
        outputs = self._model(images, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return {"pool": outputs[0], "logits": outputs[1] if self._has_logits else None}


def make_extractor(
    kind: str,
    path=None,
    feature_layer: str | None = None,
    logits_layer: str | None = None,
    weights: str | None = "imagenet",
) -> FeatureExtractor:
    """Builds a feature extractor by name.

    Args:
        kind: One of `EXTRACTOR_KINDS`: `"tfgan_inception"`, `"keras_inception_v3"`,
            `"keras_model"`.
        path: For `tfgan_inception`, a TF-Hub URL or local module directory (default: the
            TF-Hub URL); for `keras_inception_v3`, a weights file (overrides `weights`); for
            `keras_model`, a model file / SavedModel directory or a built `keras.Model`.
        feature_layer: Feature layer name (`keras_model` only).
        logits_layer: Optional logits layer name (`keras_model` only).
        weights: `keras_inception_v3` weights when `path` is None: `"imagenet"` or None.

    Returns:
        A `FeatureExtractor`.
    """
    if kind == "tfgan_inception":
        return TFGANInceptionExtractor(path)
    if kind == "keras_inception_v3":
        return KerasInceptionV3Extractor(weights=path if path is not None else weights)
    if kind == "keras_model":
        if path is None:
            raise ValueError("keras_model extractor needs path (a model file or keras.Model).")
        return KerasModelExtractor(path, feature_layer, logits_layer)
    raise ValueError(f"Unknown extractor kind {kind!r}; expected one of {EXTRACTOR_KINDS}.")


def define_extractor_flags(flags_module) -> None:
    """Defines the extractor flags shared by the evaluation CLIs.

    Args:
        flags_module: `absl.flags`; defines `--extractor`, `--extractor_path`,
            `--feature_layer` and `--logits_layer` in it.
    """
    flags_module.DEFINE_enum("extractor", "tfgan_inception", list(EXTRACTOR_KINDS), "Extractor.")
    flags_module.DEFINE_string(
        "extractor_path",
        None,
        "tfgan_inception: TF-Hub URL or local module; keras_inception_v3: weights file; "
        "keras_model: model file or SavedModel directory.",
    )
    flags_module.DEFINE_string("feature_layer", None, "keras_model: feature layer name.")
    flags_module.DEFINE_string("logits_layer", None, "keras_model: logits layer name (for IS).")


def extractor_from_flags(flags_values) -> FeatureExtractor:
    """Builds the extractor named by the flags of `define_extractor_flags`.

    Args:
        flags_values: The parsed flags (`absl.flags.FLAGS`).

    Returns:
        A `FeatureExtractor`.
    """
    return make_extractor(
        flags_values.extractor,
        path=flags_values.extractor_path,
        feature_layer=flags_values.feature_layer,
        logits_layer=flags_values.logits_layer,
    )
