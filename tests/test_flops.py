"""Tests for tf_biggan.flops: hand counts of the forward FLOPs and the 128 px figures."""

import os

import pytest

from tf_biggan import flops, networks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny 32 px networks: ch 8 -> 32 channels in every block, 3 classes, dim_z 32 in 4 chunks of 8,
# shared embedding 8 -> CBN conditioning of 8 + 8 = 16.
TINY_G = dict(resolution=32, ch=8, num_classes=3, dim_z=32, shared_dim=8, attention=0)
TINY_D = dict(resolution=32, ch=8, num_classes=3, attention=0)


def _conv(k, cin, cout, size):
    return 2 * k * k * cin * cout * size * size


def test_generator_flops_match_a_hand_count():
    embedding = 2 * 3 * 8  # one-hot y [3] @ [3, 8]
    linear = 2 * 8 * (4 * 4 * 32)  # first z chunk -> 4x4x32
    blocks = 0
    for size in (8, 16, 32):  # each block upsamples 32 channels to `size`
        cbn = 2 * (4 * 16 * 32)  # gain and bias maps of bn1 and bn2: four [16] @ [16, 32]
        blocks += cbn + _conv(3, 32, 32, size) * 2 + _conv(1, 32, 32, size)
    output = _conv(3, 32, 3, 32)
    expected = embedding + linear + blocks + output
    assert expected == 54_087_728
    assert flops.forward_flops(networks.Generator(**TINY_G)) == expected
    assert flops.generator_forward_flops(**TINY_G) == expected


def test_discriminator_flops_match_a_hand_count():
    block0 = _conv(3, 3, 32, 32) + _conv(3, 32, 32, 32) + _conv(1, 3, 32, 16)  # pool, then 1x1
    block1 = _conv(3, 32, 32, 16) * 2 + _conv(1, 32, 32, 16)  # 1x1, then pool
    block2 = block3 = _conv(3, 32, 32, 8) * 2  # no shortcut conv: same size and channels
    head = 2 * 32 + 2 * 32  # linear [32, 1] and the projection <embed(y), h>
    expected = block0 + block1 + block2 + block3 + head
    assert expected == 35_373_184
    assert flops.forward_flops(networks.Discriminator(**TINY_D)) == expected


def test_attention_flops_match_a_hand_count():
    # 16x16 attention on 32 channels: theta, phi [32 -> 4], g [32 -> 16], o [16 -> 32] at 256
    # positions; theta phi^T is [256, 4] x [4, 64], the attention map times g [256, 64] x [64, 16].
    convs = 256 * (32 * 4 * 2 + 32 * 16 + 16 * 32)
    products = 256 * 64 * 4 + 256 * 64 * 16
    expected = 2 * (convs + products)
    g = flops.generator_forward_flops(**dict(TINY_G, attention=16))
    d = flops.discriminator_forward_flops(**dict(TINY_D, attention=16))
    assert g - flops.generator_forward_flops(**TINY_G) == expected
    assert d - flops.discriminator_forward_flops(**TINY_D) == expected


def test_flops_at_128_px_are_the_papers_model():
    g = flops.forward_flops(networks.Generator(resolution=128, ch=96, num_classes=1000))
    d = flops.forward_flops(networks.Discriminator(resolution=128, ch=96, num_classes=1000))
    # DESIGN.md quotes G 42.7 and D 22.2 GFLOP; this count leaves out element-wise work.
    assert g == 42_243_304_960
    assert d == 21_673_285_632
    assert g / 42.7e9 == pytest.approx(1.0, abs=0.015)
    assert d / 22.2e9 == pytest.approx(1.0, abs=0.03)


def test_deep_flops_at_128_px():
    kwargs = dict(resolution=128, ch=128, num_classes=1000, architecture="deep")
    assert flops.forward_flops(networks.Generator(**kwargs)) == 17_918_453_760
    assert flops.forward_flops(networks.Discriminator(**kwargs)) == 18_417_197_056


def test_train_flops_per_image():
    assert flops.train_flops_per_image(10, 1, d_steps=1) == 4 * 10 + 9 * 1
    # Two D updates: 2 (G + 6 D) + 3 G + 3 D over 2 real images per G update.
    assert flops.train_flops_per_image(10, 1, d_steps=2) == (2 * 16 + 33) / 2
    with pytest.raises(ValueError, match="d_steps"):
        flops.train_flops_per_image(10, 1, d_steps=0)


def test_forward_flops_rejects_other_models():
    with pytest.raises(TypeError, match="Generator or Discriminator"):
        flops.forward_flops(object())


# Tiny 32 px BigGAN-deep: ch 8 -> 32 channels in every stage, bottlenecks of 8, depth 2,
# 3 classes, dim_z 16 and shared embedding 8 -> every CBN is conditioned on 24 numbers.
TINY_DEEP = dict(resolution=32, ch=8, num_classes=3, attention=0, architecture="deep")


def test_deep_generator_flops_match_a_hand_count():
    embedding = 2 * 3 * 8
    linear = 2 * 24 * (4 * 4 * 32)  # [embedding, z] -> 4x4x32
    blocks = 0
    # (size in, size out) of the six blocks: the second of each stage upsamples after its
    # first 1x1 conv.
    for size_in, size_out in ((4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 32)):
        cbn = 2 * 2 * 24 * (32 + 8 + 8 + 8)  # gain and bias of the four CBNs
        blocks += cbn + _conv(1, 32, 8, size_in)
        blocks += 2 * _conv(3, 8, 8, size_out) + _conv(1, 8, 32, size_out)
    output = _conv(3, 32, 3, 32)
    expected = embedding + linear + blocks + output
    assert expected == 6_901_296
    g = networks.Generator(dim_z=16, shared_dim=8, **TINY_DEEP)
    assert flops.forward_flops(g) == expected


def test_deep_discriminator_flops_match_a_hand_count():
    stem = _conv(3, 3, 32, 32)
    blocks = 0
    # (size in, size out): the first block of the first two stages pools before its last
    # 1x1 conv; the third stage keeps 8x8. No skip convs: the width stays 32.
    for size_in, size_out in ((32, 16), (16, 16), (16, 8), (8, 8), (8, 8), (8, 8)):
        blocks += _conv(1, 32, 8, size_in) + 2 * _conv(3, 8, 8, size_in)
        blocks += _conv(1, 8, 32, size_out)
    expected = stem + blocks + 2 * 32 + 2 * 32
    assert expected == 7_028_864
    assert flops.forward_flops(networks.Discriminator(**TINY_DEEP)) == expected


def test_deep_discriminator_flops_count_the_skip_channels_where_the_width_grows():
    # 64 px, ch 4: stages 4 -> 8 -> 16 -> 32 -> 64 channels, each first block pooling and
    # adding `out - in` learnt skip channels (a 1x1 conv at the pooled size).
    expected = _conv(3, 3, 4, 64)
    size = 64
    for cin, cout in ((4, 8), (8, 16), (16, 32), (32, 64)):
        hidden = cout // 4
        expected += _conv(1, cin, hidden, size) + 2 * _conv(3, hidden, hidden, size)
        size //= 2
        expected += _conv(1, hidden, cout, size) + _conv(1, cin, cout - cin, size)
        expected += _conv(1, cout, hidden, size) + 2 * _conv(3, hidden, hidden, size)
        expected += _conv(1, hidden, cout, size)
    expected += 2 * 64 + 2 * 64
    assert flops.deep_discriminator_forward_flops(64, 4, 3, attention=0) == expected
