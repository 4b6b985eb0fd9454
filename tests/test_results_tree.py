"""The results tree of a profile (dlib.tools.results_tree): folders matched to notebooks, titles, incomplete runs."""

import json

import pytest

from dlib.tools import results_tree
from dlib.tools.notebooks import RUNNING_ENV, incomplete_marker


def _write_notebook(path, *cells):
    path.write_text(json.dumps({"cells": [{"cell_type": kind, "source": source} for kind, source in cells]}))
    return path


def test_notebook_title_is_the_first_markdown_heading(tmp_path):
    nb = _write_notebook(tmp_path / "01_a.ipynb", ("code", "# not a heading: code"),
                         ("markdown", ["Some words.\n", "\n", "## 01 · Atrous things ##\n"]), ("markdown", "# Later"))
    assert results_tree.notebook_title(nb) == "01 · Atrous things"
    assert results_tree.notebook_title(_write_notebook(tmp_path / "02_b.ipynb", ("markdown", "no heading"))) == ""
    assert results_tree.notebook_title(tmp_path / "absent.ipynb") == ""


@pytest.fixture
def layout(tmp_path):
    """Notebooks 01 and 03; results of 01 (one table, one figure), of a removed notebook 02, a benchmark folder,
    and the folders that are not results (report/, notebooks/)."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_alpha.ipynb", ("markdown", "# 01 · Alpha"))
    _write_notebook(nbs / "03_gamma.ipynb", ("markdown", "# 03 · Gamma"))
    res = tmp_path / "results"
    for name in ("01_alpha", "02_removed", "bench", "report", "notebooks"):
        (res / name).mkdir(parents=True)
    (res / "01_alpha" / "t.csv").write_text("a\n1\n")
    (res / "01_alpha" / "f.png").write_bytes(b"png")
    return nbs, res


def test_folders_in_notebook_order_then_the_others(layout):
    nbs, res = layout
    numbered, others = results_tree.folders(res, nbs)
    assert [(f.key, f.name, f.path, f.title) for f in numbered] == [
        ("01", "01_alpha", res / "01_alpha", "01 · Alpha"), ("02", "02_removed", res / "02_removed", ""),
        ("03", "03_gamma", None, "03 · Gamma")]
    assert [(f.name, f.path) for f in others] == [("bench", res / "bench")]


def test_notebook_status_counts_what_each_notebook_wrote(layout):
    nbs, res = layout
    incomplete_marker(res / "02_removed").write_text("interrupted")
    rows = results_tree.notebook_status("smoke", res, notebook_dir=nbs)
    assert [(r["notebook"], r["title"], r["status"], r["tables"], r["figures"]) for r in rows] == [
        ("01_alpha", "01 · Alpha", "ran", 1, 1), ("02_removed", "02_removed", "incomplete", 0, 0),
        ("03_gamma", "03 · Gamma", "not run yet", 0, 0)]


def test_incomplete_folders_are_refused_by_name_with_the_command(layout, monkeypatch):
    nbs, res = layout
    numbered, _ = results_tree.folders(res, nbs)
    results_tree.refuse_incomplete(numbered, "smoke")  # nothing marked: passes
    incomplete_marker(res / "02_removed").write_text("interrupted")
    with pytest.raises(results_tree.IncompleteResults, match=r"02_removed.*INCOMPLETE.*--profile smoke --only 02"):
        results_tree.refuse_incomplete(numbered, "smoke")
    monkeypatch.setenv(RUNNING_ENV, "02_removed")  # the notebook running now may be unfinished
    results_tree.refuse_incomplete(numbered, "smoke")
