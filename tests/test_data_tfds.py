"""Tests for tf_biggan.data.tfds: TensorFlow Datasets sources, on a locally built data set."""

import functools
import sys

import numpy as np
import pytest
from data_testlib import first_batches, solid

from tf_biggan import data


def test_tfds_source_with_a_local_builder(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """Six 6x6 images of three classes, generated locally."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(6, 6, 3)),
                        "label": tfds.features.ClassLabel(names=["low", "mid", "high"]),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(6):
                yield i, {"image": solid((i * 40,) * 3, 6, 6), "label": i % 3}

    source = functools.partial(data.tfds_source, name="tiny_shapes", data_dir=str(tmp_path))
    input_data = data.make_dataset(
        batch_size=3, resolution=6, num_classes=3, source=source, shuffle_buffer=0
    )
    assert input_data.class_names == ("low", "mid", "high")
    assert input_data.num_examples == 6
    images, labels = first_batches(input_data, 2)
    ids = np.round((images[:, 0, 0, 0] + 1.0) * 127.5 / 40).astype(int)
    assert sorted(ids.tolist()) == list(range(6))
    np.testing.assert_array_equal(labels, ids % 3)
    with pytest.raises(ValueError, match=r"3 classes .* but num_classes=4"):
        data.make_dataset(batch_size=3, resolution=6, num_classes=4, source=source)
    request = data.SourceRequest(resolution=6, num_classes=3)
    with pytest.raises(ValueError, match=r"not 'test'"):
        source(request, split="test")
    with pytest.raises(ValueError, match=r"image_key='picture' / label_key='label' not found"):
        source(request, image_key="picture")


def test_without_tensorflow_datasets_the_error_names_the_extra(monkeypatch, tmp_path):
    # A None entry in sys.modules makes `import tensorflow_datasets` raise ImportError.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"tf_biggan\[tfds\]"):
        data.make_dataset(
            batch_size=2, resolution=8, num_classes=3,
            source=functools.partial(data.tfds_source, name="cifar10", data_dir=str(tmp_path)),
        )  # fmt: skip
