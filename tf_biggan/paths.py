"""User-given paths: `~` and environment variables expanded, the same way everywhere.

Paths reach the library from gin bindings (data roots, TFDS folders, statistics files),
from command-line flags and from Python. Each function that takes a path from a user
passes it through `expand` once, at its entry, so `~/data` and `$SCRATCH/runs` mean
in a gin file what they mean in a shell. Remote paths (`gs://...`) are left as they are.
"""

from __future__ import annotations

import os

__all__ = ["expand"]


def expand(path: str | os.PathLike | None) -> str | None:
    """`path` with a leading `~` or `~user` and `$VAR` / `${VAR}` expanded; None stays None.

    An unset variable is left as written (as the shell's `set -u` would not), so the
    error that follows names what the user wrote.
    """
    if path is None:
        return None
    path = os.fspath(path)
    if "://" in path:
        return path
    return os.path.expanduser(os.path.expandvars(path))
