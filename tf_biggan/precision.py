"""Inference copies of a generator in float32 or bfloat16: the one place that makes them.

`inference_generator(generator, precision)` is what sampling and evaluation of a `model_dir`
run, and `inference_copy(generator, precision)` what the export runs:
a copy with every spectrally normalised kernel folded (divided by its exact top singular
value, `layers.spectral._SpectralNormalized.fold`) that computes in `precision`. The original is
not changed.

bfloat16 (8 bits of mantissa, float32's exponent range) halves the bytes of every weight
and activation, and CPUs with AVX512-BF16 / AMX-BF16 (oneDNN) and accelerators multiply
it faster than float32. The bfloat16 copy stores the folded convolution, linear and
embedding kernels as bfloat16 variables (rounded once, after folding in float32, so no
cast runs per call) and computes the residual blocks and attention in bfloat16. What is
kept in float32, and why:

- batch-norm statistics (moving and truncation-indexed tables): the truncation table is
  interpolated between entries and `1 / sqrt(var + eps)` is taken in float32 before the
  result is rounded, so a small variance does not lose its digits; they are per-channel
  vectors, free to keep;
- the output batch norm, the last convolution (to 3 channels, under 0.3% of G's FLOPs)
  and the tanh: their rounding would land directly on the pixels, where bfloat16's
  relative step of 2^-8 is about half a uint8 level;
- the attention logits and softmax (`layers.SelfAttention` computes them in float32
  under any lower-precision policy).

Inputs and outputs keep their dtypes: z and y float32 in, images float32 in [-1, 1] out.

On a CPU without AVX512-BF16 or AMX-BF16 TensorFlow emulates bfloat16 and it can be
slower than float32; `warn_if_slow` logs a warning then (it never fails).
"""

from __future__ import annotations

import contextlib
import functools
import logging

import keras
import tensorflow as tf

from tf_biggan import layers, networks
from tf_biggan import state as state_lib

__all__ = [
    "PRECISIONS",
    "check_precision",
    "cpu_runs_bfloat16",
    "inference_copy",
    "warn_if_slow",
]

PRECISIONS = ("float32", "bfloat16")
"""The precisions an inference copy (and so an export) computes in; float32 is the default."""

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_CPUINFO = "/proc/cpuinfo"


def check_precision(precision: str) -> str:
    """Returns `precision` if it is one of `PRECISIONS`.

    Raises:
      ValueError: any other value, naming the allowed ones.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def _global_policy(name: str):
    """Creates layers with the Keras dtype policy `name`, whatever the global policy is."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(saved)


def inference_generator(generator, precision: str = "float32"):
    """`generator` ready for inference with the exact sigma of every SN kernel.

    float32: `generator` itself, its sigmas refined exactly (`layers.refine_spectral_norms`,
    an SVD per kernel). An EMA generator's `u` and sigma are G's (the EMA copies them);
    power iterations from there can need hundreds of steps where the top singular values are
    close, and the SVD costs seconds once per load and matches the export exactly.
    bfloat16: `inference_copy`, the same exact sigma folded into the kernels before they are
    rounded.
    """
    if check_precision(precision) == "float32":
        layers.refine_spectral_norms(generator, exact=True)
        return generator
    return inference_copy(generator, precision)


def inference_copy(generator, precision: str = "float32"):
    """A built copy of `generator` with folded SN that computes in `precision`.

    Args:
      generator: a built `networks.Generator` (BigGAN or BigGAN-deep), any policy.
      precision: "float32" or "bfloat16" (see the module docstring for what stays float32).

    Returns:
      A new `networks.Generator`; `copy(z, y, training=False, truncation=t)` takes float32
      z `[B, dim_z]` and y `[B, num_classes]` and returns float32 images `[B, R, R, 3]` in
      [-1, 1]. Call it in inference mode only.
    """
    check_precision(precision)
    with _global_policy("float32"):
        folded = networks.Generator(**_copy_config(generator))
        folded.build_by_call()
    state_lib.copy_variables(generator.variables, folded.variables)
    for layer in layers.spectral_layers(folded):
        layer.fold()
    if precision == "float32":
        return folded
    return _bfloat16_copy(folded)


def _copy_config(generator) -> dict:
    """`generator`'s config with zero initial kernels and biases: the copy's weights are all
    assigned, so orthogonal initialisation (a QR per kernel, which has no bfloat16 kernel) and
    the random biases are skipped."""
    return {**generator.get_config(), "kernel_initializer": "zeros", "bias_initializer": "zeros"}


def _bfloat16_copy(folded):
    """The bfloat16 copy of a float32 generator whose SN layers are folded."""
    with _global_policy("bfloat16"):
        copy = networks.Generator(**_copy_config(folded))
        # The batch norms (created with their blocks, before the build) keep float32
        # statistics and compute in bfloat16; the image-forming end stays float32.
        for bn in layers.batch_norm_layers(copy):
            bn.dtype_policy = "mixed_bfloat16"
        copy.output_bn.dtype_policy = "float32"
        copy.output_conv.dtype_policy = "float32"
        copy.build_by_call()
    for layer in layers.spectral_layers(copy):
        layer.folded = True
    if len(folded.variables) != len(copy.variables):
        raise ValueError(f"cannot copy {len(folded.variables)} into {len(copy.variables)}")
    for source, target in zip(folded.variables, copy.variables, strict=True):
        # Rounded once here, from the exactly normalised float32 kernel.
        target.assign(tf.cast(source, target.dtype))
    return copy


@functools.cache
def _cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags of /proc/cpuinfo, or None where it cannot be read."""
    try:
        with open(_CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_runs_bfloat16() -> bool | None:
    """True if the CPU has AVX512-BF16 or AMX-BF16, False if not, None if unknown."""
    flags = _cpu_flags()
    if flags is None:
        return None
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def warn_if_slow(precision: str) -> bool:
    """Logs a warning if `precision` is bfloat16 and it would run on a CPU without bfloat16
    arithmetic (no GPU or TPU visible, no AVX512-BF16 / AMX-BF16 flag); returns whether it
    warned. Never raises: bfloat16 is still correct there, only maybe slower than float32."""
    if precision != "bfloat16":
        return False
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return False
    if cpu_runs_bfloat16() is not False:
        return False
    logging.getLogger(__name__).warning(
        "precision=bfloat16 on a CPU without AVX512-BF16 or AMX-BF16: TensorFlow emulates "
        "bfloat16 there and it may be slower than float32"
    )
    return True
