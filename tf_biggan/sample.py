"""Sampling from a trained BigGAN: class grids, truncation grids and interpolation sheets.

Library and CLI::

    python -m tf_biggan.sample --saved_model=runs/quickstart/export \\
      --mode=class_grid --classes=0,1,2 --truncation=0.5 --output=grid.png
    python -m tf_biggan.sample --model_dir=runs/quickstart --mode=dump \\
      --num_samples=50000 --output=samples.npz   # or a folder of PNGs (`tf_biggan.dump`)
    python -m tf_biggan.sample --model_dir=runs/quickstart --precision=bfloat16 ...

A generator comes from a training `model_dir` (the EMA generator of the
latest or a given checkpoint) or from an exported SavedModel (a version
folder, or the export folder, whose largest version is used); both give a
`LoadedGenerator`. Both use the exact σ of every spectrally normalised kernel:
an export stores kernels already divided by it, and the EMA generator restored
from a `model_dir` gets it from `layers.refine_spectral_norms(..., exact=True)`,
because its stored `u` and σ are copies of G's (the EMA copies them), not
estimates for its own averaged weights.

`precision` (`--precision`): a `model_dir` is sampled in float32 by default, or in
bfloat16 through `tf_biggan.precision.inference_copy` (folded SN, bfloat16 kernels); an
export computes in the precision it was exported with (its `assets/config.json` says which),
and asking it for another raises `ValueError` (re-export with `--precision`).

Latents use BigGAN's truncation trick (Brock et al., ICLR 2019, Sec. 3.1)
through `imaging.truncated_z`: z ~ N(0, I) and each entry beyond the
threshold is re-sampled. For a given seed the N(0, I) draw and the uniforms
of the re-sampling are the same at every threshold, so "the same z at
several thresholds" is well defined: entries inside `[-t, t]` are kept,
entries outside are replaced by the inverse-CDF draw of the same uniform, and
a threshold above every |z| entry returns the untruncated z itself.

Every sheet is a uint8 image `[rows * R + (rows + 1) * pad, cols * R + (cols + 1) * pad, 3]`
made by `imaging.image_grid`.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import tensorflow as tf

from tf_biggan import imaging, paths

__all__ = [
    "LoadedGenerator",
    "class_grid",
    "class_interpolation_sheet",
    "load",
    "load_generator",
    "default_classes",
    "parse_classes",
    "resolve_saved_model",
    "truncation_grid",
    "z_interpolation_sheet",
]

MODES = ("class_grid", "truncation_grid", "z_interpolation", "class_interpolation", "dump")


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
        y = _onehot(self, labels)
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


def _from_model_dir(model_dir: str, checkpoint_path: str | None, precision: str) -> LoadedGenerator:
    from tf_biggan import layers
    from tf_biggan import precision as precision_lib
    from tf_biggan import state as state_lib

    network, config, checkpoint_path = state_lib.restore_ema_generator(model_dir, checkpoint_path)
    if precision == "float32":
        # The EMA generator's u and sigma are G's (the EMA copies them). Power iterations
        # from there can need hundreds of steps where the top singular values are close; an
        # SVD per kernel costs seconds once per load and matches the export exactly.
        layers.refine_spectral_norms(network, exact=True)
    else:
        # The same exact sigma, folded into the kernels before they are rounded.
        network = precision_lib.inference_copy(network, precision)

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
        spectral norms set exactly (`layers.refine_spectral_norms`).
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
      FileNotFoundError: no such checkpoint (see `tf_biggan.state.find_checkpoint`).
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
    if step is not None or best:
        from tf_biggan import state as state_lib

        checkpoint_path = state_lib.find_checkpoint(model_dir, step=step, best=best)
    return _from_model_dir(
        paths.expand(model_dir), paths.expand(checkpoint_path), precision or "float32"
    )


DEFAULT_MAX_CLASSES = 10


def default_classes(num_classes: int, limit: int = DEFAULT_MAX_CLASSES) -> list[int]:
    """The classes drawn when none are named: all of them up to `limit`, else `limit`
    classes spread evenly over the index range (a 1000-class model: 0, 111, ..., 999)."""
    if num_classes <= limit:
        return list(range(num_classes))
    return [round(k * (num_classes - 1) / (limit - 1)) for k in range(limit)]


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


def _render(gen, z, y, rows, cols, batch_size, pad, truncation=None) -> np.ndarray:
    """The grid of G(z, y); `truncation` is one value for every image or a list of one
    value per row (the truncation grid), passed to `generate` with the row's images."""
    if isinstance(truncation, list):
        spans = [(row * cols, (row + 1) * cols, t) for row, t in enumerate(truncation)]
    else:
        spans = [(0, len(z), truncation)]
    images = [
        gen.generate(z[i : min(i + batch_size, stop)], y[i : min(i + batch_size, stop)], t)
        for begin, stop, t in spans
        for i in range(begin, stop, batch_size)
    ]
    images = tf.concat(images, axis=0)
    return imaging.image_grid(images, rows, cols, pad=pad).numpy()


def _onehot(gen, labels) -> np.ndarray:
    return np.eye(gen.num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def class_grid(
    gen, classes, samples_per_class: int, truncation=None, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """Rows are classes, columns samples; column j uses the same z in every row.

    Args:
      gen: a `LoadedGenerator`.
      classes: class indices or names (see `parse_classes`).
      samples_per_class: columns.
      truncation: None (no truncation) or a positive threshold.
      seed: int seed of the latents.

    Returns:
      uint8 grid of `len(classes)` x `samples_per_class` images.
    """
    classes = parse_classes(gen, classes)
    z = imaging.truncated_z(samples_per_class, gen.dim_z, truncation, seed)
    z = np.tile(z, [len(classes), 1])
    y = _onehot(gen, np.repeat(classes, samples_per_class))
    return _render(gen, z, y, len(classes), samples_per_class, batch_size, pad, truncation)


def truncation_grid(
    gen, class_id, truncations, samples: int, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """The same z at several thresholds: rows are thresholds, columns samples.

    Row i uses `imaging.truncated_z(samples, dim_z, truncations[i], seed)`:
    the same N(0, I) draw with its out-of-range entries re-sampled from the
    same uniforms (see the module docstring). `None` means no truncation.

    Returns:
      uint8 grid of `len(truncations)` x `samples` images of one class.
    """
    (class_id,) = parse_classes(gen, [class_id])
    truncations = list(truncations)
    z = np.concatenate([imaging.truncated_z(samples, gen.dim_z, t, seed) for t in truncations])
    y = _onehot(gen, [class_id] * len(z))
    return _render(gen, z, y, len(truncations), samples, batch_size, pad, truncations)


def z_interpolation_sheet(
    gen, classes, num_steps: int, truncation=None, seed: int = 0, batch_size=64, pad=2
) -> np.ndarray:
    """One row per class: z moves linearly between two latents, the class is fixed.

    Row i interpolates between latents `2i` and `2i + 1` of
    `truncated_z(2 * len(classes), ...)`, both ends included.

    Returns:
      uint8 grid of `len(classes)` x `num_steps` images.
    """
    classes = parse_classes(gen, classes)
    ends = imaging.truncated_z(2 * len(classes), gen.dim_z, truncation, seed)
    path = imaging.interpolate(ends[0::2], ends[1::2], num_steps)  # [steps, rows, dim_z]
    z = np.transpose(path, [1, 0, 2]).reshape(-1, gen.dim_z)
    y = _onehot(gen, np.repeat(classes, num_steps))
    return _render(gen, z, y, len(classes), num_steps, batch_size, pad, truncation)


def class_interpolation_sheet(
    gen,
    class_a,
    class_b,
    num_steps: int,
    num_rows: int,
    truncation=None,
    seed: int = 0,
    batch_size=64,
    pad=2,
) -> np.ndarray:
    """One z per row; y moves linearly from one-hot `class_a` to one-hot `class_b`.

    The generator's shared class embedding is linear in y, so a mixture of
    one-hots interpolates the class embedding, as in the paper's figures. The
    first and last columns are exactly the pure-class images.

    Returns:
      uint8 grid of `num_rows` x `num_steps` images.
    """
    class_a, class_b = parse_classes(gen, [class_a, class_b])
    z = imaging.truncated_z(num_rows, gen.dim_z, truncation, seed)
    z = np.repeat(z, num_steps, axis=0)
    ys = imaging.interpolate(_onehot(gen, class_a), _onehot(gen, class_b), num_steps)
    y = np.tile(ys, [num_rows, 1])
    return _render(gen, z, y, num_rows, num_steps, batch_size, pad, truncation)


def main(argv) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    if bool(f.model_dir) == bool(f.saved_model):
        raise flags.ValidationError("give exactly one of --model_dir and --saved_model")
    # --checkpoint=N is the checkpoint of step N; anything else is a checkpoint prefix.
    by_step = f.checkpoint is not None and f.checkpoint.isdigit()
    gen = load_generator(
        f.model_dir,
        f.saved_model,
        checkpoint_path=None if by_step else f.checkpoint,
        step=int(f.checkpoint) if by_step else None,
        precision=f.precision,
    )
    if f.mode == "dump":
        _dump(gen, f)
        return
    classes = f.classes or [str(i) for i in default_classes(gen.num_classes)]
    common = dict(seed=f.seed, batch_size=f.batch_size, pad=f.pad)
    if f.mode == "class_grid":
        grid = class_grid(gen, classes, f.samples, f.truncation, **common)
    elif f.mode == "truncation_grid":
        truncations = [float(t) for t in f.truncations]
        grid = truncation_grid(gen, classes[0], truncations, f.samples, **common)
    elif f.mode == "z_interpolation":
        grid = z_interpolation_sheet(gen, classes, f.num_steps, f.truncation, **common)
    else:
        grid = class_interpolation_sheet(
            gen, f.class_a, f.class_b, f.num_steps, f.num_rows, f.truncation, **common
        )
    imaging.write_png(f.output, grid)
    print(f.output, flush=True)


def _dump(gen, f) -> None:
    """`--mode=dump`: `tf_biggan.dump.dump_samples`, its progress bar on stderr."""
    import contextlib
    import sys

    from tf_biggan import dump

    classes = parse_classes(gen, f.classes) if f.classes else None
    with contextlib.redirect_stdout(sys.stderr):
        dump.dump_samples(
            gen, f.output, f.num_samples, classes, f.truncation, seed=f.seed,
            batch_size=f.batch_size,
        )  # fmt: skip
    print(f.output, flush=True)


def _define_flags() -> None:
    from absl import flags

    from tf_biggan import precision as precision_lib

    flags.DEFINE_string("model_dir", None, "Training directory (EMA generator).")
    flags.DEFINE_string(
        "checkpoint", None, "With --model_dir: a step N or a checkpoint prefix (default latest)."
    )
    flags.DEFINE_string("saved_model", None, "Export folder or one of its version folders.")
    flags.DEFINE_enum("mode", "class_grid", list(MODES), "Which sheet to draw.")
    flags.DEFINE_string(
        "output", None, "PNG file to write; --mode=dump: a .npz file or a folder of PNGs."
    )
    flags.DEFINE_list(
        "classes",
        None,
        f"Class indices or names; default all classes up to {DEFAULT_MAX_CLASSES}, else "
        f"{DEFAULT_MAX_CLASSES} spread evenly over the index range (--mode=dump: all classes, "
        "in turn).",
    )
    flags.DEFINE_integer("num_samples", 50_000, "--mode=dump: number of images.")
    flags.DEFINE_float("truncation", None, "Truncation threshold on |z|; unset: none.")
    flags.DEFINE_list("truncations", ["2.0", "1.0", "0.5", "0.25"], "truncation_grid rows.")
    flags.DEFINE_integer("samples", 8, "class_grid / truncation_grid columns.")
    flags.DEFINE_integer("num_steps", 8, "Interpolation columns (both ends included).")
    flags.DEFINE_integer("num_rows", 4, "class_interpolation rows (one z each).")
    flags.DEFINE_string("class_a", "0", "class_interpolation start class (index or name).")
    flags.DEFINE_string("class_b", "1", "class_interpolation end class (index or name).")
    flags.DEFINE_integer("seed", 0, "Seed of the latents.")
    flags.DEFINE_integer(
        "batch_size",
        64,
        "Images per generator call. --mode=dump draws z per batch as tf-biggan-eval does: "
        "with eval's --batch_size (default 50), --seed and --truncation it dumps the images "
        "eval measures.",
    )
    flags.DEFINE_integer("pad", 2, "Pixels between images.")
    flags.DEFINE_enum(
        "precision",
        None,
        list(precision_lib.PRECISIONS),
        "What the generator computes in: bfloat16 is faster on CPUs with AVX512-BF16. "
        "Default float32 with --model_dir, the export's own with --saved_model.",
    )
    flags.mark_flag_as_required("output")


def cli() -> None:
    """The `tf-biggan-sample` console script: `python -m tf_biggan.sample` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, _define_flags, main)


if __name__ == "__main__":
    cli()
