"""Inference copies in float32 and bfloat16: what each stores, how close their images are, and
the warning on CPUs without bfloat16 arithmetic."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from tf_biggan import layers, networks, precision

NUM_CLASSES = 3
DIM_Z = 32

BFLOAT16_MEAN_ABS_BOUND = 0.01
"""Mean |bfloat16 - float32| over the pixels of [-1, 1] images that the bfloat16 copy must stay
under (README, "Export"). Measured on tiny 32 px generators (weights perturbed as below, four
seeds each): 0.0010-0.0014 for BigGAN with and without attention, 0.0017-0.0026 for
BigGAN-deep; 0.0014 at 128 px, ch 96, attention 64. One uint8 level is 2 / 255 = 0.0078."""


@pytest.fixture(scope="module")
def copies():
    """A tiny BigGAN with attention and truncation-indexed BN statistics whose weights, moving
    statistics and attention gain moved off their initial values (so every layer shapes the
    image), and its float32 and bfloat16 inference copies: `(generator, float32, bfloat16,
    the generator's variable values before copying)`."""
    config = tiny_models.generator(NUM_CLASSES, DIM_Z).get_config()
    generator = networks.Generator(**dict(config, attention=16, num_standing_stats=3))
    generator.build_by_call()
    rng = np.random.default_rng(3)
    for variable in generator.trainable_variables:
        variable.assign(variable + 0.2 * rng.standard_normal(variable.shape).astype(np.float32))
    z = tf.random.stateless_normal([8, DIM_Z], seed=[3, 0])
    generator(z, tf.one_hot(np.arange(8) % NUM_CLASSES, NUM_CLASSES), training=True)
    tiny_models.fill_standing_stats(generator, seed=2)
    before = [v.numpy().copy() for v in generator.variables]
    full = precision.inference_copy(generator, "float32")
    half = precision.inference_copy(generator, "bfloat16")
    return generator, full, half, before


@pytest.mark.slow
@pytest.mark.parametrize("truncation", [None, 0.3], ids=["moving_stats", "table_t0.3"])
def test_bfloat16_copy_is_within_the_bound_of_float32(copies, truncation):
    generator, full, half, before = copies
    assert abs(float(generator.attention_blocks[1].gamma.numpy())) > 0.01
    z = tf.random.stateless_normal([6, DIM_Z], seed=[5, 1])
    y = tf.one_hot(np.arange(6) % NUM_CLASSES, NUM_CLASSES)
    t = None if truncation is None else tf.constant(truncation)
    expected = full(z, y, training=False, truncation=t).numpy()
    got = half(z, y, training=False, truncation=t)
    assert got.dtype == tf.float32 and got.shape == expected.shape == (6, 32, 32, 3)
    difference = np.abs(got.numpy() - expected)
    assert difference.mean() < BFLOAT16_MEAN_ABS_BOUND
    # Not the same computation: the rounding shows.
    assert difference.max() > 1e-4
    assert np.abs(got.numpy()).max() <= 1.0
    if truncation is not None:
        # The table's entry really differs from the moving statistics.
        moving = full(z, y, training=False).numpy()
        assert np.abs(moving - expected).mean() > 0.01
    for b, v in zip(before, generator.variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())


def test_bfloat16_copy_stores_kernels_in_bfloat16_and_keeps_the_rest_float32(copies):
    _, full, half, _ = copies
    sn = layers.spectral_layers(half)
    assert all(layer.folded for layer in sn)
    for layer in sn:
        expected = tf.float32 if layer is half.output_conv else tf.bfloat16
        assert layer.kernel.dtype == expected, layer.path
    # Each kernel is the float32 folded kernel (exact sigma) rounded once.
    for folded, rounded in zip(layers.spectral_layers(full), sn, strict=True):
        np.testing.assert_array_equal(
            tf.cast(folded.kernel, rounded.kernel.dtype).numpy(), rounded.kernel.numpy()
        )
    assert half.shared_embedding.kernel.dtype == tf.bfloat16
    for bn in layers.batch_norm_layers(half):
        for table in (bn.moving_mean, bn.moving_variance, bn.standing_mean, bn.standing_variance):
            assert table.dtype == tf.float32
    assert half.output_bn.compute_dtype == "float32"
    assert half.blocks[0].conv1.compute_dtype == "bfloat16"


def test_an_unknown_precision_is_named(copies):
    with pytest.raises(ValueError, match=r"precision must be one of \['float32', 'bfloat16'\]"):
        precision.inference_copy(copies[0], "float16")


@pytest.mark.parametrize(
    "flags, warns",
    [
        (frozenset({"avx2", "avx512f"}), True),
        (frozenset({"avx512f", "avx512_bf16"}), False),
        (frozenset({"amx_bf16"}), False),
        (None, False),  # unknown CPU (no /proc/cpuinfo): no guess
    ],
)
def test_warns_only_on_a_cpu_without_bfloat16(monkeypatch, caplog, flags, warns):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert precision.warn_if_slow("bfloat16") is warns
        assert precision.warn_if_slow("float32") is False
    assert ("AVX512-BF16" in caplog.text) is warns


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    monkeypatch.setattr(precision, "_CPUINFO", str(cpuinfo))
    precision._cpu_flags.cache_clear()
    try:
        assert precision.cpu_runs_bfloat16() is True
        cpuinfo.write_text("flags\t\t: fpu avx2\n")
        precision._cpu_flags.cache_clear()
        assert precision.cpu_runs_bfloat16() is False
        monkeypatch.setattr(precision, "_CPUINFO", str(tmp_path / "missing"))
        precision._cpu_flags.cache_clear()
        assert precision.cpu_runs_bfloat16() is None
    finally:
        precision._cpu_flags.cache_clear()
