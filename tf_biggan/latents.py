"""The latents of a training step: z and G's classes of every update, drawn statelessly from
`(seed, step, update)` (`draw_latents`) so that a resumed, a distributed and a jit-compiled
run draw the same values; or given (`Latents`, `check_latents`) to compare one iteration
with another implementation's."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


def fold_in(seed: int, *values) -> tf.Tensor:
    """A stateless RNG seed `[2]` int32 derived from `seed` and the integer `values`."""
    key = tf.constant([seed, 0], tf.int32)
    for value in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int32), alg="philox")
    return key


# The largest float32 below 1.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def normal_from_bits(bits: tf.Tensor) -> tf.Tensor:
    """Standard normal float32 values from uniform 24-bit integers `bits` in [0, 2^24).

    `ndtri((bits + 0.5) / 2^24)`, computed in float32. There `2^24 - 1 + 0.5` rounds to
    `2^24`, which would make the top code `ndtri(1) = +inf`: one value in 16.8 million,
    0.7 times in an average 20-minute Fashion-MNIST run (2,700 steps of two 32 x 64 draws)
    and every 34 steps at batch 2,048 with `dim_z` 120, each a skipped step. The uniform
    is capped at the largest float32 below 1 instead, so |z| < 5.5 always.
    """
    uniform = (tf.cast(bits, tf.float32) + 0.5) * (1.0 / (1 << 24))
    return tf.math.ndtri(tf.minimum(uniform, _BELOW_ONE))


def draw_latents(seed: int, step, update, batch_size: int, dim_z: int, num_classes: int):
    """The global batch of z `[batch_size, dim_z]` and int32 labels of one update.

    Drawn statelessly from `(seed, step, update)`. z comes from integer random bits
    through the inverse normal CDF (`normal_from_bits`), because stateless float draws
    differ between XLA and the regular kernels while integer draws agree; a jit-compiled
    step thus trains on the same z as the plain one.
    """
    key = fold_in(seed, step, update)
    bits = tf.random.stateless_uniform(
        [batch_size, dim_z], key, 0, 1 << 24, dtype=tf.int32, alg="philox"
    )
    z = normal_from_bits(bits)
    labels = tf.random.stateless_uniform(
        [batch_size],
        tf.random.experimental.stateless_fold_in(key, 1, alg="philox"),
        0,
        num_classes,
        dtype=tf.int32,
        alg="philox",
    )
    return z, labels


class Latents(NamedTuple):
    """G's inputs of every update of one step, given instead of drawn.

    Only for comparing one iteration with another implementation's, which fixes its own z
    and classes (`tools/port_step_parity.py`); training draws them (`draw_latents`). They
    are global, as drawn ones are: each replica and micro-batch takes its slice, so the
    given step on N replicas equals the given step on one. Under several workers every
    worker must pass the same values.

    Attributes:
      z: float32 `[d_steps + 1, batch_size, dim_z]`: update k < d_steps is D update k, the
        last one the G update.
      labels: int `[d_steps + 1, batch_size]`, the classes of G's images in those updates.
    """

    z: tf.Tensor
    labels: tf.Tensor


def check_latents(
    latents: Latents, updates: int, batch_size: int, dim_z: int, num_classes: int
) -> Latents:
    """`latents` as tensors, or a ValueError naming the shapes a step needs: `updates`
    (d_steps + 1) of the global batch `batch_size`, G's `dim_z` and `num_classes`."""
    z = tf.convert_to_tensor(latents.z, tf.float32)
    labels = tf.convert_to_tensor(latents.labels)
    expected = ([updates, batch_size, dim_z], [updates, batch_size])
    if z.shape.as_list() != expected[0] or labels.shape.as_list() != expected[1]:
        raise ValueError(
            f"latents must be z {expected[0]} and labels {expected[1]} (d_steps + 1 updates "
            f"of the global batch), got {z.shape.as_list()} and {labels.shape.as_list()}"
        )
    if not labels.dtype.is_integer:
        raise ValueError(f"latent labels must be integers, got {labels.dtype.name}")
    labels = tf.cast(labels, tf.int32)
    in_range = [
        tf.debugging.assert_non_negative(labels, message="latent labels must be >= 0"),
        tf.debugging.assert_less(
            labels, num_classes, message="latent labels must be < num_classes"
        ),
    ]
    with tf.control_dependencies(in_range):
        return Latents(tf.identity(z), tf.identity(labels))
