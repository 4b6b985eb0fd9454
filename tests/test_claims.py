"""dlib.experiments.claims: the papers' claims judged from paired per-seed intervals, against hand computations."""

import math

import numpy as np
import pytest

from dlib.experiments import ablation_tables, claims


def _runs(values):
    """{training key: {seed: (miou %, miou with CRF %)}} -> the results dict
    dlib.experiments.ablation_runs.run_trainings returns."""
    return {(key, seed): {"status": "ok", "mean_iou": a / 100, "mean_iou_crf": b / 100}
            for key, per_seed in values.items() for seed, (a, b) in per_seed.items()}


def test_judge_reads_the_interval_against_the_papers_sign():
    assert claims.judge(0.5, 2.0, +2.55) == "supports"
    assert claims.judge(-3.0, -0.1, -1.0) == "supports"
    assert claims.judge(0.5, 2.0, -1.0) == "contradicts"
    assert claims.judge(-2.0, -0.5, +0.67) == "contradicts"
    assert claims.judge(-0.5, 2.0, +0.67) == "unresolved"
    assert claims.judge(math.nan, math.nan, +1.0) == "unresolved"


def test_kendall_tau_against_counted_pairs():
    # (1,2,3,4) vs (1,3,2,4): pairs (2,3) discordant, the other 5 concordant: (5 - 1) / 6.
    assert claims.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert claims.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same length"):
        claims.kendall_tau([1, 2], [1, 2, 3])


def test_seeds_to_resolve_against_t_table_values():
    # sd 1, effect 1.5: n = 3 gives t(0.975, 2) / sqrt(3) = 4.303 / 1.732 = 2.48 > 1.5; n = 4: 3.182 / 2 = 1.59 > 1.5;
    # n = 5: 2.776 / 2.236 = 1.24 < 1.5 (printed t tables).
    assert claims.seeds_to_resolve(1.0, 1.5) == 5
    assert claims.seeds_to_resolve(1.0, -1.5) == 5
    assert claims.seeds_to_resolve(0.0, 0.1) == 2


def test_all_of_needs_every_row_and_is_contradicted_by_one():
    good = claims.claim("a", 1.0, {"mean": 2.0, "ci_low": 1.0, "ci_high": 3.0})
    open_ = claims.claim("b", 1.0, {"mean": 0.5, "ci_low": -0.5, "ci_high": 1.5})
    bad = claims.claim("c", 1.0, {"mean": -2.0, "ci_low": -3.0, "ci_high": -1.0})
    assert claims.all_of("x", [good, good])["verdict"] == "supports"
    both = claims.all_of("x", [good, open_])
    assert both["verdict"] == "unresolved" and both["ci_low"] == -0.5  # the weakest row's interval
    assert claims.all_of("x", [good, open_, bad])["verdict"] == "contradicts"


def test_paper_claims_table_from_hand_made_runs():
    seeds = (0, 1, 2)
    t4 = ablation_tables.TABLE4
    # Table 4 rows at 40, 45, 47, ... per seed plus a per-seed offset; the CRF row 3 points above its training.
    base = [40, 45, 47, 48, 49, 52]
    values = {}
    for k, row in enumerate(t4[:-1]):
        values[row.training.key] = {s: (base[k] + s, base[k] + s + 3) for s in seeds}
    t3 = {r.name: r for r in ablation_tables.TABLE3}
    # Table 3 before the CRF: LargeFOV 30, ASPP-S 31 (seed 0) / 29 / 30, ASPP-L 35 + seed; CRF adds 2 each.
    for name, per_seed in (("LargeFOV", [30, 30, 30]), ("ASPP-S", [31, 29, 30]), ("ASPP-L", [35, 36, 37])):
        values[t3[name].training.key] = {s: (per_seed[s], per_seed[s] + 2) for s in seeds}
    table = claims.paper_claims(_runs(values), seeds)
    assert list(table.columns[:6]) == list(claims.CLAIM_COLUMNS)
    by = table.set_index("claim")
    # Every Table-4 increment is constant over seeds (sd 0): the interval is the point itself.
    msc = by.loc["Table 4: +MSC raises mIoU"]
    assert msc["measured"] == pytest.approx(5.0) and msc["verdict"] == "supports"
    assert msc["paper"] == pytest.approx(71.27 - 68.72)
    assert by.loc["Table 4: +CRF raises mIoU", "measured"] == pytest.approx(3.0)
    # ASPP-L - LargeFOV: 5, 6, 7 -> supports; ASPP-S - LargeFOV: 1, -1, 0 -> unresolved; ASPP-L - ASPP-S: 4, 7, 7.
    assert by.loc["Table 3: ASPP-L scores above LargeFOV (before the CRF)", "verdict"] == "supports"
    s_vs_l = by.loc["Table 3: ASPP-S scores above LargeFOV (before the CRF)"]
    assert s_vs_l["measured"] == pytest.approx(0.0) and s_vs_l["verdict"] == "unresolved"
    assert s_vs_l["seeds_to_resolve_paper_effect"] > 3
    assert by.loc["Table 3: ASPP-L scores above ASPP-S (before the CRF)", "measured"] == pytest.approx(6.0)
    assert by.loc["The CRF improves every row (Table 3's three heads, Table 4's last row)", "verdict"] == "supports"
    # Measured increments 5, 2, 1, 1, 3, 3 against the paper's 2.55, 2.01, 1.59, 0.67, 0.81, 1.34: tau by hand.
    paper = [2.55, 2.01, 1.59, 0.67, 0.81, 1.34]
    ours = [5, 2, 1, 1, 3, 3]
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    tau = sum(np.sign(paper[i] - paper[j]) * np.sign(ours[i] - ours[j]) for i, j in pairs) / len(pairs)
    assert by.loc["Table 4: the increments rank as in the paper (Kendall's tau)", "measured"] == pytest.approx(tau)


def test_coco_control_splits_coco_into_iterations_and_data():
    seeds = (0, 1, 2)
    ref, coco, ctrl = ablation_tables.COCO_CONTROL
    values = {ref.training.key: {s: (50 + s, 0) for s in seeds},
              coco.training.key: {s: (56 + s, 0) for s in seeds},  # +6 over +MSC
              ctrl.training.key: {0: (52, 0), 1: (54, 0), 2: (54, 0)}}  # +2, +3, +2 over +MSC
    table = claims.coco_control(_runs(values), seeds)
    assert list(table.columns) == ["row", "measured_mean", "increment", "ci_low", "ci_high"]
    by = table.set_index("row")
    assert by.loc["+COCO", "increment"] == pytest.approx(6.0)
    assert by.loc[ctrl.name, "increment"] == pytest.approx(7 / 3)
    assert table.iloc[-1]["increment"] == pytest.approx(6.0 - 7 / 3)
    sentence = claims.coco_control_sentence(table)
    assert "+6.00" in sentence and "+2.33" in sentence and "+3.67" in sentence
