"""Tests for tf_biggan.data.report: class counts and the grid of real examples."""

import dataclasses
import functools
import itertools

import numpy as np
import tensorflow as tf
from data_testlib import folder_source

from tf_biggan import data


def test_summarize_a_source_writes_one_row_per_class(image_folder, tmp_path):
    root, _ = image_folder
    src = folder_source(root)(data.SourceRequest(resolution=8, num_classes=3))
    counts = data.summarize_dataset(src, str(tmp_path), resolution=8, examples_per_class=4)
    assert counts == {"apple": 3, "bird": 3, "cat": 3}
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "real_examples.png"))).numpy()
    # 8-px tiles with 2-px padding: 3 rows x 4 columns.
    assert grid.shape == (3 * 8 + 4 * 2, 4 * 8 + 5 * 2, 3)
    # Row 1, column 0 is the first bird image: solid (10, 200, 10).
    np.testing.assert_array_equal(grid[12:20, 2:10].reshape(-1, 3).min(0), [10, 200, 10])
    np.testing.assert_array_equal(grid[12:20, 2:10].reshape(-1, 3).max(0), [10, 200, 10])
    # Bird has three readable images (PNG, 16-bit PNG, BMP): its fourth tile is black.
    assert grid[12:20, 32:40].max() == 0


def test_summarize_input_data_counts_exactly_or_estimates(tmp_path):
    input_data = data.make_dataset(
        batch_size=4,
        resolution=8,
        num_classes=3,
        source=functools.partial(data.synthetic_source, num_examples=300),
    )
    names = ("red circle", "green square", "blue triangle")
    out = tmp_path / "synthetic"
    exact = data.summarize_dataset(input_data, str(out), resolution=8, max_scan=300)
    assert exact == dict.fromkeys(names, 100)
    assert (out / "real_examples.png").exists()
    # Without known counts the summary estimates them from the examples it reads: whole
    # batches of 4 until at least max_scan=150, so 152, scaled to the 300 of the set.
    unknown = dataclasses.replace(input_data, examples_per_class=None)
    (out / "real_examples.png").unlink()
    estimate = data.summarize_dataset(unknown, str(out), resolution=8, max_scan=150)
    read = np.concatenate([labels for _, labels in itertools.islice(unknown.dataset, 38)])
    seen = np.bincount(read, minlength=3)
    assert estimate == {name: int(round(seen[k] / 152 * 300)) for k, name in enumerate(names)}
    assert (out / "real_examples.png").exists()


def test_summarize_a_source_fits_as_the_pipeline_does(tmp_path):
    # A 4×4 white image at 8 px: padded, it keeps a 2-px black border; resized, it is all white.
    src = data.Source(
        elements=tf.data.Dataset.from_tensors(np.full((4, 4, 3), 255, np.uint8)),
        decode=lambda image: (image, tf.constant(0, tf.int32)),
        num_examples=1,
        class_names=("white",),
    )
    for fit, border in (("pad", 0), ("resize", 255)):
        data.summarize_dataset(src, str(tmp_path), resolution=8, examples_per_class=1, fit=fit)
        grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "real_examples.png"))).numpy()
        tile = grid[2:10, 2:10]
        assert tile[2:6, 2:6].min() == 255 and tile[0].max() == tile[0].min() == border, fit
