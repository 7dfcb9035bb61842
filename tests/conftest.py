"""Test session set-up: two logical CPU devices so MirroredStrategy runs for real."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Grappler's graph optimisations take longer than running the tests' small steps (a traced
# step of a ch 8 model at 128 px: 95 s with them, 58 s without). They change how TensorFlow
# schedules the graph, not what the library computes; subprocess tests run with them on.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


def pytest_configure(config):
    # The fast tier is `python -m pytest -m "not slow"` (README, "Tests"): under 3 minutes on
    # 2 cores, and every module of tf_biggan is still touched (tests/test_architecture.py).
    config.addinivalue_line(
        "markers",
        "slow: end-to-end runs, subprocess programs, large shapes and other tests of more than a "
        "few seconds; left out of the fast tier",
    )


@pytest.fixture(autouse=True)
def _forget_custom_gradients():
    """Drops the gradient functions that `tf.custom_gradient` registered during the test.

    Each trace through a custom gradient (the G upsample's, and `ReplicaContext.all_reduce`
    under a tape, as in the batch norms' statistics) registers a uniquely named gradient in
    TensorFlow's global registry, and its closure holds the whole traced graph: about 80 MB
    per trace of even a tiny train step, never freed. A test process traces hundreds of
    steps, so without this a test worker grew past 16 GB. A test's graphs are not
    differentiated again after it ends, so its registrations can go.
    """
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry
    before = set(registry)
    yield
    for name in set(registry) - before:
        if name.startswith("CustomGradient-"):
            del registry[name]


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several MirroredStrategy objects on the same devices in one process can hand
    out the same collective instance keys, and their all-reduces then collide.
    """
    return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """`data_testlib.make_folder`'s image folder, written once and only read: (root, expected)."""
    from data_testlib import make_folder  # imports tf_biggan.data, which most tests do not need

    return make_folder(tmp_path_factory.mktemp("image_folder"))
