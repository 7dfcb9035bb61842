"""Procedural class-conditional images: the synthetic source (`synthetic_source`).

Class k is a shape of `SYNTHETIC_SHAPES` in a colour of `SYNTHETIC_COLOURS`, drawn on the
fly from `(seed, index)`; it needs no files, so tests, benchmarks and the quickstart use it.
With `random_colours` the classes are the shapes alone, each drawn in a random colour (the
training set of `tools/shape_judge.py`, a shape classifier that must not use colour).
"""

from __future__ import annotations

import gin
import tensorflow as tf

from tf_biggan.data.source import GIN_MODULE, Source, SourceRequest

__all__ = ["SYNTHETIC_COLOURS", "SYNTHETIC_SHAPES", "synthetic_source"]

SYNTHETIC_SHAPES = ("circle", "square", "triangle", "cross", "ring")
SYNTHETIC_COLOURS = (
    ("red", (0.95, 0.15, 0.15)),
    ("green", (0.15, 0.85, 0.2)),
    ("blue", (0.2, 0.35, 1.0)),
    ("yellow", (0.95, 0.9, 0.15)),
    ("magenta", (0.9, 0.2, 0.9)),
    ("cyan", (0.15, 0.9, 0.95)),
    ("orange", (1.0, 0.55, 0.1)),
    ("white", (0.97, 0.97, 0.97)),
)


def _random_colour(seed, index):
    """A bright colour of example `index`: hue and saturation uniform, value in [0.6, 1].

    The value keeps every colour at least 0.2 above the background (at most 0.4 in each
    channel) in its largest channel, so no shape is invisible. Drawn from its own stream
    (the example's seed folded with 1), so the other draws are those of `random_colours=False`.
    """
    stream = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int64), index]), 1
    )
    hue, saturation, value = tf.unstack(tf.random.stateless_uniform([3], seed=stream))
    return tf.image.hsv_to_rgb(tf.stack([hue, saturation, 0.6 + 0.4 * value]))


def _render_shape(index, *, resolution, num_classes, seed, random_colours=False):
    """Draws one coloured shape; label = index mod num_classes.

    With `random_colours` the shape gets `_random_colour` instead of its class colour (with
    jitter); its position, size and background stay those of `random_colours=False`.
    """
    index = tf.cast(index, tf.int64)
    label = tf.cast(index % num_classes, tf.int32)
    shape_id = label % len(SYNTHETIC_SHAPES)
    colour_id = label % len(SYNTHETIC_COLOURS)
    rnd = tf.random.stateless_uniform([10], seed=tf.stack([tf.constant(seed, tf.int64), index]))
    centre_x = (rnd[0] - 0.5) * 0.6
    centre_y = (rnd[1] - 0.5) * 0.6
    radius = 0.4 + 0.25 * rnd[2]
    colours = tf.constant([c for _, c in SYNTHETIC_COLOURS], tf.float32)
    colour = tf.clip_by_value(tf.gather(colours, colour_id) + (rnd[3:6] - 0.5) * 0.15, 0.0, 1.0)
    if random_colours:
        colour = _random_colour(seed, index)
    background = 0.05 + 0.3 * rnd[6] + (rnd[7:10] - 0.5) * 0.1

    coords = (tf.range(resolution, dtype=tf.float32) + 0.5) / resolution * 2.0 - 1.0
    dy = coords[:, None] - centre_y  # [R, 1], y grows downwards
    dx = coords[None, :] - centre_x  # [1, R]
    ady, adx = tf.abs(dy), tf.abs(dx)
    dist = tf.sqrt(dx * dx + dy * dy)
    masks = tf.stack(
        [
            dist < radius,
            tf.maximum(adx, ady) < 0.8 * radius,
            (dy < 0.7 * radius) & (adx < 0.55 * (dy + radius)),
            ((adx < 0.28 * radius) & (ady < radius)) | ((ady < 0.28 * radius) & (adx < radius)),
            (dist < radius) & (dist > 0.6 * radius),
        ]
    )
    mask = tf.cast(tf.gather(masks, shape_id), tf.float32)[..., None]  # [R, R, 1]
    image = mask * colour + (1.0 - mask) * background
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    image.set_shape([resolution, resolution, 3])
    return image, label


@gin.configurable(module=GIN_MODULE)
def synthetic_source(
    request: SourceRequest,
    *,
    num_examples: int = 10_000,
    random_colours: bool = False,
) -> Source:
    """Procedural class-conditional images: one class per (shape, colour) pair.

    Class k has shape `SYNTHETIC_SHAPES[k % 5]` and colour `SYNTHETIC_COLOURS[k % 8]` (distinct
    pairs for k < 40, and the first classes differ in both shape and colour), drawn
    over a dark jittered background with random position, size and colour jitter. Images
    are generated on the fly at `resolution` from `(seed, index)`, so the set is fixed for a
    given seed; example i has label `i % num_classes`.

    Args:
      request: uses `resolution` (side of the generated images), `num_classes` (1..40, or
        1..5 with `random_colours`) and `seed` (generation seed); nothing can be corrupt,
        and `make_dataset` shards.
      num_examples: size of the set.
      random_colours: class k is the shape `SYNTHETIC_SHAPES[k]` alone, named by it
        ("circle", ...), each example in a random bright colour (hue and saturation
        uniform, HSV value in [0.6, 1]); example i is example i of `random_colours=False`
        (same seed) in another colour.

    Returns:
      A `Source`.
    """
    resolution, num_classes, seed = request.resolution, request.num_classes, request.seed
    if random_colours:
        max_classes = len(SYNTHETIC_SHAPES)
    else:
        max_classes = len(SYNTHETIC_SHAPES) * len(SYNTHETIC_COLOURS)
    if not 1 <= num_classes <= max_classes:
        raise ValueError(
            f"synthetic_source supports 1..{max_classes} classes"
            f"{' with random_colours' if random_colours else ''}, got num_classes={num_classes}"
        )
    if num_examples < 1:
        raise ValueError(f"synthetic_source needs num_examples >= 1, got {num_examples}")
    if random_colours:
        names = SYNTHETIC_SHAPES[:num_classes]
    else:
        names = tuple(
            f"{SYNTHETIC_COLOURS[k % len(SYNTHETIC_COLOURS)][0]} "
            f"{SYNTHETIC_SHAPES[k % len(SYNTHETIC_SHAPES)]}"
            for k in range(num_classes)
        )
    counts = {
        name: num_examples // num_classes + (1 if k < num_examples % num_classes else 0)
        for k, name in enumerate(names)
    }

    def decode(index):
        return _render_shape(
            index,
            resolution=resolution,
            num_classes=num_classes,
            seed=seed,
            random_colours=random_colours,
        )

    return Source(
        elements=tf.data.Dataset.range(num_examples),
        decode=decode,
        num_examples=num_examples,
        class_names=names,
        examples_per_class=counts,
    )
