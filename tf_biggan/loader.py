"""The public loader: a generator ready to sample, from a training `model_dir` or an export.

`tf_biggan.load(path)` is `load` here. A `model_dir` gives its EMA generator
(`model_files.restore_ema_generator`) with the exact sigma of every spectrally normalised
kernel (`precision.inference_generator`): its stored `u` and sigma are copies of G's (the
EMA copies them), not estimates for its own averaged weights. An export stores kernels
already divided by the exact sigma. Both give a `LoadedGenerator`.

`precision`: a `model_dir` is sampled in float32 by default, or in bfloat16 through
`tf_biggan.precision.inference_copy` (folded SN, bfloat16 kernels); an export computes in the
precision it was exported with (its `assets/config.json` says which), and asking it for
another raises `ValueError` (re-export with `--precision`).

Latents use BigGAN's truncation trick (Brock et al., ICLR 2019, Sec. 3.1) through
`imaging.truncated_z`: z ~ N(0, I) and each entry beyond the threshold is re-sampled. For a
given seed the N(0, I) draw and the uniforms of the re-sampling are the same at every
threshold, so "the same z at several thresholds" is well defined: entries inside `[-t, t]`
are kept, entries outside are replaced by the inverse-CDF draw of the same uniform, and a
threshold above every |z| entry returns the untruncated z itself.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import tensorflow as tf

from tf_biggan import imaging, paths


class LoadedGenerator:
    """A generator ready to sample, whatever it was loaded from.

    Attributes:
      dim_z: latent size.
      num_classes: number of classes K.
      resolution: image size R.
      class_names: list of K names, or [] when unknown.
      source: the folder it was loaded from.
      checkpoint: the checkpoint prefix restored (from a `model_dir`), else None.
      step: the training step of the weights, or None when unknown.
      precision: "float32" or "bfloat16", what the generator computes in.
    """

    def __init__(
        self,
        generate_fn,
        dim_z,
        num_classes,
        resolution,
        class_names,
        source,
        checkpoint=None,
        step=None,
        precision="float32",
    ):
        self._generate_fn = generate_fn
        self.dim_z = int(dim_z)
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.class_names = list(class_names or [])
        self.source = source
        self.checkpoint = checkpoint
        self.step = None if step is None else int(step)
        self.precision = precision

    def describe(self) -> dict:
        """Which weights these are and how they compute, for records:
        `{"source", "checkpoint", "step", "precision"}`."""
        return {
            "source": self.source,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "precision": self.precision,
        }

    def generate(self, z, y_onehot, truncation=None) -> tf.Tensor:
        """Images for latents and class weights.

        Args:
          z: float `[B, dim_z]` (numpy or tensor), already truncated if wanted.
          y_onehot: float `[B, num_classes]`, one-hot or any class weights.
          truncation: the threshold z was truncated at, or None. It does not change z;
            for a generator with truncation-indexed BN statistics, `0 < t <= 1` picks
            the table's entry for t (the export's `default` signature does the same).

        Returns:
          float32 tensor `[B, R, R, 3]` in [-1, 1].
        """
        z = tf.convert_to_tensor(z, tf.float32)
        y = tf.convert_to_tensor(y_onehot, tf.float32)
        if z.shape.rank != 2 or z.shape[-1] != self.dim_z:
            raise ValueError(f"z must be [B, {self.dim_z}], got {z.shape}")
        if y.shape.rank != 2 or y.shape[-1] != self.num_classes:
            raise ValueError(f"y_onehot must be [B, {self.num_classes}], got {y.shape}")
        if z.shape[0] != y.shape[0]:
            raise ValueError(f"z and y_onehot batch sizes differ: {z.shape[0]} vs {y.shape[0]}")
        t = 0.0 if truncation is None else float(truncation)
        return self._generate_fn(z, y, tf.constant(t, tf.float32))

    def sample(
        self, classes, n: int | None = None, truncation=None, seed: int = 0, batch_size: int = 64
    ) -> np.ndarray:
        """uint8 images of the given classes: image i is of class `classes[i % len(classes)]`.

        Args:
          classes: class indices or names (see `parse_classes`), or one of them.
          n: number of images (default: one per class given).
          truncation: None for z ~ N(0, I), or t > 0 to resample entries with |z| > t;
            with truncation-indexed BN statistics, `t <= 1` also picks their entry for t.
          seed: seed of z (the same seed gives the same images).
          batch_size: images per generator call.

        Returns:
          uint8 numpy `[n, R, R, 3]`.
        """
        if isinstance(classes, (str, int, np.integer)):
            classes = [classes]
        labels = parse_classes(self, list(classes))
        n = len(labels) if n is None else int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        labels = np.resize(np.asarray(labels), n)
        z = imaging.truncated_z(n, self.dim_z, truncation, seed=seed)
        y = onehot(self, labels)
        return np.concatenate(
            [
                imaging.to_uint8(
                    self.generate(z[i : i + batch_size], y[i : i + batch_size], truncation)
                ).numpy()
                for i in range(0, n, batch_size)
            ]
        )


def resolve_saved_model(path: str) -> str:
    """The SavedModel folder for `path`: itself, or its largest integer version subfolder."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"no SavedModel at {path}")
    versions = [
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(path)
        if re.fullmatch(r"\d+/?", name)
        and tf.io.gfile.exists(os.path.join(path, name.rstrip("/"), "saved_model.pb"))
    ]
    if not versions:
        raise FileNotFoundError(
            f"{path} holds neither saved_model.pb nor integer version folders with one"
        )
    return os.path.join(path, str(max(versions)))


def _from_saved_model(path: str, precision: str | None) -> LoadedGenerator:
    path = resolve_saved_model(path)
    config_path = os.path.join(path, "assets", "config.json")
    if not tf.io.gfile.exists(config_path):
        raise FileNotFoundError(f"SavedModel config not found: {config_path}")
    with tf.io.gfile.GFile(config_path) as f:
        config = json.load(f)
    # Exports written before the option existed computed in float32.
    exported = config.get("precision", "float32")
    if precision is not None and precision != exported:
        raise ValueError(
            f"the export {path} computes in {exported}, not {precision}: export the model_dir "
            f"again with --precision={precision}, or leave the precision unset"
        )
    loaded = tf.saved_model.load(path)
    if "default" not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no 'default' signature")
    default = loaded.signatures["default"]

    def generate(z, y, truncation):
        # `truncation` does not change z; it picks truncation-indexed BN statistics if any.
        return default(z=z, y=y, truncation=truncation)["default"]

    generator = LoadedGenerator(
        generate,
        config["dim_z"],
        config["num_classes"],
        config["resolution"],
        config.get("class_names"),
        path,
        step=config.get("step"),
        precision=exported,
    )
    generator.saved_model = loaded  # Keeps the variables alive.
    return generator


def _from_model_dir(model_dir: str, checkpoint_path, step, best, precision: str) -> LoadedGenerator:
    from tf_biggan import model_files
    from tf_biggan import precision as precision_lib

    model_dir = paths.expand(model_dir)
    network, config, checkpoint_path = model_files.restore_ema_generator(
        model_dir, checkpoint_path, step=step, best=best
    )
    network = precision_lib.inference_generator(network, precision)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, network.dim_z], tf.float32),
            tf.TensorSpec([None, network.num_classes], tf.float32),
            tf.TensorSpec([], tf.float32),
        ]
    )
    def generate(z, y, truncation):
        return network(z, y, training=False, truncation=truncation)

    generator = LoadedGenerator(
        generate,
        network.dim_z,
        network.num_classes,
        network.resolution,
        config.get("class_names"),
        model_dir,
        checkpoint=checkpoint_path,
        step=config["step"],
        precision=precision,
    )
    generator.network = network
    return generator


def load(path: str, precision: str | None = None) -> LoadedGenerator:
    """Loads a generator from a training `model_dir` (its EMA generator, latest checkpoint),
    an export folder or one of its version folders, computing in `precision` (see
    `load_generator`)."""
    path = paths.expand(path)
    if tf.io.gfile.exists(os.path.join(path, "model_config.json")) and tf.train.latest_checkpoint(
        path
    ):
        return load_generator(model_dir=path, precision=precision)
    return load_generator(saved_model=path, precision=precision)


def load_generator(
    model_dir: str | None = None,
    saved_model: str | None = None,
    checkpoint_path=None,
    step: int | None = None,
    best: bool = False,
    precision: str | None = None,
) -> LoadedGenerator:
    """Loads a generator from a training directory or an exported SavedModel.

    Args:
      model_dir: training directory; its EMA generator is restored and its
        spectral norms set exactly (`precision.inference_generator`).
      saved_model: a SavedModel version folder, or an export folder (the
        largest integer version inside is used). It needs the `default`
        signature and `assets/config.json` of `tf_biggan.export`.
      checkpoint_path: with `model_dir`, a checkpoint prefix (default latest).
      step: with `model_dir`, the checkpoint of this training step.
      best: with `model_dir`, the best checkpoint the periodic evaluation kept.
      precision: "float32" or "bfloat16" (`tf_biggan.precision`). None: float32 for a
        `model_dir`, the export's own precision for a `saved_model`.

    Returns:
      A `LoadedGenerator`.

    Raises:
      ValueError: not exactly one of `model_dir` and `saved_model`, more than one of
        `checkpoint_path`, `step` and `best`, or one of them with `saved_model`; an
        unknown precision, or one an export was not made in.
      FileNotFoundError: no such checkpoint (see `tf_biggan.model_files.find_checkpoint`).
    """
    if bool(model_dir) == bool(saved_model):
        raise ValueError("give exactly one of model_dir and saved_model")
    chosen = [name for name, v in (("checkpoint_path", checkpoint_path), ("step", step),
                                   ("best", best or None)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise ValueError(f"give at most one of {' and '.join(chosen)}")
    if precision is not None:
        # Imported here, as the networks are: reading an export needs neither.
        from tf_biggan import precision as precision_lib

        precision_lib.check_precision(precision)
        precision_lib.warn_if_slow(precision)
    if saved_model:
        if chosen:
            raise ValueError(f"{chosen[0]} selects a checkpoint of a model_dir, not of an export")
        return _from_saved_model(paths.expand(saved_model), precision)
    return _from_model_dir(model_dir, checkpoint_path, step, best, precision or "float32")


def parse_classes(gen: LoadedGenerator, classes) -> list[int]:
    """Class indices from ints, digit strings or class names (a list or a comma-separated string).

    Raises:
      ValueError: an unknown name or an index outside `[0, num_classes)`.
    """
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    indices = []
    for item in classes:
        if isinstance(item, (int, np.integer)):
            index = int(item)
        elif item in gen.class_names:
            index = gen.class_names.index(item)
        elif re.fullmatch(r"-?\d+", item):
            index = int(item)
        else:
            known = ", ".join(gen.class_names) or "none recorded"
            raise ValueError(f"unknown class {item!r}; class names: {known}")
        if not 0 <= index < gen.num_classes:
            raise ValueError(f"class {item!r} is outside [0, {gen.num_classes})")
        indices.append(index)
    if not indices:
        raise ValueError("no classes given")
    return indices


def onehot(gen, labels) -> np.ndarray:
    """float32 one-hot rows `[len(labels), num_classes]` of `gen`'s classes."""
    return np.eye(gen.num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
