"""Prints the trainable parameter counts of an experiment's G and D as one JSON line.

    python tools/count_params.py --gin_config=gin_configs/imagenet128.gin
    {"generator": 70433988, "discriminator": 87982370}
    python tools/count_params.py --gin_config=gin_configs/imagenet128_deep.gin
    {"generator": 50244484, "discriminator": 34590210}

SN `u` vectors and BN moving statistics are not trainable and are not counted.
"""

import json

from absl import app, flags

from tf_biggan import gin_config

gin_config.define_gin_flags("Gin config file(s).", "Extra gin bindings, e.g. 'Generator.ch = 64'.")


def main(argv):
    del argv
    from tf_biggan import networks

    gin_config.parse_gin(flags.FLAGS.gin_config, flags.FLAGS.gin_bindings)
    generator = networks.Generator()
    discriminator = networks.Discriminator()
    generator.build_by_call()
    discriminator.build_by_call()
    counts = {
        "generator": networks.count_trainable_parameters(generator),
        "discriminator": networks.count_trainable_parameters(discriminator),
    }
    print(json.dumps(counts))


if __name__ == "__main__":
    app.run(main)
