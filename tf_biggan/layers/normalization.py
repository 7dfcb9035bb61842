"""Batch norm with cross-replica statistics (`SyncBatchNorm`) and BigGAN's class-conditional
batch norm (`ConditionalBatchNorm`), with truncation-indexed standing statistics (see the
package docstring)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_biggan import kernels
from tf_biggan.dtypes import statistics_dtype
from tf_biggan.layers.initializers import initializer_template
from tf_biggan.layers.spectral import SNDense


def _replicas_in_sync() -> int:
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def _values_per_channel(x) -> tf.Tensor:
    """N · H · W of a one-replica batch `x` `[N, H, W, C]`, as a float32 scalar."""
    return tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)


class SyncBatchNorm(keras.layers.Layer):
    """Batch norm over N, H, W with statistics reduced across replicas.

    In training, the mean and variance are those of the global batch: each
    replica's sums are all-reduced when the replica context has more than one
    replica (synchronised BN). In inference, the moving statistics are used.

    Args:
      momentum: decay of the moving statistics (0.9, the PyTorch port's 0.1).
      epsilon: added to the variance (1e-5).
      affine: learn a per-channel scale and offset (the last BN of G has them;
        conditional BN does not).
      num_standing_stats: T >= 0 entries of truncation-indexed "standing"
        statistics (paper, appendix): `standing_mean` and `standing_variance`,
        `[T, C]` non-trainable weights, entry k for truncation `k / (T - 1)`
        (DeepMind's modules: T = 51, truncation 0 to 1 in steps of 0.02). 0: none.
      kernel_policy: the `kernels.KernelPolicy` that decides which training calls with
        `relu=True` run as `kernels.batch_norm_relu`; None: `kernels.current_policy()`,
        read once, here. Not part of the config.
      unbiased_moving_variance: the moving variance averages each batch's unbiased
        variance, `n / (n - 1)` times the biased one it normalises with (n values per
        channel), as PyTorch's batch norm and so the reference's BigGAN do (the default);
        False: the biased one, as Keras' batch norm and tf_biggan <= 0.2 do.

    Truncation-indexed statistics: an inference call given `statistics_at` t
    with `0 < t <= 1` normalises with `standing_statistics(t)`, the linear
    interpolation between the two entries around t; any other t (None, 0,
    negative, above 1, inf: no truncation in tf_biggan's convention) and a
    layer without a table use the moving statistics. Training calls always use
    the batch's statistics.
    """

    def __init__(
        self,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        affine: bool = True,
        num_standing_stats: int = 0,
        kernel_policy: kernels.KernelPolicy | None = None,
        unbiased_moving_variance: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.kernel_policy = kernel_policy or kernels.current_policy()
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.affine = bool(affine)
        self.num_standing_stats = int(num_standing_stats)
        # Set by `collect_batch_statistics` (standing statistics); not part of the config.
        self._collector = None
        if self.num_standing_stats < 0 or self.num_standing_stats == 1:
            raise ValueError(
                f"num_standing_stats must be 0 (none) or >= 2 (entries for truncation 0 to 1), "
                f"got {num_standing_stats}"
            )

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        # Replicas see the same all-reduced moments, so their copies agree ("mean").
        self.moving_mean, self.moving_variance = (
            self.add_weight(
                name=name,
                shape=(channels,),
                initializer=initializer,
                trainable=False,
                autocast=False,
                aggregation="mean",
            )
            for name, initializer in (("moving_mean", "zeros"), ("moving_variance", "ones"))
        )
        self.standing_mean = self.standing_variance = None
        if self.num_standing_stats:
            # Written only by whole-table assignments outside the replicas (the standing
            # statistics tool, the converters), so every replica holds the same values.
            self.standing_mean, self.standing_variance = (
                self.add_weight(
                    name=name,
                    shape=(self.num_standing_stats, channels),
                    initializer=initializer,
                    trainable=False,
                    autocast=False,
                    aggregation="only_first_replica",
                )
                for name, initializer in (("standing_mean", "zeros"), ("standing_variance", "ones"))
            )

    def collect_batch_statistics(self, collector) -> None:
        """While `collector` is set, inference calls normalise with the batch's statistics
        (as training calls do, without moving the moving statistics) and pass them to
        `collector.add(mean, variance)` (float32 `[C]` each, variance biased); None stops.

        This is how standing statistics are accumulated (`tf_biggan.standing_stats`): the
        rest of the network stays in inference mode (no SN power-iteration writes).
        """
        self._collector = collector

    def standing_statistics(self, truncation) -> tuple[tf.Tensor, tf.Tensor]:
        """The table's mean and variance at `truncation` t, float32 `[C]` each.

        Entry k holds truncation `k / (T - 1)`; t in between is interpolated linearly,
        `(1 - f) * entry[i] + f * entry[i + 1]` with `i = floor(t (T - 1))` and
        `f = t (T - 1) - i`, so an entry's own t gives that entry exactly and the result
        is continuous in t. t is clipped to [0, 1]. (pytorch-pretrained-BigGAN's port of
        the biggan-deep modules weights the two entries the other way round, `f` on the
        lower one, from `math.modf(t / step)`: that jumps at every entry, and float
        rounding puts t = 0.3 at entry 14 instead of 15; it is not followed here.)

        Raises:
          ValueError: the layer has no table.
        """
        if not self.num_standing_stats:
            raise ValueError(f"{self.name} has no standing statistics (num_standing_stats=0)")
        last = self.num_standing_stats - 1
        dtype = self.standing_mean.dtype
        position = tf.clip_by_value(tf.cast(truncation, dtype), 0.0, 1.0) * float(last)
        lower = tf.minimum(tf.floor(position), float(last - 1))
        fraction = position - lower
        index = tf.cast(lower, tf.int32)
        stats = []
        for table in (self.standing_mean, self.standing_variance):
            table = tf.convert_to_tensor(table.value)
            stats.append((1.0 - fraction) * table[index] + fraction * table[index + 1])
        return stats[0], stats[1]

    def _inference_statistics(self, statistics_at) -> tuple[tf.Tensor, tf.Tensor]:
        """The moving statistics, or the table's entry at truncation `statistics_at` (see the
        class doc)."""
        mean = tf.convert_to_tensor(self.moving_mean.value)
        variance = tf.convert_to_tensor(self.moving_variance.value)
        if statistics_at is None or not self.num_standing_stats:
            return mean, variance
        t = tf.cast(statistics_at, mean.dtype)
        in_table = tf.logical_and(t > 0.0, t <= 1.0)
        standing_mean, standing_variance = self.standing_statistics(t)
        return (
            tf.where(in_table, standing_mean, mean),
            tf.where(in_table, standing_variance, variance),
        )

    def _batch_moments(self, x):
        """Mean and (biased) variance over N, H, W of the global batch, float32 `[C]`
        (float64 under a float64 policy), and the global number of values per channel."""
        dtype = statistics_dtype(self.compute_dtype)
        x = tf.cast(x, dtype)
        axes = list(range(x.shape.rank - 1))
        context = tf.distribute.get_replica_context()
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), dtype)
        if _replicas_in_sync() == 1:
            return (*tf.nn.moments(x, axes), count)
        local = tf.concat(
            [tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), count[None]], axis=0
        )
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        channels = x.shape[-1]
        global_count = total[-1]
        mean = total[:channels] / global_count
        variance = tf.maximum(total[channels : 2 * channels] / global_count - tf.square(mean), 0.0)
        return mean, variance, global_count

    def normalize(self, x, training=None, statistics_at=None):
        """`(x - mean) / sqrt(var + eps)` in the compute dtype, no affine part.

        `statistics_at` (a float scalar truncation, or None) picks the statistics of an
        inference call (see the class docstring); training calls ignore it. It never
        truncates anything: z is the caller's.
        """
        dtype = self.compute_dtype
        if self._fused_training(x, training):
            # One replica: the fused kernel computes the statistics and normalises in
            # one pass (about 3x faster on CPU than separate moments and arithmetic).
            outputs, mean, variance = kernels.fused_batch_normalize(tf.cast(x, dtype), self.epsilon)
            self._update_moving_statistics(mean, variance, _values_per_channel(x))
            return outputs
        if training:
            mean, variance, count = self._batch_moments(x)
            self._update_moving_statistics(mean, variance, count)
        elif self._collector is not None:
            mean, variance, _ = self._batch_moments(x)
            self._collector.add(mean, variance)
        else:
            mean, variance = self._inference_statistics(statistics_at)
        inv = tf.math.rsqrt(variance + self.epsilon)
        return tf.cast(x, dtype) * tf.cast(inv, dtype) - tf.cast(mean * inv, dtype)

    def uses_stored_statistics(self, training) -> bool:
        """Whether a call normalises with the stored statistics (an inference call that
        is not collecting standing statistics)."""
        return not training and self._collector is None

    def affine_with_stored_statistics(self, x, gamma, beta, statistics_at=None):
        """`normalize(x) * gamma + beta` of an inference call, as one multiply-add per element.

        The stored statistics at truncation `statistics_at`, `gamma` and `beta` (`[C]`, or `[B, 1, 1, C]`
        per example for the conditional BN) are folded into a scale and an offset in
        float32; `x` is scaled and shifted in the compute dtype.
        """
        mean, variance = self._inference_statistics(statistics_at)
        inv = tf.math.rsqrt(variance + self.epsilon)
        gamma = tf.cast(gamma, inv.dtype)
        scale, offset = inv * gamma, (-mean * inv) * gamma + tf.cast(beta, inv.dtype)
        dtype = self.compute_dtype
        return tf.cast(x, dtype) * tf.cast(scale, dtype) + tf.cast(offset, dtype)

    def _update_moving_statistics(self, mean, variance, count):
        """Moves the statistics towards the batch's, unless the batch's are not finite.

        `variance` is the batch's biased variance, the one it was normalised with, over
        `count` values per channel. By default the moving variance averages the unbiased
        one, `variance · count / (count − 1)`, as PyTorch's batch norm (and so the
        reference's BigGAN) does, so that G's inference statistics are the reference's
        (`unbiased_moving_variance`).

        A step whose forward pass overflows is skipped by the train step, but the forward
        pass has already run; one non-finite batch averaged in would make the moving
        statistics NaN for good, and with them every later inference output of G, its EMA
        and every checkpoint after it. Such a batch leaves the statistics as they were.
        """
        moving_mean = tf.convert_to_tensor(self.moving_mean.value)
        moving_variance = tf.convert_to_tensor(self.moving_variance.value)
        finite = tf.logical_and(
            tf.reduce_all(tf.math.is_finite(mean)), tf.reduce_all(tf.math.is_finite(variance))
        )
        if self.unbiased_moving_variance:
            count = tf.cast(count, variance.dtype)
            variance = variance * (count / tf.maximum(count - 1.0, 1.0))
        # The batch values are replaced, not the decay zeroed: (moving - NaN) * 0 is NaN.
        mean = tf.where(finite, mean, moving_mean)
        variance = tf.where(finite, variance, moving_variance)
        decay = 1.0 - self.momentum
        self.moving_mean.assign_sub((moving_mean - mean) * decay)
        self.moving_variance.assign_sub((moving_variance - variance) * decay)

    def call(self, inputs, training=None, statistics_at=None, relu=False):
        """`relu`: apply a ReLU to the output (see `normalize_scale_offset`)."""
        if not self.affine:
            outputs = self.normalize(inputs, training=training, statistics_at=statistics_at)
            return tf.nn.relu(outputs) if relu else outputs
        dtype = self.compute_dtype
        if self.uses_stored_statistics(training):
            scale, offset = self.gamma.value, self.beta.value
        else:
            scale, offset = tf.cast(self.gamma.value, dtype), tf.cast(self.beta.value, dtype)
        return self.normalize_scale_offset(inputs, scale, offset, training, statistics_at, relu)

    def normalize_scale_offset(
        self, x, scale, offset, training=None, statistics_at=None, relu=False
    ):
        """`normalize(x) * scale + offset`, then a ReLU if `relu`.

        `scale` and `offset` are `[C]` or `[B, 1, 1, C]` (per example): float32 for a call
        with the stored statistics (folded into one multiply-add), the compute dtype
        otherwise. A single-replica training call with `relu` runs as
        `kernels.batch_norm_relu`, whose gradient keeps one activation fewer, where the
        layer's `KernelPolicy.uses_batch_norm_relu` says so.
        """
        if self.uses_stored_statistics(training):
            outputs = self.affine_with_stored_statistics(x, scale, offset, statistics_at)
        elif relu and self._fuses_relu(x, training):
            outputs, mean, variance = kernels.batch_norm_relu(
                tf.cast(x, self.compute_dtype), scale, offset, self.epsilon
            )
            self._update_moving_statistics(mean, variance, _values_per_channel(x))
            return outputs
        else:
            outputs = self.normalize(x, training=training, statistics_at=statistics_at)
            outputs = outputs * scale + offset
        return tf.nn.relu(outputs) if relu else outputs

    @staticmethod
    def _fused_training(x, training) -> bool:
        """A training call on NHWC inputs with one replica: the fused kernel's path (which
        has no float64 kernel on CPU)."""
        return (
            bool(training)
            and x.shape.rank == 4
            and x.dtype != tf.float64
            and _replicas_in_sync() == 1
        )

    def _fuses_relu(self, x, training) -> bool:
        return self._fused_training(x, training) and self.kernel_policy.uses_batch_norm_relu(
            x.shape
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "affine": self.affine,
            "num_standing_stats": self.num_standing_stats,
            "unbiased_moving_variance": self.unbiased_moving_variance,
        }


class ConditionalBatchNorm(keras.layers.Layer):
    """Class-conditional BN of BigGAN: `BN(x) * (1 + gain(c)) + bias(c)`.

    `gain` and `bias` are SN linear maps without bias from the conditioning
    vector `c` (shared class embedding, concatenated with a z chunk in the
    hierarchical-latent generator). The `1 +` centres the gain at one.

    Call with `(x [B, H, W, C], c [B, D])` and optionally `statistics_at` (float
    scalar, see `SyncBatchNorm`); returns `[B, H, W, C]`.

    Args:
      momentum, epsilon, num_standing_stats, kernel_policy, unbiased_moving_variance: of
        the batch norm (`SyncBatchNorm`).
      kernel_initializer: initialiser of the gain and bias kernels `[D, C]`.
    """

    def __init__(
        self,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        kernel_initializer="orthogonal",
        num_standing_stats: int = 0,
        kernel_policy: kernels.KernelPolicy | None = None,
        unbiased_moving_variance: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.num_standing_stats = int(num_standing_stats)
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        self.kernel_initializer = initializer_template(kernel_initializer)
        self.batch_norm = SyncBatchNorm(
            momentum=momentum,
            epsilon=epsilon,
            affine=False,
            num_standing_stats=num_standing_stats,
            kernel_policy=kernel_policy,
            unbiased_moving_variance=unbiased_moving_variance,
            name="bn",
        )
        self.gain = None
        self.bias = None

    def build(self, x_shape, c_shape):
        channels = x_shape[-1]
        init = self.kernel_initializer
        self.gain = SNDense(channels, use_bias=False, kernel_initializer=init, name="gain")
        self.bias = SNDense(channels, use_bias=False, kernel_initializer=init, name="bias")
        self.gain.build(c_shape)
        self.bias.build(c_shape)
        self.batch_norm.build(x_shape)

    def call(self, x, c, training=None, statistics_at=None, relu=False):
        """`relu`: apply a ReLU to the output (see `SyncBatchNorm.normalize_scale_offset`)."""
        gain = self.gain(c, training=training)[:, None, None, :]
        bias = self.bias(c, training=training)[:, None, None, :]
        if self.batch_norm.uses_stored_statistics(training):
            # One multiply-add per element instead of four passes.
            gain = tf.cast(gain, statistics_dtype(self.compute_dtype))
        return self.batch_norm.normalize_scale_offset(
            x, 1.0 + gain, bias, training, statistics_at, relu
        )

    def compute_output_shape(self, x_shape, c_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "num_standing_stats": self.num_standing_stats,
            "unbiased_moving_variance": self.unbiased_moving_variance,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def batch_norm_layers(layer: keras.layers.Layer) -> list[SyncBatchNorm]:
    """All `SyncBatchNorm` layers inside `layer` (those of conditional BNs included), in a
    stable order."""
    found = [layer] if isinstance(layer, SyncBatchNorm) else []
    found += [
        sub for sub in layer._flatten_layers(include_self=False) if isinstance(sub, SyncBatchNorm)
    ]
    return found
