"""User paths: `~` and `$VARIABLES` expanded where they enter the library."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import data, export, gin_config, model_files, paths, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_expand_home_and_variables(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("DATA_ROOT", "/mnt/data")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert paths.expand("~/tensorflow_datasets") == "/home/someone/tensorflow_datasets"
    assert paths.expand("$DATA_ROOT/pets") == "/mnt/data/pets"
    assert paths.expand("${DATA_ROOT}/pets/~x") == "/mnt/data/pets/~x"
    # An unset variable stays as written, so the error that follows names it.
    assert paths.expand("$NOT_SET_ANYWHERE/x") == "$NOT_SET_ANYWHERE/x"
    assert paths.expand("gs://bucket/~/$DATA_ROOT") == "gs://bucket/~/$DATA_ROOT"
    assert paths.expand(None) is None
    assert paths.expand(os.path.join("relative", "dir")) == os.path.join("relative", "dir")


def test_an_image_folder_under_home_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("cats", "dogs"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        pixels = np.zeros((8, 8, 3), np.uint8)
        (tmp_path / "pets" / name / "a.png").write_bytes(tf.io.encode_png(pixels).numpy())
    names, files, labels = data.list_image_folder("~/pets")
    assert names == ("cats", "dogs") and labels == [0, 1]
    assert files[0] == str(tmp_path / "pets" / "cats" / "a.png")


@pytest.mark.slow
def test_train_restore_and_export_take_paths_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    gin.clear_config()
    gin_config.parse_gin([os.path.join(REPO, "gin_configs", "tiny_test.gin")], finalize=False)
    try:
        train.train("$RUNS/tiny", total_steps=1)
    finally:
        gin.clear_config()
    assert (tmp_path / "runs" / "tiny" / "ckpt-1.index").exists()
    generator, config, checkpoint = model_files.restore_ema_generator("~/runs/tiny")
    assert checkpoint == str(tmp_path / "runs" / "tiny" / "ckpt-1")
    written = export.export_generator(generator, "~/exports", class_names=config["class_names"])
    assert written == str(tmp_path / "exports" / "1")
    assert tf.saved_model.contains_saved_model(written)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        model_files.restore_ema_generator("~/nowhere")
