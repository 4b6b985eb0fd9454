"""dlib.tools.rederive: notebook 06's committed tables and the headlines, re-derived from its committed scores."""

import shutil

import pandas as pd
import pytest

from dlib.core.io import REPO_ROOT
from dlib.tools import check, rederive

COMMITTED = REPO_ROOT / "results" / "cpu"


@pytest.fixture
def committed(tmp_path):
    if not (COMMITTED / "06_ablation" / "runs.json").is_file():
        pytest.skip("no committed results/cpu")
    shutil.copytree(COMMITTED / "06_ablation", tmp_path / "06_ablation",
                    ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    (tmp_path / "report").mkdir()
    shutil.copy(COMMITTED / "report" / "README.md", tmp_path / "report")
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_every_derived_file_of_notebook_06_is_covered():
    names = set(rederive.derived())
    for table in ("table4", "table3", "one_at_a_time"):
        assert f"{table}.csv" in names
    assert {"table4_verdicts.csv", "one_at_a_time_verdicts.csv", "table3_comparisons.csv"} <= names
    assert {"paper_claims.csv", "coco_control.csv", "convergence.csv", "convergence_summary.csv"} <= names


def test_the_committed_results_re_derive_exactly(committed, capsys):
    rows = rederive.check_derived(committed, committed / "README.md")
    assert [what for what, diff in rows if diff is not None] == []
    assert len(rows) == len(rederive.derived()) + 3  # every file, the README's two blocks, the report's
    assert check.main(["--profile", "cpu", "--results", str(committed), "--derived-only"]) == 0


def test_an_edited_table4_number_fails_naming_the_file(committed, capsys):
    path = committed / "06_ablation" / "table4.csv"
    table = pd.read_csv(path)
    table.loc[0, "measured_mean"] += 5  # five points added to the baseline
    table.to_csv(path, index=False)
    assert check.main(["--profile", "cpu", "--results", str(committed), "--derived-only"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "table4.csv" in failed[0] and "measured_mean" in failed[0]


def test_an_edited_readme_headline_fails_naming_the_readme(committed):
    readme = committed / "README.md"
    text = readme.read_text()
    start = text.index("<!-- HEADLINE_TABLE -->")
    baseline = pd.read_csv(committed / "06_ablation" / "table4.csv").loc[0, "measured_mean"]
    shown = f"{baseline:.2f}"  # the baseline's mean as the block prints it
    readme.write_text(text[:start] + text[start:].replace(shown, f"{baseline + 5:.2f}", 1))
    rows = dict(rederive.check_derived(committed, readme))
    assert "README.md" in rows["README.md HEADLINE_TABLE"] and "HEADLINE_TABLE" in rows["README.md HEADLINE_TABLE"]
    assert rows["README.md HEADLINE_CLAIMS"] is None and rows["06_ablation/table4.csv"] is None
