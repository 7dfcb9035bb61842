"""Running a program's `main` as an installed console script (`tf-biggan-train`, ...)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags


def run(module_name: str, define_flags: Callable[[], None], main: Callable) -> None:
    """Defines the program's flags and runs `main` with absl, as `python -m module_name` does.

    absl's `--helpshort` lists the flags of the program's main module, which for a console
    script is the script itself; the flags of `module_name` are listed under it too.
    """
    define_flags()
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
