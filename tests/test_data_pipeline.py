"""Tests for tf_biggan.data.pipeline: sharding, shuffling, flips, caching, checkpoints, gin."""

import dataclasses
import functools

import gin
import numpy as np
import pytest
import tensorflow as tf
from data_testlib import (
    example_ids,
    first_batches,
    folder_source,
    index_idx,
    make_folder,
    scaled,
    write_idx,
)

from tf_biggan import data
from tf_biggan.data import pipeline


def _synthetic(num_examples):
    return functools.partial(data.synthetic_source, num_examples=num_examples)


def _shuffled_flipped(seed):
    """`make_dataset` arguments: 30 synthetic examples of 5 classes, shuffled and flipped."""
    return dict(
        batch_size=4,
        resolution=8,
        num_classes=5,
        source=_synthetic(30),
        shuffle_buffer=16,
        random_flip=True,
        seed=seed,
    )


def test_two_input_pipelines_see_disjoint_shards_covering_the_set(tmp_path):
    images_path, labels_path = index_idx(tmp_path)
    source = functools.partial(data.idx_source, images_path=images_path, labels_path=labels_path)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        input_data = data.make_dataset(
            batch_size=4, resolution=4, num_classes=3, source=source, input_context=context
        )
        images, labels = first_batches(input_data, 3)  # 12 examples per shard
        ids = example_ids(images)
        np.testing.assert_array_equal(labels, ids % 3)
        seen.append(set(ids.tolist()))
        assert len(seen[-1]) == 12
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(24))


def test_checkpointed_iterator_resumes_at_the_next_batch(tmp_path):
    it = iter(data.make_dataset(**_shuffled_flipped(seed=7)).dataset)
    for _ in range(9):  # crosses an epoch boundary (7 batches per epoch)
        next(it)
    checkpoint = tf.train.Checkpoint(it=it)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    after = [next(it) for _ in range(3)]
    checkpoint.restore(path).assert_consumed()
    for want in after:
        got = next(it)
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())


def test_the_stream_is_a_function_of_the_configuration():
    """Every iterator yields the same stream, whatever others read, and so does a rebuild.

    Training relies on this: the start-up summary reads the training dataset, and the
    training iterator (and a run resumed from its checkpoint) must not depend on how far the
    summary's prefetch threads got.
    """
    config = _shuffled_flipped(seed=3)
    input_data = data.make_dataset(**config)
    ahead = iter(input_data.dataset)
    first = [next(ahead) for _ in range(30)]  # four epochs of 30 examples
    later = iter(input_data.dataset)
    rebuilt = iter(data.make_dataset(**config).dataset)
    for want in first:
        for other in (later, rebuilt):
            got = next(other)
            np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
            np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    # Still shuffled (synthetic example i has label i % 5 in source order), epoch by epoch.
    labels = np.concatenate([b[1].numpy() for b in first])
    assert not np.array_equal(labels[:30], np.arange(30) % 5)
    for epoch in range(4):
        np.testing.assert_array_equal(np.bincount(labels[30 * epoch : 30 * (epoch + 1)]), [6] * 5)


def test_cache_gives_the_same_batches(tmp_path):
    root, _ = make_folder(tmp_path)
    common = dict(batch_size=4, resolution=8, num_classes=3, source=folder_source(root), seed=1)
    plain = first_batches(data.make_dataset(**common), 6)
    cached = first_batches(data.make_dataset(cache=True, **common), 6)
    np.testing.assert_array_equal(plain[0], cached[0])
    np.testing.assert_array_equal(plain[1], cached[1])


def test_random_flip_mirrors_some_images(tmp_path):
    # Left half black, right half white: a flip swaps them.
    image = np.zeros((4, 8, 8), np.uint8)
    image[:, :, 4:] = 255
    images_path = write_idx(tmp_path / "img.idx", image)
    labels_path = write_idx(tmp_path / "lab.idx", [0, 0, 0, 0])
    input_data = data.make_dataset(
        batch_size=4,
        resolution=8,
        num_classes=1,
        source=functools.partial(data.idx_source, images_path=images_path, labels_path=labels_path),
        shuffle_buffer=0,
        random_flip=True,
    )
    it = iter(input_data.dataset)
    left = np.concatenate([next(it)[0].numpy()[:, 0, 0, 0] for _ in range(8)])
    assert set(left.tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
        (dict(resolution=0), r"resolution must be >= 1, got 0"),
        (dict(shuffle_buffer=-1), r"shuffle_buffer must be >= 0, got -1"),
        (dict(fit="crop"), r"fit must be one of 'resize', 'pad', got 'crop'"),
        (dict(num_classes=4), r"the data source has 3 classes \(red circle, .*num_classes=4"),
        (dict(batch_size=7), r"12 examples \(6 per input pipeline, 2 pipeline\(s\)\), .* of 7"),
    ],
)
def test_make_dataset_bad_arguments(kwargs, message):
    def three_classes(request):  # a source whose classes do not follow num_classes
        return data.synthetic_source(dataclasses.replace(request, num_classes=3), num_examples=12)

    config = dict(batch_size=4, resolution=8, num_classes=3, source=three_classes)
    config["input_context"] = tf.distribute.InputContext(2, 0, 2)
    with pytest.raises(ValueError, match=message):
        data.make_dataset(**{**config, **kwargs})


def test_gin_binds_source_and_its_parameters():
    with gin.unlock_config():
        gin.parse_config(
            [
                "make_dataset.source = @synthetic_source",
                "make_dataset.shuffle_buffer = 0",
                "synthetic_source.num_examples = 12",
            ]
        )
    try:
        input_data = data.make_dataset(batch_size=4, resolution=8, num_classes=3)
        assert input_data.num_examples == 12
        _, labels = first_batches(input_data, 3)
        np.testing.assert_array_equal(labels, np.arange(12) % 3)
    finally:
        gin.clear_config()
    # The resolution, the class count, the batch and the seed come from the networks and the
    # run; a binding of its own would be overridden, so it is refused.
    for name in ("resolution", "num_classes", "batch_size", "seed"):
        with pytest.raises(ValueError, match=f"make_dataset.{name}"):
            gin.parse_config(f"make_dataset.{name} = 8")
        gin.clear_config()


def _fashion_sized(tmp_path, count=6):
    """IDX files of `count` random 28×28 grey images (one class): (images, source builder)."""
    images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), np.uint8)
    images_path = write_idx(tmp_path / "img.idx", images)
    labels_path = write_idx(tmp_path / "lab.idx", np.zeros(count))
    source = functools.partial(data.idx_source, images_path=images_path, labels_path=labels_path)
    return images, source


def _assert_padded(batch, images):
    """`batch` [N, 32, 32, 3] holds each 28×28 grey image unresampled in a border of -1."""
    assert batch.shape == (len(images), 32, 32, 3)
    np.testing.assert_array_equal(batch[:, 2:30, 2:30], np.repeat(scaled(images)[..., None], 3, -1))
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    np.testing.assert_array_equal(batch[:, border], -1.0)


@pytest.mark.slow
@pytest.mark.parametrize("cache", [False, True])
def test_fit_pad_puts_small_images_in_a_black_border(tmp_path, cache):
    images, source = _fashion_sized(tmp_path)
    common = dict(batch_size=6, resolution=32, num_classes=1, source=source, shuffle_buffer=0)
    padded, _ = first_batches(data.make_dataset(fit="pad", cache=cache, **common), 2)
    _assert_padded(padded, np.concatenate([images, images]))
    # "resize", the default, upscales as before: antialiased bilinear, rounded to 8 bits.
    resized, _ = first_batches(data.make_dataset(cache=cache, **common), 1)
    upscaled = tf.image.resize(images[..., None].astype(np.float32), [32, 32], antialias=True)
    upscaled = np.repeat(np.clip(np.round(upscaled.numpy()), 0, 255), 3, -1)
    np.testing.assert_array_equal(resized, upscaled.astype(np.float32) / np.float32(127.5) - 1)


def test_gin_binds_fit(tmp_path):
    images, source = _fashion_sized(tmp_path)
    with gin.unlock_config():
        gin.parse_config(
            [
                "make_dataset.source = @idx_source",
                "make_dataset.shuffle_buffer = 0",
                'make_dataset.fit = "pad"',
                f'idx_source.images_path = "{tmp_path / "img.idx"}"',
                f'idx_source.labels_path = "{tmp_path / "lab.idx"}"',
            ]
        )
    try:
        padded, _ = first_batches(data.make_dataset(batch_size=6, resolution=32, num_classes=1), 1)
    finally:
        gin.clear_config()
    _assert_padded(padded, images)


def test_pipeline_throughput_counts_the_timed_batches(monkeypatch):
    input_data = data.make_dataset(
        batch_size=8, resolution=16, num_classes=4, source=_synthetic(64)
    )
    # A clock that reads 100 s when timing starts and 104 s when it ends: 3 batches of 8
    # images (the 2 warm-up batches untimed) in 4 s.
    clock = iter([100.0, 104.0])
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: next(clock))
    assert data.pipeline_throughput(input_data, num_batches=3, warmup=2) == 6.0
    with pytest.raises(ValueError, match="num_batches"):
        data.pipeline_throughput(input_data, num_batches=0)
