"""Tests for tf_biggan.eval: metrics against closed forms / scipy, extractors, and the CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from tf_biggan import eval as ev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_cov(rng, dim, scale=1.0):
    a = rng.standard_normal([dim, dim])
    return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


# ---- FID -------------------------------------------------------------------------------------


def test_fid_of_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(64)
    sigma = _random_cov(rng, 64)
    assert ev.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_scipy_closed_form():
    rng = np.random.default_rng(1)
    dim = 32
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim) + 0.5
    s1, s2 = _random_cov(rng, dim), _random_cov(rng, dim, scale=2.0)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert expected > 1.0
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_diagonal_gaussians_is_analytic():
    # For diagonal covariances tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert ev.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="Covariances"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# ---- Streaming statistics --------------------------------------------------------------------


def test_streaming_stats_match_batch_stats_over_uneven_batches():
    rng = np.random.default_rng(2)
    # A large offset makes the naive E[xx^T] - E[x]E[x]^T formula lose digits; the merge must not.
    data = rng.standard_normal([517, 8]) * [1, 2, 3, 4, 5, 6, 7, 8] + 1e4
    stats = ev.StreamingStats(8, max_kid_features=0)
    start = 0
    for size in [1, 7, 100, 0, 3, 256, 150]:
        stats.update(data[start : start + size])
        start += size
    assert start == data.shape[0]
    assert stats.count == 517
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(data, rowvar=False), rtol=1e-9, atol=1e-9)


def test_streaming_stats_rejects_wrong_dim():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ev.StreamingStats(4).update(np.zeros([2, 5]))


def test_reservoir_is_uniform_sample_of_the_stream():
    stats = ev.StreamingStats(1, max_kid_features=100, seed=3)
    for start in range(0, 10_000, 64):
        stats.update(np.arange(start, min(start + 64, 10_000), dtype=np.float64)[:, None])
    kept = stats.features[:, 0]
    assert kept.shape == (100,)
    assert len(np.unique(kept)) == 100
    assert set(kept.astype(int)) <= set(range(10_000))
    # A uniform sample of 0..9999 has mean 4999.5 with standard error ~ 289.
    assert abs(kept.mean() - 4999.5) < 4 * 289
    # Items from the end of the stream must be represented, not only the first 100.
    assert kept.max() > 5000


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    stats = ev.StreamingStats(5, max_kid_features=30, extractor="test_net")
    stats.update(rng.standard_normal([50, 5]))
    path = str(tmp_path / "sub" / "ref.npz")
    stats.save(path)
    with np.load(path) as raw:
        assert {"mu", "sigma", "count"} <= set(raw.files)
        np.testing.assert_array_equal(raw["mu"], stats.mean)
    loaded = ev.StreamingStats.load(path)
    assert loaded.count == 50
    assert loaded.extractor == "test_net"
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_allclose(loaded.cov, stats.cov, rtol=1e-14)
    np.testing.assert_array_equal(loaded.features, stats.features)
    # A loaded object keeps accumulating exactly.
    more = rng.standard_normal([20, 5])
    loaded.update(more)
    stats.update(more)
    np.testing.assert_allclose(loaded.cov, stats.cov, rtol=1e-12)


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ev.StreamingStats.load(str(tmp_path / "nope.npz"))


# ---- Inception Score -------------------------------------------------------------------------


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = ev.inception_score(np.full([100, 7], 1 / 7), splits=10)
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_evenly_spread_predictions_is_k():
    k = 8
    probs = np.eye(k)[np.arange(160) % k]
    mean, std = ev.inception_score(probs, splits=10)
    assert mean == pytest.approx(k)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(6) * 0.3, size=90)
    mean, _ = ev.inception_score(probs, splits=3)
    direct = []
    for part in np.split(probs, 3):
        py = part.mean(0)
        direct.append(np.exp(np.mean(np.sum(part * np.log(part / py), axis=1))))
    assert mean == pytest.approx(np.mean(direct), rel=1e-10)


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        ev.inception_score(np.random.default_rng(0).standard_normal([20, 4]), splits=2)


# ---- KID and precision/recall ----------------------------------------------------------------


def test_kid_same_distribution_is_near_zero_and_shifted_is_positive():
    rng = np.random.default_rng(6)
    x = rng.standard_normal([600, 16])
    y = rng.standard_normal([600, 16])
    mean, std = ev.kernel_inception_distance(x, y, num_subsets=20, subset_size=200)
    assert abs(mean) < max(3 * std, 1e-2)
    shifted_mean, shifted_std = ev.kernel_inception_distance(
        x, y + 1.0, num_subsets=20, subset_size=200
    )
    assert shifted_mean > 10 * max(abs(mean), shifted_std)
    assert shifted_mean > 0.1


def test_kid_single_subset_matches_explicit_formula():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal([10, 3]), rng.standard_normal([10, 3]) + 0.3
    # subset_size is clipped to 10, so the only subset is a permutation of everything.
    mean, std = ev.kernel_inception_distance(x, y, num_subsets=1, subset_size=50)

    def k(a, b):
        return (a @ b.T / 3 + 1) ** 3

    m = 10
    kxx, kyy = k(x, x), k(y, y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == 0.0


def test_precision_recall_detects_mode_collapse():
    rng = np.random.default_rng(8)
    real = rng.standard_normal([400, 4])
    same = ev.precision_recall(real, rng.standard_normal([400, 4]), k=3, batch_size=128)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = ev.precision_recall(real, 0.05 * rng.standard_normal([400, 4]), k=3)
    assert collapsed["precision"] > 0.95
    assert collapsed["recall"] < 0.2


# ---- Extractors ------------------------------------------------------------------------------


def _tiny_classifier(num_classes=5):
    inputs = keras.Input([16, 16, 3])
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(logits), name="tiny")


def test_keras_model_extractor_resizes_and_reads_named_layers():
    model = _tiny_classifier()
    extractor = ev.make_extractor(
        "keras_model", path=model, feature_layer="features", logits_layer="logits"
    )
    assert extractor.input_size == (16, 16)
    assert extractor.name == "keras_model:tiny/features"
    images = np.random.default_rng(9).uniform(-1, 1, [3, 32, 32, 3]).astype(np.float32)
    out = extractor(images)
    assert out["pool"].shape == (3, 4)
    assert out["logits"].shape == (3, 5)
    resized = tf.image.resize(images, [16, 16], method="bilinear")
    sub = keras.Model(model.inputs, model.get_layer("features").output)
    np.testing.assert_allclose(out["pool"], sub(resized).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ev._softmax(out["logits"]), model(resized).numpy(), rtol=1e-4, atol=1e-6
    )


def test_keras_model_extractor_unknown_layer_is_clear():
    with pytest.raises(ValueError, match="no layer 'pool5'"):
        ev.make_extractor("keras_model", path=_tiny_classifier(), feature_layer="pool5")


def test_tfgan_inception_missing_local_path_is_clear(tmp_path):
    missing = str(tmp_path / "inception_module")
    with pytest.raises(FileNotFoundError, match="inception_module"):
        ev.make_extractor("tfgan_inception", path=missing)


def test_unknown_extractor_kind():
    with pytest.raises(ValueError, match="Unknown extractor kind"):
        ev.make_extractor("vgg")


def test_keras_inception_v3_random_weights_gives_2048_features():
    start = time.perf_counter()
    extractor = ev.make_extractor("keras_inception_v3", weights=None)
    build_s = time.perf_counter() - start
    if build_s > 30:
        pytest.skip(f"InceptionV3 took {build_s:.0f} s to build on this machine.")
    images = np.random.default_rng(10).uniform(-1, 1, [2, 32, 32, 3]).astype(np.float32)
    out = extractor(images)
    assert out["pool"].shape == (2, 2048)
    assert out["logits"].shape == (2, 1000)
    assert np.all(np.isfinite(out["pool"]))
    # The pool layer follows a ReLU, so features are non-negative.
    assert out["pool"].min() >= 0.0


# ---- Generator statistics, evaluate, PeriodicEvaluator ---------------------------------------


class _LinearGenerator:
    """images = tanh(z A + y B) reshaped to [B, 16, 16, 3]; a shift moves the distribution."""

    def __init__(self, dim_z, num_classes, shift=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.a = tf.constant(rng.standard_normal([dim_z, 16 * 16 * 3]) * 0.5, tf.float32)
        self.b = tf.constant(rng.standard_normal([num_classes, 16 * 16 * 3]) * 0.5, tf.float32)
        self.shift = shift
        self.seen_labels = []
        self.max_abs_z = 0.0

    def __call__(self, z, y_onehot):
        self.seen_labels.extend(np.argmax(y_onehot.numpy(), axis=1).tolist())
        self.max_abs_z = max(self.max_abs_z, float(tf.reduce_max(tf.abs(z))))
        x = tf.tanh(z @ self.a + y_onehot @ self.b + self.shift)
        return tf.reshape(x, [-1, 16, 16, 3])


def test_compute_generator_stats_cycles_labels_and_counts():
    extractor = ev.make_extractor(
        "keras_model", path=_tiny_classifier(), feature_layer="features", logits_layer="logits"
    )
    gen = _LinearGenerator(dim_z=6, num_classes=3)
    stats, probs = ev.compute_generator_stats(
        gen,
        extractor,
        num_samples=23,
        batch_size=10,
        num_classes=3,
        dim_z=6,
        truncation=0.4,
        verbose=0,
    )
    assert 0.3 < gen.max_abs_z <= 0.4
    assert stats.count == 23
    assert gen.seen_labels == [i % 3 for i in range(23)]
    assert probs.shape == (23, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_evaluate_and_periodic_evaluator(tmp_path):
    extractor = ev.make_extractor(
        "keras_model", path=_tiny_classifier(), feature_layer="features", logits_layer="logits"
    )
    real = _LinearGenerator(dim_z=6, num_classes=3, seed=1)
    ref, _ = ev.compute_generator_stats(
        real, extractor, num_samples=200, batch_size=50, num_classes=3, dim_z=6, seed=7, verbose=0
    )
    path = str(tmp_path / "ref.npz")
    ref.save(path)
    kwargs = dict(num_samples=200, batch_size=50, num_classes=3, dim_z=6, verbose=0)
    same = ev.evaluate(real, extractor, path, seed=1, kid_subset_size=100, **kwargs)
    far = ev.evaluate(
        _LinearGenerator(6, 3, shift=1.5, seed=1), extractor, path, kid_subset_size=100, **kwargs
    )
    assert set(same) == {
        "fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std",
        "class_accuracy", "per_class_accuracy", "num_samples", "truncation", "extractor",
        "reference_stats",
    }  # fmt: skip
    # The classifier has 5 classes, the generator 3: no class accuracy.
    assert same["class_accuracy"] is None and same["per_class_accuracy"] is None
    assert same["reference_stats"] == path and same["num_samples"] == 200
    assert 0 <= same["fid"] < far["fid"]
    assert far["kid_mean"] > same["kid_mean"]
    assert 1.0 <= same["inception_score_mean"] <= 5.0
    periodic = ev.PeriodicEvaluator(
        extractor, path, num_samples=200, batch_size=50, num_classes=3, dim_z=6, seed=1
    )
    assert periodic(real)["fid"] == pytest.approx(same["fid"], rel=1e-6)


class _ChannelGenerator:
    """Class k lights channel k of a 4×4 image, except that class 2 comes out as class 1."""

    def __call__(self, z, y_onehot):
        labels = np.argmax(y_onehot.numpy(), axis=1)
        shown = np.where(labels == 2, 1, labels)
        images = np.full([len(labels), 4, 4, 3], -1.0, np.float32)
        images[np.arange(len(labels)), :, :, shown] = 1.0
        return tf.constant(images + 0.01 * z.numpy()[:, :1, None, None])


def _channel_classifier():
    """Logits = the per-channel means: the lit channel wins."""
    inputs = keras.Input([4, 4, 3])
    features = keras.layers.GlobalAveragePooling2D(name="features")(inputs)
    logits = keras.layers.Dense(3, use_bias=False, kernel_initializer="identity", name="logits")
    return keras.Model(inputs, logits(features), name="channels")


def test_class_accuracy_counts_samples_classified_as_their_conditioning_class(tmp_path):
    extractor = ev.make_extractor(
        "keras_model", path=_channel_classifier(), feature_layer="features", logits_layer="logits"
    )
    ref, _ = ev.compute_generator_stats(
        _ChannelGenerator(), extractor, num_samples=30, batch_size=7, num_classes=3, dim_z=2,
        verbose=0,
    )  # fmt: skip
    metrics = ev.evaluate(
        _ChannelGenerator(), extractor, ref, num_samples=30, batch_size=7, num_classes=3,
        dim_z=2, seed=1, kid_subset_size=10, verbose=0,
    )  # fmt: skip
    # Ten images per class; every image of class 2 is taken for class 1.
    assert metrics["class_accuracy"] == pytest.approx(2 / 3)
    assert metrics["per_class_accuracy"] == [1.0, 1.0, 0.0]


def test_class_accuracy_closed_form_and_checks():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    result = ev.class_accuracy(probs, np.array([0, 1, 1, 1, 0]))
    assert result == {"class_accuracy": 0.6, "per_class_accuracy": [0.5, 2 / 3]}
    assert ev.class_accuracy(probs[:2], np.array([0, 0]))["per_class_accuracy"] == [0.5, None]
    with pytest.raises(ValueError, match="labels"):
        ev.class_accuracy(probs, np.array([0, 1]))


def test_evaluate_rejects_reference_from_another_extractor(tmp_path):
    stats = ev.StreamingStats(4, extractor="tfgan_inception")
    stats.update(np.random.default_rng(0).standard_normal([10, 4]))
    stats.save(str(tmp_path / "ref.npz"))
    extractor = ev.make_extractor("keras_model", path=_tiny_classifier(), feature_layer="features")
    with pytest.raises(ValueError, match="tfgan_inception"):
        ev.evaluate(
            _LinearGenerator(6, 3), extractor, str(tmp_path / "ref.npz"),
            num_samples=4, batch_size=4, num_classes=3, dim_z=6, verbose=0,
        )  # fmt: skip


def test_compute_dataset_stats_trims_to_num_samples():
    extractor = ev.make_extractor("keras_model", path=_tiny_classifier(), feature_layer="features")
    images = np.random.default_rng(11).uniform(-1, 1, [40, 16, 16, 3]).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(40, np.int32))).batch(16)
    stats = ev.compute_dataset_stats(ds, extractor, num_samples=37, verbose=0)
    expected = extractor(images[:37])["pool"].astype(np.float64)
    assert stats.count == 37
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ended after 40"):
        ev.compute_dataset_stats(ds, extractor, num_samples=41, verbose=0)


# ---- CLI end to end --------------------------------------------------------------------------


class _TinyHubGenerator(tf.Module):
    def __init__(self, dim_z, num_classes, resolution):
        super().__init__()
        rng = np.random.default_rng(12)
        size = resolution * resolution * 3
        self.resolution = resolution
        self.a = tf.Variable(rng.standard_normal([dim_z, size]).astype(np.float32) * 0.5)
        self.b = tf.Variable(rng.standard_normal([num_classes, size]).astype(np.float32) * 0.5)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="z"),
            tf.TensorSpec([None, 3], tf.float32, name="y"),
            tf.TensorSpec([], tf.float32, name="truncation"),
        ]
    )
    def default(self, z, y, truncation):
        x = tf.tanh(z @ self.a + y @ self.b)
        return {"default": tf.reshape(x, [-1, self.resolution, self.resolution, 3])}


def _write_tiny_saved_model(path, dim_z=4, num_classes=3, resolution=8):
    module = _TinyHubGenerator(dim_z, num_classes, resolution)
    tf.saved_model.save(module, path, signatures={"default": module.default})
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    config = {
        "resolution": resolution,
        "dim_z": dim_z,
        "num_classes": num_classes,
        "class_names": ["a", "b", "c"],
    }
    with open(os.path.join(path, "assets", "config.json"), "w") as f:
        json.dump(config, f)
    return module


def _cli_inputs(tmp_path, num_samples, batch_size):
    """A tiny SavedModel generator, a saved tiny extractor and reference statistics of the
    generator's own images; returns their paths `(saved_model, extractor, reference)`."""
    saved_model = str(tmp_path / "generator")
    module = _write_tiny_saved_model(saved_model)
    extractor_path = str(tmp_path / "extractor.keras")
    _tiny_classifier().save(extractor_path)
    extractor = ev.make_extractor(
        "keras_model", path=extractor_path, feature_layer="features", logits_layer="logits"
    )
    ref, _ = ev.compute_generator_stats(
        lambda z, y: module.default(z, y, tf.constant(1.0))["default"],
        extractor, num_samples=num_samples, batch_size=batch_size, num_classes=3, dim_z=4,
        verbose=0,
    )  # fmt: skip
    ref_path = str(tmp_path / "ref.npz")
    ref.save(ref_path)
    return saved_model, extractor_path, ref_path


def _run_for_one_json_line(cmd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_cli_prints_one_json_line(tmp_path):
    saved_model, extractor_path, ref_path = _cli_inputs(tmp_path, num_samples=60, batch_size=30)
    cmd = [
        sys.executable, "-m", "tf_biggan.eval", f"--saved_model={saved_model}",
        f"--reference_stats={ref_path}", "--num_samples=60", "--batch_size=30",
        "--truncation=1.5", "--extractor=keras_model", f"--extractor_path={extractor_path}",
        "--feature_layer=features", "--logits_layer=logits", "--seed=3", "--kid_subsets=5",
        "--kid_subset_size=50",
    ]  # fmt: skip
    result = _run_for_one_json_line(cmd)
    assert set(result) == {
        "fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std",
        "class_accuracy", "per_class_accuracy", "num_samples", "truncation", "extractor",
        "reference_stats",
    }  # fmt: skip
    # The classifier has 5 classes, the generator 3: no class accuracy.
    assert result["class_accuracy"] is None and result["per_class_accuracy"] is None
    assert result["num_samples"] == 60
    assert result["truncation"] == 1.5
    assert result["extractor"] == "keras_model:tiny/features"
    assert result["reference_stats"] == ref_path
    assert 0.0 <= result["fid"] < 10.0
    assert 1.0 <= result["inception_score_mean"] <= 5.0
    assert np.isfinite(result["kid_mean"]) and result["kid_std"] >= 0


# ---- tools/reference_stats.py and tools/truncation_curve.py ---------------------------------


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_plot_puts_curve_pixels_at_the_points(tmp_path):
    curve = _load_tool("truncation_curve")
    xs, ys = [10.0, 40.0, 80.0, 100.0], [30.0, 12.0, 15.0, 25.0]
    image, points = curve.render_plot(xs, ys, labels=["2", "1", "0.5", "0.04"])
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    # Axes span columns 70..610 and rows 430..40, with the data range padded by 5% each side:
    # x in [5.5, 104.5], y in [11.1, 30.9]; y grows upwards.
    cols = np.array([p[0] for p in points])
    rows = np.array([p[1] for p in points])
    expected_cols = 70 + (np.array(xs) - 5.5) / 99.0 * 540
    expected_rows = 430 - (np.array(ys) - 11.1) / 19.8 * 390
    np.testing.assert_allclose(cols, expected_cols, atol=0.5)
    np.testing.assert_allclose(rows, expected_rows, atol=0.5)
    for col, row in points:
        np.testing.assert_array_equal(image[row, col], curve.MARKER_COLOUR)
    # The polyline passes through the midpoint of each segment.
    for (c0, r0), (c1, r1) in zip(points[:-1], points[1:], strict=True):
        mid = image[
            (r0 + r1) // 2 - 1 : (r0 + r1) // 2 + 2, (c0 + c1) // 2 - 1 : (c0 + c1) // 2 + 2
        ]
        assert np.any(np.all(mid == curve.LINE_COLOUR, axis=-1))
    # The axes are drawn, and a region away from the curve stays background.
    assert np.all(image[430, 70:610] == curve.AXIS_COLOUR)
    assert np.all(image[40:430, 70] == curve.AXIS_COLOUR)
    # Above the segment from point 1 (row ~410) to point 2 (row ~351) nothing is drawn.
    far = image[80:300, cols[1] + 20 : cols[2] - 20]
    assert far.size and np.all(far == 255)
    path = str(tmp_path / "curve.png")
    from tf_biggan import imaging

    imaging.write_png(path, image)
    decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
    np.testing.assert_array_equal(decoded, image)


def test_truncation_curve_cli(tmp_path):
    saved_model, extractor_path, ref_path = _cli_inputs(tmp_path, num_samples=40, batch_size=40)
    png = str(tmp_path / "plot" / "curve.png")
    cmd = [
        sys.executable, os.path.join(REPO, "tools", "truncation_curve.py"),
        f"--saved_model={saved_model}", f"--reference_stats={ref_path}",
        "--truncations=1.0,0.1", "--num_samples=40", "--batch_size=20",
        "--extractor=keras_model", f"--extractor_path={extractor_path}",
        "--feature_layer=features", "--logits_layer=logits", f"--output_png={png}",
    ]  # fmt: skip
    rows = _run_for_one_json_line(cmd)
    assert [r["truncation"] for r in rows] == [1.0, 0.1]
    # Truncating to |z| <= 0.1 collapses variety: FID against the untruncated reference grows.
    assert rows[1]["fid"] > rows[0]["fid"]
    image = tf.io.decode_png(tf.io.read_file(png)).numpy()
    assert image.shape == (480, 640, 3)
    assert np.any(np.all(image == (200, 30, 30), axis=-1))


def test_reference_stats_tool_uses_gin_dataset(tmp_path):
    tool = _load_tool("reference_stats")
    extractor = ev.make_extractor("keras_model", path=_tiny_classifier(), feature_layer="features")
    bindings = [
        "make_dataset.source = @synthetic_source",
        "make_dataset.resolution = 16",
        "make_dataset.num_classes = 3",
        "make_dataset.shuffle_buffer = 0",
        "synthetic_source.num_examples = 48",
        "train.total_steps = 10",  # A training binding in the same file is accepted.
    ]
    import gin

    from tf_biggan import data

    try:
        stats = tool.compute_reference_stats(
            [], bindings, num_samples=40, batch_size=16, extractor=extractor,
            max_kid_features=100, seed=0,
        )  # fmt: skip
        with pytest.raises(ValueError, match="exceeds the 48 images"):
            tool.compute_reference_stats(
                [], bindings, num_samples=49, batch_size=16, extractor=extractor,
                max_kid_features=100, seed=0,
            )  # fmt: skip
        gin.clear_config()
        images = []
        for batch, _ in data.make_dataset(
            batch_size=16, resolution=16, num_classes=3, source=data.synthetic_source,
            shuffle_buffer=0,
        ).dataset.take(3):  # fmt: skip
            images.append(batch.numpy())
    finally:
        gin.clear_config()
    expected = extractor(np.concatenate(images)[:40])["pool"].astype(np.float64)
    assert stats.count == 40 and stats.features.shape == (40, 4)
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.cov, np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-7)
