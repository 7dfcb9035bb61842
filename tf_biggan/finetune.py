"""Fine-tuning: a new run's G, D and EMA G start from another run's or a converted model's
checkpoint (`train --init_from`), with fresh class embeddings when the class count differs
and fresh optimizers and step."""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from tf_biggan import model_files, networks, paths
from tf_biggan.state import TrainState


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
    source_config = model_files.read_model_config(model_dir)["generator"]
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
