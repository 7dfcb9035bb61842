"""Times the explorer (`tf-biggan-explore`) in process; prints one JSON line.

    python tools/explore_benchmark.py --model_dir=runs/quickstart
    python tools/explore_benchmark.py --resolution=32 --ch=16
    python tools/explore_benchmark.py --resolution=128 --ch=96 --num_classes=1000 --attention=64
    {"startup_to_first_image_s": ..., "sample_n8_median_s": ..., ...}

The server runs in this process (`tf_biggan.explore.serve`, port 0) and is asked over HTTP
on 127.0.0.1, as the page asks it. Without `--model_dir` / `--export` a randomly
initialised BigGAN of `--resolution`, `--ch`, `--num_classes`, `--attention` is written as a
model_dir in a temporary folder first (not timed): the times depend on the architecture,
not on the weights.

What is reported (seconds, wall clock):
- `import_s`: importing TensorFlow and tf_biggan, from the top of this script;
- `load_s`: `loader.load_generator` (restore, exact spectral norms);
- `first_image_s`: from before the load to the first `/api/sample.png?n=N` answer
  (load, server start, tracing the generator, the first batch, PNG encoding);
  `startup_to_first_image_s` is that plus `import_s`;
- `sample_n8_median_s` (and `_min_s`, `_max_s`): `GET /api/sample.png?class=C&n=N&seed=S` for
  `--requests` seeds after the first, one at a time (N = `--n`, 8 by default, so the key
  says n8 only then: it is `sample_n{N}_...`);
- `interpolate_median_s`: `GET /api/interpolate.png` with N frames, `--requests` times;
- `concurrent_8_s`: eight sample requests sent at once, until the last answer;
- `peak_rss_mb`: the process's maximum resident set size (`getrusage`), MiB.
"""

import time

_START = time.perf_counter()

import concurrent.futures  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_biggan import explore, loader, memory  # noqa: E402

flags.DEFINE_string("model_dir", None, "Training directory to serve; default: a random model.")
flags.DEFINE_string("export", None, "Export folder to serve instead.")
flags.DEFINE_enum("precision", None, ["float32", "bfloat16"], "The loader's precision.")
flags.DEFINE_integer("resolution", 32, "Random model: image size in pixels.")
flags.DEFINE_integer("ch", 16, "Random model: channel width multiplier.")
flags.DEFINE_integer("num_classes", 10, "Random model: number of classes.")
flags.DEFINE_integer("attention", 0, "Random model: attention resolution; 0 = none.")
flags.DEFINE_integer("n", 8, "Images per sample request, and frames per interpolation.")
flags.DEFINE_integer("requests", 7, "Timed requests of each kind (the median is reported).")


def _random_model_dir(folder: str, f) -> str:
    """A model_dir holding a randomly initialised EMA generator of the flags' shape."""
    import tensorflow as tf

    from tf_biggan import model_files, networks

    generator = networks.Generator(
        resolution=f.resolution,
        ch=f.ch,
        num_classes=f.num_classes,
        attention=f.attention,
        name="ema_generator",
    )
    generator.build_by_call()
    model_dir = os.path.join(folder, "run")
    model_files.write_model_config(model_dir, generator, [])
    checkpoint = tf.train.Checkpoint(ema_generator=generator, step=tf.Variable(0, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, model_dir, 1).save(checkpoint_number=0)
    return model_dir


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=3600) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
        return response.read()


def _timed(url: str) -> float:
    start = time.perf_counter()
    _get(url)
    return time.perf_counter() - start


def _measure(gen, n: int, requests: int, load_started: float) -> dict:
    """Serves `gen` and times its endpoints (see the module docstring)."""
    server = explore.serve(gen, max_samples=max(64, n))
    try:

        def sample(seed):
            query = urllib.parse.urlencode({"class": 0, "n": n, "seed": seed})
            return f"{server.url}api/sample.png?{query}"

        _get(sample(0))
        first = time.perf_counter() - load_started
        samples = [_timed(sample(seed)) for seed in range(1, requests + 1)]
        query = {"class_a": 0, "class_b": gen.num_classes - 1, "frames": n}
        interpolations = [
            _timed(
                f"{server.url}api/interpolate.png?{urllib.parse.urlencode(dict(query, seed_b=s))}"
            )
            for s in range(1, requests + 1)
        ]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(_get, [sample(100 + k) for k in range(8)]))
        concurrent_s = time.perf_counter() - start
    finally:
        server.close()
    return {
        "first_image_s": round(first, 3),
        f"sample_n{n}_median_s": round(statistics.median(samples), 4),
        f"sample_n{n}_min_s": round(min(samples), 4),
        f"sample_n{n}_max_s": round(max(samples), 4),
        "interpolate_median_s": round(statistics.median(interpolations), 4),
        "concurrent_8_s": round(concurrent_s, 3),
    }


def run(f) -> dict:
    imported = time.perf_counter() - _START
    with tempfile.TemporaryDirectory() as folder:
        model_dir, export = f.model_dir, f.export
        if not model_dir and not export:
            model_dir = _random_model_dir(folder, f)
        load_started = time.perf_counter()
        gen = loader.load_generator(model_dir=model_dir, saved_model=export, precision=f.precision)
        loaded = time.perf_counter() - load_started
        result = {
            "source": f.model_dir or f.export or "random",
            "resolution": gen.resolution,
            "num_classes": gen.num_classes,
            "precision": gen.precision,
            "n": f.n,
            "requests": f.requests,
            "import_s": round(imported, 3),
            "load_s": round(loaded, 3),
        }
        if not f.model_dir and not f.export:
            result.update(ch=f.ch, attention=f.attention)
        result.update(_measure(gen, f.n, f.requests, load_started))
    result["startup_to_first_image_s"] = round(imported + result["first_image_s"], 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main(argv):
    del argv
    f = flags.FLAGS
    if f.model_dir and f.export:
        raise flags.ValidationError("give at most one of --model_dir and --export")
    print(json.dumps(run(f)), flush=True)


if __name__ == "__main__":
    memory.limit_malloc_arenas()
    app.run(main)
