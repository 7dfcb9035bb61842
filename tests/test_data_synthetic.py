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


def test_random_colours_keep_the_shapes_and_change_their_colour():
    request = data.SourceRequest(resolution=32, num_classes=5, seed=3)
    plain = data.synthetic_source(request, num_examples=40)
    coloured = data.synthetic_source(request, num_examples=40, random_colours=True)
    assert coloured.class_names == data.SYNTHETIC_SHAPES
    shape_colours = []
    for (a, label_a), (b, label_b) in zip(plain.dataset, coloured.dataset, strict=True):
        a, b = a.numpy().astype(int), b.numpy().astype(int)
        assert int(label_a) == int(label_b)
        # The same background, the same pixels of the shape, in another colour.
        background = np.median(a.reshape(-1, 3), axis=0)
        np.testing.assert_array_equal(np.median(b.reshape(-1, 3), axis=0), background)
        mask = np.any(a != background, axis=-1)
        np.testing.assert_array_equal(np.any(b != background, axis=-1), mask)
        assert 0 < mask.mean() < 0.5
        colour = b[mask][0]
        assert np.all(b[mask] == colour) and not np.array_equal(a[mask][0], colour)
        # Bright: its largest channel at least 0.6 (153), above any background (<= 0.4).
        assert colour.max() >= 153
        shape_colours.append(colour)
    # Colours spread over the whole hue circle, whatever the class.
    hues = [np.argmax(c) for c in shape_colours]
    assert set(hues) == {0, 1, 2}
    with pytest.raises(ValueError, match=r"1..5 classes with random_colours, got num_classes=6"):
        data.synthetic_source(data.SourceRequest(resolution=32, num_classes=6), random_colours=True)
