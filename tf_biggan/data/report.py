"""What a run is trained on, shown at start: `summarize_dataset`.

It logs the number of images per class (exact when the source knows it, else estimated from
the examples it reads) and writes `real_examples.png`, one row of preprocessed real images
per class, so a wrong class mapping shows at a glance.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from tf_biggan import imaging
from tf_biggan.data.decode import check_fit, preprocess_image
from tf_biggan.data.pipeline import InputData
from tf_biggan.data.source import Source

__all__ = ["summarize_dataset"]


def summarize_dataset(
    input_data_or_source: InputData | Source,
    model_dir: str | None,
    resolution: int,
    examples_per_class: int = 8,
    max_classes: int = 20,
    max_scan: int = 20_000,
    fit: str = "resize",
) -> dict[str, int]:
    """Logs the data set and writes `model_dir/real_examples.png`.

    Logs the resolution, the total and the number of images per class (exact when the
    source knows it, otherwise estimated from up to `max_scan` examples), and writes a grid
    with one row per class (the first `max_classes`) of `examples_per_class` preprocessed
    real images, so a wrong class mapping shows at a glance.

    Args:
      input_data_or_source: an `InputData` (its batches are read from a fresh iterator) or
        a `Source` (read in source order).
      model_dir: where to write the PNG; None logs only.
      resolution: the training resolution (images of a `Source` are fitted to it; those of
        an `InputData` already are).
      examples_per_class: columns of the grid.
      max_classes: most rows of the grid.
      max_scan: most examples read to fill the grid and estimate counts.
      fit: how images of a `Source` reach `resolution`, "resize" or "pad" (as
        `make_dataset(fit=...)`; an `InputData`'s batches come fitted by its own).

    Returns:
      Class name -> number of images (exact or estimated).
    """
    data = input_data_or_source
    class_names = data.class_names
    num_classes = len(class_names)
    shown = min(num_classes, max_classes)
    check_fit(fit)
    picked, seen, scanned = _scan(data, resolution, shown, examples_per_class, max_scan, fit)
    counts, how = _class_counts(data, seen, scanned)
    total = data.num_examples
    logging.info(
        "data: %s images, %d classes, resolution %d; images per class (%s):",
        "unknown number of" if total is None else total,
        num_classes,
        resolution,
        how,
    )
    for name, count in counts.items():
        logging.info("  %6d  %s", count, name)
    missing = [class_names[k] for k in range(shown) if not picked[k]]
    if missing:
        logging.warning("no examples seen for classes %s in %d examples", missing, scanned)
    if model_dir:
        _write_grid(model_dir, picked, examples_per_class, resolution)
    return counts


def _scan(
    data: InputData | Source,
    resolution: int,
    shown: int,
    examples_per_class: int,
    max_scan: int,
    fit: str,
) -> tuple[list[list[np.ndarray]], np.ndarray, int]:
    """Reads examples until the grid is full (and 2,000 are read) or `max_scan` are read.

    Returns:
      `(picked, seen, scanned)`: up to `examples_per_class` images float32 `[R, R, 3]` in
      [-1, 1] of each of the first `shown` classes, the number of images read per class
      (int64 `[num_classes]`), and the number read in all.
    """
    if isinstance(data, Source):
        stream = data.dataset.map(
            lambda image, label: (preprocess_image(image, resolution, fit), label)
        ).batch(256)
    else:
        stream = data.dataset
    picked: list[list[np.ndarray]] = [[] for _ in range(shown)]
    seen = np.zeros(len(data.class_names), np.int64)
    scanned = 0
    for images, labels in stream:
        images, labels = images.numpy(), labels.numpy()
        for image, label in zip(images, labels, strict=True):
            seen[label] += 1
            if label < shown and len(picked[label]) < examples_per_class:
                picked[label].append(image)
        scanned += len(labels)
        full = all(len(p) >= examples_per_class for p in picked)
        if scanned >= max_scan or (full and scanned >= 2_000):
            break
        if isinstance(data, Source) and data.num_examples and scanned >= data.num_examples:
            break
    return picked, seen, scanned


def _class_counts(
    data: InputData | Source, seen: np.ndarray, scanned: int
) -> tuple[dict[str, int], str]:
    """Class name -> images, exact when `data` knows them, else scaled from `seen`; and how."""
    if data.examples_per_class is not None:
        return dict(data.examples_per_class), "exact"
    total = data.num_examples
    estimate_total = total if total is not None else scanned
    counts = {
        name: int(round(seen[k] / max(scanned, 1) * estimate_total))
        for k, name in enumerate(data.class_names)
    }
    return counts, f"estimated from {scanned} examples"


def _write_grid(
    model_dir: str, picked: list[list[np.ndarray]], examples_per_class: int, resolution: int
) -> None:
    """Writes `model_dir/real_examples.png`: one row per class, blank tiles where none."""
    shown = len(picked)
    blank = np.full((resolution, resolution, 3), -1.0, np.float32)
    tiles = [
        picked[k][j] if j < len(picked[k]) else blank
        for k in range(shown)
        for j in range(examples_per_class)
    ]
    grid = imaging.image_grid(np.stack(tiles), shown, examples_per_class)
    path = os.path.join(model_dir, "real_examples.png")
    imaging.write_png(path, grid)
    logging.info("wrote %s (one row per class, first %d classes)", path, shown)
