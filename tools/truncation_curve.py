"""FID and Inception Score across truncation thresholds (the BigGAN truncation trade-off).

Brock et al. (2019, Fig. 2 and 17) plot IS against FID as the truncation threshold on |z|
shrinks: IS rises (fidelity) while FID eventually worsens (variety). This tool evaluates a
generator at each threshold with the same extractor, reference statistics, sample count and
seed, prints the table as one JSON line (a list of `tf_biggan.metrics.evaluate` records) and
draws the curve into a PNG: IS on x, FID on y, one marker per threshold labelled with it
(truncation on x when the extractor has no logits).

    python tools/truncation_curve.py --saved_model=export/1 --reference_stats=ref.npz \\
        --truncations=2.0,1.0,0.5,0.2,0.04 --num_samples=10000 --output_png=curve.png

The plot is rasterised here with numpy (axes, polyline, square markers and a 3×5 pixel
font), so no plotting library is needed.
"""

import contextlib
import sys

import numpy as np
from absl import app, flags

BACKGROUND = (255, 255, 255)
AXIS_COLOUR = (0, 0, 0)
LINE_COLOUR = (40, 90, 200)
MARKER_COLOUR = (200, 30, 30)

# 3×5 glyphs, one string of 3 bits per row, for the characters the labels use.
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    "-": ("000", "000", "111", "000", "000"),
    "A": ("010", "101", "111", "101", "101"),
    "C": ("111", "100", "100", "100", "111"),
    "D": ("110", "101", "101", "101", "110"),
    "F": ("111", "100", "110", "100", "100"),
    "I": ("111", "010", "010", "010", "111"),
    "N": ("110", "101", "101", "101", "101"),
    "O": ("111", "101", "101", "101", "111"),
    "R": ("110", "101", "110", "101", "101"),
    "S": ("111", "100", "111", "001", "111"),
    "T": ("111", "010", "010", "010", "010"),
    "U": ("101", "101", "101", "101", "111"),
    " ": ("000", "000", "000", "000", "000"),
}


def draw_text(image, text, col, row, colour=AXIS_COLOUR, scale=2):
    """Draws `text` with its top-left corner at (col, row), clipped to the image.

    Args:
        image: uint8 `[H, W, 3]`, modified in place.
        text: Characters from `_FONT` (digits, '.', '-', some capitals, space).
        col, row: Pixel position of the top-left corner.
        colour: RGB triple.
        scale: Pixel size of one glyph dot.
    """
    height, width = image.shape[:2]
    for i, char in enumerate(text.upper()):
        if char not in _FONT:
            raise ValueError(f"draw_text: no glyph for {char!r} in {text!r}.")
        for r, bits in enumerate(_FONT[char]):
            for c, bit in enumerate(bits):
                if bit == "1":
                    top = row + r * scale
                    left = col + (4 * i + c) * scale
                    image[
                        max(top, 0) : min(top + scale, height),
                        max(left, 0) : min(left + scale, width),
                    ] = colour


def _draw_segment(image, p0, p1, colour, thickness=1):
    steps = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    cols = np.rint(np.linspace(p0[0], p1[0], steps)).astype(int)
    rows = np.rint(np.linspace(p0[1], p1[1], steps)).astype(int)
    height, width = image.shape[:2]
    for dr in range(-(thickness // 2), thickness - thickness // 2):
        for dc in range(-(thickness // 2), thickness - thickness // 2):
            r, c = rows + dr, cols + dc
            keep = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            image[r[keep], c[keep]] = colour


def _axis_range(values):
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.1, 0.5)
    return lo - pad, hi + pad


def _format(value):
    return f"{value:.3g}" if "e" not in f"{value:.3g}" else f"{value:.1f}"


def render_plot(xs, ys, labels=None, x_title="IS", y_title="FID", width=640, height=480):
    """Rasterises a polyline with markers on labelled axes.

    Args:
        xs, ys: Coordinates of the points, in drawing order (same length >= 1).
        labels: Optional text per point (e.g. the truncation), drawn beside the marker.
        x_title, y_title: Axis titles.
        width, height: Image size in pixels.

    Returns:
        `(image, points)`: uint8 `[height, width, 3]` and the integer pixel positions
        `[(col, row), ...]` of the points.
    """
    xs = np.asarray(xs, np.float64)
    ys = np.asarray(ys, np.float64)
    if xs.shape != ys.shape or xs.ndim != 1 or xs.size == 0:
        raise ValueError(
            f"render_plot needs equal-length 1-D xs and ys, got {xs.shape}, {ys.shape}."
        )
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("render_plot: coordinates must be finite.")
    left, right, top, bottom = 70, width - 30, 40, height - 50
    if right - left < 10 or bottom - top < 10:
        raise ValueError(f"Image {width}x{height} is too small for a plot.")
    image = np.empty([height, width, 3], np.uint8)
    image[:] = BACKGROUND
    x0, x1 = _axis_range(xs)
    y0, y1 = _axis_range(ys)
    cols = left + (xs - x0) / (x1 - x0) * (right - left)
    rows = bottom - (ys - y0) / (y1 - y0) * (bottom - top)
    points = [(int(round(c)), int(round(r))) for c, r in zip(cols, rows, strict=True)]

    _draw_segment(image, (left, bottom), (right, bottom), AXIS_COLOUR)
    _draw_segment(image, (left, bottom), (left, top), AXIS_COLOUR)
    for value, col in ((x0, left), (x1, right)):
        _draw_segment(image, (col, bottom), (col, bottom + 5), AXIS_COLOUR)
        text = _format(value)
        draw_text(image, text, col - 4 * len(text), bottom + 9)
    for value, row in ((y0, bottom), (y1, top)):
        _draw_segment(image, (left - 5, row), (left, row), AXIS_COLOUR)
        text = _format(value)
        draw_text(image, text, left - 8 - 8 * len(text), row - 5)
    draw_text(image, x_title, (left + right) // 2 - 4 * len(x_title), bottom + 30)
    draw_text(image, y_title, left - 8 * len(y_title) // 2, top - 28)

    for p0, p1 in zip(points[:-1], points[1:], strict=True):
        _draw_segment(image, p0, p1, LINE_COLOUR, thickness=2)
    for i, (col, row) in enumerate(points):
        image[max(row - 3, 0) : row + 4, max(col - 3, 0) : col + 4] = MARKER_COLOUR
        if labels is not None:
            draw_text(image, str(labels[i]), col + 6, row - 14, colour=MARKER_COLOUR)
    return image, points


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


def plot_rows(rows):
    """Renders a truncation table: IS vs FID, or truncation vs FID without IS."""
    labels = ["-" if r["truncation"] is None else _format(r["truncation"]) for r in rows]
    fids = [r["fid"] for r in rows]
    if all(r["inception_score_mean"] is not None for r in rows):
        image, _ = render_plot([r["inception_score_mean"] for r in rows], fids, labels)
    else:
        xs = [np.inf if r["truncation"] is None else r["truncation"] for r in rows]
        if not np.all(np.isfinite(xs)):
            raise ValueError("Without IS, every row needs a numeric truncation to plot.")
        image, _ = render_plot(xs, fids, labels, x_title="TRUNCATION")
    return image


def main(argv):
    del argv
    from tf_biggan import imaging, metrics

    f = flags.FLAGS
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
        if f.output_png:
            imaging.write_png(f.output_png, plot_rows(rows))
    print(metrics.json_line(rows), flush=True)


def _define_flags():
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
    flags.DEFINE_string("output_png", "truncation_curve.png", "Plot path; empty: no plot.")
    metrics.define_extractor_flags(flags)
    flags.mark_flag_as_required("reference_stats")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
