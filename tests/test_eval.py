"""Tests for the evaluation programs: `python -m tf_biggan.eval`, `tf_biggan.reference_stats` and
`tf_biggan.truncation_curve` (with their tools/ entry points and installed commands)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_metrics_extractors import tiny_classifier
from test_metrics_runners import assert_record_without_class_accuracy

from tf_biggan import metrics, reference_stats, truncation_curve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FD_BFLOAT16_MARGIN = 0.05
"""Relative margin between the Fréchet distances `eval` reports for one generator at float32 and
at `--precision=bfloat16` (README, "Export"). Measured on the tiny model of the test below (30
images, the tiny extractor): 0.3482 and 0.3458, 0.7% apart."""


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
    tiny_classifier().save(extractor_path)
    extractor = metrics.make_extractor(
        "keras_model", path=extractor_path, feature_layer="features", logits_layer="logits"
    )
    ref, _ = metrics.compute_generator_stats(
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


def _cli_command(saved_model, extractor_path, ref_path, *extra):
    return [
        sys.executable, "-m", "tf_biggan.eval", f"--saved_model={saved_model}",
        f"--reference_stats={ref_path}", "--num_samples=60", "--batch_size=30",
        "--extractor=keras_model", f"--extractor_path={extractor_path}",
        "--feature_layer=features", "--logits_layer=logits", "--seed=3", "--kid_subsets=5",
        "--kid_subset_size=50", *extra,
    ]  # fmt: skip


def _library_record(saved_model, extractor_path, ref_path, truncation):
    return metrics.evaluate(
        metrics.open_generator(saved_model=saved_model).generate,
        metrics.make_extractor(
            "keras_model", extractor_path, feature_layer="features", logits_layer="logits"
        ),
        ref_path, num_samples=60, batch_size=30, num_classes=3, dim_z=4, truncation=truncation,
        seed=3, kid_subsets=5, kid_subset_size=50, verbose=0,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_prints_one_json_line_without_truncation_and_states_its_pipeline(tmp_path):
    saved_model, extractor_path, ref_path = _cli_inputs(tmp_path, num_samples=60, batch_size=30)
    result = _run_for_one_json_line(_cli_command(saved_model, extractor_path, ref_path))
    assert_record_without_class_accuracy(result, cli=True)
    assert result["generator"] == {
        "source": saved_model,
        "checkpoint": None,
        "step": None,
        "precision": "float32",
    }
    assert result["precision"] is None and result["recall"] is None
    assert result["num_samples"] == 60
    assert result["truncation"] is None
    assert result["extractor"] == "keras_model:tiny/features"
    assert result["reference_stats"] == ref_path
    # The program prints what the library computes for the same generator and flags.
    untruncated = _library_record(saved_model, extractor_path, ref_path, None)
    for key in ("fid", "inception_score_mean", "inception_score_std", "kid_mean", "kid_std"):
        assert result[key] == pytest.approx(untruncated[key], rel=1e-5, abs=1e-9), key
    assert result["fid"] > 0 and result["kid_std"] > 0
    truncated = _library_record(saved_model, extractor_path, ref_path, 1.0)
    assert result["fid"] != pytest.approx(truncated["fid"], rel=1e-3)
    assert result["pipeline"] == {
        "extractor": {
            "name": "keras_model:tiny/features",
            "kind": "keras_model",
            "path": extractor_path,
            "input_size": [16, 16],
            "resize": "bilinear, no antialias",
        },
        "num_samples": 60,
        "truncation": None,
        "reference_stats": ref_path,
        "reference_count": 60,
        "reference_extractor": "keras_model:tiny/features",
        "reference_features": 60,
        "generated_images": "quantised to uint8",
        "precision_recall": None,
    }


@pytest.mark.slow
def test_cli_reads_reference_statistics_with_only_mu_and_sigma(tmp_path):
    saved_model, extractor_path, ref_path = _cli_inputs(tmp_path, num_samples=60, batch_size=30)
    rng = np.random.default_rng(6)
    mu = rng.standard_normal(4)
    root = rng.standard_normal([4, 4])
    sigma = root @ root.T / 4 + 0.1 * np.eye(4)
    ttur_path = str(tmp_path / "fid_stats_ttur.npz")
    np.savez(ttur_path, mu=mu, sigma=sigma)
    result = _run_for_one_json_line(
        _cli_command(saved_model, extractor_path, ttur_path, "--truncation=1.5")
    )
    generated, _ = metrics.compute_generator_stats(
        metrics.open_generator(saved_model=saved_model).generate,
        metrics.make_extractor(
            "keras_model", extractor_path, feature_layer="features", logits_layer="logits"
        ),
        num_samples=60, batch_size=30, num_classes=3, dim_z=4, truncation=1.5, seed=3, verbose=0,
    )  # fmt: skip
    # FID = |mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2)).
    s_g = generated.cov
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s_g @ sigma).real, 0, None)))
    formula = np.sum((generated.mean - mu) ** 2) + np.trace(s_g) + np.trace(sigma) - 2 * cross
    assert result["fid"] == pytest.approx(formula, rel=1e-5)
    assert result["kid_mean"] is None and result["kid_std"] is None
    assert result["inception_score_mean"] is not None
    assert result["pipeline"]["reference_count"] is None
    assert result["pipeline"]["reference_features"] == 0
    assert result["pipeline"]["reference_extractor"] is None
    assert result["pipeline"]["truncation"] == 1.5


# ---- reference_stats and truncation_curve ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, own_flag",
    [
        ("tf-biggan-reference-stats", "--max_kid_features"),
        ("tf-biggan-standing-stats", "--num_entries"),
        ("tf-biggan-truncation-curve", "--truncations"),
    ],
)
def test_installed_commands_list_their_flags(script, own_flag):
    """The programs a pip-installed user needs beside eval are console scripts too."""
    command = [os.path.join(os.path.dirname(sys.executable), script), "--helpshort"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    # absl prints the program's own flags under --helpshort (and exits 1).
    assert own_flag in run.stdout, run.stderr[-2000:]


def _rows():
    record = dict(inception_score_std=0.25, kid_mean=0.125, kid_std=None, num_samples=40)
    return [
        dict(record, truncation=None, fid=30.5, inception_score_mean=10.0),
        dict(record, truncation=1.0, fid=12.0, inception_score_mean=40.0),
        dict(record, truncation=0.04, fid=25.0, inception_score_mean=100.0),
    ]


def test_truncation_table_as_csv_and_matplotlib_plot(tmp_path):
    curve = truncation_curve
    csv_path, png = str(tmp_path / "t" / "curve.csv"), str(tmp_path / "t" / "curve.png")
    curve.write_csv(_rows(), csv_path)
    with open(csv_path) as f:
        assert f.read().splitlines() == [
            "truncation,fid,inception_score_mean,inception_score_std,kid_mean,kid_std,num_samples",
            ",30.5,10.0,0.25,0.125,,40",
            "1.0,12.0,40.0,0.25,0.125,,40",
            "0.04,25.0,100.0,0.25,0.125,,40",
        ]
    curve.plot_rows(_rows(), png)
    image = tf.io.decode_png(tf.io.read_file(png), channels=3).numpy()
    assert image.shape == (480, 640, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # Axes, text, line, markers.
    # Without IS the x axis is the threshold, which must then be a number.
    no_is = [dict(r, inception_score_mean=None) for r in _rows()]
    with pytest.raises(ValueError, match="numeric truncation"):
        curve.plot_rows(no_is, png)
    curve.plot_rows(no_is[1:], png)


def test_truncation_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    curve = truncation_curve
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"tf_biggan\[plot\]"):
        curve.plot_rows(_rows(), str(tmp_path / "curve.png"))


@pytest.mark.slow
def test_truncation_curve_cli(tmp_path):
    saved_model, extractor_path, ref_path = _cli_inputs(tmp_path, num_samples=40, batch_size=40)
    png, csv_path = str(tmp_path / "plot" / "curve.png"), str(tmp_path / "curve.csv")
    cmd = [
        sys.executable, os.path.join(REPO, "tools", "truncation_curve.py"),
        f"--saved_model={saved_model}", f"--reference_stats={ref_path}",
        "--truncations=1.0,0.1", "--num_samples=40", "--batch_size=20",
        "--extractor=keras_model", f"--extractor_path={extractor_path}",
        "--feature_layer=features", "--logits_layer=logits", f"--output_png={png}",
        f"--output_csv={csv_path}",
    ]  # fmt: skip
    rows = _run_for_one_json_line(cmd)
    assert [r["truncation"] for r in rows] == [1.0, 0.1]
    # Truncating to |z| <= 0.1 collapses variety: FID against the untruncated reference grows.
    assert rows[1]["fid"] > rows[0]["fid"]
    with open(csv_path) as f:
        header, *lines = f.read().splitlines()
    columns = header.split(",")
    for line, row in zip(lines, rows, strict=True):
        values = dict(zip(columns, line.split(","), strict=True))
        assert float(values["truncation"]) == row["truncation"]
        assert float(values["fid"]) == row["fid"]
        assert float(values["inception_score_mean"]) == row["inception_score_mean"]
        assert int(values["num_samples"]) == 40
    image = tf.io.decode_png(tf.io.read_file(png), channels=3).numpy()
    assert image.shape == (480, 640, 3)


def test_reference_stats_tool_uses_gin_dataset_at_the_generator_sizes(tmp_path):
    tool = reference_stats
    extractor = metrics.make_extractor(
        "keras_model", path=tiny_classifier(), feature_layer="features"
    )
    # Resolution and class count come from the generator's configuration.
    bindings = [
        "Generator.resolution = 32",
        "Generator.num_classes = 3",
        "make_dataset.source = @synthetic_source",
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
            batch_size=16, resolution=32, num_classes=3, source=data.synthetic_source,
            shuffle_buffer=0,
        ).dataset.take(3):  # fmt: skip
            images.append(batch.numpy())
    finally:
        gin.clear_config()
    expected = extractor(np.concatenate(images)[:40])["pool"].astype(np.float64)
    assert stats.count == 40 and stats.features.shape == (40, 4)
    np.testing.assert_allclose(stats.mean, expected.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.cov, np.cov(expected, rowvar=False), rtol=1e-4, atol=1e-7)


# ---- --checkpoint=N, --best and --precision_recall -------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A model_dir with EMA generators saved at steps 5 and 7 (step 7 kept as the best), a
    saved tiny extractor, and reference statistics of the step-5 generator's own sample at the
    seed the CLI tests use; returns their paths `(model_dir, extractor, reference)`."""
    from test_sample import CLASS_NAMES, _generator

    from tf_biggan import model_files

    root = tmp_path_factory.mktemp("checkpoints")
    model_dir = str(root / "run")
    first = _generator(1)
    model_files.write_model_config(model_dir, first, CLASS_NAMES)
    for step, generator in ((5, first), (7, _generator(2))):
        checkpoint = tf.train.Checkpoint(
            ema_generator=generator, step=tf.Variable(step, dtype=tf.int64)
        )
        tf.train.CheckpointManager(checkpoint, model_dir, 3).save(checkpoint_number=step)
    best_dir = os.path.join(model_dir, model_files.BEST_DIR)
    tf.train.CheckpointManager(checkpoint, best_dir, 1).save(checkpoint_number=7)
    extractor_path = str(root / "extractor.keras")
    tiny_classifier().save(extractor_path)
    extractor = metrics.make_extractor("keras_model", extractor_path, feature_layer="features")
    reference, _ = metrics.compute_generator_stats(
        metrics.open_generator(model_dir, step=5).generate, extractor, num_samples=30,
        batch_size=30, num_classes=3, dim_z=32, seed=3, verbose=0,
    )  # fmt: skip
    ref_path = str(root / "ref.npz")
    reference.save(ref_path)
    return model_dir, extractor_path, ref_path


@pytest.mark.slow
def test_find_checkpoint_by_step_and_best_with_clear_errors(checkpoints, tmp_path):
    from tf_biggan import model_files

    model_dir = checkpoints[0]
    assert model_files.find_checkpoint(model_dir) == os.path.join(model_dir, "ckpt-7")
    assert model_files.find_checkpoint(model_dir, step=5) == os.path.join(model_dir, "ckpt-5")
    assert model_files.find_checkpoint(model_dir, best=True) == os.path.join(
        model_dir, "best", "ckpt-7"
    )
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 6 .* steps: 5, 7"):
        model_files.find_checkpoint(model_dir, step=6)
    with pytest.raises(FileNotFoundError, match="no best checkpoint .*eval_every"):
        model_files.find_checkpoint(str(tmp_path), best=True)
    with pytest.raises(ValueError, match="not of an export"):
        metrics.open_generator(saved_model=model_dir, best=True)


def _model_dir_command(model_dir, extractor_path, ref_path, *extra):
    return [
        sys.executable, "-m", "tf_biggan.eval", f"--model_dir={model_dir}",
        f"--reference_stats={ref_path}", "--num_samples=30", "--batch_size=30",
        "--extractor=keras_model", f"--extractor_path={extractor_path}",
        "--feature_layer=features", "--seed=3", "--kid_subsets=2", "--kid_subset_size=20",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_evaluates_the_chosen_checkpoint_or_the_best_with_precision_recall(checkpoints):
    model_dir, extractor_path, ref_path = checkpoints
    result = _run_for_one_json_line(
        _model_dir_command(
            model_dir, extractor_path, ref_path, "--checkpoint=5", "--precision_recall",
            "--pr_k=3",
        )
    )  # fmt: skip
    assert result["generator"] == {
        "source": model_dir,
        "checkpoint": os.path.join(model_dir, "ckpt-5"),
        "step": 5,
        "precision": "float32",
    }
    # The reference is this checkpoint's own sample at the same seed: the features coincide,
    # so FID is 0 and every point lies in the other set's k-NN manifold (precision = recall
    # = 1 exactly).
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["pipeline"]["precision_recall"] == {
        "k": 3,
        "reference_features": 30,
        "generated_features": 30,
    }
    # The best checkpoint (step 7) holds other weights.
    best = _run_for_one_json_line(_model_dir_command(model_dir, extractor_path, ref_path, "--best"))
    assert best["generator"]["checkpoint"] == os.path.join(model_dir, "best", "ckpt-7")
    assert best["generator"]["step"] == 7
    assert best["fid"] > 1e-3
    assert best["precision"] is None and best["pipeline"]["precision_recall"] is None
    # The same evaluation computed in bfloat16 gives the same Fréchet distance up to the margin.
    half = _run_for_one_json_line(
        _model_dir_command(model_dir, extractor_path, ref_path, "--best", "--precision=bfloat16")
    )
    assert half["generator"]["precision"] == "bfloat16"
    assert half["fid"] == pytest.approx(best["fid"], rel=FD_BFLOAT16_MARGIN)


def test_the_checkpoint_flags_are_checked_before_anything_loads():
    """`--checkpoint` / `--best` select a checkpoint of `--model_dir` only, one at a time."""
    import types

    from absl import flags

    from tf_biggan import eval as eval_program

    def chosen(model_dir=None, checkpoint=None, best=False):
        f = types.SimpleNamespace(model_dir=model_dir, checkpoint=checkpoint, best=best)
        return eval_program._selected_checkpoint(f)

    assert chosen("runs/x") == {}
    assert chosen("runs/x", checkpoint=500) == {"step": 500}
    assert chosen("runs/x", best=True) == {"best": True}
    with pytest.raises(flags.ValidationError, match="--model_dir"):
        chosen(None, checkpoint=500)
    with pytest.raises(flags.ValidationError, match="not both"):
        chosen("runs/x", checkpoint=500, best=True)
