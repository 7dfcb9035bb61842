"""Tiny BigGANs for the tests: 32 px, ch 8, no attention, a few classes.

Small enough that a training step takes well under a second on one CPU, with every
kind of layer of the full model (SN conv/dense/embedding, conditional BN, the
shared embedding and hierarchical z, D's projection).
"""

import numpy as np

from tf_biggan import networks, optimizers
from tf_biggan import state as state_lib

RESOLUTION = 32


def generator(
    num_classes=3, dim_z=32, name="generator", cls=networks.Generator, architecture="biggan"
):
    """BigGAN, or with `architecture="deep"` BigGAN-deep at ch 4 (bottlenecks of 4)."""
    deep = architecture == "deep"
    return cls(
        resolution=RESOLUTION,
        ch=4 if deep else 8,
        num_classes=num_classes,
        dim_z=dim_z,
        shared_dim=8,
        attention=0,
        architecture=architecture,
        name=name,
    )


def discriminator(num_classes=3, name="discriminator"):
    return networks.Discriminator(
        resolution=RESOLUTION, ch=8, num_classes=num_classes, attention=0, name=name
    )


def train_state(
    make_optimizer=optimizers.make_optimizer, num_classes=3, dim_z=32, generator_cls=None
):
    """A built `TrainState`; `make_optimizer()` is called once for G and once for D.

    Build it inside `strategy.scope()` for a distributed test.
    """
    cls = generator_cls or networks.Generator
    state = state_lib.TrainState(
        generator=generator(num_classes, dim_z, "generator", cls),
        discriminator=discriminator(num_classes),
        ema_generator=generator(num_classes, dim_z, "ema_generator", cls),
        g_optimizer=make_optimizer(),
        d_optimizer=make_optimizer(),
    )
    state.build()
    return state


def assert_rebuilt_computes_the_same(original, rebuilt, inputs, rtol=1e-5):
    """Builds `rebuilt` (e.g. from `original`'s config), copies `original`'s weights into it
    and checks both give the same inference outputs on `inputs`."""
    rebuilt(*inputs, training=False)
    assert len(rebuilt.weights) == len(original.weights)
    rebuilt.set_weights(original.get_weights())
    np.testing.assert_allclose(
        rebuilt(*inputs, training=False).numpy(),
        original(*inputs, training=False).numpy(),
        rtol=rtol,
        atol=1e-6,
    )


def fill_standing_stats(generator, seed=0):
    """Random truncation-indexed statistics in every BN table of a built `generator`, far
    enough from the moving statistics that using one or the other changes the images."""
    from tf_biggan import layers

    rng = np.random.default_rng(seed)
    for bn in layers.batch_norm_layers(generator):
        shape = tuple(bn.standing_mean.shape)
        bn.standing_mean.assign(rng.normal(0.0, 0.5, shape).astype(np.float32))
        bn.standing_variance.assign(rng.uniform(0.3, 3.0, shape).astype(np.float32))
