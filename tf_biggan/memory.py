"""The process-wide memory setting that tf_biggan's programs apply: glibc's malloc arena cap.

`import tf_biggan` changes nothing in its host process. The programs (`tf-biggan-train`,
`python -m tf_biggan.train` and the other command-line programs, and `tools/benchmark.py`)
call `limit_malloc_arenas` when they start; a notebook, a server or a job that imports the
library can call it too, or set `MALLOC_ARENA_MAX=2` in its environment, which glibc applies
itself.
"""

from __future__ import annotations

import os
import sys

MALLOC_ARENAS = 2
"""glibc malloc arenas that the programs allow their process (see `limit_malloc_arenas`)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS, environ=None, load_libc=None) -> bool:
    """Caps glibc's malloc arenas at `arenas`, as `MALLOC_ARENA_MAX` would; True if it did.

    glibc gives each thread that meets a busy arena a new one, up to 8 per core, and freed
    tensor memory stays in the arena that held it. TensorFlow's thread pools spread a training
    step's tensors over many arenas, so the peak RSS crept up from step to step; two arenas
    lowered it at the same step rate (docs/performance.md, "What each choice gained"). Call
    it before the first TensorFlow op, which starts TensorFlow's thread pools. Left alone: a process whose environment sets
    `MALLOC_ARENA_MAX` (glibc has already applied it), and a C library other than glibc.

    Args:
      arenas: the cap, >= 1.
      environ: the environment to read `MALLOC_ARENA_MAX` from (default `os.environ`).
      load_libc: `name -> library` (default `ctypes.CDLL`); tests pass a stand-in.
    """
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ or not sys.platform.startswith("linux"):
        return False
    if load_libc is None:
        import ctypes  # Only here: importing the library loads no foreign-function machinery.

        load_libc = ctypes.CDLL
    try:
        mallopt = load_libc("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # glibc's <malloc.h>
    return mallopt(m_arena_max, arenas) == 1
