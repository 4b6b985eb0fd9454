"""The report: paper beside measured in one row, figures linked (never copied), links that resolve, nothing faked."""

import re

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
from results_helpers import PROFILE, make_tree, write_notebook  # noqa: E402  (the fake results tree)

from dlib.core.io import read_json
from dlib.tools import report


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def _row(text: str, first_cell: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |")]
    assert len(lines) == 1, f"expected one table row starting with {first_cell!r}, found {lines}"
    return lines[0]


def _local_links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("#", "http"))]


def test_paper_and_measured_side_by_side(tree):
    path = report.build_report(PROFILE, notebook_dir=tree["notebooks"])
    assert path == tree["root"] / "report" / "README.md"  # default results dir honours DLIB_RESULTS_DIR
    text = path.read_text()
    head = text.split("## Provenance")[0]
    assert "paper, DeepLab v2 Table 4" in head and "paper, DeepLab v2 Table 3" in head
    base = _row(head, "baseline")
    assert "68.72" in base and f"{tree['mean']:.2f} ± {tree['std']:.2f}" in base  # 60.13 ± 0.40
    assert "60.10, 60.55, 59.75" in base and "| 3 |" in base
    msc = _row(head, "+MSC")
    assert "71.27" in msc and "not run: no time on this machine" in msc and "+2.55" in msc
    # Table 3 has no CSV: the paper's numbers (DeepLab v2, Table 3) with "not run yet", nothing measured.
    t3 = head.split("Table 3:")[1]
    assert "65.76" in _row(t3, "LargeFOV") and "not run yet" in _row(t3, "LargeFOV")
    assert "71.57" in _row(t3, "ASPP-L +CRF")


def test_sections_figures_tables_and_links(tree):
    path = report.build_report(PROFILE, notebook_dir=tree["notebooks"])
    text = path.read_text()
    rdir = path.parent
    # Notebook order, titles from the first heading, missing notebooks listed as not run.
    order = [text.index(s) for s in ("### 01 · Alpha things", "### 06 · Ablations", "### 07 · Gamma, never run")]
    assert order == sorted(order)
    gamma = text.split("### 07 · Gamma, never run")[1]
    assert gamma.lstrip().startswith("_Not run yet_")
    assert "2 of 3 notebooks have results" in text and "not run yet: 07_gamma" in text
    # The figure: linked where the notebook wrote it, with its vector copy; nothing copied into report/.
    assert "](../01_alpha/curve.png)" in text and "[SVG](../01_alpha/curve.svg)" in text
    assert not (rdir / "figures").exists()
    assert sorted(p.name for p in rdir.rglob("*") if p.is_file()) == ["README.md"]
    # Every relative link resolves to a file or folder that exists.
    links = _local_links(text)
    assert "../notebooks/01_alpha.ipynb" in links and "../01_alpha/short.csv" in links
    for link in links:
        assert (rdir / link).exists(), f"broken link {link}"
    # Tables: floats rounded, long tables cut with a note and a link to the CSV.
    assert "| a | 0.3333 |" in text and "| b | 1235 |" in text
    assert "_Showing 30 of 40 rows" in text and "| 29 | 841 |" in text and "| 30 | 900 |" not in text
    # Provenance from the JSON the notebook wrote.
    prov = read_json(tree["root"] / "01_alpha" / "summary.json")["provenance"]
    assert prov["device"] in text and prov["versions"]["numpy"] in text
    assert prov["git_commit"].split("-")[0][:10] in text


def test_rerun_is_idempotent_and_old_copies_go(tree):
    path = report.build_report(PROFILE, notebook_dir=tree["notebooks"])
    first = path.read_bytes()
    legacy = path.parent / "figures" / "01_curve.png"  # the copy an older report made
    legacy.parent.mkdir()
    legacy.write_bytes(b"an old copy")
    assert report.build_report(PROFILE, notebook_dir=tree["notebooks"]).read_bytes() == first
    assert not legacy.parent.exists()
    (tree["root"] / "01_alpha" / "curve.png").unlink()  # the source goes: so does its link
    text = report.build_report(PROFILE, notebook_dir=tree["notebooks"]).read_text()
    assert "curve.png" not in text


def test_empty_results_do_not_fail(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_alpha.ipynb", "01 · Alpha")
    path = report.build_report(PROFILE, tmp_path / "nothing" / PROFILE, notebook_dir=nbs)
    text = path.read_text()
    assert "0 of 1 notebooks have results" in text and "_Not run yet_" in text
    assert "68.72" in text and "77.69" in text  # DeepLab v2, Table 4: first and last rows, the paper's
    for link in _local_links(text):
        assert (path.parent / link).exists(), f"broken link {link}"
