"""SavedModel export of the EMA generator for TF Serving and TF-Hub style loading.

`python -m tf_biggan.export --model_dir=DIR --export_dir=OUT [--checkpoint=PATH]
[--precision=bfloat16]` writes `OUT/<version>/`, an integer version folder that TF Serving picks up
as is. The SavedModel has two signatures:

| signature | inputs | outputs |
|---|---|---|
| `default` | `z` float32 `[B, dim_z]`, `y` float32 `[B, num_classes]`, `truncation` float32 `[]` | `default` float32 `[B, R, R, 3]` in [-1, 1] |
| `serving_default` | `labels` int64 `[B]`, `truncation` float32 `[]`, `seed` int64 `[]` | `images` uint8 `[B, R, R, 3]` |

`default` follows the BigGAN TF-Hub modules published by DeepMind: the
caller samples z, already scaled or truncated, and passes the threshold too.
Those modules never scale z themselves (their notebooks pass
`z = truncation * truncnorm(-2, 2)` *and* `truncation`); they use `truncation`
only to pick batch-norm statistics for that threshold. Here likewise: `default`
returns `G(z, y)` with, for a generator that has a table of truncation-indexed
statistics (`Generator.num_standing_stats`, filled by `tf_biggan.standing_stats`
or a converter), the table's entry for `truncation` when `0 < truncation <= 1`
(interpolated linearly between entries) and the moving statistics otherwise. A
generator without a table ignores `truncation`. The caller controls z entirely.

`serving_default` samples z inside the graph with
`imaging.truncated_normal_stateless` seeded by `[seed, 0]`: entries of
N(0, 1) beyond `truncation` are re-sampled, so `|z| <= truncation`. A
`truncation` that is not a positive finite number (0, a negative value or
inf) means no truncation. For an int seed `s` the latents equal
`imaging.truncated_z(B, dim_z, truncation, seed=s)`, so served images can be
reproduced in Python. The same `truncation` then picks the batch-norm statistics
exactly as in `default`, so `serving_default` equals `default` called with these
latents and the same `truncation`. Labels outside `[0, num_classes)` raise
`InvalidArgumentError`.

The loaded object is also callable as the TF2 BigGAN hub modules are:
`module(y=y, z=z, truncation=0.5)` returns the `default` images. Called
this way z and y may have any width, and a wrong width raises
`InvalidArgumentError` from inside the graph (the signatures declare the
widths, so serving front ends reject them before the graph runs).

Spectral normalisation is folded: each SN kernel is stored already divided
by its exact top singular value (each SN layer's `fold()`, an SVD of the
`[fan_in, out]` matrix), so the served graph has no power iteration and
writes no variable. The exact σ, not the stored power-iteration estimate, is
used because the EMA generator's `u` is copied from G during training: it is
G's estimate, not one for the averaged weights. The export therefore equals the
in-process generator at inference once its σ has converged
(`layers.refine_spectral_norms`). Batch norm uses the moving statistics.

The export computes in float32 (the default, also for a generator trained under mixed
precision) or, with `precision="bfloat16"` (`--precision=bfloat16`), in bfloat16 with the
kernels stored as bfloat16 (`tf_biggan.precision.inference_copy` says what stays
float32). Both have the same signatures, input and output dtypes and shapes; the bfloat16
one is faster on CPUs with AVX512-BF16 / AMX-BF16 and on accelerators, and its images
differ from float32's by rounding (docs/serving.md, "bfloat16", states the measured difference).
`assets/config.json` holds `resolution`, `dim_z`, `num_classes`, `class_names`, the
generator config, the training `step` and the `precision`; `assets/class_names.txt` holds
one class name a line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid

import tensorflow as tf

from tf_biggan import imaging, model_files, paths
from tf_biggan import precision as precision_lib

__all__ = ["ExportModule", "export_from_state", "export_generator", "next_version"]

CONFIG_ASSET = "config.json"
CLASS_NAMES_ASSET = "class_names.txt"


class ExportModule(tf.Module):
    """The served object: a generator copy with folded SN and the two signatures.

    Args:
      generator: a built `networks.Generator` whose SN layers are folded, in float32 or
        bfloat16 (`tf_biggan.precision.inference_copy`).

    Only the TensorFlow variables the traced functions read are tracked (and
    so saved), not the Keras model itself: the SavedModel needs no Keras to
    load.
    """

    def __init__(self, generator):
        super().__init__(name="biggan")
        self._holder = _Holder(generator)
        dim_z, num_classes = generator.dim_z, generator.num_classes
        # Readable on the loaded object without the assets (`loaded.dim_z.numpy()`).
        self.dim_z = tf.Variable(dim_z, dtype=tf.int64, trainable=False, name="dim_z")
        self.num_classes = tf.Variable(
            num_classes, dtype=tf.int64, trainable=False, name="num_classes"
        )
        self.resolution = tf.Variable(
            generator.resolution, dtype=tf.int64, trainable=False, name="resolution"
        )

        self.default = tf.function(
            self._default,
            input_signature=[
                tf.TensorSpec([None, dim_z], tf.float32, name="z"),
                tf.TensorSpec([None, num_classes], tf.float32, name="y"),
                tf.TensorSpec([], tf.float32, name="truncation"),
            ],
        )
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.int64, name="labels"),
                tf.TensorSpec([], tf.float32, name="truncation"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ],
        )
        captured = {}
        for function in (self.default, self.serve, self.__call__):
            for variable in function.get_concrete_function().variables:
                captured.setdefault(id(variable), variable)
        self.generator_variables = list(captured.values())

    @property
    def generator(self):
        return self._holder.generator

    def _generate(self, z, y, truncation):
        dim_z = self.generator.dim_z
        num_classes = self.generator.num_classes
        checks = [
            tf.debugging.assert_equal(
                tf.shape(z)[-1], dim_z, message=f"z must have width dim_z={dim_z}"
            ),
            tf.debugging.assert_equal(
                tf.shape(y)[-1],
                num_classes,
                message=f"y must have width num_classes={num_classes}",
            ),
            tf.debugging.assert_equal(
                tf.shape(z)[0], tf.shape(y)[0], message="z and y must have the same batch size"
            ),
        ]
        with tf.control_dependencies(checks):
            z = tf.reshape(z, [-1, dim_z])
            y = tf.reshape(y, [-1, num_classes])
        return self.generator(z, y, training=False, truncation=truncation)

    def _default(self, z, y, truncation):
        return {"default": self._generate(z, y, truncation)}

    def _serve(self, labels, truncation, seed):
        num_classes = self.generator.num_classes
        checks = [
            tf.debugging.assert_greater_equal(
                labels, tf.constant(0, tf.int64), message="labels must be >= 0"
            ),
            tf.debugging.assert_less(
                labels,
                tf.constant(num_classes, tf.int64),
                message=f"labels must be < num_classes={num_classes}",
            ),
        ]
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
        batch = tf.shape(labels)[0]
        z = imaging.truncated_normal_stateless(
            tf.stack([batch, self.generator.dim_z]),
            truncation,
            tf.stack([seed, tf.constant(0, tf.int64)]),
        )
        y = tf.one_hot(labels, num_classes, dtype=tf.float32)
        return {"images": imaging.to_uint8(self._generate(z, y, truncation))}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="y"),
            tf.TensorSpec([None, None], tf.float32, name="z"),
            tf.TensorSpec([], tf.float32, name="truncation"),
        ]
    )
    def __call__(self, y, z, truncation):
        """TF2-hub style call: images float32 `[B, R, R, 3]` in [-1, 1], as `default`."""
        return self._generate(z, y, truncation)


class _Holder:
    """A plain (untracked) reference, so tf.Module does not track the Keras model."""

    def __init__(self, generator):
        self.generator = generator


def next_version(export_dir: str) -> int:
    """One more than the largest integer folder name in `export_dir` (1 if none)."""
    if not tf.io.gfile.isdir(export_dir):
        return 1
    versions = [
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(export_dir)
        if re.fullmatch(r"\d+/?", name) and tf.io.gfile.isdir(os.path.join(export_dir, name))
    ]
    return max(versions, default=0) + 1


def export_generator(
    generator, export_dir: str, class_names=None, version=None, step=None, precision="float32"
) -> str:
    """Writes `generator` as the SavedModel `export_dir/<version>/`.

    `~` and `$VARIABLES` in `export_dir` are expanded. The model is saved to a hidden
    temporary folder in `export_dir` and then
    renamed, so TF Serving, which polls `export_dir`, never loads a
    half-written version.

    Args:
      generator: a built `networks.Generator` (normally the EMA generator).
      export_dir: the model base path (created if missing).
      class_names: optional list of `num_classes` strings.
      version: positive int; default `next_version(export_dir)`.
      step: the training step of the weights, recorded in the config if known.
      precision: "float32" or "bfloat16", what the served graph computes in (its inputs
        and outputs are the same either way).

    Returns:
      The path of the version folder.

    Raises:
      ValueError: a wrong number of class names, a bad version or an unknown precision.
      FileExistsError: the version folder exists already.
    """
    export_dir = paths.expand(export_dir)
    precision_lib.check_precision(precision)
    class_names = [str(name) for name in class_names] if class_names else []
    if class_names and len(class_names) != generator.num_classes:
        raise ValueError(
            f"got {len(class_names)} class names for a generator of {generator.num_classes} classes"
        )
    if version is None:
        version = next_version(export_dir)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a positive int, got {version!r}")
    final = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"export version folder {final} exists already")
    tf.io.gfile.makedirs(export_dir)

    precision_lib.warn_if_slow(precision)
    module = ExportModule(precision_lib.inference_copy(generator, precision))
    temp = os.path.join(export_dir, f".tmp-{version}-{uuid.uuid4().hex}")
    try:
        with _logging_levels_kept():
            tf.saved_model.save(
                module,
                temp,
                signatures={
                    "default": module.default.get_concrete_function(),
                    "serving_default": module.serve.get_concrete_function(),
                },
            )
        config = {
            "resolution": generator.resolution,
            "dim_z": generator.dim_z,
            "num_classes": generator.num_classes,
            "class_names": class_names,
            "generator": generator.get_config(),
            "precision": precision,
        }
        if step is not None:
            config["step"] = int(step)
        assets = os.path.join(temp, "assets")
        tf.io.gfile.makedirs(assets)
        with tf.io.gfile.GFile(os.path.join(assets, CONFIG_ASSET), "w") as f:
            json.dump(config, f, indent=2)
        with tf.io.gfile.GFile(os.path.join(assets, CLASS_NAMES_ASSET), "w") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        tf.io.gfile.rename(temp, final)
    finally:
        if tf.io.gfile.exists(temp):
            tf.io.gfile.rmtree(temp)
    return final


@contextlib.contextmanager
def _logging_levels_kept():
    """Restores the `absl` and `tensorflow` loggers' levels on exit.

    `tf.saved_model.save` silences logging while it looks for functions and then sets the
    level it read back explicitly: an unset (inherited) level becomes WARNING, which hid the
    INFO lines of whatever ran next in the process (a resumed training run, say).
    """
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [logger.level for logger in loggers]
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_from_state(state, export_dir: str, class_names=None) -> str:
    """Exports the EMA generator of a `state.TrainState`; returns the version folder."""
    return export_generator(
        state.ema_generator, export_dir, class_names=class_names, step=int(state.step.numpy())
    )


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    generator, config, checkpoint = model_files.restore_ema_generator(f.model_dir, f.checkpoint)
    path = export_generator(
        generator,
        f.export_dir,
        class_names=config.get("class_names"),
        version=f.version,
        step=config.get("step"),
        precision=f.precision,
    )
    print(path, flush=True)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model_dir", None, "Training directory (EMA generator).")
    flags.DEFINE_string("export_dir", None, "Model base path; the version folder goes inside.")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix; default the latest in model_dir.")
    flags.DEFINE_integer("version", None, "Version number; default one more than the largest.")
    flags.DEFINE_enum(
        "precision",
        "float32",
        list(precision_lib.PRECISIONS),
        "What the served graph computes in; bfloat16 is faster on CPUs with AVX512-BF16 and "
        "on accelerators. The signatures are the same.",
    )
    flags.mark_flags_as_required(["model_dir", "export_dir"])


def cli() -> None:
    """The `tf-biggan-export` console script: `python -m tf_biggan.export` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, _define_flags, main)


if __name__ == "__main__":
    cli()
