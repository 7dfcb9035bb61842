"""Sampling sheets from a training directory and from an export."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tiny_models

import tf_biggan
from tf_biggan import export, imaging, layers, loader, metrics, model_files, networks, sheets

NUM_CLASSES = 3
DIM_Z = 32
R = 32
PAD = 2
CLASS_NAMES = ["circle", "square", "ring"]


def _generator(seed, architecture="biggan"):
    generator = tiny_models.generator(
        NUM_CLASSES, DIM_Z, "ema_generator", architecture=architecture
    )
    generator.build_by_call()
    rng = np.random.default_rng(seed)
    for variable in generator.trainable_variables:
        variable.assign(variable + 0.2 * rng.standard_normal(variable.shape).astype(np.float32))
    z = tf.random.stateless_normal([8, DIM_Z], seed=[seed, 0])
    generator(z, tf.one_hot(np.arange(8) % NUM_CLASSES, NUM_CLASSES), training=True)
    return generator


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return model_dir_and_export(tmp_path_factory.mktemp("sample"))


def model_dir_and_export(root):
    """A tiny EMA generator saved as a model_dir and exported twice (versions 1 and 2, the
    latter with its weights); returns `(generator, model_dir, export_dir)`."""
    generator = _generator(1)
    model_dir = str(root / "run")
    model_files.write_model_config(model_dir, generator, CLASS_NAMES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(5, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=5)
    export_dir = str(root / "export")
    # Version 1 holds other weights: loading the export folder must pick version 2.
    export.export_generator(_generator(2), export_dir, CLASS_NAMES)
    export.export_generator(generator, export_dir, CLASS_NAMES)
    # Saved with the u of one training call, which is not converged for these weights. The
    # export divides by the exact sigma and the model_dir loader refines it, so the reference
    # the tests compare with is the generator with its exact sigma.
    layers.refine_spectral_norms(generator, exact=True)
    return generator, model_dir, export_dir


def _tile(grid, row, col):
    top, left = PAD + row * (R + PAD), PAD + col * (R + PAD)
    return grid[top : top + R, left : left + R]


def _image(generator, z, label_weights):
    z = np.asarray(z, np.float32)[None]
    y = np.asarray(label_weights, np.float32)[None]
    return imaging.to_uint8(generator(z, y, training=False))[0].numpy()


def _assert_close_uint8(a, b):
    # Different batch compositions may round a pixel the other way.
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def _onehot(k):
    return np.eye(NUM_CLASSES, dtype=np.float32)[k]


@pytest.fixture(scope="module")
def gen(setup):
    return loader.load_generator(saved_model=setup[2])


@pytest.mark.slow
def test_saved_model_loader_picks_largest_version(setup, gen):
    generator, model_dir, export_dir = setup
    assert gen.source == os.path.join(export_dir, "2")
    assert (gen.dim_z, gen.num_classes, gen.resolution) == (DIM_Z, NUM_CLASSES, R)
    assert gen.class_names == CLASS_NAMES
    z = imaging.truncated_z(4, DIM_Z, None, seed=1)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 1, 2, 0]]
    expected = generator(z, y, training=False).numpy()
    np.testing.assert_allclose(gen.generate(z, y), expected, atol=1e-4)
    version_one = loader.load_generator(saved_model=os.path.join(export_dir, "1"))
    assert np.abs(version_one.generate(z, y).numpy() - expected).max() > 1e-2
    opened = metrics.open_generator(saved_model=export_dir)
    np.testing.assert_allclose(opened.generate(z, y), expected, atol=1e-4)
    with pytest.raises(ValueError, match=f"\\[B, {DIM_Z}\\]"):
        gen.generate(z[:, :-1], y)
    with pytest.raises(FileNotFoundError):
        loader.load_generator(saved_model=model_dir)


@pytest.mark.slow
def test_model_dir_loader_restores_the_ema_generator(setup):
    generator, model_dir, _ = setup
    loaded = loader.load_generator(model_dir=model_dir)
    assert (loaded.dim_z, loaded.num_classes, loaded.resolution) == (DIM_Z, NUM_CLASSES, R)
    assert loaded.precision == "float32"  # the default for a model_dir
    assert loaded.class_names == CLASS_NAMES
    z = imaging.truncated_z(4, DIM_Z, None, seed=1)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 1, 2, 0]]
    np.testing.assert_allclose(
        loaded.generate(z, y), generator(z, y, training=False).numpy(), atol=1e-5
    )
    # The loader refined sigma: the checkpoint's own estimate gives other images.
    stored, _, _ = model_files.restore_ema_generator(model_dir)
    assert np.abs(loaded.generate(z, y).numpy() - stored(z, y, training=False).numpy()).max() > 1e-3


def test_parse_classes(gen):
    assert loader.parse_classes(gen, "ring,0, square") == [2, 0, 1]
    assert loader.parse_classes(gen, [1, "2"]) == [1, 2]
    with pytest.raises(ValueError, match="triangle"):
        loader.parse_classes(gen, ["triangle"])
    with pytest.raises(ValueError, match="outside"):
        loader.parse_classes(gen, "3")


def test_class_grid_rows_are_classes_and_columns_share_z(setup, gen):
    generator = setup[0]
    grid = sheets.class_grid(gen, ["ring", 0], samples_per_class=3, truncation=0.8, seed=4)
    assert grid.shape == (2 * R + 3 * PAD, 3 * R + 4 * PAD, 3) and grid.dtype == np.uint8
    z = imaging.truncated_z(3, DIM_Z, 0.8, seed=4)
    for row, label in enumerate([2, 0]):
        for col in range(3):
            _assert_close_uint8(_tile(grid, row, col), _image(generator, z[col], _onehot(label)))
    assert np.abs(_tile(grid, 0, 0).astype(int) - _tile(grid, 1, 0)).mean() > 1.0


def test_truncation_grid_rows_share_z(setup, gen):
    generator = setup[0]
    truncations = [100.0, 1.0, 0.25]
    grid = sheets.truncation_grid(gen, "square", truncations, samples=2, seed=7)
    assert grid.shape == (3 * R + 4 * PAD, 2 * R + 3 * PAD, 3)
    untruncated = imaging.truncated_z(2, DIM_Z, None, seed=7)
    # A threshold above every |z| entry leaves the untruncated latent itself.
    assert np.abs(untruncated).max() < 100.0
    np.testing.assert_array_equal(imaging.truncated_z(2, DIM_Z, 100.0, seed=7), untruncated)
    for col in range(2):
        _assert_close_uint8(_tile(grid, 0, col), _image(generator, untruncated[col], _onehot(1)))
    for row, t in enumerate(truncations[1:], start=1):
        z = imaging.truncated_z(2, DIM_Z, t, seed=7)
        inside = np.abs(untruncated) <= t
        # The same draw: entries inside the threshold are kept, the others re-sampled inside.
        np.testing.assert_array_equal(z[inside], untruncated[inside])
        assert np.abs(z).max() <= t and (~inside).any()
        for col in range(2):
            _assert_close_uint8(_tile(grid, row, col), _image(generator, z[col], _onehot(1)))


def test_z_interpolation_sheet_endpoints(setup, gen):
    generator = setup[0]
    grid = sheets.z_interpolation_sheet(gen, [1, 2], num_steps=4, truncation=0.5, seed=3)
    assert grid.shape == (2 * R + 3 * PAD, 4 * R + 5 * PAD, 3)
    ends = imaging.truncated_z(4, DIM_Z, 0.5, seed=3)
    for row, label in enumerate([1, 2]):
        a, b = ends[2 * row], ends[2 * row + 1]
        _assert_close_uint8(_tile(grid, row, 0), _image(generator, a, _onehot(label)))
        _assert_close_uint8(_tile(grid, row, 3), _image(generator, b, _onehot(label)))
        middle = a + (b - a) / 3.0
        _assert_close_uint8(_tile(grid, row, 1), _image(generator, middle, _onehot(label)))


def test_class_interpolation_endpoints_are_pure_classes(setup, gen):
    generator = setup[0]
    grid = sheets.class_interpolation_sheet(
        gen, "circle", "ring", num_steps=5, num_rows=2, truncation=0.5, seed=11
    )
    assert grid.shape == (2 * R + 3 * PAD, 5 * R + 6 * PAD, 3)
    z = imaging.truncated_z(2, DIM_Z, 0.5, seed=11)
    for row in range(2):
        _assert_close_uint8(_tile(grid, row, 0), _image(generator, z[row], _onehot(0)))
        _assert_close_uint8(_tile(grid, row, 4), _image(generator, z[row], _onehot(2)))
        half = 0.5 * _onehot(0) + 0.5 * _onehot(2)
        _assert_close_uint8(_tile(grid, row, 2), _image(generator, z[row], half))
    # The pure ends differ, so the sheet shows a real transition.
    assert np.abs(_tile(grid, 0, 0).astype(int) - _tile(grid, 0, 4)).mean() > 1.0


@pytest.mark.slow
def test_cli_from_export_alone(setup, gen, tmp_path):
    _, _, export_dir = setup
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    outputs = {}
    for mode, extra in (
        ("class_grid", ["--classes=ring,0", "--samples=3"]),
        ("class_interpolation", ["--class_a=circle", "--class_b=2", "--num_steps=4"]),
    ):
        path = str(tmp_path / f"{mode}.png")
        cmd = [
            sys.executable,
            "-m",
            "tf_biggan.sample",
            f"--saved_model={export_dir}",
            f"--mode={mode}",
            f"--output={path}",
            "--truncation=0.5",
            "--seed=2",
            "--num_rows=2",
            *extra,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[mode] = imaging.read_png(path).numpy()
    np.testing.assert_array_equal(
        outputs["class_grid"], sheets.class_grid(gen, [2, 0], 3, truncation=0.5, seed=2)
    )
    np.testing.assert_array_equal(
        outputs["class_interpolation"],
        sheets.class_interpolation_sheet(gen, 0, 2, 4, 2, truncation=0.5, seed=2),
    )


@pytest.mark.slow
def test_bfloat16_from_the_cli_the_api_and_an_export(setup, gen, tmp_path):
    from test_precision import BFLOAT16_MEAN_ABS_BOUND

    generator, model_dir, export_dir = setup
    path = str(tmp_path / "grid.png")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable, "-m", "tf_biggan.sample", f"--model_dir={model_dir}",
        "--precision=bfloat16", "--classes=ring,0", "--samples=3", "--seed=2", f"--output={path}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    full = sheets.class_grid(gen, [2, 0], 3, seed=2).astype(float) / 127.5
    half = imaging.read_png(path).numpy().astype(float) / 127.5
    assert 0 < np.abs(half - full).mean() < BFLOAT16_MEAN_ABS_BOUND

    loaded = tf_biggan.load(model_dir, precision="bfloat16")
    assert loaded.precision == "bfloat16" and loaded.describe()["precision"] == "bfloat16"
    # The same computation up to bfloat16 rounding: Grappler, on in the program and off in the
    # tests, fuses the ops differently (10% of the pixels measured one level apart).
    same = sheets.class_grid(loaded, [2, 0], 3, seed=2).astype(int)
    difference = np.abs(same - imaging.read_png(path).numpy().astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.5
    # An export computes in the precision it was made in; asking for another is an error.
    assert gen.precision == "float32"
    with pytest.raises(ValueError, match="computes in float32, not bfloat16.*--precision"):
        tf_biggan.load(export_dir, precision="bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        tf_biggan.load(model_dir, precision="fp16")


def test_without_classes_a_many_class_model_draws_ten_spread_classes():
    assert sheets.default_classes(5) == [0, 1, 2, 3, 4]
    assert sheets.default_classes(10) == list(range(10))
    assert sheets.default_classes(1000) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


def standing_stats_model_dir(model_dir: str):
    """Writes a tiny model_dir whose EMA generator has 3 entries of truncation-indexed
    statistics (step 1); returns that generator."""
    generator = networks.Generator(
        **dict(_generator(1).get_config(), name="ema_generator", num_standing_stats=3)
    )
    generator.build_by_call()
    tiny_models.fill_standing_stats(generator, seed=4)
    model_files.write_model_config(model_dir, generator, CLASS_NAMES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(1, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=1)
    return generator


@pytest.mark.slow
def test_sample_truncation_picks_the_standing_statistics(tmp_path):
    model_dir = str(tmp_path / "run")
    generator = standing_stats_model_dir(model_dir)
    # The export's signatures are checked in test_export; here the model_dir path.
    layers.refine_spectral_norms(generator, exact=True)
    z = imaging.truncated_z(3, DIM_Z, 0.4, seed=2)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[2, 0, 1]]
    expected = imaging.to_uint8(generator(z, y, training=False, truncation=0.4)).numpy()
    moving = imaging.to_uint8(generator(z, y, training=False)).numpy()
    assert np.abs(expected.astype(int) - moving.astype(int)).max() > 10
    gen = tf_biggan.load(model_dir)
    images = gen.sample(["ring", "circle", "square"], truncation=0.4, seed=2)
    _assert_close_uint8(images, expected)
    grid = sheets.truncation_grid(gen, 0, [0.4, None], 1, seed=2, pad=0)
    rows = []
    for t in (0.4, None):
        z_row = imaging.truncated_z(1, DIM_Z, t, seed=2)
        rows.append(generator(z_row, y[1:2], training=False, truncation=t))
    _assert_close_uint8(grid, imaging.to_uint8(tf.concat(rows, axis=1))[0].numpy())


@pytest.mark.slow
def test_a_deep_model_dir_loads_and_samples(tmp_path):
    # BigGAN-deep through the model_dir loader that sampling and evaluation
    # (`metrics.open_generator`) use (its export: tests/test_export.py).
    generator = _generator(1, architecture="deep")
    model_dir = str(tmp_path / "run")
    model_files.write_model_config(model_dir, generator, CLASS_NAMES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(5, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=5)
    layers.refine_spectral_norms(generator, exact=True)
    z = tf.random.stateless_normal([2, DIM_Z], seed=[4, 4])
    y = tf.one_hot([1, 2], NUM_CLASSES)
    loaded = metrics.open_generator(model_dir=model_dir)
    np.testing.assert_allclose(loaded.generate(z, y), generator(z, y, training=False), atol=1e-4)
    images = tf_biggan.load(model_dir).sample(classes=["ring"], n=2, truncation=0.5, seed=1)
    assert images.shape == (2, R, R, 3) and images.dtype == np.uint8


def test_the_sample_module_keeps_the_names_of_0_2():
    """Code written against tf_biggan 0.2 imports the loader and the sheets from
    `tf_biggan.sample`; they are the same objects as `tf_biggan.loader`'s and `.sheets`'."""
    from tf_biggan import sample

    for name in sample.__all__:
        assert getattr(sample, name) is getattr(
            loader if hasattr(loader, name) else sheets, name
        ), name
