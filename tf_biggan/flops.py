"""FLOPs of the BigGAN and BigGAN-deep generators and discriminators, from the architecture.

Convention: one multiply-add is 2 FLOPs; counted are every convolution, dense
layer (including conditional BN's gain and bias maps and the shared class
embedding applied to a one-hot `y`) and the two matrix products of each
self-attention block (`theta phi^T` over HW queries and HW/4 pooled keys, and
the attention map times `g`). Element-wise work (batch norm, ReLU, softmax,
pooling, upsampling, residual additions) and the class-embedding lookup of D
are not counted; they are well under 1% of the total.

At 128 px, ch 96, 1000 classes this gives G 42.24 and D 21.67 GFLOP per image
forward, 1.1% and 2.4% below the figures quoted for the paper's model
(42.7 and 22.2), which evidently also count some of the element-wise work. BigGAN-deep at
128 px (ch 128, depth 2, z 128, 1000 classes): G 17.92 and D 18.42 GFLOP forward; its
bottleneck blocks run their 3x3 convs at a quarter of the width.

A training step with `d_steps` D updates on a global batch B costs, with a
backward pass at twice the forward cost:

    per D update:  G forward on B fakes + D forward and backward on 2B (real + fake)
                   = B * (G + 6 D)
    the G update:  G and D forward and backward on B fakes = B * (3 G + 3 D)

so per real image read (`d_steps * B` per step) the cost is
`(d_steps * (G + 6 D) + 3 G + 3 D) / d_steps`, i.e. `4 G + 9 D` at `d_steps = 1`.
Sampling costs `G` per image.
"""

from __future__ import annotations

from tf_biggan import networks, networks_biggan, networks_deep


def _attention_flops(size: int, channels: int) -> int:
    positions = size * size
    keys = positions // 4
    convs = positions * (2 * channels * (channels // 8) + 2 * channels * (channels // 2))
    products = positions * keys * (channels // 8 + channels // 2)
    return 2 * (convs + products)


def _conv_flops(kernel: int, cin: int, cout: int, size: int) -> int:
    return 2 * kernel * kernel * cin * cout * size * size


def generator_forward_flops(
    resolution: int,
    ch: int,
    num_classes: int,
    dim_z: int | None = None,
    shared_dim: int = 128,
    hierarchical_z: bool = True,
    attention=None,
) -> int:
    """Forward FLOPs per image of `networks.Generator` with these arguments."""
    arch = networks_biggan.G_ARCH[resolution]
    attention = networks._attention_resolutions(attention, arch.default_attention, resolution)
    dim_z = arch.default_dim_z if dim_z is None else dim_z
    blocks = len(arch.block_multipliers)
    z_input = dim_z // (blocks + 1) if hierarchical_z else dim_z
    condition = shared_dim + (z_input if hierarchical_z else 0)
    channels = arch.input_multiplier * ch
    width = networks.BOTTOM_WIDTH
    flops = 2 * num_classes * shared_dim + 2 * z_input * width * width * channels
    for multiplier in arch.block_multipliers:
        out = multiplier * ch
        width *= 2
        flops += 2 * condition * 2 * (channels + out)  # CBN gain and bias, twice
        flops += _conv_flops(3, channels, out, width) + _conv_flops(3, out, out, width)
        flops += _conv_flops(1, channels, out, width)  # shortcut after upsampling
        channels = out
        if width in attention:
            flops += _attention_flops(width, channels)
    return flops + _conv_flops(3, channels, 3, resolution)


def discriminator_forward_flops(resolution: int, ch: int, num_classes: int, attention=None) -> int:
    """Forward FLOPs per image of `networks.Discriminator` with these arguments."""
    del num_classes  # the class embedding is a lookup
    arch = networks_biggan.D_ARCH[resolution]
    attention = networks._attention_resolutions(attention, arch.default_attention, resolution)
    channels, width, flops = 3, resolution, 0
    placed = set()
    for index, (multiplier, down) in enumerate(
        zip(arch.block_multipliers, arch.downsample, strict=True)
    ):
        out = multiplier * ch
        flops += _conv_flops(3, channels, out, width) + _conv_flops(3, out, out, width)
        if channels != out or down:
            # Block 0 pools before its shortcut conv, the others after.
            shortcut_width = width // 2 if index == 0 and down else width
            flops += _conv_flops(1, channels, out, shortcut_width)
        width = width // 2 if down else width
        channels = out
        if width in attention and width not in placed:
            placed.add(width)
            flops += _attention_flops(width, channels)
    return flops + 2 * channels + 2 * channels  # linear output and the projection


def deep_generator_forward_flops(
    resolution: int,
    ch: int,
    num_classes: int,
    dim_z: int | None = None,
    shared_dim: int = 128,
    attention=None,
    depth: int = 2,
) -> int:
    """Forward FLOPs per image of `networks.Generator(architecture="deep")`."""
    arch = networks_deep.DEEP_G_ARCH[resolution]
    attention = networks._attention_resolutions(attention, arch.default_attention, resolution)
    dim_z = arch.default_dim_z if dim_z is None else dim_z
    condition = shared_dim + dim_z  # [embedding, z] feeds the linear layer and every CBN
    width = networks.BOTTOM_WIDTH
    flops = 2 * num_classes * shared_dim
    flops += 2 * condition * width * width * arch.stages[0][0] * ch
    for cin, cout, up, stage_end in networks_deep.generator_blocks(arch, ch, depth):
        hidden = cin // networks_deep.CHANNEL_RATIO
        flops += 2 * condition * 2 * (cin + 3 * hidden)  # gain and bias of the four CBNs
        flops += _conv_flops(1, cin, hidden, width)  # before the upsampling
        width = width * 2 if up else width
        flops += 2 * _conv_flops(3, hidden, hidden, width) + _conv_flops(1, hidden, cout, width)
        if stage_end and width in attention:
            flops += _attention_flops(width, cout)
    return flops + _conv_flops(3, arch.stages[-1][1] * ch, 3, resolution)


def deep_discriminator_forward_flops(
    resolution: int, ch: int, num_classes: int, attention=None, depth: int = 2
) -> int:
    """Forward FLOPs per image of `networks.Discriminator(architecture="deep")`."""
    del num_classes  # the class embedding is a lookup
    arch = networks_deep.DEEP_D_ARCH[resolution]
    attention = networks._attention_resolutions(attention, arch.default_attention, resolution)
    width = resolution
    flops = _conv_flops(3, 3, arch.stages[0][0] * ch, width)  # the stem conv
    placed = set()
    for cin, cout, down, stage_end in networks_deep.discriminator_blocks(arch, ch, depth):
        hidden = cout // networks_deep.CHANNEL_RATIO
        flops += _conv_flops(1, cin, hidden, width) + 2 * _conv_flops(3, hidden, hidden, width)
        width = width // 2 if down else width
        flops += _conv_flops(1, hidden, cout, width)  # after the pooling
        if cout > cin:
            flops += _conv_flops(1, cin, cout - cin, width)  # the skip's new channels
        if stage_end and width in attention and width not in placed:
            placed.add(width)
            flops += _attention_flops(width, cout)
    channels = arch.stages[-1][1] * ch
    return flops + 2 * channels + 2 * channels  # linear output and the projection


def forward_flops(model) -> int:
    """Forward FLOPs per image of a `Generator` or `Discriminator` (built or not)."""
    deep = getattr(model, "architecture", None) == "deep"
    if isinstance(model, networks.Generator):
        if deep:
            return deep_generator_forward_flops(
                model.resolution,
                model.ch,
                model.num_classes,
                model.dim_z,
                model.shared_dim,
                model.attention,
                model.depth,
            )
        return generator_forward_flops(
            model.resolution,
            model.ch,
            model.num_classes,
            model.dim_z,
            model.shared_dim,
            model.hierarchical_z,
            model.attention,
        )
    if isinstance(model, networks.Discriminator):
        if deep:
            return deep_discriminator_forward_flops(
                model.resolution, model.ch, model.num_classes, model.attention, model.depth
            )
        return discriminator_forward_flops(
            model.resolution, model.ch, model.num_classes, model.attention
        )
    raise TypeError(f"expected a Generator or Discriminator, got {type(model).__name__}")


def train_flops_per_image(generator_flops: int, discriminator_flops: int, d_steps: int = 1):
    """FLOPs per real image of one training step (see the module docstring)."""
    if d_steps < 1:
        raise ValueError(f"d_steps must be >= 1, got {d_steps}")
    g, d = generator_flops, discriminator_flops
    return (d_steps * (g + 6 * d) + 3 * g + 3 * d) / d_steps
