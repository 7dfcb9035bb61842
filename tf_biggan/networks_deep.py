"""BigGAN-deep's residual blocks and per-resolution tables (Brock et al., ICLR 2019, appendix B).

`networks.Generator` and `networks.Discriminator` build BigGAN-deep from these with
`architecture="deep"`; everything else (shared embedding, conditional BN, attention, output
layers, projection) is the same code as BigGAN's.

BigGAN-deep differs from BigGAN in its blocks and in how z reaches them:
- G's block is a bottleneck: 1x1 conv down to `in / 4` channels, two 3x3 convs, 1x1 conv up,
  each conv preceded by conditional BN and ReLU. The skip connection keeps the first
  `filters` channels of the input (no learnt projection); upsampling happens inside the
  block, between the first 1x1 conv and the first 3x3 conv.
- D's block mirrors it (1x1 down to `filters / 4`, two 3x3, ReLU, average pooling, 1x1 up);
  where the width grows, the skip concatenates `filters - in` channels from a learnt 1x1
  conv to the (pooled) input. D starts with a 3x3 conv from RGB to its first width.
- There are `depth` blocks per resolution (2 in the paper): in G the last block of a stage
  upsamples and changes the width, in D the first one downsamples and changes it.
- The whole z is concatenated with the shared class embedding (`[embedding, z]`, the
  port's order) and that one vector feeds G's first linear layer and every conditional BN.

Tables: 32-256 px are the public PyTorch port's `BigGANdeep.py` tables (its 32 px D keeps
8x8 for its last stage). The port has no 512 px table: G's is DeepMind's `biggan-deep-512`
module's (the 256 px one with a last stage 1 -> 1), and D mirrors it (the port's 256 px D
with a first stage 1 -> 1). Attention runs at 64 px at every resolution from 64 px up, which
is where the released 128, 256 and 512 px modules have it (after the fourth stage) and
the port's default.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tf_biggan import kernels, layers

CHANNEL_RATIO = 4
"""Bottleneck width: a G block works at `in / 4` channels, a D block at `filters / 4`."""


@dataclasses.dataclass(frozen=True)
class DeepArch:
    """Per stage `(input multiplier, output multiplier)` of `ch`; whether each stage halves
    the resolution (D only; every G stage doubles it), the default attention resolutions and
    the default z size."""

    stages: tuple[tuple[int, int], ...]
    resample: tuple[bool, ...]
    default_attention: tuple[int, ...]
    default_dim_z: int = 128


DEEP_G_ARCH = {
    32: DeepArch(((4, 4), (4, 4), (4, 4)), (True,) * 3, ()),
    64: DeepArch(((16, 16), (16, 8), (8, 4), (4, 2)), (True,) * 4, (64,)),
    128: DeepArch(((16, 16), (16, 8), (8, 4), (4, 2), (2, 1)), (True,) * 5, (64,)),
    256: DeepArch(((16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1)), (True,) * 6, (64,)),
    512: DeepArch(((16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1), (1, 1)), (True,) * 7, (64,)),
}

DEEP_D_ARCH = {
    32: DeepArch(((4, 4), (4, 4), (4, 4)), (True, True, False), ()),
    64: DeepArch(((1, 2), (2, 4), (4, 8), (8, 16)), (True,) * 4, (64,)),
    128: DeepArch(((1, 2), (2, 4), (4, 8), (8, 16), (16, 16)), (True,) * 5, (64,)),
    256: DeepArch(((1, 2), (2, 4), (4, 8), (8, 8), (8, 16), (16, 16)), (True,) * 6, (64,)),
    512: DeepArch(((1, 1), (1, 2), (2, 4), (4, 8), (8, 8), (8, 16), (16, 16)), (True,) * 7, (64,)),
}


def generator_blocks(arch: DeepArch, ch: int, depth: int) -> list[tuple[int, int, bool, bool]]:
    """G's blocks in order as `(in channels, out channels, upsample, ends a stage)`.

    The first `depth - 1` blocks of a stage keep its input width and resolution; the last
    one upsamples and changes the width (the port's order).
    """
    blocks = []
    for cin, cout in arch.stages:
        for index in range(depth):
            last = index == depth - 1
            blocks.append((cin * ch, (cout if last else cin) * ch, last, last))
    return blocks


def discriminator_blocks(arch: DeepArch, ch: int, depth: int) -> list[tuple[int, int, bool, bool]]:
    """D's blocks in order as `(in channels, out channels, downsample, ends a stage)`.

    The first block of a stage downsamples (if the stage does) and changes the width; the
    other `depth - 1` keep both.
    """
    blocks = []
    for (cin, cout), down in zip(arch.stages, arch.resample, strict=True):
        for index in range(depth):
            first = index == 0
            blocks.append(
                ((cin if first else cout) * ch, cout * ch, first and down, index == depth - 1)
            )
    return blocks


class DeepGeneratorBlock(keras.layers.Layer):
    """BigGAN-deep's G block: CBN-ReLU-conv1x1 (down to `hidden`), CBN-ReLU-(up)-conv3x3,
    CBN-ReLU-conv3x3, CBN-ReLU-conv1x1 (up to `filters`), plus the skip: the first `filters`
    channels of the input, upsampled with it.

    Call with `(x [B, H, W, Cin], c [B, D])`, `Cin >= filters`; returns
    `[B, 2H, 2W, filters]` with `upsample`, else `[B, H, W, filters]`.

    Args:
      filters: output channels, at most the input's.
      hidden: bottleneck channels (`Cin / 4` in BigGAN-deep).
      upsample: double the resolution.
      bn_momentum: decay of the BN moving statistics.
      kernel_initializer: of every conv and of the CBN gain and bias maps.
      bn_epsilon, num_standing_stats, bn_unbiased_moving_variance: of every conditional BN
        (see `Generator`).
      bias_initializer: of every conv's bias (see `Generator`).
    """

    def __init__(
        self,
        filters: int,
        hidden: int,
        upsample: bool,
        bn_momentum: float = 0.9,
        kernel_initializer="orthogonal",
        bn_epsilon: float = 1e-5,
        num_standing_stats: int = 0,
        bias_initializer: str = "fan_in_uniform",
        bn_unbiased_moving_variance: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.bn_unbiased_moving_variance = bool(bn_unbiased_moving_variance)
        self.hidden = int(hidden)
        self.upsample = bool(upsample)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.num_standing_stats = int(num_standing_stats)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        init = self.kernel_initializer
        conv_init = {"kernel_initializer": init, "bias_initializer": bias_initializer}
        for index, (out, size) in enumerate(
            [(self.hidden, 1), (self.hidden, 3), (self.hidden, 3), (self.filters, 1)], start=1
        ):
            bn = layers.ConditionalBatchNorm(
                bn_momentum,
                bn_epsilon,
                kernel_initializer=init,
                num_standing_stats=num_standing_stats,
                unbiased_moving_variance=bn_unbiased_moving_variance,
                name=f"bn{index}",
            )
            conv = layers.SNConv2D(out, size, name=f"conv{index}", **conv_init)
            setattr(self, f"bn{index}", bn)
            setattr(self, f"conv{index}", conv)

    def build(self, x_shape, c_shape=None):
        if x_shape[-1] < self.filters:
            raise ValueError(
                f"{self.name}: a BigGAN-deep G block drops channels in its skip connection; "
                f"it cannot widen {x_shape[-1]} channels to {self.filters}"
            )

    def call(self, x, c, training=None, statistics_at=None):
        def norm(bn, h):
            return bn(h, c, training=training, statistics_at=statistics_at, relu=True)

        h = self.conv1(norm(self.bn1, x), training=training)
        h = norm(self.bn2, h)
        skip = x[..., : self.filters]
        if self.upsample:
            skip = kernels.upsample(skip)
        h = self.conv2(h, training=training, resample="up" if self.upsample else None)
        h = self.conv3(norm(self.bn3, h), training=training)
        h = self.conv4(norm(self.bn4, h), training=training)
        return h + skip

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "hidden": self.hidden,
            "upsample": self.upsample,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "num_standing_stats": self.num_standing_stats,
            "bn_unbiased_moving_variance": self.bn_unbiased_moving_variance,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": self.bias_initializer,
        }


class DeepDiscriminatorBlock(keras.layers.Layer):
    """BigGAN-deep's D block: ReLU-conv1x1 (down to `hidden`), ReLU-conv3x3, ReLU-conv3x3,
    ReLU-(avgpool)-conv1x1 (up to `filters`), plus the skip: the (pooled) input, with
    `filters - Cin` channels of a learnt 1x1 conv of it concatenated when the width grows.

    Input `[B, H, W, Cin]`, `Cin <= filters`; output `[B, H/2, W/2, filters]` with
    `downsample`, else `[B, H, W, filters]`.

    Args:
      filters: output channels, at least the input's.
      hidden: bottleneck channels (`filters / 4` in BigGAN-deep).
      downsample: halve the resolution.
      kernel_initializer, bias_initializer: of every conv (see `Generator`).
    """

    def __init__(
        self,
        filters: int,
        hidden: int,
        downsample: bool,
        kernel_initializer="orthogonal",
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.hidden = int(hidden)
        self.downsample = bool(downsample)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        self.conv1 = layers.SNConv2D(self.hidden, 1, name="conv1", **self._initializers())
        self.conv2 = layers.SNConv2D(self.hidden, 3, name="conv2", **self._initializers())
        self.conv3 = layers.SNConv2D(self.hidden, 3, name="conv3", **self._initializers())
        self.conv4 = layers.SNConv2D(self.filters, 1, name="conv4", **self._initializers())
        self.conv_shortcut = None

    def _initializers(self) -> dict:
        return {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels > self.filters:
            raise ValueError(
                f"{self.name}: a BigGAN-deep D block only widens its skip connection; "
                f"it cannot narrow {channels} channels to {self.filters}"
            )
        if channels < self.filters:
            self.conv_shortcut = layers.SNConv2D(
                self.filters - channels, 1, name="conv_shortcut", **self._initializers()
            )

    def call(self, x, training=None):
        h = self.conv1(tf.nn.relu(x), training=training)
        h = self.conv2(tf.nn.relu(h), training=training)
        h = tf.nn.relu(self.conv3(tf.nn.relu(h), training=training))
        skip = x
        if self.downsample:
            h, skip = kernels.downsample(h), kernels.downsample(skip)
        h = self.conv4(h, training=training)
        if self.conv_shortcut is not None:
            skip = tf.concat([skip, self.conv_shortcut(skip, training=training)], axis=-1)
        return h + skip

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "hidden": self.hidden,
            "downsample": self.downsample,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": self.bias_initializer,
        }


class DeepArchitecture:
    """BigGAN-deep as `networks.Generator` and `networks.Discriminator` build it
    (`architecture = "deep"`): the peer of `networks.BigGANArchitecture`, with the same
    methods. Its tables, its bottleneck blocks (`depth` per resolution), D's stem conv, and z
    fed whole, after the shared class embedding, to the linear layer and every block."""

    name = "deep"
    generator_table = DEEP_G_ARCH
    discriminator_table = DEEP_D_ARCH

    @staticmethod
    def depth(depth) -> int:
        """Blocks per resolution: `depth`, None → 2 (the paper's)."""
        depth = 2 if depth is None else int(depth)
        if depth < 1:
            raise ValueError(f"depth (blocks per resolution) must be >= 1, got {depth}")
        return depth

    @staticmethod
    def check_conditioning(shared_dim: int, hierarchical_z: bool) -> None:
        if not (shared_dim and hierarchical_z):
            raise ValueError(
                "BigGAN-deep feeds [shared class embedding, z] to every block: it needs "
                f"shared_dim > 0 and hierarchical_z = True (got {shared_dim}, {hierarchical_z})"
            )

    @staticmethod
    def z_chunk_size(dim_z: int, num_blocks: int, hierarchical_z: bool, resolution: int) -> int:
        return dim_z

    @staticmethod
    def conditioning(z, embedding, num_blocks: int, hierarchical_z: bool):
        """`(linear layer input, per-block conditioning list)`: `[embedding, z]` for all."""
        condition = tf.concat([embedding, tf.cast(z, embedding.dtype)], -1)
        return condition, [condition] * num_blocks

    @staticmethod
    def generator_input_channels(arch: DeepArch, ch: int) -> int:
        return arch.stages[0][0] * ch

    @staticmethod
    def generator_blocks(arch: DeepArch, ch: int, depth: int):
        return generator_blocks(arch, ch, depth)

    @staticmethod
    def generator_block(cin, filters, upsample, bn_momentum, name, **settings):
        hidden = cin // CHANNEL_RATIO
        return DeepGeneratorBlock(filters, hidden, upsample, bn_momentum, name=name, **settings)

    @staticmethod
    def discriminator_stem(arch: DeepArch, ch: int, **initializers):
        """BigGAN-deep's blocks all start with a ReLU: a stem conv maps RGB to ch first."""
        return layers.SNConv2D(arch.stages[0][0] * ch, 3, name="input_conv", **initializers)

    @staticmethod
    def discriminator_blocks(arch: DeepArch, ch: int, depth: int):
        return discriminator_blocks(arch, ch, depth)

    @staticmethod
    def discriminator_block(index, filters, downsample, name, **initializers):
        hidden = filters // CHANNEL_RATIO
        return DeepDiscriminatorBlock(filters, hidden, downsample, name=name, **initializers)
