"""tools/shape_judge.py: the quickstart's colour-blind shape judge, at a small size."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tiny_models
from scipy import ndimage
from tools_testlib import load_tool

from tf_biggan import data, model_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_CLASSES = ("red circle", "green square", "blue triangle")


@pytest.fixture(scope="module")
def tool():
    return load_tool("shape_judge")


@pytest.fixture(scope="module")
def judge(tool, tmp_path_factory):
    """A small judge trained by the CLI: 2,000 softened shapes, 2 epochs, width 8 (held-out
    accuracy 0.96-0.99 with seeds 0 and 1, 8 s): (folder, model, info)."""
    folder = str(tmp_path_factory.mktemp("judge"))
    completed = subprocess.run(
        [sys.executable, "tools/shape_judge.py", "train", f"--output={folder}",
         "--num_shapes=2000", "--held_out=500", "--epochs=2", "--batch_size=32", "--width=8"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    record = json.loads(lines[0])
    model, info = tool.load_judge(folder)
    assert record == {"output": folder, **info}
    return folder, model, info


def _rendered(count, seed, random_colours=False, num_classes=5):
    """The first `count` synthetic shapes: uint8 `[count, 32, 32, 3]` and labels."""
    source = data.synthetic_source(
        data.SourceRequest(32, num_classes, seed=seed),
        num_examples=count,
        random_colours=random_colours,
    )
    images, labels = next(iter(source.dataset.batch(count)))
    return images.numpy(), labels.numpy()


def test_colour_blind_is_the_distance_from_the_median_colour_scaled_to_one(tool):
    rng = np.random.default_rng(0)
    for height, width in ((5, 5), (4, 6)):  # an odd and an even number of pixels
        images = rng.integers(0, 256, (3, height, width, 3), np.uint8)
        images[2] = (10, 200, 30)  # one colour: no distance anywhere
        pixels = images.reshape(3, -1, 3).astype(np.float64)
        median = np.median(pixels, axis=1)
        distance = np.linalg.norm(pixels - median[:, None], axis=-1)
        peak = distance.max(axis=1, keepdims=True)
        expected = np.divide(distance, peak, out=np.zeros_like(distance), where=peak > 0)
        maps = tool.colour_blind(images)
        assert maps.shape == (3, height, width, 1) and maps.dtype == np.float32
        np.testing.assert_allclose(maps.reshape(3, -1), expected, rtol=1e-6, atol=1e-7)
        assert maps[:2].max(axis=(1, 2, 3)).tolist() == [1.0, 1.0] and not maps[2].any()
        # The same images in [-1, 1]: the same maps.
        np.testing.assert_allclose(
            tool.colour_blind(images / 127.5 - 1.0), maps, rtol=1e-5, atol=1e-6
        )


def _discrete_gaussian(sigma):
    """scipy.ndimage's 1-D Gaussian kernel: exp(-x²/2σ²) on the integers |x| <= round(4σ),
    summed to 1."""
    x = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def test_degrade_blurs_each_image_by_its_own_drawn_gaussian(tool):
    images = np.zeros((4, 15, 15, 2), np.uint8)
    images[:, 7, 7, :] = 255  # a point: its blur is the kernel itself
    blurred = tool.degrade(images, max_blur=1.5, max_noise=0.0, seed=3)
    blurs = np.random.default_rng(3).uniform(0.0, 1.5, 4)  # the documented first draws
    assert len(set(np.round(blurs, 3))) == 4
    for image, sigma in zip(blurred, blurs, strict=True):
        kernel = _discrete_gaussian(sigma)
        point = np.zeros(15)
        point[7 - len(kernel) // 2 : 8 + len(kernel) // 2] = kernel
        expected = np.round(255.0 * np.outer(point, point))
        for channel in range(2):
            np.testing.assert_allclose(image[..., channel], expected, atol=1)
    np.testing.assert_array_equal(tool.degrade(images, 1.5, 0.0, seed=3), blurred)
    assert np.any(tool.degrade(images, 1.5, 0.0, seed=4) != blurred)
    # Nothing to do: the images themselves.
    assert tool.degrade(images, 0.0, 0.0) is images


def test_degrade_adds_noise_of_each_images_drawn_level(tool):
    images = np.full((6, 64, 64, 3), 128, np.uint8)
    noised = tool.degrade(images, max_blur=0.0, max_noise=0.05, seed=0)
    rng = np.random.default_rng(0)
    rng.uniform(0.0, 0.0, 6)  # the blurs, all 0
    levels = rng.uniform(0.0, 0.05, 6) * 255.0
    measured = noised.reshape(6, -1).astype(np.float64).std(axis=1)
    # Rounding to 8 bits moves each standard deviation by at most about 0.3.
    np.testing.assert_allclose(measured, levels, rtol=0.05, atol=0.3)
    assert levels.max() > 10
    np.testing.assert_allclose(noised.reshape(6, -1).mean(axis=1), 128, atol=0.5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_noise must be a finite number >= 0"):
            tool.degrade(images, 0.0, bad)
        with pytest.raises(ValueError, match="max_blur must be a finite number >= 0"):
            tool.degrade(images, bad, 0.0)


@pytest.mark.slow
def test_a_small_judge_knows_the_shapes_and_not_their_colours(tool, judge):
    _, model, info = judge
    assert info["class_names"] == list(data.SYNTHETIC_SHAPES)
    assert info["held_out_accuracy"] >= 0.95, info
    # Shapes it has not seen, in the quickstart's colours (class k: shape k), and the same
    # shapes, at the same places, in random colours.
    images, labels = _rendered(200, seed=5)
    recoloured, same_labels = _rendered(200, seed=5, random_colours=True)
    np.testing.assert_array_equal(labels, same_labels)
    assert np.mean(np.any(images != recoloured, axis=-1)) > 0.05
    predicted = tool.predict(model, images)
    assert np.mean(predicted == labels) >= 0.95
    np.testing.assert_array_equal(tool.predict(model, recoloured), predicted)


@pytest.mark.slow
def test_a_judge_trained_on_softened_shapes_still_knows_blurred_ones(tool, judge):
    """Renders blurred by 0.8 px, about the softness of a short run's edges: the judge of the
    default recipe knows them; one trained on crisp renders alone does not (2,000 shapes,
    seeds 0 and 1: worst shape 0.00 and 0.14; the full-size crisp judge calls them squares,
    or the rings crosses, docs/quality.md)."""
    _, model, info = judge
    assert (info["max_blur"], info["max_noise"]) == (tool.MAX_BLUR, tool.MAX_NOISE)
    assert info["held_out_accuracy_crisp"] >= 0.95, info
    images, labels = _rendered(500, seed=7, random_colours=True)
    blurred = np.round(ndimage.gaussian_filter(images.astype(np.float32), (0, 0.8, 0.8, 0)))
    blurred = blurred.clip(0, 255).astype(np.uint8)

    def worst_shape(model):
        predicted = tool.predict(model, blurred)
        return min(np.mean(predicted[labels == k] == k) for k in range(5))

    assert worst_shape(model) >= 0.8
    crisp, crisp_info = tool.train_judge(
        2000, 500, epochs=2, batch_size=32, width=8, verbose=0, max_blur=0.0, max_noise=0.0
    )
    assert crisp_info["held_out_accuracy"] == crisp_info["held_out_accuracy_crisp"] >= 0.95
    assert worst_shape(crisp) <= 0.3


@pytest.mark.slow
def test_score_maps_the_run_classes_to_the_judge_shapes_by_name(tool, judge, tmp_path, monkeypatch):
    folder, _, info = judge

    class RenderedShapes:
        """A perfect generator of `RUN_CLASSES`: the renderer's own images of class k."""

        resolution = 32
        class_names = list(RUN_CLASSES)
        step = 0

        def sample(self, classes, n, seed):
            images, labels = _rendered(len(RUN_CLASSES) * n, seed, num_classes=len(RUN_CLASSES))
            return images[labels == classes[0]]

    import tf_biggan

    monkeypatch.setattr(tf_biggan, "load", lambda path: RenderedShapes())
    record = tool.score(folder, "run", samples=150)
    assert list(record["per_class"]) == list(RUN_CLASSES)
    assert record["shape_accuracy"] >= 0.95, record
    # The same judge with its classes in another order scores the same.
    order = [4, 2, 0, 3, 1]
    shuffled, _ = tool.load_judge(folder)
    kernel, bias = shuffled.get_layer("logits").get_weights()
    shuffled.get_layer("logits").set_weights([kernel[:, order], bias[order]])
    names = [info["class_names"][k] for k in order]
    tool.save_judge(shuffled, dict(info, class_names=names), str(tmp_path / "shuffled"))
    again = tool.score(str(tmp_path / "shuffled"), "run", samples=150)
    assert again == dict(record, judge=str(tmp_path / "shuffled"))
    with pytest.raises(ValueError, match=r"'dog' names none of the judge's shapes \(circle, "):
        tool.judge_class_of("dog", info["class_names"])


@pytest.mark.slow
def test_cli_scores_a_model_dir(tool, judge, tmp_path):
    """A tiny EMA generator saved as training saves it; its class names only in classes.json."""
    folder, _, _ = judge
    model_dir = str(tmp_path / "run")
    generator = tiny_models.generator(len(RUN_CLASSES), name="ema_generator")
    generator.build_by_call()
    model_files.write_model_config(model_dir, generator)
    data.source.write_classes_json(model_dir, RUN_CLASSES)
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=7)
    completed = subprocess.run(
        [sys.executable, "tools/shape_judge.py", "score", f"--judge={folder}",
         f"--model_dir={model_dir}", "--samples=10"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    record = json.loads(lines[0])
    assert list(record["per_class"]) == list(RUN_CLASSES) and record["step"] == 7
    # 10 samples: 4, 3 and 3 per class.
    hits = [record["per_class"][name] * n for name, n in zip(RUN_CLASSES, (4, 3, 3), strict=True)]
    np.testing.assert_allclose(hits, np.round(hits))
    assert record["shape_accuracy"] == pytest.approx(sum(hits) / 10)


def test_class_names_come_from_training_or_a_converters_classes_json(tool, tmp_path):
    """Training's `classes.json` maps name → index; a converter's lists `{"index", "name"}`
    entries, none when its source has no names, which the judge cannot score."""
    nameless = types.SimpleNamespace(class_names=None)
    named = types.SimpleNamespace(class_names=["blue triangle"])
    assert tool.run_class_names(named, str(tmp_path)) == ["blue triangle"]
    with pytest.raises(ValueError, match="names no classes"):
        tool.run_class_names(nameless, str(tmp_path))
    classes_json = tmp_path / "classes.json"
    classes_json.write_text(json.dumps({"green square": 1, "red circle": 0}))
    assert tool.run_class_names(nameless, str(tmp_path)) == ["red circle", "green square"]
    entries = [{"index": 1, "name": "magenta ring"}, {"index": 0, "name": "yellow cross"}]
    classes_json.write_text(json.dumps({"classes": entries}))
    assert tool.run_class_names(nameless, str(tmp_path)) == ["yellow cross", "magenta ring"]
    classes_json.write_text(json.dumps({"classes": []}))
    with pytest.raises(ValueError, match="names no classes"):
        tool.run_class_names(nameless, str(tmp_path))


@pytest.mark.slow
def test_the_quickstart_as_shipped_draws_every_class_the_judge_knows(tool, tmp_path):
    """The README's quick start, 600 steps exactly as shipped (seed 0), scored by a judge of the
    default recipe on 1,000 samples of EMA G: every class at 0.8 or more, as quickstart.gin
    says (0.90 to 1.00 per class; seeds 1 and 2 as well, while seeds 3 and 4 lose the
    triangles: docs/quality.md)."""
    model_dir = str(tmp_path / "quickstart")
    subprocess.run(
        [sys.executable, "-m", "tf_biggan.train", "--gin_config=gin_configs/quickstart.gin",
         f"--model_dir={model_dir}"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    judge, info = tool.train_judge(verbose=0)
    tool.save_judge(judge, info, str(tmp_path / "judge"))
    record = tool.score(str(tmp_path / "judge"), model_dir, samples=1000)
    assert record["step"] == 600
    assert list(record["per_class"]) == [
        "red circle", "green square", "blue triangle", "yellow cross", "magenta ring"
    ]  # fmt: skip
    assert min(record["per_class"].values()) >= 0.8, record
