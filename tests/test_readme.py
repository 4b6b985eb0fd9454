"""The README's generated blocks (dlib.tools.readme): the headline and timing tables rewritten between their markers."""

import pytest

from dlib.tools import readme


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
                    "<!-- HEADLINE_CLAIMS -->\n<!-- /HEADLINE_CLAIMS -->\n"
                    "<!-- STANDINS_TABLE -->\n<!-- /STANDINS_TABLE -->\n"
                    "<!-- TIMING_TABLE -->\n<!-- /TIMING_TABLE -->\nend\n")
    readme.update_readme(page, results_dir)
    text = page.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n") and "old" not in text
    assert "+2.00 [+2.00, +2.00]" in text and "+MSC: helps (interval above 0)" in text
    assert "| **all** | **3.0 min** |" in text  # 60 s + 120 s
    assert "_Not run yet_: run notebook 06 for `paper_claims.csv`" in text
    readme.update_readme(page, results_dir)
    assert page.read_text() == text  # idempotent
    page.write_text("no blocks\n")
    with pytest.raises(ValueError, match="HEADLINE_TABLE"):
        readme.update_readme(page, results_dir)


def test_the_claims_block_is_made_from_notebook_06s_csvs(tmp_path):
    folder = tmp_path / "06_ablation"
    folder.mkdir()
    (folder / "paper_claims.csv").write_text(
        "claim,paper,measured,ci_low,ci_high,verdict,seeds_to_resolve_paper_effect\n"
        "Table 4: +MSC raises mIoU,2.55,3.0,1.0,5.0,supports,\n"
        "Table 4: +LargeFOV raises mIoU,0.67,0.5,-1.0,2.0,unresolved,9\n")
    (folder / "coco_control.csv").write_text(
        "row,measured_mean,increment,ci_low,ci_high\n+MSC,50.0,,,\n+COCO,56.0,6.0,5.0,7.0\n"
        "\"+MSC, pretrained as +COCO on the task's own data\",52.0,2.0,1.0,3.0\n"
        "+COCO minus the control (the other data set's share),,4.0,3.0,5.0\n")
    (folder / "convergence_summary.csv").write_text(
        "training,seeds,iterations,miou_at_80,miou_at_100,last_fifth_gain,converged\n"
        "resnet_baseline,3,1000,50.0,50.4,0.4,True\nresnet_baseline_msc,3,1000,52.0,53.5,1.5,False\n")
    text = readme.readme_claims(tmp_path)
    assert "The measurement supports 1 of 2 claims: Table 4: +MSC raises mIoU (measured +3.00 [+1.00, +5.00]" in text
    assert "about 9 seeds would resolve" in text
    assert "+COCO adds +6.00 [+5.00, +7.00]" in text and "is +4.00 [+3.00, +5.00] points" in text
    assert "1 of 2 trainings add under 1 point" in text and "+1.50 (resnet_baseline_msc)" in text


def test_the_stand_ins_table_is_read_from_the_cards():
    import json

    from dlib.nets import standins

    text = readme.readme_standins()
    for card in standins.cards():
        (score,) = card["final_scores"].values()
        assert f"`{card['file']}`" in text and f"{100 * score['mean_iou']:.1f}%" in text
    assert len(text.splitlines()) == 2 + len(list(standins.WEIGHTS_DIR.glob("*.pt.json")))
    assert json.loads((standins.WEIGHTS_DIR / "small_resnet_imagenet.pt.json").read_text())["commit"][:10] in text
