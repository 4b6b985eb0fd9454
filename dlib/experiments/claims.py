"""The papers' claims about their ablations, judged by computation from the measured tables.

Each claim is a signed difference the paper reports (DeepLab v2, Tables 3 and 4): "+MSC raises mIoU by 2.55
points", "ASPP-L scores above LargeFOV". Ours is the same difference measured over seeds, as the mean of the
per-seed paired differences with its 95% t-interval (:mod:`dlib.experiments.stats`), and the verdict follows from the
interval alone (:func:`judge`):

* ``supports``: the whole interval lies on the paper's side of zero;
* ``contradicts``: the whole interval lies on the other side;
* ``unresolved``: the interval contains zero (or fewer than two seeds ran).

Two claims are about several numbers at once: "the CRF improves every row" (supported when every row's CRF gain
is, contradicted when one is contradicted) and "the increments rank as in the paper" (Kendall's tau between the
paper's increments and ours, per seed, with the interval of its mean over seeds). :func:`seeds_to_resolve` says
how many seeds a paired interval needs to resolve an effect of the paper's size at a measured spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlib.experiments.ablation_tables import COCO_CONTROL, TABLE3, TABLE4
from dlib.experiments.stats import increment_stats, paired_stats, row_values

VERDICTS = ("supports", "contradicts", "unresolved")
CLAIM_COLUMNS = ("claim", "paper", "measured", "ci_low", "ci_high", "verdict")


def judge(ci_low: float, ci_high: float, paper: float) -> str:
    """The verdict of a 95% interval on a difference whose sign the paper claims (``paper``)."""
    if any(math.isnan(v) for v in (ci_low, ci_high, paper)) or paper == 0:
        return "unresolved"
    if ci_low > 0 or ci_high < 0:
        return "supports" if (ci_low > 0) == (paper > 0) else "contradicts"
    return "unresolved"


def claim(text: str, paper: float, stats: Mapping[str, float]) -> dict[str, Any]:
    """One row of the claims table from the paper's difference and :func:`dlib.experiments.stats.increment_stats` output
    (``mean``, ``ci_low``, ``ci_high``; with ``sd`` also the seeds an unresolved claim would need)."""
    row = {"claim": text, "paper": float(paper), "measured": float(stats["mean"]), "ci_low": float(stats["ci_low"]),
           "ci_high": float(stats["ci_high"]), "verdict": judge(stats["ci_low"], stats["ci_high"], paper)}
    sd = float(stats.get("sd", math.nan))
    row["seeds_to_resolve_paper_effect"] = (seeds_to_resolve(sd, paper) if row["verdict"] == "unresolved"
                                             and not math.isnan(sd) and paper else None)
    return row


def all_of(text: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A claim that holds for every one of ``rows`` (each a :func:`claim` row with the same sign claimed).

    Supported when every row is, contradicted when any row is; the measured value and interval shown are those
    of the row whose interval reaches lowest (the weakest case). ``paper`` is the smallest of the paper's values.
    """
    if not rows:
        return {"claim": text, "paper": math.nan, "measured": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                "verdict": "unresolved"}
    verdicts = [r["verdict"] for r in rows]
    verdict = ("contradicts" if "contradicts" in verdicts else
               "supports" if all(v == "supports" for v in verdicts) else "unresolved")
    weakest = min(rows, key=lambda r: r["ci_low"] if not math.isnan(r["ci_low"]) else -math.inf)
    return {"claim": text, "paper": min(r["paper"] for r in rows), "measured": weakest["measured"],
            "ci_low": weakest["ci_low"], "ci_high": weakest["ci_high"], "verdict": verdict,
            "seeds_to_resolve_paper_effect": None}


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two equally long sequences: (concordant - discordant) pairs / all pairs (a tie in
    either sequence counts as neither)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two sequences of the same length >= 2, got {len(a)} and {len(b)}")
    i, j = np.triu_indices(len(a), k=1)

    def sign(d: np.ndarray) -> np.ndarray:  # differences within rounding (1e-9 points) are ties
        return np.where(np.abs(d) < 1e-9, 0.0, np.sign(d))

    return float(np.sum(sign(a[i] - a[j]) * sign(b[i] - b[j])) / len(i))


def ranking_claim(text: str, paper: Mapping[str, float], per_seed: Mapping[int, Mapping[str, float]]
                  ) -> dict[str, Any]:
    """"The increments rank as in the paper": Kendall's tau between the paper's increments and each seed's,
    with the t-interval of its mean over seeds. The paper's own value is 1 (its ranking agrees with itself);
    supported when the interval lies above 0 (our ranking agrees more than chance)."""
    names = list(paper)
    taus = [kendall_tau([paper[n] for n in names], [inc[n] for n in names]) for inc in per_seed.values()
            if all(n in inc and not math.isnan(inc[n]) for n in names)]
    return {**claim(text, 1.0, increment_stats(taus)), "seeds_to_resolve_paper_effect": None}


def seeds_to_resolve(sd: float, effect: float, *, level: float = 0.95, max_seeds: int = 1000) -> int | None:
    """The fewest seeds n whose paired t-interval, at spread ``sd`` of the per-seed differences, excludes zero
    for a mean difference of ``effect``: t_{(1+level)/2, n-1} * sd / sqrt(n) < |effect|. None past ``max_seeds``."""
    from scipy import stats

    if not sd > 0:
        return 2
    for n in range(2, max_seeds + 1):
        if float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n) < abs(effect):
            return n
    return None


# --------------------------------------------------------------------------------------------
# The claims of DeepLab v2's Tables 3 and 4
# --------------------------------------------------------------------------------------------

TABLE3_ORDERINGS = (("ASPP-L", "LargeFOV"), ("ASPP-L", "ASPP-S"), ("ASPP-S", "LargeFOV"))


def _by_name(rows) -> dict[str, Any]:
    return {r.name: r for r in rows}


def paper_claims(runs: Mapping[tuple[str, int], Mapping[str, Any]], seeds: Sequence[int]):
    """The claims table (:data:`CLAIM_COLUMNS`): every Table-4 increment, Table 3's orderings before the CRF,
    "the CRF improves every row" and the ranking of Table 4's increments, each judged from ``runs``."""
    import pandas as pd

    lines = []
    for prev, row in zip(TABLE4, TABLE4[1:]):
        lines.append(claim(f"Table 4: {row.name} raises mIoU", row.paper_miou - prev.paper_miou,
                           paired_stats(runs, row, prev, seeds)))
    t3 = _by_name(TABLE3)
    for a, b in TABLE3_ORDERINGS:
        lines.append(claim(f"Table 3: {a} scores above {b} (before the CRF)", t3[a].paper_miou - t3[b].paper_miou,
                           paired_stats(runs, t3[a], t3[b], seeds)))
    crf = [claim(f"Table 3: the CRF improves {h}", t3[f"{h} +CRF"].paper_miou - t3[h].paper_miou,
                 paired_stats(runs, t3[f"{h} +CRF"], t3[h], seeds)) for h in ("LargeFOV", "ASPP-S", "ASPP-L")]
    crf.append(lines[len(TABLE4) - 2])  # Table 4's +CRF row
    lines.append(all_of("The CRF improves every row (Table 3's three heads, Table 4's last row)", crf))
    per_seed: dict[int, dict[str, float]] = {s: {} for s in seeds}
    values = [row_values(r, runs, seeds)[0] for r in TABLE4]
    for i, row in enumerate(TABLE4[1:], start=1):
        for s in seeds:
            if s in values[i] and s in values[i - 1]:
                per_seed[s][row.name] = values[i][s] - values[i - 1][s]
    paper = {row.name: row.paper_miou - prev.paper_miou for prev, row in zip(TABLE4, TABLE4[1:])}
    lines.append(ranking_claim("Table 4: the increments rank as in the paper (Kendall's tau)", paper, per_seed))
    return pd.DataFrame(lines)


def coco_control(runs: Mapping[tuple[str, int], Mapping[str, Any]], seeds: Sequence[int]):
    """``row, measured_mean, increment, ci_low, ci_high``: +MSC, +COCO and the control (+MSC pretrained as +COCO on
    the task's own images), the increments against +MSC, and +COCO minus the control (the other data's share)."""
    import pandas as pd

    ref, coco, ctrl = COCO_CONTROL
    lines = []
    for row in COCO_CONTROL:
        vals = list(row_values(row, runs, seeds)[0].values())
        st = paired_stats(runs, row, ref, seeds) if row is not ref else {"mean": math.nan, "ci_low": math.nan,
                                                                         "ci_high": math.nan}
        lines.append({"row": row.name, "measured_mean": float(np.mean(vals)) if vals else math.nan,
                      "increment": st["mean"], "ci_low": st["ci_low"], "ci_high": st["ci_high"]})
    st = paired_stats(runs, coco, ctrl, seeds)
    lines.append({"row": "+COCO minus the control (the other data set's share)", "measured_mean": math.nan,
                  "increment": st["mean"], "ci_low": st["ci_low"], "ci_high": st["ci_high"]})
    return pd.DataFrame(lines)


def coco_control_sentence(table) -> str:
    """One sentence computed from :func:`coco_control`'s table: how much of +COCO is the data."""
    t = table.set_index("row")
    coco, ctrl, data = t.loc[COCO_CONTROL[1].name], t.loc[COCO_CONTROL[2].name], t.iloc[-1]

    def ci(r) -> str:
        return f"{r['increment']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"

    return (f"+COCO adds {ci(coco)} points to +MSC; pretraining for the same iterations on the task's own images "
            f"adds {ci(ctrl)}; the other data set's own share (+COCO minus the control) is {ci(data)} points.")


def _interval(row: Mapping[str, Any]) -> str:
    return f"{row['measured']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def claim_sentences(table) -> list[str]:
    """The claims table in sentences, one per verdict (supported, contradicted, unresolved), every number from it:
    what the README headline and notebook 06's conclusions say."""
    lines = []
    for verdict, opening in (("supports", "The measurement supports"), ("contradicts", "It contradicts"),
                             ("unresolved", "It leaves unresolved")):
        part = table[table["verdict"] == verdict]
        if part.empty:
            continue
        items = []
        for _, row in part.iterrows():
            text = f"{row['claim']} (measured {_interval(row)}, paper {row['paper']:+.2f})"
            n = row.get("seeds_to_resolve_paper_effect")
            if verdict == "unresolved" and n is not None and not (isinstance(n, float) and math.isnan(n)):
                text += f"; about {int(n)} seeds would resolve the paper's effect at this spread"
            items.append(text)
        lines.append(f"{opening} {len(items)} of {len(table)} claims: " + "; ".join(items) + ".")
    return lines
