"""Tests for tf_biggan/__init__.py: the one version number, and the Python API of the README."""

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest
from test_sample import CLASS_NAMES, R, model_dir_and_export

import tf_biggan
from tf_biggan import imaging, memory


def test_the_installed_version_is_the_packages():
    assert importlib.metadata.version("tf_biggan") == tf_biggan.__version__


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return model_dir_and_export(tmp_path_factory.mktemp("api"))


@pytest.mark.slow
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


_COUNT_ARENAS = """
import ctypes, sys, tempfile
import tensorflow as tf
if sys.argv[1] == "capped":
    from tf_biggan import memory
    assert memory.limit_malloc_arenas()
kernel = tf.random.normal([3, 3, 16, 16])
batches = tf.data.Dataset.range(64).map(
    lambda i: tf.random.normal([64, 64, 64]) * tf.cast(i, tf.float32), num_parallel_calls=4
).batch(8)
for batch in batches:
    x = tf.random.normal([16, 32, 32, 16])
    (tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME")) + tf.reduce_sum(batch)).numpy()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
stream = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_the_programs_arena_cap_holds_after_tensorflow_is_imported():
    """Threads of TensorFlow's pools and of tf.data, counted by glibc's `malloc_info`: many
    arenas with glibc's default, at most two when `limit_malloc_arenas` runs after `import
    tensorflow` and before the first op, where the programs (`tf_biggan.cli.run`) call it."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}

    def arenas(mode):
        result = subprocess.run(
            [sys.executable, "-c", _COUNT_ARENAS, mode],
            capture_output=True, text=True, env=env, timeout=300, check=True,
        )  # fmt: skip
        return int(result.stdout.split()[-1])

    assert arenas("default") > memory.MALLOC_ARENAS
    assert arenas("capped") <= memory.MALLOC_ARENAS


def test_importing_tf_biggan_changes_nothing_in_the_process():
    """No ctypes, no TensorFlow, no mallopt: `import tf_biggan` leaves its host alone."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    code = (
        "import sys, tf_biggan; "
        "print(sorted(m for m in ('ctypes', 'tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
        check=True,
    )  # fmt: skip
    assert result.stdout.split("\n")[-2] == "[]"


def test_every_program_caps_the_arenas_through_the_cli_runner(monkeypatch):
    """`tf_biggan.cli.run`, which every console script and `python -m` program goes through,
    applies the cap before absl runs `main`."""
    from tf_biggan import cli

    order = []
    monkeypatch.setattr(memory, "limit_malloc_arenas", lambda: order.append("cap"))
    monkeypatch.setattr(cli.app, "run", lambda main: order.append("main"))
    cli.run("tf_biggan.train", lambda: None, lambda argv: None)
    assert order == ["cap", "main"]


def test_the_malloc_arena_cap_leaves_a_users_setting_and_other_libcs_alone():
    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    assert memory.limit_malloc_arenas(3, {}, lambda name: Libc()) is (
        sys.platform.startswith("linux")
    )
    assert calls == ([(-8, 3)] if sys.platform.startswith("linux") else [])
    assert not memory.limit_malloc_arenas(3, {"MALLOC_ARENA_MAX": "4"}, lambda name: Libc())

    def no_glibc(name):
        raise OSError(f"{name}: cannot open shared object file")

    assert not memory.limit_malloc_arenas(3, {}, no_glibc)
    assert len(calls) == (1 if sys.platform.startswith("linux") else 0)
    with pytest.raises(ValueError, match="arenas"):
        memory.limit_malloc_arenas(0, {}, lambda name: Libc())
