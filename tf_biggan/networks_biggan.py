"""BigGAN's own part of the networks (Brock et al., ICLR 2019): its per-resolution tables,
its residual blocks and `BigGANArchitecture`, which `networks.Generator` and
`networks.Discriminator` build BigGAN from (`architecture = "biggan"`, the default).
`networks_deep` is its peer for BigGAN-deep.

- G's residual blocks upsample with nearest neighbour before the first conv; D's blocks
  average-pool after the second conv. Block 0 of D has no pre-activation (its input is the
  image).
- z reaches G's blocks in chunks (hierarchical z): the first feeds the linear layer, chunk k
  and the shared class embedding condition block k.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from tf_biggan import kernels, layers


@dataclasses.dataclass(frozen=True)
class GeneratorArch:
    """Channel multipliers of `ch`: the input of the first block, then each block's output."""

    input_multiplier: int
    block_multipliers: tuple[int, ...]
    default_attention: tuple[int, ...]
    default_dim_z: int


@dataclasses.dataclass(frozen=True)
class DiscriminatorArch:
    """Each block's output multiplier of `ch` and whether it halves the resolution."""

    block_multipliers: tuple[int, ...]
    downsample: tuple[bool, ...]
    default_attention: tuple[int, ...]


G_ARCH = {
    32: GeneratorArch(4, (4, 4, 4), (), 128),
    64: GeneratorArch(16, (16, 8, 4, 2), (32,), 120),
    128: GeneratorArch(16, (16, 8, 4, 2, 1), (64,), 120),
    256: GeneratorArch(16, (16, 8, 8, 4, 2, 1), (128,), 140),
    512: GeneratorArch(16, (16, 8, 8, 4, 2, 1, 1), (64,), 128),
}

# D ends at 4x4 before its sum pooling at 64-512 px and at 8x8 at 32 px: the last block(s)
# keep the resolution (BigGAN-PyTorch's D_arch).
D_ARCH = {
    32: DiscriminatorArch((4, 4, 4, 4), (True, True, False, False), ()),
    64: DiscriminatorArch((1, 2, 4, 8, 16), (True,) * 4 + (False,), (32,)),
    128: DiscriminatorArch((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,), (64,)),
    256: DiscriminatorArch((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,), (128,)),
    512: DiscriminatorArch((1, 1, 2, 4, 8, 8, 16, 16), (True,) * 7 + (False,), (64,)),
}


class GeneratorBlock(keras.layers.Layer):
    """Residual up-block: CBN-ReLU-up-conv3-CBN-ReLU-conv3, shortcut up-conv1.

    Call with `(x [B, H, W, Cin], c [B, D])` and optionally `statistics_at` (float scalar,
    picks the BN statistics of an inference call, see `layers.SyncBatchNorm`), returns
    `[B, 2H, 2W, filters]`.

    `kernel_initializer` and `bias_initializer` are those of every conv (see `Generator`);
    the conditional BNs' gain and bias maps take the kernel initializer and have no bias.
    `bn_epsilon`, `num_standing_stats` and `bn_unbiased_moving_variance` are those of both
    conditional BNs (see `Generator`).
    """

    def __init__(
        self,
        filters: int,
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
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.num_standing_stats = int(num_standing_stats)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        conv_init = {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": bias_initializer,
        }

        def cbn(name):
            return layers.ConditionalBatchNorm(
                bn_momentum,
                bn_epsilon,
                kernel_initializer=self.kernel_initializer,
                num_standing_stats=num_standing_stats,
                unbiased_moving_variance=bn_unbiased_moving_variance,
                name=name,
            )

        self.bn1 = cbn("bn1")
        self.conv1 = layers.SNConv2D(self.filters, 3, name="conv1", **conv_init)
        self.bn2 = cbn("bn2")
        self.conv2 = layers.SNConv2D(self.filters, 3, name="conv2", **conv_init)
        self.conv_shortcut = layers.SNConv2D(self.filters, 1, name="conv_shortcut", **conv_init)

    def call(self, x, c, training=None, statistics_at=None):
        h = self.bn1(x, c, training=training, statistics_at=statistics_at, relu=True)
        h = self.conv1(h, training=training, resample="up")
        h = self.bn2(h, c, training=training, statistics_at=statistics_at, relu=True)
        h = self.conv2(h, training=training)
        return h + self.conv_shortcut(x, training=training, resample="up")

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "num_standing_stats": self.num_standing_stats,
            "bn_unbiased_moving_variance": self.bn_unbiased_moving_variance,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": self.bias_initializer,
        }


class DiscriminatorBlock(keras.layers.Layer):
    """Residual down-block: (ReLU)-conv3-ReLU-conv3-(avgpool), learnable shortcut.

    The shortcut is a 1x1 conv when the channel count changes or the block
    downsamples; with pre-activation it pools after the conv, otherwise
    before (the port's order, which saves compute on the input block).

    Input `[B, H, W, Cin]`, output `[B, H/2, W/2, filters]` (or `[B, H, W, filters]`).

    `kernel_initializer` and `bias_initializer` are those of every conv (see `Generator`).
    """

    def __init__(
        self,
        filters: int,
        downsample: bool,
        preactivation: bool,
        kernel_initializer="orthogonal",
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.downsample = bool(downsample)
        self.preactivation = bool(preactivation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        self.conv1 = layers.SNConv2D(self.filters, 3, name="conv1", **self._initializers())
        self.conv2 = layers.SNConv2D(self.filters, 3, name="conv2", **self._initializers())
        self.conv_shortcut = None

    def _initializers(self) -> dict:
        return {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }

    def build(self, input_shape):
        if input_shape[-1] != self.filters or self.downsample:
            self.conv_shortcut = layers.SNConv2D(
                self.filters, 1, name="conv_shortcut", **self._initializers()
            )

    def call(self, x, training=None):
        resample = "down" if self.downsample else None
        h = tf.nn.relu(x) if self.preactivation else x
        h = self.conv1(h, training=training)
        h = self.conv2(tf.nn.relu(h), training=training, resample=resample)
        shortcut = x
        if self.preactivation:
            if self.conv_shortcut is not None:
                shortcut = self.conv_shortcut(shortcut, training=training, resample=resample)
            elif self.downsample:
                shortcut = kernels.downsample(shortcut)
        else:
            if self.downsample:
                shortcut = kernels.downsample(shortcut)
            if self.conv_shortcut is not None:
                shortcut = self.conv_shortcut(shortcut, training=training)
        return h + shortcut

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "downsample": self.downsample,
            "preactivation": self.preactivation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": self.bias_initializer,
        }


class BigGANArchitecture:
    """BigGAN as `Generator` and `Discriminator` build it (`architecture = "biggan"`): its
    tables (`G_ARCH`, `D_ARCH`), its blocks (one per resolution) and how z reaches them
    (hierarchical chunks). `networks_deep.DeepArchitecture` is its peer for BigGAN-deep; the
    networks call only these methods where the two differ."""

    name = "biggan"
    generator_table = G_ARCH
    discriminator_table = D_ARCH

    @staticmethod
    def depth(depth) -> int:
        if depth is not None:
            raise ValueError(
                f"depth={depth} is a BigGAN-deep setting; BigGAN has one block per resolution "
                "(set architecture = 'deep' too, or leave depth unset)"
            )
        return 1

    @staticmethod
    def check_conditioning(shared_dim: int, hierarchical_z: bool) -> None:
        """Every combination is BigGAN's (no shared embedding: the port's CIFAR setting)."""

    @staticmethod
    def z_chunk_size(dim_z: int, num_blocks: int, hierarchical_z: bool, resolution: int) -> int:
        """z's part per block (and for the linear layer)."""
        if not hierarchical_z:
            return dim_z
        if dim_z % (num_blocks + 1):
            raise ValueError(
                f"dim_z={dim_z} must split into {num_blocks + 1} equal chunks "
                f"(one for the linear layer and one per block) at {resolution} px"
            )
        return dim_z // (num_blocks + 1)

    @staticmethod
    def conditioning(z, embedding, num_blocks: int, hierarchical_z: bool):
        """`(linear layer input, per-block conditioning list)`: z's first chunk, then
        `[embedding, chunk k]` per block; without hierarchical z, z and the embedding."""
        if not hierarchical_z:
            return z, [embedding] * num_blocks
        chunks = tf.split(z, num_blocks + 1, axis=-1)
        return chunks[0], [
            tf.concat([embedding, tf.cast(zk, embedding.dtype)], -1) for zk in chunks[1:]
        ]

    @staticmethod
    def generator_input_channels(arch: GeneratorArch, ch: int) -> int:
        return arch.input_multiplier * ch

    @staticmethod
    def generator_blocks(arch: GeneratorArch, ch: int, depth: int):
        """`(in, out, upsample, ends a stage)` per block; `in` is the previous `out`."""
        return [(None, m * ch, True, True) for m in arch.block_multipliers]

    @staticmethod
    def generator_block(cin, filters, upsample, bn_momentum, name, **settings):
        return GeneratorBlock(filters, bn_momentum, name=name, **settings)

    @staticmethod
    def discriminator_stem(arch: DiscriminatorArch, ch: int, **initializers):
        """None: BigGAN's first block reads the image (it has no pre-activation)."""
        return None

    @staticmethod
    def discriminator_blocks(arch: DiscriminatorArch, ch: int, depth: int):
        """`(in, out, downsample, ends a stage)` per block."""
        return [
            (None, m * ch, down, True)
            for m, down in zip(arch.block_multipliers, arch.downsample, strict=True)
        ]

    @staticmethod
    def discriminator_block(index, filters, downsample, name, **initializers):
        return DiscriminatorBlock(
            filters, downsample=downsample, preactivation=index > 0, name=name, **initializers
        )
