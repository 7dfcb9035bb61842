"""Tests for tf_biggan.dump: uint8 samples for FID tools outside TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_metrics_extractors import tiny_classifier
from test_sample import CLASS_NAMES, R, _generator

from tf_biggan import dump, imaging, loader, metrics, model_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model_dir holding a tiny EMA generator at step 5 (no export: it costs a minute)."""
    generator = _generator(1)
    model_dir = str(tmp_path_factory.mktemp("dump") / "run")
    model_files.write_model_config(model_dir, generator, CLASS_NAMES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(5, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=5)
    return model_dir


@pytest.fixture(scope="module")
def gen(model_dir):
    return loader.load_generator(model_dir=model_dir)


@pytest.mark.slow
def test_npz_holds_the_images_eval_measures_with_their_labels(gen, tmp_path):
    path = str(tmp_path / "out" / "samples.npz")
    settings = dict(num_samples=7, truncation=1.0, seed=2, batch_size=3)
    labels = dump.dump_samples(gen, path, verbose=0, **settings)
    with np.load(path) as arrays:
        assert sorted(arrays.files) == ["arr_0", "labels"]
        images, stored_labels = arrays["arr_0"], arrays["labels"]
    assert images.dtype == np.uint8 and images.shape == (7, R, R, 3)
    np.testing.assert_array_equal(stored_labels, [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(labels, stored_labels)
    np.testing.assert_array_equal(stored_labels, metrics.generated_labels(7, gen.num_classes))
    # Read back as real data (uint8 -> x / 127.5 - 1), the dump has the feature statistics of
    # the evaluation's own samples at the same seed, truncation and batch size.
    extractor = metrics.make_extractor("keras_model", tiny_classifier(), feature_layer="features")
    real = metrics.compute_dataset_stats(
        [(tf.constant(images, tf.float32) / 127.5 - 1.0, stored_labels)], extractor, 7, verbose=0
    )
    generated, _ = metrics.compute_generator_stats(
        gen.generate, extractor, num_classes=gen.num_classes, dim_z=gen.dim_z, verbose=0,
        **settings,
    )  # fmt: skip
    np.testing.assert_allclose(real.mean, generated.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(real.cov, generated.cov, rtol=1e-5, atol=1e-7)
    # Another seed gives other images.
    other = dump.dump_samples(gen, str(tmp_path / "other.npz"), 7, seed=3, verbose=0)
    assert other.tolist() == labels.tolist()
    with np.load(str(tmp_path / "other.npz")) as arrays:
        assert np.any(arrays["arr_0"] != images)


def test_chosen_classes_in_turn_and_clear_errors(gen, tmp_path):
    np.testing.assert_array_equal(dump.dump_labels(5, [2, 0]), [2, 0, 2, 0, 2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        dump.dump_samples(gen, str(tmp_path / "x.npz"), 2, classes=[3], verbose=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        dump.dump_samples(gen, str(tmp_path / "full"), 2, verbose=0)


@pytest.mark.slow
def test_cli_dumps_a_folder_of_pngs_and_labels(model_dir, gen, tmp_path):
    out = str(tmp_path / "pngs")
    cmd = [
        sys.executable, "-m", "tf_biggan.sample", f"--model_dir={model_dir}", "--checkpoint=5",
        "--mode=dump", "--num_samples=5", "--batch_size=2", "--seed=1", "--classes=ring,circle",
        f"--output={out}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == out
    # The progress bar is on stderr; off a terminal, its first and last lines only here
    # (a line every 30 s), not one per batch of 2.
    assert proc.stderr.count("/5") == 2, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == [f"{i:06d}.png" for i in range(5)] + [dump.LABELS_CSV]
    with open(os.path.join(out, dump.LABELS_CSV)) as f:
        assert f.read().splitlines() == [
            "file,label", "000000.png,2", "000001.png,0", "000002.png,2", "000003.png,0",
            "000004.png,2",
        ]  # fmt: skip
    # The same images as the library's dump with the same settings (up to a rounding flip).
    npz = str(tmp_path / "same.npz")
    dump.dump_samples(gen, npz, 5, classes=[2, 0], seed=1, batch_size=2, verbose=0)
    with np.load(npz) as arrays:
        expected = arrays["arr_0"]
    for i in range(5):
        image = imaging.read_png(os.path.join(out, f"{i:06d}.png")).numpy()
        assert image.shape == (R, R, 3)
        assert np.abs(image.astype(int) - expected[i].astype(int)).max() <= 1
