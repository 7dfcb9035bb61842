"""Where the step runs: the strategy, the workers' places in the job, runtime settings.

`RuntimeConfig` (gin) names the strategy (one CPU, `MirroredStrategy` over GPUs or
logical CPUs, `MultiWorkerMirroredStrategy` from `TF_CONFIG`, `TPUStrategy`), the
precision and determinism. The chief writes the run's files into `model_dir`; the other
workers write beside it (`worker_dir`) and resume from the chief's checkpoints.

Several workers take every decision together (`JobDecision`: stop, save, keep a best
checkpoint), and a worker that dies stops the others with `WorkerLostError`
(`stop_when_a_worker_is_lost`) instead of leaving them to wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

import gin
import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = (None, "mixed_bfloat16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How the process runs the step.

    Attributes:
      strategy: one of `STRATEGIES`.
      tpu_address: TPU name or grpc:// address for `strategy="tpu"` (None = local).
      mixed_precision: None or "mixed_bfloat16" (float16 would need loss scaling, which
        the step does not do).
      deterministic: TensorFlow op determinism (a resumed run repeats an uninterrupted one
        bit for bit).
    """

    strategy: str = "default"
    tpu_address: str | None = None
    mixed_precision: str | None = None
    deterministic: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be None or 'mixed_bfloat16', got {self.mixed_precision!r} "
                "(float16 would need loss scaling, which this loop does not do)"
            )

    def apply(self, seed: int) -> tf.distribute.Strategy:
        """Seeds Keras, sets determinism and the precision policy; returns the strategy."""
        if self.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(seed)
        if self.mixed_precision:
            keras.mixed_precision.set_global_policy(self.mixed_precision)
        return make_strategy(self.strategy, self.tpu_address)


def make_strategy(name: str, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (one of `STRATEGIES`).

    `multi_worker` reads the cluster from the `TF_CONFIG` environment variable;
    `tpu` connects to `tpu_address` (a name or grpc:// address; None = local).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if not tf.config.list_logical_devices("GPU"):
            # MirroredStrategy() takes only CPU:0 when there is no GPU; take every logical CPU
            # (one, unless the process split its CPU into several, as the tests do).
            cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(cpus)
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes checkpoints and summaries."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """The chief writes to `model_dir`; other workers to `model_dir/workertemp_<task>`.

    Every worker must take part in saving under MultiWorkerMirroredStrategy
    (saving runs collectives), but only the chief's files are the run's. As in
    TensorFlow's multi-worker guide, the other workers write beside it, so their
    copies never collide between runs or tasks; all workers resume from the
    chief's checkpoints in `model_dir`, which must therefore be on storage every
    worker can read (e.g. GCS or NFS).
    """
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f"workertemp_{resolver.task_type}_{resolver.task_id}")


def worker_position(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(number of workers, this worker's index), counting a separate chief as worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if (
        resolver is None
        or not resolver.task_type
        or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    ):
        return 1, 0
    cluster = resolver.cluster_spec().as_dict()
    chiefs = len(cluster.get("chief", []))
    workers = chiefs + len(cluster.get("worker", []))
    index = 0 if resolver.task_type == "chief" else resolver.task_id + chiefs
    return workers, index


def input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext | None:
    """This worker's input pipeline's place in the job; None for a single worker."""
    workers, index = worker_position(strategy)
    if workers == 1:
        return None
    return tf.distribute.InputContext(
        num_input_pipelines=workers,
        input_pipeline_id=index,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )


def local_replica_count(strategy: tf.distribute.Strategy) -> int:
    """Replicas on this worker (the default strategy has one and no device list)."""
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:
        return 1


def check_workers_agree(strategy: tf.distribute.Strategy, step: tf.Variable) -> None:
    """Raises if the workers resumed at different steps (e.g. `model_dir` is not shared)."""
    # ReduceOp has only SUM and MEAN: the steps agree iff mean(s^2) == mean(s)^2.
    values = strategy.run(lambda: tf.cast(tf.stack([step, step * step]), tf.float64))
    mean, mean_square = strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None).numpy()
    if mean_square != mean * mean:
        raise RuntimeError(
            f"workers resumed at different steps (mean {mean:g}): model_dir must be on "
            "storage that every worker reads (the chief's checkpoints are restored by all)"
        )


def restore_input_position(iterator, directory: str, chief_checkpoint: str) -> bool:
    """Restores a non-chief worker's input iterator from its own copy of a checkpoint.

    The chief's checkpoint holds the chief's input position: its shard of the data and
    its shuffle buffer. Every worker saves the same steps (`JobDecision`), so a worker's
    own position of the resumed step is in its `worker_dir`, under the same name.

    Returns:
      True when restored; False (with a warning) when this worker's copy is missing, e.g.
      on a replaced machine: its input then starts again at the beginning of its shard.
    """
    own = os.path.join(directory, os.path.basename(chief_checkpoint))
    if not tf.io.gfile.exists(own + ".index"):
        logging.warning(
            "this worker's input position %s is missing; its data starts again from the "
            "beginning of its shard (training goes on, but does not repeat an uninterrupted "
            "run exactly)",
            own,
        )
        return False
    tf.train.Checkpoint(iterator=iterator).restore(own).expect_partial()
    return True


class JobDecision:
    """Decisions that every worker of the job takes together, at the same step.

    Stopping, saving and keeping a best checkpoint run collective operations under
    `MultiWorkerMirroredStrategy`, so a worker that decides alone either leaves the others
    waiting in a collective or dies in the next one. `any_of` sums each worker's flags
    over the job (one small all-reduce) and returns, on every worker, whether any worker
    raised each flag. A flag that one worker decides for the job (the chief's clock, the
    chief's record of the best FID) is raised on that worker only.

    With one worker (one process, any strategy) nothing is exchanged.
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        self.workers, _ = worker_position(strategy)
        self.chief = is_chief(strategy)
        self._sum = tf.function(self._all_reduce_sum) if self.workers > 1 else None

    def _all_reduce_sum(self, flags: tf.Tensor) -> tf.Tensor:
        """`flags` [k] float32 on each replica -> their sum over every replica of the job."""
        per_replica = self.strategy.run(lambda: tf.identity(flags))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """Whether any worker raised each flag (the same answer on every worker)."""
        if self._sum is None:
            return tuple(bool(flag) for flag in flags)
        total = self._sum(tf.constant([float(bool(flag)) for flag in flags], tf.float32))
        return tuple(bool(value > 0) for value in total.numpy())

    def stop_reason(self, collapsed: bool, signal_received: bool, out_of_time: bool):
        """Why the job stops after this step, the same on every worker, or None.

        One all-reduce of three flags: a collapse (`on_collapse = "stop"`) or a signal on
        any worker, and the time budget by the chief's clock only: the other workers'
        `out_of_time` counts for nothing, so budgets that run out a step apart on
        different machines cannot part the workers.

        Returns:
          "collapse", "signal", "max_minutes reached" or None.
        """
        collapse, signal, time_up = self.any_of(
            collapsed, signal_received, self.chief and out_of_time
        )
        if collapse:
            return "collapse"
        return "signal" if signal else ("max_minutes reached" if time_up else None)

    def chief_says(self, flag: bool) -> bool:
        """The chief's `flag`, on every worker (other workers' values are ignored)."""
        return self.any_of(self.chief and flag)[0]


class WorkerLostError(RuntimeError):
    """Another worker of the job died or stopped responding; this worker stops too."""


# What a collective raises when a peer is gone: the coordination service's heartbeat
# check aborts every pending collective with UNAVAILABLE once a task stops sending
# heartbeats; a refused connection is UNAVAILABLE too, a timeout DEADLINE_EXCEEDED.
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


@contextlib.contextmanager
def stop_when_a_worker_is_lost(decision: JobDecision, last_good: Callable[[], str | None]):
    """Turns a collective's failure in a job of several workers into `WorkerLostError`.

    Under `MultiWorkerMirroredStrategy` TensorFlow's coordination service watches every
    task's heartbeat; when one dies (`kill -9`, a lost machine) the collectives pending on
    the others are aborted with UNAVAILABLE within its heartbeat timeout (about 10-20 s
    measured on localhost), so no worker hangs. This names what happened and what to do:
    restart every worker; they resume from `last_good()`.
    """
    try:
        yield
    except _PEER_ERRORS as error:
        if decision.workers == 1:
            raise
        lines = [line.strip() for line in str(error.message).splitlines() if line.strip()]
        named = [line for line in lines if "unhealthy" in line or line.startswith("/job:")]
        detail = " ".join(dict.fromkeys(named[:4] or lines[:1]))
        _, index = worker_position(decision.strategy)
        raise WorkerLostError(
            f"worker {index} of {decision.workers} stops: another worker of the job died or "
            f"stopped responding ({type(error).__name__}: {detail}). Restart every worker "
            f"with the same command; they resume from {last_good() or 'the start (no checkpoint yet)'}"
        ) from error
