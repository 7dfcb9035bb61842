"""Tests for tf_biggan.metrics.runners: generator / data set statistics and `evaluate`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_metrics_extractors import tiny_classifier
from test_metrics_statistics import polynomial_mmd2_of_shifted_gaussians

from tf_biggan import imaging
from tf_biggan.data import decode
from tf_biggan.metrics import extractors, runners, statistics


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


def _tiny_extractor(logits_layer="logits"):
    return extractors.make_extractor(
        "keras_model", path=tiny_classifier(), feature_layer="features", logits_layer=logits_layer
    )


def test_compute_generator_stats_cycles_labels_and_counts():
    gen = _LinearGenerator(dim_z=6, num_classes=3)
    stats, probs = runners.compute_generator_stats(
        gen,
        _tiny_extractor(),
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


def assert_record_without_class_accuracy(record, cli=False):
    """`record` has every field of an `evaluate` record (and with `cli` the program's
    `generator`), and no class accuracy: the classifier of these tests has 5 classes, their
    generators 3."""
    assert set(record) == {
        "fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std",
        "class_accuracy", "per_class_accuracy", "precision", "recall", "num_samples",
        "truncation", "extractor", "reference_stats", "pipeline", *(["generator"] if cli else []),
    }  # fmt: skip
    assert set(record["pipeline"]) == {
        "extractor", "num_samples", "truncation", "reference_stats", "reference_count",
        "reference_extractor", "reference_features", "generated_images", "precision_recall",
    }  # fmt: skip
    for key in ("num_samples", "truncation", "reference_stats"):
        assert record["pipeline"][key] == record[key], key
    assert record["pipeline"]["extractor"]["name"] == record["extractor"]
    assert record["class_accuracy"] is None and record["per_class_accuracy"] is None


def test_evaluate_and_periodic_evaluator_report_the_metrics_of_their_samples(tmp_path):
    extractor = _tiny_extractor()
    real = _LinearGenerator(dim_z=6, num_classes=3, seed=1)
    ref, _ = runners.compute_generator_stats(
        real, extractor, num_samples=200, batch_size=50, num_classes=3, dim_z=6, seed=7, verbose=0
    )
    path = str(tmp_path / "ref.npz")
    ref.save(path)
    kwargs = dict(num_samples=200, batch_size=50, num_classes=3, dim_z=6, verbose=0)
    same = runners.evaluate(real, extractor, path, seed=1, kid_subset_size=100, **kwargs)
    assert_record_without_class_accuracy(same)
    assert same["reference_stats"] == path and same["num_samples"] == 200
    assert same["truncation"] is None and same["extractor"] == "keras_model:tiny/features"
    # The numbers are the metrics of the samples compute_generator_stats draws for this seed.
    generated, probs = runners.compute_generator_stats(real, extractor, seed=1, **kwargs)
    loaded = statistics.StreamingStats.load(path)
    fid = statistics.frechet_distance(generated.mean, generated.cov, loaded.mean, loaded.cov)
    assert same["fid"] == pytest.approx(fid, rel=1e-12)
    is_mean, is_std = statistics.inception_score(probs, splits=10)
    assert (same["inception_score_mean"], same["inception_score_std"]) == pytest.approx(
        (is_mean, is_std), rel=1e-12
    )
    kid = statistics.kernel_inception_distance(
        generated.features, loaded.features, 100, 100, seed=1
    )
    assert (same["kid_mean"], same["kid_std"]) == pytest.approx(kid, rel=1e-12)
    periodic = runners.PeriodicEvaluator(
        extractor, path, num_samples=200, batch_size=50, num_classes=3, dim_z=6, seed=1
    )
    periodic_record = periodic(real)
    assert periodic_record["fid"] == pytest.approx(same["fid"], rel=1e-6)
    assert periodic_record["pipeline"] == same["pipeline"]


class _GaussianGenerator:
    """Images are z (+ shift) laid out as [B, 2, 2, 3]: flattened, the features are z itself."""

    def __init__(self, shift=0.0):
        self.shift = shift

    def __call__(self, z, y_onehot):
        return tf.reshape(z + self.shift, [-1, 2, 2, 3])


def _flatten_extractor():
    inputs = keras.Input([2, 2, 3])
    features = keras.layers.Flatten(name="features")(inputs)
    model = keras.Model(inputs, features, name="identity")
    return extractors.make_extractor("keras_model", path=model, feature_layer="features")


@pytest.mark.slow
def test_evaluate_of_a_generator_that_is_the_data_is_within_sampling_error():
    # Reference: n draws of N(0, I_D); generator: n more draws, and the same shifted by s.
    # Two independent samples of one Gaussian give E[FID] ~= 2D/n (means) + D(D+1)/(2n)
    # (covariances; to second order in the sampling error); a shift of s adds D s², with a
    # cross term of standard deviation sqrt(8 s² D / n).
    dim, n, shift = 12, 2000, 0.5
    reference = statistics.StreamingStats(dim, max_kid_features=n, extractor=None)
    reference.update(np.random.default_rng(0).standard_normal([n, dim]))
    extractor = _flatten_extractor()
    kwargs = dict(
        num_samples=n, batch_size=500, num_classes=3, dim_z=dim, seed=1, kid_subsets=10, verbose=0,
        quantise=False,  # The "images" are Gaussian features, not pixels in [-1, 1].
    )  # fmt: skip
    same = runners.evaluate(_GaussianGenerator(), extractor, reference, **kwargs)
    far = runners.evaluate(_GaussianGenerator(shift), extractor, reference, **kwargs)
    sampling = 2 * dim / n + dim * (dim + 1) / (2 * n)
    assert sampling / 2 < same["fid"] < 2 * sampling
    assert far["fid"] == pytest.approx(
        dim * shift**2 + sampling, abs=4 * math.sqrt(8 * shift**2 * dim / n)
    )
    # KID: unbiased, so near 0 for the data itself and near the population MMD² when shifted.
    assert abs(same["kid_mean"]) < 0.01
    assert far["kid_mean"] == pytest.approx(
        polynomial_mmd2_of_shifted_gaussians(dim, shift), rel=0.1
    )
    # No logits: no Inception Score; an in-memory reference has no path.
    assert same["inception_score_mean"] is None and same["inception_score_std"] is None
    assert same["reference_stats"] is None


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


def test_class_accuracy_and_inception_score_of_a_generator_that_confuses_two_classes():
    extractor = extractors.make_extractor(
        "keras_model", path=_channel_classifier(), feature_layer="features", logits_layer="logits"
    )
    ref, _ = runners.compute_generator_stats(
        _ChannelGenerator(), extractor, num_samples=30, batch_size=7, num_classes=3, dim_z=2,
        verbose=0, quantise=False,
    )  # fmt: skip
    # Unquantised: the closed form below needs the 0.01 z noise to shift channels exactly alike.
    metrics = runners.evaluate(
        _ChannelGenerator(), extractor, ref, num_samples=30, batch_size=7, num_classes=3,
        dim_z=2, seed=1, kid_subset_size=10, verbose=0, quantise=False,
    )  # fmt: skip
    # Ten images per class; every image of class 2 is taken for class 1.
    assert metrics["class_accuracy"] == pytest.approx(2 / 3)
    assert metrics["per_class_accuracy"] == [1.0, 1.0, 0.0]
    # The noise shifts all channels alike, so the logits are exactly [1, -1, -1] (class 0)
    # or [-1, 1, -1] (classes 1, 2). Each of the 10 splits holds one of each class, so every
    # split's score is exp of the mean KL between these two rows and their 1:2 mixture.
    p0, p1 = statistics.softmax([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    marginal = (p0 + 2 * p1) / 3
    kl0, kl1 = (np.sum(p * np.log(p / marginal)) for p in (p0, p1))
    assert metrics["inception_score_mean"] == pytest.approx(np.exp((kl0 + 2 * kl1) / 3), rel=1e-6)
    assert metrics["inception_score_std"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_rejects_reference_from_another_extractor(tmp_path):
    stats = statistics.StreamingStats(4, extractor="tfgan_inception")
    stats.update(np.random.default_rng(0).standard_normal([10, 4]))
    stats.save(str(tmp_path / "ref.npz"))
    with pytest.raises(ValueError, match="tfgan_inception"):
        runners.evaluate(
            _LinearGenerator(6, 3), _tiny_extractor(None), str(tmp_path / "ref.npz"),
            num_samples=4, batch_size=4, num_classes=3, dim_z=6, verbose=0,
        )  # fmt: skip


def test_compute_dataset_stats_trims_to_num_samples():
    extractor = _tiny_extractor(None)
    images = np.random.default_rng(11).uniform(-1, 1, [40, 16, 16, 3]).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(40, np.int32))).batch(16)
    stats = runners.compute_dataset_stats(ds, extractor, num_samples=37, verbose=0)
    expected = extractor(images[:37])["pool"].astype(np.float64)
    assert stats.count == 37
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ended after 40"):
        runners.compute_dataset_stats(ds, extractor, num_samples=41, verbose=0)


def test_open_generator_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        runners.open_generator()
    with pytest.raises(ValueError, match="exactly one"):
        runners.open_generator(model_dir="a", saved_model="b")


def test_json_line_is_one_line_of_strict_json():
    record = {"fid": float("nan"), "rows": [1.5, float("inf"), {"kid": -float("inf")}], "n": 3}
    line = runners.json_line(record)
    assert "\n" not in line
    assert line == '{"fid": null, "rows": [1.5, null, {"kid": null}], "n": 3}'


def test_generated_images_are_measured_as_if_saved_as_png_and_read_as_real_data(tmp_path):
    # A seeded extractor: the size of the rounding's effect on the FID depends on its weights.
    keras.utils.set_random_seed(3)
    extractor = _tiny_extractor(None)
    reference = statistics.StreamingStats(4, extractor=extractor.name)
    reference.update(extractor(np.random.default_rng(5).uniform(-1, 1, [40, 16, 16, 3]))["pool"])
    generator = _LinearGenerator(dim_z=6, num_classes=3, seed=2)
    seen = []

    def generate(z, y_onehot):
        seen.append(generator(z, y_onehot).numpy())
        return seen[-1]

    kwargs = dict(num_samples=24, batch_size=8, num_classes=3, dim_z=6, seed=4, verbose=0)
    quantised = runners.evaluate(generate, extractor, reference, kid_subset_size=10, **kwargs)
    assert quantised["pipeline"]["generated_images"] == "quantised to uint8"
    # The same images written as PNG files and read back through the real-data decoding.
    files = []
    for i, image in enumerate(np.concatenate(seen)):
        files.append(str(tmp_path / "pngs" / "0" / f"{i:03d}.png"))
        imaging.write_png(files[-1], image)

    def load(path):
        image = decode.preprocess_image(decode.decode_to_rgb_uint8(tf.io.read_file(path)), 16)
        return image, 0

    real = tf.data.Dataset.from_tensor_slices(files).map(load).batch(10)
    from_png = runners.compute_dataset_stats(real, extractor, num_samples=24, verbose=0)
    png_fid = statistics.frechet_distance(
        from_png.mean, from_png.cov, reference.mean, reference.cov
    )
    assert quantised["fid"] == pytest.approx(png_fid, rel=1e-6)
    # Without the rounding the float images give another number.
    unquantised = runners.evaluate(
        generate, extractor, reference, kid_subset_size=10, quantise=False, **kwargs
    )
    assert unquantised["pipeline"]["generated_images"] == "float, not quantised to uint8"
    float_features = extractor(np.concatenate(seen[len(seen) // 2 :]))["pool"]
    float_fid = statistics.frechet_distance(
        np.mean(float_features, 0),
        np.cov(float_features, rowvar=False),
        reference.mean,
        reference.cov,
    )
    assert unquantised["fid"] == pytest.approx(float_fid, rel=1e-6)
    # The two numbers are told apart well beyond the 1e-6 the comparisons above allow.
    assert abs(unquantised["fid"] - png_fid) > 1e-5 * png_fid


def test_quantise_like_real_images_inverts_the_pipeline_scaling_of_uint8_values():
    levels = np.arange(256, dtype=np.uint8).reshape([1, 16, 16, 1]).repeat(3, axis=-1)
    as_real = decode.flip_and_scale(tf.constant(levels), None)
    np.testing.assert_array_equal(runners.quantise_like_real_images(as_real), as_real)
    # Values between levels go to the nearest one; out-of-range values are clipped.
    x = tf.constant([-1.5, -1.0, 0.0, 1.0 / 255, 0.999, 1.5])
    expected = np.array([0, 0, 128, 128, 255, 255]) / 127.5 - 1.0
    np.testing.assert_allclose(runners.quantise_like_real_images(x), expected, rtol=0, atol=1e-7)


def test_precision_recall_of_far_apart_and_identical_feature_sets():
    """Closed forms: a reference whose features are the generated ones shifted far away
    shares no k-NN ball with them (precision = recall = 0); the generated features themselves
    as reference give precision = recall = 1. Without reference features it is refused."""
    generator, extractor = _LinearGenerator(4, 3), _tiny_extractor()
    settings = dict(num_samples=40, batch_size=20, num_classes=3, dim_z=4, seed=1, verbose=0)
    generated, _ = runners.compute_generator_stats(generator, extractor, **settings)
    far = statistics.StreamingStats(generated.dim, extractor=extractor.name)
    far.update(generated.features + 1e3)
    record = runners.evaluate(generator, extractor, far, precision_recall_k=3, **settings)
    assert (record["precision"], record["recall"]) == (0.0, 0.0)
    record = runners.evaluate(generator, extractor, generated, precision_recall_k=3, **settings)
    assert (record["precision"], record["recall"]) == (1.0, 1.0)
    assert record["pipeline"]["precision_recall"]["k"] == 3
    # A reference without features is refused before any image is generated.
    mu_sigma_only = statistics.StreamingStats(generated.dim, max_kid_features=0)
    mu_sigma_only.update(generated.features)
    calls = len(generator.seen_labels)
    with pytest.raises(ValueError, match="k=3 need more than 3 feature vectors.* hold 0"):
        runners.evaluate(generator, extractor, mu_sigma_only, precision_recall_k=3, **settings)
    assert len(generator.seen_labels) == calls
