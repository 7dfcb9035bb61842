"""Every shipped experiment trains as written.

Each file in `gin_configs/` is parsed as shipped and trains 2 steps: the small ones through
`train.train`, the function the CLI runs, the ImageNet ones through the CLI itself, each in a
process of its own. Only the data (generated here and bound by gin, except Fashion-MNIST,
whose Debian files CI installs), the batch size (small, keeping the config's gradient
accumulation at 2 where it accumulates), the width (ch 8), the run's length and the size of
its sample grid change, and the ImageNet configs at ch 8 run on one device. Every option a
config turns on (the orthogonal regulariser, several D steps, DiffAugment, the EMA,
fine-tuning with `init_from`) runs on its real code path. Then the headline config runs as
shipped at full width for 2 steps, on its mirrored strategy over two logical CPUs, and the
headline command, run as a user would without ImageNet, stops with an error that names the
files it needs.
"""

import glob
import math
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_biggan import data, gin_config, model_files, networks_deep, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "gin_configs")
SHIPPED = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*.gin")))
IMAGENET = [name for name in SHIPPED if name.startswith("imagenet")]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# What each config gets besides the common changes: data bindings, its batch, and whether
# its accumulation is kept (at 2).
SMALL_WIDTH = ["Generator.ch = 8", "Discriminator.ch = 8"]
# BigGAN-deep's bottleneck blocks keep a quarter of the width: ch 4 still has 2 channels in
# its narrowest bottleneck and 8 (attention needs a multiple of 8) at the attention's 64 px.
DEEP_WIDTH = ["Generator.ch = 4", "Discriminator.ch = 4"]
SHORT_RUN = [
    "train.total_steps = 2",
    "train.max_minutes = None",
    "train.export_at_end = False",
    "train.checkpoint_every = 1000",
    # The grid drawn at the last step: 2 classes x 2 samples instead of up to 10 x 8.
    "train.max_sample_classes = 2",
    "train.samples_per_class = 2",
]


def _write_tfrecords(folder, num_classes, extra_per_class=0, classes_extra=20, size=8):
    """One record per class (labels 0..num_classes-1), plus `extra_per_class` more for
    the first `classes_extra` classes, as small PNGs whose colour depends on the label."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "train-00000.tfrecord")
    labels = list(range(num_classes)) + [
        k for k in range(min(classes_extra, num_classes)) for _ in range(extra_per_class)
    ]
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(path) as writer:
        for label in labels:
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            pixels[..., label % 3] = (label * 37) % 256
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        data.TFRECORD_IMAGE_KEY: tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[tf.io.encode_png(pixels).numpy()])
                        ),
                        data.TFRECORD_LABEL_KEY: tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[label])
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString())
    return os.path.join(folder, "*.tfrecord")


def _write_image_folder(root, num_classes, per_class=6):
    rng = np.random.default_rng(1)
    for k in range(num_classes):
        os.makedirs(os.path.join(root, f"class_{k}"), exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            with open(os.path.join(root, f"class_{k}", f"{i}.png"), "wb") as f:
                f.write(tf.io.encode_png(pixels).numpy())
    return root


@pytest.fixture(scope="module")
def imagenet_bindings(tmp_path_factory):
    """A stand-in for ILSVRC2012 read through the TFRecord source (1000 classes, each at
    least once, enough of the first 20 for the real-examples grid) and a batch of 4 as 2
    accumulated micro-batches (of 2 replicas x 1 image under the mirrored strategy)."""
    pattern = _write_tfrecords(str(tmp_path_factory.mktemp("imagenet")), 1000, extra_per_class=7)
    return SHORT_RUN + [
        "train.batch_size = 4",
        "train.accumulation_steps = 2",
        "make_dataset.source = @tfrecord_source",
        f'tfrecord_source.file_pattern = "{pattern}"',
        "make_dataset.shuffle_buffer = 64",
    ]


def _train(config_name, bindings, model_dir, **kwargs):
    gin.clear_config()
    gin_config.parse_gin([os.path.join(CONFIG_DIR, config_name)], bindings, finalize=False)
    try:
        return train.train(str(model_dir), **kwargs)
    finally:
        gin.clear_config()


def _assert_trained(result, model_dir, shipped=None, steps=2):
    """Finite losses after `steps` steps, saved; with `shipped`, the checks of
    `_assert_checkpoint` on the saved run."""
    assert result["step"] == steps and result["start_step"] == 0
    for name in ("loss/d", "loss/g", "d/real", "d/fake"):
        assert math.isfinite(result[name]), (name, result[name])
    assert result["nonfinite"] == 0.0
    if shipped is None:
        assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{steps}")
        return
    _assert_checkpoint(model_dir, shipped, steps)


def _configured(name):
    return gin.query_parameter(name)


def _shipped_bindings(config_name):
    """The parsed values this test keeps from the shipped file (read before any override)."""
    gin.clear_config()
    gin_config.parse_gin([os.path.join(CONFIG_DIR, config_name)], finalize=False)
    try:
        values = {
            "g_lr": _configured("generator/make_optimizer.learning_rate"),
            "d_lr": _configured("discriminator/make_optimizer.learning_rate"),
            "accumulation": _try_query("train.accumulation_steps", 1),
            "d_steps": _try_query("train.d_steps", 1),
            "strategy": _try_query("train.strategy", "default"),
        }
    finally:
        gin.clear_config()
    return values


def _try_query(name, default):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def test_every_shipped_config_is_covered_here():
    assert set(SHIPPED) == {
        "cifar10.gin",
        "fashion_mnist.gin",
        "finetune_folder.gin",
        "imagenet128.gin",
        "imagenet128_deep.gin",
        "imagenet128_paper.gin",
        "imagenet256.gin",
        "imagenet256_deep.gin",
        "imagenet512.gin",
        "imagenet512_deep.gin",
        "imagenet64.gin",
        "quickstart.gin",
        "tiny_test.gin",
    }, "a config was added or removed: give it its data bindings in this module"


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["quickstart.gin", "tiny_test.gin", "cifar10.gin"])
def test_small_configs_train_two_steps_as_shipped(config_name, tmp_path):
    shipped = _shipped_bindings(config_name)
    bindings = SMALL_WIDTH + SHORT_RUN + ["train.batch_size = 4"]
    if config_name == "cifar10.gin":
        # CIFAR-10 comes from TFDS, which cannot download here: 10 synthetic classes instead.
        bindings += [
            "make_dataset.source = @synthetic_source",
            "synthetic_source.num_examples = 64",
        ]
    result = _train(config_name, bindings, tmp_path)
    _assert_trained(result, tmp_path, shipped)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist"
)
def test_fashion_mnist_config_trains_two_steps_on_the_debian_files(tmp_path):
    result = _train(
        "fashion_mnist.gin", SMALL_WIDTH + SHORT_RUN + ["train.batch_size = 4"], tmp_path
    )
    _assert_trained(result, tmp_path)
    with open(tmp_path / "classes.json") as f:
        assert "Ankle boot" in f.read()


@pytest.mark.slow
def test_finetune_folder_config_starts_from_a_trained_run_with_other_classes(tmp_path):
    source = tmp_path / "source"
    _train("quickstart.gin", SMALL_WIDTH + SHORT_RUN + ["train.batch_size = 4"], source)
    folder = _write_image_folder(str(tmp_path / "images"), num_classes=3)
    target = tmp_path / "finetune"
    bindings = (
        SMALL_WIDTH
        + SHORT_RUN
        + [
            "train.batch_size = 4",
            f'image_folder_source.root = "{folder}"',
            "NUM_CLASSES = 3",
        ]
    )
    result = _train("finetune_folder.gin", bindings, target, init_from=str(source))
    _assert_trained(result, target)
    # Fine-tuning started from the source run: its weights are the source's, moved by two
    # Adam steps at lr 5e-5 (at most ~1e-4 per weight), not a fresh initialisation.
    source_ema, _, _ = model_files.restore_ema_generator(str(source))
    tuned_ema, _, _ = model_files.restore_ema_generator(str(target))
    source_kernel = source_ema.block0.conv1.kernel.numpy()
    tuned_kernel = tuned_ema.block0.conv1.kernel.numpy()
    np.testing.assert_allclose(tuned_kernel, source_kernel, atol=5e-4)
    assert not np.array_equal(tuned_kernel, source_kernel)
    assert tuned_ema.num_classes == 3 and source_ema.num_classes == 5


# The training CLI in a process of its own whose CPU is split into two logical devices, so
# that a config's mirrored strategy has two replicas. A process of its own because TensorFlow
# keeps the graph of every traced step that holds a `tf.cond` for the life of the process: a
# 1000-class step is hundreds of MB, the full-width one several GB. Grappler is off as in
# conftest.py.
_CLI_ON_TWO_CPUS = """
import tensorflow as tf
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import app
from tf_biggan import train
train.define_flags()
app.run(train.main)
"""


def _train_with_the_cli(config_name, bindings, model_dir):
    """Runs the training CLI on `config_name` with `bindings`; returns its log (stderr)."""
    run = subprocess.run(
        [sys.executable, "-c", _CLI_ON_TWO_CPUS, f"--gin_config=gin_configs/{config_name}",
         f"--model_dir={model_dir}"] + [f"--gin_bindings={b}" for b in bindings],
        cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "finished at step 2" in run.stderr
    return run.stderr


def _assert_checkpoint(model_dir, shipped, steps=2):
    """The run's last checkpoint: `steps` steps, no skipped update, finite weights, the
    config's learning rates, and its D steps counted by the D optimizer."""
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest.endswith(f"ckpt-{steps}")
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("skipped_updates/.ATTRIBUTES/VARIABLE_VALUE") == 0
    for name in reader.get_variable_to_shape_map():
        if name.startswith(("generator/", "discriminator/")):
            assert np.all(np.isfinite(reader.get_tensor(name))), name
    for name, rate in (("g_optimizer", shipped["g_lr"]), ("d_optimizer", shipped["d_lr"])):
        saved = reader.get_tensor(f"{name}/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
        assert float(saved) == pytest.approx(rate, rel=1e-6), name
    iterations = reader.get_tensor("d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(iterations) == steps * shipped["d_steps"]
    return reader


@pytest.mark.slow
@pytest.mark.parametrize("config_name", IMAGENET)
def test_imagenet_configs_train_two_steps_accumulating(config_name, imagenet_bindings, tmp_path):
    shipped = _shipped_bindings(config_name)
    assert shipped["accumulation"] == 8 and shipped["strategy"] == "mirrored"
    # On one device: a step traced for two replicas takes twice as long to build, and the
    # mirrored path of these configs is the one of the full-width run below, which keeps it.
    deep = config_name.endswith("_deep.gin")
    width = DEEP_WIDTH if deep else SMALL_WIDTH
    bindings = width + imagenet_bindings + ['train.strategy = "default"']
    log = _train_with_the_cli(config_name, bindings, tmp_path)
    assert "strategy default: 1 replica(s) in sync on 1 worker(s); batch 4 = 2 micro" in log
    reader = _assert_checkpoint(tmp_path, shipped)
    shapes = reader.get_variable_to_shape_map()
    # BigGAN-deep: two bottleneck blocks per resolution (the last of G's ends in a 1x1 conv
    # from the bottleneck to ch) and D's stem conv; BigGAN has neither.
    arch = networks_deep.DEEP_G_ARCH[_resolution_of(config_name)]
    blocks = networks_deep.generator_blocks(arch, ch=4, depth=2)
    last_conv = f"ema_generator/block{len(blocks) - 1}/conv4/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    last_in, last_out = blocks[-1][:2]
    bottleneck = [1, 1, last_in // networks_deep.CHANNEL_RATIO, last_out]
    assert (shapes.get(last_conv) == bottleneck) == deep
    assert ("discriminator/input_conv/u/.ATTRIBUTES/VARIABLE_VALUE" in shapes) == deep


def _resolution_of(config_name):
    return int(config_name[len("imagenet") :].split("_")[0].split(".")[0])


@pytest.mark.slow
def test_imagenet128_at_full_width_trains_two_steps(imagenet_bindings, tmp_path):
    log = _train_with_the_cli("imagenet128.gin", imagenet_bindings, tmp_path)
    # 4 images = 2 accumulated micro-batches on the config's two mirrored replicas.
    assert "strategy mirrored: 2 replica(s) in sync on 1 worker(s); batch 4 = 2 micro" in log
    reader = _assert_checkpoint(tmp_path, _shipped_bindings("imagenet128.gin"))
    # Full width: the paper's 128 px G (70,433,988 weights; tools/count_params.py checks the
    # count): its first block's conv is 16*96 -> 16*96 channels, its last 1*96 -> 1*96.
    shapes = reader.get_variable_to_shape_map()
    block0 = shapes["ema_generator/block0/conv1/kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    assert block0 == [3, 3, 1536, 1536]
    assert shapes["ema_generator/block4/conv2/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [3, 3, 96, 96]


@pytest.mark.slow
def test_headline_command_without_imagenet_names_the_tar_files(tmp_path):
    home = tmp_path / "home"
    (home / "tensorflow_datasets" / "downloads" / "manual").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TFDS_DATA_DIR", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_biggan.train",
            "--gin_config=gin_configs/imagenet128.gin",
            f"--model_dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    # The folder exists under the user's home, so "~" was expanded: it is found empty.
    manual = home / "tensorflow_datasets" / "downloads" / "manual"
    assert "FileNotFoundError: TFDS imagenet2012 is not prepared yet" in run.stderr
    assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in run.stderr
    assert f"manual_dir {manual}, which is empty" in run.stderr
