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
from tools_testlib import load_tool

from tf_biggan import data, model_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_CLASSES = ("red circle", "green square", "blue triangle")


@pytest.fixture(scope="module")
def tool():
    return load_tool("shape_judge")


@pytest.fixture(scope="module")
def judge(tool, tmp_path_factory):
    """A small judge trained by the CLI: 2,000 shapes, 2 epochs, width 8 (held-out accuracy
    0.996-1.0 with seeds 0 and 1, 8 s; with 600 shapes 0.67-0.70): (folder, model, info)."""
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
