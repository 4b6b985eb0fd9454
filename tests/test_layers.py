"""dlib's subpackages sit in the layers the README draws: a module imports only from its own package or from a
package of a lower layer, and the imports (function-level ones included) form no cycle. The README block is the
one statement of the layers and of which module lives in which package."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DLIB = ROOT / "dlib"
LABEL_WIDTH = 15  # the README block's first column: the layer number and the package's name


def readme_layers() -> dict[str, tuple[int, str]]:
    """{"package.module": (layer, package)} as the README's layer block draws it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    bodies: dict[tuple[int, str], str] = {}
    key = None
    for line in block.strip().strip("`").strip().splitlines():
        label = line[:LABEL_WIDTH].split()
        if label:
            key = (int(label[0]), label[1])
            assert key not in bodies, f"package {key[1]} is drawn twice"
        bodies[key] = bodies.get(key, "") + " " + line[LABEL_WIDTH:]
    found: dict[str, tuple[int, str]] = {}
    for (layer, package), body in bodies.items():
        while re.search(r"\([^()]*\)", body):
            body = re.sub(r"\([^()]*\)", "", body)  # the descriptions
        for name in (n.strip() for n in body.split(",")):
            assert f"{package}.{name}" not in found, f"{package}.{name} is drawn twice"
            found[f"{package}.{name}"] = (layer, package)
    return found


def module_files() -> dict[str, Path]:
    """{"package.module": file} for every module of every subpackage ("package.__init__" for its front door)."""
    return {f"{p.parent.name}.{p.stem}": p for p in DLIB.glob("*/*.py")}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dlib modules ``path`` imports, at module level or inside functions ("crf.__init__" for the package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (dlib imports by absolute name)"
            parts = (node.module or "").split(".")
            if parts[0] != "dlib":
                continue
            if len(parts) == 1:  # from dlib import crf, data
                out.update(f"{a.name}.__init__" for a in node.names)
            elif len(parts) == 2:  # from dlib.crf import exact / DenseCRF
                for a in node.names:
                    sub = f"{parts[1]}.{a.name}"
                    out.add(sub if sub in modules else f"{parts[1]}.__init__")
            else:
                out.add(".".join(parts[1:3]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "dlib" and len(parts) > 1:
                    out.add(".".join(parts[1:3]) if len(parts) > 2 else f"{parts[1]}.__init__")
    return out


def test_the_readme_draws_every_module_once():
    drawn = set(readme_layers())
    files = {m for m in module_files() if not m.endswith(".__init__")}
    assert drawn == files, f"drawn but missing: {sorted(drawn - files)}; not drawn: {sorted(files - drawn)}"


def test_no_module_imports_from_a_higher_or_sibling_layer():
    layers = readme_layers()
    package_layer = {package: layer for layer, package in layers.values()}
    files = module_files()
    wrong = []
    for module, path in files.items():
        package = module.split(".")[0]
        for dep in imports_of(path, set(files)):
            dep_package = dep.split(".")[0]
            if dep_package != package and package_layer[dep_package] >= package_layer[package]:
                wrong.append(f"{module} (layer {package_layer[package]}) imports {dep} "
                             f"(layer {package_layer[dep_package]})")
    assert not wrong, wrong


def test_the_imports_form_no_cycle():
    files = module_files()
    graph = {m: imports_of(p, set(files)) - {m} for m, p in files.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join(path + (m,))
        if m not in done:
            for d in sorted(graph[m]):
                visit(d, path + (m,))
            done.add(m)

    for m in sorted(graph):
        visit(m, ())


def test_the_top_level_holds_only_the_entry_points():
    assert sorted(p.name for p in DLIB.glob("*.py")) == ["__init__.py", "__main__.py"]
    assert imports_of(DLIB / "__main__.py", set(module_files())) == {"tools.cli"}


def test_the_checker_sees_a_relative_import_and_a_cycle(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("from . import x\n")
    try:
        imports_of(bad, set())
    except AssertionError as err:
        assert "relative import" in str(err)
    else:
        raise AssertionError("a relative import went unnoticed")
    both = tmp_path / "a.py"
    both.write_text("def f():\n    from dlib.crf import exact\nfrom dlib import data\n")
    assert imports_of(both, {"crf.exact"}) == {"crf.exact", "data.__init__"}


MODULE_LINES, FUNCTION_LINES = 400, 50  # what a newcomer reads in one sitting (README, Layout)


def test_no_module_over_400_lines_and_no_function_over_50():
    long_modules, long_functions = [], []
    for path in sorted(DLIB.rglob("*.py")):
        source = path.read_text()
        name = str(path.relative_to(DLIB))
        if len(source.splitlines()) > MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules and not long_functions, long_modules + long_functions
