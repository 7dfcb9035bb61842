"""FID and Inception Score across truncation thresholds (the BigGAN truncation trade-off).

Brock et al. (2019, Fig. 2 and 17) plot IS against FID as the truncation threshold on |z|
shrinks: IS rises (fidelity) while FID eventually worsens (variety). This tool evaluates a
generator at each threshold with the same extractor, reference statistics, sample count and
seed, prints the table as one JSON line (a list of `tf_biggan.metrics.evaluate` records),
writes it as CSV (`--output_csv`) and plots the curve into a PNG with matplotlib
(`--output_png`; `pip install 'tf_biggan[plot]'`): IS on x, FID on y, one marker per threshold
labelled with it (truncation on x when the extractor has no logits).

    python -m tf_biggan.truncation_curve --saved_model=export/1 --reference_stats=ref.npz \\
        --truncations=2.0,1.0,0.5,0.2,0.04 --num_samples=10000 --output_png=curve.png \\
        --output_csv=curve.csv
"""

import contextlib
import os
import sys

from absl import flags

CSV_COLUMNS = (
    "truncation",
    "fid",
    "inception_score_mean",
    "inception_score_std",
    "kid_mean",
    "kid_std",
    "num_samples",
)


def _format(value):
    return f"{value:.3g}"


def truncation_curve(
    generator, extractor, reference_stats, truncations, num_samples, batch_size, seed
):
    """Evaluates a generator at each truncation threshold.

    Args:
        generator: Object with `generate`, `num_classes`, `dim_z` (see
            `tf_biggan.metrics.open_generator`).
        extractor: A `tf_biggan.metrics.FeatureExtractor`.
        reference_stats: `.npz` path of the reference statistics.
        truncations: Thresholds (float, or None for no truncation).
        num_samples, batch_size, seed: As in `tf_biggan.metrics.evaluate`.

    Returns:
        A list of `tf_biggan.metrics.evaluate` records, one per threshold, in the given order.
    """
    from tf_biggan import metrics

    reference = metrics.StreamingStats.load(reference_stats)
    rows = []
    for truncation in truncations:
        record = metrics.evaluate(
            generator.generate,
            extractor,
            reference,
            num_samples=num_samples,
            batch_size=batch_size,
            num_classes=generator.num_classes,
            dim_z=generator.dim_z,
            truncation=truncation,
            seed=seed,
        )
        record["reference_stats"] = reference_stats
        rows.append(record)
    return rows


def write_csv(rows, path: str) -> None:
    """Writes the table as CSV: a header of `CSV_COLUMNS`, one row per threshold, empty cells
    for None (no truncation; IS or KID not available), floats with 17 significant digits."""
    from tf_biggan import paths

    def cell(value):
        return (
            "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)
        )

    lines = [",".join(CSV_COLUMNS)]
    lines += [",".join(cell(row[name]) for name in CSV_COLUMNS) for row in rows]
    path = paths.expand(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or an error naming the extra."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "The truncation plot needs matplotlib, an optional dependency of tf_biggan: "
            "pip install 'tf_biggan[plot]' (or pip install matplotlib), or pass "
            "--output_png= to write only the JSON and the CSV"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rows(rows, path: str) -> None:
    """Plots a truncation table to a PNG: IS on x and FID on y, one marker per threshold
    labelled with it; truncation on x when the extractor has no logits (no IS)."""
    plt = _pyplot()
    labels = ["none" if r["truncation"] is None else _format(r["truncation"]) for r in rows]
    fids = [r["fid"] for r in rows]
    if all(r["inception_score_mean"] is not None for r in rows):
        xs, x_title = [r["inception_score_mean"] for r in rows], "Inception Score"
    else:
        if any(r["truncation"] is None for r in rows):
            raise ValueError("Without IS, every row needs a numeric truncation to plot.")
        xs, x_title = [r["truncation"] for r in rows], "truncation threshold"
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    axes.plot(xs, fids, "-o", color="tab:blue", markerfacecolor="tab:red")
    for x, y, label in zip(xs, fids, labels, strict=True):
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel(x_title)
    axes.set_ylabel("FID")
    axes.set_title(f"Truncation trade-off ({rows[0]['num_samples']} samples per threshold)")
    axes.grid(True, alpha=0.3)
    path = os.path.expanduser(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main(argv):
    del argv
    from tf_biggan import metrics

    f = flags.FLAGS
    if f.output_png:
        _pyplot()  # Before an evaluation of minutes: matplotlib is there (or the extra named).
    truncations = [None if t.lower() == "none" else float(t) for t in f.truncations]
    with contextlib.redirect_stdout(sys.stderr):
        generator = metrics.open_generator(f.model_dir, f.saved_model)
        extractor = metrics.extractor_from_flags(f)
        rows = truncation_curve(
            generator,
            extractor,
            f.reference_stats,
            truncations,
            num_samples=f.num_samples,
            batch_size=f.batch_size,
            seed=f.seed,
        )
        if f.output_csv:
            write_csv(rows, f.output_csv)
        if f.output_png:
            plot_rows(rows, f.output_png)
    print(metrics.json_line(rows), flush=True)


def define_flags():
    from tf_biggan import metrics

    flags.DEFINE_string("model_dir", None, "Training directory.")
    flags.DEFINE_string("saved_model", None, "Exported SavedModel directory.")
    flags.DEFINE_string("reference_stats", None, "Reference .npz (tools/reference_stats.py).")
    flags.DEFINE_list(
        "truncations",
        ["2.0", "1.5", "1.0", "0.8", "0.6", "0.5", "0.4", "0.3", "0.2", "0.1", "0.04"],
        "Thresholds on |z|; 'none' for the untruncated normal.",
    )
    flags.DEFINE_integer("num_samples", 10_000, "Images per threshold.")
    flags.DEFINE_integer("batch_size", 50, "Images per generator call.")
    flags.DEFINE_integer("seed", 0, "Seed of the latents (the same at every threshold).")
    flags.DEFINE_string(
        "output_png", "truncation_curve.png", "Plot path (needs matplotlib); empty: no plot."
    )
    flags.DEFINE_string("output_csv", "truncation_curve.csv", "Table path; empty: no CSV.")
    metrics.define_extractor_flags(flags)
    flags.mark_flag_as_required("reference_stats")


def cli() -> None:
    """The `tf-biggan-truncation-curve` console script."""
    from tf_biggan import cli as cli_lib

    cli_lib.run("tf_biggan.truncation_curve", define_flags, main)


if __name__ == "__main__":
    cli()
