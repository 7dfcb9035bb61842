"""Where the step runs: the strategy, the workers' places in the job, runtime settings.

`RuntimeConfig` (gin) names the strategy (one CPU, `MirroredStrategy` over GPUs or
logical CPUs, `MultiWorkerMirroredStrategy` from `TF_CONFIG`, `TPUStrategy`), the
precision and determinism. The chief writes the run's files into `model_dir`; the other
workers write beside it (`worker_dir`) and resume from the chief's checkpoints.
"""

from __future__ import annotations

import dataclasses
import os

import gin
import keras
import tensorflow as tf

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
