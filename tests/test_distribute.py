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


def test_job_decision_on_one_worker_exchanges_nothing(mirrored_strategy):
    decision = distribute.JobDecision(mirrored_strategy)
    assert decision.workers == 1 and decision.chief
    assert decision.any_of(True, False, 0, 1) == (True, False, False, True)
    assert decision.chief_says(True) and not decision.chief_says(False)


def test_job_decision_sums_the_flags_over_every_replica(mirrored_strategy):
    # The all-reduce that several workers run, here over two local replicas: each flag
    # raised on a replica counts once, so [1, 0, 1] from both replicas sums to [2, 0, 2].
    decision = distribute.JobDecision(mirrored_strategy)
    total = tf.function(decision._all_reduce_sum)(tf.constant([1.0, 0.0, 1.0]))
    assert total.numpy().tolist() == [2.0, 0.0, 2.0]


def test_the_stop_reason_puts_a_collapse_first_and_reads_the_clock_of_the_chief_only():
    strategy = tf.distribute.get_strategy()
    decision = distribute.JobDecision(strategy)
    assert decision.stop_reason(False, False, False) is None
    assert decision.stop_reason(True, True, True) == "collapse"
    assert decision.stop_reason(False, True, True) == "signal"
    assert decision.stop_reason(False, False, True) == "max_minutes reached"
    # A worker that is not the chief: its own clock counts for nothing.
    worker = _MultiWorker(_Resolver({"worker": ["h1:1", "h2:1"]}, "worker", 1), replicas=2)
    decision = distribute.JobDecision(worker)
    decision._sum = lambda flags: flags  # this worker's flags as the job's sum
    assert not decision.chief and decision.workers == 2
    assert decision.stop_reason(False, False, True) is None
    assert decision.stop_reason(False, True, False) == "signal"
    assert not decision.chief_says(True)


HEARTBEAT_ERROR = """Graph execution error:

Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):
/job:worker/replica:0/task:1
The tasks have crashed. Check the task logs for an earlier error."""  # fmt: skip


def test_a_collective_aborted_by_a_lost_worker_becomes_a_clear_error():
    worker = _MultiWorker(_Resolver({"worker": ["h1:1", "h2:1"]}, "worker", 0), replicas=2)
    decision = distribute.JobDecision(worker)
    with pytest.raises(distribute.WorkerLostError) as raised:
        with distribute.stop_when_a_worker_is_lost(decision, lambda: "m/ckpt-8"):
            raise tf.errors.UnavailableError(None, None, HEARTBEAT_ERROR)
    assert str(raised.value) == (
        "worker 0 of 2 stops: another worker of the job died or stopped responding "
        "(UnavailableError: Collective ops is aborted by: Error reported from "
        "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats): "
        "/job:worker/replica:0/task:1). Restart every worker with the same command; they "
        "resume from m/ckpt-8"
    )
    # One worker: the error is not about other workers and passes unchanged.
    one = distribute.JobDecision(tf.distribute.get_strategy())
    with pytest.raises(tf.errors.UnavailableError):
        with distribute.stop_when_a_worker_is_lost(one, lambda: None):
            raise tf.errors.UnavailableError(None, None, "storage unavailable")
