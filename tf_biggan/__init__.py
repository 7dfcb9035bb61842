"""tf_biggan: BigGAN (Brock, Donahue, Simonyan, ICLR 2019) in TensorFlow 2 / Keras 3.

The Python API (TensorFlow is imported on first use, not by `import tf_biggan`):

    import tf_biggan

    gen = tf_biggan.load("runs/quickstart")       # a model_dir, an export or a version folder
    fast = tf_biggan.load("runs/quickstart", precision="bfloat16")
    images = gen.sample(classes=["red circle", 3], n=8, truncation=0.5, seed=0)  # uint8 numpy
    tf_biggan.save_grid(images, "samples.png", rows=2)
    z = tf_biggan.truncated_noise(8, gen.dim_z, truncation=0.5, seed=0)
    print(gen.class_names)

Importing tf_biggan changes nothing in the host process. The command-line programs cap
glibc's malloc arenas when they start (`tf_biggan.memory.limit_malloc_arenas`, lower peak
memory); a notebook or a server may call it too.
"""

__version__ = "0.3.0.dev0"
"""The one version number: setup.cfg reads it from here."""


def load(path: str, precision: str | None = None):
    """A generator from a training `model_dir`, an export or a version folder.

    `precision`: "float32" or "bfloat16" (faster on CPUs with AVX512-BF16 and on
    accelerators). None: float32 for a `model_dir`, an export's own precision for an export.

    Returns a `tf_biggan.loader.LoadedGenerator`: `sample(classes, n, truncation, seed)` ->
    uint8 numpy `[n, R, R, 3]`, `generate(z, y_onehot)` -> float32 `[B, R, R, 3]` in
    [-1, 1], `class_names`, `dim_z`, `num_classes`, `resolution`.
    """
    from tf_biggan import loader

    return loader.load(path, precision=precision)


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
