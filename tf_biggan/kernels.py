"""The CPU kernels that the layers route to, and the policy that decides where.

These are not the paper's layers but faster ways to compute some of them on CPU, each equal to
the plain ops up to float rounding (tests/test_kernels.py checks values and gradients):

- `conv_as_matmul`: a 'same' convolution as one matmul over shifted copies of its input, for
  the wide low-resolution convs (BigGAN's 1536-channel 4x4 and 8x8 layers);
- `upsample_conv` and `conv_avg_pool`: the nearest-neighbour 2x upsampling or the 2x2 average
  pooling folded into a 3x3 convolution's kernel (16 instead of 36 multiply-adds per pixel);
- `upsample`: nearest-neighbour 2x whose gradient is written as a pooling;
- `fused_batch_normalize` and `batch_norm_relu`: batch norm by TensorFlow's fused kernel, and
  BN-scale-offset-ReLU whose backward pass keeps one activation fewer.

`KernelPolicy` holds the thresholds, measured on CPU (docs/performance.md), and answers for a
layer whether a call of a given static shape takes a kernel. A layer receives a policy when it
is constructed (`SNConv2D(..., kernel_policy=...)`, `SyncBatchNorm(..., kernel_policy=...)`) or
reads `current_policy()` then, once; nothing here is read while a graph is traced.
`policy_scope` sets the policy of the layers constructed inside it (tests use it to route
small layers through the kernels). With a GPU or TPU in the process, the default policy keeps
the plain ops everywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from tf_biggan.dtypes import statistics_dtype


def static_size(shape) -> int | None:
    """Elements of a tensor of static `shape`, or None if any dimension is unknown."""
    dims = tuple(shape)
    return None if any(d is None for d in dims) else math.prod(int(d) for d in dims)


@functools.cache
def _process_has_accelerator() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


@dataclasses.dataclass(frozen=True)
class KernelPolicy:
    """Where the layers use this module's kernels instead of the plain ops.

    Attributes:
      cpu_kernels: True: route by the thresholds below; False: the plain ops everywhere;
        None (the default): True unless the process has a GPU or TPU (asked once per
        process, when a routing question is first answered).
      matmul_conv_ratio, matmul_conv_min_kernel: a 'same' k x k convolution (k > 1) runs
        as `conv_as_matmul` when its kernel has at least `matmul_conv_min_kernel`
        elements and more than `matmul_conv_ratio` times as many as its output (BigGAN's
        wide 4x4 and 8x8 layers; smaller kernels, and kernels not much larger than their
        output, are faster as a direct convolution).
      upsample_conv_min_macs: a conv called with `resample="up"` runs as `upsample_conv`
        when the convolution it stands for does at least this many multiply-adds per call
        (counting one example when the batch is dynamic); with less work the fused form
        is slower.
      pooled_conv_min_macs: the same for `resample="down"` and `conv_avg_pool`.
      batch_norm_relu_min_elements: a single-replica training call of a batch norm with
        `relu=True` runs as `batch_norm_relu` when its input has at least this many
        elements (4 MiB in float32; one example counted when the batch is dynamic). Small
        activations cost little memory, and below the floor the composition keeps the
        numerics of earlier releases.

    The defaults were measured on 2-core x86 CPUs with oneDNN; docs/performance.md ("What
    each choice gained") has the measurements behind each threshold.
    """

    cpu_kernels: bool | None = None
    matmul_conv_ratio: int = 8
    matmul_conv_min_kernel: int = 2**23
    upsample_conv_min_macs: int = 2**26
    pooled_conv_min_macs: int = 2**29
    batch_norm_relu_min_elements: int = 2**20

    def _enabled(self) -> bool:
        if self.cpu_kernels is None:
            return not _process_has_accelerator()
        return self.cpu_kernels

    def uses_conv_as_matmul(
        self, kernel_size: int, padding: str, filters: int, input_shape, output_shape
    ) -> bool:
        """Whether a stride-1 convolution of this static input shape (`[N, H, W, C]`) and
        output shape runs as `conv_as_matmul`. An unknown dimension keeps `tf.nn.conv2d`."""
        if kernel_size == 1 or padding != "same" or not self._enabled():
            return False
        output_size = static_size(output_shape)
        kernel_elements = kernel_size**2 * int(input_shape[-1]) * filters
        return (
            output_size is not None
            and kernel_elements >= self.matmul_conv_min_kernel
            and self.matmul_conv_ratio * output_size < kernel_elements
        )

    def uses_fused_resampling(
        self, kernel_size: int, padding: str, filters: int, input_shape, resample: str
    ) -> bool:
        """Whether a convolution called with `resample` ("up" or "down") on inputs of this
        shape runs as `upsample_conv` or `conv_avg_pool`.

        True for a 'same' 1x1 or 3x3 convolution with static height, width (even to pool)
        and channels whose unfused convolution does at least `upsample_conv_min_macs` (up)
        or `pooled_conv_min_macs` (down) multiply-adds (for one example when the batch is
        dynamic) and would not run as `conv_as_matmul` (whose matmul is faster than the
        fused convolution at those shapes).
        """
        if padding != "same" or kernel_size not in (1, 3) or not self._enabled():
            return False
        batch, height, width, channels = input_shape
        if height is None or width is None or channels is None:
            return False
        if resample == "up":
            height, width = 2 * height, 2 * width
        elif height % 2 or width % 2:
            return False  # `conv_avg_pool` pads as for an even size
        convolved = (batch, height, width, channels)
        if self.uses_conv_as_matmul(
            kernel_size, padding, filters, convolved, (batch, height, width, filters)
        ):
            return False
        macs = (batch or 1) * height * width * kernel_size**2 * channels * filters
        return macs >= (
            self.upsample_conv_min_macs if resample == "up" else self.pooled_conv_min_macs
        )

    def uses_batch_norm_relu(self, input_shape) -> bool:
        """Whether a single-replica training BN-ReLU of this input shape runs as
        `batch_norm_relu`."""
        if not self._enabled():
            return False
        elements = static_size((input_shape[0] or 1, *input_shape[1:]))
        return elements is not None and elements >= self.batch_norm_relu_min_elements


_SCOPED_POLICIES: list[KernelPolicy] = []


def current_policy() -> KernelPolicy:
    """The policy that a layer constructed now receives: the innermost `policy_scope`'s, else
    the default `KernelPolicy()`."""
    return _SCOPED_POLICIES[-1] if _SCOPED_POLICIES else KernelPolicy()


@contextlib.contextmanager
def policy_scope(policy: KernelPolicy):
    """Layers constructed inside the `with` block receive `policy`; layers built before keep
    theirs."""
    if not isinstance(policy, KernelPolicy):
        raise TypeError(f"policy must be a KernelPolicy, got {type(policy).__name__}")
    _SCOPED_POLICIES.append(policy)
    try:
        yield policy
    finally:
        _SCOPED_POLICIES.pop()


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
    is much faster on CPU than the 6-D reduction that automatic differentiation derives
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
    not lose (in float64 for a float64 kernel)."""
    dtype = statistics_dtype(kernel.dtype)
    taps = tf.reshape(tf.cast(kernel, dtype), [9, -1])
    combined = tf.matmul(tf.constant(matrix, dtype), taps)
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
