"""ajbrock/BigGAN-PyTorch checkpoints (`G.pth`, `G_ema.pth`, `D.pth`) → tf_biggan networks.

The port's models with the settings of its `scripts/launch_BigGAN_bs256x8.sh` (shared class
embedding, hierarchical z, `--G_shared --hier`, SN everywhere, BN ε 1e-5) at 128 px, and the
same layer layout at the other resolutions of `networks_biggan.G_ARCH`. The width, the class count,
the latent size and the attention placement are read from the tensors' shapes and names;
the resolution is given and checked against the number of blocks.

What differs between the port's tensors and ours:
- Layout: conv weights `[out, in, kh, kw]` → kernels `[kh, kw, in, out]`; linear weights
  `[out, in]` → `[in, out]`. The shared embedding `[classes, dim]` is our dense kernel as is.
- G's first linear layer: the port reshapes its output to `[C, 4, 4]` (NCHW), we to
  `[4, 4, C]` (NHWC), so its output units (kernel columns, bias and SN `u`) are permuted:
  our unit `(h * 4 + w) * C + c` is the port's unit `c * 16 + h * 4 + w`.
- Conditional BN input: both concatenate `[shared embedding, z chunk]`, in that order.
- SN state: the port's `u0` is our `u` and its `sv0` (the last training estimate) our
  `sigma`. Both run one power iteration from `u` at inference, on the same `[in, out]`
  matrix up to a row permutation, which changes no singular value, so the estimates are
  equal. The exception is D's class embedding, whose `u` the port keeps on the class side
  (`[1, classes]`) and we on the feature side (`[1, features]`); `_embedding_u` picks our
  `u` so that our first estimate equals the port's.
- BN: `stored_mean`/`stored_var` are the moving statistics; the output BN's `gain`/`bias`
  are our `gamma`/`beta`.

BigGAN-deep checkpoints (the port's `BigGANdeep.py`, `scripts/launch_BigGAN_deep.sh`) are
recognised by their blocks' fourth conv (`conv4`) and built with `architecture="deep"`; the
depth (blocks per resolution) follows from the number of blocks and the resolution. Their
differences from the above: G's blocks have four convs and four conditional BNs and no
shortcut conv, and `[shared embedding, z]` (the port's order, and ours) feeds G's first
linear layer and every conditional BN. D starts with `input_conv` and keys its blocks by
stage, `blocks.<stage>.<index in stage>`, with a stage's attention at index `depth`; ours
are numbered in order (`block<stage * depth + index>`).

Every tensor of a file is used and every variable of a network is set; anything else is
an error naming the tensor or the variable.

Both directions live in one table: `generator_tensors` / `discriminator_tensors` pair each
port tensor with our variable and the conversion each way. `load_*` read a state dict
through it; `port_state_dict` writes our variables back under the port's keys and layouts
(what `tools/port_step_parity.py` compares with the port's own iteration).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tf_biggan import networks, networks_biggan, networks_deep
from tf_biggan.convert import imagenet
from tf_biggan.convert.model_dir import Converted

FILES = {"generator": "G.pth", "ema_generator": "G_ema.pth", "discriminator": "D.pth"}
"""Checkpoint file of each network in a run folder of the port (`weights/<experiment>/`)."""

TORCH_MISSING = (
    "reading BigGAN-PyTorch checkpoints needs PyTorch: pip install 'tf_biggan[convert]' "
    "(CPU build: add --extra-index-url https://download.pytorch.org/whl/cpu)"
)


class ConversionError(ValueError):
    """A checkpoint that does not fit the networks it should build; the message says why."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.pth` file as float32 numpy arrays, by key.

    Raises:
      ImportError: PyTorch is not installed (the message names the `convert` extra).
      FileNotFoundError: `path` does not exist.
      ConversionError: the file is truncated, corrupt or not a state dict of tensors.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_MISSING) from e
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise ConversionError(
            f"{path} cannot be read as a PyTorch checkpoint (truncated or corrupt?): {e}"
        ) from e
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise ConversionError(f"{path} is not a state dict of tensors (a network's .pth)")
    return {key: value.detach().float().numpy() for key, value in loaded.items()}


def kind_of(state_dict: dict) -> str:
    """ "generator", "discriminator" or "" from the keys of a port state dict."""
    if "output_layer.2.weight" in state_dict or "shared.weight" in state_dict:
        return "generator"
    if "embed.weight" in state_dict:
        return "discriminator"
    return ""


def is_deep(state_dict: dict) -> bool:
    """Whether a port state dict is BigGAN-deep's: only its blocks have a `conv4`."""
    return any(key.endswith(".conv4.weight") for key in state_dict)


def find_files(path: str) -> dict[str, str]:
    """The checkpoint file of each network, from a run folder or one file.

    A folder gives whichever of `G.pth`, `G_ema.pth`, `D.pth` it holds. A file named
    `G_ema*.pth` is the EMA generator; another file is the generator or discriminator its
    keys show (decided when it is read).

    Raises:
      FileNotFoundError: the path does not exist, or the folder holds none of the files.
    """
    if os.path.isdir(path):
        found = {
            role: os.path.join(path, name)
            for role, name in FILES.items()
            if os.path.isfile(os.path.join(path, name))
        }
        if not found:
            raise FileNotFoundError(f"{path} holds none of {', '.join(FILES.values())}")
        return found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
    if os.path.basename(path).startswith("G_ema"):
        return {"ema_generator": path}
    return {"": path}


@dataclasses.dataclass(frozen=True)
class PortTensor:
    """One tensor of a port state dict and the variable of ours that holds it.

    Attributes:
      key: the tensor's key in the port's state dict.
      variable: our variable.
      to_ours: `(port value, port state dict) -> our value` (the state dict for values that
        depend on other tensors, such as D's class embedding `u`).
      to_port: `our value -> port value`, the inverse.
    """

    key: str
    variable: Any
    to_ours: Callable[[np.ndarray, dict], np.ndarray]
    to_port: Callable[[np.ndarray], np.ndarray]


def _as_is(value, _=None):
    return value


def _transposed(value, _=None):
    """A linear weight `[out, in]` ↔ our kernel `[in, out]` (its own inverse)."""
    return value.T


def _conv_to_ours(value, _=None):
    return value.transpose(2, 3, 1, 0)


def _conv_to_port(value):
    return value.transpose(3, 2, 0, 1)


def _scalar_to_ours(value, _=None):
    return value.reshape(())


def _sn_layer(layer, prefix: str, permutation=None) -> list[PortTensor]:
    """A spectrally normalised conv or linear layer: weight (transposed), bias, u, sigma.

    `permutation`: our output unit `i` is the port's unit `permutation[i]` (G's first linear).
    """
    conv = len(layer.kernel.shape) == 4
    to_ours, to_port = (_conv_to_ours, _conv_to_port) if conv else (_transposed, _transposed)
    if permutation is None:
        unit_to_ours = unit_to_port = _as_is
    else:
        inverse = np.argsort(permutation)

        def unit_to_ours(value, _=None):
            return value[..., permutation]

        def unit_to_port(value):
            return value[..., inverse]

    tensors = [
        PortTensor(
            f"{prefix}.weight",
            layer.kernel,
            lambda w, _=None: unit_to_ours(to_ours(w)),
            lambda k: to_port(unit_to_port(k)),
        ),
        PortTensor(f"{prefix}.u0", layer.u, unit_to_ours, unit_to_port),
        PortTensor(f"{prefix}.sv0", layer.sigma, _scalar_to_ours, lambda s: s.reshape(1)),
    ]
    if layer.bias is not None:
        tensors.append(PortTensor(f"{prefix}.bias", layer.bias, unit_to_ours, unit_to_port))
    return tensors


def _embedding_u(table: np.ndarray, port_u: np.ndarray) -> np.ndarray:
    """Our `u` `[1, dim]` for the `[classes, dim]` table whose port `u` is `[1, classes]`.

    From `u0` the port's estimate is `s = ‖W v‖` with `v = normalize(u0 W)`; from `u` ours
    is `‖Wᵀ a‖` with `a = normalize(W uᵀ)`. With `W = A S Bᵀ` (thin SVD), `a` on the great
    circle from the top left singular vector to the last one, `a = cos θ a₁ + sin θ aₖ`,
    gives `‖Wᵀ a‖² = cos²θ σ₁² + sin²θ σₖ²`, which equals `s²` for the θ solved below
    (`σₖ ≤ s ≤ σ₁` since `v` lies in W's row space), and `u = cos θ b₁/σ₁ + sin θ bₖ/σₖ`
    makes `W uᵀ = a`.
    """
    w = table.astype(np.float64)
    v = port_u.astype(np.float64) @ w
    v /= max(np.linalg.norm(v), 1e-12)
    target = np.linalg.norm(w @ v[0])
    _, singular, right_t = np.linalg.svd(w, full_matrices=False)
    # The SVD's signs are arbitrary: orient each singular vector towards v, so that our first
    # power iteration lands on the side of the port's (its next `u0` and ours agree in sign).
    right_t = right_t * np.where(right_t @ v[0] < 0, -1.0, 1.0)[:, None]
    top, low = singular[0], singular[-1]
    if low <= 0 or top - low < 1e-12 * top:
        return right_t[:1]
    cos2 = np.clip((target**2 - low**2) / (top**2 - low**2), 0.0, 1.0)
    u = np.sqrt(cos2) * right_t[0] / top + np.sqrt(1.0 - cos2) * right_t[-1] / low
    return u[None, :]


def _port_embedding_u(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The port's `u0` `[1, classes]` for our `u` `[1, dim]` of the `[classes, dim]` table.

    `normalize(W uᵀ)`: the class-side vector of our next power iteration, which is where the
    port keeps its `u`. From it the port's estimate is `‖Wᵀ a‖`, the estimate ours makes from
    `u`, so the two agree. Where our `u` came from `_embedding_u` of a port `u0` that is W's
    top left singular vector (as after converged power iterations), this gives that vector
    back, up to sign.
    """
    a = table.astype(np.float64) @ u[0].astype(np.float64)
    return (a / max(np.linalg.norm(a), 1e-12))[None, :]


def _batch_norm(bn, prefix: str) -> list[PortTensor]:
    tensors = [
        PortTensor(f"{prefix}.stored_mean", bn.moving_mean, _as_is, _as_is),
        PortTensor(f"{prefix}.stored_var", bn.moving_variance, _as_is, _as_is),
    ]
    if bn.affine:
        tensors += [
            PortTensor(f"{prefix}.gain", bn.gamma, _as_is, _as_is),
            PortTensor(f"{prefix}.bias", bn.beta, _as_is, _as_is),
        ]
    return tensors


def _attention(attention, prefix: str) -> list[PortTensor]:
    tensors = []
    for name in ("theta", "phi", "g", "o"):
        tensors += _sn_layer(getattr(attention, name), f"{prefix}.{name}")
    # The port's γ is a 0-d tensor, as ours.
    return tensors + [PortTensor(f"{prefix}.gamma", attention.gamma, _scalar_to_ours, _as_is)]


def _first_linear_permutation(channels: int) -> np.ndarray:
    """port unit of each of our units of G's first linear layer (NHWC vs NCHW, 4x4)."""
    ours = np.arange(networks.BOTTOM_WIDTH**2 * channels)
    position, channel = ours // channels, ours % channels
    return channel * networks.BOTTOM_WIDTH**2 + position


def generator_tensors(generator: networks.Generator) -> list[PortTensor]:
    """Every tensor of the port's G state dict, paired with the variable of `generator`
    (built) that holds it."""
    tensors = [PortTensor("shared.weight", generator.shared_embedding.kernel, _as_is, _as_is)]
    permutation = _first_linear_permutation(generator.input_channels)
    tensors += _sn_layer(generator.linear, "linear", permutation)
    attention = generator.attention_blocks
    # BigGAN-deep's blocks: four convs, each after its conditional BN, and no shortcut conv.
    convs = 4 if generator.architecture == "deep" else 2
    for index, block in enumerate(generator.blocks):
        prefix = f"blocks.{index}.0"
        for conv in range(1, convs + 1):
            tensors += _sn_layer(getattr(block, f"conv{conv}"), f"{prefix}.conv{conv}")
        if convs == 2:
            tensors += _sn_layer(block.conv_shortcut, f"{prefix}.conv_sc")
        for name in (f"bn{k}" for k in range(1, convs + 1)):
            bn = getattr(block, name)
            tensors += _batch_norm(bn.batch_norm, f"{prefix}.{name}")
            tensors += _sn_layer(bn.gain, f"{prefix}.{name}.gain")
            tensors += _sn_layer(bn.bias, f"{prefix}.{name}.bias")
        if index in attention:
            tensors += _attention(attention[index], f"blocks.{index}.1")
    tensors += _batch_norm(generator.output_bn, "output_layer.0")
    return tensors + _sn_layer(generator.output_conv, "output_layer.2")


def discriminator_tensors(discriminator: networks.Discriminator) -> list[PortTensor]:
    """Every tensor of the port's D state dict, paired with the variable of `discriminator`
    (built) that holds it."""
    tensors = []
    attention = discriminator.attention_blocks
    deep = discriminator.architecture == "deep"
    if deep:
        tensors += _sn_layer(discriminator.input_conv, "input_conv")
    depth = discriminator.depth
    for index, block in enumerate(discriminator.blocks):
        # The port's deep D keys blocks by stage: blocks.<stage>.<index in stage>, and the
        # stage's attention follows its blocks at index `depth`.
        stage, position = divmod(index, depth) if deep else (index, 0)
        prefix = f"blocks.{stage}.{position}"
        for conv in range(1, 5 if deep else 3):
            tensors += _sn_layer(getattr(block, f"conv{conv}"), f"{prefix}.conv{conv}")
        if block.conv_shortcut is not None:
            tensors += _sn_layer(block.conv_shortcut, f"{prefix}.conv_sc")
        if index in attention:
            tensors += _attention(attention[index], f"blocks.{stage}.{depth if deep else 1}")
    tensors += _sn_layer(discriminator.linear, "linear")
    embedding = discriminator.embedding
    return tensors + [
        PortTensor("embed.weight", embedding.kernel, _as_is, _as_is),
        PortTensor(
            "embed.u0",
            embedding.u,
            lambda u, state_dict: _embedding_u(state_dict["embed.weight"], u),
            lambda u: _port_embedding_u(embedding.kernel.numpy(), u),
        ),
        PortTensor("embed.sv0", embedding.sigma, _scalar_to_ours, lambda s: s.reshape(1)),
    ]


def _load(tensors: list[PortTensor], network, state_dict: dict, file: str) -> None:
    """Sets every variable of `network` from `state_dict` through `tensors`.

    Raises:
      ConversionError: a tensor is missing, has the wrong shape, is not used, or a
        variable is not set; the message names it.
    """
    assigned = set()
    for tensor in tensors:
        if tensor.key not in state_dict:
            raise ConversionError(f"{file}: tensor {tensor.key!r} is missing")
        variable = tensor.variable
        # In the variable's dtype: float32, or float64 for a model built under a float64
        # policy, which keeps the digits of the vectors converted in float64 below.
        value = np.asarray(tensor.to_ours(state_dict[tensor.key], state_dict), variable.dtype)
        if tuple(variable.shape) != value.shape:
            raise ConversionError(
                f"{file}: {tensor.key!r} has shape {value.shape} after conversion, but "
                f"{variable.path} has {tuple(variable.shape)}"
            )
        variable.assign(value)
        assigned.add(id(variable))
    unused = sorted(set(state_dict) - {tensor.key for tensor in tensors})
    if unused:
        raise ConversionError(f"{file}: tensors not used by the conversion: {unused}")
    unset = [v.path for v in network.variables if id(v) not in assigned]
    if unset:
        raise ConversionError(f"{file}: variables not set by the conversion: {unset}")


def load_generator(generator: networks.Generator, state_dict: dict, file: str) -> None:
    """Sets every variable of the built `generator` from the port's G state dict."""
    _load(generator_tensors(generator), generator, state_dict, file)


def load_discriminator(discriminator: networks.Discriminator, state_dict: dict, file: str):
    """Sets every variable of the built `discriminator` from the port's D state dict."""
    _load(discriminator_tensors(discriminator), discriminator, state_dict, file)


def port_state_dict(tensors: list[PortTensor]) -> dict[str, np.ndarray]:
    """The port's state dict (numpy arrays by key, in the variables' dtype: float32, or
    float64 for a model built under a float64 policy) of our variables: the inverse of
    `load_generator` / `load_discriminator`, for `generator_tensors(G)` or
    `discriminator_tensors(D)`."""
    state_dict = {}
    for tensor in tensors:
        value = tensor.variable.numpy()
        state_dict[tensor.key] = np.asarray(tensor.to_port(value), value.dtype)
    return state_dict


def _block_indices(state_dict: dict) -> list[int]:
    return sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")})


def _check_resolution(kind: str, table: dict, blocks: int, resolution: int, file: str) -> None:
    if resolution not in table:
        raise ConversionError(f"--resolution must be one of {sorted(table)}, got {resolution}")
    expected = len(table[resolution].block_multipliers)
    if blocks != expected:
        matching = [r for r, arch in table.items() if len(arch.block_multipliers) == blocks]
        hint = f"a {matching[0]} px {kind}" if matching else f"no {kind} resolution known here"
        raise ConversionError(
            f"{file} has {blocks} residual blocks ({hint}), but a {resolution} px {kind} has "
            f"{expected}: check --resolution"
        )


def generator_config(state_dict: dict, resolution: int, file: str) -> dict:
    """`Generator` arguments for the port's G state dict (`--G_shared --hier` layout)."""
    if is_deep(state_dict):
        return deep_generator_config(state_dict, resolution, file)
    blocks = _block_indices(state_dict)
    _check_resolution("generator", networks_biggan.G_ARCH, len(blocks), resolution, file)
    for key in (
        "shared.weight",
        "linear.weight",
        "output_layer.2.weight",
        "blocks.0.0.bn1.gain.weight",
    ):
        if key not in state_dict:
            raise ConversionError(
                f"{file}: tensor {key!r} is missing; the converter reads generators trained "
                "with --G_shared --hier (launch_BigGAN_bs256x8.sh)"
            )
    arch = networks_biggan.G_ARCH[resolution]
    num_classes, shared_dim = state_dict["shared.weight"].shape
    chunk = state_dict["linear.weight"].shape[1]
    condition = state_dict["blocks.0.0.bn1.gain.weight"].shape[1]
    if condition != shared_dim + chunk:
        raise ConversionError(
            f"{file}: the conditional BN input has {condition} features, not shared "
            f"embedding + z chunk = {shared_dim} + {chunk}: not a --hier generator"
        )
    return dict(
        resolution=resolution,
        ch=state_dict["output_layer.2.weight"].shape[1] // arch.block_multipliers[-1],
        num_classes=int(num_classes),
        dim_z=int(chunk) * (len(blocks) + 1),
        shared_dim=int(shared_dim),
        hierarchical_z=True,
        attention=[8 * 2**i for i in blocks if f"blocks.{i}.1.gamma" in state_dict],
    )


def _discriminator_attention(sizes, with_attention: list[int], unit: str, file: str) -> list[int]:
    """The resolutions of D's attention blocks, which the port runs after the `unit`s (blocks
    or stages) `with_attention`, whose outputs have the sizes `sizes`.

    Raises:
      ConversionError: a placement tf_biggan cannot build: it runs one attention block per
        resolution, after the first block (stage) that reaches it.
    """
    attention = sorted({int(sizes[i]) for i in with_attention})
    ours = sorted(int(np.argmax(sizes == size)) for size in attention)
    if ours != with_attention:
        raise ConversionError(
            f"{file}: attention after {unit} {with_attention}; tf_biggan places one per "
            f"resolution, after {unit} {ours}"
        )
    return attention


def discriminator_config(state_dict: dict, resolution: int, file: str) -> dict:
    """`Discriminator` arguments for the port's D state dict."""
    if is_deep(state_dict):
        return deep_discriminator_config(state_dict, resolution, file)
    blocks = _block_indices(state_dict)
    _check_resolution("discriminator", networks_biggan.D_ARCH, len(blocks), resolution, file)
    arch = networks_biggan.D_ARCH[resolution]
    sizes = resolution // np.cumprod([2 if down else 1 for down in arch.downsample])
    with_attention = [i for i in blocks if f"blocks.{i}.1.gamma" in state_dict]
    attention = _discriminator_attention(sizes, with_attention, "blocks", file)
    return dict(
        resolution=resolution,
        ch=state_dict["blocks.0.0.conv1.weight"].shape[0] // arch.block_multipliers[0],
        num_classes=int(state_dict["embed.weight"].shape[0]),
        attention=attention,
    )


def _deep_depth(kind: str, table: dict, count: int, resolution: int, file: str) -> int:
    """Blocks per resolution of a BigGAN-deep G with `count` blocks at `resolution`."""
    if resolution not in table:
        raise ConversionError(f"--resolution must be one of {sorted(table)}, got {resolution}")
    stages = len(table[resolution].stages)
    if count % stages:
        matching = [f"{r} px" for r, arch in table.items() if count % len(arch.stages) == 0]
        raise ConversionError(
            f"{file} has {count} BigGAN-deep {kind} blocks, not a multiple of the "
            f"{stages} stages of a {resolution} px {kind} (that count fits "
            f"{', '.join(matching) or 'no resolution known here'}): check --resolution"
        )
    return count // stages


def _check_deep_widths(specs, prefixes, state_dict, resolution: int, file: str) -> None:
    """Raises unless each block's conv1 input and conv4 output widths are the table's."""
    for (cin, cout, _, _), prefix in zip(specs, prefixes, strict=True):
        key_in, key_out = f"{prefix}.conv1.weight", f"{prefix}.conv4.weight"
        if key_in not in state_dict or key_out not in state_dict:
            raise ConversionError(f"{file}: tensor {key_in!r} or {key_out!r} is missing")
        found = (state_dict[key_in].shape[1], state_dict[key_out].shape[0])
        if found != (cin, cout):
            raise ConversionError(
                f"{file}: {prefix} maps {found[0]} to {found[1]} channels, but block {prefix} "
                f"of a {resolution} px BigGAN-deep network maps {cin} to {cout}: check "
                "--resolution"
            )


def deep_generator_config(state_dict: dict, resolution: int, file: str) -> dict:
    """`Generator` arguments for the port's BigGAN-deep G state dict (`--G_shared --hier`)."""
    table = networks_deep.DEEP_G_ARCH
    blocks = _block_indices(state_dict)
    depth = _deep_depth("generator", table, len(blocks), resolution, file)
    for key in ("shared.weight", "linear.weight", "output_layer.2.weight"):
        if key not in state_dict:
            raise ConversionError(
                f"{file}: tensor {key!r} is missing; the converter reads BigGAN-deep "
                "generators trained with --G_shared --hier (launch_BigGAN_deep.sh)"
            )
    arch = table[resolution]
    num_classes, shared_dim = state_dict["shared.weight"].shape
    dim_z = state_dict["linear.weight"].shape[1] - shared_dim
    ch = state_dict["output_layer.2.weight"].shape[1] // arch.stages[-1][1]
    specs = networks_deep.generator_blocks(arch, ch, depth)
    _check_deep_widths(specs, [f"blocks.{i}.0" for i in blocks], state_dict, resolution, file)
    attention = []
    for i in blocks:
        if f"blocks.{i}.1.gamma" in state_dict:
            if not specs[i][3]:
                raise ConversionError(
                    f"{file}: attention after block {i}, which does not end a stage; "
                    "tf_biggan places attention after a stage's last block"
                )
            attention.append(networks.BOTTOM_WIDTH * 2 ** (i // depth + 1))
    return dict(
        resolution=resolution,
        ch=int(ch),
        num_classes=int(num_classes),
        dim_z=int(dim_z),
        shared_dim=int(shared_dim),
        hierarchical_z=True,
        attention=attention,
        architecture="deep",
        depth=depth,
    )


def deep_discriminator_config(state_dict: dict, resolution: int, file: str) -> dict:
    """`Discriminator` arguments for the port's BigGAN-deep D state dict."""
    table = networks_deep.DEEP_D_ARCH
    if resolution not in table:
        raise ConversionError(f"--resolution must be one of {sorted(table)}, got {resolution}")
    stages = _block_indices(state_dict)
    if len(stages) != len(table[resolution].stages):
        matching = [r for r, arch in table.items() if len(arch.stages) == len(stages)]
        hint = f"a {matching[0]} px D" if matching else "no D resolution known here"
        raise ConversionError(
            f"{file} has {len(stages)} BigGAN-deep stages ({hint}), but a {resolution} px "
            f"discriminator has {len(table[resolution].stages)}: check --resolution"
        )
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("blocks.0.")})
    if f"blocks.0.{depth - 1}.gamma" in state_dict:
        depth -= 1  # the last index of stage 0 is its attention block
    for key in ("input_conv.weight", "embed.weight"):
        if key not in state_dict:
            raise ConversionError(f"{file}: tensor {key!r} is missing (a BigGAN-deep D has it)")
    arch = table[resolution]
    ch = state_dict["input_conv.weight"].shape[0] // arch.stages[0][0]
    specs = networks_deep.discriminator_blocks(arch, ch, depth)
    prefixes = [f"blocks.{s}.{d}" for s in stages for d in range(depth)]
    _check_deep_widths(specs, prefixes, state_dict, resolution, file)
    sizes = resolution // np.cumprod([2 if down else 1 for down in arch.resample])
    with_attention = [s for s in stages if f"blocks.{s}.{depth}.gamma" in state_dict]
    attention = _discriminator_attention(sizes, with_attention, "stages", file)
    return dict(
        resolution=resolution,
        ch=int(ch),
        num_classes=int(state_dict["embed.weight"].shape[0]),
        attention=attention,
        architecture="deep",
        depth=depth,
    )


def _read_all(checkpoint: str) -> dict[str, tuple[str, dict]]:
    """`{role: (file, state dict)}` for the networks found at `checkpoint`."""
    networks_found = {}
    for role, file in find_files(checkpoint).items():
        state_dict = read_state_dict(file)
        kind = kind_of(state_dict)
        if not kind:
            raise ConversionError(
                f"{file} is neither a BigGAN-PyTorch generator nor discriminator (no "
                "'shared.weight', 'output_layer.2.weight' or 'embed.weight')"
            )
        expected = "discriminator" if role == "discriminator" else "generator"
        if role and kind != expected:
            raise ConversionError(f"{file} should hold a {expected} but holds a {kind}")
        networks_found[role or kind] = (file, state_dict)
    if "generator" not in networks_found and "ema_generator" not in networks_found:
        files = ", ".join(file for file, _ in networks_found.values())
        raise ConversionError(
            f"{files}: a discriminator only; conversion needs a generator too "
            f"({FILES['ema_generator']} or {FILES['generator']}, or the run folder)"
        )
    return networks_found


def _built_generator(file: str, state_dict: dict, resolution: int, name: str):
    generator = networks.Generator(**generator_config(state_dict, resolution, file), name=name)
    generator.build_by_call()
    load_generator(generator, state_dict, file)
    return generator


def _architecture(network) -> dict:
    return {k: v for k, v in network.get_config().items() if k != "name"}


def convert(checkpoint: str, resolution: int) -> Converted:
    """Converts the port's checkpoint files at `checkpoint` (a run folder or one file).

    The EMA generator comes from `G_ema.pth`, or from `G.pth` when there is none; the raw
    generator from `G.pth` next to a `G_ema.pth` (otherwise the model_dir gets the EMA
    weights for it); the discriminator from `D.pth` when present. A 1000-class model gets
    ImageNet's class names.

    Raises:
      FileNotFoundError, ConversionError, ImportError: see `find_files`, `read_state_dict`
        and the `_Mapper` checks; every message names the file and what is wrong.
    """
    found = _read_all(checkpoint)
    ema_role = "ema_generator" if "ema_generator" in found else "generator"
    ema = _built_generator(*found[ema_role], resolution, "ema_generator")
    generator = None
    if "generator" in found and ema_role != "generator":
        generator = _built_generator(*found["generator"], resolution, "generator")
        if _architecture(generator) != _architecture(ema):
            raise ConversionError(
                f"{found['generator'][0]} and {found[ema_role][0]} hold generators of "
                f"different architectures: {_architecture(generator)} vs {_architecture(ema)}"
            )
    discriminator = None
    if "discriminator" in found:
        file, state_dict = found["discriminator"]
        config = discriminator_config(state_dict, resolution, file)
        discriminator = networks.Discriminator(**config, name="discriminator")
        discriminator.build_by_call()
        load_discriminator(discriminator, state_dict, file)
        networks.check_same_task(ema, discriminator)
    used = ", ".join(
        f"{os.path.basename(file)} ({role})" for role, (file, _) in sorted(found.items())
    )
    return Converted(
        ema_generator=ema,
        source=f"BigGAN-PyTorch {os.path.abspath(checkpoint)}: {used}",
        generator=generator,
        discriminator=discriminator,
        classes=imagenet.classes_for(ema.num_classes),
    )
