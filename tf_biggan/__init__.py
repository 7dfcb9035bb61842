"""tf_biggan: BigGAN (Brock, Donahue, Simonyan, ICLR 2019) in TensorFlow 2 / Keras 3.

The Python API (TensorFlow is imported on first use, not by `import tf_biggan`):

    import tf_biggan

    gen = tf_biggan.load("runs/quickstart")       # a model_dir, an export or a version folder
    fast = tf_biggan.load("runs/quickstart", precision="bfloat16")
    images = gen.sample(classes=["red circle", 3], n=8, truncation=0.5, seed=0)  # uint8 numpy
    tf_biggan.save_grid(images, "samples.png", rows=2)
    z = tf_biggan.truncated_noise(8, gen.dim_z, truncation=0.5, seed=0)
    print(gen.class_names)

Importing tf_biggan caps glibc's malloc arenas at `MALLOC_ARENAS` (lower peak memory; an
environment that sets `MALLOC_ARENA_MAX` keeps its own value).
"""

import ctypes
import os
import sys

__version__ = "0.3.0.dev0"
"""The one version number: setup.cfg reads it from here."""

MALLOC_ARENAS = 2
"""glibc malloc arenas that `import tf_biggan` allows the process (see `_limit_malloc_arenas`)."""


def _limit_malloc_arenas(arenas: int = MALLOC_ARENAS, environ=os.environ, load_libc=None) -> bool:
    """Caps glibc's malloc arenas at `arenas`, as `MALLOC_ARENA_MAX` would; True if it did.

    glibc gives each thread that meets a busy arena a new one, up to 8 per core, and freed
    tensor memory stays in the arena that held it. TensorFlow's thread pools spread a training
    step's tensors over many arenas, so the peak RSS crept up from step to step: at 128 px
    (ch 96, batch 8, four steps) 5,097-5,150 MiB with glibc's default, 4,959 MiB with two
    arenas, at the same step rate (docs/performance.md). It runs at import, before TensorFlow
    starts its threads. Left alone: a process whose environment sets `MALLOC_ARENA_MAX`
    (glibc has already applied it), and a C library other than glibc.
    """
    if "MALLOC_ARENA_MAX" in environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = (load_libc or ctypes.CDLL)("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # glibc's <malloc.h>
    return mallopt(m_arena_max, arenas) == 1


_limit_malloc_arenas()


def load(path: str, precision: str | None = None):
    """A generator from a training `model_dir`, an export or a version folder.

    `precision`: "float32" or "bfloat16" (faster on CPUs with AVX512-BF16 and on
    accelerators). None: float32 for a `model_dir`, an export's own precision for an export.

    Returns a `tf_biggan.sample.LoadedGenerator`: `sample(classes, n, truncation, seed)` ->
    uint8 numpy `[n, R, R, 3]`, `generate(z, y_onehot)` -> float32 `[B, R, R, 3]` in
    [-1, 1], `class_names`, `dim_z`, `num_classes`, `resolution`.
    """
    from tf_biggan import sample

    return sample.load(path, precision=precision)


def truncated_noise(n: int, dim: int, truncation=None, seed=None):
    """float32 numpy z `[n, dim]`: N(0, I), entries with |z| > truncation resampled."""
    from tf_biggan import imaging

    return imaging.truncated_z(n, dim, truncation, seed=seed)


def save_grid(images, path: str, rows: int = 1, pad: int = 2) -> None:
    """Writes `images` (uint8 `[N, H, W, 3]`, or float in [-1, 1]) as one PNG grid of `rows`
    rows (N must be a multiple of `rows`)."""
    import numpy as np

    from tf_biggan import imaging

    images = np.asarray(images)
    if len(images) % rows:
        raise ValueError(f"{len(images)} images do not fill {rows} rows")
    imaging.write_png(path, imaging.image_grid(images, rows, len(images) // rows, pad))
