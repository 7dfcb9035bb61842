"""Tests for tf_biggan.settings: each `train.<name>` reaches the dataclass that
declares it, every setting is declared once, and the names of 0.2's files keep working."""

import dataclasses
import os

import gin
import pytest

from tf_biggan import gin_config, settings
from tf_biggan.settings import CONCERNS, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_0_2_CONFIG = os.path.join(REPO, "tests", "data", "checkpoint_0_2", "train_0_2.gin")


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_every_setting_is_declared_once():
    names = [
        prefix + field.name
        for cls, prefix in CONCERNS.values()
        for field in dataclasses.fields(cls)
    ]
    assert len(names) == len(set(names))
    assert not set(names) & set(settings.NETWORK_SETTINGS)


def test_each_train_setting_reaches_its_dataclass():
    config, network = TrainConfig.from_settings(
        {
            "d_steps": 2,
            "max_restores": 7,
            "total_steps": 11,
            "strategy": "mirrored",
            "eval_every": 5,
            "eval_reference_stats": "stats.npz",
        }
    )
    assert config.step.d_steps == 2
    assert config.recovery.max_restores == 7
    assert config.loop.total_steps == 11
    assert config.runtime.strategy == "mirrored"
    assert (config.evaluation.every, config.evaluation.reference_stats) == (5, "stats.npz")
    assert network == {}
    # Everything else keeps its dataclass default.
    assert config.step == dataclasses.replace(settings.StepConfig(), d_steps=2)


def test_gin_bindings_of_either_name_give_the_same_config():
    gin.parse_config("train.d_steps = 3\ntrain.eval_num_samples = 10")
    by_train, _ = TrainConfig.from_settings(settings.train_settings())
    gin.clear_config()
    gin.parse_config("StepConfig.d_steps = 3\nEvalConfig.num_samples = 10")
    by_dataclass, _ = TrainConfig.from_settings(settings.train_settings())
    assert by_train == by_dataclass
    assert by_train.step.d_steps == 3 and by_train.evaluation.num_samples == 10


def test_a_0_2_config_parses_with_its_resolution_for_the_networks_check():
    gin_config.parse_gin([RELEASE_0_2_CONFIG], finalize=False)
    config, network = TrainConfig.from_settings(settings.train_settings())
    assert network == {"resolution": 32, "num_classes": 3}
    assert (config.step.batch_size, config.step.ema_start_step) == (2, 1)
    assert (config.loop.total_steps, config.loop.checkpoint_every) == (6, 3)
    assert config.runtime.deterministic is True


def test_unknown_names_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="'eval_evry'; did you mean eval_every"):
        TrainConfig.from_settings({"eval_evry": 3})
    with pytest.raises(ValueError, match="d_steps must be >= 1"):
        TrainConfig.from_settings({"d_steps": 0})
    with pytest.raises(ValueError, match="summary_every must be >= 1"):
        TrainConfig.from_settings({"summary_every": 0})
