"""Statistics of the ablation tables: per-seed paired differences, their t-interval and what it says.

Every row of an ablation table runs with the seeds of ``ablation.seeds``. An increment (a row against its
reference row) is the mean of the per-seed paired differences with a two-sided 95% t-interval on n - 1
degrees of freedom (:func:`increment_stats`); :func:`verdict` reads the interval: a component helps when the
whole interval lies above 0, hurts when below, and is not resolved when the interval contains 0.

A row is any object with ``table``, ``name``, ``components``, ``paper_miou``, ``crf`` and ``training.key``
(:class:`dlib.experiments.ablation_tables.Row`); ``results`` maps (training key, seed) to a run's scores
(:func:`dlib.experiments.ablation_runs.run_trainings`). This module imports nothing from dlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def increment_stats(diffs: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of paired per-seed differences and its two-sided t-interval (n - 1 degrees of freedom).

    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``; with one seed the interval is undefined (nan).
    """
    from scipy import stats

    d = np.asarray(list(diffs), dtype=float)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(d.mean())
    if n == 1:
        return {"mean": mean, "sd": math.nan, "n": 1, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def differences_with(mean: float, sd: float, n: int) -> np.ndarray:
    """``n`` evenly spread per-seed differences with exactly this mean and sample standard deviation (n >= 2):
    a made-up increment to ask how its interval behaves as seeds are added."""
    z = np.arange(n) - (n - 1) / 2
    return mean + sd * z / z.std(ddof=1)


def verdict(ci_low: float, ci_high: float, paper: float = math.nan) -> str:
    """What a 95% interval of an increment says: its sign (or none), and whether that is the paper's."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "not measured (fewer than 2 seeds)"
    if ci_low > 0:
        sign = "helps (interval above 0)"
    elif ci_high < 0:
        sign = "hurts (interval below 0)"
    else:
        return "not resolved (interval contains 0)"
    if math.isnan(paper):
        return sign
    return sign + ("; as in the paper" if (ci_low > 0) == (paper > 0) else "; the paper's sign is the opposite")


def row_values(row, results: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int]):
    """Per-seed mIoU (percent) of ``row``, with or without its CRF, and the status of the last seed that did not run."""
    values: dict[int, float] = {}
    status = "not run"
    for seed in seeds:
        res = results.get((row.training.key, seed))
        if res is None or res.get("status") != "ok":
            status = (res or {}).get("status", "not run")
            continue
        values[seed] = 100 * res["mean_iou_crf" if row.crf else "mean_iou"]
    return values, status


def paired_stats(runs: dict[tuple[str, int], dict[str, Any]], a, b, seeds: Sequence[int]) -> dict[str, float]:
    """Per-seed paired differences a - b (percent) and their 95% interval (:func:`increment_stats`)."""
    va, _ = row_values(a, runs, seeds)
    vb, _ = row_values(b, runs, seeds)
    return increment_stats([va[s] - vb[s] for s in seeds if s in va and s in vb])


def summarise(rows: Sequence, results: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int], *,
              reference: str = "previous"):
    """The table: one line per row, the paper's mIoU beside the measured mean and std over seeds (percent).

    Increments (Table 4 and the one-at-a-time table): each row against the row above (``reference=
    "previous"``, cumulative Table 4) or against the first row (``"first"``), as the mean of the paired
    per-seed differences with its 95% t-interval (columns ``increment_ci_low``/``increment_ci_high``) and
    :func:`verdict`. Table 3 (``reference=None``) has no increments.
    """
    import pandas as pd

    lines, by_seed = [], []
    for row in rows:
        values, status = row_values(row, results, seeds)
        by_seed.append(values)
        arr = np.asarray(list(values.values()), dtype=float)
        lines.append({
            "table": row.table, "row": row.name, "components": row.components,
            "model": (results.get((row.training.key, seeds[0])) or {}).get("model", ""),
            "paper_miou": row.paper_miou,
            "measured_mean": float(arr.mean()) if len(arr) else math.nan,
            "measured_std": float(arr.std(ddof=1)) if len(arr) > 1 else (0.0 if len(arr) else math.nan),
            "seeds": len(arr), "status": "ok" if len(arr) else status,
            "per_seed": ";".join(f"{v:.2f}" for v in arr),
        })
    for i, line in enumerate(lines):
        j = None if reference is None or i == 0 else (i - 1 if reference == "previous" else 0)
        if j is None:
            line.update({"paper_increment": math.nan, "measured_increment": math.nan, "increment_std": math.nan,
                         "increment_ci_low": math.nan, "increment_ci_high": math.nan, "verdict": ""})
            continue
        line["paper_increment"] = line["paper_miou"] - lines[j]["paper_miou"]
        st = increment_stats([v - by_seed[j][s] for s, v in by_seed[i].items() if s in by_seed[j]])
        line.update({"measured_increment": st["mean"], "increment_std": st["sd"], "increment_ci_low": st["ci_low"],
                     "increment_ci_high": st["ci_high"],
                     "verdict": verdict(st["ci_low"], st["ci_high"], line["paper_increment"])})
    return pd.DataFrame(lines)
