"""Parsing of gin experiment files for the command-line entry points.

Every module that defines a configurable is imported before parsing, so a
binding of any of them works from any CLI and a typo in a binding fails with
gin's error naming it instead of being skipped. `define_gin_flags` gives the
CLIs their `--gin_config` / `--gin_bindings` flags.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os

import gin
from absl import flags

# The flags `define_gin_flags` defines belong to the program that calls it: they are its key
# flags, listed by its --helpshort.
flags.disclaim_key_flags()

CONFIGURABLE_MODULES = (
    "tf_biggan.networks",
    "tf_biggan.data",
    "tf_biggan.optimizers",
    "tf_biggan.step",
    "tf_biggan.recovery",
    "tf_biggan.distribute",
    "tf_biggan.summaries",
    "tf_biggan.settings",
)

# Folders already added to gin's search path for `include` (gin keeps a list that only grows).
_search_folders: set[str] = set()


def define_gin_flags(config_help: str, bindings_help: str = "Extra gin bindings.") -> None:
    """Defines the repeatable `--gin_config` and `--gin_bindings` flags (default `[]`) that a
    CLI passes to `parse_gin`.

    Args:
      config_help: help of `--gin_config` (what the files configure in this program).
      bindings_help: help of `--gin_bindings`.
    """
    flags.DEFINE_multi_string("gin_config", [], config_help)
    flags.DEFINE_multi_string("gin_bindings", [], bindings_help)


SHIPPED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
"""The experiment files shipped with the package (`gin_configs/` in a checkout)."""


def shipped_configs() -> list[str]:
    """Names of the shipped experiments (`imagenet128`, `quickstart`, ...)."""
    return sorted(
        name[: -len(".gin")] for name in os.listdir(SHIPPED_CONFIGS) if name.endswith(".gin")
    )


def resolve_config(path: str) -> str:
    """`path` if it exists, else the shipped config of that name (`quickstart`,
    `imagenet128.gin`), so an installed package finds its experiments from any folder.

    Raises:
      FileNotFoundError: neither, naming the shipped configs.
    """
    if os.path.exists(path):
        return path
    name = os.path.basename(path)
    shipped = os.path.join(SHIPPED_CONFIGS, name if name.endswith(".gin") else name + ".gin")
    if name == path and os.path.exists(shipped):
        return shipped
    raise FileNotFoundError(
        f"gin config file not found: {path} (the shipped ones, by name: "
        f"{', '.join(shipped_configs())})"
    )


def parse_gin(config_files, bindings=(), finalize: bool = True) -> None:
    """Parses gin files and bindings after registering all configurables.

    Args:
      config_files: paths of `.gin` files, or names of shipped ones (`quickstart`), applied
        in order.
      bindings: extra binding strings, applied after the files.
      finalize: lock the config so later changes raise.

    Raises:
      FileNotFoundError: a config file does not exist.
      ValueError: gin's error for an unknown configurable or parameter, or an unknown
        `train.<setting>`.
    """
    for module in CONFIGURABLE_MODULES:
        importlib.import_module(module)
    config_files = [resolve_config(path) for path in config_files]
    for path in config_files:
        # `include 'base/imagenet.gin'` resolves against the including file's folder too,
        # so configs work from any working directory.
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in _search_folders:
            _search_folders.add(folder)
            gin.add_config_file_search_path(folder)
    with _quiet_include_probes():
        gin.parse_config_files_and_bindings(
            list(config_files), list(bindings), finalize_config=finalize
        )
    # `train` takes any setting name (see tf_biggan.settings); check them now.
    from tf_biggan import settings

    settings.check_setting_names(gin.get_bindings("train"))


class _IncludeProbeFilter(logging.Filter):
    """Drops gin's "Path not found" errors: gin logs one for every include it does not find
    as a package resource before it looks in the search path, where it finds it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.filename == "resource_reader.py"
            and record.getMessage().startswith("Path not found")
        )


@contextlib.contextmanager
def _quiet_include_probes():
    root, probe_filter = logging.getLogger(), _IncludeProbeFilter()
    root.addFilter(probe_filter)
    try:
        yield
    finally:
        root.removeFilter(probe_filter)
