"""Times the training step and the EMA generator's sampling; prints one JSON line.

    python tools/benchmark.py --resolution 32 --ch 64 --batch_size 64 --num_classes 10 \\
        --attention 0 --iters 10 --warmup 3
    python tools/benchmark.py --model=deep --resolution 128 --ch 128 --batch_size 8 \\
        --num_classes 1000 --attention 64 --iters 10 --warmup 3
    {"train_img_per_s": ..., "sample_img_per_s": ..., "peak_rss_mb": ..., ...}

What is timed:
- training: the exact step `tf_biggan.step.make_train_step` builds (`d_steps`
  D updates, the G update, the EMA update) on the default single-device
  strategy, fed random images and labels already in memory (no input
  pipeline); `train_img_per_s` counts the real images a step reads
  (`d_steps * batch_size`), as the training loop's img/s does;
- sampling: `ema_generator(z, y, training=False)` inside a `tf.function` on
  batches of `batch_size`.
`--model=deep` times BigGAN-deep (depth 2, z of 128 dims) instead of BigGAN.
With `--gin_config` (and `--gin_bindings`) G and D are the networks the gin
files configure, and `--resolution`, `--ch`, `--num_classes`, `--attention`
are not used (nor may `--model` be given: the config's `architecture` decides). Each is called `warmup` times untimed (tracing, compilation) and `iters` times
timed; the figures are from the median call. Results are read back to the host
after every call, so each time includes the whole computation.

FLOPs per image come from the architecture (`tf_biggan.flops`, whose docstring
gives the counting convention): `train_gflop_per_img = (d_steps (G + 6 D) +
3 G + 3 D) / d_steps`, `sample_gflop_per_img = G`, with G and D the forward
GFLOP per image. `matmul_peak_gflops` is the best of five float32 2048x2048
numpy matmuls in this process, and `train_mfu` / `sample_mfu` the achieved
FLOP rate over that peak (model FLOP utilisation). `peak_rss_mb` is the
process's maximum resident set size (`getrusage`), in MiB.

`--export_precision=float32|bfloat16` also exports the EMA generator at that precision
(`tf_biggan.export.export_generator`, to a temporary folder), loads it back with
`tf.saved_model.load` and times its `serving_default` signature (labels in, uint8 images
out, z sampled inside) on batches of `batch_size`: `export_sample_img_per_s` and
`export_sample_median_s`, the figures a TF Serving user sees at that precision.

`--loop` also runs the training loop itself (`tf_biggan.train.train`, with its input
pipeline, summaries, sample grids and checkpoints) for `--loop_steps` steps in a temporary
directory, on the gin config (the quickstart's if none is given; the loop's batch, D steps
and EMA settings are then the timed step's too, so `--batch_size` and `--d_steps` are not
used): `loop_img_per_s` counts the images of all steps after the first (start-up: tracing,
the first batch) over the time from the end of the first step to the end of the last
(`steady_seconds` of `train`; the final save and the export are not counted), and
`loop_over_step` is that over `train_img_per_s`.

`--input_pipeline` also measures `tf_biggan.data.pipeline_throughput` of the
data pipeline alone (the synthetic source, or the source the gin config binds),
reported as `input_img_per_s`. `--profile DIR` writes a TensorFlow profiler
trace of three training steps to DIR. `--threads T` sets TensorFlow's intra-
and inter-op threads and the BLAS threads of numpy's matmul.
"""

import os
import sys


def _early_threads(argv):
    # BLAS reads its thread count when numpy is first imported, so it is set before that.
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        elif arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        if value:
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = value


_early_threads(sys.argv)

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_biggan import gin_config, memory  # noqa: E402
from tf_biggan import step as step_lib  # noqa: E402

gin_config.define_gin_flags("Gin config file(s) configuring G and D.")
flags.DEFINE_enum("model", "biggan", ["biggan", "deep"], "BigGAN or BigGAN-deep.")
flags.DEFINE_integer("resolution", 32, "Image size in pixels (32, 64, 128, 256, 512).")
flags.DEFINE_integer("ch", 64, "Channel width multiplier of G and D.")
flags.DEFINE_integer("batch_size", 64, "Global batch per D and per G update, and per sample call.")
flags.DEFINE_integer("num_classes", 10, "Number of classes.")
flags.DEFINE_integer("attention", 0, "Attention resolution; 0 = no attention block.")
flags.DEFINE_integer("d_steps", 1, "D updates per G update.")
flags.DEFINE_integer("iters", 10, "Timed calls.")
flags.DEFINE_integer("warmup", 3, "Untimed calls first (tracing, compilation).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the per-replica train step.")
flags.DEFINE_bool("mixed_precision", False, "Run with the mixed_bfloat16 Keras policy.")
flags.DEFINE_integer("threads", 0, "TensorFlow intra/inter-op and BLAS threads; 0 = default.")
flags.DEFINE_string("profile", None, "Write a profiler trace of three train steps here.")
flags.DEFINE_bool("input_pipeline", False, "Also time the input pipeline alone.")
flags.DEFINE_enum(
    "export_precision",
    None,
    ["float32", "bfloat16"],
    "Also time sampling from the exported generator at this precision (serving_default).",
)
flags.DEFINE_bool("loop", False, "Also time the training loop (on the quickstart by default).")
flags.DEFINE_integer("loop_steps", 200, "Steps of the training loop with --loop (>= 2).")

LOOP_CONFIG = "quickstart"

MATMUL_SIZE = 2048


def matmul_peak_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """Best float32 `size x size` numpy matmul rate of `repeats`, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # noqa: B018 (first call initialises BLAS threads)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b  # noqa: B018
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def peak_rss_mb() -> float:
    """Maximum resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_seconds(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _networks(FLAGS):
    from tf_biggan import networks

    if FLAGS.gin_config:
        return networks.Generator(name="generator"), networks.Discriminator(name="discriminator")
    g_kwargs = dict(
        resolution=FLAGS.resolution,
        ch=FLAGS.ch,
        num_classes=FLAGS.num_classes,
        attention=FLAGS.attention,
        architecture=FLAGS.model,
    )
    return (
        networks.Generator(**g_kwargs, name="generator"),
        networks.Discriminator(**g_kwargs, name="discriminator"),
    )


def _train_state(FLAGS, strategy):
    """A built `TrainState` of the flags' (or the gin config's) networks, Adam as configured
    for the port's ImageNet recipe."""
    from tf_biggan import networks, optimizers
    from tf_biggan import state as state_lib

    generator, discriminator = _networks(FLAGS)
    ema_config = {k: v for k, v in generator.get_config().items() if k != "name"}
    with strategy.scope():
        state = state_lib.TrainState(
            generator=generator,
            discriminator=discriminator,
            ema_generator=networks.Generator(**ema_config, name="ema_generator"),
            g_optimizer=optimizers.make_optimizer(learning_rate=1e-4),
            d_optimizer=optimizers.make_optimizer(learning_rate=4e-4),
        )
        state.build()
    return state


def _check_flags(FLAGS) -> None:
    """Raises `app.UsageError` for bad flags; parses the gin config (the quickstart's for a
    `--loop` without one)."""
    for name in ("iters", "batch_size", "d_steps"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    if FLAGS.warmup < 0:
        raise app.UsageError(f"--warmup must be >= 0, got {FLAGS.warmup}")
    if FLAGS.gin_config and FLAGS["model"].present:
        raise app.UsageError(
            "--model is not used with --gin_config: bind Generator.architecture and "
            "Discriminator.architecture in the config instead"
        )
    if FLAGS.loop:
        if FLAGS.loop_steps < 2:
            raise app.UsageError(f"--loop_steps must be >= 2, got {FLAGS.loop_steps}")
        for name in ("batch_size", "d_steps", "model"):
            if FLAGS[name].present:
                raise app.UsageError(
                    f"--{name} is not used with --loop: the gin config sets it (bind "
                    "train.batch_size, train.d_steps, Generator.architecture)"
                )
        FLAGS.gin_config = FLAGS.gin_config or [LOOP_CONFIG]
    if FLAGS.gin_config:
        gin_config.parse_gin(FLAGS.gin_config, FLAGS.gin_bindings)


def _step_config(FLAGS) -> step_lib.StepConfig:
    """The timed step's settings: the flags', or with `--loop` the loop's own.

    ema_start_step is 0 so that the timed EMA update is the averaging one.
    """
    if FLAGS.loop:
        from tf_biggan.settings import TrainConfig, train_settings

        config = TrainConfig.from_settings(train_settings())[0].step
        return dataclasses.replace(config, ema_start_step=0, jit_compile=FLAGS.jit_compile)
    return step_lib.StepConfig(
        batch_size=FLAGS.batch_size,
        d_steps=FLAGS.d_steps,
        ema_start_step=0,
        jit_compile=FLAGS.jit_compile,
    )


def _loop(FLAGS, step_config: step_lib.StepConfig, train_img_per_s: float) -> dict:
    """Runs `tf_biggan.train.train` for `--loop_steps` steps in a temporary directory."""
    from tf_biggan import train

    # The loop's progress bar goes to stderr: stdout holds the one JSON line.
    with tempfile.TemporaryDirectory() as model_dir, contextlib.redirect_stdout(sys.stderr):
        result = train.train(model_dir, total_steps=FLAGS.loop_steps, export_at_end=False)
    if result["step"] != FLAGS.loop_steps or result["restores"]:
        raise RuntimeError(f"the loop stopped at step {result['step']} of {FLAGS.loop_steps}")
    images = (FLAGS.loop_steps - 1) * step_config.images_per_step
    loop_img_per_s = images / result["steady_seconds"]
    return {
        "loop_img_per_s": loop_img_per_s,
        "loop_over_step": loop_img_per_s / train_img_per_s,
        "loop_steps": result["step"],
        "loop_steady_seconds": result["steady_seconds"],
    }


def run(FLAGS) -> dict:
    import keras
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    _check_flags(FLAGS)
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)

    peak = matmul_peak_gflops()
    strategy = tf.distribute.get_strategy()
    state = _train_state(FLAGS, strategy)
    generator, discriminator = state.generator, state.discriminator
    resolution, num_classes = generator.resolution, generator.num_classes
    step_config = _step_config(FLAGS)
    batch = step_config.batch_size
    train_step = step_lib.make_train_step(state, strategy, step_config)
    images_per_step = step_config.images_per_step
    images = tf.random.uniform([images_per_step, resolution, resolution, 3], -1.0, 1.0, seed=1)
    labels = tf.random.uniform([images_per_step], 0, num_classes, tf.int32, seed=2)

    def one_train_step():
        metrics = train_step(images, labels)
        float(metrics["loss/d"])  # waits for the step

    ema = state.ema_generator

    @tf.function
    def sample(z, y):
        return ema(z, y, training=False)

    z = tf.random.normal([batch, generator.dim_z], seed=3)
    y = tf.one_hot(tf.range(batch) % num_classes, num_classes)

    def one_sample():
        sample(z, y).numpy()

    train_s = _median_seconds(one_train_step, FLAGS.iters, FLAGS.warmup)
    sample_s = _median_seconds(one_sample, FLAGS.iters, FLAGS.warmup)
    if FLAGS.profile:
        tf.profiler.experimental.start(FLAGS.profile)
        for _ in range(3):
            one_train_step()
        tf.profiler.experimental.stop()

    result = _report(FLAGS, step_config, generator, discriminator, train_s, sample_s, peak)
    if FLAGS.loop:
        result.update(_loop(FLAGS, step_config, result["train_img_per_s"]))
    if FLAGS.input_pipeline:
        result["input_img_per_s"] = _input_pipeline(FLAGS, resolution, num_classes, batch)
    if FLAGS.export_precision:
        result.update(_export_sampling(FLAGS, state.ema_generator))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _report(FLAGS, step_config, generator, discriminator, train_s, sample_s, peak) -> dict:
    """The JSON record: rates, FLOPs per image, MFU and the settings measured."""
    from tf_biggan import flops

    g_flops = flops.forward_flops(generator)
    d_flops = flops.forward_flops(discriminator)
    d_steps, batch = step_config.d_steps, step_config.batch_size
    train_flops = flops.train_flops_per_image(g_flops, d_flops, d_steps)
    train_ips = d_steps * batch / train_s
    sample_ips = batch / sample_s
    return {
        "train_img_per_s": train_ips,
        "sample_img_per_s": sample_ips,
        "peak_rss_mb": None,
        "train_step_median_s": train_s,
        "sample_median_s": sample_s,
        "train_gflop_per_img": train_flops / 1e9,
        "sample_gflop_per_img": g_flops / 1e9,
        "g_forward_gflop_per_img": g_flops / 1e9,
        "d_forward_gflop_per_img": d_flops / 1e9,
        "matmul_peak_gflops": peak,
        "train_mfu": train_ips * train_flops / 1e9 / peak,
        "sample_mfu": sample_ips * g_flops / 1e9 / peak,
        "model": generator.architecture,
        "depth": generator.depth,
        "resolution": generator.resolution,
        "ch": generator.ch,
        "batch_size": batch,
        "num_classes": generator.num_classes,
        "attention": list(generator.attention),
        "d_steps": d_steps,
        "iters": FLAGS.iters,
        "warmup": FLAGS.warmup,
        "jit_compile": FLAGS.jit_compile,
        "mixed_precision": FLAGS.mixed_precision,
        "threads": FLAGS.threads,
        "gin_config": list(FLAGS.gin_config),
    }


def _export_sampling(FLAGS, ema) -> dict:
    """Times `serving_default` of a fresh export of `ema` at `--export_precision`."""
    import tempfile

    import tensorflow as tf

    from tf_biggan import export

    batch = FLAGS.batch_size
    with tempfile.TemporaryDirectory() as folder:
        path = export.export_generator(ema, folder, precision=FLAGS.export_precision)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        labels = tf.range(batch, dtype=tf.int64) % ema.num_classes
        truncation, seed = tf.constant(1.0), tf.constant(0, tf.int64)

        def one_call():
            serve(labels=labels, truncation=truncation, seed=seed)["images"].numpy()

        seconds = _median_seconds(one_call, FLAGS.iters, FLAGS.warmup)
    return {
        "export_sample_img_per_s": batch / seconds,
        "export_sample_median_s": seconds,
        "export_precision": FLAGS.export_precision,
    }


def _input_pipeline(FLAGS, resolution, num_classes, batch) -> float:
    from tf_biggan import data

    kwargs = dict(batch_size=batch, resolution=resolution, num_classes=num_classes)
    if not FLAGS.gin_config:
        kwargs["source"] = data.synthetic_source
    input_data = data.make_dataset(**kwargs)
    return data.pipeline_throughput(input_data, num_batches=FLAGS.iters, warmup=FLAGS.warmup)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(json.dumps(run(flags.FLAGS)), flush=True)


if __name__ == "__main__":
    # As the library's programs do (tf_biggan.cli): the peak RSS is the training program's.
    memory.limit_malloc_arenas()
    app.run(main)
