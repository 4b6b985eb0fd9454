"""dlib's modules sit in the layers the README draws: each imports only from its own layer or below, and the
imports (function-level ones included) form no cycle. The README block is the one statement of the layers."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABEL_WIDTH = 13  # the README block's first column: the layer number and its name


def readme_layers() -> dict[str, int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    layers: dict[int, str] = {}
    layer = None
    for line in block.strip().strip("`").strip().splitlines():
        number = line[:LABEL_WIDTH].split()[0] if line[:LABEL_WIDTH].strip() else ""
        if number.isdigit():
            layer = int(number)
        layers[layer] = layers.get(layer, "") + " " + line[LABEL_WIDTH:]
    found: dict[str, int] = {}
    for number, body in layers.items():
        while re.search(r"\([^()]*\)", body):
            body = re.sub(r"\([^()]*\)", "", body)  # the descriptions
        for name in (n.strip() for n in body.split(",")):
            assert name not in found, f"{name} is drawn in two layers"
            found[name] = number
    return found


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dlib modules ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            out.update(n for n in names if n in modules and n != path.stem)
    return out


def test_the_readme_draws_every_module_once():
    modules = {p.stem for p in (ROOT / "dlib").glob("*.py")} - {"__init__"}
    assert set(readme_layers()) == modules


def test_no_module_imports_from_a_higher_layer():
    layers = readme_layers()
    wrong = [f"{m} (layer {layers[m]}) imports {d} (layer {layers[d]})"
             for m in layers for d in imports_of(ROOT / "dlib" / f"{m}.py", set(layers)) if layers[d] > layers[m]]
    assert not wrong, wrong


def test_the_imports_form_no_cycle():
    layers = readme_layers()
    graph = {m: imports_of(ROOT / "dlib" / f"{m}.py", set(layers)) for m in layers}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join(path + (m,))
        if m not in done:
            for d in sorted(graph[m]):
                visit(d, path + (m,))
            done.add(m)

    for m in sorted(graph):
        visit(m, ())
