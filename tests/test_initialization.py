"""The initial weights of the networks of every shipped config, as the reference draws them.

BigGAN-PyTorch initialises each module separately from the global RNG: every kernel its own
orthogonal draw, every conv and linear bias its own U(-1/sqrt(fan_in), 1/sqrt(fan_in)) draw
(PyTorch's default, which its `init_weights` leaves alone). This spans `tf_biggan.layers`
(which draws each weight) and `tf_biggan.networks` / `networks_deep` (which give one
initializer to all their layers), so it has a module of its own.

Each file of `gin_configs/` is parsed as `tests/test_configs.py` parses it and built at its
shipped resolution with `ch` 8 (BigGAN-deep 4, as there; a few seconds each, 512 px included):
the width changes the kernels' sizes, not how they are drawn.
"""

import collections
import functools
import glob
import itertools
import math
import os

import gin
import keras
import numpy as np
import pytest

from tf_biggan import distribute, gin_config, layers, networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "gin_configs")
SHIPPED = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.gin")))
# cifar10.gin binds the port's N(0, 0.02) kernels instead of orthogonal ones.
N02_CONFIGS = ["cifar10.gin"]
ORTHOGONAL_CONFIGS = [name for name in SHIPPED if name not in N02_CONFIGS]
WIDTH = 8
# BigGAN-deep's bottlenecks keep a quarter of the width: ch 4 still has one channel in the
# narrowest (no kernel of a single element, whose orthogonal draw could only be +-1).
DEEP_WIDTH = 4


def _build(config_name: str, *bindings: str):
    """G and D of a shipped config at `ch` WIDTH or DEEP_WIDTH (plus `bindings`), built."""
    gin.clear_config()
    ch = DEEP_WIDTH if "deep" in config_name else WIDTH
    width = [f"Generator.ch = {ch}", f"Discriminator.ch = {ch}"]
    gin_config.parse_gin(
        [os.path.join(CONFIG_DIR, config_name)], [*width, *bindings], finalize=False
    )
    try:
        generator, discriminator = networks.Generator(), networks.Discriminator()
    finally:
        gin.clear_config()
    generator.build_by_call()
    discriminator.build_by_call()
    return generator, discriminator


@functools.cache
def _built(config_name: str):
    """`_build(config_name)`, once per config for the tests that only read the weights."""
    return _build(config_name)


def _kernels(*models) -> dict:
    """`{path: value}` of the trainable weights of rank >= 2: conv, linear and embedding
    kernels (the shared embedding's included)."""
    return {
        v.path: v.numpy()
        for model in models
        for v in model.trainable_variables
        if len(v.shape) >= 2
    }


def _sn_biases(*models) -> dict:
    """`{path: (bias [out], fan_in)}` of every SN conv and linear layer with a bias."""
    return {
        layer.bias.path: (layer.bias.numpy(), math.prod(layer.kernel.shape[:-1]))
        for model in models
        for layer in layers.spectral_layers(model)
        if layer.bias is not None
    }


def _equal_pairs(arrays: dict) -> list[tuple[str, str]]:
    """The pairs of names whose arrays have the same shape and the same values."""
    by_shape = collections.defaultdict(list)
    for name, value in arrays.items():
        by_shape[value.shape].append((name, value))
    return [
        (a, b)
        for group in by_shape.values()
        for (a, x), (b, y) in itertools.combinations(group, 2)
        if np.array_equal(x, y)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("config_name", SHIPPED)
def test_no_two_kernels_of_a_shape_start_equal(config_name):
    # With one initializer object shared by all layers (Keras repeats an unseeded
    # initializer's draw), fashion_mnist.gin had 105 such pairs at ch 16.
    generator, discriminator = _built(config_name)
    kernels = _kernels(generator, discriminator)
    assert len(kernels) > 10
    assert _equal_pairs(kernels) == []
    bn = generator.blocks[0].bn1  # the conditional BN's gain and bias maps, [D, C] each
    assert not np.array_equal(bn.gain.kernel.numpy(), bn.bias.kernel.numpy())


@pytest.mark.parametrize("config_name", ORTHOGONAL_CONFIGS)
def test_every_kernel_is_orthogonal(config_name):
    generator, discriminator = _built(config_name)
    for model in (generator, discriminator):
        assert isinstance(model.kernel_initializer, keras.initializers.Orthogonal)
    for name, kernel in _kernels(generator, discriminator).items():
        matrix = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)  # [fan_in, out]
        # Orthonormal columns when fan_in >= out, else orthonormal rows.
        gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-4, err_msg=name)


@pytest.mark.parametrize("config_name", N02_CONFIGS)
def test_n02_kernels_are_normal_with_stddev_002(config_name):
    generator, discriminator = _built(config_name)
    values = np.concatenate([k.ravel() for k in _kernels(generator, discriminator).values()])
    count = values.size
    # Standard errors of the mean and of the standard deviation of `count` normal draws.
    assert abs(values.mean()) < 5 * 0.02 / math.sqrt(count)
    assert abs(values.std() - 0.02) < 5 * 0.02 / math.sqrt(2 * count)


@pytest.mark.parametrize("config_name", SHIPPED)
def test_biases_are_their_own_uniform_draws_within_one_over_sqrt_fan_in(config_name):
    generator, discriminator = _built(config_name)
    biases = _sn_biases(generator, discriminator)
    # Per network: the linear layer and every conv but the attention's (which have none).
    assert len(biases) > 5
    for name, (bias, fan_in) in biases.items():
        assert np.all(np.abs(bias) <= 1 / math.sqrt(fan_in)), name
        assert np.any(bias != 0), name
    assert _equal_pairs({name: bias for name, (bias, _) in biases.items()}) == []
    # Pooled after dividing by the bound: U(-1, 1), mean 0 and variance 1/3. The mean of
    # n draws has standard deviation sqrt(1/(3n)), the mean of their squares sqrt(4/(45n))
    # (x^2 has mean 1/3 and variance 1/5 - 1/9).
    scaled = np.concatenate([bias * math.sqrt(fan_in) for bias, fan_in in biases.values()])
    n = scaled.size
    assert abs(scaled.mean()) < 5 * math.sqrt(1 / (3 * n))
    assert abs(np.mean(scaled**2) - 1 / 3) < 5 * math.sqrt(4 / (45 * n))
    assert scaled.min() < -0.9 and scaled.max() > 0.9


def _initial_weights(seed: int) -> dict:
    """Every weight of G and D of fashion_mnist.gin built after seeding as training does."""
    distribute.RuntimeConfig().apply(seed)
    generator, discriminator = _build("fashion_mnist.gin")
    return {
        f"{model.name.split('_')[0]}/{v.path.split('/', 1)[1]}": v.numpy()
        for model in (generator, discriminator)
        for v in model.weights
    }


@pytest.mark.slow
def test_the_run_seed_reproduces_every_initial_weight():
    first, again, other = _initial_weights(3), _initial_weights(3), _initial_weights(4)
    assert first.keys() == again.keys() == other.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    # Every random draw (kernels, SN biases, SN `u`) changes with the seed; the constant
    # ones (BN scale and offset and statistics, SN sigma, attention gamma) do not.
    random_names = [
        name for name in first if name.endswith(("kernel", "embeddings", "bias", "sn_u"))
    ]
    assert len(random_names) > 30
    for name in random_names:
        assert not np.array_equal(first[name], other[name]), name


def test_zero_biases_through_a_gin_binding():
    generator, discriminator = _build(
        "fashion_mnist.gin",
        'Generator.bias_initializer = "zeros"',
        'Discriminator.bias_initializer = "zeros"',
    )
    biases = _sn_biases(generator, discriminator)
    assert biases and all(not np.any(bias) for bias, _ in biases.values())
    assert _equal_pairs(_kernels(generator, discriminator)) == []
    for model in (generator, discriminator):
        config = model.get_config()
        assert config["bias_initializer"] == "zeros"
        assert type(model)(**config).get_config() == config


def test_an_unknown_bias_initializer_is_refused():
    with pytest.raises(ValueError, match=r"bias_initializer must be one of \('fan_in_uniform'"):
        networks.Generator(resolution=32, ch=8, num_classes=3, bias_initializer="ones")
    with pytest.raises(ValueError, match="bias_initializer must be one of"):
        networks.Discriminator(resolution=32, ch=8, num_classes=3, bias_initializer="uniform")
