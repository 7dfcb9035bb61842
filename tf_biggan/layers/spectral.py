"""Spectrally normalised layers (Miyato et al., 2018) as BigGAN uses them: `SNDense`,
`SNConv2D`, `SNEmbedding`, their power iteration, and the refinement and folding of sigma
for inference and export (see the package docstring)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_biggan import kernels
from tf_biggan.dtypes import statistics_dtype
from tf_biggan.layers.initializers import (
    _check_bias_initializer,
    bias_initializer_for,
    fresh_initializer,
    initializer_template,
)

SN_EPSILON = 1e-6
"""Added (as a floor on the norm) when normalising `u` and `v`; the paper's 1e-6."""

REFINE_ITERATIONS = 50
"""Default power iterations of `refine_spectral_norms` (cheap: two matrix-vector products each)."""


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    # l2_normalize floors the squared norm; flooring it at eps**2 floors the norm at eps.
    return tf.math.l2_normalize(x, axis=-1, epsilon=SN_EPSILON**2)


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
        """The kernel in float32 (float64 under a float64 policy) and its `[fan_in, out]`
        matrix view."""
        # Inside an enclosing layer's mixed-precision autocast scope the kernel reads as the
        # compute dtype; the power iteration runs in float32 either way.
        kernel = tf.cast(self.kernel.value, self._statistics_dtype)
        return kernel, tf.reshape(kernel, [-1, kernel.shape[-1]])

    def kernel_and_inverse_sigma(self, training=False) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Returns the float32 kernel and `1 / sigma` (a float32 scalar, or None for 1); both
        float64 under a float64 policy.

        One power iteration runs from the stored `u` in training and at
        inference alike, so inference uses exactly the sigma that a training
        call from the same `u` computes. With `training=True` the new `u` and
        sigma are written; otherwise nothing is. A folded layer returns its
        kernel and None.
        """
        if self.folded:
            return tf.cast(self.kernel.value, self._statistics_dtype), None
        kernel, matrix = self._kernel_and_matrix()
        # float32 also where the layer's variables are bfloat16 (an inference copy's, before
        # it is folded), as the power iteration needs.
        u, sigma = _power_iteration(matrix, tf.cast(self.u.value, self._statistics_dtype))
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
        output_size = kernels.static_size(output_shape)
        if output_size is not None and output_size < kernel.shape.num_elements():
            outputs = op(inputs, self._cast(kernel))
            # Scaled in float32: a bfloat16 `1 / sigma` would be off by up to 0.4% for the
            # whole layer, not per element.
            return self._cast(tf.cast(outputs, inverse_sigma.dtype) * inverse_sigma)
        return op(inputs, self._cast(kernel * inverse_sigma))

    def top_singular_value(self) -> tf.Tensor:
        """The stored estimate of the kernel's top singular value (last training call or refine)."""
        return tf.convert_to_tensor(self.sigma.value)

    def _cast(self, x):
        return tf.cast(x, self.compute_dtype)

    @property
    def _statistics_dtype(self) -> tf.DType:
        """float32 for the power iteration, or float64 under a float64 policy."""
        return statistics_dtype(self.compute_dtype)

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
      kernel_policy: the `kernels.KernelPolicy` that routes calls to the CPU kernels;
        None: `kernels.current_policy()`, read once, here. Not part of the config.

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
        kernel_policy: kernels.KernelPolicy | None = None,
        **kwargs,
    ):
        super().__init__(kernel_initializer=kernel_initializer, **kwargs)
        self.kernel_policy = kernel_policy or kernels.current_policy()
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
        runs as one fused op (`kernels.upsample_conv`, `kernels.conv_avg_pool`) where
        `fuses_resampling` says so, else as the resampling and the convolution.
        """
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        inputs = self._cast(inputs)
        if resample and self.fuses_resampling(inputs.shape, resample):
            conv = kernels.upsample_conv if resample == "up" else kernels.conv_avg_pool
            b, h, w, _ = inputs.shape
            h, w = (h * 2, w * 2) if resample == "up" else (h // 2, w // 2)
            outputs = self._normalized_apply(conv, inputs, bool(training), (b, h, w, self.filters))
            return self._add_bias(outputs)
        if resample == "up":
            inputs = kernels.upsample(inputs)
        if self.runs_as_matmul(inputs.shape):
            conv = kernels.conv_as_matmul
        else:

            def conv(x, kernel):
                return tf.nn.conv2d(x, kernel, strides=1, padding=self.padding.upper())

        outputs = self._add_bias(self._normalized_apply(conv, inputs, bool(training)))
        return kernels.downsample(outputs) if resample == "down" else outputs

    def fuses_resampling(self, input_shape, resample: str) -> bool:
        """Whether a call with `resample` ("up" or "down") on inputs of this static shape runs
        as `kernels.upsample_conv` or `kernels.conv_avg_pool` (`KernelPolicy.uses_fused_resampling`)."""
        return self.kernel_policy.uses_fused_resampling(
            self.kernel_size, self.padding, self.filters, input_shape, resample
        )

    def runs_as_matmul(self, input_shape) -> bool:
        """Whether a call on inputs of this static shape runs as `kernels.conv_as_matmul`
        (`KernelPolicy.uses_conv_as_matmul`)."""
        return self.kernel_policy.uses_conv_as_matmul(
            self.kernel_size, self.padding, self.filters, input_shape,
            self.compute_output_shape(input_shape),
        )  # fmt: skip

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
