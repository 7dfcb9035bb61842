"""DeepMind's BigGAN-deep TF-Hub generators (`biggan-deep-128/256/512`, version 1) → tf_biggan.

    python -m tf_biggan.convert --from=tfhub --module_dir=biggan-deep-128_1 --model_dir=OUT

`--from=tfhub` tells the two module families apart by their variables (`is_deep_module`: a
BigGAN-deep block has a fourth conv, `conv3`) and logs which it found. The weights come from
the module's checkpoint `variables/variables` (`tf.train.load_checkpoint`), the EMA values
(`.../ema_0.9999`; raw values beside them, where stored, are set aside). The 51
truncation-indexed batch-norm statistics are not variables of these modules but constants
of their graph: they are read from `saved_model.pb` with the protobuf classes, without
running any TF1 graph (`read_tables`).

The module's variables and where they go (`B` = `GBlock`, `GBlock_1`, ...; C = channels;
the condition is 256 = z 128 + embedding 128 wide at full size):

| module variable | tf_biggan (`Generator(architecture="deep", depth=2)`) |
|---|---|
| `linear/w` `[K, 128]` | `shared_embedding.kernel` |
| `Generator/GenZ/G_linear/{w,b,u0}` `[256, 4*4*16ch]` | `linear`: rows reordered (output read as `[4, 4, C]`, NHWC, in both) |
| `Generator/B/conv0..conv3/{w,b,u0}` (1x1, 3x3, 3x3, 1x1) | `block<i>.conv1..conv4` (HWIO kernels in both) |
| `Generator/B/BatchNorm{,_1,_2,_3}/{scale,offset}/{w,u0}` `[256, C]` | `block<i>.bn1..bn4.gain`, `.bias`: rows reordered |
| graph tables `stack_{5j+1}`, `stack_{5j+3}` `[51, C]` | BN j's `standing_mean`, `standing_variance` (j below) |
| `Generator/attention/{theta,phi,g,o_conv}/{w,u0}`, `gamma` | `attention64` |
| `Generator/BatchNorm/{scale,offset}` `[ch]` | `output_bn.gamma`, `.beta`, times c (the σ fold below) |
| `Generator/conv_to_rgb/{w,b}` `[3, 3, ch, ch]` | `output_conv`: the first 3 output channels |

Layouts:
- Condition: the module concatenates `[z, embedding]`, tf_biggan `[embedding, z]`; the rows
  of the first linear layer's kernel and of every conditional BN's gain (`scale`) and bias
  (`offset`) kernels are reordered accordingly. Gains are `1 + scale(c)` in both.
- Blocks: 2 per resolution; the first keeps width and size, the second upsamples and takes
  the stage's output width (the skip keeps the input's first channels), as in
  `networks_deep.DEEP_G_ARCH` (128 px: 16,16,8,4,2,1 x ch; 256 px: 16,16,8,8,4,2,1;
  512 px: 16,16,8,8,4,2,1,1), with attention at 64 px, after the fourth stage, at every
  resolution. `gin_configs/imagenet{128,256,512}_deep.gin` build the same generators.
- SN: `u0` is the power-iteration vector in the output space, tf_biggan's `u`; each `sigma`
  is set to the estimate an inference call computes from it. `sample` and `export` divide
  every kernel by its exact top singular value.
- Output: the module's RGB conv has `ch` outputs and the module keeps the first 3; its
  spectral norm is that of the whole `[3*3*ch, ch]` kernel. tf_biggan's conv has the 3 used
  columns `W3`, normalised by their own σ. Since the conv follows `ReLU(BN(x))` and
  `ReLU(c a) = c ReLU(a)` for c > 0, the factor `c = σ(W3) / σ(W)` (exact singular values) is
  folded into the output BN's gamma and beta: then `conv(ReLU(c BN(x)), W3 / σ(W3))` is
  `conv(ReLU(BN(x)), W / σ(W))[..., :3]` exactly. The conv's `u` is set to `W3`'s top
  singular vector, so its inference estimate is σ(W3) too; the module's `u0` (of `W`) and
  the `ch - 3` unused bias entries are set aside.
- BN: ε 1e-4 (`Generator.bn_epsilon`); no moving statistics in the module: tf_biggan's
  moving statistics (used for a truncation outside (0, 1]) are set to the table's t = 1 entry.

Truncation-indexed statistics. The modules hold, for each of their BN layers j (in call
order: block 0's four, block 1's four, ..., then the output BN), two Pack ("stack") nodes of
51 constant rows `[C]`: the means at `stack_{5j+1}` and the variances at `stack_{5j+3}`
(pytorch-pretrained-BigGAN's converter reads the same nodes, as
`module_apply_default/stack_N`, in this order; the graph's other `stack_*` nodes are not
tables and are not read). A Pack's inputs are followed through Identity nodes to their Const
nodes (`tf.make_ndarray`); a Const `stack_N` matrix is read as it is. Row k holds truncation
k / 50 (0 to 1 in steps of 0.02). The rows become each BN layer's `standing_mean` and
`standing_variance` (`Generator(num_standing_stats=51)`).

Which statistics a truncation t uses: tf_biggan takes row k at t = k / 50 and, in between,
interpolates linearly between the two rows around t, `(1 - f) row[k] + f row[k + 1]` with
`f = 50 t - k` (`layers.SyncBatchNorm.standing_statistics`), for t in (0, 1]; other values
use the moving statistics. pytorch-pretrained-BigGAN, the one public re-implementation of
the modules' graph, takes the same row at the grid values (up to float rounding: its
`math.modf(0.3 / 0.02)` lands on row 14, not 15) but weights the two rows the other way
round in between (`f row[k] + (1 - f) row[k + 1]`), which jumps at every row; tf_biggan
does not follow that.

Every variable of the module and every table of its graph is used or set aside by name, and
every variable of the generator is set; anything else is an error that names it.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from tf_biggan import networks, networks_deep
from tf_biggan.convert import imagenet, tfhub
from tf_biggan.convert.model_dir import Converted

EMA = "ema_0.9999"
DEPTH = 2
RESOLUTION_BY_BLOCKS = {10: 128, 12: 256, 14: 512}
INPUT_MULTIPLIER = 16  # G's first stage is 16 ch wide at 128-512 px (networks_deep.DEEP_G_ARCH).
# The tables are top-level nodes of the module's graph (`module_apply_default/stack_N` once
# TF1 Hub has applied the module in a scope); stacks inside layer scopes are not tables.
_STACK = re.compile(r"stack(?:_(\d+))?")
_BLOCK = re.compile(r"Generator/(GBlock(?:_\d+)?)/")
# The deep modules' variable names (without the EMA suffix): anything else is refused before
# the generator is built (which takes a while at full size); the mapping then checks each
# name's use one by one.
_NAMES = re.compile(
    r"linear/w"
    r"|Generator/GenZ/G_linear/(w|b|u0|u1)"
    r"|Generator/GBlock(_\d+)?/conv[0-3]/(w|b|u0|u1)"
    r"|Generator/GBlock(_\d+)?/BatchNorm(_[1-3])?/(scale|offset)/(w|u0|u1)"
    r"|Generator/attention/((theta|phi|g|o_conv)/(w|u0|u1)|gamma)"
    r"|Generator/BatchNorm/(scale|offset)"
    r"|Generator/conv_to_rgb/(w|b|u0|u1)"
)


def is_deep_module(module_dir: str) -> bool:
    """Whether the module in `module_dir` is a BigGAN-deep one (its blocks have a `conv3`).

    Raises:
      FileNotFoundError: no folder, or no `variables/variables` checkpoint in it.
    """
    reader = tfhub.ModuleReader(module_dir, EMA)
    return any(re.match(r"Generator/GBlock(_\d+)?/conv3/", name) for name in reader.shapes)


def _tensor_of(node, nodes) -> np.ndarray | None:
    """The constant value of `node` (a Const, an Identity of one, or a Pack of them), or
    None when it is not a constant."""
    if node.op == "Const":
        return tf.make_ndarray(node.attr["value"].tensor)
    if node.op == "Identity":
        source = nodes.get(node.input[0].split(":")[0].lstrip("^"))
        return None if source is None else _tensor_of(source, nodes)
    if node.op == "Pack":
        parts = []
        for name in node.input:
            if name.startswith("^"):
                continue  # a control dependency, not a value
            source = nodes.get(name.split(":")[0])
            value = None if source is None else _tensor_of(source, nodes)
            if value is None:
                return None
            parts.append(value)
        return np.stack(parts, axis=node.attr["axis"].i) if parts else None
    return None


def read_tables(module_dir: str) -> dict[int, tuple[str, np.ndarray]]:
    """The truncation tables in the module's graph: `N -> (node name, float32 [T, C])` for
    every top-level `stack_N` node (`stack` is N = 0) whose value is a constant matrix.

    Raises:
      FileNotFoundError: no `saved_model.pb` in `module_dir`.
      ValueError: the graph holds no such table, or two nodes share a number.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(module_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: the BigGAN-deep modules keep their truncation-indexed batch-norm "
            "statistics in the graph (download the whole module, not only its variables)"
        )
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    # A TF1 Hub module stores one graph per tag set; its default graph has no tags.
    graphs = sorted(saved_model.meta_graphs, key=lambda meta: len(meta.meta_info_def.tags))
    for meta in graphs:
        nodes = {node.name: node for node in meta.graph_def.node}
        tables = {}
        for node in meta.graph_def.node:
            match = _STACK.fullmatch(node.name)
            if not match or node.op not in ("Pack", "Const"):
                continue
            value = _tensor_of(node, nodes)
            if value is None or value.ndim != 2:
                continue
            number = int(match.group(1) or 0)
            if number in tables:
                raise ValueError(
                    f"{path}: two tables are numbered {number} ({tables[number][0]}, {node.name})"
                )
            tables[number] = (node.name, value.astype(np.float32))
        if tables:
            return tables
    raise ValueError(
        f"{path} holds no truncation-indexed batch-norm statistics (Pack nodes `stack_N` of "
        "constant rows): it is not a BigGAN-deep module (biggan-deep-128/256/512, version 1)"
    )


def _bn_scope(index: int, num_blocks: int) -> str:
    """The module's scope of its BN layer `index` (4 per block in order, then the output BN)."""
    if index == 4 * num_blocks:
        return "Generator/BatchNorm"
    block, k = divmod(index, 4)
    return (
        "Generator/GBlock" + (f"_{block}" if block else "") + "/BatchNorm" + (f"_{k}" if k else "")
    )


class _Tables:
    """The graph's tables, checked against the generator's batch norms before it is built."""

    def __init__(self, module_dir: str):
        self.tables = read_tables(module_dir)
        lengths = {value.shape[0] for _, value in self.tables.values()}
        if len(lengths) != 1 or min(lengths) < 2:
            raise ValueError(
                f"the truncation tables of {module_dir} have {sorted(lengths)} rows; they must "
                "all have the same number, at least 2 (51 in DeepMind's modules)"
            )
        self.rows = lengths.pop()

    def check_numbers(self, num_blocks: int) -> None:
        """Every BN of `num_blocks` blocks and the output BN has its two tables, and no
        table is left over.

        Raises:
          KeyError: naming the first missing table and its BN.
          ValueError: naming the tables that belong to no BN.
        """
        expected = set()
        for index in range(4 * num_blocks + 1):
            scope = _bn_scope(index, num_blocks)
            for number, what in ((5 * index + 1, "means"), (5 * index + 3, "variances")):
                if number not in self.tables:
                    raise KeyError(
                        f"the module's graph has no table stack_{number} (the {what} of {scope})"
                    )
                expected.add(number)
        left = sorted(self.tables[n][0] for n in set(self.tables) - expected)
        if left:
            raise ValueError(
                f"{len(left)} truncation table(s) of the module's graph belong to no batch norm "
                "of the generator: " + ", ".join(left)
            )

    def table(self, number: int) -> np.ndarray:
        return self.tables[number][1]


def _check_names(reader: tfhub.ModuleReader) -> None:
    """Raises ValueError naming every variable that is no BigGAN-deep generator variable."""
    suffix = f"/{EMA}"
    unknown = sorted(
        name
        for name in reader.shapes
        if not _NAMES.fullmatch(name[: -len(suffix)] if name.endswith(suffix) else name)
    )
    if unknown:
        raise ValueError(
            f"{len(unknown)} variable(s) of {reader.path} have no place in a BigGAN-deep "
            "generator: " + ", ".join(unknown)
        )


def _settings(reader: tfhub.ModuleReader, rows: int) -> dict:
    """Generator constructor arguments read from the module's variable shapes."""
    blocks = {m.group(1) for name in reader.shapes if (m := _BLOCK.match(name))}
    if len(blocks) not in RESOLUTION_BY_BLOCKS:
        raise ValueError(
            f"{reader.path} has {len(blocks)} GBlock scopes; the biggan-deep modules at 128, "
            f"256 and 512 px have {sorted(RESOLUTION_BY_BLOCKS)}"
        )
    num_classes, shared_dim = reader.shape(f"linear/w/{EMA}")
    condition, linear_out = reader.shape(f"Generator/GenZ/G_linear/w/{EMA}")
    bottom = networks.BOTTOM_WIDTH**2 * INPUT_MULTIPLIER
    if linear_out % bottom or condition <= shared_dim:
        raise ValueError(
            f"Generator/GenZ/G_linear/w is [{condition}, {linear_out}]: not [dim_z + "
            f"{shared_dim}, 4*4*16*ch]"
        )
    return dict(
        resolution=RESOLUTION_BY_BLOCKS[len(blocks)],
        ch=linear_out // bottom,
        num_classes=num_classes,
        dim_z=condition - shared_dim,
        shared_dim=shared_dim,
        hierarchical_z=True,
        attention=None,
        bn_epsilon=tfhub.BN_EPSILON,
        num_standing_stats=rows,
        architecture="deep",
        depth=DEPTH,
        name="ema_generator",
    )


def _statistics(tables, targets, index, bn, scope) -> None:
    """BN `index`'s table (means `stack_{5 index + 1}`, variances `+ 3`); the moving
    statistics are its last row (t = 1)."""
    mean, variance = tables.table(5 * index + 1), tables.table(5 * index + 3)
    targets.set(bn.standing_mean, mean, f"stack_{5 * index + 1} ({scope} means)")
    targets.set(bn.standing_variance, variance, f"stack_{5 * index + 3} ({scope} variances)")
    targets.set(bn.moving_mean, mean[-1], f"stack_{5 * index + 1} ({scope}, t = 1)")
    targets.set(bn.moving_variance, variance[-1], f"stack_{5 * index + 3} ({scope}, t = 1)")


def _block(reader, tables, targets, index, block, dim_z) -> None:
    scope = "Generator/GBlock" + (f"_{index}" if index else "")
    for k in range(4):
        conv = getattr(block, f"conv{k + 1}")
        tfhub.sn_layer(reader, targets, f"{scope}/conv{k}", conv)
        bn_scope = f"{scope}/BatchNorm" + (f"_{k}" if k else "")
        cbn = getattr(block, f"bn{k + 1}")
        for source, layer in (("scale", cbn.gain), ("offset", cbn.bias)):
            tfhub.sn_layer(
                reader, targets, f"{bn_scope}/{source}", layer, False, tfhub.embedding_first(dim_z)
            )
        _statistics(tables, targets, 4 * index + k, cbn.batch_norm, bn_scope)


def _top_singular(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """The top singular value of `matrix` `[fan_in, out]` and its unit `[1, out]` vector."""
    _, singular_values, right = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    return float(singular_values[0]), right[:1]


def _output(reader, tables, targets, generator) -> None:
    """The output BN and RGB conv, with the σ of the module's full conv folded into the
    BN's gamma and beta (see the module docstring)."""
    scope = "Generator/conv_to_rgb"
    full = reader.take_ema(f"{scope}/w")  # [3, 3, ch, ch]; the module keeps outputs :3
    bias = reader.take_ema(f"{scope}/b")
    conv = generator.output_conv
    if full.ndim != 4 or full.shape[-1] < 3 or bias.shape != full.shape[-1:]:
        raise ValueError(f"{scope}: w {full.shape} and b {bias.shape} are not an RGB conv")
    used = full[..., :3]
    sigma_full, _ = _top_singular(full.reshape(-1, full.shape[-1]))
    sigma_used, u = _top_singular(used.reshape(-1, 3))
    if not sigma_used > 0:
        raise ValueError(f"{scope}/w/{EMA}: its first 3 output channels are all zero")
    factor = sigma_used / sigma_full
    targets.set(conv.kernel, used, f"{scope}/w/{EMA} [..., :3]")
    targets.set(conv.bias, bias[:3], f"{scope}/b/{EMA} [:3]")
    targets.set(conv.u, u, f"{scope} (top singular vector of w[..., :3])")
    targets.set(conv.sigma, sigma_used, f"{scope} (sigma of w[..., :3])")
    if f"{scope}/u0" in reader.shapes:  # the power-iteration vector of the whole kernel
        reader.set_aside.add(f"{scope}/u0")
    bn, bn_scope = generator.output_bn, "Generator/BatchNorm"
    gamma = reader.take_ema(f"{bn_scope}/scale") * factor
    beta = reader.take_ema(f"{bn_scope}/offset") * factor
    targets.set(bn.gamma, gamma, f"{bn_scope}/scale/{EMA} (times {factor:.6g})")
    targets.set(bn.beta, beta, f"{bn_scope}/offset/{EMA} (times {factor:.6g})")
    _statistics(tables, targets, 4 * len(generator.blocks), bn, bn_scope)


def load_generator(module_dir: str) -> networks.Generator:
    """The module's EMA generator as a built BigGAN-deep `networks.Generator` with its
    truncation-indexed statistics (see the module doc).

    Raises:
      FileNotFoundError: the folder, its checkpoint or its `saved_model.pb` is missing.
      KeyError: a variable or table the generator needs is missing (named).
      ValueError: a variable has the wrong shape, a variable or table is left over, or a
        target is not set.
    """
    reader = tfhub.ModuleReader(module_dir, EMA)
    _check_names(reader)
    tables = _Tables(module_dir)
    settings = _settings(reader, tables.rows)
    # Checked before the generator is built, which takes a while at full size.
    tables.check_numbers(DEPTH * len(networks_deep.DEEP_G_ARCH[settings["resolution"]].stages))
    generator = networks.Generator(**settings)
    generator.build_by_call()
    targets = tfhub.Targets(generator)
    targets.set(generator.shared_embedding.kernel, reader.take_ema("linear/w"), f"linear/w/{EMA}")
    dim_z = generator.dim_z
    tfhub.sn_layer(
        reader, targets, "Generator/GenZ/G_linear", generator.linear, True,
        tfhub.embedding_first(dim_z),
    )  # fmt: skip
    for index, block in enumerate(generator.blocks):
        _block(reader, tables, targets, index, block, dim_z)
    attention = list(generator.attention_blocks.values())
    if len(attention) != 1:
        raise ValueError(f"expected one attention block, the generator has {len(attention)}")
    tfhub.attention_layers(reader, targets, attention[0])
    _output(reader, tables, targets, generator)
    reader.check_all_read()
    targets.check_all_set()
    return generator


def convert(module_dir: str) -> Converted:
    """Converts the BigGAN-deep module in `module_dir`; returns the `Converted` for
    `write_model_dir`."""
    generator = load_generator(module_dir)
    logging.info(
        "%s: a BigGAN-deep module (biggan-deep-%d): ch %d, %d classes, z %d, %d truncation "
        "rows per batch norm",
        module_dir,
        generator.resolution,
        generator.ch,
        generator.num_classes,
        generator.dim_z,
        generator.num_standing_stats,
    )
    return Converted(
        ema_generator=generator,
        source=(
            f"DeepMind's BigGAN-deep TF-Hub module {os.path.abspath(module_dir)} (EMA generator)"
        ),
        classes=imagenet.classes_for(generator.num_classes),
    )
