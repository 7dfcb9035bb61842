"""The layout docs/architecture.md describes is the code's: every module and name it gives,
the import table, the one-way direction; functions of at most 80 lines, modules of at most
700 and a short train.py."""

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


def _package_imports(tree) -> set[str]:
    """The top-level tf_biggan modules a parsed file imports (`from tf_biggan import x`,
    `from tf_biggan.x import ...`, `import tf_biggan.x`)."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "tf_biggan":
                imported.update(alias.name for alias in node.names)
            elif node.module.startswith("tf_biggan."):
                imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("tf_biggan.")
            )
    return imported


def _imports_in_code():
    found = {}
    for path in _python_files():
        module = _top_module(path)
        if module == "__init__":
            continue
        targets = found.setdefault(module, set())
        targets.update(_package_imports(ast.parse(open(path, encoding="utf-8").read())))
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


def test_no_module_is_longer_than_700_lines():
    long = {}
    for path in _python_files():
        with open(path, encoding="utf-8") as f:
            count = len(f.read().splitlines())
        if count > 700:
            long[os.path.relpath(path, REPO)] = count
    assert not long


def _module_names():
    """Every module of the package by its own name (`pipeline`, `spectral`, ...), and the
    top-level ones by their import name."""
    names = set()
    for path in _python_files():
        parts = os.path.relpath(path, PACKAGE)[: -len(".py")].split(os.sep)
        names.update(p for p in parts if p not in ("__init__", "__main__"))
    return names


def test_every_module_is_named_in_the_architecture_page():
    text = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
    named = set(re.findall(r"`(\w+)/?`", text))
    assert not _module_names() - named


_FILE_SUFFIXES = (".json", ".npz", ".png", ".py", ".gin", ".md")
_OTHER_LIBRARIES = ("tf.", "keras.", "gin.", "np.")


def _code_names():
    """Every name the package defines: modules, functions, classes, methods, assignment
    targets (attributes included), parameters and dataclass fields; and the strings that are
    identifiers (metric names such as `nonfinite` or `loss/d_real`, setting names)."""
    names = set(_module_names()) | {"tf_biggan"}
    for path in _python_files():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[A-Za-z_]\w*(/\w+)*", node.value):
                    names.update(node.value.split("/"))
    return names


def test_every_name_on_the_architecture_page_exists():
    """Each `name` or `a.b.c` in backticks is something the package defines (each part of
    it), a file name, a gin macro of the shipped configs or TensorFlow's."""
    text = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
    configs = "".join(
        open(os.path.join(PACKAGE, "configs", name), encoding="utf-8").read()
        for name in os.listdir(os.path.join(PACKAGE, "configs"))
        if name.endswith(".gin")
    )
    macros = set(re.findall(r"^([A-Z_]+) = ", configs, re.MULTILINE))
    defined = _code_names()
    missing = [
        name
        for name in sorted(set(re.findall(r"`([A-Za-z_][\w.]*)(?:\(\))?/?`", text)))
        if not name.endswith(_FILE_SUFFIXES)
        and not name.startswith(_OTHER_LIBRARIES)
        and name not in macros
        and not all(part in defined for part in name.split("."))
    ]
    assert not missing


def test_the_fast_tier_touches_every_module():
    """`pytest -m "not slow"` imports every top-level module of the package: each is
    imported by a test module that is not slow as a whole (`pytestmark = pytest.mark.slow`)
    and has tests outside the slow mark."""
    tests_dir = os.path.join(REPO, "tests")
    touched = set()
    for name in sorted(os.listdir(tests_dir)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(tests_dir, name), encoding="utf-8").read())
        whole_module_slow = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "slow" in ast.unparse(node.value)
            for node in tree.body
        )
        tests = [
            n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")
        ]
        fast_tests = [
            n for n in tests if not any("slow" in ast.unparse(d) for d in n.decorator_list)
        ]
        if whole_module_slow or (tests and not fast_tests):
            continue
        touched.update(_package_imports(tree))
    modules = set(_imports_in_code()) | {"__init__"}
    # `import tf_biggan` itself covers the package's __init__.
    touched.add("__init__")
    assert not modules - touched
