"""BigGAN training: a `tf.distribute` custom loop configured with gin.

    python -m tf_biggan.train --gin_config=gin_configs/imagenet128.gin --model_dir=runs/in128

One step (`make_train_step`) is, as in the paper: `d_steps` discriminator
updates, each on a fresh global batch of real images and of fakes from G in
training mode; one generator update; the EMA update of G's weights. Each
update can accumulate gradients over `accumulation_steps` micro-batches for a
large effective batch on small hardware. Losses are averaged over the global
batch, so the update does not depend on the number of replicas.

Input: the per-worker `tf.data` pipeline is read through a plain iterator,
which is part of the checkpoint (distributed iterators are not checkpointable),
and each replica takes its slice of every batch inside the step.

Randomness: z and the fake labels are drawn statelessly from
`(seed, step, update, micro-batch)` for the whole global batch and sliced per
replica, so a resumed run draws exactly what an uninterrupted one would, and
the step on N replicas equals the step on one device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tf_biggan import data, imaging, layers, losses, networks, paths
from tf_biggan import monitor as monitor_lib
from tf_biggan import state as state_lib

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
SAMPLE_BATCH_SIZE = 8
"""Images per generator call when drawing the sample grids."""


# --------------------------------------------------------------------------- strategy


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


# --------------------------------------------------------------------------- the step


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What one training step does (all counts are global, across replicas).

    Attributes:
      batch_size: images per D update and per G update (global).
      d_steps: D updates per G update.
      accumulation_steps: micro-batches whose gradients make one update.
      loss: "hinge" or "nonsaturating".
      g_ortho_beta, d_ortho_beta: BigGAN orthogonal regularisation (0 = off).
      r1_gamma: R1 penalty weight on D's real inputs (0 = off).
      ema_decay: decay of the EMA of G's weights.
      ema_start_step: before this step the EMA is a copy of G.
      ema_warmup: from the start step, decay with `min(ema_decay, (1 + n) / (10 + n))` at
        the n-th update after it (the `num_updates` rule of TensorFlow's
        ExponentialMovingAverage), so that the average covers about the last n/10 steps
        rather than going back to the weights of the start step; off as in the paper.
      sigma0_clamp: if set, after each G update every SN kernel of G whose top
        singular value σ0 exceeds this value gets the rank-1 update
        `W ← W − max(0, σ0 − sigma0_clamp) u0 v0ᵀ` (the paper's σ0 clamp, appendix):
        σ0 becomes the clamp, the other singular values and all singular vectors stay.
      sigma0_clamp_ratio: the same clamp with `σ_clamp = ratio · σ1` (σ1 the second
        singular value, the paper's relative variant); exclusive with `sigma0_clamp`.
      augment_policy: DiffAugment policy applied to D's inputs ("" = off).
      seed: base seed of the stateless z / label sampling.
      jit_compile: compile the per-replica step with XLA.
    """

    batch_size: int
    d_steps: int = 1
    accumulation_steps: int = 1
    loss: str = "hinge"
    g_ortho_beta: float = 0.0
    d_ortho_beta: float = 0.0
    r1_gamma: float = 0.0
    ema_decay: float = 0.9999
    ema_start_step: int = 20_000
    ema_warmup: bool = False
    sigma0_clamp: float | None = None
    sigma0_clamp_ratio: float | None = None
    augment_policy: str = ""
    seed: int = 0
    jit_compile: bool = False

    def __post_init__(self):
        for name in ("batch_size", "d_steps", "accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        losses.loss_functions(self.loss)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.sigma0_clamp is not None and self.sigma0_clamp_ratio is not None:
            raise ValueError("set sigma0_clamp (a fixed clamp) or sigma0_clamp_ratio, not both")
        for name in ("sigma0_clamp", "sigma0_clamp_ratio"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for off), got {value}")
        for name in ("g_ortho_beta", "d_ortho_beta", "r1_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def clamps_sigma0(self) -> bool:
        return self.sigma0_clamp is not None or self.sigma0_clamp_ratio is not None

    @property
    def images_per_step(self) -> int:
        """Real images read per training step (all D updates), global."""
        return self.d_steps * self.batch_size


def replica_batch_size(config: StepConfig, strategy: tf.distribute.Strategy) -> int:
    """Images per replica per micro-batch; raises if the batch does not split evenly."""
    parts = config.accumulation_steps * strategy.num_replicas_in_sync
    if config.batch_size % parts:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by accumulation_steps x replicas "
            f"= {config.accumulation_steps} x {strategy.num_replicas_in_sync}"
        )
    return config.batch_size // parts


def _local_replica_count(strategy) -> int:
    """Replicas on this worker (the default strategy has one and no device list)."""
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:
        return 1


def _fold_in(seed: int, *values) -> tf.Tensor:
    """A stateless RNG seed `[2]` int32 derived from `seed` and the integer `values`."""
    key = tf.constant([seed, 0], tf.int32)
    for value in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int32), alg="philox")
    return key


# The largest float32 below 1.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def normal_from_bits(bits: tf.Tensor) -> tf.Tensor:
    """Standard normal float32 values from uniform 24-bit integers `bits` in [0, 2^24).

    `ndtri((bits + 0.5) / 2^24)`, computed in float32. There `2^24 - 1 + 0.5` rounds to
    `2^24`, which would make the top code `ndtri(1) = +inf`: one value in 16.8 million,
    0.7 times in an average 20-minute Fashion-MNIST run (2,700 steps of two 32 x 64 draws)
    and every 34 steps at batch 2,048 with `dim_z` 120, each a skipped step. The uniform is capped at the largest float32 below
    1 instead, so |z| < 5.5 always.
    """
    uniform = (tf.cast(bits, tf.float32) + 0.5) * (1.0 / (1 << 24))
    return tf.math.ndtri(tf.minimum(uniform, _BELOW_ONE))


def draw_latents(seed: int, step, update, batch_size: int, dim_z: int, num_classes: int):
    """The global batch of z `[batch_size, dim_z]` and int32 labels of one update.

    Drawn statelessly from `(seed, step, update)`. z comes from integer random bits
    through the inverse normal CDF (`normal_from_bits`), because stateless float draws
    differ between XLA and the regular kernels while integer draws agree; a jit-compiled
    step thus trains on the same z as the plain one.
    """
    key = _fold_in(seed, step, update)
    bits = tf.random.stateless_uniform(
        [batch_size, dim_z], key, 0, 1 << 24, dtype=tf.int32, alg="philox"
    )
    z = normal_from_bits(bits)
    labels = tf.random.stateless_uniform(
        [batch_size],
        tf.random.experimental.stateless_fold_in(key, 1, alg="philox"),
        0,
        num_classes,
        dtype=tf.int32,
        alg="philox",
    )
    return z, labels


def _regularizable_kernels(model, exclude=()) -> list:
    """Kernels of rank >= 2 (conv, linear, embedding), minus `exclude` (by identity)."""
    excluded = {id(v) for v in exclude}
    return [v for v in model.trainable_variables if len(v.shape) >= 2 and id(v) not in excluded]


def _sum_gradients(total, grads):
    """Element-wise sum of two gradient lists in which None stands for zero.

    The orthogonal regulariser has no gradient (None) for the variables it does not
    regularise, and the first micro-batch starts from a list of Nones.
    """
    return [
        g if t is None else t if g is None else t + g for t, g in zip(total, grads, strict=True)
    ]


def _all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])


def _finite_on_all_replicas(context, tensors) -> tf.Tensor:
    bad = 1.0 - tf.cast(_all_finite(tensors), tf.float32)
    return context.all_reduce(tf.distribute.ReduceOp.SUM, bad) == 0.0


def apply_if_finite(optimizer, grads, variables, finite) -> tf.Tensor:
    """Applies `grads` with `optimizer` unless `finite` is False on any replica.

    Returns a bool tensor, True when applied, that is ready once the update is done.

    Call in replica context. `finite` must already agree across replicas.
    The decision is taken in cross-replica context, because a branch that
    calls `merge_call` (as `apply_gradients` does) cannot sit in a replica cond.
    """

    def cross_replica(distribution, grads, finite):
        finite = distribution.experimental_local_results(finite)[0]

        def apply():
            distribution.extended.call_for_each_replica(
                lambda g: optimizer.apply_gradients(zip(g, variables, strict=True)), args=(grads,)
            )
            return tf.constant(True)

        return tf.cond(finite, apply, lambda: tf.constant(False))

    return tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, finite))


def make_train_step(
    state: state_lib.TrainState, strategy: tf.distribute.Strategy, config: StepConfig
):
    """Builds the training step.

    Args:
      state: a built `TrainState` (variables created under `strategy.scope()`).
      strategy: the distribution strategy.
      config: a `StepConfig`.

    Returns:
      A `tf.function` `train_step(images, labels)` taking this worker's batch
      for the whole step — images float32 `[d_steps * batch_size / workers,
      R, R, 3]` in [-1, 1] and int labels `[d_steps * batch_size / workers]` —
      and returning a flat dict of float32 scalars (`loss/d`, `loss/g`,
      `d/real`, `d/fake`, `nonfinite`), averaged over replicas.
    """
    generator, discriminator = state.generator, state.discriminator
    num_classes = generator.num_classes
    dim_z = generator.dim_z
    d_loss_fn, g_loss_fn = losses.loss_functions(config.loss)
    per_replica = replica_batch_size(config, strategy)
    local_replicas = _local_replica_count(strategy)
    replicas = strategy.num_replicas_in_sync
    k = config.accumulation_steps
    micro_global = config.batch_size // k
    scale = 1.0 / config.batch_size
    # The paper leaves the shared class embedding out of the regulariser.
    shared = generator.shared_embedding
    g_ortho_kernels = _regularizable_kernels(
        generator, exclude=shared.trainable_variables if shared is not None else ()
    )
    d_ortho_kernels = _regularizable_kernels(discriminator)
    ema_pairs = list(zip(generator.variables, state.ema_generator.variables, strict=True))
    spectral_ids = state_lib.spectral_state_variables(generator)
    g_spectral = layers.spectral_layers(generator)
    if config.augment_policy:
        from tf_biggan import augment

    def draw(step, update, micro, replica_id):
        """z `[per_replica, dim_z]` and labels `[per_replica]` for this replica's slice.

        The whole update's batch is drawn and sliced, so the draws do not depend on
        how the batch is split into micro-batches or replicas.
        """
        z, labels = draw_latents(config.seed, step, update, config.batch_size, dim_z, num_classes)
        start = micro * micro_global + replica_id * per_replica
        return z[start : start + per_replica], labels[start : start + per_replica]

    def augment_images(images, step, update, micro, replica_id, which):
        if not config.augment_policy:
            return images
        seed = _fold_in(config.seed, step, update, micro, replica_id, which + 2)
        return augment.diff_augment(images, config.augment_policy, seed=seed)

    def discriminator_micro_step(real, real_labels, step, update, micro, replica_id):
        z, fake_labels = draw(step, update, micro, replica_id)
        fake = generator(z, tf.one_hot(fake_labels, num_classes), training=True)
        fake = tf.stop_gradient(fake)
        real_in = augment_images(real, step, update, micro, replica_id, 0)
        fake_in = augment_images(fake, step, update, micro, replica_id, 1)
        both = tf.concat([real_in, fake_in], 0)
        both_labels = tf.concat([real_labels, fake_labels], 0)
        with tf.GradientTape() as tape:
            if config.r1_gamma > 0:
                # Still one D call on reals and fakes (one power iteration per micro-step).
                # D mixes no examples, so the gradient of the real logits' sum with respect
                # to the whole batch holds each real image's own gradient in its first half.
                with tf.GradientTape(watch_accessed_variables=False) as r1_tape:
                    r1_tape.watch(both)
                    real_logits, fake_logits = tf.split(
                        discriminator(both, both_labels, training=True), 2
                    )
                    real_sum = tf.reduce_sum(real_logits)
                input_grads = r1_tape.gradient(real_sum, both)
                penalty = losses.r1_penalty(tf.split(input_grads, 2)[0], config.r1_gamma)
            else:
                real_logits, fake_logits = tf.split(
                    discriminator(both, both_labels, training=True), 2
                )
                penalty = 0.0
            loss = tf.reduce_sum(d_loss_fn(real_logits, fake_logits) + penalty) * scale
        grads = tape.gradient(loss, discriminator.trainable_variables)
        return grads, loss, tf.reduce_sum(real_logits), tf.reduce_sum(fake_logits)

    def generator_micro_step(step, micro, replica_id):
        z, labels = draw(step, config.d_steps, micro, replica_id)
        with tf.GradientTape() as tape:
            fake = generator(z, tf.one_hot(labels, num_classes), training=True)
            fake_in = augment_images(fake, step, config.d_steps, micro, replica_id, 1)
            fake_logits = discriminator(fake_in, labels, training=True)
            loss = tf.reduce_sum(g_loss_fn(fake_logits)) * scale
        return tape.gradient(loss, generator.trainable_variables), loss

    def ortho_gradients(model, kernels, beta):
        with tf.GradientTape() as tape:
            # Divided by the replica count because the optimizer sums replicas' gradients.
            penalty = losses.orthogonal_regularizer(kernels, beta) / replicas
        grads = tape.gradient(penalty, kernels)
        by_id = {id(v): g for v, g in zip(kernels, grads, strict=True)}
        return [by_id.get(id(v)) for v in model.trainable_variables]

    def apply_update(context, model, optimizer, grads, ortho_kernels, ortho_beta):
        """Adds the orthogonal regulariser's gradients and applies the update if finite.

        Returns 1.0 when the update was skipped (a non-finite gradient on any replica).
        """
        if ortho_beta > 0:
            grads = _sum_gradients(grads, ortho_gradients(model, ortho_kernels, ortho_beta))
        finite = _finite_on_all_replicas(context, grads)
        applied = apply_if_finite(optimizer, grads, model.trainable_variables, finite)
        # Ready only once the update is done (or skipped), so work can wait for it.
        with tf.control_dependencies([applied]):
            return 1.0 - tf.cast(finite, tf.float32)

    def replica_step(images, labels, step):
        context = tf.distribute.get_replica_context()
        replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
        local_id = replica_id % local_replicas
        shape = [config.d_steps, k, local_replicas, per_replica]
        images = tf.reshape(images, shape + images.shape[1:].as_list())
        labels = tf.reshape(tf.cast(labels, tf.int32), shape)
        d_loss = real_sum = fake_sum = 0.0
        nonfinite = 0.0
        # Each micro-step and each update starts only when the one before it is done.
        # Nothing else orders them (the G step's forward pass reads no variable that D's
        # update writes), and TensorFlow's executor would otherwise run them side by side,
        # holding the activations of both at once: at 128 px the step's peak memory was
        # about 1 GB higher for no gain in speed. See docs/performance.md.
        done = []
        for update in range(config.d_steps):
            grads = [None] * len(discriminator.trainable_variables)
            for micro in range(k):
                with tf.control_dependencies(done):
                    g, loss, rs, fs = discriminator_micro_step(
                        images[update, micro, local_id],
                        labels[update, micro, local_id],
                        step,
                        update,
                        micro,
                        replica_id,
                    )
                grads = _sum_gradients(grads, g)
                done = [t for t in grads if t is not None]
                d_loss += loss
                real_sum += rs
                fake_sum += fs
            nonfinite += apply_update(
                context,
                discriminator,
                state.d_optimizer,
                grads,
                d_ortho_kernels,
                config.d_ortho_beta,
            )
            done = [nonfinite]

        grads = [None] * len(generator.trainable_variables)
        g_loss = 0.0
        for micro in range(k):
            with tf.control_dependencies(done):
                g, loss = generator_micro_step(step, micro, replica_id)
            grads = _sum_gradients(grads, g)
            done = [t for t in grads if t is not None]
            g_loss += loss
        nonfinite += apply_update(
            context, generator, state.g_optimizer, grads, g_ortho_kernels, config.g_ortho_beta
        )
        per_image_d = 1.0 / (config.d_steps * config.batch_size)
        return {
            # Summed over replicas by the caller: each term is already divided by the global batch.
            "loss/d": d_loss / config.d_steps,
            "loss/g": g_loss,
            "d/real": real_sum * per_image_d,
            "d/fake": fake_sum * per_image_d,
            "nonfinite": nonfinite / replicas,
        }

    replica_fn = tf.function(replica_step, jit_compile=True) if config.jit_compile else replica_step

    def ema_update(step):
        decay = tf.constant(config.ema_decay, tf.float32)
        if config.ema_warmup:
            updates = tf.cast(step - config.ema_start_step, tf.float32)
            decay = tf.minimum(decay, (1.0 + updates) / (10.0 + updates))
        decay = tf.where(step >= config.ema_start_step, decay, 0.0)
        for source, target in ema_pairs:
            if id(source) in spectral_ids:
                strategy.extended.update(
                    target.value, lambda t, s: t.assign(s), args=(source.value,)
                )
            else:
                strategy.extended.update(
                    target.value,
                    lambda t, s: t.assign(decay * t + (1.0 - decay) * tf.cast(s, t.dtype)),
                    args=(source.value,),
                )

    def clamp_sigma0():
        for layer in g_spectral:
            if not layer.trainable:
                continue
            kernel = tf.convert_to_tensor(layer.kernel.value)
            delta = sigma0_clamp_update(
                tf.reshape(kernel, [-1, kernel.shape[-1]]),
                sigma_clamp=config.sigma0_clamp,
                ratio=config.sigma0_clamp_ratio,
            )
            strategy.extended.update(
                layer.kernel.value,
                lambda k, d: k.assign_sub(tf.reshape(d, k.shape)),
                args=(delta,),
            )

    @tf.function
    def train_step(images, labels):
        step = state.step.read_value()
        metrics = strategy.run(replica_fn, args=(images, labels, step))
        metrics = {
            name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in metrics.items()
        }
        if config.clamps_sigma0:
            clamp_sigma0()
        ema_update(step)
        state.step.assign_add(1)
        state.skipped_updates.assign_add(tf.cast(tf.round(metrics["nonfinite"]), tf.int64))
        return metrics

    return train_step


def top_singular_triplets(matrix: tf.Tensor, count: int = 2):
    """The `count` largest singular values of `matrix` and their singular vectors.

    Computed from the eigendecomposition of the smaller Gram matrix (`MᵀM` or `MMᵀ`), so a
    wide or tall kernel costs a small symmetric eigenproblem rather than a full SVD.

    Args:
      matrix: float32 `[m, n]`.
      count: how many (at most `min(m, n)`).

    Returns:
      `(sigma [count], left [m, count], right [n, count])`, sigma descending, with
      `matrix ≈ left · diag(sigma) · rightᵀ` on those directions.
    """
    m, n = matrix.shape
    if n <= m:
        eigenvalues, right = tf.linalg.eigh(tf.matmul(matrix, matrix, transpose_a=True))
        right = tf.reverse(right[:, -count:], axis=[1])
        sigma = tf.sqrt(tf.maximum(tf.reverse(eigenvalues[-count:], axis=[0]), 0.0))
        left = tf.matmul(matrix, right) / tf.maximum(sigma, 1e-12)
    else:
        eigenvalues, left = tf.linalg.eigh(tf.matmul(matrix, matrix, transpose_b=True))
        left = tf.reverse(left[:, -count:], axis=[1])
        sigma = tf.sqrt(tf.maximum(tf.reverse(eigenvalues[-count:], axis=[0]), 0.0))
        right = tf.matmul(matrix, left, transpose_a=True) / tf.maximum(sigma, 1e-12)
    return sigma, left, right


def sigma0_clamp_update(
    matrix: tf.Tensor, sigma_clamp: float | None = None, ratio: float | None = None
) -> tf.Tensor:
    """The paper's σ0 clamp as the rank-1 change to subtract from `matrix`.

    `W ← W − max(0, σ0 − σ_clamp) u0 v0ᵀ`, with `σ_clamp` fixed or `ratio · σ1`. Under
    spectral normalisation scaling W changes nothing; this update lowers only the top
    singular value, so it reshapes the normalised spectrum (σ0/σ0 stays 1, the others
    grow relative to it).

    Args:
      matrix: float32 `[fan_in, out]`, a kernel as the SN layers see it.
      sigma_clamp: the fixed clamp, or None.
      ratio: the relative clamp `ratio · sg(σ1)`, or None (exactly one is set).

    Returns:
      float32 `[fan_in, out]`, zero when σ0 is already at most the clamp.
    """
    if (sigma_clamp is None) == (ratio is None):
        raise ValueError("give exactly one of sigma_clamp and ratio")
    count = 1 if ratio is None else 2
    if count > min(matrix.shape):
        raise ValueError(f"a relative σ0 clamp needs a matrix of rank >= 2, got {matrix.shape}")
    sigma, left, right = top_singular_triplets(tf.stop_gradient(matrix), count)
    clamp = sigma_clamp if ratio is None else ratio * sigma[1]
    excess = tf.maximum(sigma[0] - clamp, 0.0)
    return excess * tf.matmul(left[:, :1], right[:, :1], transpose_b=True)


# --------------------------------------------------------------------------- summaries


def spectral_norm_summaries(state: state_lib.TrainState) -> dict[str, float]:
    """`sigma/G/<layer path>` and `sigma/D/<layer path>` for every SN layer."""
    out = {}
    for prefix, model in (("G", state.generator), ("D", state.discriminator)):
        for layer in layers.spectral_layers(model):
            out[f"sigma/{prefix}/{layer.path}"] = float(layer.top_singular_value())
    return out


def sample_grid(generator, z, labels, batch_size: int = SAMPLE_BATCH_SIZE) -> np.ndarray:
    """A uint8 grid of `generator` samples, one row per class (`labels` sorted by class).

    The samples are generated `batch_size` at a time: self-attention at high resolution
    holds a `[batch, HW, HW/4]` matrix (268 MB per image at 128 px), so a whole grid of 80
    images at once would need 21 GB at 256 px.
    """
    onehot = tf.one_hot(labels, generator.num_classes)
    images = tf.concat(
        [
            generator(z[i : i + batch_size], onehot[i : i + batch_size], training=False)
            for i in range(0, len(labels), batch_size)
        ],
        axis=0,
    )
    classes = len(np.unique(labels))
    return imaging.image_grid(images, rows=classes, cols=len(labels) // classes).numpy()


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum
        logging.warning(
            "received %s: saving a checkpoint and stopping", signal.Signals(signum).name
        )

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- recovery


def restore_latest(
    restore: Callable[[str], None],
    manager: tf.train.CheckpointManager,
    validate: Callable[[str], None] | None = None,
):
    """Restores the newest readable checkpoint of `manager`, falling back to older ones.

    `restore(path)` restores one checkpoint and raises when it cannot (e.g.
    `TrainState.restore`, or `lambda p: checkpoint.restore(p).assert_existing_objects_matched()`).

    TensorFlow writes a checkpoint's files first and the `checkpoint` index file last
    (atomically, by rename), so a crash during a save leaves the index pointing at the
    previous checkpoint. A newest checkpoint that is listed but damaged afterwards (a
    truncated or deleted file, e.g. on a full disk) is skipped with a warning.

    `validate(path)`, when given, runs before each restore; the
    `state_lib.IncompatibleCheckpointError` it raises is not damage, so it
    stops the search and propagates.

    Returns:
      The restored checkpoint path, or None when `manager` lists none.

    Raises:
      RuntimeError: checkpoints are listed but none of them can be read.
      state_lib.IncompatibleCheckpointError: from `validate`.
    """
    paths = list(manager.checkpoints)
    for path in reversed(paths):
        try:
            if validate is not None:
                validate(path)
            restore(path)
        except state_lib.IncompatibleCheckpointError:
            raise
        # A truncated file raises IndexError from the reader, others raise OpErrors.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
            logging.warning(
                "checkpoint %s cannot be read (%s: %s); trying the previous one",
                path,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            continue
        if path != paths[-1]:
            logging.warning("resuming from %s instead of the damaged %s", path, paths[-1])
        return path
    if paths:
        raise RuntimeError(
            f"none of the checkpoints {paths} in {manager.directory} can be read; move them "
            "away to start afresh"
        )
    return None


class _Recovery:
    """Counts non-finite steps and restores the last good checkpoint when they persist.

    A restore brings back G, D, EMA G, the optimizers, the step and the skipped-update
    counter but not the input iterator: the data stream goes on past the batches that
    came with the bad steps instead of replaying them. z is drawn from the step number and
    so repeats; the learning rates can be lowered (`lr_decay`) to leave the failed path.
    """

    def __init__(self, state, manager, *, max_consecutive_nonfinite, max_restores, lr_decay):
        if max_consecutive_nonfinite < 1:
            raise ValueError(
                f"max_consecutive_nonfinite must be >= 1, got {max_consecutive_nonfinite}"
            )
        self.state = state
        self.manager = manager
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.max_restores = max_restores
        self.lr_decay = lr_decay
        self.consecutive_bad = 0
        self.restores = 0

    @property
    def can_restore(self) -> bool:
        return self.restores < self.max_restores and bool(self.manager.latest_checkpoint)

    def finite_step(self) -> None:
        self.consecutive_bad = 0

    def nonfinite_step(self, step: int) -> bool:
        """Records a skipped update; returns True when it restored a checkpoint.

        Raises:
          FloatingPointError: too many bad steps and no restore left (or no checkpoint).
        """
        self.consecutive_bad += 1
        logging.warning(
            "step %d: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
            step,
            self.consecutive_bad,
            int(self.state.skipped_updates),
        )
        if self.consecutive_bad < self.max_consecutive_nonfinite:
            return False
        if self.restores >= self.max_restores or not self.manager.latest_checkpoint:
            reason = (
                f"after {self.restores} restores (max_restores={self.max_restores})"
                if self.manager.latest_checkpoint
                else "and there is no checkpoint to restore"
            )
            raise FloatingPointError(
                f"{self.consecutive_bad} consecutive non-finite steps at step {step} {reason}; "
                f"giving up (checkpoints and summaries in {self.manager.directory})"
            )
        self.restore(step, "non-finite steps")
        return True

    def restore(self, step: int, why: str) -> None:
        """Restores the latest checkpoint (without the input position) and lowers the rates.

        Raises:
          FloatingPointError: for non-finite steps, when no restore is left.
        """
        if self.restores >= self.max_restores or not self.manager.latest_checkpoint:
            raise FloatingPointError(
                f"step {step}: {why}, but no restore is left ({self.restores} of "
                f"max_restores={self.max_restores} used) or there is no checkpoint"
            )
        self.restores += 1
        path = self.manager.latest_checkpoint
        # The decay applies to the factors of the run so far, not to those of the restored
        # checkpoint, so a second restore of the same checkpoint lowers the rates again.
        factors = self.state.learning_rate_factors.numpy()
        self.state.restore(path)
        self.state.learning_rate_factors.assign(factors)
        self.state.scale_learning_rates(self.lr_decay)
        logging.warning(
            "step %d: %s; restored %s (step %d), restore %d of %d, learning rates G %.3g D %.3g",
            step,
            why,
            path,
            int(self.state.step.numpy()),
            self.restores,
            self.max_restores,
            float(self.state.g_optimizer.learning_rate),
            float(self.state.d_optimizer.learning_rate),
        )
        self.consecutive_bad = 0


# --------------------------------------------------------------------------- train


@gin.configurable(denylist=["model_dir"])
def train(
    model_dir: str,
    *,
    resolution: int = gin.REQUIRED,
    num_classes: int = gin.REQUIRED,
    batch_size: int = 64,
    total_steps: int = 1000,
    max_minutes: float | None = None,
    d_steps: int = 1,
    accumulation_steps: int = 1,
    loss: str = "hinge",
    g_ortho_beta: float = 0.0,
    d_ortho_beta: float = 0.0,
    r1_gamma: float = 0.0,
    ema_decay: float = 0.9999,
    ema_start_step: int = 20_000,
    ema_warmup: bool = False,
    sigma0_clamp: float | None = None,
    sigma0_clamp_ratio: float | None = None,
    augment_policy: str = "",
    strategy: str = "default",
    tpu_address: str | None = None,
    jit_compile: bool = False,
    mixed_precision: str | None = None,
    deterministic: bool = False,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    summary_every: int = 50,
    sample_every: int = 500,
    samples_per_class: int = 8,
    max_sample_classes: int = 10,
    max_consecutive_nonfinite: int = 5,
    max_restores: int = 3,
    lr_decay_on_restore: float = 1.0,
    collapse_sigma_ratio: float = 3.0,
    collapse_window: int = 20,
    collapse_gap: float | None = None,
    on_collapse: str = "warn",
    export_at_end: bool = True,
    init_from: str | None = None,
    eval_every: int = 0,
    eval_reference_stats: str | None = None,
    eval_num_samples: int = 5000,
    eval_batch_size: int = 50,
    eval_extractor: str = "tfgan_inception",
    eval_extractor_path: str | None = None,
    eval_feature_layer: str | None = None,
    eval_logits_layer: str | None = None,
) -> dict:
    """Trains a BigGAN; resumes from the latest checkpoint in `model_dir`.

    Args:
      model_dir: where checkpoints, summaries, samples and the export go.
      resolution, num_classes: must equal the networks' (bind them with the
        same gin macros).
      batch_size: global images per D and per G update.
      total_steps: G updates to run in all (a resumed run continues to it).
      max_minutes: wall-clock budget of this process; on reaching it the run
        saves a checkpoint and stops (a restart continues).
      d_steps: D updates per G update.
      accumulation_steps: micro-batches per update (gradient accumulation).
      loss: "hinge" (the paper's) or "nonsaturating".
      g_ortho_beta, d_ortho_beta: orthogonal regularisation weights (0 = off).
      r1_gamma: R1 penalty weight (0 = off).
      ema_decay, ema_start_step, ema_warmup: EMA of G's weights; a copy before the start
        step; with `ema_warmup` the decay ramps up from the start step (see `StepConfig`).
      sigma0_clamp: the paper's σ0 clamp of G's kernels at this fixed value (None = off):
        a rank-1 update that lowers each kernel's top singular value to it.
      sigma0_clamp_ratio: the relative σ0 clamp, at this multiple of each kernel's second
        singular value (None = off; exclusive with `sigma0_clamp`).
      augment_policy: DiffAugment policy for D's inputs, e.g. "color,translation,cutout".
      strategy: "default", "mirrored", "multi_worker" or "tpu".
      tpu_address: TPU name or address for `strategy="tpu"`.
      jit_compile: XLA-compile the per-replica step.
      mixed_precision: None or "mixed_bfloat16".
      deterministic: enable TensorFlow op determinism (exactly repeatable runs).
      seed: seed of the weights' initialisation, the data order and z.
      checkpoint_every: steps between checkpoints (also saved at the end and on SIGTERM).
      keep_checkpoints: checkpoints kept.
      summary_every: steps between TensorBoard scalar summaries.
      sample_every: steps between sample grids of the EMA generator.
      samples_per_class, max_sample_classes: the sample grid's layout.
      max_consecutive_nonfinite: consecutive steps with a skipped (non-finite)
        update after which the last checkpoint is restored.
      max_restores: restores (after non-finite steps or a collapse) after which the
        run gives up with a `FloatingPointError` (non-finite) or stops (collapse).
      lr_decay_on_restore: both learning rates are multiplied by this on each restore
        (1.0 = unchanged). The factor is saved with later checkpoints, so it survives a
        crash; a resumed run uses the configured rates times the saved factors.
      collapse_sigma_ratio, collapse_window: a layer whose top singular value exceeds
        `collapse_sigma_ratio` times the median of its last `collapse_window`
        summaries is reported as a collapse (see `tf_biggan.monitor`).
      collapse_gap: also report a collapse when the mean D logit gap
        `d/real - d/fake` exceeds this (None = off).
      on_collapse: "warn" (log), "stop" (stop without saving the collapsed state)
        or "restore" (restore the last checkpoint, as after non-finite steps).
      export_at_end: write a SavedModel to `model_dir/export` at the end.
      init_from: checkpoint (or training dir) to initialise a new run from.
      eval_every: steps between FID/IS/KID evaluations of the EMA generator (0 = off);
        the best checkpoint by FID is kept in `model_dir/best/`.
      eval_reference_stats: `.npz` from `tools/reference_stats.py` (same extractor).
      eval_num_samples, eval_batch_size: generated images per evaluation, per batch.
      eval_extractor, eval_extractor_path, eval_feature_layer, eval_logits_layer:
        the feature extractor (see `tf_biggan.eval.make_extractor`).

    Returns:
      A dict with the final `step`, the `start_step` this process resumed at, the
      last metrics, the number of `restores` and `stopped_by_collapse`.
    """
    model_dir = paths.expand(model_dir)
    init_from = paths.expand(init_from)
    eval_reference_stats = paths.expand(eval_reference_stats)
    eval_extractor_path = paths.expand(eval_extractor_path)
    if on_collapse not in monitor_lib.ON_COLLAPSE:
        raise ValueError(
            f"on_collapse must be one of {monitor_lib.ON_COLLAPSE}, got {on_collapse!r}"
        )
    if lr_decay_on_restore <= 0:
        raise ValueError(f"lr_decay_on_restore must be > 0, got {lr_decay_on_restore}")
    if mixed_precision not in (None, "mixed_bfloat16"):
        raise ValueError(
            f"mixed_precision must be None or 'mixed_bfloat16', got {mixed_precision!r} "
            "(float16 would need loss scaling, which this loop does not do)"
        )
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)

    dist = make_strategy(strategy, tpu_address)
    config = StepConfig(
        batch_size=batch_size,
        d_steps=d_steps,
        accumulation_steps=accumulation_steps,
        loss=loss,
        g_ortho_beta=g_ortho_beta,
        d_ortho_beta=d_ortho_beta,
        r1_gamma=r1_gamma,
        ema_decay=ema_decay,
        ema_start_step=ema_start_step,
        ema_warmup=ema_warmup,
        sigma0_clamp=sigma0_clamp,
        sigma0_clamp_ratio=sigma0_clamp_ratio,
        augment_policy=augment_policy,
        seed=seed,
        jit_compile=jit_compile,
    )
    per_replica = replica_batch_size(config, dist)
    chief = is_chief(dist)
    out_dir = worker_dir(model_dir, dist)
    tf.io.gfile.makedirs(out_dir)

    workers, worker_index = _worker_position(dist)
    input_context = tf.distribute.InputContext(
        num_input_pipelines=workers,
        input_pipeline_id=worker_index,
        num_replicas_in_sync=dist.num_replicas_in_sync,
    )
    if config.images_per_step % workers:
        raise ValueError(f"d_steps x batch_size must be divisible by the {workers} workers")
    logging.info(
        "strategy %s: %d replica(s) in sync on %d worker(s); batch %d = %d micro-batch(es) "
        "x %d replica(s) x %d image(s)",
        strategy,
        dist.num_replicas_in_sync,
        workers,
        batch_size,
        accumulation_steps,
        dist.num_replicas_in_sync,
        per_replica,
    )
    input_data = data.make_dataset(
        batch_size=config.images_per_step // workers,
        resolution=resolution,
        num_classes=num_classes,
        input_context=input_context if workers > 1 else None,
        model_dir=out_dir,
        seed=seed,
    )
    if chief:
        data.summarize_dataset(input_data, out_dir, resolution)

    with dist.scope():
        state = state_lib.TrainState(
            generator=networks.Generator(name="generator"),
            discriminator=networks.Discriminator(name="discriminator"),
            ema_generator=networks.Generator(name="ema_generator"),
            g_optimizer=_scoped_optimizer("generator"),
            d_optimizer=_scoped_optimizer("discriminator"),
        )
        _check_network_config(state, resolution, num_classes)
        state.build()
    iterator = iter(input_data.dataset)
    checkpoint = state.checkpoint(iterator=iterator)
    manager = tf.train.CheckpointManager(
        checkpoint, out_dir, max_to_keep=keep_checkpoints, step_counter=state.step
    )
    # Every worker resumes from the chief's checkpoints (see `worker_dir`).
    resume_manager = (
        manager
        if chief
        else tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=keep_checkpoints)
    )
    resumed_from = restore_latest(
        lambda path: state.restore(path, iterator=iterator),
        resume_manager,
        validate=lambda path: state_lib.check_optimizer_slots(state, path),
    )
    if workers > 1:
        _check_workers_agree(dist, state.step)
    if resumed_from:
        logging.info("resumed from %s at step %d", resumed_from, int(state.step.numpy()))
    elif init_from:
        state_lib.initialize_from(state, init_from)
    _log_learning_rate_changes(state.apply_learning_rate_factors())
    if chief:
        state_lib.write_model_config(model_dir, state.generator, input_data.class_names)
        with tf.io.gfile.GFile(os.path.join(model_dir, "operative_config.gin"), "w") as f:
            f.write(gin.config_str())

    train_step = make_train_step(state, dist, config)
    writer = tf.summary.create_file_writer(os.path.join(out_dir, "summaries"))
    sample_classes = np.arange(min(num_classes, max_sample_classes))
    sample_labels = np.repeat(sample_classes, samples_per_class).astype(np.int32)
    sample_z = imaging.truncated_z(len(sample_labels), state.generator.dim_z, seed=seed + 1)

    evaluator = best = None
    if eval_every:
        evaluator, best = _make_evaluator(
            state,
            out_dir,
            checkpoint,
            eval_reference_stats,
            eval_num_samples,
            eval_batch_size,
            eval_extractor,
            eval_extractor_path,
            eval_feature_layer,
            eval_logits_layer,
            seed,
        )

    start_step = int(state.step.numpy())
    started = time.time()
    progress = keras.utils.Progbar(total_steps, stateful_metrics=["loss/d", "loss/g", "img/s"])
    progress.update(start_step)
    metrics = {}
    guard = _Recovery(
        state,
        manager,
        max_consecutive_nonfinite=max_consecutive_nonfinite,
        max_restores=max_restores,
        lr_decay=lr_decay_on_restore,
    )
    watch = monitor_lib.CollapseMonitor(
        sigma_ratio=collapse_sigma_ratio, window=collapse_window, gap_threshold=collapse_gap
    )
    stopped_by_collapse = False
    last_time, last_step = time.time(), start_step
    with _StopRequest() as stop, writer.as_default():
        while int(state.step.numpy()) < total_steps:
            images, labels = next(iterator)
            metrics = {k: float(v) for k, v in train_step(images, labels).items()}
            step = int(state.step.numpy())
            if metrics["nonfinite"] > 0:
                if guard.nonfinite_step(step):
                    watch.reset()
                    continue
            else:
                guard.finite_step()
            if step % summary_every == 0 or step == total_steps:
                now = time.time()
                images_per_second = (
                    (step - last_step) * config.images_per_step / max(now - last_time, 1e-9)
                )
                last_time, last_step = now, step
                metrics["img/s"] = images_per_second
                sigmas = spectral_norm_summaries(state)
                if chief:
                    _write_scalars(state, metrics, step, input_data, sigmas)
                # Every worker evaluates the watch on the same (mirrored, all-reduced)
                # numbers, so all take the same decision.
                alarms = watch.update(step, sigmas, metrics["d/real"], metrics["d/fake"])
                if alarms:
                    for alarm in alarms[:5]:
                        logging.warning("collapse watch: %s", alarm)
                    if on_collapse == "stop" or (
                        on_collapse == "restore" and not guard.can_restore
                    ):
                        logging.error(
                            "stopping at step %d on a collapse (on_collapse=%r, %d restores "
                            "done); the last checkpoint %s precedes it",
                            step,
                            on_collapse,
                            guard.restores,
                            manager.latest_checkpoint,
                        )
                        stopped_by_collapse = True
                        break
                    if on_collapse == "restore":
                        guard.restore(step, "collapse")
                        watch.reset()
                        continue
            progress.update(
                step,
                [(k, metrics[k]) for k in ("loss/d", "loss/g")]
                + ([("img/s", metrics["img/s"])] if "img/s" in metrics else []),
            )
            if step % sample_every == 0 or step == total_steps:
                # The EMA's `u` is G's; re-estimate σ for the averaged weights first.
                layers.refine_spectral_norms(state.ema_generator)
                grid = sample_grid(state.ema_generator, sample_z, sample_labels)
                if chief:
                    tf.summary.image("images/ema", grid[None], step=step)
                    imaging.write_png(
                        os.path.join(model_dir, "samples", f"step_{step:08d}.png"), grid
                    )
            if evaluator is not None and step % eval_every == 0:
                _evaluate_and_keep_best(state, evaluator, best, step)
            out_of_time = max_minutes is not None and time.time() - started > 60 * max_minutes
            if stop.signal or out_of_time:
                # Saved even in a run of non-finite steps: the weights are those of the
                # last finite update, because bad updates are not applied.
                manager.save(checkpoint_number=step)
                logging.info(
                    "stopping at step %d (%s); saved %s",
                    step,
                    "signal" if stop.signal else "max_minutes reached",
                    manager.latest_checkpoint,
                )
                break
            if step % checkpoint_every == 0:
                if guard.consecutive_bad:
                    # Keep the last checkpoint good: a restore must not land in the bad run.
                    logging.warning("step %d: checkpoint skipped after a non-finite step", step)
                else:
                    manager.save(checkpoint_number=step)
        final_step = int(state.step.numpy())
        if not stopped_by_collapse and (
            manager.latest_checkpoint is None
            or not manager.latest_checkpoint.endswith(f"-{final_step}")
        ):
            manager.save(checkpoint_number=final_step)
    writer.flush()
    if chief and export_at_end and final_step >= total_steps:
        from tf_biggan import export

        export.export_from_state(state, os.path.join(model_dir, "export"), input_data.class_names)
    return {
        "step": final_step,
        "start_step": start_step,
        **metrics,
        "restores": guard.restores,
        "stopped_by_collapse": stopped_by_collapse,
    }


def _make_evaluator(
    state,
    out_dir,
    checkpoint,
    reference_stats,
    num_samples,
    batch_size,
    extractor,
    extractor_path,
    feature_layer,
    logits_layer,
    seed,
):
    """The periodic evaluator and the manager of the best checkpoint by FID."""
    from tf_biggan import eval as eval_lib

    if not reference_stats:
        raise ValueError("eval_every > 0 needs eval_reference_stats (see tools/reference_stats.py)")
    evaluator = eval_lib.PeriodicEvaluator(
        eval_lib.make_extractor(extractor, extractor_path, feature_layer, logits_layer),
        reference_stats,
        num_samples=num_samples,
        batch_size=batch_size,
        num_classes=state.generator.num_classes,
        dim_z=state.generator.dim_z,
        seed=seed + 2,
    )
    best = tf.train.CheckpointManager(checkpoint, os.path.join(out_dir, "best"), max_to_keep=1)
    return evaluator, best


def _evaluate_and_keep_best(state, evaluator, best, step):
    """Evaluates the EMA generator; saves to `best` when FID improves.

    Every worker evaluates the same (mirrored) generator and keeps its own record in its
    own directory, so all take the same decision and join the same saves.
    """
    generator = state.ema_generator
    layers.refine_spectral_norms(generator)

    def generate(z, y):
        return generator(z, y, training=False)

    metrics = evaluator(generate)
    logging.info("step %d evaluation: %s", step, metrics)
    for name in ("fid", "inception_score_mean", "kid_mean", "class_accuracy"):
        if metrics.get(name) is not None:
            tf.summary.scalar(f"eval/{name}", metrics[name], step=step)
    for k, value in enumerate(metrics.get("per_class_accuracy") or ()):
        if value is not None:
            tf.summary.scalar(f"eval/class_accuracy/{k}", value, step=step)
    best_file = os.path.join(best.directory, "best_fid.json")
    previous = None
    if tf.io.gfile.exists(best_file):
        with tf.io.gfile.GFile(best_file) as f:
            previous = json.load(f)["fid"]
    if previous is None or metrics["fid"] < previous:
        best.save(checkpoint_number=step)
        with tf.io.gfile.GFile(best_file, "w") as f:
            json.dump({"fid": metrics["fid"], "step": step}, f)


def _check_workers_agree(strategy, step) -> None:
    """Raises if the workers resumed at different steps (e.g. `model_dir` is not shared)."""
    # ReduceOp has only SUM and MEAN: the steps agree iff mean(s^2) == mean(s)^2.
    values = strategy.run(lambda: tf.cast(tf.stack([step, step * step]), tf.float64))
    mean, mean_square = strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None).numpy()
    if mean_square != mean * mean:
        raise RuntimeError(
            f"workers resumed at different steps (mean {mean:g}): model_dir must be on "
            "storage that every worker reads (the chief's checkpoints are restored by all)"
        )


def _worker_position(strategy) -> tuple[int, int]:
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


def _log_learning_rate_changes(changes) -> None:
    """One line per optimizer whose restored rate the configuration (and factor) replaced."""
    for name, previous, rate in changes:
        logging.info("%s learning rate %.4g → %.4g from the config", name, previous, rate)


def _scoped_optimizer(scope: str):
    with gin.config_scope(scope):
        return state_lib.make_optimizer()


def _check_network_config(state, resolution, num_classes):
    for model in (state.generator, state.discriminator):
        if model.resolution != resolution or model.num_classes != num_classes:
            raise ValueError(
                f"{model.name} is configured for {model.resolution} px / {model.num_classes} classes "
                f"but train() for {resolution} px / {num_classes} classes; bind both with the same "
                "gin macros (RESOLUTION, NUM_CLASSES)"
            )


def _write_scalars(state, metrics, step, input_data, sigmas):
    for name, value in metrics.items():
        tf.summary.scalar(name, value, step=step)
    for name, value in sigmas.items():
        tf.summary.scalar(name, value, step=step)
    for name, optimizer in (("g", state.g_optimizer), ("d", state.d_optimizer)):
        tf.summary.scalar(
            f"learning_rate/{name}", float(optimizer.learning_rate.numpy()), step=step
        )
    tf.summary.scalar("updates/skipped_nonfinite", int(state.skipped_updates.numpy()), step=step)
    if input_data.skipped is not None:
        tf.summary.scalar("data/skipped_images", int(input_data.skipped.numpy()), step=step)


# --------------------------------------------------------------------------- CLI


def define_flags() -> None:
    """Defines the CLI's flags (only when run as the program, so importing defines none)."""
    flags.DEFINE_multi_string("gin_config", [], "Gin config file(s), applied in order.")
    flags.DEFINE_multi_string(
        "gin_bindings", [], "Extra gin bindings, e.g. 'train.total_steps = 10'."
    )
    flags.DEFINE_string("model_dir", None, "Output directory; a restart with the same one resumes.")
    flags.DEFINE_string("init_from", None, "Checkpoint or model_dir to fine-tune from.")


def main(argv):
    del argv
    from tf_biggan import config as config_lib

    FLAGS = flags.FLAGS
    if not FLAGS.gin_config:
        raise app.UsageError(
            "--gin_config is required, e.g. --gin_config=gin_configs/quickstart.gin"
        )
    config_lib.parse_gin(FLAGS.gin_config, FLAGS.gin_bindings)
    model_dir = FLAGS.model_dir or os.path.join(
        "runs", os.path.splitext(os.path.basename(FLAGS.gin_config[-1]))[0]
    )
    logging.info("model_dir: %s", model_dir)
    kwargs = {"init_from": FLAGS.init_from} if FLAGS.init_from else {}
    result = train(model_dir, **kwargs)
    logging.info("finished at step %d", result["step"])


if __name__ == "__main__":
    # `python -m` runs this file as `__main__`; make `import tf_biggan.train`
    # (done when gin configurables are registered) return this module instead
    # of executing it a second time.
    sys.modules.setdefault("tf_biggan.train", sys.modules[__name__])
    define_flags()
    app.run(main)
