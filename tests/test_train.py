"""Tests for tf_biggan.train: the train step's numbers (replicas, accumulation, EMA, losses,
non-finite guard), the end-to-end loop with checkpoints and resume, and gin errors.

The weight-comparison tests use plain SGD, whose update is linear in the gradient: with Adam's
first step (β1 = 0) the update is about `lr * sign(g)`, which would hide a gradient off by a
constant factor (e.g. losses averaged per replica instead of over the global batch).
"""

import functools
import glob
import json
import logging
import os
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import gin_config, imaging, model_files, networks, optimizers, train
from tf_biggan import state as state_lib
from tf_biggan import step as step_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "gin_configs", "quickstart.gin")
RES = 32
CLASSES = 3
DIM_Z = 32
BATCH = 8
LR = 0.02


def _make_state(strategy, generator_cls=networks.Generator, num_classes=CLASSES, optimizer="sgd"):
    def make_optimizer():
        if optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=LR)
        return optimizers.make_optimizer(learning_rate=1e-3)

    with strategy.scope():
        return tiny_models.train_state(make_optimizer, num_classes, DIM_Z, generator_cls)


def _copy_state(source, target):
    for name in ("generator", "discriminator", "ema_generator"):
        state_lib.copy_variables(getattr(source, name).variables, getattr(target, name).variables)


def _values(model, trainable_only=False):
    variables = model.trainable_variables if trainable_only else model.variables
    return {v.path.split("/", 1)[1]: np.array(v.numpy()) for v in variables}


def _batch(n, seed=0, num_classes=CLASSES):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, size=(n, RES, RES, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


def _assert_updates_close(before, after_a, after_b, rtol, atol_fraction):
    """The updates `after - before` agree.

    atol is a fraction of the model's largest update: some updates are pure rounding noise
    (e.g. the bias of a conv followed by batch norm, whose exact gradient is zero).
    """
    deltas = {
        name: (after_a[name] - start, after_b[name] - start) for name, start in before.items()
    }
    scale = max(float(np.max(np.abs(b))) for _, b in deltas.values() if b.size)
    assert scale > 0
    moved = 0
    for name, (delta_a, delta_b) in deltas.items():
        np.testing.assert_allclose(
            delta_a, delta_b, rtol=rtol, atol=atol_fraction * scale, err_msg=name
        )
        moved += bool(np.any(delta_b != 0))
    return moved


# --------------------------------------------------------------------------- replicas


@pytest.fixture
def mirrored(mirrored_strategy):
    return mirrored_strategy


# tf_biggan/train.py, ema_update in make_train_step, passes the Keras variables of the EMA
# generator to `strategy.extended.update`, which under MirroredStrategy needs the underlying
# distributed tf.Variable (`target.value`); the step raises AssertionError there.
# d_steps = 2 covers one D update (the first) and the sequencing of two; a separate d_steps = 1
# case would double the module's slowest test for no new path.
@pytest.mark.slow
@pytest.mark.parametrize("d_steps", [2])
def test_mirrored_step_equals_single_device_step(mirrored, d_steps):
    default = tf.distribute.get_strategy()
    state_m = _make_state(mirrored)
    state_d = _make_state(default)
    _copy_state(state_m, state_d)
    config = step_lib.StepConfig(
        batch_size=BATCH, d_steps=d_steps, ema_decay=0.5, ema_start_step=0, seed=3
    )
    before = {
        "G": _values(state_d.generator, True),
        "D": _values(state_d.discriminator, True),
        "EMA": _values(state_d.ema_generator, True),
    }
    images, labels = _batch(d_steps * BATCH)
    metrics_m = step_lib.make_train_step(state_m, mirrored, config)(images, labels)
    metrics_d = step_lib.make_train_step(state_d, default, config)(images, labels)

    for key in ("loss/d", "loss/g", "d/real", "d/fake"):
        np.testing.assert_allclose(float(metrics_m[key]), float(metrics_d[key]), rtol=1e-4)
    # Both replicas hold the same weights after the step.
    for model in (state_m.generator, state_m.discriminator, state_m.ema_generator):
        for v in model.trainable_variables:
            first, second = mirrored.experimental_local_results(v.value)
            np.testing.assert_array_equal(first.numpy(), second.numpy(), err_msg=v.path)
    # The two devices' BN statistics are summed in float32 in a different order than the
    # one-device reduction, so updates agree to float32 rounding, not bit for bit.
    for key, model_m, model_d in (
        ("G", state_m.generator, state_d.generator),
        ("D", state_m.discriminator, state_d.discriminator),
        ("EMA", state_m.ema_generator, state_d.ema_generator),
    ):
        moved = _assert_updates_close(
            before[key], _values(model_m, True), _values(model_d, True), 1e-3, 1e-3
        )
        assert moved >= len(before[key]) // 2, f"{key}: too few variables changed"
    assert int(state_m.step.numpy()) == int(state_d.step.numpy()) == 1


# --------------------------------------------------------------------------- accumulation


class _ConstantFakeGenerator(networks.Generator):
    """A generator whose fakes do not depend on z or on the batch.

    It runs G at z = 0 in inference mode (moving BN statistics), so every fake of a class is
    the same image whatever the micro-batch split, and the D update of an accumulated step can
    be compared with the D update of one big batch. With one class the random fake labels
    are all 0, so the fakes of every draw are identical.
    """

    def call(self, z, y, training=None):
        del training
        return super().call(tf.zeros_like(z), y, training=False)


@pytest.mark.slow
def test_accumulated_discriminator_update_equals_one_big_batch():
    default = tf.distribute.get_strategy()
    state_1 = _make_state(default, _ConstantFakeGenerator, num_classes=1)
    state_2 = _make_state(default, _ConstantFakeGenerator, num_classes=1)
    _copy_state(state_1, state_2)
    before = _values(state_1.discriminator, True)
    images, labels = _batch(BATCH, num_classes=1)
    # Spread the real logits over both sides of the hinge so each example matters.
    images = images * tf.linspace(0.2, 3.0, BATCH)[:, None, None, None]

    def step(state, k):
        config = step_lib.StepConfig(batch_size=BATCH, accumulation_steps=k, seed=1)
        return step_lib.make_train_step(state, default, config)(images, labels)

    metrics_1 = step(state_1, 1)
    metrics_2 = step(state_2, 2)
    np.testing.assert_allclose(float(metrics_2["loss/d"]), float(metrics_1["loss/d"]), rtol=1e-5)
    moved = _assert_updates_close(
        before,
        _values(state_2.discriminator, True),
        _values(state_1.discriminator, True),
        1e-4,
        1e-4,
    )
    assert moved >= len(before) - 1
    # Before ema_start_step (20,000 by default) the EMA generator is a copy of G.
    for state in (state_1, state_2):
        ema = _values(state.ema_generator)
        for name, value in _values(state.generator).items():
            np.testing.assert_array_equal(ema[name], value, err_msg=name)


# --------------------------------------------------------------------------- one run, many checks

EMA_DECAY = 0.5
RUN_SEED = 7
RUN_STEPS = 3


@pytest.fixture(scope="module")
def run():
    """Three steps on one device with the EMA from step 0, then a step with a NaN image.

    Records G's variables after every step, the metrics, and the hinge loss of step 0
    recomputed outside the step from a copy of the initial networks.
    """
    strategy = tf.distribute.get_strategy()
    state = _make_state(strategy)
    reference = _make_state(strategy)
    _copy_state(state, reference)
    config = step_lib.StepConfig(
        batch_size=BATCH, ema_decay=EMA_DECAY, ema_start_step=0, seed=RUN_SEED
    )
    train_step = step_lib.make_train_step(state, strategy, config)
    batches = [_batch(BATCH, seed=10 + i) for i in range(RUN_STEPS + 1)]

    # Step 0 by hand: z and fake labels as the step draws them for (seed, step 0, update 0),
    # G in training mode, D on real and fake.
    z, fake_labels = step_lib.draw_latents(RUN_SEED, 0, 0, BATCH, DIM_Z, CLASSES)
    fake = reference.generator(z, tf.one_hot(fake_labels, CLASSES), training=True)
    real, real_labels = batches[0]
    real_logits = reference.discriminator(real, real_labels, training=True).numpy()
    fake_logits = reference.discriminator(fake, fake_labels, training=True).numpy()
    expected = {
        "loss/d": float(np.mean(np.maximum(0, 1 - real_logits) + np.maximum(0, 1 + fake_logits))),
        "d/real": float(np.mean(real_logits)),
        "d/fake": float(np.mean(fake_logits)),
    }

    history = [_values(state.generator)]
    metrics = []
    for images, labels in batches[:RUN_STEPS]:
        metrics.append({k: float(v) for k, v in train_step(images, labels).items()})
        history.append(_values(state.generator))
    ema_after_steps = _values(state.ema_generator)
    spectral = {
        v.path.split("/", 1)[1]
        for v in state.generator.variables
        if id(v) in state_lib.spectral_state_variables(state.generator)
    }

    images, labels = batches[RUN_STEPS]
    images = tf.tensor_scatter_nd_update(images, [[0, 5, 5, 1]], [np.nan])
    guard = {
        "d_before": _values(state.discriminator, True),
        "g_before": _values(state.generator, True),
        "skipped_before": int(state.skipped_updates),
        "g_iterations_before": int(state.g_optimizer.iterations.numpy()),
        "d_iterations_before": int(state.d_optimizer.iterations.numpy()),
        "metrics": {k: float(v) for k, v in train_step(images, labels).items()},
    }
    guard["d_after"] = _values(state.discriminator, True)
    guard["skipped_after"] = int(state.skipped_updates)
    guard["d_iterations_after"] = int(state.d_optimizer.iterations.numpy())
    guard["g_iterations_after"] = int(state.g_optimizer.iterations.numpy())
    guard["all_finite_after"] = all(
        np.all(np.isfinite(v.numpy()))
        for model in (state.generator, state.discriminator, state.ema_generator)
        for v in model.variables
    )
    # The guard does not stick: the next finite batch updates D again.
    guard["metrics_next"] = {k: float(v) for k, v in train_step(*batches[0]).items()}
    return {
        "state": state,
        "expected": expected,
        "history": history,
        "metrics": metrics,
        "ema": ema_after_steps,
        "spectral": spectral,
        "guard": guard,
    }


@pytest.mark.slow
def test_step_returns_finite_metrics_and_counts_steps(run):
    for metrics in run["metrics"]:
        assert set(metrics) >= {"loss/d", "loss/g", "d/real", "d/fake", "nonfinite"}
        assert all(np.isfinite(v) for v in metrics.values())
        assert metrics["nonfinite"] == 0.0
    assert int(run["state"].step) == RUN_STEPS + 2  # and the NaN step, and one after it
    # The weights moved at every step.
    for before, after in zip(run["history"], run["history"][1:], strict=False):
        assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_discriminator_loss_is_the_hinge_loss_of_the_step(run):
    # At initialisation every SN kernel is orthogonal, so sigma is 1 whatever the power
    # iteration's u, and the copy reproduces the step's forward pass.
    for key, value in run["expected"].items():
        np.testing.assert_allclose(run["metrics"][0][key], value, rtol=1e-5, atol=1e-6)


def test_ema_matches_its_closed_form(run):
    history = run["history"]
    ema = dict(history[0])
    for weights in history[1:]:
        ema = {k: EMA_DECAY * ema[k] + (1 - EMA_DECAY) * weights[k] for k in ema}
    final = history[-1]
    for name, value in run["ema"].items():
        if name in run["spectral"]:
            # The power-iteration state is copied from G, not averaged.
            np.testing.assert_array_equal(value, final[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, ema[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # The average is not the last weights (the test would see a plain copy).
    kernel = next(k for k in final if k.endswith("kernel") and k not in run["spectral"])
    assert np.max(np.abs(run["ema"][kernel] - final[kernel])) > 1e-4


def test_non_finite_batch_skips_the_discriminator_update_only(run):
    guard, state = run["guard"], run["state"]
    # D's gradient is not finite, so D's update is skipped; G's update does not read real
    # images and goes ahead.
    assert guard["metrics"]["nonfinite"] == 1.0
    assert guard["skipped_after"] == guard["skipped_before"] + 1 == 1
    for name, value in guard["d_after"].items():
        np.testing.assert_array_equal(value, guard["d_before"][name], err_msg=name)
    assert guard["d_iterations_after"] == guard["d_iterations_before"]
    assert guard["g_iterations_after"] == guard["g_iterations_before"] + 1
    assert guard["all_finite_after"]
    # The next finite batch is applied to D, and the count stays.
    assert guard["metrics_next"]["nonfinite"] == 0.0
    assert int(state.skipped_updates) == 1
    assert int(state.d_optimizer.iterations.numpy()) == guard["d_iterations_after"] + 1


@pytest.mark.slow
def test_a_step_whose_generator_overflows_keeps_inference_finite():
    """G's forward pass is not finite for one step (an infinite class embedding).

    Both updates are skipped, and the BN moving statistics, which that forward pass had
    already updated, stay finite in G and in its EMA: G still draws finite images.
    """
    strategy = tf.distribute.get_strategy()
    state = _make_state(strategy, optimizer="adam")
    config = step_lib.StepConfig(batch_size=BATCH, ema_start_step=100, seed=RUN_SEED)
    train_step = step_lib.make_train_step(state, strategy, config)
    images, labels = _batch(BATCH, seed=21)
    train_step(images, labels)
    embedding = state.generator.shared_embedding.kernel
    kept = embedding.numpy()
    embedding.assign(np.full_like(kept, np.inf))
    overflowed = {k: float(v) for k, v in train_step(images, labels).items()}
    embedding.assign(kept)
    assert overflowed["nonfinite"] == 2.0 and int(state.skipped_updates) == 2
    metrics = {k: float(v) for k, v in train_step(images, labels).items()}
    assert metrics["nonfinite"] == 0.0 and int(state.skipped_updates) == 2
    # (The EMA's own embedding averaged the injected infinity in, so only its statistics
    # are checked.)
    statistics = [
        v
        for model in (state.generator, state.ema_generator)
        for v in model.variables
        if "moving_" in v.path
    ]
    assert len(statistics) == 2 * 2 * 7
    for v in statistics + state.generator.variables:
        assert np.all(np.isfinite(v.numpy())), v.path
    z, fake_labels = step_lib.draw_latents(RUN_SEED, 9, 0, BATCH, DIM_Z, CLASSES)
    drawn = state.generator(z, tf.one_hot(fake_labels, CLASSES), training=False).numpy()
    assert np.all(np.isfinite(drawn)) and np.abs(drawn).max() > 0


# --------------------------------------------------------------------------- the loop


def _parse(bindings):
    gin.clear_config()
    gin_config.parse_gin([QUICKSTART], bindings, finalize=False)


TINY = [
    "Generator.ch = 8",
    "Generator.dim_z = 32",
    "Generator.shared_dim = 8",
    "Discriminator.ch = 8",
    "NUM_CLASSES = 3",
    "synthetic_source.num_examples = 48",
    "train.batch_size = 8",
    "train.checkpoint_every = 2",
    "train.sample_every = 2",
    "train.summary_every = 1",
    "train.samples_per_class = 2",
    "train.export_at_end = False",
    "train.ema_start_step = 0",
]


def _checkpoint_numbers(model_dir):
    state = tf.train.get_checkpoint_state(model_dir)
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


def _summary_values(model_dir):
    """Every summary value the run wrote, in order."""
    for path in glob.glob(os.path.join(model_dir, "summaries", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            yield from tf.compat.v1.Event.FromString(record.numpy()).summary.value


def _summary_tags(model_dir):
    return {value.tag for value in _summary_values(model_dir)}


@pytest.mark.slow
def test_train_writes_outputs_and_resumes(tmp_path, capsys, caplog):
    model_dir = str(tmp_path / "run")
    try:
        _parse(TINY + ["train.total_steps = 4"])
        result = train.train(model_dir)
        assert result["step"] == 4
        # TensorBoard also shows what the run is: its settings, as text and as hparams, and
        # the real examples.
        tags = _summary_tags(model_dir)
        assert {"config/operative", "data/real_examples", "_hparams_/session_start_info"} <= tags
        assert _checkpoint_numbers(model_dir) == [2, 4]
        assert glob.glob(os.path.join(model_dir, "summaries", "events.out.tfevents.*"))
        pngs = sorted(os.listdir(os.path.join(model_dir, "samples")))
        assert pngs == ["step_00000002.png", "step_00000004.png"]
        grid = tf.io.decode_png(tf.io.read_file(os.path.join(model_dir, "samples", pngs[-1])))
        assert grid.shape[2] == 3 and grid.shape[0] >= 3 * RES  # one row per class
        config = model_files.read_model_config(model_dir)
        assert config["generator"]["num_classes"] == 3 and config["generator"]["ch"] == 8
        # config.gin holds the bindings; operative_config.gin every setting the run used,
        # defaults included, by the dataclass that declares it.
        with open(os.path.join(model_dir, "config.gin")) as f:
            assert "train.total_steps = 4" in f.read()
        with open(os.path.join(model_dir, "operative_config.gin")) as f:
            operative = f.read()
        for line in (
            "train.total_steps = 4",
            "StepConfig.r1_gamma = 0.0",
            "RecoveryConfig.max_restores = 3",
            "LoopConfig.max_sample_classes = 10",
            "Generator.ch = 8",
            "synthetic_source.num_examples = 48",
        ):
            assert line in operative, line

        # Not a terminal (pytest captures stdout): the progress is a line per summary step.
        _parse(
            TINY
            + ["train.total_steps = 6", "train.summary_every = 2", "train.export_at_end = True"]
        )
        capsys.readouterr()
        result = train.train(model_dir)
        assert result["step"] == 6 and result["start_step"] == 4
        progress = [line for line in capsys.readouterr().out.splitlines() if "/6" in line]
        assert any("6/6" in line for line in progress)
        assert not any("5/6" in line for line in progress), progress
        assert _checkpoint_numbers(model_dir) == [2, 4, 6]
        assert sorted(os.listdir(os.path.join(model_dir, "samples")))[-1] == "step_00000006.png"
        _, restored, _ = model_files.restore_ema_generator(model_dir)
        assert restored["step"] == 6

        assert sorted(os.listdir(os.path.join(model_dir, "export"))) == ["1"]
        # The same command after the end says so and does not export again.
        _parse(TINY + ["train.total_steps = 6", "train.export_at_end = True"])
        with caplog.at_level(logging.INFO, logger="absl"):
            result = train.train(model_dir)
        assert result["step"] == result["start_step"] == 6
        assert "is complete: step 6 of train.total_steps = 6" in caplog.text
        assert sorted(os.listdir(os.path.join(model_dir, "export"))) == ["1"]
        assert _checkpoint_numbers(model_dir) == [2, 4, 6]

        # Resuming with an Adam that keeps a first moment cannot use these optimizer slots.
        _parse(TINY + ["train.total_steps = 8", "generator/make_optimizer.beta_1 = 0.5"])
        with pytest.raises(state_lib.IncompatibleCheckpointError, match="ckpt-6: g_optimizer"):
            train.train(model_dir)
        assert _checkpoint_numbers(model_dir) == [2, 4, 6]
    finally:
        gin.clear_config()


def _write_image_folder(root):
    """3 classes x 3 solid-colour PNGs, one of them RGBA, plus one truncated PNG."""
    colours = {"apple": (200, 20, 20), "bird": (20, 200, 20), "cat": (20, 20, 200)}
    for name, rgb in colours.items():
        os.makedirs(root / name)
        for k in range(3):
            channels = 4 if (name, k) == ("bird", 0) else 3
            pixel = (*rgb, 255)[:channels]
            image = np.tile(np.array(pixel, np.uint8), (40, 48, 1))
            (root / name / f"{k}.png").write_bytes(tf.io.encode_png(image).numpy())
    whole = tf.io.encode_png(np.zeros((40, 48, 3), np.uint8)).numpy()
    (root / "cat" / "broken.png").write_bytes(whole[: len(whole) // 2])


def _scalar_values(model_dir, tag):
    return [
        float(tf.make_ndarray(value.tensor))
        for value in _summary_values(model_dir)
        if value.tag == tag
    ]


@pytest.mark.slow
def test_train_on_an_image_folder_counts_the_corrupt_file_once(tmp_path):
    root = tmp_path / "images"
    _write_image_folder(root)
    model_dir = str(tmp_path / "run")
    try:
        _parse(
            TINY
            + [
                "train.total_steps = 2",
                "train.batch_size = 4",
                # The folder's 9 good images hold one step's batch only with one D update.
                "train.d_steps = 1",
                "train.max_sample_classes = 2",
                "make_dataset.source = @image_folder_source",
                f"image_folder_source.root = '{root}'",
            ]
        )
        result = train.train(model_dir)
    finally:
        gin.clear_config()
    assert result["step"] == 2
    with open(os.path.join(model_dir, "classes.json")) as f:
        assert json.load(f) == {"apple": 0, "bird": 1, "cat": 2}
    skipped = _scalar_values(model_dir, "data/skipped_images")
    assert skipped and skipped[-1] == 1.0
    # The real examples in the sample grid's layout: 2 classes x 2 images of 32 px, 2 px apart.
    grid = tf.io.decode_png(tf.io.read_file(os.path.join(model_dir, "real_examples.png")))
    assert grid.shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)


@pytest.mark.slow
def test_periodic_evaluation_logs_fid_and_keeps_the_best_checkpoint(tmp_path):
    from tf_biggan import data, metrics

    inputs = keras.Input([16, 16, 3])
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    extractor_path = str(tmp_path / "extractor.keras")
    keras.Model(inputs, keras.layers.Dense(3, name="logits")(x)).save(extractor_path)
    extractor = metrics.make_extractor("keras_model", extractor_path, "features")
    real = data.make_dataset(
        batch_size=8,
        resolution=RES,
        num_classes=3,
        source=functools.partial(data.synthetic_source, num_examples=48),
    )
    reference = metrics.compute_dataset_stats(real.dataset, extractor, 32, verbose=0)
    reference_path = str(tmp_path / "reference.npz")
    reference.save(reference_path)
    model_dir = str(tmp_path / "run")
    try:
        _parse(
            TINY
            + [
                "train.total_steps = 4",
                "train.eval_every = 2",
                f"train.eval_reference_stats = '{reference_path}'",
                "train.eval_num_samples = 16",
                "train.eval_batch_size = 8",
                "train.eval_extractor = 'keras_model'",
                f"train.eval_extractor_path = '{extractor_path}'",
                "train.eval_feature_layer = 'features'",
                "train.eval_logits_layer = 'logits'",
            ]
        )
        train.train(model_dir)
    finally:
        gin.clear_config()
    fids = _scalar_values(model_dir, "eval/fid")
    assert len(fids) == 2 and all(np.isfinite(fids))
    # The extractor classifies the 3 classes: the class accuracy of the 16 samples (6, 5 and 5
    # of classes 0, 1, 2) is logged with each class's, and is their weighted mean.
    accuracy = _scalar_values(model_dir, "eval/class_accuracy")
    per_class = [_scalar_values(model_dir, f"eval/class_accuracy/{k}") for k in range(3)]
    assert len(accuracy) == 2 and all(len(values) == 2 for values in per_class)
    for i in range(2):
        weighted = (6 * per_class[0][i] + 5 * per_class[1][i] + 5 * per_class[2][i]) / 16
        assert accuracy[i] == pytest.approx(weighted, abs=1e-6)
    with open(os.path.join(model_dir, "best", "best_fid.json")) as f:
        best = json.load(f)
    assert best["fid"] == pytest.approx(min(fids), rel=1e-5)
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "best")).endswith(f"-{best['step']}")
    # The record was renamed into place: no temporary file is left beside it.
    assert not [name for name in os.listdir(os.path.join(model_dir, "best")) if "tmp" in name]


@pytest.mark.slow
def test_mixed_bfloat16_step_runs_and_keeps_float32_state():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        strategy = tf.distribute.get_strategy()
        state = _make_state(strategy)
        step = step_lib.make_train_step(state, strategy, step_lib.StepConfig(batch_size=BATCH))
        images, labels = _batch(BATCH)
        metrics = {k: float(v) for k, v in step(images, labels).items()}
        images = state.ema_generator(*_latents(), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert metrics["nonfinite"] == 0.0 and np.isfinite(metrics["loss/d"])
    assert images.dtype == tf.float32
    for model in (state.generator, state.discriminator):
        assert all(v.dtype == "float32" for v in model.variables)
    layer = state.generator.blocks[0].bn1.batch_norm
    assert not np.allclose(layer.moving_mean.numpy(), 0.0)


def _latents():
    return tf.random.normal([2, DIM_Z]), tf.one_hot([0, 1], CLASSES)


@pytest.mark.slow
def test_console_scripts_train_by_config_name_and_sample(tmp_path):
    """`tf-biggan-train` and `tf-biggan-sample`, installed with the package, run from a folder
    outside the checkout with a shipped config given by name, and list their flags."""
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = [
        os.path.join(bin_dir, "tf-biggan-train"),
        "--gin_config=tiny_test",
        "--model_dir=q",
        "--gin_bindings=train.total_steps = 2",
    ]
    result = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(tmp_path / "q")).endswith("ckpt-2")
    draw = [os.path.join(bin_dir, "tf-biggan-sample"), "--model_dir=q", "--output=grid.png"]
    result = subprocess.run(draw, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    # tiny_test.gin: 3 classes (all drawn), 8 samples each, 32 px with 2 px padding.
    grid = imaging.read_png(str(tmp_path / "grid.png"))
    assert grid.shape == (3 * 34 + 2, 8 * 34 + 2, 3)
    # --helpshort lists the program's own flags under the script's name.
    usage = [os.path.join(bin_dir, "tf-biggan-sample"), "--helpshort"]
    result = subprocess.run(usage, env=env, capture_output=True, text=True)
    assert "--model_dir" in result.stdout and "--truncation" in result.stdout, result.stdout
