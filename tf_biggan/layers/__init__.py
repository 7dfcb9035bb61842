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
  `SNConv2D` also takes `resample="up"` (G: nearest-neighbour 2x before the convolution)
  or `"down"` (D: 2x2 average pooling after it).
- `SyncBatchNorm` and `ConditionalBatchNorm`: batch norm whose batch statistics
  are reduced over all replicas when a `tf.distribute` strategy runs more than
  one (cross-replica BN, which BigGAN uses in G). The conditional variant is
  `BN(x) * (1 + gain(c)) + bias(c)`, gain and bias SN linear maps without bias.
  Called with `relu=True`, they apply a ReLU to their output.
- `SelfAttention`: the SA-GAN block, `x + gamma * o`, gamma starting at 0.

Initialisation as in the reference (BigGAN-PyTorch), where each module draws its weights
from the global RNG: every kernel is its own draw of the layer's `kernel_initializer` (a
`fresh_initializer` copy per weight), and the biases of `SNDense` and `SNConv2D` are drawn
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) by default, PyTorch's initialisation of
`nn.Linear` and `nn.Conv2d` biases, which the reference keeps (`bias_initializer`,
`BIAS_INITIALIZERS`). `keras.utils.set_random_seed` before the build makes it reproducible.

On CPU, some calls of `SNConv2D` and of the batch norms run as the faster kernels of
`tf_biggan.kernels`, equal up to float rounding; which ones is decided by the
`kernels.KernelPolicy` that each of them receives when it is constructed (`kernel_policy`).

The package: `spectral` (the SN layers, sigma's refinement and folding), `normalization`
(the batch norms), `attention` and `initializers`; every public name is importable from
`tf_biggan.layers` itself.

Layers know nothing of gin or of strategies beyond the replica context. They
compute in their `compute_dtype` (so mixed precision works) but keep the power
iteration, the batch statistics and the attention logits in float32 (in float64 under
Keras' float64 policy: `tf_biggan.dtypes.statistics_dtype`, re-exported here).
"""

from tf_biggan.dtypes import statistics_dtype
from tf_biggan.layers.attention import SelfAttention
from tf_biggan.layers.initializers import (
    BIAS_INITIALIZERS,
    bias_initializer_for,
    fresh_initializer,
    initializer_template,
)
from tf_biggan.layers.normalization import ConditionalBatchNorm, SyncBatchNorm, batch_norm_layers
from tf_biggan.layers.spectral import (
    REFINE_ITERATIONS,
    SN_EPSILON,
    SNConv2D,
    SNDense,
    SNEmbedding,
    refine_spectral_norms,
    spectral_layers,
)

__all__ = [
    "BIAS_INITIALIZERS",
    "REFINE_ITERATIONS",
    "SN_EPSILON",
    "ConditionalBatchNorm",
    "SNConv2D",
    "SNDense",
    "SNEmbedding",
    "SelfAttention",
    "SyncBatchNorm",
    "batch_norm_layers",
    "bias_initializer_for",
    "fresh_initializer",
    "initializer_template",
    "refine_spectral_norms",
    "spectral_layers",
    "statistics_dtype",
]
