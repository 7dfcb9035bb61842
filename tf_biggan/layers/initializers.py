"""How the layers initialise their weights: each weight its own draw, as in the reference.

BigGAN-PyTorch draws every module's weights from the global RNG, so no two kernels start
equal. Here a layer keeps one initializer (`initializer_template`) and makes a copy of it for
each weight it creates (`fresh_initializer`); the biases of `SNDense` and `SNConv2D` start
from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default, or zeros (`BIAS_INITIALIZERS`).
`keras.utils.set_random_seed` before the build makes the whole initialisation reproducible.
"""

from __future__ import annotations

import math

import keras

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
