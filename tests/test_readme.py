"""The README's generated blocks (dlib.readme): the headline and timing tables rewritten between their markers."""

import pytest

from dlib import readme


def test_update_readme_rewrites_only_the_generated_blocks(tmp_path):
    results_dir = tmp_path / "results"
    (results_dir / "06_ablation").mkdir(parents=True)
    rows = "table,row,components,model,paper_miou,measured_mean,measured_std,seeds,status,per_seed,paper_increment," \
           "measured_increment,increment_std,increment_ci_low,increment_ci_high,verdict\n" \
           "table4,baseline,baseline head,m,68.72,40.0,1.0,3,ok,39;40;41,,,,,,\n" \
           "table4,+MSC,MSC,m,71.27,42.0,1.0,3,ok,41;42;43,2.55,2.0,0.0,2.0,2.0,helps (interval above 0)\n"
    (results_dir / "06_ablation" / "table4.csv").write_text(rows)
    (results_dir / "notebook_times.csv").write_text("notebook,seconds,finished_utc,machine,cpus\n"
                                                    "01_a,60.0,x,x,2\n06_b,120.0,x,x,2\n")
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- HEADLINE_TABLE -->\nold\n<!-- /HEADLINE_TABLE -->\nmiddle\n"
                      "<!-- TIMING_TABLE -->\n<!-- /TIMING_TABLE -->\nend\n")
    readme.update_readme(page, results_dir)
    text = page.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n") and "old" not in text
    assert "+2.00 [+2.00, +2.00]" in text and "+MSC: helps (interval above 0)" in text
    assert "| **all** | **3.0 min** |" in text  # 60 s + 120 s
    readme.update_readme(page, results_dir)
    assert page.read_text() == text  # idempotent
    page.write_text("no blocks\n")
    with pytest.raises(ValueError, match="HEADLINE_TABLE"):
        readme.update_readme(page, results_dir)
