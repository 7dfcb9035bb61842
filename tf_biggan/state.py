"""The training state and its one checkpoint layout.

`TrainState` holds G, D, the EMA copy of G, both optimizers and the step
counter. Its `checkpoint()` is the only checkpoint layout of the project, so
`sample`, `eval` and `export` restore the EMA generator from a training
`model_dir` with `restore_ema_generator` without importing `train`.

`model_dir/model_config.json` records the generator's constructor arguments
and the class names, so a checkpoint can be rebuilt without the gin files.
"""

from __future__ import annotations

import io
import json
import math
import os

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import layers, networks, paths

MODEL_CONFIG_FILE = "model_config.json"
BEST_DIR = "best"
"""Subfolder of a `model_dir` where the periodic evaluation keeps the best checkpoint by FID."""
STANDING_STATS_FILE = "standing_stats.npz"
"""Truncation-indexed BN statistics written by `tf_biggan.standing_stats` for one checkpoint."""
LEARNING_RATE_FACTORS = "learning_rate_factors"
"""Checkpoint key of `TrainState.learning_rate_factors`."""


class LeanAdam(keras.optimizers.Adam):
    """Adam in PyTorch's form, without the first-moment slot when `beta_1 == 0`.

    PyTorch's Adam (the reference BigGAN's optimizer) adds ε after the bias correction of the
    second moment; Keras' adds it before:

        PyTorch:  w ← w − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
        Keras:    w ← w − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)

    so Keras' ε acts as `ε / √(1 − β2ᵗ)`: 32 ε at step 1 with β2 0.999, which halves the
    first update of every weight whose gradient is near 3e-5 (ε 1e-6). `epsilon_after_correction`
    picks the form: True (the default) is PyTorch's, False Keras' (the form of tf_biggan
    0.2 and earlier, to continue such a run bit for bit).

    With β1 = 0 (BigGAN's setting) the first moment is the current gradient, so the slot
    Keras keeps for it is a never-needed copy of every weight (282 MB for G and 352 MB for
    D at 128 px); this optimizer keeps one slot (`v`) per weight then. With β1 ≠ 0 it keeps
    Keras' two, and with `amsgrad` it is Keras' Adam. The slots differ between β1 = 0 and
    β1 ≠ 0, so a checkpoint resumes only under the same β1 setting
    (`check_optimizer_slots` says so before restoring); the form does not change the slots.
    """

    def __init__(self, *args, epsilon_after_correction: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon_after_correction = bool(epsilon_after_correction)

    @property
    def _keeps_first_moment(self) -> bool:
        return self.beta_1 != 0 or self.amsgrad

    def build(self, var_list):
        if self._keeps_first_moment:
            super().build(var_list)
            return
        if self.built:
            return
        # The base optimizer's build (iterations, learning rate), skipping Adam's slots.
        super(keras.optimizers.Adam, self).build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or (self._keeps_first_moment and not self.epsilon_after_correction):
            super().update_step(gradient, variable, learning_rate)
            return
        ops = keras.ops
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        index = self._get_variable_index(variable)
        v = self._velocities[index]
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self._keeps_first_moment:
            m = self._momentums[index]
            self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
            beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
            step, lr = m, ops.divide(lr, 1 - beta_1_power)
        else:
            step = gradient
        if self.epsilon_after_correction:
            denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(1 - beta_2_power)), self.epsilon)
            self.assign_sub(variable, ops.divide(ops.multiply(step, lr), denominator))
            return
        alpha = lr * ops.sqrt(1 - beta_2_power)
        self.assign_sub(
            variable, ops.divide(ops.multiply(step, alpha), ops.add(ops.sqrt(v), self.epsilon))
        )

    def get_config(self):
        return {**super().get_config(), "epsilon_after_correction": self.epsilon_after_correction}


@gin.configurable
def make_optimizer(
    learning_rate: float = 1e-4,
    beta_1: float = 0.0,
    beta_2: float = 0.999,
    epsilon: float = 1e-6,
    epsilon_after_correction: bool = True,
) -> keras.optimizers.Optimizer:
    """Adam with BigGAN's defaults (β1 0, β2 0.999, eps 1e-6), as a `LeanAdam`.

    G and D bind it in gin scopes: `generator/make_optimizer.learning_rate = 1e-4`,
    `discriminator/make_optimizer.learning_rate = 4e-4`. `epsilon_after_correction`: ε in
    PyTorch's place (the reference's; default) or, with False, in Keras' (tf_biggan ≤ 0.2).
    """
    return LeanAdam(
        learning_rate=learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        epsilon_after_correction=epsilon_after_correction,
    )


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


def write_model_config(model_dir: str, generator, class_names=None, extra=None) -> None:
    """Writes `model_dir/model_config.json`: the generator config, the class names and the
    entries of `extra` (e.g. a converted model's source)."""
    tf.io.gfile.makedirs(model_dir)
    config = {"generator": generator.get_config(), "class_names": list(class_names or [])}
    config.update(extra or {})
    with tf.io.gfile.GFile(os.path.join(model_dir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)


def read_model_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a tf_biggan training directory"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def generator_from_config(config: dict) -> networks.Generator:
    """Builds an (unbuilt) Generator from a `Generator.get_config()` dict, ignoring gin."""
    kwargs = dict(config)
    return networks.Generator(**kwargs)


def restore_ema_generator(model_dir: str, checkpoint_path: str | None = None):
    """Restores the EMA generator of a training run.

    Args:
      model_dir: the training `model_dir`.
      checkpoint_path: a specific checkpoint prefix; default the latest.

    With a `standing_stats.npz` computed for this checkpoint (`tf_biggan.standing_stats`),
    the generator gets its truncation-indexed BN statistics (`num_standing_stats` set).

    Returns:
      `(generator, config, checkpoint_path)` with `config` the contents of
      `model_config.json`.

    Raises:
      FileNotFoundError: no config or no checkpoint in `model_dir`.
    """
    model_dir, checkpoint_path = paths.expand(model_dir), paths.expand(checkpoint_path)
    config = read_model_config(model_dir)
    checkpoint_path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if checkpoint_path is None:
        raise FileNotFoundError(f"no checkpoint in {model_dir}")
    generator = generator_from_config(config["generator"])
    generator.build_by_call()
    step = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(ema_generator=generator, step=step).restore(checkpoint_path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    table = _standing_table(model_dir, checkpoint_path)
    if table:
        generator = _with_standing_table(generator, table, model_dir)
    config["step"] = int(step.numpy())
    return generator, config, checkpoint_path


def _checkpoint_steps(directory: str) -> dict[int, str]:
    """The checkpoints of a folder by their number: `{N: ".../ckpt-N"}` (from the index files)."""
    found = {}
    for index in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index")):
        number = os.path.basename(index)[len("ckpt-") : -len(".index")]
        if number.isdigit():
            found[int(number)] = index[: -len(".index")]
    return found


def find_checkpoint(model_dir: str, step: int | None = None, best: bool = False) -> str:
    """The checkpoint prefix of a training `model_dir` to restore.

    Args:
      model_dir: the training `model_dir`.
      step: the checkpoint saved at this step (`model_dir/ckpt-<step>`, the training loop
        numbers its checkpoints by step); None for the latest.
      best: the best checkpoint by FID that the periodic evaluation keeps in
        `model_dir/best/` (see `tf_biggan.summaries.PeriodicEvaluation`).

    Returns:
      A checkpoint prefix such as `model_dir/ckpt-1000`.

    Raises:
      ValueError: both `step` and `best`.
      FileNotFoundError: no such checkpoint; the message lists the steps that exist.
    """
    model_dir = paths.expand(model_dir)
    if best and step is not None:
        raise ValueError("give a checkpoint step or best, not both")
    if best:
        best_dir = os.path.join(model_dir, BEST_DIR)
        path = tf.train.latest_checkpoint(best_dir) if tf.io.gfile.isdir(best_dir) else None
        if path is None:
            raise FileNotFoundError(
                f"no best checkpoint kept in {best_dir}: the periodic evaluation keeps one "
                "when training runs with train.eval_every > 0"
            )
        return path
    if step is None:
        path = tf.train.latest_checkpoint(model_dir)
        if path is None:
            raise FileNotFoundError(f"no checkpoint in {model_dir}")
        return path
    available = _checkpoint_steps(model_dir)
    if int(step) not in available:
        listed = ", ".join(str(n) for n in sorted(available)) or "none"
        raise FileNotFoundError(
            f"no checkpoint of step {step} in {model_dir}; its checkpoints are at steps: {listed}"
        )
    return available[int(step)]


def _with_standing_table(generator, table, model_dir: str):
    """A copy of `generator` whose BN layers hold `table` (one `(mean, variance)` per layer
    of `layers.batch_norm_layers`); any table `generator` had is replaced."""
    config = dict(generator.get_config(), num_standing_stats=table[0][0].shape[0])
    copy = generator_from_config(config)
    copy.build_by_call()
    norms = layers.batch_norm_layers(copy)
    if len(norms) != len(table):
        raise ValueError(
            f"{STANDING_STATS_FILE} in {model_dir} has {len(table)} tables for a generator "
            f"with {len(norms)} batch norms"
        )
    tables = {id(v) for bn in norms for v in (bn.standing_mean, bn.standing_variance)}
    old_tables = {
        id(v)
        for bn in layers.batch_norm_layers(generator)
        if bn.num_standing_stats
        for v in (bn.standing_mean, bn.standing_variance)
    }
    source = [v for v in generator.variables if id(v) not in old_tables]
    copy_variables(source, [v for v in copy.variables if id(v) not in tables])
    for bn, (mean, variance) in zip(norms, table, strict=True):
        bn.standing_mean.assign(mean)
        bn.standing_variance.assign(variance)
    return copy


def _standing_table(model_dir: str, checkpoint_path: str):
    """The `(mean [T, C], variance [T, C])` per BN layer stored in `model_dir` for
    `checkpoint_path`, or None: no table, or one computed for another checkpoint (logged,
    since sampling then uses the moving statistics)."""
    path = os.path.join(model_dir, STANDING_STATS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        arrays = np.load(io.BytesIO(f.read()))
        for_checkpoint = str(arrays["checkpoint"])
        count = sum(1 for name in arrays.files if name.startswith("mean_"))
        table = [(arrays[f"mean_{i}"], arrays[f"variance_{i}"]) for i in range(count)]
    if for_checkpoint != os.path.basename(checkpoint_path):
        logging.warning(
            "%s was computed for %s, not %s: it is not used (run tools/standing_stats.py "
            "again for this checkpoint)",
            path,
            for_checkpoint,
            os.path.basename(checkpoint_path),
        )
        return None
    return table


def initialize_from(state: TrainState, source: str) -> None:
    """Initialises G, D and EMA G of a new run from another run's checkpoint (fine-tuning).

    Args:
      state: the built state of the new run.
      source: a training or converted `model_dir` (its latest checkpoint is used) or a
        checkpoint prefix inside one.

    When the number of classes differs, the class embeddings (G's shared
    embedding, D's projection embedding) keep their fresh initialisation and
    every other weight is loaded. A checkpoint without a discriminator (a converted
    generator-only release) leaves D freshly initialised. The optimizers and the step
    start afresh.
    """
    source = paths.expand(source)
    model_dir = source if tf.io.gfile.isdir(source) else os.path.dirname(source)
    checkpoint_path = tf.train.latest_checkpoint(source) if tf.io.gfile.isdir(source) else source
    if checkpoint_path is None:
        raise FileNotFoundError(f"no checkpoint to initialise from in {source}")
    source_config = read_model_config(model_dir)["generator"]
    saved = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(checkpoint_path)}
    names = [n for n in ("generator", "discriminator", "ema_generator") if n in saved]
    if "discriminator" not in names:
        logging.warning("%s has no discriminator: D starts from its initialisation", source)
    targets = {name: getattr(state, name) for name in names}
    if source_config["num_classes"] != state.generator.num_classes:
        targets = _old_class_count_copies(state, source_config["num_classes"], names)
    status = tf.train.Checkpoint(**targets).restore(checkpoint_path)
    status.expect_partial().assert_existing_objects_matched()
    for name, old in targets.items():
        new = getattr(state, name)
        if old is new:
            continue
        class_layers = [new.embedding] if name == "discriminator" else new.class_embedding_layers
        skip = {id(v) for layer in class_layers for v in layer.variables}
        for source_var, target_var in zip(old.variables, new.variables, strict=True):
            if id(target_var) not in skip:
                target_var.assign(source_var)


def _old_class_count_copies(state: TrainState, num_classes: int, names) -> dict:
    """Built copies of the networks `names` of `state` with `num_classes` classes."""
    copies = {}
    for name in names:
        network = getattr(state, name)
        cls = networks.Discriminator if name == "discriminator" else networks.Generator
        copies[name] = cls(**dict(network.get_config(), num_classes=num_classes, name=name))
        copies[name].build_by_call()
    return copies
