"""Tests for tf_biggan.gin_config: every configurable is registered before a gin file is parsed."""

import logging
import os
import re

import gin
import pytest

from tf_biggan import gin_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "tf_biggan")


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _parse_error(tmp_path, text, match):
    """Parsing a file holding `text` raises a ValueError matching `match`."""
    path = tmp_path / "config.gin"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        gin_config.parse_gin([str(path)], finalize=False)


def test_every_module_with_a_configurable_is_imported_before_parsing():
    # A module of a subpackage (tf_biggan/data/) counts as imported with its package.
    with_configurables = set()
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                if re.search(r"^@gin\.(configurable|register)", f.read(), re.MULTILINE):
                    parts = os.path.relpath(os.path.join(folder, name[:-3]), REPO).split(os.sep)
                    with_configurables.add(".".join(parts[:2]))
    assert {"tf_biggan.optimizers", "tf_biggan.data", "tf_biggan.step"} <= with_configurables
    assert with_configurables <= set(gin_config.CONFIGURABLE_MODULES)


def test_a_missing_file_and_an_unknown_parameter_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gin"):
        gin_config.parse_gin([str(tmp_path / "nope.gin")])
    _parse_error(tmp_path, "make_optimizer.learnig_rate = 1e-3\n", "learnig_rate")
    # `train` takes any name and hands it to the dataclass that declares it: a typo is
    # caught when the file is parsed, with the nearest names.
    _parse_error(tmp_path, "train.totl_steps = 3\n", "'totl_steps'; did you mean total_steps")


def test_a_setting_bound_under_train_and_under_its_dataclass_is_an_error(tmp_path):
    _parse_error(
        tmp_path,
        "train.d_steps = 2\nStepConfig.d_steps = 3\n",
        "train.d_steps and StepConfig.d_steps",
    )


def test_an_include_beside_the_config_parses_without_an_error_logged(caplog):
    # gin probes an include as a package resource first and logs "Path not found" at ERROR
    # before it finds the file in the search path; the probe is not an error for our users.
    with caplog.at_level(logging.DEBUG):
        gin_config.parse_gin([os.path.join(REPO, "gin_configs", "imagenet128.gin")], finalize=False)
    assert gin.query_parameter("train.accumulation_steps") == 8  # From base/imagenet.gin.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gin_config.resolve_config("quickstart") == os.path.join(
        gin_config.SHIPPED_CONFIGS, "quickstart.gin"
    )
    assert gin_config.resolve_config("imagenet128.gin").endswith("configs/imagenet128.gin")
    gin_config.parse_gin(["imagenet128"], finalize=False)  # its include resolves too
    assert gin.query_parameter("train.accumulation_steps") == 8
    with pytest.raises(FileNotFoundError, match="imagenet129.*by name: cifar10, "):
        gin_config.resolve_config("imagenet129")
    with pytest.raises(FileNotFoundError, match="elsewhere/quickstart.gin"):
        gin_config.resolve_config("elsewhere/quickstart.gin")
    # The checkout's gin_configs/ is the package's folder.
    assert os.path.samefile(os.path.join(REPO, "gin_configs"), gin_config.SHIPPED_CONFIGS)
