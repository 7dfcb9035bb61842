"""BigGAN and BigGAN-deep generator and discriminator (Brock et al., ICLR 2019).

`Generator` and `Discriminator` are the parts the two architectures share: the shared class
embedding, the linear layer, conditional BN, attention placement, the output layers and the
projection. What differs (tables, blocks, how z reaches them, D's stem) comes from an
architecture object chosen by `architecture`: `networks_biggan.BigGANArchitecture` or its
peer `networks_deep.DeepArchitecture` (`ARCHITECTURES`).

The architecture is data: the tables give the channel multipliers of `ch` per residual
block (the paper's appendix B and its public PyTorch port). BigGAN with `ch=96`, 1000
classes, a shared embedding of 128 and hierarchical z has exactly 70,433,988 (G) and
87,982,370 (D) trainable parameters at 128 px, the paper's model; BigGAN-deep with
`ch=128`, `depth=2`, `dim_z=128` and a shared embedding of 128 has exactly 50,244,484 (G)
and 34,590,210 (D), the public port's counts.

Notes on choices where the paper leaves room:
- The generator takes class *weights* `y` `[B, num_classes]` (one-hot for a
  class), so the shared embedding is a linear map of `y`. A one-hot `y` gives
  exactly the embedding lookup, and convex mixtures give the class-embedding
  interpolations of the paper's figures. The shared embedding is not
  spectrally normalised, as in the public port.
- Channel layout is NHWC; the initial linear layer's output is reshaped to
  `[4, 4, C]` (a permutation of the port's `[C, 4, 4]` of the same size).
"""

from __future__ import annotations

import inspect

import gin
import keras
import tensorflow as tf

from tf_biggan import layers, networks_biggan, networks_deep

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
            "depth": None if self.architecture == "biggan" else self.depth,
        }


ARCHITECTURES = {
    family.name: family
    for family in (networks_biggan.BigGANArchitecture, networks_deep.DeepArchitecture)
}
"""The `architecture` values of `Generator` and `Discriminator`, and what each builds."""


def _architecture(name: str):
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {tuple(ARCHITECTURES)}, got {name!r}")
    return ARCHITECTURES[name]


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
      bn_unbiased_moving_variance: every batch norm's moving variance averages the
        batches' unbiased variances, as the reference's (PyTorch's) batch norm does (the
        default); False: the biased ones, as tf_biggan <= 0.2 (Keras' convention).

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
        bn_unbiased_moving_variance: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._family = _architecture(architecture)
        self.architecture = architecture
        self.depth = self._family.depth(depth)
        arch = _arch(self._family.generator_table, resolution)
        self.resolution = int(resolution)
        self.ch = int(ch)
        self.num_classes = int(num_classes)
        self.dim_z = int(dim_z if dim_z is not None else arch.default_dim_z)
        self.shared_dim = int(shared_dim)
        if self.shared_dim < 0:
            raise ValueError(f"shared_dim must be >= 0 (0: no shared embedding), got {shared_dim}")
        self.hierarchical_z = bool(hierarchical_z)
        self._family.check_conditioning(self.shared_dim, self.hierarchical_z)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        self.attention = _attention_resolutions(attention, arch.default_attention, resolution)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        if not self.bn_epsilon > 0:
            raise ValueError(f"bn_epsilon must be > 0, got {bn_epsilon}")
        self.num_standing_stats = int(num_standing_stats)
        self.bn_unbiased_moving_variance = bool(bn_unbiased_moving_variance)
        self.shared_embedding = None
        if self.shared_dim:
            # A Keras layer, which uses the initializer it is given as it is: its own copy.
            self.shared_embedding = keras.layers.Dense(
                self.shared_dim,
                use_bias=False,
                kernel_initializer=layers.fresh_initializer(self.kernel_initializer),
                name="shared_embedding",
            )
        specs = self._family.generator_blocks(arch, self.ch, self.depth)
        self.z_chunk_size = self._family.z_chunk_size(
            self.dim_z, len(specs), self.hierarchical_z, self.resolution
        )
        self.input_channels = self._family.generator_input_channels(arch, self.ch)
        self.linear = layers.SNDense(
            BOTTOM_WIDTH * BOTTOM_WIDTH * self.input_channels, name="linear", **self._initializers()
        )
        self._add_blocks(specs)
        self.output_bn = layers.SyncBatchNorm(
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            num_standing_stats=self.num_standing_stats,
            unbiased_moving_variance=self.bn_unbiased_moving_variance,
            name="output_bn",
        )
        self.output_conv = layers.SNConv2D(3, 3, name="output_conv", **self._initializers())

    def _add_blocks(self, specs) -> None:
        """Adds the residual blocks `(in, out, upsample, ends a stage)` and the attention
        blocks after the stages that reach an attention resolution."""
        init = self.kernel_initializer
        self._attention_after = {}
        size = BOTTOM_WIDTH
        settings = {
            "bn_epsilon": self.bn_epsilon,
            "num_standing_stats": self.num_standing_stats,
            "bn_unbiased_moving_variance": self.bn_unbiased_moving_variance,
            **self._initializers(),
        }
        for index, (cin, out, up, stage_end) in enumerate(specs):
            name = f"block{index}"
            block = self._family.generator_block(cin, out, up, self.bn_momentum, name, **settings)
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
        return self._family.conditioning(z, embedding, self._num_blocks, self.hierarchical_z)

    def call(self, z, y, training=None, truncation=None):
        z = tf.convert_to_tensor(z)
        y = tf.cast(tf.convert_to_tensor(y), self.compute_dtype)
        z_input, conditions = self._conditioning(z, y)
        h = self.linear(z_input, training=training)
        h = tf.reshape(h, [-1, BOTTOM_WIDTH, BOTTOM_WIDTH, self.input_channels])
        attention = self.attention_blocks
        for index, block in enumerate(self.blocks):
            h = block(h, conditions[index], training=training, statistics_at=truncation)
            if index in attention:
                h = attention[index](h, training=training)
        h = self.output_bn(h, training=training, statistics_at=truncation, relu=True)
        h = self.output_conv(h, training=training)
        # float32 out under any policy but float64, whose step keeps no float32 rounding.
        return tf.cast(tf.tanh(h), layers.statistics_dtype(self.compute_dtype))

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
            bn_unbiased_moving_variance=self.bn_unbiased_moving_variance,
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
        self._family = _architecture(architecture)
        self.architecture = architecture
        self.depth = self._family.depth(depth)
        arch = _arch(self._family.discriminator_table, resolution)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = bias_initializer
        init = self.kernel_initializer
        self.resolution = int(resolution)
        self.ch = int(ch)
        self.num_classes = int(num_classes)
        self.attention = _attention_resolutions(attention, arch.default_attention, resolution)
        self.input_conv = self._family.discriminator_stem(arch, self.ch, **self._initializers())
        specs = self._family.discriminator_blocks(arch, self.ch, self.depth)
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
            block = self._family.discriminator_block(index, out, down, name, **self._initializers())
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
          block's width (the architecture's table, times `ch`), in the compute dtype.
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
        return tf.cast(logits + projection, layers.statistics_dtype(self.compute_dtype))

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
