"""dlib.experiments.stats: the paired per-seed increments of the ablation tables, their t-interval, verdicts and
summary."""

import statistics

import numpy as np
import pytest

from dlib.experiments import ablation_tables, stats


def _fake_results(values):
    """values: {training key: {seed: (miou, miou_crf)}} -> the results dict run_trainings returns."""
    return {(key, seed): {"status": "ok", "mean_iou": a / 100, "mean_iou_crf": b / 100, "model": "m"}
            for key, per_seed in values.items() for seed, (a, b) in per_seed.items()}


def test_summarise_mean_std_and_paired_increments_against_statistics():
    rows = ablation_tables.TABLE4
    keys = [r.training.key for r in rows]
    rng = np.random.default_rng(0)
    values = {k: {s: (float(rng.uniform(30, 60)), float(rng.uniform(30, 60))) for s in (0, 1, 2)} for k in keys}
    df = stats.summarise(rows, _fake_results(values), seeds=(0, 1, 2))
    for i, row in enumerate(rows):
        per = [values[row.training.key][s][1 if row.crf else 0] for s in (0, 1, 2)]
        assert df.loc[i, "measured_mean"] == pytest.approx(statistics.mean(per))
        assert df.loc[i, "measured_std"] == pytest.approx(statistics.stdev(per))
        assert df.loc[i, "seeds"] == 3 and df.loc[i, "status"] == "ok"
        if i:
            prev = [values[rows[i - 1].training.key][s][1 if rows[i - 1].crf else 0] for s in (0, 1, 2)]
            diffs = [a - b for a, b in zip(per, prev)]
            assert df.loc[i, "measured_increment"] == pytest.approx(statistics.mean(diffs))
            assert df.loc[i, "increment_std"] == pytest.approx(statistics.stdev(diffs))
            assert df.loc[i, "paper_increment"] == pytest.approx(row.paper_miou - rows[i - 1].paper_miou)


def test_summarise_reports_rows_that_did_not_run():
    rows = ablation_tables.TABLE4
    results = _fake_results({rows[0].training.key: {0: (50.0, 55.0)}})
    results[(rows[2].training.key, 0)] = {"status": "not run: no COCO-pretrained init"}
    df = stats.summarise(rows, results, seeds=(0,))
    assert df.loc[0, "status"] == "ok" and df.loc[0, "measured_mean"] == pytest.approx(50.0)
    assert df.loc[2, "status"].startswith("not run: no COCO") and np.isnan(df.loc[2, "measured_mean"])
    assert df.loc[1, "status"] == "not run" and df.loc[2, "seeds"] == 0


def test_increment_interval_against_a_hand_computed_t_interval():
    # Differences 1, 2, 3: mean 2, sd 1, n 3; the interval is 2 +- t / sqrt(3) with t(0.975, df=2) = 4.302653
    # (printed t tables: 4.303; also the closed form of Student's CDF at 2 degrees of freedom,
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)), solved for F = 0.975).
    t2 = 4.302653
    st = stats.increment_stats([1.0, 2.0, 3.0])
    assert (st["mean"], st["sd"], st["n"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert st["ci_low"] == pytest.approx(2 - t2 / 3 ** 0.5, abs=1e-6)  # t2 is given to 6 decimals
    assert st["ci_high"] == pytest.approx(2 + t2 / 3 ** 0.5, abs=1e-6)
    # Five seeds: t(0.975, df=4) = 2.776 (printed t tables).
    st5 = stats.increment_stats([0.5, 1.5, 1.0, 2.0, 0.0])
    sd = statistics.stdev([0.5, 1.5, 1.0, 2.0, 0.0])
    assert st5["ci_high"] - st5["mean"] == pytest.approx(2.7764 * sd / 5 ** 0.5, abs=1e-3)
    one = stats.increment_stats([4.0])
    assert one["mean"] == 4.0 and np.isnan(one["ci_low"])
    assert stats.increment_stats([])["n"] == 0


def test_verdicts_follow_the_interval():
    assert stats.verdict(0.2, 3.0, 2.5).startswith("helps") and "as in the paper" in stats.verdict(0.2, 3.0, 2.5)
    assert stats.verdict(-3.0, -0.1, 2.5) == "hurts (interval below 0); the paper's sign is the opposite"
    assert stats.verdict(-1.0, 2.0, 2.5) == "not resolved (interval contains 0)"
    assert stats.verdict(float("nan"), float("nan")).startswith("not measured")


def test_summarise_writes_the_interval_columns():
    rows = ablation_tables.TABLE4[:2]
    values = {rows[0].training.key: {s: (40.0 + s, 0.0) for s in (0, 1, 2)},
              rows[1].training.key: {s: (41.0 + 2 * s, 0.0) for s in (0, 1, 2)}}  # diffs 1, 2, 3
    df = stats.summarise(rows, _fake_results(values), seeds=(0, 1, 2))
    assert df.loc[1, "increment_ci_low"] == pytest.approx(2 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert df.loc[1, "verdict"] == "not resolved (interval contains 0)"
    ofat = stats.summarise(ablation_tables.ONE_AT_A_TIME[:3], _fake_results({
        ablation_tables.ONE_AT_A_TIME[0].training.key: {0: (40.0, 0), 1: (41.0, 0)},
        ablation_tables.ONE_AT_A_TIME[1].training.key: {0: (43.0, 0), 1: (45.0, 0)},
        ablation_tables.ONE_AT_A_TIME[2].training.key: {0: (50.0, 0), 1: (52.0, 0)}}), seeds=(0, 1), reference="first")
    assert ofat["measured_increment"].tolist()[1:] == [pytest.approx(3.5), pytest.approx(10.5)]  # against the baseline


def test_paired_stats_pairs_only_the_seeds_both_rows_ran():
    a, b = ablation_tables.TABLE3[2], ablation_tables.TABLE3[0]  # ASPP-S and LargeFOV, before the CRF
    results = _fake_results({a.training.key: {0: (50.0, 0), 1: (54.0, 0), 2: (60.0, 0)},
                             b.training.key: {0: (48.0, 0), 1: (51.0, 0)}})  # seed 2 of LargeFOV did not run
    st = stats.paired_stats(results, a, b, seeds=(0, 1, 2))
    assert st["n"] == 2 and st["mean"] == pytest.approx(2.5) and st["sd"] == pytest.approx(2 ** -0.5)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_differences_with_has_exactly_the_asked_mean_and_spread(n):
    d = stats.differences_with(0.67, 1.5, n)
    assert len(d) == n
    assert statistics.mean(d) == pytest.approx(0.67) and statistics.stdev(d) == pytest.approx(1.5)
