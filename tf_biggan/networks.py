"""BigGAN and BigGAN-deep generator and discriminator (Brock et al., ICLR 2019).

The architecture is data: `G_ARCH[resolution]` and `D_ARCH[resolution]` give
the channel multipliers of `ch` per residual block (the tables of the paper's
appendix B and of its public PyTorch port). With `ch=96`, 1000 classes, a
shared embedding of 128 and hierarchical z, the 128 px networks have exactly
70,433,988 (G) and 87,982,370 (D) trainable parameters, as the paper's model.

`architecture="deep"` builds BigGAN-deep from `networks_deep`'s blocks and tables, with
the same embedding, conditional BN, attention and output layers: with `ch=128`, `depth=2`,
`dim_z=128`, 1000 classes and a shared embedding of 128 the 128 px networks have exactly
50,244,484 (G) and 34,590,210 (D) trainable parameters, the public port's counts.

Notes on choices where the paper leaves room:
- The generator takes class *weights* `y` `[B, num_classes]` (one-hot for a
  class), so the shared embedding is a linear map of `y`. A one-hot `y` gives
  exactly the embedding lookup, and convex mixtures give the class-embedding
  interpolations of the paper's figures. The shared embedding is not
  spectrally normalised, as in the public port.
- G's residual blocks upsample with nearest neighbour before the first conv;
  D's blocks average-pool after the second conv. Block 0 of D has no
  pre-activation (its input is the image).
- Channel layout is NHWC; the initial linear layer's output is reshaped to
  `[4, 4, C]` (a permutation of the port's `[C, 4, 4]` of the same size).
"""

from __future__ import annotations

import dataclasses
import inspect

import gin
import keras
import tensorflow as tf

from tf_biggan import kernels, layers, networks_deep


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

BOTTOM_WIDTH = 4


def _configurable(cls):
    """`gin.configurable` for a Keras class.

    gin replaces `__init__` with a `(*args, **kwargs)` wrapper; Keras inspects
    `__init__`'s argument spec when an instance is created, so the wrapper
    gets the original signature back.
    """
    signature = inspect.signature(cls.__init__)
    cls = gin.configurable(cls)
    cls.__init__.__signature__ = signature
    return cls


def _arch(table, resolution):
    if resolution not in table:
        raise ValueError(f"resolution must be one of {sorted(table)}, got {resolution}")
    return table[resolution]


def _attention_resolutions(attention, default, resolution) -> tuple[int, ...]:
    """Normalises the `attention` argument: None → the paper's default, 0/() → none."""
    if attention is None:
        return tuple(default)
    if isinstance(attention, int):
        attention = () if attention == 0 else (attention,)
    attention = tuple(int(a) for a in attention)
    for a in attention:
        if a < 8 or a > resolution or a & (a - 1):
            raise ValueError(f"attention resolution {a} is not a power of two in [8, {resolution}]")
    return attention


class GeneratorBlock(keras.layers.Layer):
    """Residual up-block: CBN-ReLU-up-conv3-CBN-ReLU-conv3, shortcut up-conv1.

    Call with `(x [B, H, W, Cin], c [B, D])` and optionally `truncation` (float scalar,
    picks the BN statistics of an inference call, see `layers.SyncBatchNorm`), returns
    `[B, 2H, 2W, filters]`.

    `kernel_initializer` and `bias_initializer` are those of every conv (see `Generator`);
    the conditional BNs' gain and bias maps take the kernel initializer and have no bias.
    """

    def __init__(
        self,
        filters: int,
        bn_momentum: float = 0.9,
        kernel_initializer="orthogonal",
        bn_epsilon: float = 1e-5,
        num_standing_stats: int = 0,
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
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
                name=name,
            )

        self.bn1 = cbn("bn1")
        self.conv1 = layers.SNConv2D(self.filters, 3, name="conv1", **conv_init)
        self.bn2 = cbn("bn2")
        self.conv2 = layers.SNConv2D(self.filters, 3, name="conv2", **conv_init)
        self.conv_shortcut = layers.SNConv2D(self.filters, 1, name="conv_shortcut", **conv_init)

    def call(self, x, c, training=None, truncation=None):
        h = self.bn1(x, c, training=training, truncation=truncation, relu=True)
        h = self.conv1(h, training=training, resample="up")
        h = self.bn2(h, c, training=training, truncation=truncation, relu=True)
        h = self.conv2(h, training=training)
        return h + self.conv_shortcut(x, training=training, resample="up")

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "num_standing_stats": self.num_standing_stats,
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


def _add_stage(model, layer) -> str:
    """Sets `layer` as the attribute of `model` named after it; returns the name.

    Blocks are attributes rather than items of a list because Keras 3 leaves
    layers held in Python lists and dicts out of `tf.train.Checkpoint`.
    """
    setattr(model, layer.name, layer)
    return layer.name


class _StagedModel(keras.Model):
    """Shared accessors of the residual stages of G and D."""

    @property
    def blocks(self) -> list:
        """The residual blocks, in order."""
        return [getattr(self, f"block{index}") for index in range(self._num_blocks)]

    @property
    def attention_blocks(self) -> dict:
        """Block index → the self-attention layer that runs after that block."""
        return {index: getattr(self, name) for index, name in self._attention_after.items()}

    def _initializers(self) -> dict:
        """The initializer arguments every conv and linear layer (and block) gets."""
        return {
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }

    def _config(self, **specific) -> dict:
        """`get_config()`: the settings G and D share, then `specific` ones."""
        return {
            "name": self.name,
            "resolution": self.resolution,
            "ch": self.ch,
            "num_classes": self.num_classes,
            **specific,
            "attention": list(self.attention),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": self.bias_initializer,
            "architecture": self.architecture,
            "depth": self.depth if self.architecture == "deep" else None,
        }


ARCHITECTURES = ("biggan", "deep")


def _architecture_and_depth(architecture: str, depth) -> int:
    """Checks `architecture` and returns the blocks per resolution (1 for BigGAN)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if architecture == "biggan":
        if depth is not None:
            raise ValueError(
                f"depth={depth} is a BigGAN-deep setting; BigGAN has one block per resolution "
                "(set architecture = 'deep' too, or leave depth unset)"
            )
        return 1
    depth = 2 if depth is None else int(depth)
    if depth < 1:
        raise ValueError(f"depth (blocks per resolution) must be >= 1, got {depth}")
    return depth


@_configurable
class Generator(_StagedModel):
    """BigGAN or BigGAN-deep generator.

    Args:
      resolution: output size in pixels, one of 32, 64, 128, 256, 512.
      ch: channel width multiplier (96 in the paper at 128 px; 128 for BigGAN-deep).
      num_classes: number of classes.
      dim_z: latent size; None → the paper's value for the resolution (128 for
        BigGAN-deep). With BigGAN's `hierarchical_z` it must divide evenly into
        `num_blocks + 1` chunks.
      shared_dim: size of the shared class embedding (128); 0 → no shared
        embedding: each conditional BN's gain and bias read the class weights `y`
        themselves (an SN embedding per layer, the port's setting without
        `--G_shared`, as in its CIFAR script). BigGAN-deep needs the shared embedding.
      hierarchical_z: BigGAN: split z into per-block chunks (the first feeds the linear
        layer); otherwise all of z feeds the linear layer and each block's
        conditioning is the class embedding alone. BigGAN-deep: must be True, and means
        that `[embedding, z]` feeds the linear layer and every block (no chunks).
      attention: resolutions after whose block (BigGAN-deep: stage) a self-attention
        block runs; None → the paper's default, 0 or () → none.
      bn_momentum: decay of the BN moving statistics.
      bn_epsilon: added to the variance in every batch norm (the conditional ones and
        the last); 1e-5 as in the PyTorch port, 1e-4 in DeepMind's TF-Hub generators.
      num_standing_stats: T >= 2 entries of truncation-indexed BN statistics per batch
        norm (for truncation `k / (T - 1)`, k = 0..T-1; DeepMind's modules: 51), or 0
        for none. Filled by `tf_biggan.standing_stats` or a converter; see
        `layers.SyncBatchNorm` for how an inference call picks them.
      kernel_initializer: initialiser of every kernel (conv, linear, embeddings), a
        Keras identifier or config: "orthogonal" (the paper's) or
        `{"class_name": "RandomNormal", "config": {"stddev": 0.02}}` (the port's N02),
        without a seed: each kernel is its own draw (`layers.fresh_initializer`), and
        `keras.utils.set_random_seed` before the build makes them reproducible.
      architecture: "biggan" or "deep" (BigGAN-deep, `tf_biggan.networks_deep`).
      depth: BigGAN-deep's blocks per resolution; None → 2 (the paper's). BigGAN has one
        and takes no `depth`.
      bias_initializer: of every conv and linear bias, one of `layers.BIAS_INITIALIZERS`:
        "fan_in_uniform" (U(+-1/sqrt(fan_in)), PyTorch's default, which the reference
        keeps) or "zeros". Batch-norm offsets start at 0 either way.

    Call with `(z [B, dim_z] float, y [B, num_classes] float class weights)` and
    optionally `truncation` (float scalar: with a table of standing statistics, an
    inference call with `0 < truncation <= 1` uses the table's entry for it; it never
    changes z, which the caller truncates); returns images `[B, resolution, resolution, 3]` in [-1, 1] (float32 output
    even under mixed precision).
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        num_classes: int = 1000,
        dim_z: int | None = None,
        shared_dim: int = 128,
        hierarchical_z: bool = True,
        attention=None,
        bn_momentum: float = 0.9,
        kernel_initializer="orthogonal",
        bn_epsilon: float = 1e-5,
        num_standing_stats: int = 0,
        architecture: str = "biggan",
        depth: int | None = None,
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth = _architecture_and_depth(architecture, depth)
        self.architecture = architecture
        deep = architecture == "deep"
        arch = _arch(networks_deep.DEEP_G_ARCH if deep else G_ARCH, resolution)
        self.resolution = int(resolution)
        self.ch = int(ch)
        self.num_classes = int(num_classes)
        self.dim_z = int(dim_z if dim_z is not None else arch.default_dim_z)
        self.shared_dim = int(shared_dim)
        if self.shared_dim < 0:
            raise ValueError(f"shared_dim must be >= 0 (0: no shared embedding), got {shared_dim}")
        self.hierarchical_z = bool(hierarchical_z)
        if deep and not (self.shared_dim and self.hierarchical_z):
            raise ValueError(
                "BigGAN-deep feeds [shared class embedding, z] to every block: it needs "
                f"shared_dim > 0 and hierarchical_z = True (got {shared_dim}, {hierarchical_z})"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        self.attention = _attention_resolutions(attention, arch.default_attention, resolution)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        if not self.bn_epsilon > 0:
            raise ValueError(f"bn_epsilon must be > 0, got {bn_epsilon}")
        self.num_standing_stats = int(num_standing_stats)
        self.shared_embedding = None
        if self.shared_dim:
            # A Keras layer, which uses the initializer it is given as it is: its own copy.
            self.shared_embedding = keras.layers.Dense(
                self.shared_dim,
                use_bias=False,
                kernel_initializer=layers.fresh_initializer(self.kernel_initializer),
                name="shared_embedding",
            )
        if deep:
            self.z_chunk_size = self.dim_z
            self.input_channels = arch.stages[0][0] * self.ch
            specs = networks_deep.generator_blocks(arch, self.ch, self.depth)
        else:
            self.z_chunk_size = self._z_chunk_size(len(arch.block_multipliers))
            self.input_channels = arch.input_multiplier * self.ch
            specs = [(None, m * self.ch, True, True) for m in arch.block_multipliers]
        self.linear = layers.SNDense(
            BOTTOM_WIDTH * BOTTOM_WIDTH * self.input_channels, name="linear", **self._initializers()
        )
        self._add_blocks(specs)
        self.output_bn = layers.SyncBatchNorm(
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            num_standing_stats=self.num_standing_stats,
            name="output_bn",
        )
        self.output_conv = layers.SNConv2D(3, 3, name="output_conv", **self._initializers())

    def _z_chunk_size(self, num_blocks: int) -> int:
        """BigGAN: z's part per block (and for the linear layer)."""
        if not self.hierarchical_z:
            return self.dim_z
        if self.dim_z % (num_blocks + 1):
            raise ValueError(
                f"dim_z={self.dim_z} must split into {num_blocks + 1} equal chunks "
                f"(one for the linear layer and one per block) at {self.resolution} px"
            )
        return self.dim_z // (num_blocks + 1)

    def _add_blocks(self, specs) -> None:
        """Adds the residual blocks `(in, out, upsample, ends a stage)` and the attention
        blocks after the stages that reach an attention resolution."""
        init = self.kernel_initializer
        self._attention_after = {}
        size = BOTTOM_WIDTH
        settings = {
            "bn_epsilon": self.bn_epsilon,
            "num_standing_stats": self.num_standing_stats,
            **self._initializers(),
        }
        for index, (cin, out, up, stage_end) in enumerate(specs):
            name = f"block{index}"
            if self.architecture == "deep":
                hidden = cin // networks_deep.CHANNEL_RATIO
                block = networks_deep.DeepGeneratorBlock(
                    out, hidden, up, self.bn_momentum, name=name, **settings
                )
            else:
                block = GeneratorBlock(out, self.bn_momentum, name=name, **settings)
            _add_stage(self, block)
            size = size * 2 if up else size
            if stage_end and size in self.attention:
                self._attention_after[index] = _add_stage(
                    self, layers.SelfAttention(kernel_initializer=init, name=f"attention{size}")
                )
        self._num_blocks = len(specs)

    def _conditioning(self, z, y):
        """`(linear layer input [B, *], per-block conditioning [B, D] list)`."""
        embedding = y if self.shared_embedding is None else self.shared_embedding(y)
        if self.architecture == "deep":
            condition = tf.concat([embedding, tf.cast(z, embedding.dtype)], -1)
            return condition, [condition] * self._num_blocks
        if self.hierarchical_z:
            chunks = tf.split(z, self._num_blocks + 1, axis=-1)
            conditions = [
                tf.concat([embedding, tf.cast(zk, embedding.dtype)], -1) for zk in chunks[1:]
            ]
            return chunks[0], conditions
        return z, [embedding] * self._num_blocks

    def call(self, z, y, training=None, truncation=None):
        z = tf.convert_to_tensor(z)
        y = tf.cast(tf.convert_to_tensor(y), self.compute_dtype)
        z_input, conditions = self._conditioning(z, y)
        h = self.linear(z_input, training=training)
        h = tf.reshape(h, [-1, BOTTOM_WIDTH, BOTTOM_WIDTH, self.input_channels])
        attention = self.attention_blocks
        for index, block in enumerate(self.blocks):
            h = block(h, conditions[index], training=training, truncation=truncation)
            if index in attention:
                h = attention[index](h, training=training)
        h = self.output_bn(h, training=training, truncation=truncation, relu=True)
        h = self.output_conv(h, training=training)
        return tf.cast(tf.tanh(h), tf.float32)

    @property
    def class_embedding_layers(self) -> list:
        """The layers whose weights are per class: the shared embedding, or without one the
        gain and bias maps of every conditional BN (which then read the classes directly).
        Fine-tuning on another number of classes starts these afresh."""
        if self.shared_embedding is not None:
            return [self.shared_embedding]
        return [
            linear
            for block in self.blocks
            for bn in (block.bn1, block.bn2)
            for linear in (bn.gain, bn.bias)
        ]

    def build_by_call(self):
        """Creates every weight by running one inference call on a batch of one."""
        z = tf.zeros([1, self.dim_z])
        y = tf.one_hot([0], self.num_classes)
        self(z, y, training=False)

    def get_config(self):
        return self._config(
            dim_z=self.dim_z,
            shared_dim=self.shared_dim,
            hierarchical_z=self.hierarchical_z,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            num_standing_stats=self.num_standing_stats,
        )


@_configurable
class Discriminator(_StagedModel):
    """BigGAN or BigGAN-deep projection discriminator.

    `D(x, y) = psi(h) + <embed(y), h>` with `h` the ReLU'd features of the last
    block (`features`, 4x4 at 64-512 px, 8x8 at 32 px) summed over height and
    width (Miyato & Koyama, 2018).

    Args:
      resolution: input size in pixels, one of 32, 64, 128, 256, 512.
      ch: channel width multiplier (96 in the paper at 128 px; 128 for BigGAN-deep).
      num_classes: number of classes.
      attention: resolutions after whose block (BigGAN-deep: stage) a self-attention
        block runs; None → the paper's default, 0 or () → none.
      kernel_initializer: initialiser of every kernel (see `Generator`).
      architecture: "biggan" or "deep" (BigGAN-deep, `tf_biggan.networks_deep`).
      depth: BigGAN-deep's blocks per resolution; None → 2. BigGAN takes none.
      bias_initializer: of every conv and linear bias (see `Generator`).

    Call with `(images [B, R, R, 3] in [-1, 1], labels int [B])`; returns
    logits `[B]` float32.
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 96,
        num_classes: int = 1000,
        attention=None,
        kernel_initializer="orthogonal",
        architecture: str = "biggan",
        depth: int | None = None,
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth = _architecture_and_depth(architecture, depth)
        self.architecture = architecture
        deep = architecture == "deep"
        arch = _arch(networks_deep.DEEP_D_ARCH if deep else D_ARCH, resolution)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        init = self.kernel_initializer
        self.resolution = int(resolution)
        self.ch = int(ch)
        self.num_classes = int(num_classes)
        self.attention = _attention_resolutions(attention, arch.default_attention, resolution)
        self.input_conv = None
        if deep:
            # BigGAN-deep's blocks all start with a ReLU: a stem conv maps RGB to ch first.
            first = arch.stages[0][0] * self.ch
            self.input_conv = layers.SNConv2D(first, 3, name="input_conv", **self._initializers())
            specs = networks_deep.discriminator_blocks(arch, self.ch, self.depth)
        else:
            specs = [
                (None, m * self.ch, down, True)
                for m, down in zip(arch.block_multipliers, arch.downsample, strict=True)
            ]
        self._add_blocks(specs)
        features = specs[-1][1]
        self.linear = layers.SNDense(1, name="linear", **self._initializers())
        self.embedding = layers.SNEmbedding(
            self.num_classes, features, kernel_initializer=init, name="embedding"
        )

    def _add_blocks(self, specs) -> None:
        """Adds the residual blocks `(in, out, downsample, ends a stage)` and one attention
        block per attention resolution, after the first stage that reaches it."""
        init = self.kernel_initializer
        self._attention_after = {}
        size = self.resolution
        placed = set()
        for index, (_, out, down, stage_end) in enumerate(specs):
            name = f"block{index}"
            if self.architecture == "deep":
                hidden = out // networks_deep.CHANNEL_RATIO
                block = networks_deep.DeepDiscriminatorBlock(
                    out, hidden, down, name=name, **self._initializers()
                )
            else:
                block = DiscriminatorBlock(
                    out, downsample=down, preactivation=index > 0, name=name,
                    **self._initializers(),
                )  # fmt: skip
            _add_stage(self, block)
            size = size // 2 if down else size
            if stage_end and size in self.attention and size not in placed:
                placed.add(size)
                self._attention_after[index] = _add_stage(
                    self, layers.SelfAttention(kernel_initializer=init, name=f"attention{size}")
                )
        self._num_blocks = len(specs)

    def features(self, images, training=None):
        """The last residual block's output, before the ReLU and the sum pooling.

        Args:
          images: `[B, R, R, 3]` in [-1, 1].
          training: passed to the blocks (SN power iteration, no batch norm in D).

        Returns:
          `[B, 4, 4, C]` at 64-512 px, `[B, 8, 8, C]` at 32 px, with `C` the last
          block's width (`D_ARCH` / `DEEP_D_ARCH`, times `ch`), in the compute dtype.
        """
        h = tf.cast(images, self.compute_dtype)
        if self.input_conv is not None:
            h = self.input_conv(h, training=training)
        attention = self.attention_blocks
        for index, block in enumerate(self.blocks):
            h = block(h, training=training)
            if index in attention:
                h = attention[index](h, training=training)
        return h

    def call(self, images, labels, training=None):
        h = self.features(images, training=training)
        h = tf.reduce_sum(tf.nn.relu(h), axis=[1, 2])  # [B, C]
        logits = tf.squeeze(self.linear(h, training=training), axis=-1)
        projection = tf.reduce_sum(self.embedding(labels, training=training) * h, axis=-1)
        return tf.cast(logits + projection, tf.float32)

    def build_by_call(self):
        """Creates every weight by running one inference call on a batch of one."""
        images = tf.zeros([1, self.resolution, self.resolution, 3])
        self(images, tf.zeros([1], tf.int32), training=False)

    def get_config(self):
        return self._config()


def count_trainable_parameters(model: keras.Model) -> int:
    """Number of scalar trainable parameters (SN `u` and BN statistics excluded)."""
    return int(sum(int(tf.size(v)) for v in model.trainable_variables))


def configured_task(cls=None) -> tuple[int, int]:
    """`(resolution, num_classes)` that `cls()` (default `Generator`) would be built with
    under the current gin bindings, without constructing it: the data pipeline needs them
    before the networks are built (which takes a minute at 128 px)."""
    cls = cls or Generator
    bound = gin.get_bindings(cls)
    parameters = cls.__init__.__signature__.parameters
    return tuple(
        bound.get(name, parameters[name].default) for name in ("resolution", "num_classes")
    )


def check_same_task(generator, discriminator, **expected) -> None:
    """Raises unless G and D agree on the resolution and the class count.

    The networks are the one source of both settings; `expected` (`resolution=`,
    `num_classes=`) are values bound elsewhere by older experiment files, which must agree.

    Raises:
      ValueError: naming the disagreeing setting and both values.
    """
    for name in ("resolution", "num_classes"):
        values = {
            f"Generator.{name}": getattr(generator, name),
            f"Discriminator.{name}": getattr(discriminator, name),
        }
        if name in expected:
            values[f"train.{name}"] = expected[name]
        if len(set(values.values())) > 1:
            given = ", ".join(f"{key} = {value}" for key, value in values.items())
            raise ValueError(
                f"the networks disagree on {name}: {given}; bind it once with a gin macro "
                f"(e.g. {name.upper()}) for both networks"
            )
