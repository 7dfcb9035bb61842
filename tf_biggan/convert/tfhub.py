"""DeepMind's BigGAN TF-Hub generators (`biggan-128/256/512`, version 2) → tf_biggan.

    python -m tf_biggan.convert --from=tfhub --module_dir=biggan-128_2 --model_dir=OUT

(`--from=tfhub` reads the BigGAN-deep modules too, with `tf_biggan.convert.tfhub_deep`.)

`module_dir` is a downloaded and extracted module (the folder with `saved_model.pb` and
`variables/`). Only its checkpoint `variables/variables` is read, with
`tf.train.load_checkpoint`: no TF1 graph is built. The modules hold the generator only;
its EMA weights (`.../ema_b999900`, decay 0.9999) are taken, and the raw weights beside
them are set aside.

The module's variables and where they go (`B` = `GBlock`, `GBlock_1`, ...; C = channels):

| module variable | tf_biggan |
|---|---|
| `linear/w` `[K, 128]` | `shared_embedding.kernel` (the class embedding is a linear map of one-hot y) |
| `Generator/G_Z/G_linear/{w,b,u0}` `[chunk, 4*4*16ch]` | `linear` (the output is read as `[4, 4, C]`, NHWC, in both) |
| `Generator/B/conv0`, `conv1`, `conv_sc` `{w,b,u0}` | `block<i>.conv1`, `conv2`, `conv_shortcut` (HWIO kernels in both) |
| `Generator/B/HyperBN{,_1}/{gamma,beta}/{w,u0}` `[chunk+128, C]` | `block<i>.bn{1,2}.gain`, `.bias`: rows reordered |
| `Generator/B/CrossReplicaBN{,_1}/accumulated_{mean,var}`, `accumulation_counter` | `block<i>.bn{1,2}.bn` moving statistics: accumulated / counter |
| `Generator/attention/{theta,phi,g,o_conv}/{w,u0}`, `gamma` | `attention<R>` |
| `Generator/ScaledCrossReplicaBN/{gamma,beta}` and `...BNbn/accumulated_*` | `output_bn` |
| `Generator/conv_2d/{w,b,u0}` | `output_conv` |

Layouts:
- Conditional BN input: the module concatenates `[z_chunk, embedding]`, tf_biggan
  `[embedding, z_chunk]`; the gain and bias kernels' rows are reordered accordingly.
  The first z chunk feeds the linear layer in both.
- SN: `u0` is the module's power-iteration vector in the output space, tf_biggan's `u`
  (`[1, out]`). `u1`, where present, is the input-space vector `v`, which tf_biggan
  recomputes from `u` at every call: it is checked for size and not needed. Each `sigma`
  is set to the estimate an inference call computes from `u0`; `sample` and `export` use
  the exact top singular value anyway.
- BN: ε 1e-4 (`Generator.bn_epsilon`). The stored statistics are the module's standing
  statistics accumulators; mean and variance are `accumulated_* / accumulation_counter`
  (BigGAN-PyTorch's TFHub converter reads the accumulators as the statistics themselves,
  which is the same when the counter is 1).
- Truncation: the version-2 modules keep one set of accumulated statistics in their
  variables and re-accumulate them when called with a new truncation value (their
  changelog: "batch statistics for previous truncation value" were used on the first call
  with a new one in version 1). No per-truncation table is stored, so the converted
  generator has none (`num_standing_stats=0`); `tf_biggan.standing_stats` accumulates
  the table for it the same way (51 entries, truncation 0 to 1 in steps of 0.02).

Every variable of the module is used or set aside by name, and every variable of the
generator is set; anything else is an error that names it.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import networks
from tf_biggan.convert import imagenet
from tf_biggan.convert.model_dir import Converted

EMA = "ema_b999900"
BN_EPSILON = 1e-4
RESOLUTION_BY_BLOCKS = {5: 128, 6: 256, 7: 512}
INPUT_MULTIPLIER = 16  # G's first block input is 16 ch at 128-512 px (networks_biggan.G_ARCH).


class ModuleReader:
    """The module's checkpoint, with a record of which variables were read or set aside.

    Args:
      module_dir: the extracted module folder.
      ema: the suffix of the EMA weights' names (`ema_b999900` in the BigGAN modules,
        `ema_0.9999` in the BigGAN-deep ones).

    Raises:
      FileNotFoundError: no folder, or no `variables/variables` checkpoint in it.
    """

    def __init__(self, module_dir: str, ema: str = EMA):
        if not tf.io.gfile.isdir(module_dir):
            raise FileNotFoundError(f"TF-Hub module folder {module_dir} does not exist")
        prefix = os.path.join(module_dir, "variables", "variables")
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"{prefix}.index not found: {module_dir} is not an extracted TF-Hub module "
                "(expected saved_model.pb and variables/variables.*)"
            )
        self.path = prefix
        self.ema = ema
        self._reader = tf.train.load_checkpoint(prefix)
        self.shapes = {
            name: tuple(shape) for name, shape in self._reader.get_variable_to_shape_map().items()
        }
        self.used: set[str] = set()
        self.set_aside: set[str] = set()

    def shape(self, name: str) -> tuple:
        if name not in self.shapes:
            raise KeyError(f"the module has no variable {name} ({self.path})")
        return self.shapes[name]

    def take(self, name: str) -> np.ndarray:
        """The float32 value of `name`, marked as used.

        Raises:
          KeyError: naming the missing variable.
        """
        self.shape(name)
        self.used.add(name)
        return np.asarray(self._reader.get_tensor(name), np.float32)

    def take_ema(self, name: str) -> np.ndarray:
        """The EMA value of the weight `name`; its raw value (if stored) is set aside."""
        if name in self.shapes:
            self.set_aside.add(name)
        return self.take(f"{name}/{self.ema}")

    def check_all_read(self) -> None:
        """Raises ValueError naming every variable neither used nor set aside."""
        left = sorted(set(self.shapes) - self.used - self.set_aside)
        if left:
            raise ValueError(
                f"{len(left)} variable(s) of {self.path} have no place in a BigGAN generator: "
                + ", ".join(left)
            )


class Targets:
    """Assigns arrays to the generator's variables, checking shapes, and records them."""

    def __init__(self, generator):
        self.generator = generator
        self.assigned: set[int] = set()

    def set(self, variable, value, source: str) -> None:
        value = np.asarray(value, np.float32)
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{source} has shape {value.shape} but {variable.path} needs "
                f"{tuple(variable.shape)}: the module does not match a BigGAN generator of "
                f"this width"
            )
        variable.assign(value)
        self.assigned.add(id(variable))

    def check_all_set(self) -> None:
        missing = [v.path for v in self.generator.variables if id(v) not in self.assigned]
        if missing:
            raise ValueError("generator variables not set by the module: " + ", ".join(missing))


def _settings(reader: ModuleReader) -> dict:
    """Generator constructor arguments read from the module's variable shapes."""
    names = reader.shapes
    blocks = {m.group(1) for n in names if (m := re.match(r"Generator/(GBlock(_\d+)?)/", n))}
    if len(blocks) not in RESOLUTION_BY_BLOCKS:
        raise ValueError(
            f"{reader.path} has {len(blocks)} GBlock scopes; BigGAN generators at 128, 256 "
            f"and 512 px have {sorted(RESOLUTION_BY_BLOCKS)} (biggan-deep modules: tfhub_deep)"
        )
    num_classes, shared_dim = reader.shape(f"linear/w/{EMA}")
    chunk, linear_out = reader.shape(f"Generator/G_Z/G_linear/w/{EMA}")
    bottom = networks.BOTTOM_WIDTH**2 * INPUT_MULTIPLIER
    if linear_out % bottom:
        raise ValueError(f"Generator/G_Z/G_linear/w: {linear_out} outputs are not 4*4*16*ch")
    return dict(
        resolution=RESOLUTION_BY_BLOCKS[len(blocks)],
        ch=linear_out // bottom,
        num_classes=num_classes,
        dim_z=chunk * (len(blocks) + 1),
        shared_dim=shared_dim,
        hierarchical_z=True,
        attention=None,
        bn_epsilon=BN_EPSILON,
        num_standing_stats=0,
        name="ema_generator",
    )


def _u_vector(reader: ModuleReader, scope: str, layer) -> np.ndarray:
    """`u0` as `[1, out]`; `u1` (the input-space vector) size-checked and set aside."""
    fan_in = int(np.prod(layer.kernel.shape[:-1]))
    out = int(layer.kernel.shape[-1])
    u = reader.take(f"{scope}/u0")
    if u.size != out:
        raise ValueError(f"{scope}/u0 has {u.size} entries, the layer has {out} outputs")
    if f"{scope}/u1" in reader.shapes:
        size = int(np.prod(reader.shape(f"{scope}/u1")))
        if size not in (fan_in, out):
            raise ValueError(f"{scope}/u1 has {size} entries, neither {fan_in} nor {out}")
        reader.set_aside.add(f"{scope}/u1")
    return u.reshape(1, out)


def sn_layer(reader, targets, scope, layer, bias=True, kernel_fn=None) -> None:
    """Kernel (EMA, through `kernel_fn`), optional bias and `u` of one SN layer; its sigma
    becomes the estimate an inference call computes from that `u`."""
    kernel = reader.take_ema(f"{scope}/w")
    if kernel_fn is not None:
        kernel = kernel_fn(kernel)
    targets.set(layer.kernel, kernel, f"{scope}/w/{reader.ema}")
    if bias:
        targets.set(layer.bias, reader.take_ema(f"{scope}/b"), f"{scope}/b/{reader.ema}")
    targets.set(layer.u, _u_vector(reader, scope, layer), f"{scope}/u0")
    _, inverse_sigma = layer.kernel_and_inverse_sigma(training=False)
    targets.set(layer.sigma, 1.0 / inverse_sigma, f"{scope} (sigma from u0)")


def _statistics(reader, targets, scope, bn) -> None:
    """Moving statistics from the module's standing-statistics accumulators."""
    counter = float(reader.take(f"{scope}/accumulation_counter").reshape(()))
    if not (np.isfinite(counter) and counter > 0):
        raise ValueError(f"{scope}/accumulation_counter is {counter}: no statistics accumulated")
    mean = reader.take(f"{scope}/accumulated_mean") / counter
    variance = reader.take(f"{scope}/accumulated_var") / counter
    targets.set(bn.moving_mean, mean, f"{scope}/accumulated_mean")
    targets.set(bn.moving_variance, variance, f"{scope}/accumulated_var")


def embedding_first(z_size: int):
    """The kernel map that reorders the rows of a kernel applied to the module's condition
    `[z, embedding]` (z: its first `z_size` entries) for tf_biggan's `[embedding, z]`."""

    def reorder(kernel):
        return np.concatenate([kernel[z_size:], kernel[:z_size]], axis=0)

    return reorder


def _block(reader, targets, index, block, chunk) -> None:
    scope = "Generator/GBlock" + (f"_{index}" if index else "")
    for source, layer in (
        ("conv0", block.conv1),
        ("conv1", block.conv2),
        ("conv_sc", block.conv_shortcut),
    ):
        sn_layer(reader, targets, f"{scope}/{source}", layer)

    for suffix, cbn in (("", block.bn1), ("_1", block.bn2)):
        for source, layer in (("gamma", cbn.gain), ("beta", cbn.bias)):
            sn_layer(
                reader,
                targets,
                f"{scope}/HyperBN{suffix}/{source}",
                layer,
                False,
                embedding_first(chunk),
            )
        _statistics(reader, targets, f"{scope}/CrossReplicaBN{suffix}", cbn.batch_norm)


def attention_layers(reader, targets, attention) -> None:
    scope = "Generator/attention"
    for source, layer in (
        ("theta", attention.theta),
        ("phi", attention.phi),
        ("g", attention.g),
        ("o_conv", attention.o),
    ):
        sn_layer(reader, targets, f"{scope}/{source}", layer, bias=False)
    gamma = reader.take_ema(f"{scope}/gamma")
    if gamma.size == 1:
        # A scalar in the BigGAN modules, `[1]` in the BigGAN-deep ones.
        gamma = gamma.reshape(())
    targets.set(attention.gamma, gamma, f"{scope}/gamma/{reader.ema}")


def _output(reader, targets, generator) -> None:
    bn, scope = generator.output_bn, "Generator/ScaledCrossReplicaBN"
    targets.set(bn.gamma, reader.take_ema(f"{scope}/gamma"), f"{scope}/gamma/{EMA}")
    targets.set(bn.beta, reader.take_ema(f"{scope}/beta"), f"{scope}/beta/{EMA}")
    _statistics(reader, targets, f"{scope}bn", bn)
    sn_layer(reader, targets, "Generator/conv_2d", generator.output_conv)


def load_generator(module_dir: str) -> networks.Generator:
    """The module's EMA generator as a built `networks.Generator` (see the module doc).

    Raises:
      FileNotFoundError: the folder or its checkpoint is missing.
      KeyError: a variable the generator needs is missing (named).
      ValueError: a variable has the wrong shape, is left over, or a target is not set.
    """
    reader = ModuleReader(module_dir)
    settings = _settings(reader)
    generator = networks.Generator(**settings)
    generator.build_by_call()
    targets = Targets(generator)
    targets.set(generator.shared_embedding.kernel, reader.take_ema("linear/w"), f"linear/w/{EMA}")
    sn_layer(reader, targets, "Generator/G_Z/G_linear", generator.linear)
    chunk = generator.z_chunk_size
    for index, block in enumerate(generator.blocks):
        _block(reader, targets, index, block, chunk)
    attention = list(generator.attention_blocks.values())
    if len(attention) != 1:
        raise ValueError(f"expected one attention block, the generator has {len(attention)}")
    attention_layers(reader, targets, attention[0])
    _output(reader, targets, generator)
    reader.check_all_read()
    targets.check_all_set()
    return generator


def convert(module_dir: str) -> Converted:
    """Converts the module in `module_dir`; returns the `Converted` for `write_model_dir`."""
    generator = load_generator(module_dir)
    logging.info(
        "%s: a BigGAN module (biggan-%d, version 2): ch %d, %d classes, z %d",
        module_dir,
        generator.resolution,
        generator.ch,
        generator.num_classes,
        generator.dim_z,
    )
    return Converted(
        ema_generator=generator,
        source=f"DeepMind's BigGAN TF-Hub module {os.path.abspath(module_dir)} (EMA generator)",
        classes=imagenet.classes_for(generator.num_classes),
    )
