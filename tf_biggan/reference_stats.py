"""Computes the feature statistics of a data set once and saves them as `.npz`.

The data set is built with gin exactly as training builds it (`tf_biggan.data.make_dataset`),
at the resolution and class count of the configured `Generator` (the networks' configuration
is their one source of truth), so the reference statistics see the same images, crop and
resolution as the model. Random
flips are switched off: the reference is the data itself, not its augmentation. Bindings of
other configurables in a training gin file (generator, optimizer, ...) are parsed but unused.

    python -m tf_biggan.reference_stats --gin_config=gin_configs/cifar10.gin \\
        --num_samples=50000 --extractor=tfgan_inception --output=stats/cifar10_train.npz

The output holds `mu`, `sigma`, `count`, a sample of raw features for KID (`features`) and the
extractor's name; `python -m tf_biggan.eval --reference_stats=...` reads it. Prints one JSON
line describing what was written.
"""

import contextlib
import sys

from absl import flags


def compute_reference_stats(
    gin_configs, gin_bindings, num_samples, batch_size, extractor, max_kid_features, seed
):
    """Builds the gin-configured data set and accumulates its feature statistics.

    Args:
        gin_configs: gin files (list of str).
        gin_bindings: gin binding strings (list of str).
        num_samples: Number of images.
        batch_size: Images per extractor call.
        extractor: A `tf_biggan.metrics.FeatureExtractor`.
        max_kid_features: Raw features kept for KID.
        seed: Seed of the KID reservoir.

    Returns:
        A `tf_biggan.metrics.StreamingStats`.

    Raises:
        ValueError: more samples requested than the data set holds.
    """
    from tf_biggan import data, gin_config, metrics, networks

    gin_config.parse_gin(gin_configs, gin_bindings, finalize=False)
    # The generator's configuration is the one source of truth for the data set's resolution
    # and class count; an unbuilt generator creates no weights.
    generator = networks.Generator()
    sizes = {"resolution": generator.resolution, "num_classes": generator.num_classes}
    input_data = data.make_dataset(batch_size=batch_size, random_flip=False, **sizes)
    # The pipeline repeats forever; beyond one epoch the statistics would count images twice.
    if input_data.num_examples is not None and num_samples > input_data.num_examples:
        raise ValueError(
            f"num_samples={num_samples} exceeds the {input_data.num_examples} images of the "
            "data set; use at most that many."
        )
    return metrics.compute_dataset_stats(
        input_data.dataset,
        extractor,
        num_samples=num_samples,
        max_kid_features=max_kid_features,
        seed=seed,
    )


def main(argv):
    del argv
    from tf_biggan import metrics

    f = flags.FLAGS
    with contextlib.redirect_stdout(sys.stderr):
        extractor = metrics.extractor_from_flags(f)
        stats = compute_reference_stats(
            f.gin_config,
            f.gin_bindings,
            num_samples=f.num_samples,
            batch_size=f.batch_size,
            extractor=extractor,
            max_kid_features=f.max_kid_features,
            seed=f.seed,
        )
        stats.save(f.output)
    record = {
        "output": f.output,
        "count": stats.count,
        "dim": stats.dim,
        "kid_features": int(stats.features.shape[0]),
        "extractor": extractor.name,
    }
    print(metrics.json_line(record), flush=True)


def define_flags():
    from tf_biggan import gin_config, metrics

    gin_config.define_gin_flags("gin files configuring make_dataset.")
    flags.DEFINE_integer("num_samples", 50_000, "Number of data set images.")
    flags.DEFINE_integer("batch_size", 50, "Images per extractor call.")
    flags.DEFINE_integer("max_kid_features", 10_000, "Raw features kept for KID.")
    flags.DEFINE_integer("seed", 0, "Seed of the KID feature sample.")
    flags.DEFINE_string("output", None, "Output .npz path.")
    metrics.define_extractor_flags(flags)
    flags.mark_flag_as_required("output")


def cli() -> None:
    """The `tf-biggan-reference-stats` console script."""
    from tf_biggan import cli as cli_lib

    cli_lib.run("tf_biggan.reference_stats", define_flags, main)


if __name__ == "__main__":
    cli()
