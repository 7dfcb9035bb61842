"""The training state and its one checkpoint layout.

`TrainState` holds G, D, the EMA copy of G, both optimizers and the step
counter. Its `checkpoint()` is the only checkpoint layout of the project; reading a
`model_dir` (its config, checkpoints and EMA generator) is `tf_biggan.model_files`'s job.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_biggan import layers

LEARNING_RATE_FACTORS = "learning_rate_factors"
"""Checkpoint key of `TrainState.learning_rate_factors`."""


class TrainState:
    """G, D, EMA G, their optimizers and the step, built under one strategy scope.

    Args:
      generator, discriminator, ema_generator: unbuilt networks; the EMA
        generator must have the generator's configuration.
      g_optimizer, d_optimizer: Keras optimizers.

    Call `build()` inside `strategy.scope()` before the first traced step: it
    creates every variable, including the optimizers' slots, and copies G's
    weights into the EMA generator.
    """

    def __init__(self, generator, discriminator, ema_generator, g_optimizer, d_optimizer):
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # Updates skipped because a loss or gradient was not finite.
        self.skipped_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
        # The learning rates the optimizers were built with (from the config) and the factors
        # the run applied to them itself (e.g. `lr_decay_on_restore`), G then D. Only the
        # factors are checkpointed: a resumed run uses the configured rates times the saved
        # factors, so a lowered rate in the config takes effect and a decay survives a crash.
        self.base_learning_rates = (
            _float_learning_rate(g_optimizer),
            _float_learning_rate(d_optimizer),
        )
        self.learning_rate_factors = tf.Variable(
            [1.0, 1.0], dtype=tf.float32, trainable=False, name="learning_rate_factors"
        )

    def build(self) -> None:
        for model in (self.generator, self.discriminator, self.ema_generator):
            model.build_by_call()

        def architecture(model):
            return {k: v for k, v in model.get_config().items() if k != "name"}

        if architecture(self.generator) != architecture(self.ema_generator):
            raise ValueError("the EMA generator must have the generator's configuration")
        shared = {id(v) for v in self.generator.variables} & {
            id(v) for v in self.discriminator.variables
        }
        if shared:
            raise ValueError("generator and discriminator must not share variables")
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        copy_variables(self.generator.variables, self.ema_generator.variables)

    @property
    def optimizers(self) -> dict:
        """`{"generator": g_optimizer, "discriminator": d_optimizer}`."""
        return {"generator": self.g_optimizer, "discriminator": self.d_optimizer}

    def checkpoint(self, **extra) -> tf.train.Checkpoint:
        """The project's checkpoint layout; `extra` adds objects such as the input iterator."""
        return tf.train.Checkpoint(**self._checkpoint_objects(), **extra)

    def _checkpoint_objects(self, with_factors: bool = True) -> dict:
        objects = {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "ema_generator": self.ema_generator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "step": self.step,
            "skipped_updates": self.skipped_updates,
        }
        if with_factors:
            objects[LEARNING_RATE_FACTORS] = self.learning_rate_factors
        return objects

    def restore(self, path: str, **extra) -> None:
        """Restores every object of `checkpoint(**extra)` from the checkpoint `path`.

        Checkpoints of tf_biggan 0.2 have no learning-rate factors; they restore with
        factors of 1. Afterwards the optimizers run at the configured rates times the
        factors (`apply_learning_rate_factors`).

        Raises:
          AssertionError: an object of the state has no value in the checkpoint.
        """
        saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(path)}
        with_factors = LEARNING_RATE_FACTORS in saved
        if not with_factors:
            self.learning_rate_factors.assign([1.0, 1.0])
        checkpoint = tf.train.Checkpoint(**self._checkpoint_objects(with_factors), **extra)
        # Partial on the checkpoint's side only: it may hold more (the input iterator).
        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()

    def apply_learning_rate_factors(self) -> list[tuple[str, float, float]]:
        """Sets each optimizer's rate to its configured rate times the run's factor.

        Returns:
          `(network, previous rate, new rate)` for each optimizer whose rate changed.
        """
        changes = []
        factors = self.learning_rate_factors.numpy()
        for (name, optimizer), base, factor in zip(
            self.optimizers.items(), self.base_learning_rates, factors, strict=True
        ):
            previous = _float_learning_rate(optimizer)
            rate = float(base * factor)
            if not math.isclose(previous, rate, rel_tol=1e-6):
                changes.append((name, previous, rate))
            optimizer.learning_rate = rate
        return changes

    def scale_learning_rates(self, factor: float) -> None:
        """Multiplies both learning rates by `factor`, recorded in the checkpointed factors."""
        self.learning_rate_factors.assign(self.learning_rate_factors * factor)
        self.apply_learning_rate_factors()


def _float_learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class IncompatibleCheckpointError(ValueError):
    """A readable checkpoint written by a differently configured run."""


def check_optimizer_slots(state: TrainState, checkpoint_path: str) -> None:
    """Checks that the checkpoint's optimizer slots are the ones `state` has.

    Keras tracks an optimizer's slots by position, so slots of another layout
    (Adam with and without its first moment, see `LeanAdam`) would load into
    the wrong variables or fail with a bare shape error.

    Raises:
      IncompatibleCheckpointError: the slot count or a slot's shape differs.
    """
    shapes = tf.train.load_checkpoint(checkpoint_path).get_variable_to_shape_map()
    for name in ("g_optimizer", "d_optimizer"):
        optimizer = getattr(state, name)
        prefix = f"{name}/_variables/"
        saved = {
            int(key[len(prefix) :].split("/")[0]): shape
            for key, shape in shapes.items()
            if key.startswith(prefix)
        }
        if not saved:
            continue
        expected = [list(v.shape) for v in optimizer.variables]
        # With equal counts every saved index is in range, so the shapes can be compared.
        if max(saved) + 1 != len(expected) or any(
            shape != expected[i] for i, shape in saved.items()
        ):
            raise IncompatibleCheckpointError(
                f"{checkpoint_path}: {name} has {max(saved) + 1} variables in the checkpoint "
                f"but {len(expected)} in this run; it was written with other optimizer "
                "settings (Adam keeps a first-moment slot only for beta_1 != 0, and "
                "tf_biggan before 0.2 kept it always). Resume with the settings it was "
                "written with, or start a new model_dir with --init_from to keep its weights "
                "and start the optimizers afresh"
            )


def copy_variables(source, target) -> None:
    """Assigns each source variable's value to the target variable at the same position."""
    if len(source) != len(target):
        raise ValueError(f"cannot copy {len(source)} variables into {len(target)}")
    for s, t in zip(source, target, strict=True):
        if tuple(s.shape) != tuple(t.shape):
            raise ValueError(f"shape mismatch copying {s.path}: {s.shape} vs {t.shape}")
        t.assign(s)


def spectral_state_variables(model) -> set[int]:
    """ids of the SN `u` and `sigma` variables of `model` (copied, not averaged, by the EMA)."""
    ids = set()
    for layer in layers.spectral_layers(model):
        ids.add(id(layer.u))
        ids.add(id(layer.sigma))
    return ids
