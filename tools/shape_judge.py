"""The quickstart's judge: a shape classifier that cannot use colour (docs/quality.md).

`gin_configs/quickstart.gin` trains on procedural shapes, one class per (shape, colour) pair
(red circle, green square, blue triangle, yellow cross, magenta ring). A generator that paints
the right colour in a blob would fool a colour-sensitive classifier, so the judge sees no
colour: every image is reduced to each pixel's distance from the image's median colour,
scaled to a maximum of 1 (`colour_blind`), and the classifier (`tools/fmnist_classifier.py`'s,
sized for `[32, 32, 1]` and the 5 shapes) learns the shapes from renders of
`tf_biggan.data.synthetic_source(random_colours=True)`: random colour, position and size,
each render softened by a random blur (up to `--max_blur` px) and noise (up to `--max_noise`)
as G's images are soft (`degrade`).

    python tools/shape_judge.py train --output=/tmp/shape_judge
    python tools/shape_judge.py score --judge=/tmp/shape_judge --model_dir=runs/quickstart \\
        --samples=1000

`train` renders `--num_shapes` shapes for training and `--held_out` more (other indices of the
same set) to test on, trains, saves `judge.keras` and `judge.json` (the judge's class names,
its resolution, its held-out accuracy on softened and on crisp renders and its settings) in
`--output`, and prints one JSON line with them. `score` loads the run's EMA generator with
`tf_biggan.load` (a model_dir or an export), draws `--samples` images spread equally over the
run's classes (no truncation), maps each class to the judge's shape by name ("red circle" is a
"circle") and prints one JSON line with `shape_accuracy` (the fraction of samples judged to be
their class's shape) and `per_class` (class name → that fraction).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import sys
import time

import numpy as np
from absl import app, flags

COMMANDS = ("train", "score")
# The batch norms' moving averages start at variance 1. Keras' momentum 0.99 still keeps
# 0.99^470 ≈ 1% of that start after 3 epochs of 20,000 shapes, while the first convs' outputs
# on these mostly-zero maps have variances of order 0.01: the moving variances came out 1.4-4×
# too large, and held-out accuracy was 75% in inference against 100% with batch statistics.
# At 0.9 the start is forgotten within 50 steps.
BN_MOMENTUM = 0.9
# Generated images are softer than the renders: G draws edges a pixel or so wide and a grainy
# background, where a render is a hard-edged mask on one colour. A judge trained on crisp
# renders alone reads edge sharpness, not shape: blurred by a Gaussian of 0.8 px, its held-out
# circles, triangles and crosses all came out as squares and its rings as squares or crosses
# (0 of 400 of each right), and G's plain rings as crosses. Trained on renders softened as
# below, it is as right on crisp renders and stays right up to 1.5 px of blur
# (docs/quality.md).
MAX_BLUR = 1.0
MAX_NOISE = 0.05
MODEL_FILE = "judge.keras"
INFO_FILE = "judge.json"


@functools.cache
def _fmnist_classifier():
    """tools/fmnist_classifier.py (tools/ is not a package): its classifier and training."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fmnist_classifier.py")
    spec = importlib.util.spec_from_file_location("fmnist_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def colour_blind(images, batch_size: int = 1000) -> np.ndarray:
    """Each pixel's distance from the image's median colour, scaled to a maximum of 1.

    The median colour is the per-channel median over the image's pixels (for an even number
    of pixels the mean of the two middle values, as `np.median`); the distance is Euclidean
    in RGB. A shift or a positive scaling of all values leaves the result as it is (up to
    rounding), so uint8 images and images in [-1, 1] give the same maps.

    Args:
      images: `[N, H, W, 3]`, uint8 or float.
      batch_size: images computed at a time (bounds the memory of the sort).

    Returns:
      float32 numpy `[N, H, W, 1]` in [0, 1]; all zeros for an image of one colour.
    """
    import tensorflow as tf

    def maps(batch):
        batch = tf.cast(batch, tf.float32)
        _, height, width, channels = batch.shape
        pixels = height * width
        ordered = tf.sort(tf.reshape(batch, [-1, pixels, channels]), axis=1)
        median = (ordered[:, (pixels - 1) // 2] + ordered[:, pixels // 2]) / 2.0  # [B, 3]
        distance = tf.norm(batch - median[:, None, None, :], axis=-1, keepdims=True)
        peak = tf.reduce_max(distance, axis=[1, 2, 3], keepdims=True)
        return tf.math.divide_no_nan(distance, peak).numpy()

    return np.concatenate(
        [maps(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def render_shapes(count: int, resolution: int = 32, seed: int = 0):
    """The first `count` shapes of `synthetic_source(random_colours=True)` with `seed`.

    Returns:
      `(images uint8 [count, R, R, 3], labels int64 [count], class_names)`, label k being
      the shape `class_names[k]`.
    """
    from tf_biggan import data

    shapes = len(data.SYNTHETIC_SHAPES)
    source = data.synthetic_source(
        data.SourceRequest(resolution, shapes, seed=seed),
        num_examples=count,
        random_colours=True,
    )
    images, labels = [], []
    for image, label in source.dataset.batch(1000):
        images.append(image.numpy())
        labels.append(label.numpy())
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), source.class_names


def degrade(images, max_blur: float, max_noise: float, seed: int = 0) -> np.ndarray:
    """Softens renders as G's images are soft: a random blur, then random noise, per image.

    Image i is blurred by a Gaussian of standard deviation `blur_i` px over its rows and
    columns (`scipy.ndimage.gaussian_filter`, edges reflected), gets independent Gaussian
    noise of standard deviation `255 · noise_i` on every value, and is rounded back to 8 bits.
    `blur_i ~ U(0, max_blur)` and `noise_i ~ U(0, max_noise)` are drawn from
    `np.random.default_rng(seed)` (all blurs first, then all noise levels, then the noise in
    image order), so the result is fixed by the seed.

    Args:
      images: uint8 `[N, H, W, C]`.
      max_blur: largest blur, in pixels (0: none).
      max_noise: largest noise, as a fraction of the 8-bit range (0: none).
      seed: the draws' seed.

    Returns:
      uint8 `[N, H, W, C]`; the images themselves when both maxima are 0.

    Raises:
      ValueError: a maximum is negative or not finite.
    """
    from scipy import ndimage

    for name, value in (("max_blur", max_blur), ("max_noise", max_noise)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    images = np.asarray(images)
    if max_blur == 0 and max_noise == 0:
        return images
    rng = np.random.default_rng(seed)
    blurs = rng.uniform(0.0, max_blur, len(images))
    noises = rng.uniform(0.0, max_noise, len(images)) * 255.0
    out = np.empty_like(images)
    for i, image in enumerate(images):
        soft = image.astype(np.float32)
        if blurs[i] > 0:
            soft = ndimage.gaussian_filter(soft, (blurs[i], blurs[i], 0), mode="reflect")
        soft += noises[i] * rng.standard_normal(image.shape, dtype=np.float32)
        out[i] = np.clip(np.round(soft), 0, 255)
    return out


def predict(judge, images, batch_size: int = 500) -> np.ndarray:
    """The judge's class index of each image (uint8 or float `[N, R, R, 3]`): int64 `[N]`."""
    logits = judge.predict(colour_blind(images), batch_size=batch_size, verbose=0)
    return np.argmax(logits, axis=1)


def train_judge(
    num_shapes: int = 20_000,
    held_out: int = 2_000,
    resolution: int = 32,
    epochs: int = 3,
    batch_size: int = 128,
    width: int = 16,
    seed: int = 0,
    verbose: int = 1,
    max_blur: float = MAX_BLUR,
    max_noise: float = MAX_NOISE,
):
    """Renders shapes, softens them (`degrade`), trains the classifier on their colour-blind
    maps and tests it.

    The held-out shapes are the set's next `held_out` examples after the training ones,
    softened in the same `degrade` call (each its own draws, from the same distributions).

    Returns:
      `(judge, info)`: the Keras model (`[B, R, R, 1]` maps → logits `[B, 5]`) and a dict of
      `class_names`, `resolution`, `held_out_accuracy` (on the softened held-out shapes),
      `held_out_accuracy_crisp` (on the same shapes as rendered) and the settings.
    """
    classifier = _fmnist_classifier()
    images, labels, class_names = render_shapes(num_shapes + held_out, resolution, seed)
    maps = colour_blind(degrade(images, max_blur, max_noise, seed))
    judge = classifier.train_classifier(
        maps[:num_shapes],
        labels[:num_shapes],
        epochs,
        batch_size,
        width,
        seed,
        verbose,
        num_classes=len(class_names),
        name="shape_judge",
        bn_momentum=BN_MOMENTUM,
    )
    held_out_labels = labels[num_shapes:]
    info = {
        "class_names": list(class_names),
        "resolution": resolution,
        "held_out_accuracy": classifier.accuracy(judge, maps[num_shapes:], held_out_labels),
        "held_out_accuracy_crisp": classifier.accuracy(
            judge, colour_blind(images[num_shapes:]), held_out_labels
        ),
        "num_shapes": num_shapes,
        "held_out": held_out,
        "epochs": epochs,
        "width": width,
        "max_blur": max_blur,
        "max_noise": max_noise,
        "seed": seed,
    }
    return judge, info


def save_judge(judge, info: dict, output: str) -> None:
    """Writes `output/judge.keras` and `output/judge.json`."""
    os.makedirs(output, exist_ok=True)
    judge.save(os.path.join(output, MODEL_FILE))
    with open(os.path.join(output, INFO_FILE), "w") as f:
        json.dump(info, f, indent=1)


def load_judge(judge_dir: str):
    """The judge saved by `save_judge`: `(model, info)`."""
    import keras

    with open(os.path.join(judge_dir, INFO_FILE)) as f:
        info = json.load(f)
    return keras.models.load_model(os.path.join(judge_dir, MODEL_FILE), compile=False), info


def run_class_names(gen, model_dir: str) -> list[str]:
    """The run's class names: the loaded generator's, else the model_dir's `classes.json`.

    Training writes both from its data source; a model_dir without names in its
    `model_config.json` may still hold `classes.json`: training's (class name → index) or
    a converter's (`{"classes": [{"index", "name"}, ...]}`, empty when the source has no
    names).

    Raises:
      ValueError: the model_dir names no classes (named, with what to do).
    """
    if gen.class_names:
        return list(gen.class_names)
    path = os.path.join(model_dir, "classes.json")
    indices = {}
    if os.path.exists(path):
        with open(path) as f:
            indices = json.load(f)
        if isinstance(indices.get("classes"), list):
            indices = {entry["name"]: entry["index"] for entry in indices["classes"]}
    if not indices:
        raise ValueError(
            f"{model_dir} names no classes (no class names, no classes.json entries); the "
            "judge reads the shape from each class's name, e.g. 'red circle'"
        )
    return sorted(indices, key=indices.get)


def judge_class_of(class_name: str, judge_classes) -> int:
    """The judge's index of the shape a run's class draws: "red circle" → that of "circle".

    Raises:
      ValueError: the class name's last word is not one of `judge_classes`.
    """
    shape = class_name.split()[-1] if class_name.split() else class_name
    if shape not in judge_classes:
        raise ValueError(
            f"class {class_name!r} names none of the judge's shapes ({', '.join(judge_classes)})"
        )
    return list(judge_classes).index(shape)


def score(judge_dir: str, model_dir: str, samples: int = 1000, seed: int = 0) -> dict:
    """Judges `samples` images of the run's EMA generator, spread equally over its classes.

    Class k gets `samples // K` images (one more for the first `samples % K` classes), drawn
    by `tf_biggan.load(model_dir).sample(classes=[k], n=..., seed=seed)` without truncation.

    Returns:
      `{"shape_accuracy", "per_class": {class name: accuracy}, "samples", "step", ...}`.
    """
    import keras

    import tf_biggan

    judge, info = load_judge(judge_dir)
    gen = tf_biggan.load(model_dir)
    if gen.resolution != info["resolution"]:
        raise ValueError(
            f"the run draws {gen.resolution} px images, the judge knows {info['resolution']} "
            f"px shapes: train one with --resolution={gen.resolution}"
        )
    names = run_class_names(gen, model_dir)
    targets = [judge_class_of(name, info["class_names"]) for name in names]
    if samples < len(names):
        raise ValueError(f"--samples={samples} leaves some of the {len(names)} classes out")
    progress = keras.utils.Progbar(samples, unit_name="sample")
    per_class, correct = {}, 0
    for k, (name, target) in enumerate(zip(names, targets, strict=True)):
        n = samples // len(names) + (k < samples % len(names))
        hits = int(np.sum(predict(judge, gen.sample(classes=[k], n=n, seed=seed)) == target))
        per_class[name] = hits / n
        correct += hits
        progress.add(n)
    return {
        "shape_accuracy": correct / samples,
        "per_class": per_class,
        "samples": samples,
        "step": gen.step,
        "model_dir": model_dir,
        "judge": judge_dir,
    }


def main(argv):
    from tf_biggan import metrics, paths

    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"give one command, {' or '.join(COMMANDS)}; got {argv[1:]}")
    f = flags.FLAGS
    # Keras' progress goes to stderr: stdout holds the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        if argv[1] == "train":
            if not f.output:
                raise app.UsageError("train needs --output")
            start = time.perf_counter()
            judge, info = train_judge(
                f.num_shapes,
                f.held_out,
                f.resolution,
                f.epochs,
                f.batch_size,
                f.width,
                f.seed,
                max_blur=f.max_blur,
                max_noise=f.max_noise,
            )
            info["train_seconds"] = round(time.perf_counter() - start, 1)
            save_judge(judge, info, paths.expand(f.output))
            record = {"output": paths.expand(f.output), **info}
        else:
            if not f.judge or not f.model_dir:
                raise app.UsageError("score needs --judge and --model_dir")
            record = score(paths.expand(f.judge), paths.expand(f.model_dir), f.samples, f.seed)
    print(metrics.json_line(record), flush=True)


def _define_flags():
    flags.DEFINE_string("output", None, "train: folder to save the judge in.")
    flags.DEFINE_integer("num_shapes", 20_000, "train: rendered shapes to train on.")
    flags.DEFINE_integer("held_out", 2_000, "train: further shapes to measure accuracy on.")
    flags.DEFINE_integer("resolution", 32, "train: side of the shapes (the runs' resolution).")
    flags.DEFINE_integer("epochs", 3, "train: training epochs.")
    flags.DEFINE_integer("batch_size", 128, "train: batch size.")
    flags.DEFINE_integer("width", 16, "train: channels of the first conv stage.")
    flags.DEFINE_float("max_blur", MAX_BLUR, "train: largest Gaussian blur of a shape, in px.")
    flags.DEFINE_float(
        "max_noise", MAX_NOISE, "train: largest noise on a shape, a fraction of 255."
    )
    flags.DEFINE_integer(
        "seed", 0, "train: rendering, softening and initialisation; score: seed of z."
    )
    flags.DEFINE_string("judge", None, "score: the folder `train` wrote.")
    flags.DEFINE_string("model_dir", None, "score: the run (a model_dir or an export).")
    flags.DEFINE_integer("samples", 1000, "score: images drawn, spread equally over the classes.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
