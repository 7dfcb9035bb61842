"""One BigGAN training step, as plain functions: the algorithm of the paper.

    for update in range(d_steps):   d_update   (real batch, fakes from G in training mode)
    g_update                        (fresh z and labels)
    [clamp_sigma0]                  (the paper's σ0 clamp, optional)
    ema_update                      (EMA of G's weights)

Each update can accumulate gradients over `accumulation_steps` micro-batches for a large
effective batch on small hardware. Losses are averaged over the global batch, so an update
does not depend on the number of replicas. An update whose gradient is not finite on any
replica is skipped on all of them and counted (`nonfinite`).

Randomness: z and the fake labels are drawn statelessly from `(seed, step, update)` for
the whole global batch and sliced per replica and micro-batch (`latents.draw_latents`), so a
resumed run draws exactly what an uninterrupted one would, and the step on N replicas
equals the step on one device.

`make_train_step` composes the functions into the `tf.function` that training, the
benchmark and the tests all run. Its step also accepts the latents as an argument instead of
drawing them (`Latents`), for comparisons with another implementation's iteration
(`tools/port_step_parity.py`); training never passes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gin
import tensorflow as tf

from tf_biggan import distribute, layers, losses
from tf_biggan import state as state_lib
from tf_biggan.latents import Latents, check_latents, draw_latents, fold_in


@gin.configurable
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
      augment_policy: DiffAugment policy applied to D's inputs ("" = off), e.g.
        "color,translation,cutout".
      seed: base seed of the stateless z / label sampling (the run also seeds the weights'
        initialisation and the data order with it).
      jit_compile: compile the per-replica step with XLA.
    """

    batch_size: int = 64
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


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """What the step's functions need besides the state: the config and derived sizes.

    Attributes:
      config: the `StepConfig`.
      per_replica: images per replica per micro-batch.
      local_replicas: replicas on this worker.
      replicas: replicas in sync across the job.
      d_real_loss, d_fake_loss: the two per-example terms of D's loss of `config.loss`,
        on the real and on the fake logits (D's loss is their sum).
      g_loss: G's loss of `config.loss`.
      g_ortho_kernels, d_ortho_kernels: the kernels of the orthogonal regulariser.
    """

    config: StepConfig
    per_replica: int
    local_replicas: int
    replicas: int
    d_real_loss: Callable
    d_fake_loss: Callable
    g_loss: Callable
    g_ortho_kernels: list
    d_ortho_kernels: list

    @property
    def scale(self) -> float:
        """Each example's weight in a loss: one over the global batch."""
        return 1.0 / self.config.batch_size

    @property
    def micro_batch(self) -> int:
        """Images per micro-batch, global."""
        return self.config.batch_size // self.config.accumulation_steps


def plan_step(
    state: state_lib.TrainState, strategy: tf.distribute.Strategy, config: StepConfig
) -> StepPlan:
    _, g_loss = losses.loss_functions(config.loss)
    d_real_loss, d_fake_loss = losses.discriminator_loss_terms(config.loss)
    # The paper leaves the shared class embedding out of the regulariser.
    shared = state.generator.shared_embedding
    return StepPlan(
        config=config,
        per_replica=replica_batch_size(config, strategy),
        local_replicas=distribute.local_replica_count(strategy),
        replicas=strategy.num_replicas_in_sync,
        d_real_loss=d_real_loss,
        d_fake_loss=d_fake_loss,
        g_loss=g_loss,
        g_ortho_kernels=regularizable_kernels(
            state.generator, exclude=shared.trainable_variables if shared is not None else ()
        ),
        d_ortho_kernels=regularizable_kernels(state.discriminator),
    )


def regularizable_kernels(model, exclude=()) -> list:
    """Kernels of rank >= 2 (conv, linear, embedding), minus `exclude` (by identity)."""
    excluded = {id(v) for v in exclude}
    return [v for v in model.trainable_variables if len(v.shape) >= 2 and id(v) not in excluded]


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where a micro-batch sits: the step, the update in it, the micro-batch, the replica.

    `given` holds the step's `Latents` when the caller passed them, else None.
    """

    step: tf.Tensor
    update: int
    micro: int
    replica: tf.Tensor
    given: Latents | None = None

    def latents(self, plan: StepPlan, dim_z: int, num_classes: int):
        """z `[per_replica, dim_z]` and labels `[per_replica]` for this replica's slice.

        The whole update's batch is drawn (or taken from `given`) and sliced, so the
        draws do not depend on how the batch is split into micro-batches or replicas.
        """
        config = plan.config
        if self.given is None:
            z, labels = draw_latents(
                config.seed, self.step, self.update, config.batch_size, dim_z, num_classes
            )
        else:
            z = tf.cast(self.given.z[self.update], tf.float32)
            labels = tf.cast(self.given.labels[self.update], tf.int32)
        start = self.micro * plan.micro_batch + self.replica * plan.per_replica
        return z[start : start + plan.per_replica], labels[start : start + plan.per_replica]

    def augment(self, plan: StepPlan, images: tf.Tensor, which: int) -> tf.Tensor:
        """DiffAugment of D's input `which` (0 real, 1 fake) with this slot's seed."""
        if not plan.config.augment_policy:
            return images
        from tf_biggan import augment

        seed = fold_in(
            plan.config.seed, self.step, self.update, self.micro, self.replica, which + 2
        )
        return augment.diff_augment(images, plan.config.augment_policy, seed=seed)


# --------------------------------------------------------------------------- gradients


def discriminator_gradients(state, plan: StepPlan, real, real_labels, slot: Slot):
    """D's gradients on one micro-batch of reals and fresh fakes.

    Returns:
      `(grads, sums)`: `sums` holds `loss` (with the R1 penalty), `real_loss` and
      `fake_loss` (the loss's two terms, without the penalty), each this replica's share of
      the global mean, and `real_logits`, `fake_logits`, the sums of D's outputs.
    """
    generator, discriminator = state.generator, state.discriminator
    config = plan.config
    z, fake_labels = slot.latents(plan, generator.dim_z, generator.num_classes)
    fake = generator(z, tf.one_hot(fake_labels, generator.num_classes), training=True)
    fake = tf.stop_gradient(fake)
    real = tf.cast(real, fake.dtype)  # float32 images, float64 ones under a float64 policy
    both = tf.concat([slot.augment(plan, real, 0), slot.augment(plan, fake, 1)], 0)
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
            real_logits, fake_logits = tf.split(discriminator(both, both_labels, training=True), 2)
            penalty = 0.0
        real_loss, fake_loss = plan.d_real_loss(real_logits), plan.d_fake_loss(fake_logits)
        loss = tf.reduce_sum(real_loss + fake_loss + penalty) * plan.scale
    grads = tape.gradient(loss, discriminator.trainable_variables)
    return grads, {
        "loss": loss,
        "real_loss": tf.reduce_sum(real_loss) * plan.scale,
        "fake_loss": tf.reduce_sum(fake_loss) * plan.scale,
        "real_logits": tf.reduce_sum(real_logits),
        "fake_logits": tf.reduce_sum(fake_logits),
    }


def generator_gradients(state, plan: StepPlan, slot: Slot):
    """G's gradients on one micro-batch of fresh z and labels: `(grads, loss)`."""
    generator, discriminator = state.generator, state.discriminator
    z, labels = slot.latents(plan, generator.dim_z, generator.num_classes)
    with tf.GradientTape() as tape:
        fake = generator(z, tf.one_hot(labels, generator.num_classes), training=True)
        fake_logits = discriminator(slot.augment(plan, fake, 1), labels, training=True)
        loss = tf.reduce_sum(plan.g_loss(fake_logits)) * plan.scale
    return tape.gradient(loss, generator.trainable_variables), loss


def sum_gradients(total, grads):
    """Element-wise sum of two gradient lists in which None stands for zero.

    The orthogonal regulariser has no gradient (None) for the variables it does not
    regularise, and the first micro-batch starts from a list of Nones.
    """
    return [
        g if t is None else t if g is None else t + g for t, g in zip(total, grads, strict=True)
    ]


def orthogonal_gradients(model, kernels, beta: float, replicas: int) -> list:
    """The orthogonal regulariser's gradients, one per trainable variable (None if not in it)."""
    with tf.GradientTape() as tape:
        # Divided by the replica count because the optimizer sums replicas' gradients.
        penalty = losses.orthogonal_regularizer(kernels, beta) / replicas
    grads = tape.gradient(penalty, kernels)
    by_id = {id(v): g for v, g in zip(kernels, grads, strict=True)}
    return [by_id.get(id(v)) for v in model.trainable_variables]


# --------------------------------------------------------------------------- updates


def all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])


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


def apply_update(model, optimizer, grads, ortho_kernels, ortho_beta, replicas) -> tf.Tensor:
    """Adds the orthogonal regulariser's gradients and applies the update if finite.

    Returns 1.0 when the update was skipped (a non-finite gradient on any replica), as a
    tensor that is ready only once the update is done (or skipped).
    """
    if ortho_beta > 0:
        grads = sum_gradients(
            grads, orthogonal_gradients(model, ortho_kernels, ortho_beta, replicas)
        )
    context = tf.distribute.get_replica_context()
    bad = 1.0 - tf.cast(all_finite(grads), tf.float32)
    finite = context.all_reduce(tf.distribute.ReduceOp.SUM, bad) == 0.0
    applied = apply_if_finite(optimizer, grads, model.trainable_variables, finite)
    with tf.control_dependencies([applied]):
        return 1.0 - tf.cast(finite, tf.float32)


def d_update(state, plan: StepPlan, images, labels, step, update: int, replica, after, given):
    """One D update on this replica's micro-batches `images [k, n, R, R, 3]`, `labels [k, n]`.

    Each micro-step starts once `after` (a list of tensors) and the previous micro-step
    are done. `given`: the step's `Latents`, or None to draw them. Returns
    `(skipped, sums)`: `skipped` is 1.0 when the update was not applied, `sums` the
    micro-batches' `discriminator_gradients` sums, added up.
    """
    grads = [None] * len(state.discriminator.trainable_variables)
    sums = {}
    for micro in range(plan.config.accumulation_steps):
        with tf.control_dependencies(after):
            g, micro_sums = discriminator_gradients(
                state, plan, images[micro], labels[micro], Slot(step, update, micro, replica, given)
            )
        grads = sum_gradients(grads, g)
        after = [t for t in grads if t is not None]
        sums = {name: sums.get(name, 0.0) + value for name, value in micro_sums.items()}
    skipped = apply_update(
        state.discriminator,
        state.d_optimizer,
        grads,
        plan.d_ortho_kernels,
        plan.config.d_ortho_beta,
        plan.replicas,
    )
    return skipped, sums


def g_update(state, plan: StepPlan, step, replica, after, given):
    """One G update (after the D updates, on fresh z); returns `(skipped, loss)`."""
    config = plan.config
    grads = [None] * len(state.generator.trainable_variables)
    loss = 0.0
    for micro in range(config.accumulation_steps):
        with tf.control_dependencies(after):
            g, micro_loss = generator_gradients(
                state, plan, Slot(step, config.d_steps, micro, replica, given)
            )
        grads = sum_gradients(grads, g)
        after = [t for t in grads if t is not None]
        loss += micro_loss
    skipped = apply_update(
        state.generator,
        state.g_optimizer,
        grads,
        plan.g_ortho_kernels,
        config.g_ortho_beta,
        plan.replicas,
    )
    return skipped, loss


def replica_step(state, plan: StepPlan, images, labels, step, given=None) -> dict:
    """`d_steps` D updates, then one G update, on this replica (call in replica context).

    `given`: the step's `Latents`, or None to draw them (training).

    Each micro-step and each update starts only when the one before it is done. Nothing
    else orders them (the G step's forward pass reads no variable that D's update writes),
    and TensorFlow's executor would otherwise run them side by side, holding the
    activations of both at once: at 128 px the step's peak memory was about 1 GB higher
    for no gain in speed (docs/performance.md).
    """
    config = plan.config
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    local = replica % plan.local_replicas
    shape = [config.d_steps, config.accumulation_steps, plan.local_replicas, plan.per_replica]
    images = tf.reshape(images, shape + images.shape[1:].as_list())
    labels = tf.reshape(tf.cast(labels, tf.int32), shape)
    skipped = 0.0
    after = []
    per_update = []
    for update in range(config.d_steps):
        flag, sums = d_update(
            state,
            plan,
            images[update, :, local],
            labels[update, :, local],
            step,
            update,
            replica,
            after,
            given,
        )
        skipped += flag
        after = [skipped]
        per_update.append(sums)
    flag, g_loss = g_update(state, plan, step, replica, after, given)
    skipped += flag

    def mean_over_updates(name):
        return tf.add_n([sums[name] for sums in per_update]) / config.d_steps

    # Summed over replicas by the caller: each term is already divided by the global batch.
    metrics = {
        "loss/d": mean_over_updates("loss"),
        "loss/d_real": mean_over_updates("real_loss"),
        "loss/d_fake": mean_over_updates("fake_loss"),
        "loss/g": g_loss,
        "d/real": mean_over_updates("real_logits") / config.batch_size,
        "d/fake": mean_over_updates("fake_logits") / config.batch_size,
        "nonfinite": skipped / plan.replicas,
    }
    if config.d_steps > 1:
        for update, sums in enumerate(per_update):
            metrics[f"loss/d_real/update{update}"] = sums["real_loss"]
            metrics[f"loss/d_fake/update{update}"] = sums["fake_loss"]
    return metrics


# --------------------------------------------------------------------------- after the updates


def ema_decay(config: StepConfig, step) -> tf.Tensor:
    """The EMA decay at `step`: 0 (a copy) before the start step, warmed up if configured."""
    decay = tf.constant(config.ema_decay, tf.float32)
    if config.ema_warmup:
        updates = tf.cast(step - config.ema_start_step, tf.float32)
        decay = tf.minimum(decay, (1.0 + updates) / (10.0 + updates))
    return tf.where(step >= config.ema_start_step, decay, 0.0)


def ema_update(state, strategy: tf.distribute.Strategy, config: StepConfig, step) -> None:
    """EMA G ← decay · EMA G + (1 − decay) · G; SN vectors and BN statistics are copied.

    Written as `decay · t + (1 − decay) · s`, the rounding of every release: a resumed run
    stays bit-identical to an uninterrupted one across versions. (The one-kernel form
    `t − (1 − decay)(t − s)` rounds differently and gained nothing measurable,
    docs/performance.md.) Call in cross-replica context.
    """
    decay = ema_decay(config, step)
    spectral_ids = state_lib.spectral_state_variables(state.generator)
    pairs = zip(state.generator.variables, state.ema_generator.variables, strict=True)
    for source, target in pairs:
        if id(source) in spectral_ids:
            strategy.extended.update(target.value, lambda t, s: t.assign(s), args=(source.value,))
        else:
            strategy.extended.update(
                target.value,
                lambda t, s: t.assign(
                    tf.cast(decay, t.dtype) * t
                    + tf.cast(1.0 - decay, t.dtype) * tf.cast(s, t.dtype)
                ),
                args=(source.value,),
            )


def clamp_sigma0(state, strategy: tf.distribute.Strategy, config: StepConfig) -> None:
    """The paper's σ0 clamp on every trainable SN kernel of G (cross-replica context)."""
    for layer in layers.spectral_layers(state.generator):
        if not layer.trainable:
            continue
        kernel = tf.convert_to_tensor(layer.kernel.value)
        delta = sigma0_clamp_update(
            tf.reshape(kernel, [-1, kernel.shape[-1]]),
            sigma_clamp=config.sigma0_clamp,
            ratio=config.sigma0_clamp_ratio,
        )
        strategy.extended.update(
            layer.kernel.value, lambda k, d: k.assign_sub(tf.reshape(d, k.shape)), args=(delta,)
        )


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


# --------------------------------------------------------------------------- the step


def make_train_step(
    state: state_lib.TrainState, strategy: tf.distribute.Strategy, config: StepConfig
):
    """Builds the training step.

    Args:
      state: a built `TrainState` (variables created under `strategy.scope()`).
      strategy: the distribution strategy.
      config: a `StepConfig`.

    Returns:
      A `tf.function` `train_step(images, labels, latents=None)` taking this worker's
      batch for the whole step — images float32 `[d_steps * batch_size / workers,
      R, R, 3]` in [-1, 1] and int labels `[d_steps * batch_size / workers]` — and
      returning a flat dict of float32 scalars, averaged over replicas: `loss/d` (D's loss,
      the mean over its updates), its terms `loss/d_real` and `loss/d_fake` (with more
      than one D update also per update, `loss/d_real/update<k>`, `loss/d_fake/update<k>`),
      `loss/g`, `d/real` and `d/fake` (D's mean outputs) and `nonfinite`. `latents`, a
      `Latents`, replaces the step's drawn z and fake classes (comparisons only); it is
      traced separately from the step without it.
    """
    plan = plan_step(state, strategy, config)

    def run_replica(images, labels, step, given):
        return replica_step(state, plan, images, labels, step, given)

    replica_fn = tf.function(run_replica, jit_compile=True) if config.jit_compile else run_replica

    @tf.function
    def train_step(images, labels, latents: Latents | None = None):
        if latents is not None:
            gen = state.generator
            latents = check_latents(
                latents, config.d_steps + 1, config.batch_size, gen.dim_z, gen.num_classes
            )
        step = state.step.read_value()
        metrics = strategy.run(replica_fn, args=(images, labels, step, latents))
        metrics = {
            name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in metrics.items()
        }
        if config.clamps_sigma0:
            clamp_sigma0(state, strategy, config)
        ema_update(state, strategy, config, step)
        state.step.assign_add(1)
        state.skipped_updates.assign_add(tf.cast(tf.round(metrics["nonfinite"]), tf.int64))
        return metrics

    return train_step
