"""Command-line evaluation of a generator: FID, Inception Score, KID (and class accuracy).

    python -m tf_biggan.eval --model_dir=runs/cifar10 \\
        --reference_stats=stats/cifar10_train.npz --num_samples=50000

Loads the generator (`--model_dir`, the EMA generator of the latest checkpoint, of the
checkpoint of step N with `--checkpoint=N`, or of the best checkpoint by FID kept by training's
periodic evaluation with `--best`; or `--saved_model`), generates `--num_samples` images, and
prints one line of JSON on stdout: the record of `tf_biggan.metrics.evaluate`. Progress and library output go to stderr. The reference
statistics come from `tools/reference_stats.py` with the same extractor flags (or are the
`mu`/`sigma` file of TTUR or pytorch-fid). Without `--truncation` z is not truncated, as in
training's periodic evaluation; `--truncation=t` resamples the entries of z with |z| > t
and, for a generator with truncation-indexed batch-norm statistics, uses their entry for t
(`0 < t <= 1`), as sampling and the export do.
`--precision_recall` (with `--pr_k`) adds improved precision and recall, which need reference
statistics with a feature sample (those of `tools/reference_stats.py`). The record's
`generator` object names the weights measured (source, checkpoint, step) and the precision
they computed in: `--precision=bfloat16` evaluates a `--model_dir` in bfloat16
(`tf_biggan.precision`); an export is evaluated in the precision it was exported with.

The library lives in `tf_biggan.metrics`; this module holds only the program.
"""

import contextlib
import sys

from absl import flags

from tf_biggan import metrics, precision

# The flags that set the `metrics.evaluate` argument of the same name.
_EVALUATE_FLAGS = (
    "num_samples",
    "batch_size",
    "truncation",
    "seed",
    "kid_subsets",
    "kid_subset_size",
)


def _selected_checkpoint(f) -> dict:
    """The `open_generator` arguments of `--checkpoint` / `--best` (with `--model_dir` only)."""
    if f.checkpoint is None and not f.best:
        return {}
    if not f.model_dir:
        raise flags.ValidationError("--checkpoint and --best select a checkpoint of --model_dir.")
    if f.checkpoint is not None and f.best:
        raise flags.ValidationError("Give --checkpoint=N or --best, not both.")
    return {"best": True} if f.best else {"step": f.checkpoint}


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    if bool(f.model_dir) == bool(f.saved_model):
        raise flags.ValidationError("Give exactly one of --model_dir and --saved_model.")
    selected = _selected_checkpoint(f)
    # stdout carries only the JSON result; progress bars and library prints go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        generator = metrics.open_generator(
            f.model_dir, f.saved_model, precision=f.precision, **selected
        )
        record = metrics.evaluate(
            lambda z, y: generator.generate(z, y, f.truncation),
            metrics.extractor_from_flags(f),
            f.reference_stats,
            num_classes=generator.num_classes,
            dim_z=generator.dim_z,
            precision_recall_k=f.pr_k if f.precision_recall else None,
            **{name: f[name].value for name in _EVALUATE_FLAGS},
        )
    # Which weights were measured: the model_dir or export, the checkpoint and its step.
    record["generator"] = generator.describe()
    print(metrics.json_line(record), flush=True)


def _define_flags() -> None:
    flags.DEFINE_string("model_dir", None, "Training directory (latest checkpoint, EMA G).")
    flags.DEFINE_string("saved_model", None, "Exported SavedModel directory.")
    flags.DEFINE_integer(
        "checkpoint", None, "With --model_dir: the checkpoint of this step (default latest)."
    )
    flags.DEFINE_bool(
        "best", False, "With --model_dir: the best checkpoint by FID (model_dir/best/)."
    )
    flags.DEFINE_string("reference_stats", None, "Reference .npz (tools/reference_stats.py).")
    flags.DEFINE_integer("num_samples", 50_000, "Number of generated images.")
    flags.DEFINE_integer("batch_size", 50, "Images per generator call.")
    flags.DEFINE_float("truncation", None, "Resample z entries with |z| above it; unset: none.")
    flags.DEFINE_integer("seed", 0, "Seed of latents and KID subsets.")
    flags.DEFINE_integer("kid_subsets", 100, "KID subsets.")
    flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size.")
    flags.DEFINE_bool(
        "precision_recall", False, "Also improved precision/recall (Kynkäänniemi et al. 2019)."
    )
    flags.DEFINE_integer("pr_k", 3, "Precision/recall neighbourhood size k.")
    flags.DEFINE_enum(
        "precision",
        None,
        list(precision.PRECISIONS),
        "What the generator computes in (bfloat16 is faster on CPUs with AVX512-BF16). "
        "Default float32 with --model_dir, the export's own with --saved_model.",
    )
    metrics.define_extractor_flags(flags)
    # Listed by --helpshort with this program's own flags.
    flags.adopt_module_key_flags(metrics.extractors)
    flags.mark_flag_as_required("reference_stats")


def cli() -> None:
    """The `tf-biggan-eval` console script: `python -m tf_biggan.eval` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, _define_flags, main)


if __name__ == "__main__":
    cli()
