"""The sampling program: `python -m tf_biggan.sample` (`tf-biggan-sample`) draws a sheet of
`tf_biggan.sheets` or dumps many samples (`tf_biggan.dump`) from a generator that
`tf_biggan.loader` loads::

    python -m tf_biggan.sample --saved_model=runs/quickstart/export \\
      --mode=class_grid --classes=0,1,2 --truncation=0.5 --output=grid.png
    python -m tf_biggan.sample --model_dir=runs/quickstart --mode=dump \\
      --num_samples=50000 --output=samples.npz   # or a folder of PNGs (`tf_biggan.dump`)
    python -m tf_biggan.sample --model_dir=runs/quickstart --precision=bfloat16 ...

The loader's and the sheets' names stay importable from here, as in tf_biggan 0.2
(`tf_biggan.sample.load_generator`, `tf_biggan.sample.class_grid`, ...).
"""

from __future__ import annotations

from tf_biggan import imaging
from tf_biggan.loader import (
    LoadedGenerator,
    load,
    load_generator,
    parse_classes,
    resolve_saved_model,
)
from tf_biggan.sheets import (
    DEFAULT_MAX_CLASSES,
    class_grid,
    class_interpolation_sheet,
    default_classes,
    truncation_grid,
    z_interpolation_sheet,
)

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
