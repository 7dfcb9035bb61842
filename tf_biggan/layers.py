"""The layers of BigGAN (Brock et al., ICLR 2019) as plain Keras 3 layers.

- `SNDense`, `SNConv2D`, `SNEmbedding`: spectrally normalised weights (Miyato et
  al., 2018) as a reparametrisation: `call` uses `W / sigma(W)` where sigma is
  estimated with one power iteration per call from a persistent `u`
  (dividing the output by sigma instead when it is smaller than the kernel,
  which is the same by linearity). Training calls write the new `u` and
  sigma; inference calls compute the same estimate and write nothing. The
  kernel itself is never overwritten, so gradients flow through sigma as in
  the paper. `refine_spectral_norms` re-estimates sigma of a model's current
  weights (the EMA generator's, whose `u` is G's), and `inference_kernel` /
  `fold` give the normalised kernel with the exact sigma (for the export).
  On CPU, a 'same' `SNConv2D` with a large kernel that is much larger than its output
  (BigGAN's 1536-channel 4x4 and 8x8 layers) runs as one matmul over shifted copies of
  its input (`conv_as_matmul`): 1.1-2.2x faster there (docs/performance.md). Called with
  `resample="up"` (G) or `"down"` (D), a large enough CPU conv folds the nearest-neighbour
  upsampling or the 2x2 average pooling into its kernel (`upsample_conv`, a transposed
  convolution, and `conv_avg_pool`): 16 instead of 36 multiply-adds per pixel, 1.3-2.2x
  faster.
- `SyncBatchNorm` and `ConditionalBatchNorm`: batch norm whose batch statistics
  are reduced over all replicas when a `tf.distribute` strategy runs more than
  one (cross-replica BN, which BigGAN uses in G). The conditional variant is
  `BN(x) * (1 + gain(c)) + bias(c)`, gain and bias SN linear maps without bias.
  Called with `relu=True`, a large single-replica training call runs BN, scale, offset
  and ReLU as `batch_norm_relu`, whose backward pass keeps one activation fewer.
- `SelfAttention`: the SA-GAN block, `x + gamma * o`, gamma starting at 0.

Initialisation as in the reference (BigGAN-PyTorch), where each module draws its weights
from the global RNG: every kernel is its own draw of the layer's `kernel_initializer` (a
`fresh_initializer` copy per weight), and the biases of `SNDense` and `SNConv2D` are drawn
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) by default, PyTorch's initialisation of
`nn.Linear` and `nn.Conv2d` biases, which the reference keeps (`bias_initializer`,
`BIAS_INITIALIZERS`). `keras.utils.set_random_seed` before the build makes it reproducible.

Layers know nothing of gin or of strategies beyond the replica context. They
compute in their `compute_dtype` (so mixed precision works) but keep the power
iteration and the batch statistics in float32.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

SN_EPSILON = 1e-6
"""Added (as a floor on the norm) when normalising `u` and `v`; the paper's 1e-6."""

REFINE_ITERATIONS = 50
"""Default power iterations of `refine_spectral_norms` (cheap: two matrix-vector products each)."""


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    # l2_normalize floors the squared norm; flooring it at eps**2 floors the norm at eps.
    return tf.math.l2_normalize(x, axis=-1, epsilon=SN_EPSILON**2)


def _static_size(shape) -> int | None:
    """Elements of a tensor of static `shape`, or None if any dimension is unknown."""
    dims = tuple(shape)
    return None if any(d is None for d in dims) else math.prod(int(d) for d in dims)


BIAS_INITIALIZERS = ("fan_in_uniform", "zeros")
"""The choices of `bias_initializer` (`SNDense`, `SNConv2D`, the networks): "fan_in_uniform"
draws each bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in the kernel's `[fan_in, out]`
rows (in features, or k*k*in channels): PyTorch's default for `nn.Linear` and `nn.Conv2d`,
which BigGAN-PyTorch keeps, its `init_weights` overwriting only the weights. "zeros": all 0."""


def initializer_template(identifier) -> keras.initializers.Initializer:
    """The Keras initializer named by `identifier`, which a layer keeps (and serialises) and
    copies with `fresh_initializer` for each weight it creates.

    Args:
      identifier: a name ("orthogonal"), a config dict or an `Initializer`, without a seed.

    Raises:
      TypeError: `identifier` is not a Keras initializer (a plain function cannot be copied).
      ValueError: it has a seed: every copy would draw the same values, so every kernel of a
        shape would start as the same matrix. The run's seed (`keras.utils.set_random_seed`)
        makes the initialisation reproducible instead.
    """
    initializer = keras.initializers.get(identifier)
    if not isinstance(initializer, keras.initializers.Initializer):
        raise TypeError(f"expected a Keras initializer (a name, config or object): {identifier!r}")
    if initializer.get_config().get("seed") is not None:
        raise ValueError(
            f"{type(initializer).__name__} has a seed, so all its draws would be equal; leave it "
            "unset and seed the run (keras.utils.set_random_seed) to reproduce the initialisation"
        )
    return initializer


def fresh_initializer(initializer: keras.initializers.Initializer):
    """A new initializer with `initializer`'s config, for exactly one weight.

    An unseeded Keras 3 initializer picks its seed once, when it is constructed, and then
    draws the same values on every call; layers do not copy the initializers they are given.
    One object shared by all layers would therefore start every kernel of a shape as the
    same matrix. A copy made when its weight is created picks its own seed (from Python's
    `random`), so each weight is its own draw, reproducible after `keras.utils.set_random_seed`.

    Returns:
      An initializer of `initializer`'s class and config (its seed unset, as checked by
      `initializer_template`).
    """
    return type(initializer).from_config(initializer.get_config())


def _check_bias_initializer(choice: str) -> str:
    if choice not in BIAS_INITIALIZERS:
        raise ValueError(f"bias_initializer must be one of {BIAS_INITIALIZERS}, got {choice!r}")
    return choice


def bias_initializer_for(choice: str, fan_in: int) -> keras.initializers.Initializer:
    """The initializer of one bias of a layer whose kernel has `fan_in` rows.

    Args:
      choice: one of `BIAS_INITIALIZERS`.
      fan_in: in features (dense) or `k * k * in` channels (conv), >= 1.

    Returns:
      A new initializer (its own draw): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) or zeros.
    """
    if _check_bias_initializer(choice) == "zeros":
        return keras.initializers.Zeros()
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


MATMUL_CONV_RATIO = 8
MATMUL_CONV_MIN_KERNEL = 2**23
"""On CPU, a 'same' convolution whose kernel has at least `MATMUL_CONV_MIN_KERNEL` elements
and more than `MATMUL_CONV_RATIO` times as many as its output runs as one matmul
(`conv_as_matmul`). Measured with oneDNN, forward and backward, batch 8 and 16: at 1536
channels and 4x4 or 8x8 (21M-element kernels) the direct convolution took 1.1-2.2x as long,
and 1.1x at 768 -> 1536 channels, 8x8, batch 8; at 512 channels (2.4M) the matmul's backward
pass made it 1.4-1.6x slower at 8x8 and at 4x4, batch 16, though its forward pass alone was
faster; with the kernel under 8x the output the direct convolution was faster."""

UPSAMPLE_CONV_MIN_MACS = 2**26
"""On CPU, an `SNConv2D` called with `resample="up"` runs as `upsample_conv` when the
convolution it stands for does at least this many multiply-adds per call (counting one
example when the batch is dynamic). Measured with oneDNN on 2 cores, forward and backward
against the upsampling followed by the convolution: 1.3-1.4x faster at 2^26.2 (64 channels,
4 -> 8 px at batch 32 and 8 -> 16 px at batch 8), 1.3-2.2x at BigGAN's 32 px and 128 px
shapes (1.3x at 128 px's 1536 -> 768 channels, 8 -> 16 px); at 2^25.2 1.1x and at 2^24.2
0.8-0.9x."""

POOLED_CONV_MIN_MACS = 2**29
"""On CPU, an `SNConv2D` called with `resample="down"` runs as `conv_avg_pool` when the
convolution it stands for does at least this many multiply-adds per call (counting one
example when the batch is dynamic). Measured with oneDNN, forward and backward: D's pooled
convs at 32 px (ch 64, batch 64) and 128 px (ch 96, batch 8) 1.6-2.1x faster. With less work
the gain shrinks and turns into a loss."""


def conv_as_matmul(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(x, kernel, 1, "SAME")` as one matmul over shifted copies of `x`.

    Args:
      x: `[N, H, W, C]` with static H, W and C.
      kernel: `[k, k, C, K]`, k odd.

    Returns:
      `[N, H, W, K]`: row `(n, h, w)` of `[x shifted by (i - k//2, j - k//2) for i, j]`,
      concatenated over channels in the kernel's `(i, j, c)` order, times the kernel
      reshaped to `[k*k*C, K]`. Equal to the convolution up to float rounding; the
      gradients are the matmul's, the concatenation's and the slices'.
    """
    k = int(kernel.shape[0])
    if k % 2 == 0 or int(kernel.shape[1]) != k:
        raise ValueError(f"conv_as_matmul needs an odd square kernel, got {kernel.shape}")
    _, height, width, channels = x.shape
    pad = k // 2
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    shifted = [padded[:, i : i + height, j : j + width, :] for i in range(k) for j in range(k)]
    columns = tf.reshape(tf.concat(shifted, axis=-1), [-1, k * k * channels])
    outputs = tf.matmul(columns, tf.reshape(kernel, [k * k * channels, kernel.shape[-1]]))
    return tf.reshape(outputs, [-1, height, width, kernel.shape[-1]])


@tf.custom_gradient
def upsample(x):
    """Nearest-neighbour 2x of `[B, H, W, C]` → `[B, 2H, 2W, C]`.

    Its gradient is the 2x2 sum pooling of the incoming gradient, computed as 4 x the
    average pooling: scaling by 4 is exact in binary floating point, and the pooling kernel
    is about 8x faster on CPU than the 6-D reduction that automatic differentiation derives
    from the broadcast (docs/performance.md).
    """
    # Written as a broadcast so XLA and the CPU kernels fuse it.
    b, h, w, c = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    y = tf.reshape(
        tf.broadcast_to(x[:, :, None, :, None, :], [b, h, 2, w, 2, c]), [b, 2 * h, 2 * w, c]
    )

    def gradient(dy):
        return tf.nn.avg_pool2d(dy, 2, 2, "VALID") * tf.constant(4.0, dy.dtype)

    return y, gradient


def downsample(x):
    """2x2 average pooling of `[B, H, W, C]` → `[B, H/2, W/2, C]`."""
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def _resampling_matrices() -> tuple[np.ndarray, np.ndarray]:
    """The linear maps from a 3x3 kernel's taps to the 4x4 kernels of `upsample_conv` and
    `conv_avg_pool`, `[16, 9]` each (rows and columns in row-major tap order).

    Along one axis, output row `2i + a` of a 'same' 3-tap convolution of the upsampled input
    reads input rows `i - 1, i` with taps `(w0, w1 + w2)` when a = 0 and rows `i, i + 1`
    with `(w0 + w1, w2)` when a = 1: a transposed convolution with stride 2, 'same' padding
    (one row on each side of the output) and taps `(w2, w1 + w2, w0 + w1, w0)`.
    Average-pooling pairs of a 3-tap convolution's outputs is one 4-tap convolution with
    stride 2 and taps `(w0, w0 + w1, w1 + w2, w2) / 2`. The 2-D maps are the outer products
    of the 1-D ones.
    """
    up = np.zeros([4, 3], np.float32)  # [4x4 tap, 3x3 tap] along one axis
    up[0, 2] = up[1, 1] = up[1, 2] = up[2, 0] = up[2, 1] = up[3, 0] = 1.0
    down = np.zeros([4, 3], np.float32)
    for pooled in (0, 1):
        for tap in range(3):
            down[pooled + tap, tap] += 0.5
    return tuple(np.einsum("ri,cj->rcij", m, m).reshape(16, 9) for m in (up, down))


_UPSAMPLE_TAPS, _AVG_POOL_TAPS = _resampling_matrices()


def _combined_kernel(matrix: np.ndarray, kernel: tf.Tensor) -> tf.Tensor:
    """`matrix [16, 9]` times the taps of the 3x3 `kernel [3, 3, C, K]` → a `[4, 4, C, K]`
    kernel in `kernel`'s dtype. A matmul, so the kernel's gradient is one matmul too; in
    float32, as sums of bfloat16 taps rounded to bfloat16 would lose precision the layer does
    not lose."""
    taps = tf.reshape(tf.cast(kernel, tf.float32), [9, -1])
    combined = tf.matmul(tf.constant(matrix), taps)
    return tf.cast(tf.reshape(combined, [4, 4, *kernel.shape[2:]]), kernel.dtype)


def upsample_conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(upsample(x), kernel, 1, "SAME")` without the upsampled tensor.

    A 1x1 kernel is applied before the upsampling (they commute). A 3x3 kernel becomes one
    transposed convolution of `x` with stride 2 and a 4x4 kernel whose taps are sums of the
    original ones (`_resampling_matrices`): 16 instead of 36 multiply-adds per input pixel
    and channel pair, and the backward pass keeps only `x`.

    Args:
      x: `[N, H, W, C]` with static H, W and C.
      kernel: `[k, k, C, K]`, k = 1 or 3.

    Returns:
      `[N, 2H, 2W, K]`, equal to the convolution of the upsampled `x` up to float rounding.
    """
    k = int(kernel.shape[0])
    if k == 1:
        return upsample(tf.nn.conv2d(x, kernel, 1, "VALID"))
    if k != 3 or int(kernel.shape[1]) != 3:
        raise ValueError(f"upsample_conv needs a 1x1 or 3x3 kernel, got {kernel.shape}")
    # A transposed convolution's filter is laid out [h, w, out, in].
    transposed = _combined_kernel(_UPSAMPLE_TAPS, tf.transpose(kernel, [0, 1, 3, 2]))
    output_shape = [tf.shape(x)[0], 2 * x.shape[1], 2 * x.shape[2], kernel.shape[-1]]
    return tf.nn.conv2d_transpose(x, transposed, output_shape, 2, "SAME")


def conv_avg_pool(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`downsample(tf.nn.conv2d(x, kernel, 1, "SAME"))` as one strided convolution.

    A 1x1 kernel is applied after the pooling (they commute). A 3x3 kernel becomes one 4x4
    kernel applied with stride 2 and one pixel of zero padding on each side: 16 instead of
    36 multiply-adds per output pixel and channel pair at the pooled resolution.

    Args:
      x: `[N, H, W, C]`, H and W even.
      kernel: `[k, k, C, K]`, k = 1 or 3.

    Returns:
      `[N, H/2, W/2, K]`, equal to the pooled convolution up to float rounding.
    """
    k = int(kernel.shape[0])
    if k == 1:
        return tf.nn.conv2d(downsample(x), kernel, 1, "VALID")
    if k != 3 or int(kernel.shape[1]) != 3:
        raise ValueError(f"conv_avg_pool needs a 1x1 or 3x3 kernel, got {kernel.shape}")
    pooled_kernel = _combined_kernel(_AVG_POOL_TAPS, kernel)
    # With stride 2 and an even size, "SAME" pads a 4x4 kernel by one pixel on each side.
    return tf.nn.conv2d(x, pooled_kernel, 2, "SAME")


def fused_batch_normalize(x: tf.Tensor, epsilon: float):
    """`(x - mean) / sqrt(variance + epsilon)` over N, H, W by TensorFlow's fused kernel.

    Args:
      x: `[B, H, W, C]`, float32 or bfloat16.
      epsilon: added to the variance.

    Returns:
      `(normalized, mean, variance)`: normalized of x's shape and dtype; the batch's mean and
      biased variance, float32 `[C]`.
    """
    channels = x.shape[-1]
    normalized, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        x,
        tf.ones([channels], tf.float32),
        tf.zeros([channels], tf.float32),
        epsilon=epsilon,
        is_training=True,
    )
    # The fused kernel returns the Bessel-corrected variance; the moving statistics (and the
    # multi-replica path) use the biased one, which it normalised with.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
    return normalized, mean, variance


BATCH_NORM_RELU_MIN_ELEMENTS = 2**20
"""A single-replica training call of `SyncBatchNorm` or `ConditionalBatchNorm` with
`relu=True` runs as `batch_norm_relu` when its input has at least this many elements (4 MiB
in float32; counting one example when the batch is dynamic). Smaller activations cost little
memory, and below the floor the composition keeps the numerics of earlier releases."""


def batch_norm_relu(x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor, epsilon: float):
    """`relu(BN(x) * scale + offset)` with the batch's statistics, whose gradient keeps less.

    Autodiff of the composition keeps three activations of x's size for the backward pass:
    x (for BN's gradient), the normalised x (for the scale's) and the output (for ReLU's and
    the next layer's). This keeps the last two: BN's input gradient is computed from the
    normalised x, `inv_std * (d - mean(d) - x_hat mean(d x_hat))` with `d` the gradient at
    the normalised x, by the fused BN gradient kernel given `x_hat` with zero mean and unit
    variance. In BigGAN's G the input is the previous conv's output, which nothing else
    keeps, so each BN-ReLU of a training step holds one activation fewer at the peak.

    Args:
      x: `[B, H, W, C]`, float32 or bfloat16.
      scale, offset: `[C]` (per channel) or `[B, 1, 1, C]` (per example, conditional BN),
        in x's dtype.
      epsilon: added to the variance.

    Returns:
      `(outputs, mean, variance)`: outputs of x's shape and dtype; the batch's mean and
      biased variance, float32 `[C]`, without gradient.
    """
    channels = x.shape[-1]
    per_example = scale.shape.rank == 4
    ones, zeros = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)

    @tf.custom_gradient
    def forward(x, scale, offset):
        normalized, mean, variance = fused_batch_normalize(x, epsilon)
        outputs = tf.nn.relu(normalized * scale + offset)
        inverse_std = tf.math.rsqrt(variance + epsilon)

        def gradient(d_outputs, *unused_statistics_gradients):
            d_affine = tf.raw_ops.ReluGrad(gradients=d_outputs, features=outputs)
            if per_example:
                d_scale = tf.reduce_sum(d_affine * normalized, [1, 2], keepdims=True)
                d_offset = tf.reduce_sum(d_affine, [1, 2], keepdims=True)
                d_normalized, bn_scale = d_affine * scale, ones
            else:
                d_normalized, bn_scale = d_affine, tf.cast(scale, tf.float32)
            # x_hat = normalized has mean 0 and variance 1: with epsilon 0 the kernel's
            # x_hat is `normalized` itself, and its result lacks only the factor inv_std.
            d_centered, d_bn_scale, d_bn_offset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=d_normalized, x=normalized, scale=bn_scale, reserve_space_1=zeros,
                reserve_space_2=ones, reserve_space_3=zeros[:0], epsilon=0.0, is_training=True,
            )  # fmt: skip
            if not per_example:
                d_scale = tf.cast(d_bn_scale, scale.dtype)
                d_offset = tf.cast(d_bn_offset, offset.dtype)
            d_x = d_centered * tf.cast(inverse_std, d_centered.dtype)
            return d_x, d_scale, d_offset

        return (outputs, tf.stop_gradient(mean), tf.stop_gradient(variance)), gradient

    return forward(x, scale, offset)


def _has_accelerator() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _power_iteration(matrix: tf.Tensor, u: tf.Tensor, iterations: int = 1):
    """Power iterations for the top singular value of `matrix`, BigGAN's SN estimate.

    Each iteration is `v = normalize(u W^T)`, then `u = normalize(v W)`; the
    estimate is `sigma = v W u^T`, differentiable in `W` with `u` and `v` held
    fixed (as in the paper and the PyTorch port).

    Args:
      matrix: float32 `[fan_in, out]`.
      u: float32 `[1, out]`, the start; it need not have unit norm.
      iterations: number of iterations, >= 1.

    Returns:
      `(u, sigma)`: the unit `[1, out]` vector of the last iteration (no
      gradient) and the float32 scalar estimate.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    # `u` starts as an unnormalised Gaussian draw; normalising it here keeps the
    # estimate right at inference before the first training call.
    u = _l2_normalize(u)
    for _ in range(iterations):
        v = tf.stop_gradient(_l2_normalize(tf.matmul(u, matrix, transpose_b=True)))  # [1, fan_in]
        u = tf.stop_gradient(_l2_normalize(tf.matmul(v, matrix)))  # [1, out]
    sigma = tf.reshape(tf.matmul(tf.matmul(v, matrix), u, transpose_b=True), [])
    return u, sigma


class _SpectralNormalized(keras.layers.Layer):
    """Base class: owns `kernel`, the power-iteration vector `u` and `sigma`.

    Subclasses create their weights in `build` with `_build_weights` (the kernel, of any
    rank with the output axis last, an optional bias, then `u` and `sigma`).

    Args:
      kernel_initializer: initialiser of the kernel (orthogonal), unseeded: the kernel is
        drawn by its own copy (`fresh_initializer`).
      folded: the kernel is already normalised (see `fold`); `call` uses it as
        it is, with no power iteration, and never reads `u` or `sigma`.
    """

    def __init__(self, kernel_initializer="orthogonal", folded: bool = False, **kwargs):
        # Variables must stay float32 inside `call` for the power iteration,
        # so autocasting is off and `call` casts explicitly.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.kernel_initializer = initializer_template(kernel_initializer)
        self.folded = bool(folded)

    def _build_weights(self, name: str, shape: tuple, bias_initializer: str | None) -> None:
        """Creates `kernel` (called `name`), `bias` and the SN state.

        Args:
          name: the kernel's name.
          shape: the kernel's, output axis last; its `[fan_in, out]` view has
            `fan_in = prod(shape[:-1])`.
          bias_initializer: one of `BIAS_INITIALIZERS` for a `[out]` bias, or None for none.
        """
        self.kernel = self.add_weight(
            name=name, shape=shape, initializer=fresh_initializer(self.kernel_initializer)
        )
        self.bias = None
        if bias_initializer is not None:
            fan_in = math.prod(shape[:-1])
            self.bias = self.add_weight(
                name="bias",
                shape=(shape[-1],),
                initializer=bias_initializer_for(bias_initializer, fan_in),
            )
        self._build_spectral_state()

    def _add_bias(self, outputs):
        if self.bias is None:
            return outputs
        return tf.nn.bias_add(outputs, self._cast(self.bias.value))

    def _build_spectral_state(self):
        out_dim = self.kernel.shape[-1]
        # Each replica computes the same update from mirrored weights, so the
        # first replica's value is the value of all.
        self.u = self.add_weight(
            name="sn_u",
            shape=(1, out_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )
        self.sigma = self.add_weight(
            name="sn_sigma",
            shape=(),
            initializer="ones",
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def _kernel_and_matrix(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The float32 kernel and its `[fan_in, out]` matrix view."""
        # Inside an enclosing layer's mixed-precision autocast scope the kernel reads as the
        # compute dtype; the power iteration runs in float32 either way.
        kernel = tf.cast(self.kernel.value, tf.float32)
        return kernel, tf.reshape(kernel, [-1, kernel.shape[-1]])

    def kernel_and_inverse_sigma(self, training=False) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Returns the float32 kernel and `1 / sigma` (a float32 scalar, or None for 1).

        One power iteration runs from the stored `u` in training and at
        inference alike, so inference uses exactly the sigma that a training
        call from the same `u` computes. With `training=True` the new `u` and
        sigma are written; otherwise nothing is. A folded layer returns its
        kernel and None.
        """
        if self.folded:
            return tf.cast(self.kernel.value, tf.float32), None
        kernel, matrix = self._kernel_and_matrix()
        # float32 also where the layer's variables are bfloat16 (an inference copy's, before
        # it is folded), as the power iteration needs.
        u, sigma = _power_iteration(matrix, tf.cast(self.u.value, tf.float32))
        if training:
            self.u.assign(u)
            self.sigma.assign(tf.stop_gradient(sigma))
        # The floor only matters for an all-zero kernel, which would otherwise give 0/0.
        return kernel, 1.0 / tf.maximum(sigma, SN_EPSILON)

    def refine_sigma(self, iterations: int = 1, exact: bool = False) -> tf.Tensor:
        """Re-estimates sigma of the current kernel and writes `u` and `sigma`.

        The kernel may have changed since `u` was last updated (the EMA
        generator's weights are averages, while its `u` is copied from G), so
        the stored estimate may be stale; this brings it up to date. Later
        calls start from the new `u`.

        Args:
          iterations: power iterations from the stored `u`, each the one a
            training call runs (ignored with `exact`).
          exact: set `u` to the top right singular vector and `sigma` to the
            top singular value of the `[fan_in, out]` matrix (`tf.linalg.svd`;
            seconds for the largest kernels of a 128 px model).

        Returns:
          The new sigma, a float32 scalar.
        """
        _, matrix = self._kernel_and_matrix()
        if exact:
            singular_values, _, right = tf.linalg.svd(matrix)
            u, sigma = tf.transpose(right[:, :1]), singular_values[0]
        else:
            u, sigma = _power_iteration(matrix, tf.convert_to_tensor(self.u.value), iterations)
        self.u.assign(u)
        self.sigma.assign(sigma)
        return sigma

    def inference_kernel(self, exact: bool = False) -> tf.Tensor:
        """The normalised float32 kernel `kernel / sigma` for inference; writes nothing.

        Args:
          exact: divide by the top singular value of the `[fan_in, out]`
            matrix (`tf.linalg.svd`) instead of the estimate that
            `call(training=False)` uses.

        Returns:
          float32 tensor of the kernel's shape, top singular value 1 with `exact`.
          A folded layer returns its kernel.
        """
        if self.folded or not exact:
            return self.normalized_kernel(training=False)
        kernel, matrix = self._kernel_and_matrix()
        sigma = tf.linalg.svd(matrix, compute_uv=False)[0]
        return kernel / tf.maximum(sigma, SN_EPSILON)

    def fold(self) -> None:
        """Makes this layer a plain one: kernel := `inference_kernel(exact=True)`.

        For inference-only copies (the export): afterwards `call` uses the
        kernel as it is, so a traced graph holds no power iteration and reads
        neither `u` nor `sigma`; `sigma` is set to 1, the folded kernel's top
        singular value. Folding twice changes nothing.
        """
        if self.folded:
            return
        self.kernel.assign(self.inference_kernel(exact=True))
        self.sigma.assign(1.0)
        self.folded = True

    def normalized_kernel(self, training=False) -> tf.Tensor:
        """Returns `kernel / sigma` in float32 (see `kernel_and_inverse_sigma`)."""
        kernel, inverse_sigma = self.kernel_and_inverse_sigma(training)
        return kernel if inverse_sigma is None else kernel * inverse_sigma

    def _normalized_apply(self, op, inputs, training, output_shape=None):
        """`op(inputs, kernel / sigma)` in the compute dtype.

        `1 / sigma` scales whichever is smaller, the kernel or the output: the two are
        equal by linearity, and scaling the output of a layer whose kernel is larger than
        its output (the wide, low-resolution layers that hold most of BigGAN's weights)
        avoids kernel-sized temporaries in the forward and backward passes.

        Args:
          op: `(inputs, kernel) -> outputs`, linear in `kernel`, without bias.
          inputs: passed to `op` as they are (callers cast them).
          output_shape: the shape of `op`'s output, if not `compute_output_shape`'s.
        """
        if self.folded:
            # Read as stored: a bfloat16 kernel of a bfloat16 inference copy is used without
            # a round trip through float32.
            return op(inputs, self._cast(self.kernel.value))
        kernel, inverse_sigma = self.kernel_and_inverse_sigma(training)
        if output_shape is None:
            output_shape = self.compute_output_shape(inputs.shape)
        output_size = _static_size(output_shape)
        if output_size is not None and output_size < kernel.shape.num_elements():
            outputs = op(inputs, self._cast(kernel))
            # Scaled in float32: a bfloat16 `1 / sigma` would be off by up to 0.4% for the
            # whole layer, not per element.
            return self._cast(tf.cast(outputs, tf.float32) * inverse_sigma)
        return op(inputs, self._cast(kernel * inverse_sigma))

    def top_singular_value(self) -> tf.Tensor:
        """The stored estimate of the kernel's top singular value (last training call or refine)."""
        return tf.convert_to_tensor(self.sigma.value)

    def _cast(self, x):
        return tf.cast(x, self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "folded": self.folded,
        }


class SNDense(_SpectralNormalized):
    """Spectrally normalised fully connected layer.

    Args:
      units: output features.
      use_bias: add a bias.
      kernel_initializer: initialiser of the `[in, units]` kernel (orthogonal).
      bias_initializer: of the bias, one of `BIAS_INITIALIZERS`: "fan_in_uniform"
        (U(+-1/sqrt(in)), PyTorch's and the reference's) or "zeros".

    Input `[..., in]`, output `[..., units]`.
    """

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        kernel_initializer="orthogonal",
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(kernel_initializer=kernel_initializer, **kwargs)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.bias_initializer = _check_bias_initializer(bias_initializer)

    def build(self, input_shape):
        bias = self.bias_initializer if self.use_bias else None
        self._build_weights("kernel", (input_shape[-1], self.units), bias)

    def call(self, inputs, training=None):
        return self._add_bias(self._normalized_apply(tf.matmul, self._cast(inputs), bool(training)))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "bias_initializer": self.bias_initializer,
        }


class SNConv2D(_SpectralNormalized):
    """Spectrally normalised 2-D convolution, NHWC, stride 1.

    Args:
      filters: output channels.
      kernel_size: square kernel size (BigGAN uses 3 and 1).
      padding: "same" or "valid".
      use_bias: add a bias.
      kernel_initializer: initialiser of the `[k, k, in, filters]` kernel.
      bias_initializer: of the bias, one of `BIAS_INITIALIZERS`: "fan_in_uniform"
        (U(+-1/sqrt(k*k*in)), PyTorch's and the reference's) or "zeros".

    The power iteration runs on the kernel reshaped to `[k*k*in, filters]`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        padding: str = "same",
        use_bias: bool = True,
        kernel_initializer="orthogonal",
        bias_initializer: str = "fan_in_uniform",
        **kwargs,
    ):
        super().__init__(kernel_initializer=kernel_initializer, **kwargs)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.bias_initializer = _check_bias_initializer(bias_initializer)

    def build(self, input_shape):
        k = self.kernel_size
        bias = self.bias_initializer if self.use_bias else None
        self._build_weights("kernel", (k, k, input_shape[-1], self.filters), bias)

    def call(self, inputs, training=None, resample=None):
        """`inputs [N, H, W, C]` → `[N, H', W', filters]`.

        `resample="up"` convolves the nearest-neighbour 2x upsampling of `inputs` (G's
        blocks) and `resample="down"` average-pools the convolution 2x2 (D's blocks); either
        runs as one fused op (`upsample_conv`, `conv_avg_pool`) where `fuses_resampling`
        says so, else as the resampling and the convolution.
        """
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        inputs = self._cast(inputs)
        if resample and self.fuses_resampling(inputs.shape, resample):
            conv = upsample_conv if resample == "up" else conv_avg_pool
            b, h, w, _ = inputs.shape
            h, w = (h * 2, w * 2) if resample == "up" else (h // 2, w // 2)
            outputs = self._normalized_apply(conv, inputs, bool(training), (b, h, w, self.filters))
            return self._add_bias(outputs)
        if resample == "up":
            inputs = upsample(inputs)
        if self.runs_as_matmul(inputs.shape):
            conv = conv_as_matmul
        else:

            def conv(x, kernel):
                return tf.nn.conv2d(x, kernel, strides=1, padding=self.padding.upper())

        outputs = self._add_bias(self._normalized_apply(conv, inputs, bool(training)))
        return downsample(outputs) if resample == "down" else outputs

    def fuses_resampling(self, input_shape, resample: str) -> bool:
        """Whether a call with `resample` ("up" or "down") on inputs of this shape runs as
        `upsample_conv` or `conv_avg_pool`.

        True on CPU for a 'same' 1x1 or 3x3 convolution with static height, width (even to
        pool) and channels whose unfused convolution does at least `UPSAMPLE_CONV_MIN_MACS`
        (up) or `POOLED_CONV_MIN_MACS` (down) multiply-adds (for one example when the batch
        is dynamic) and would not run as `conv_as_matmul` (whose matmul is faster than the
        fused convolution at those shapes). A GPU or TPU keeps the resampling and the
        convolution apart.
        """
        if self.padding != "same" or self.kernel_size not in (1, 3) or _has_accelerator():
            return False
        batch, height, width, channels = input_shape
        if height is None or width is None or channels is None:
            return False
        if resample == "up":
            height, width = 2 * height, 2 * width
        elif height % 2 or width % 2:
            return False  # `conv_avg_pool` pads as for an even size
        if self.runs_as_matmul((batch, height, width, channels)):
            return False
        macs = (batch or 1) * height * width * self.kernel_size**2 * channels * self.filters
        return macs >= (UPSAMPLE_CONV_MIN_MACS if resample == "up" else POOLED_CONV_MIN_MACS)

    def runs_as_matmul(self, input_shape) -> bool:
        """Whether a call on inputs of this static shape runs as `conv_as_matmul`.

        True on CPU for a 'same' k x k convolution (k > 1) whose kernel has at least
        `MATMUL_CONV_MIN_KERNEL` elements and more than `MATMUL_CONV_RATIO` times as many as
        its output. An unknown dimension (a dynamic batch) or a GPU/TPU keeps `tf.nn.conv2d`.
        """
        if self.kernel_size == 1 or self.padding != "same" or _has_accelerator():
            return False
        output_size = _static_size(self.compute_output_shape(input_shape))
        kernel_size = self.kernel_size**2 * int(input_shape[-1]) * self.filters
        return (
            output_size is not None
            and kernel_size >= MATMUL_CONV_MIN_KERNEL
            and MATMUL_CONV_RATIO * output_size < kernel_size
        )

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.padding == "valid" and h is not None:
            h, w = h - self.kernel_size + 1, w - self.kernel_size + 1
        return (b, h, w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "bias_initializer": self.bias_initializer,
        }


class SNEmbedding(_SpectralNormalized):
    """Spectrally normalised embedding table `[input_dim, output_dim]`.

    Input int labels `[B]` in `[0, input_dim)`, output `[B, output_dim]`.
    """

    def __init__(self, input_dim: int, output_dim: int, kernel_initializer="orthogonal", **kwargs):
        super().__init__(kernel_initializer=kernel_initializer, **kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)

    def build(self, input_shape):
        self._build_weights("embeddings", (self.input_dim, self.output_dim), None)

    def call(self, inputs, training=None):
        return self._normalized_apply(
            lambda labels, table: tf.gather(table, labels),
            tf.cast(inputs, tf.int32),
            bool(training),
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim}


def _replicas_in_sync() -> int:
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


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

    Truncation-indexed statistics: an inference call given a `truncation` t
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
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
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
        position = tf.clip_by_value(tf.cast(truncation, tf.float32), 0.0, 1.0) * float(last)
        lower = tf.minimum(tf.floor(position), float(last - 1))
        fraction = position - lower
        index = tf.cast(lower, tf.int32)
        stats = []
        for table in (self.standing_mean, self.standing_variance):
            table = tf.convert_to_tensor(table.value)
            stats.append((1.0 - fraction) * table[index] + fraction * table[index + 1])
        return stats[0], stats[1]

    def _inference_statistics(self, truncation) -> tuple[tf.Tensor, tf.Tensor]:
        """The moving statistics, or the table's entry at `truncation` (see the class doc)."""
        mean = tf.convert_to_tensor(self.moving_mean.value)
        variance = tf.convert_to_tensor(self.moving_variance.value)
        if truncation is None or not self.num_standing_stats:
            return mean, variance
        t = tf.cast(truncation, tf.float32)
        in_table = tf.logical_and(t > 0.0, t <= 1.0)
        standing_mean, standing_variance = self.standing_statistics(t)
        return (
            tf.where(in_table, standing_mean, mean),
            tf.where(in_table, standing_variance, variance),
        )

    def _batch_moments(self, x):
        """Mean and (biased) variance over N, H, W of the global batch, float32 `[C]`."""
        x = tf.cast(x, tf.float32)
        axes = list(range(x.shape.rank - 1))
        context = tf.distribute.get_replica_context()
        if _replicas_in_sync() == 1:
            return tf.nn.moments(x, axes)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        local = tf.concat(
            [tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), count[None]], axis=0
        )
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        channels = x.shape[-1]
        global_count = total[-1]
        mean = total[:channels] / global_count
        variance = tf.maximum(total[channels : 2 * channels] / global_count - tf.square(mean), 0.0)
        return mean, variance

    def normalize(self, x, training=None, truncation=None):
        """`(x - mean) / sqrt(var + eps)` in the compute dtype, no affine part.

        `truncation` (a float scalar or None) picks the statistics of an inference call
        (see the class docstring); training calls ignore it.
        """
        dtype = self.compute_dtype
        if self._fused_training(x, training):
            # One replica: the fused kernel computes the statistics and normalises in
            # one pass (about 3x faster on CPU than separate moments and arithmetic).
            outputs, mean, variance = fused_batch_normalize(tf.cast(x, dtype), self.epsilon)
            self._update_moving_statistics(mean, variance)
            return outputs
        if training:
            mean, variance = self._batch_moments(x)
            self._update_moving_statistics(mean, variance)
        elif self._collector is not None:
            mean, variance = self._batch_moments(x)
            self._collector.add(mean, variance)
        else:
            mean, variance = self._inference_statistics(truncation)
        inv = tf.math.rsqrt(variance + self.epsilon)
        return tf.cast(x, dtype) * tf.cast(inv, dtype) - tf.cast(mean * inv, dtype)

    def uses_stored_statistics(self, training) -> bool:
        """Whether a call normalises with the stored statistics (an inference call that
        is not collecting standing statistics)."""
        return not training and self._collector is None

    def affine_with_stored_statistics(self, x, gamma, beta, truncation=None):
        """`normalize(x) * gamma + beta` of an inference call, as one multiply-add per element.

        The stored statistics at `truncation`, `gamma` and `beta` (`[C]`, or `[B, 1, 1, C]`
        per example for the conditional BN) are folded into a scale and an offset in
        float32; `x` is scaled and shifted in the compute dtype.
        """
        mean, variance = self._inference_statistics(truncation)
        inv = tf.math.rsqrt(variance + self.epsilon)
        gamma = tf.cast(gamma, tf.float32)
        scale, offset = inv * gamma, (-mean * inv) * gamma + tf.cast(beta, tf.float32)
        dtype = self.compute_dtype
        return tf.cast(x, dtype) * tf.cast(scale, dtype) + tf.cast(offset, dtype)

    def _update_moving_statistics(self, mean, variance):
        """Moves the statistics towards the batch's, unless the batch's are not finite.

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
        # The batch values are replaced, not the decay zeroed: (moving - NaN) * 0 is NaN.
        mean = tf.where(finite, mean, moving_mean)
        variance = tf.where(finite, variance, moving_variance)
        decay = 1.0 - self.momentum
        self.moving_mean.assign_sub((moving_mean - mean) * decay)
        self.moving_variance.assign_sub((moving_variance - variance) * decay)

    def call(self, inputs, training=None, truncation=None, relu=False):
        """`relu`: apply a ReLU to the output (see `normalize_scale_offset`)."""
        if not self.affine:
            outputs = self.normalize(inputs, training=training, truncation=truncation)
            return tf.nn.relu(outputs) if relu else outputs
        dtype = self.compute_dtype
        if self.uses_stored_statistics(training):
            scale, offset = self.gamma.value, self.beta.value
        else:
            scale, offset = tf.cast(self.gamma.value, dtype), tf.cast(self.beta.value, dtype)
        return self.normalize_scale_offset(inputs, scale, offset, training, truncation, relu)

    def normalize_scale_offset(self, x, scale, offset, training=None, truncation=None, relu=False):
        """`normalize(x) * scale + offset`, then a ReLU if `relu`.

        `scale` and `offset` are `[C]` or `[B, 1, 1, C]` (per example): float32 for a call
        with the stored statistics (folded into one multiply-add), the compute dtype
        otherwise. A single-replica training call with `relu` on an input of at least
        `BATCH_NORM_RELU_MIN_ELEMENTS` elements runs as `batch_norm_relu`, whose gradient
        keeps one activation fewer.
        """
        if self.uses_stored_statistics(training):
            outputs = self.affine_with_stored_statistics(x, scale, offset, truncation)
        elif relu and self._fuses_relu(x, training):
            outputs, mean, variance = batch_norm_relu(
                tf.cast(x, self.compute_dtype), scale, offset, self.epsilon
            )
            self._update_moving_statistics(mean, variance)
            return outputs
        else:
            outputs = self.normalize(x, training=training, truncation=truncation)
            outputs = outputs * scale + offset
        return tf.nn.relu(outputs) if relu else outputs

    @staticmethod
    def _fused_training(x, training) -> bool:
        """A training call on NHWC inputs with one replica: the fused kernel's path."""
        return bool(training) and x.shape.rank == 4 and _replicas_in_sync() == 1

    def _fuses_relu(self, x, training) -> bool:
        if not self._fused_training(x, training):
            return False
        elements = _static_size((x.shape[0] or 1, *x.shape[1:]))
        return elements is not None and elements >= BATCH_NORM_RELU_MIN_ELEMENTS

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "affine": self.affine,
            "num_standing_stats": self.num_standing_stats,
        }


class ConditionalBatchNorm(keras.layers.Layer):
    """Class-conditional BN of BigGAN: `BN(x) * (1 + gain(c)) + bias(c)`.

    `gain` and `bias` are SN linear maps without bias from the conditioning
    vector `c` (shared class embedding, concatenated with a z chunk in the
    hierarchical-latent generator). The `1 +` centres the gain at one.

    Call with `(x [B, H, W, C], c [B, D])` and optionally `truncation` (float
    scalar, see `SyncBatchNorm`); returns `[B, H, W, C]`.

    Args:
      momentum, epsilon, num_standing_stats: of the batch norm.
      kernel_initializer: initialiser of the gain and bias kernels `[D, C]`.
    """

    def __init__(
        self,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        kernel_initializer="orthogonal",
        num_standing_stats: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.num_standing_stats = int(num_standing_stats)
        self.kernel_initializer = initializer_template(kernel_initializer)
        self.batch_norm = SyncBatchNorm(
            momentum=momentum,
            epsilon=epsilon,
            affine=False,
            num_standing_stats=num_standing_stats,
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

    def call(self, x, c, training=None, truncation=None, relu=False):
        """`relu`: apply a ReLU to the output (see `SyncBatchNorm.normalize_scale_offset`)."""
        gain = self.gain(c, training=training)[:, None, None, :]
        bias = self.bias(c, training=training)[:, None, None, :]
        if self.batch_norm.uses_stored_statistics(training):
            # One multiply-add per element instead of four passes.
            gain = tf.cast(gain, tf.float32)
        return self.batch_norm.normalize_scale_offset(
            x, 1.0 + gain, bias, training, truncation, relu
        )

    def compute_output_shape(self, x_shape, c_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "num_standing_stats": self.num_standing_stats,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


class SelfAttention(keras.layers.Layer):
    """SA-GAN self-attention: `x + gamma * o(softmax(theta phi^T) g)`.

    theta and phi map to C/8 channels, g to C/2; phi and g are max-pooled 2x2
    so attention runs over HW queries and HW/4 keys. All four 1x1 convs are
    SN without bias; gamma is a learned scalar starting at 0, so the block is
    the identity at initialisation.

    Input and output `[B, H, W, C]`, with C divisible by 8 and H, W even.

    Args:
      kernel_initializer: initialiser of the four 1x1 conv kernels.
    """

    def __init__(self, kernel_initializer="orthogonal", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = initializer_template(kernel_initializer)
        self.theta = self.phi = self.g = self.o = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % 8:
            raise ValueError(f"SelfAttention needs channels divisible by 8, got {channels}")

        def conv(filters, name):
            return SNConv2D(
                filters, 1, use_bias=False, kernel_initializer=self.kernel_initializer, name=name
            )

        self.theta = conv(channels // 8, "theta")
        self.phi = conv(channels // 8, "phi")
        self.g = conv(channels // 2, "g")
        self.o = conv(channels, "o")
        self.theta.build(input_shape)
        self.phi.build(input_shape)
        self.g.build(input_shape)
        self.o.build((*input_shape[:-1], channels // 2))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x, training=None):
        shape = tf.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = x.shape[-1]
        theta = tf.reshape(self.theta(x, training=training), [batch, -1, channels // 8])
        phi = tf.nn.max_pool2d(self.phi(x, training=training), 2, 2, "VALID")
        phi = tf.reshape(phi, [batch, -1, channels // 8])
        g = tf.nn.max_pool2d(self.g(x, training=training), 2, 2, "VALID")
        g = tf.reshape(g, [batch, -1, channels // 2])
        # Logits and softmax in float32 under any lower-precision policy: a bfloat16 logit of
        # magnitude 20 is off by up to 0.06, which moves the attention weights by 6%. The
        # product runs over C/8 channels: 0.2 GFLOP per image at 128 px, 0.5% of G's.
        logits = tf.matmul(
            tf.cast(theta, tf.float32), tf.cast(phi, tf.float32), transpose_b=True
        )  # [B, HW, HW/4]
        attention = tf.cast(tf.nn.softmax(logits, axis=-1), g.dtype)
        attended = tf.reshape(tf.matmul(attention, g), [batch, height, width, channels // 2])
        return x + tf.cast(self.gamma, x.dtype) * self.o(attended, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def refine_spectral_norms(
    model: keras.layers.Layer, iterations: int = REFINE_ITERATIONS, exact: bool = False
) -> None:
    """Re-estimates sigma of every SN layer of `model` for its current weights.

    Runs each SN layer's `refine_sigma` (folded layers are skipped):
    `iterations` power iterations from the stored `u`, or the exact SVD,
    writing `u` and `sigma`. Use it before inference with weights whose `u`
    was estimated for other weights, e.g. the EMA generator after a restore or
    before the training loop's samples and evaluations (its `u` and sigma are
    copies of G's). Runs eagerly or in a `tf.function`, also in a strategy's
    cross-replica context (every replica gets the same values).

    Args:
      model: any layer or model; nested SN layers are found by `spectral_layers`.
      iterations: power iterations per layer (>= 1), ignored with `exact`.
      exact: use `tf.linalg.svd` (exact, but seconds per large kernel).
    """
    for layer in spectral_layers(model):
        if not layer.folded:
            layer.refine_sigma(iterations, exact=exact)


def spectral_layers(layer: keras.layers.Layer) -> list[_SpectralNormalized]:
    """All spectrally normalised layers inside `layer` (itself included), in a stable order."""
    found = [layer] if isinstance(layer, _SpectralNormalized) else []
    found += [
        sub
        for sub in layer._flatten_layers(include_self=False)
        if isinstance(sub, _SpectralNormalized)
    ]
    return found


def batch_norm_layers(layer: keras.layers.Layer) -> list[SyncBatchNorm]:
    """All `SyncBatchNorm` layers inside `layer` (those of conditional BNs included), in a
    stable order."""
    found = [layer] if isinstance(layer, SyncBatchNorm) else []
    found += [
        sub for sub in layer._flatten_layers(include_self=False) if isinstance(sub, SyncBatchNorm)
    ]
    return found
