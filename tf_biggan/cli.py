"""Running a program's `main`: as `python -m tf_biggan.<program>` and as an installed console
script (`tf-biggan-train`, ...)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

from tf_biggan import memory


def run(module_name: str, define_flags: Callable[[], None], main: Callable) -> None:
    """Defines the program's flags and runs `main` with absl, as `python -m module_name` does.

    The process's malloc arenas are capped first (`memory.limit_malloc_arenas`): a program owns
    its process, which a library imported elsewhere does not.

    absl's `--helpshort` lists the flags of the program's main module, which for a console
    script is the script itself; the flags of `module_name` are listed under it too.
    """
    define_flags()
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    memory.limit_malloc_arenas()
    app.run(main)
