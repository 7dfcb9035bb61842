"""Reading a `model_dir`, in one place: its config, its checkpoints, the EMA generator and
its standing statistics. `load`, `sample`, `export`, `eval`, `standing_stats` and `convert`
all read a model_dir through here.

A `model_dir` holds:
- `model_config.json` (`MODEL_CONFIG_FILE`): the generator's constructor arguments and the
  class names (and, for converted weights, their source), so that a checkpoint can be
  rebuilt without the gin files;
- the checkpoints `ckpt-<step>` of `tf_biggan.state.TrainState.checkpoint()` (converted
  weights: the same layout, the generators only), and `best/` (`BEST_DIR`) when the
  periodic evaluation keeps the best one;
- optionally `standing_stats.npz` (`STANDING_STATS_FILE`): truncation-indexed BN
  statistics of one checkpoint's EMA generator.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import layers, networks, paths
from tf_biggan import state as state_lib

MODEL_CONFIG_FILE = "model_config.json"
"""The generator's constructor arguments and the class names, in every `model_dir`."""
BEST_DIR = "best"
"""Subfolder of a `model_dir` where the periodic evaluation keeps the best checkpoint by FID."""
STANDING_STATS_FILE = "standing_stats.npz"
"""Truncation-indexed BN statistics written by `tf_biggan.standing_stats` for one checkpoint."""


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


def restore_ema_generator(
    model_dir: str, checkpoint_path: str | None = None, step: int | None = None, best: bool = False
):
    """Restores the EMA generator of a training run.

    Args:
      model_dir: the training `model_dir`.
      checkpoint_path: a specific checkpoint prefix; default the latest.
      step, best: instead of `checkpoint_path`, the checkpoint `find_checkpoint` finds.

    With a `standing_stats.npz` computed for this checkpoint (`tf_biggan.standing_stats`),
    the generator gets its truncation-indexed BN statistics (`num_standing_stats` set).

    Returns:
      `(generator, config, checkpoint_path)` with `config` the contents of
      `model_config.json`.

    Raises:
      FileNotFoundError: no config or no such checkpoint in `model_dir`.
      ValueError: more than one of `checkpoint_path`, `step` and `best`.
    """
    model_dir, checkpoint_path = paths.expand(model_dir), paths.expand(checkpoint_path)
    config = read_model_config(model_dir)
    if checkpoint_path is None:
        checkpoint_path = find_checkpoint(model_dir, step=step, best=best)
    elif step is not None or best:
        raise ValueError("give a checkpoint path, a step or best, not two of them")
    generator = generator_from_config(config["generator"])
    generator.build_by_call()
    saved_step = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(ema_generator=generator, step=saved_step).restore(checkpoint_path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    table = _standing_table(model_dir, checkpoint_path)
    if table:
        generator = _with_standing_table(generator, table, model_dir)
    config["step"] = int(saved_step.numpy())
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
    state_lib.copy_variables(source, [v for v in copy.variables if id(v) not in tables])
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
