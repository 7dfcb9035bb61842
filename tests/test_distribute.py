"""Tests for tf_biggan.distribute: strategy names, the workers' places and directories, the
runtime settings' checks. Multi-worker training itself is in test_reliability.py."""

import os

import pytest
import tensorflow as tf

from tf_biggan import distribute


class _Resolver:
    """A cluster resolver as MultiWorkerMirroredStrategy holds it."""

    def __init__(self, cluster, task_type, task_id):
        self._cluster = cluster
        self.task_type = task_type
        self.task_id = task_id

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """Only the attributes `distribute` reads; no collective is set up."""

    def __init__(self, resolver, replicas):  # no super().__init__: nothing is set up
        self._resolver = resolver
        self._replicas = replicas

    @property
    def cluster_resolver(self):
        return self._resolver

    @property
    def num_replicas_in_sync(self):
        return self._replicas


CLUSTER = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}


@pytest.mark.parametrize(
    "task_type, task_id, chief, position",
    [("chief", 0, True, (3, 0)), ("worker", 0, False, (3, 1)), ("worker", 1, False, (3, 2))],
)
def test_a_separate_chief_is_worker_0_and_writes_model_dir(task_type, task_id, chief, position):
    strategy = _MultiWorker(_Resolver(CLUSTER, task_type, task_id), replicas=6)
    assert distribute.is_chief(strategy) is chief
    assert distribute.worker_position(strategy) == position
    expected = "m" if chief else os.path.join("m", f"workertemp_{task_type}_{task_id}")
    assert distribute.worker_dir("m", strategy) == expected
    context = distribute.input_context(strategy)
    assert (context.num_input_pipelines, context.input_pipeline_id) == position
    assert context.num_replicas_in_sync == 6


def test_without_a_chief_worker_0_is_the_chief():
    cluster = {"worker": ["h1:1", "h2:1"]}
    first = _MultiWorker(_Resolver(cluster, "worker", 0), replicas=2)
    second = _MultiWorker(_Resolver(cluster, "worker", 1), replicas=2)
    assert distribute.is_chief(first) and not distribute.is_chief(second)
    assert distribute.worker_position(second) == (2, 1)


def test_one_process_is_the_chief_with_no_input_context():
    strategy = tf.distribute.get_strategy()
    assert distribute.is_chief(strategy)
    assert distribute.worker_position(strategy) == (1, 0)
    assert distribute.input_context(strategy) is None
    assert distribute.worker_dir("m", strategy) == "m"
    assert distribute.local_replica_count(strategy) == 1


def test_mirrored_takes_every_logical_cpu(mirrored_strategy):
    # The tests split the CPU into two logical devices (conftest.py).
    strategy = distribute.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU")) == 2
    assert distribute.local_replica_count(mirrored_strategy) == 2


def test_bad_runtime_settings_are_named(monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy 'gpu'"):
        distribute.RuntimeConfig(strategy="gpu")
    with pytest.raises(ValueError, match="float16 would need loss scaling"):
        distribute.RuntimeConfig(mixed_precision="mixed_float16")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker")
