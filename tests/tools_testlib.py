"""The scripts of tools/ as modules, for their tests (tools/ is not a package)."""

import functools
import importlib.util
import pathlib

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


@functools.cache
def load_tool(name: str):
    """`tools/<name>.py` as a module, loaded once per test process (its flags are defined
    only when it runs as a program)."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
