"""Tests for the tools/benchmark.py CLI: one JSON line whose figures agree with each other and
with `tf_biggan.flops`."""

import json
import os
import subprocess
import sys

import pytest

from tf_biggan import flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SMALL = ("--resolution=32", "--ch=4", "--batch_size=2", "--num_classes=3", "--attention=0")


def _benchmark(*flags, timeout=300, networks=SMALL) -> dict:
    """Runs tools/benchmark.py with `networks` (32 px, ch 4, batch 2, 3 classes, no
    attention), one timed iteration and `flags`; returns its one JSON line."""
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "benchmark.py"),
        *networks,
        "--iters=1",
        "--warmup=0",
        *flags,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


@pytest.mark.slow
def test_benchmark_cli_prints_one_json_line():
    report = _benchmark("--input_pipeline", "--export_precision=bfloat16")
    positive = (
        "sample_img_per_s",
        "train_img_per_s",
        "peak_rss_mb",
        "train_step_median_s",
        "sample_median_s",
        "train_gflop_per_img",
        "sample_gflop_per_img",
        "matmul_peak_gflops",
        "train_mfu",
        "sample_mfu",
        "input_img_per_s",
        "export_sample_img_per_s",
        "export_sample_median_s",
    )
    for key in positive:
        assert report[key] > 0, key
    g = flops.generator_forward_flops(resolution=32, ch=4, num_classes=3, attention=0)
    d = flops.discriminator_forward_flops(resolution=32, ch=4, num_classes=3, attention=0)
    assert report["sample_gflop_per_img"] == pytest.approx(g / 1e9)
    assert report["train_gflop_per_img"] == pytest.approx((4 * g + 9 * d) / 1e9)
    assert report["train_img_per_s"] == pytest.approx(2 / report["train_step_median_s"])
    assert report["train_mfu"] == pytest.approx(
        report["train_img_per_s"] * report["train_gflop_per_img"] / report["matmul_peak_gflops"]
    )
    assert (report["resolution"], report["ch"], report["batch_size"]) == (32, 4, 2)
    assert report["attention"] == [] and report["num_classes"] == 3
    assert report["export_precision"] == "bfloat16"
    assert report["export_sample_img_per_s"] == pytest.approx(2 / report["export_sample_median_s"])


@pytest.mark.slow
def test_benchmark_times_biggan_deep_with_model_deep():
    report = _benchmark("--model=deep", timeout=900)
    assert (report["model"], report["depth"], report["ch"]) == ("deep", 2, 4)
    assert report["train_img_per_s"] > 0 and report["sample_img_per_s"] > 0
    g = flops.deep_generator_forward_flops(resolution=32, ch=4, num_classes=3, attention=0)
    d = flops.deep_discriminator_forward_flops(resolution=32, ch=4, num_classes=3, attention=0)
    assert report["sample_gflop_per_img"] == pytest.approx(g / 1e9)
    assert report["train_gflop_per_img"] == pytest.approx((4 * g + 9 * d) / 1e9)


@pytest.mark.slow
def test_benchmark_loop_runs_the_training_loop_beside_the_bare_step():
    # The quickstart (the default of --loop) at ch 4 and batch 4; the figures are not
    # checked, only that the loop ran its steps and both rates are reported.
    bindings = (
        "Generator.ch = 4",
        "Discriminator.ch = 4",
        "train.batch_size = 4",
        "train.samples_per_class = 1",
    )
    report = _benchmark(
        "--loop", "--loop_steps=3", *(f"--gin_bindings={b}" for b in bindings), networks=()
    )
    assert report["gin_config"] == ["quickstart"]
    assert (report["ch"], report["batch_size"], report["num_classes"]) == (4, 4, 5)
    assert report["loop_steps"] == 3
    for key in ("train_img_per_s", "loop_img_per_s", "loop_over_step", "loop_steady_seconds"):
        assert report[key] > 0, key
    assert report["loop_over_step"] == pytest.approx(
        report["loop_img_per_s"] / report["train_img_per_s"]
    )
