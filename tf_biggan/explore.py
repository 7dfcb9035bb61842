"""The explorer: `python -m tf_biggan.explore` (`tf-biggan-explore`) serves a local web page
to look at any generator, and `Explorer` is what the page and its endpoints compute::

    tf-biggan-explore --model_dir=runs/quickstart            # then open http://127.0.0.1:8000/
    tf-biggan-explore --export=runs/quickstart/export --port=8001
    curl -o grid.png 'http://127.0.0.1:8000/api/sample.png?class=red%20circle&n=8&truncation=0.5'

`GET /api/sample.png?class=C&n=N&truncation=T&seed=S` is, byte for byte, the PNG that
`tf_biggan.save_grid(tf_biggan.load(DIR).sample(classes=[C], n=N, truncation=T, seed=S),
path, rows=1)` writes; `class` repeated gives one such row per class. The page asks the same
endpoints, so the page, the endpoints, the sample program and the Python API show the same
images. docs/explorer.md describes the page, the parameters and their errors.

The generator is owned by one worker thread: requests are checked in their own HTTP thread
(cheap, no TensorFlow), then queued, and wait for their picture on a future. One picture is
computed at a time, in batches of at most `BATCH_SIZE` images, so memory stays that of one
picture of at most `--max_samples` images however many requests arrive together.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import json
import math
import os
import re
import signal

import numpy as np
import tensorflow as tf

from tf_biggan import imaging, loader
from tf_biggan.explore_server import BadRequest, ExploreServer

__all__ = ["DEFAULT_FRAMES", "DEFAULT_N", "Explorer", "MODES", "serve"]

DEFAULT_N = 8
"""Images per class of `/api/sample.png` when `n` is left out."""
DEFAULT_FRAMES = 8
"""Frames of `/api/interpolate.png` when `frames` is left out."""
MODES = ("both", "z", "class")
"""What an interpolation moves: z and the class together, z alone, or the class alone."""
BATCH_SIZE = 64
"""Images per generator call: `LoadedGenerator.sample`'s and the sheets' default, so the
batches, and therefore the pixels, are theirs."""
PAD = 2
"""Pixels between and around the images: `tf_biggan.save_grid`'s default."""
_INT64 = (-(2**63), 2**63 - 1)


class Explorer:
    """A `LoadedGenerator` behind one worker thread, answering the explorer's requests.

    Every public method checks its arguments against the model first and raises
    `explore_server.BadRequest` with a message for the page; only checked requests reach
    the worker. Pictures are PNG bytes of uint8 RGB grids
    `[rows * R + (rows + 1) * PAD, cols * R + (cols + 1) * PAD, 3]`.

    Args:
      gen: a `tf_biggan.loader.LoadedGenerator`.
      max_samples: the most images one picture may hold (classes x n, or frames).
    """

    def __init__(self, gen, max_samples: int = 64):
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.gen = gen
        self.max_samples = int(max_samples)
        # A model without recorded names is explored by index: "0", "1", ...
        self.class_names = list(gen.class_names) or [str(k) for k in range(gen.num_classes)]
        self._index = {name: k for k, name in enumerate(self.class_names)}
        self.standing_stats = standing_stats_entries(gen)
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tf-biggan-explore-generator"
        )

    def info(self) -> dict:
        """What the page shows of the model and the limits it must keep, JSON-ready."""
        gen = self.gen
        return {
            "resolution": gen.resolution,
            "num_classes": gen.num_classes,
            "dim_z": gen.dim_z,
            "class_names": self.class_names,
            "class_names_recorded": bool(gen.class_names),
            "step": gen.step,
            "source": gen.source,
            "checkpoint": gen.checkpoint,
            "precision": gen.precision,
            "has_standing_stats": self.standing_stats > 0,
            "standing_stats_entries": self.standing_stats,
            "max_truncation": 1.0 if self.standing_stats else None,
            "max_samples": self.max_samples,
            "default_n": DEFAULT_N,
            "default_frames": DEFAULT_FRAMES,
            "modes": list(MODES),
            "pad": PAD,
        }

    def sample_png(self, classes=(), n: int = DEFAULT_N, truncation=None, seed: int = 0) -> bytes:
        """One row of `n` images per class; row i is `gen.sample(classes=[classes[i]], n,
        truncation, seed)`, so every row has the same z and a one-class request is the
        Python API's images exactly.

        Args:
          classes: class names or indices (strings or ints), one row each.
          n: images per row, >= 1; `len(classes) * n <= max_samples`.
          truncation: None, or a threshold t > 0 (<= 1 for a model with
            truncation-indexed statistics; see `check_truncation`).
          seed: int seed of z.

        Returns:
          PNG bytes of `len(classes)` x `n` images.
        """
        if not classes:
            raise BadRequest("give at least one class (class=NAME or class=INDEX)")
        indices = [self.class_index(c) for c in classes]
        n = self._check_count("n", n, 1, len(indices))
        truncation = self.check_truncation(truncation)
        seed = _check_seed("seed", seed)
        return self._run(self._render_samples, indices, n, truncation, seed)

    def interpolation_png(
        self,
        class_a=None,
        class_b=None,
        seed_a: int = 0,
        seed_b: int = 1,
        frames: int = DEFAULT_FRAMES,
        mode: str = "both",
        truncation=None,
    ) -> bytes:
        """One row of `frames` images from endpoint a to endpoint b, both included.

        Endpoint e is the image `gen.sample(classes=[class_e], n=1, truncation, seed_e)`:
        z_e = `imaging.truncated_z(1, dim_z, truncation, seed_e)`, y_e the one-hot of
        class_e. Frame k is G at the k-th point of `imaging.interpolate` (as the sample
        program's sheets compute theirs) of z from z_a to z_b ("z", "both") or z_a
        throughout ("class"), and of y from y_a to y_b ("class", "both") or y_a throughout
        ("z": class_b is not used). So "class" is `sheets.class_interpolation_sheet(gen,
        class_a, class_b, frames, 1, truncation, seed_a)`.

        Args:
          class_a, class_b: class names or indices (class_b default: class_a).
          seed_a, seed_b: int seeds of the endpoints' z.
          frames: images in the row, 2 <= frames <= max_samples.
          mode: one of `MODES`.
          truncation: as in `sample_png`.

        Returns:
          PNG bytes of one row of `frames` images.
        """
        if class_a is None:
            raise BadRequest("give the first endpoint's class: class_a=NAME or class_a=INDEX")
        a = self.class_index(class_a)
        b = a if class_b is None else self.class_index(class_b)
        seed_a, seed_b = _check_seed("seed_a", seed_a), _check_seed("seed_b", seed_b)
        frames = self._check_count("frames", frames, 2, 1)
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        truncation = self.check_truncation(truncation)
        return self._run(self._render_interpolation, a, b, seed_a, seed_b, frames, mode, truncation)

    def class_index(self, value) -> int:
        """The index of a class given by name, or by index (an int or its digits), as
        `loader.parse_classes` reads it: a name first, then an index.

        Raises:
          BadRequest: an unknown name (the message names the nearest ones) or an index
            outside `[0, num_classes)`.
        """
        if isinstance(value, str) and value in self._index:
            return self._index[value]
        if isinstance(value, (int, np.integer)) or re.fullmatch(r"-?\d+", value.strip()):
            index = int(value)
            if not 0 <= index < self.gen.num_classes:
                raise BadRequest(f"class index {index} is outside [0, {self.gen.num_classes})")
            return index
        near = nearest_names(value, self.class_names)
        hint = f"nearest names: {', '.join(near)}" if near else "no name is close"
        raise BadRequest(
            f"unknown class {value!r}: {hint} ({self.gen.num_classes} classes, all listed by "
            "/api/info)"
        )

    def check_truncation(self, truncation):
        """`truncation` if the model can use it, else `BadRequest`.

        None (left out) is no truncation. Otherwise t must be a finite number > 0: z's
        entries beyond t are re-sampled, so t <= 0 has no meaning. A model with
        truncation-indexed statistics has them for 0 < t <= 1 only, and the library would
        fall back to its moving statistics above that: refused here, because the picture
        would not be the truncation-t one such a model is made for. Without statistics any
        t > 0 is a threshold of z (t = 2 truncates little; t >= 5 almost never changes z).
        """
        if truncation is None:
            return None
        t = float(truncation)
        if not (math.isfinite(t) and t > 0):
            raise BadRequest(f"truncation must be a number > 0 (leave it out for none), got {t:g}")
        if self.standing_stats and t > 1:
            raise BadRequest(
                f"truncation {t:g} is above 1: this model's truncation-indexed statistics "
                f"cover 0 < t <= 1 ({self.standing_stats} entries) and have none for {t:g}"
            )
        return t

    def close(self) -> None:
        """Lets the running picture finish and drops the queued ones."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _check_count(self, name: str, value, low: int, rows: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise BadRequest(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise BadRequest(f"{name} must be >= {low}, got {value}")
        if rows * value > self.max_samples:
            what = f"{name}={value}" if rows == 1 else f"{rows} classes x {name}={value}"
            raise BadRequest(
                f"{what} is {rows * value} images, above this server's --max_samples="
                f"{self.max_samples}"
            )
        return int(value)

    def _run(self, render, *args) -> bytes:
        """`render(*args)` on the worker thread; waits for its PNG."""
        try:
            future = self._worker.submit(render, *args)
        except RuntimeError:  # submit() after close()
            raise BadRequest("the explorer is shutting down", 503) from None
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # queued when close() came
            raise BadRequest("the explorer is shutting down", 503) from None

    def _render_samples(self, indices, n, truncation, seed) -> bytes:
        rows = [
            self.gen.sample(
                classes=[k], n=n, truncation=truncation, seed=seed, batch_size=BATCH_SIZE
            )
            for k in indices
        ]
        return encode_png(np.concatenate(rows), rows=len(indices))

    def _render_interpolation(self, a, b, seed_a, seed_b, frames, mode, truncation) -> bytes:
        gen = self.gen
        z_a, z_b = (
            imaging.truncated_z(1, gen.dim_z, truncation, seed=s)[0] for s in (seed_a, seed_b)
        )
        y_a, y_b = loader.onehot(gen, [a, b])
        z = _path(z_a, z_b, frames, moves=mode != "class")
        y = _path(y_a, y_b, frames, moves=mode != "z")
        images = [
            imaging.to_uint8(gen.generate(z[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE], truncation))
            for i in range(0, frames, BATCH_SIZE)
        ]
        return encode_png(tf.concat(images, axis=0), rows=1)


def _path(a, b, frames: int, moves: bool) -> np.ndarray:
    """`[frames, *a.shape]`: `imaging.interpolate(a, b, frames)` if `moves`, else `a` in
    every frame."""
    return imaging.interpolate(a, b, frames) if moves else np.repeat(a[None], frames, axis=0)


def encode_png(images, rows: int) -> bytes:
    """PNG bytes of `images` (uint8 `[N, R, R, 3]`) tiled in `rows` rows with `PAD`:
    `imaging.image_grid` encoded by `tf.io.encode_png`, what `tf_biggan.save_grid` writes
    to its file through `imaging.write_png`, so the bytes are the same."""
    grid = imaging.image_grid(images, rows, len(images) // rows, PAD)
    return tf.io.encode_png(grid).numpy()


def nearest_names(value: str, names, limit: int = 5) -> list[str]:
    """Up to `limit` names for a mistyped `value`: those that contain it (case ignored),
    then the closest spellings (`difflib`), case ignored, in order."""
    lowered = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    needle = value.strip().lower()
    found = [name for key, name in lowered.items() if needle and needle in key]
    found += [lowered[key] for key in difflib.get_close_matches(needle, lowered, limit, 0.6)]
    return list(dict.fromkeys(found))[:limit]


def standing_stats_entries(gen) -> int:
    """Entries T of the generator's truncation-indexed BN statistics, 0 when it has none.

    A `model_dir` generator is a network (`Generator.num_standing_stats`); an export says
    it in its `assets/config.json` ("generator" config)."""
    network = getattr(gen, "network", None)
    if network is not None:
        return int(getattr(network, "num_standing_stats", 0))
    config_path = os.path.join(gen.source, "assets", "config.json")
    if not tf.io.gfile.exists(config_path):
        return 0
    with tf.io.gfile.GFile(config_path) as f:
        config = json.load(f)
    return int(config.get("generator", {}).get("num_standing_stats", 0))


def serve(gen, host: str = "127.0.0.1", port: int = 0, max_samples: int = 64) -> ExploreServer:
    """Serves `gen` in a background thread and returns the running server (`.url`;
    `.close()` stops it). Port 0 picks a free port: tests and notebooks use this."""
    return ExploreServer(host, port, Explorer(gen, max_samples)).start()


def _check_seed(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    if not _INT64[0] <= value <= _INT64[1]:
        raise BadRequest(f"{name} must fit in 64 bits, got {value}")
    return int(value)


def main(argv) -> None:
    from absl import flags, logging

    del argv
    f = flags.FLAGS
    if bool(f.model_dir) == bool(f.export):
        raise flags.ValidationError("give exactly one of --model_dir and --export")
    # The port first: a port in use is reported before seconds of loading.
    try:
        server = ExploreServer(f.host, f.port)
    except OSError as error:
        raise SystemExit(
            f"tf-biggan-explore: cannot listen on {f.host}:{f.port} ({error.strerror}); "
            "pass another --port (0 picks a free one)"
        ) from None
    by_step = f.checkpoint is not None and f.checkpoint.isdigit()
    gen = loader.load_generator(
        model_dir=f.model_dir,
        saved_model=f.export,
        checkpoint_path=None if by_step else f.checkpoint,
        step=int(f.checkpoint) if by_step else None,
        precision=f.precision,
    )
    server.explorer = Explorer(gen, f.max_samples)
    if f.host not in ("127.0.0.1", "localhost", "::1"):
        logging.warning(
            "--host=%s: other machines can reach the explorer; it has no authentication", f.host
        )
    # A program started in the background of a script without job control inherits SIGINT
    # ignored, and Python then leaves it so: Ctrl-C (or `kill -INT`) would not stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"tf-biggan-explore: {gen.source} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _define_flags() -> None:
    from absl import flags

    from tf_biggan import precision as precision_lib

    flags.DEFINE_string("model_dir", None, "Training directory (its EMA generator).")
    flags.DEFINE_string("export", None, "Export folder or one of its version folders.")
    flags.DEFINE_string(
        "checkpoint", None, "With --model_dir: a step N or a checkpoint prefix (default latest)."
    )
    flags.DEFINE_enum(
        "precision",
        None,
        list(precision_lib.PRECISIONS),
        "What the generator computes in. Default float32 with --model_dir, the export's own "
        "with --export.",
    )
    flags.DEFINE_string(
        "host",
        "127.0.0.1",
        "Address to listen on; the default is reachable from this machine only.",
    )
    flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.", 0, 65535)
    flags.DEFINE_integer(
        "max_samples", 64, "The most images one picture may hold (classes x n, or frames).", 1
    )


def cli() -> None:
    """The `tf-biggan-explore` console script: `python -m tf_biggan.explore` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, _define_flags, main)


if __name__ == "__main__":
    cli()
