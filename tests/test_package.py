"""Tests for tf_biggan/__init__.py: the one version number, and the Python API of the README."""

import importlib.metadata
import os

import numpy as np
import pytest
from test_sample import CLASS_NAMES, R, model_dir_and_export

import tf_biggan
from tf_biggan import imaging


def test_the_installed_version_is_the_packages():
    assert importlib.metadata.version("tf_biggan") == tf_biggan.__version__


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return model_dir_and_export(tmp_path_factory.mktemp("api"))


def test_the_readme_api_loads_samples_and_saves(setup, tmp_path):
    """`tf_biggan.load` on a model_dir, an export folder and a version folder; `sample`
    draws the classes asked for at the seed's z, as `generate` does."""
    reference, model_dir, export_dir = setup
    for path in (model_dir, export_dir, os.path.join(export_dir, "2")):
        gen = tf_biggan.load(path)
        assert gen.class_names == CLASS_NAMES
        images = gen.sample(classes=["ring", 0], n=3, truncation=0.5, seed=4)
        assert images.dtype == np.uint8 and images.shape == (3, R, R, 3)
        z = tf_biggan.truncated_noise(3, gen.dim_z, truncation=0.5, seed=4)
        assert np.max(np.abs(z)) <= 0.5
        y = np.eye(len(CLASS_NAMES), dtype=np.float32)[[2, 0, 2]]
        expected = imaging.to_uint8(reference(z, y, training=False)).numpy()
        assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1, path
    np.testing.assert_array_equal(gen.sample("square", seed=1), gen.sample(1, seed=1))
    with pytest.raises(ValueError, match="unknown|outside"):
        gen.sample(classes=["dragon"])
    path = str(tmp_path / "grid.png")
    tf_biggan.save_grid(images[:2], path, rows=1)
    grid = imaging.read_png(path).numpy()
    assert grid.shape == (R + 4, 2 * R + 6, 3)
    np.testing.assert_array_equal(grid[2 : 2 + R, 2 : 2 + R], images[0])
