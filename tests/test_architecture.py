"""The layout docs/architecture.md describes is the code's: the import table, the one-way
direction, functions of at most 80 lines and a short train.py."""

import ast
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "tf_biggan")


def _python_files():
    for folder, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def _top_module(path):
    """tf_biggan/data/pipeline.py -> "data"; tf_biggan/step.py -> "step"."""
    parts = os.path.relpath(path, PACKAGE)[: -len(".py")].split(os.sep)
    return parts[0]


def _imports_in_code():
    found = {}
    for path in _python_files():
        module = _top_module(path)
        if module == "__init__":
            continue
        targets = found.setdefault(module, set())
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "tf_biggan":
                    targets.update(alias.name for alias in node.names)
                elif node.module.startswith("tf_biggan."):
                    targets.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tf_biggan."):
                        targets.add(alias.name.split(".")[1])
        targets.discard(module)
    return found


def _imports_in_docs():
    text = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
    section = text.split("## Who imports whom", 1)[1].split("\n## ", 1)[0]
    table, order = {}, []
    for line in section.splitlines():
        match = re.fullmatch(r"\| (.+?) \| (.+?) \|", line.strip())
        if not match or match.group(1) in ("module", "---"):
            continue
        imports = set() if match.group(2) == "—" else set(match.group(2).split(", "))
        for module in re.findall(r"`(\w+)`", match.group(1)):
            table[module] = imports
            order.append(module)
    return table, order


def test_the_import_table_is_the_codes():
    code = _imports_in_code()
    docs, _ = _imports_in_docs()
    assert set(docs) == set(code)
    for module, imports in code.items():
        assert imports == docs[module], module


def test_imports_go_one_way_down_the_table():
    docs, order = _imports_in_docs()
    position = {module: i for i, module in enumerate(order)}
    for module, imports in docs.items():
        for target in imports:
            assert position[target] < position[module], f"{module} imports {target}"


def test_no_function_is_longer_than_80_lines_and_train_is_short():
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > 80:
                    long.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {node.name}")
    assert not long
    with open(os.path.join(PACKAGE, "train.py"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) < 400
