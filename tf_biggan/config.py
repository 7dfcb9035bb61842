"""Parsing of gin experiment files for the command-line entry points.

Every module that defines a configurable is imported before parsing, so a
binding of any of them works from any CLI and a typo in a binding fails with
gin's error naming it instead of being skipped.
"""

from __future__ import annotations

import importlib
import os

import gin

CONFIGURABLE_MODULES = (
    "tf_biggan.networks",
    "tf_biggan.data",
    "tf_biggan.state",
    "tf_biggan.train",
)


def parse_gin(config_files, bindings=(), finalize: bool = True) -> None:
    """Parses gin files and bindings after registering all configurables.

    Args:
      config_files: paths of `.gin` files, applied in order.
      bindings: extra binding strings, applied after the files.
      finalize: lock the config so later changes raise.

    Raises:
      FileNotFoundError: a config file does not exist.
      ValueError: gin's error for an unknown configurable or parameter.
    """
    for module in CONFIGURABLE_MODULES:
        importlib.import_module(module)
    for path in config_files:
        if not os.path.exists(path):
            raise FileNotFoundError(f"gin config file not found: {path}")
    gin.parse_config_files_and_bindings(
        list(config_files), list(bindings), finalize_config=finalize
    )
