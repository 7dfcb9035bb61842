"""Tests for tf_biggan.data.synthetic: the procedural coloured-shape source."""

import numpy as np
import pytest

from tf_biggan import data


def test_synthetic_classes_are_distinct_and_deterministic():
    src = data.synthetic_source(
        data.SourceRequest(resolution=32, num_classes=10, seed=0), num_examples=400
    )
    assert src.class_names[:6] == (
        "red circle",
        "green square",
        "blue triangle",
        "yellow cross",
        "magenta ring",
        "cyan circle",
    )
    assert src.examples_per_class == {name: 40 for name in src.class_names}
    images, labels = zip(*[(i.numpy(), int(y)) for i, y in src.dataset], strict=True)
    np.testing.assert_array_equal(labels, np.arange(400) % 10)
    images = np.stack(images).astype(np.float32) / 255.0
    labels = np.asarray(labels)
    means = np.stack([images[labels == k].mean(0) for k in range(10)])
    distances = np.sqrt(((means[:, None] - means[None]) ** 2).sum((2, 3, 4)))
    off_diagonal = distances[~np.eye(10, dtype=bool)]
    assert off_diagonal.min() > 1.0, distances
    # Every example differs from every other one (position, size and colour jitter).
    assert len({image.tobytes() for image in images}) == 400
    again = next(iter(src.dataset))[0].numpy()
    other = data.synthetic_source(data.SourceRequest(resolution=32, num_classes=10, seed=1))
    np.testing.assert_array_equal(again, images[0] * 255.0)
    assert not np.array_equal(next(iter(other.dataset))[0].numpy(), again)
    with pytest.raises(ValueError, match=r"1..40 classes, got num_classes=41"):
        data.synthetic_source(data.SourceRequest(resolution=32, num_classes=41))
