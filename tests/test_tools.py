"""The command-line tools' contracts: one JSON line on stdout."""

import json
import os
import subprocess
import sys

import pytest
import test_networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_tool(*args):
    completed = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0])


@pytest.mark.slow
def test_count_params_prints_the_papers_counts_at_128px():
    counts = _run_tool("tools/count_params.py", "--gin_config=gin_configs/imagenet128.gin")
    assert counts == {"generator": 70433988, "discriminator": 87982370}


@pytest.mark.slow
def test_count_params_applies_bindings():
    # quickstart.gin: 32 px, 5 classes, dim_z 64, shared embedding 32, no attention; here at
    # ch 8 instead of 16, counted by the architecture's formula (tests/test_networks.py).
    counts = _run_tool(
        "tools/count_params.py",
        "--gin_config=gin_configs/quickstart.gin",
        "--gin_bindings=Generator.ch = 8",
        "--gin_bindings=Discriminator.ch = 8",
    )
    assert counts == {
        "generator": test_networks.expected_g_params(32, 8, 5, 64, 32, []),
        "discriminator": test_networks.expected_d_params(32, 8, 5, []),
    }
