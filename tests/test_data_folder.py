"""Tests for tf_biggan.data.folder: image folders, corrupt files, bad layouts."""

import json
import os

import numpy as np
import pytest
from data_testlib import (
    FOLDER_CLASSES,
    colour_of,
    first_batches,
    folder_source,
    png,
    scaled,
    solid,
    write,
)

from tf_biggan import data


def test_list_image_folder_sorts_classes_and_files(image_folder):
    root, expected = image_folder
    class_names, paths, labels = data.list_image_folder(str(root))
    assert class_names == FOLDER_CLASSES
    # The listing also holds the corrupt PNG (found only when decoding), not the text file.
    listed = sorted([e[0] for e in expected] + ["cat/c2_broken.png"])
    assert [os.path.relpath(p, root) for p in paths] == listed
    assert labels == [FOLDER_CLASSES.index(rel.split("/")[0]) for rel in listed]


def test_folder_pipeline_decodes_counts_corrupt_once_and_writes_class_map(image_folder, tmp_path):
    root, expected = image_folder
    model_dir = tmp_path / "run"
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=folder_source(root),
        model_dir=str(model_dir),
        shuffle_buffer=0,
    )
    assert input_data.num_examples == len(expected) == 9
    assert input_data.class_names == FOLDER_CLASSES
    assert input_data.examples_per_class == {"apple": 3, "bird": 3, "cat": 3}
    assert json.loads((model_dir / "classes.json").read_text()) == {
        "apple": 0,
        "bird": 1,
        "cat": 2,
    }
    images, labels = first_batches(input_data, 3)
    assert images.shape == (9, 8, 8, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [e[1] for e in expected])
    for image, (rel, _, rgb, tol) in zip(images, expected, strict=True):
        np.testing.assert_allclose(colour_of(image), rgb, atol=tol + 0.01, err_msg=rel)
        if tol == 0:  # lossless formats: every pixel is the file's colour
            np.testing.assert_array_equal(image, np.broadcast_to(scaled(rgb), image.shape), rel)
    # Reading three more epochs does not count the corrupt file again.
    it = iter(input_data.dataset)
    for _ in range(9):
        next(it)
    assert int(input_data.skipped.numpy()) == 1


def test_folder_strict_names_the_corrupt_file(image_folder):
    root, _ = image_folder
    with pytest.raises(ValueError, match=r"strict=True.*c2_broken\.png"):
        data.make_dataset(
            batch_size=2, resolution=8, num_classes=3, source=folder_source(root), strict=True
        )


@pytest.mark.slow
def test_folder_shuffled_flipped_pipeline_keeps_labels_with_images(image_folder):
    root, expected = image_folder
    input_data = data.make_dataset(
        batch_size=3,
        resolution=8,
        num_classes=3,
        source=folder_source(root),
        shuffle_buffer=100,
        random_flip=True,
        seed=3,
    )
    colours = {tuple(np.round(rgb)): label for _, label, rgb, _ in expected}
    images, labels = first_batches(input_data, 3)
    for image, label in zip(images, labels, strict=True):
        colour = colour_of(image)
        nearest = min(colours, key=lambda c: np.abs(np.subtract(c, colour)).max())
        assert colours[nearest] == label
    assert sorted(labels.tolist()) == sorted(e[1] for e in expected)


@pytest.mark.parametrize(
    "layout, num_classes, message",
    [
        (None, 2, r"image folder not found.*missing"),
        ({}, 2, r"no class subfolders"),
        ({"x.png": True}, 1, r"1 image files directly; put them in one subfolder per class"),
        ({"a/x.png": True, "b/readme.txt": False}, 2, r"class folder .*b holds no images"),
        ({"a/x.png": True, "b/y.png": True}, 3, r"2 class subfolders \(a, b\) but num_classes=3"),
        ({"a/x.png": True, "b/y.png": True}, 2, r"3 examples .*fewer than one batch of 4"),
    ],
)
def test_folder_bad_input_errors(tmp_path, layout, num_classes, message):
    root = tmp_path / "missing"
    if layout is not None:
        root.mkdir()
        for rel, is_image in layout.items():
            write(root / rel, png(solid((1, 2, 3))) if is_image else b"text")
        if "b/y.png" in layout:
            write(root / "b/z.png", png(solid((1, 2, 3))))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.make_dataset(
            batch_size=4, resolution=8, num_classes=num_classes, source=folder_source(root)
        )


def test_folder_whose_only_image_of_a_class_is_corrupt_raises(tmp_path):
    write(tmp_path / "a/x.png", png(solid((1, 2, 3))))
    write(tmp_path / "b/y.png", png(solid((1, 2, 3)))[:20])
    with pytest.raises(ValueError, match=r"class folder .*b holds no readable images"):
        data.image_folder_source(
            data.SourceRequest(resolution=8, num_classes=2), root=str(tmp_path)
        )
