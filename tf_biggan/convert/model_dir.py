"""`Converted`, what every converter returns, and `write_model_dir`, the one writer.

A converted `model_dir` holds:
- `ckpt-0.*` and `checkpoint`: a `tf.train.Checkpoint` with the objects and names of
  `tf_biggan.state.TrainState.checkpoint()`: `ema_generator`, `generator` (the source's raw
  generator, or a copy of the EMA weights when the source has none), `discriminator` (only
  when the source has one) and `step` (0). There are no optimizer slots: fine-tuning
  starts them afresh in a new `model_dir` (`train --init_from`).
- `model_config.json`: the generator's constructor arguments and the class names (as
  training writes it), plus `converted_from` (the source) and `networks` (the networks the
  source provided: `ema_generator`, and `generator`, `discriminator` where it has them).
- `classes.json`: one entry per class, `{"index", "name"}` and, where known, `"wnid"` (the
  WordNet id) and `"label"` (the full label with its synonyms).
- `config.gin`: the gin bindings of `Generator` and `Discriminator` that build these
  networks (`RESOLUTION` and `NUM_CLASSES` as macros, so a fine-tuning config can
  rebind the class count).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from tf_biggan import model_files, networks, paths
from tf_biggan import state as state_lib

CLASSES_FILE = "classes.json"
GIN_FILE = "config.gin"
_NOT_BOUND = ("name", "resolution", "num_classes", "kernel_initializer")


@dataclasses.dataclass
class Converted:
    """A released model converted to tf_biggan networks.

    Attributes:
      ema_generator: the built generator that samples and exports use (the source's EMA
        weights where it has them).
      source: a one-line description of what was converted (format and files).
      generator: the built raw (non-averaged) generator, if the source has one.
      discriminator: the built discriminator, if the source has one.
      classes: one dict per class in index order, `{"index": i, "name": str}` and
        optionally `"wnid"` and `"label"`; empty when the class names are unknown.
    """

    ema_generator: networks.Generator
    source: str
    generator: networks.Generator | None = None
    discriminator: networks.Discriminator | None = None
    classes: list = dataclasses.field(default_factory=list)

    @property
    def generator_config(self) -> dict:
        """The generator's constructor arguments (`Generator.get_config()` without the name)."""
        return {k: v for k, v in self.ema_generator.get_config().items() if k != "name"}

    @property
    def class_names(self) -> list[str]:
        return [entry["name"] for entry in self.classes]

    @property
    def networks(self) -> list[str]:
        """The networks the source provides, by checkpoint key (`ema_generator` first)."""
        present = {"generator": self.generator, "discriminator": self.discriminator}
        return ["ema_generator"] + [name for name, net in present.items() if net is not None]


def write_model_dir(converted: Converted, model_dir: str) -> str:
    """Writes `converted` as a tf_biggan `model_dir` (see the module docstring).

    Args:
      converted: the networks and metadata.
      model_dir: the folder to write; it must not hold a checkpoint yet.

    Returns:
      The checkpoint prefix written (`model_dir/ckpt-0`).

    Raises:
      FileExistsError: `model_dir` already holds a checkpoint.
      ValueError: the class list does not match the generator's class count.
    """
    model_dir = paths.expand(model_dir)
    if tf.io.gfile.isdir(model_dir) and tf.train.latest_checkpoint(model_dir):
        raise FileExistsError(f"{model_dir} already holds a checkpoint; convert into a new folder")
    ema = converted.ema_generator
    if converted.classes and len(converted.classes) != ema.num_classes:
        raise ValueError(
            f"{len(converted.classes)} classes listed for a generator of {ema.num_classes}"
        )
    generator = converted.generator or _copy_of(ema)
    objects = {"ema_generator": ema, "generator": generator}
    if converted.discriminator is not None:
        objects["discriminator"] = converted.discriminator
    checkpoint = tf.train.Checkpoint(**objects, step=tf.Variable(0, dtype=tf.int64))
    tf.io.gfile.makedirs(model_dir)
    prefix = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=1).save(
        checkpoint_number=0
    )
    model_files.write_model_config(
        model_dir,
        generator,
        converted.class_names,
        extra={"converted_from": converted.source, "networks": converted.networks},
    )
    _write_text(model_dir, CLASSES_FILE, json.dumps({"classes": converted.classes}, indent=1))
    _write_text(model_dir, GIN_FILE, gin_bindings(converted))
    return prefix


def _copy_of(ema: networks.Generator) -> networks.Generator:
    """A generator named "generator" with the EMA generator's weights (and SN state)."""
    copy = networks.Generator(**dict(ema.get_config(), name="generator"))
    copy.build_by_call()
    state_lib.copy_variables(ema.variables, copy.variables)
    return copy


def gin_bindings(converted: Converted) -> str:
    """The gin text that builds `converted`'s networks (D: the source's, else G's width)."""
    ema = converted.ema_generator
    lines = [
        f"# The networks of {converted.source}.",
        "# Written by tf_biggan.convert; include it in a fine-tuning config, or pass it as a",
        "# --gin_config after the experiment's own file.",
        "",
        f"RESOLUTION = {ema.resolution}",
        f"NUM_CLASSES = {ema.num_classes}",
        "",
    ]
    discriminator = converted.discriminator
    d_config = discriminator.get_config() if discriminator is not None else {"ch": ema.ch}
    if discriminator is None and ema.architecture == "deep":
        # A generator-only BigGAN-deep release: fine-tuning builds a BigGAN-deep D too.
        d_config.update(architecture="deep", depth=ema.depth)
    for name, config in (("Generator", ema.get_config()), ("Discriminator", d_config)):
        lines.append(f"{name}.resolution = %RESOLUTION")
        lines.append(f"{name}.num_classes = %NUM_CLASSES")
        for key, value in config.items():
            if key not in _NOT_BOUND:
                lines.append(f"{name}.{key} = {value!r}")
        lines.append("")
    return "\n".join(lines)


def _write_text(model_dir: str, name: str, text: str) -> None:
    with tf.io.gfile.GFile(os.path.join(model_dir, name), "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
