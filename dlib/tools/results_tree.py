"""The results tree of a profile, ``results/<profile>/``: which folder belongs to which notebook, and whether it is
whole.

A numbered folder ``NN_name`` holds what notebook ``NN_name.ipynb`` wrote; other folders (benchmarks,
tools) are listed after them by name. A folder marked INCOMPLETE (:func:`dlib.tools.notebooks.incomplete_marker`)
holds an interrupted run's files: :func:`refuse_incomplete` names it. Used by :mod:`dlib.tools.report`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlib.core.io import read_json
from dlib.experiments.results import results_root
from dlib.tools.notebooks import NOTEBOOK_DIR, RUNNING_ENV, discover, incomplete_marker

REPORT_DIR = "report"
_NUMBERED = re.compile(r"^(\d\d)_[A-Za-z0-9_]+$")
_NOT_RESULTS = {REPORT_DIR, "notebooks"}


@dataclass
class Folder:
    """One results folder (``NN_name`` for a notebook, any other name for benchmarks and tools)."""

    key: str  # "05" for a notebook, the folder name otherwise
    name: str  # "05_training"
    path: Path | None  # None when the notebook has not run on this profile
    notebook: Path | None = None  # the source notebook, when known
    title: str = ""


def notebook_title(path: str | os.PathLike) -> str:
    """The first Markdown heading of a notebook (``# 01 · Atrous ...`` -> ``01 · Atrous ...``), or ``""``."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for line in text.splitlines():
            match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match and match.group(1):
                return match.group(1)
    return ""


def _discover_notebooks(notebook_dir: Path | None) -> dict[str, Path]:

    folder = NOTEBOOK_DIR if notebook_dir is None else Path(notebook_dir)
    return discover(folder) if folder.is_dir() else {}


def folders(results_dir: Path, notebook_dir: Path | None) -> tuple[list[Folder], list[Folder]]:
    """Notebook folders in notebook order (run or not), then the other result folders by name.

    A numbered folder without a notebook of the same name (a renamed or removed notebook) is kept,
    under its own name: the report shows what is on disk.
    """
    present = {p.name: p for p in sorted(results_dir.iterdir())} if results_dir.is_dir() else {}
    present = {n: p for n, p in present.items() if p.is_dir() and not n.startswith(".") and n not in _NOT_RESULTS}
    numbered = {nb.stem: Folder(key, nb.stem, present.get(nb.stem), nb, notebook_title(nb))
                for key, nb in _discover_notebooks(notebook_dir).items()}
    for name, path in present.items():
        match = _NUMBERED.match(name)
        if match and name not in numbered:
            numbered[name] = Folder(match.group(1), name, path)
    others = [Folder(name, name, path) for name, path in present.items() if not _NUMBERED.match(name)]
    return sorted(numbered.values(), key=lambda f: (f.key, f.name)), others


def notebook_status(profile: str, results_dir: str | os.PathLike | None = None, *,
                    notebook_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One dict per numbered notebook (and numbered results folder): number, name, title, files written."""
    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    numbered, _ = folders(results_dir, Path(notebook_dir) if notebook_dir is not None else None)
    rows = []
    for f in numbered:
        files = sorted(p.suffix for p in f.path.iterdir() if p.is_file()) if f.path is not None else []
        status = "not run yet" if f.path is None else ("incomplete" if (f.path / "INCOMPLETE").exists() else "ran")
        rows.append({"notebook": f.name, "title": f.title or f.name, "status": status,
                     "tables": files.count(".csv"), "figures": files.count(".png"), "json": files.count(".json")})
    return rows


def provenances(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, provenance) of every JSON in ``folder`` that carries one."""
    found = []
    for path in sorted(folder.glob("*.json")):
        payload = read_json(path, default=None)
        if payload and isinstance(payload.get("provenance"), dict):
            found.append((path.name, payload["provenance"]))
    return found


class IncompleteResults(ValueError):
    """A results folder is marked INCOMPLETE (a notebook run was interrupted or failed)."""


def refuse_incomplete(folders: Sequence[Folder], profile: str) -> None:
    """Raise naming every folder marked incomplete, except the one of the notebook running now (notebook 08)."""

    running = os.environ.get(RUNNING_ENV)
    marked = [f for f in folders if f.path is not None and f.name != running and incomplete_marker(f.path).exists()]
    if marked:
        numbers = " ".join(f.name[:2] for f in marked if f.name[:2].isdigit())
        raise IncompleteResults(
            f"results folder(s) {', '.join(str(f.path) for f in marked)} are marked INCOMPLETE (a notebook run was "
            "interrupted or failed, so old and new files may be mixed); re-run "
            + (f"them (python -m dlib.tools.notebooks --profile {profile} --only {numbers})" if numbers else "them")
            + " before building the report")
