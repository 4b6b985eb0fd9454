"""The figures of notebook 06, drawn so that each reads right on its own (seaborn for the statistics).

Every measured number is shown as its seeds: one point per seed, the mean over seeds and its 95% t-interval
(:func:`dlib.experiments.stats.increment_stats`); the paper's number sits beside it as its own marker,
labelled with its table. :func:`plot_increments` draws each component's increment (paired per-seed
differences, Table 4 and the one-at-a-time table), :func:`plot_table3` the levels of Table 3 on one 0-100 axis,
:func:`plot_convergence` the checkpoints of one training and :func:`plot_training_loss` the logged loss per
output (an MSC network sums one loss per scale and one for the fusion). The caller passes ``caption``, the
data and profile the numbers come from (:func:`dlib.core.viz.split_caption`), for the title.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlib.experiments.stats import increment_stats, row_values

PAPER = {"marker": "D", "color": "0.35", "s": 55, "zorder": 4}  # the paper's numbers: a grey diamond
MEAN = {"fmt": "_", "color": "#d1495b", "markersize": 22, "capsize": 5, "elinewidth": 2, "zorder": 5}


def short_name(row: str) -> str:
    """A row name short enough for an axis label ("ASPP (instead of LargeFOV)" -> "ASPP")."""
    return row.replace(" (instead of LargeFOV)", "")


def paired_differences(rows: Sequence, runs: Mapping[tuple[str, int], Mapping[str, Any]], seeds: Sequence[int], *,
                       reference: str = "previous"):
    """One line per (row, seed): the row's mIoU minus its reference row's on the same seed (points), with the
    paper's difference. The reference is the row above (``"previous"``, cumulative Table 4) or the first row."""
    import pandas as pd

    values = [row_values(r, runs, seeds)[0] for r in rows]
    lines = []
    for i, row in enumerate(rows[1:], start=1):
        j = i - 1 if reference == "previous" else 0
        paper = row.paper_miou - rows[j].paper_miou
        for seed in seeds:
            diff = values[i][seed] - values[j][seed] if seed in values[i] and seed in values[j] else math.nan
            lines.append({"row": short_name(row.name), "seed": seed, "difference": diff, "paper": paper})
    return pd.DataFrame(lines)


def _interval(values) -> tuple[float, float, float]:
    """Mean and 95% t-interval of ``values`` (NaN skipped): the paired interval when they are differences."""
    st = increment_stats([v for v in values if not math.isnan(v)])
    return st["mean"], st["ci_low"], st["ci_high"]


def _seeds_mean_interval(ax, frame, x: str, y: str, order: Sequence[str], *, hue: str | None = None,
                         hue_order: Sequence[str] = (), dodge: float = 0.0,
                         label: str = "mean of the seeds, 95% t-interval") -> None:
    """Per-seed points (seaborn) and, for each group, the mean with its 95% t-interval as an error bar."""
    import seaborn as sns

    sns.stripplot(data=frame, x=x, y=y, order=order, hue=hue, hue_order=hue_order or None, dodge=bool(dodge),
                  jitter=0.08, size=5, alpha=0.75, palette="deep" if hue else None,
                  color=None if hue else "0.25", ax=ax, legend=bool(hue), zorder=3)
    groups = [(None, 0.0)] if hue is None else [(h, (k - (len(hue_order) - 1) / 2) * dodge)
                                                for k, h in enumerate(hue_order)]
    for k, name in enumerate(order):
        for h, shift in groups:
            part = frame[(frame[x] == name) & ((frame[hue] == h) if hue else True)]
            mean, low, high = _interval(part[y].to_numpy(float))
            if not math.isnan(mean):
                err = [[mean - low], [high - mean]] if not math.isnan(low) else None
                ax.errorbar([k + shift], [mean], yerr=err, **MEAN)
    ax.errorbar([math.nan], [math.nan], yerr=[[0.0], [0.0]], label=label, **MEAN)


def plot_increments(rows: Sequence, runs: Mapping[tuple[str, int], Mapping[str, Any]], seeds: Sequence[int], *,
                    caption: str, reference: str = "previous", paper_label: str | None = "paper, Table 4", ax=None):
    """Each component's increment (points of mIoU): every seed's paired difference, their mean with the paired
    95% t-interval, and the paper's increment beside it (``paper_label``; None: no paper numbers)."""
    import matplotlib.pyplot as plt

    diffs = paired_differences(rows, runs, seeds, reference=reference)
    order = list(dict.fromkeys(diffs["row"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.5 * len(order) + 4.5, 3.8))
    fig = ax.figure
    _seeds_mean_interval(ax, diffs, "row", "difference", order, label="mean of the seeds, paired 95% t-interval")
    if paper_label:
        paper = diffs.drop_duplicates("row").set_index("row")["paper"]
        ax.scatter(np.arange(len(order)) + 0.3, [paper[r] for r in order], label=paper_label, **PAPER)
    ax.scatter([], [], color="0.25", s=20, label="measured, one point per seed")
    ax.axhline(0, color="k", lw=0.8)
    ref = "the row above" if reference == "previous" else f"the {rows[0].name} row"
    ax.set(xlabel="component", ylabel="mIoU increment (points)",
           title=f"each component's increment over {ref}, paired per seed ({caption})")
    ax.tick_params(axis="x", rotation=15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it hides no interval
    fig.tight_layout()
    return fig


def plot_table3(rows: Sequence, runs: Mapping[tuple[str, int], Mapping[str, Any]], seeds: Sequence[int], *,
                caption: str):
    """Table 3 on one 0-100 mIoU axis: ours per seed with mean and 95% interval (left), the paper's (right,
    "paper, Table 3"), each head before and after its CRF."""
    import matplotlib.pyplot as plt
    import pandas as pd

    heads = [r.name for r in rows if not r.crf]
    hue_order = ["before CRF", "after CRF"]
    lines = [{"head": r.name.replace(" +CRF", ""), "CRF": hue_order[r.crf], "seed": s, "mIoU": v}
             for r in rows for s, v in row_values(r, runs, seeds)[0].items()]
    frame = pd.DataFrame(lines, columns=["head", "CRF", "seed", "mIoU"])
    fig, (ax, ax_paper) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, gridspec_kw={"width_ratios": [2, 1]})
    _seeds_mean_interval(ax, frame, "head", "mIoU", heads, hue="CRF", hue_order=hue_order, dodge=0.4)
    ax.set(xlabel="head", ylabel="mIoU (%)", ylim=(0, 100), title=f"measured, one point per seed ({caption})")
    ax.legend(fontsize=8, loc="upper left")
    for k, crf in enumerate((False, True)):
        paper = [r.paper_miou for h in heads for r in rows if r.name.replace(" +CRF", "") == h and r.crf == crf]
        ax_paper.scatter(np.arange(len(heads)) + (k - 0.5) * 0.4, paper, label=hue_order[k],
                         **{**PAPER, "color": sns_colour(k)})
    ax_paper.set_xticks(range(len(heads)), heads)
    ax_paper.set(xlabel="head", xlim=(-0.6, len(heads) - 0.4),
                 title="paper, Table 3 (DeepLab v2; VGG-16, VOC 2012 val)")
    ax_paper.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def sns_colour(k: int):
    """The k-th colour of seaborn's "deep" palette (the one the per-seed points use)."""
    import seaborn as sns

    return sns.color_palette("deep")[k]


def plot_convergence(curve, *, caption: str, name: str = "baseline"):
    """mIoU (%) at every kept checkpoint of one training: each seed (grey) and their mean with its 95% interval."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(data=curve, x="iteration", y="mean_iou", units="seed", estimator=None, color="0.7", lw=1, ax=ax)
    sns.lineplot(data=curve, x="iteration", y="mean_iou", errorbar=_t_interval, marker="o", color="tab:blue",
                 label=f"mean of {curve['seed'].nunique()} seeds, 95% t-interval (grey: each seed)", ax=ax)
    ax.set(xlabel="iteration (steps)", ylabel="mIoU (%)", ylim=(0, 100),
           title=f"{name}: every checkpoint, scored on the development split ({caption})")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _t_interval(values) -> tuple[float, float]:
    _, low, high = _interval(np.asarray(values, float))
    return low, high


def plot_training_loss(curves, *, caption: str):
    """The logged training loss per output (the loss divided by its ``loss_terms`` column,
    :func:`dlib.training.loss.loss_terms`), one line per (row, seed)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    per_output = curves.assign(loss_per_output=curves["loss"] / curves["loss_terms"],
                               seed=curves["seed"].astype(str))
    terms = per_output.drop_duplicates("row").set_index("row")["loss_terms"]
    per_output["row"] = [f"{r} (loss / {terms[r]})" for r in per_output["row"]]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.lineplot(data=per_output, x="iteration", y="loss_per_output", hue="row", style="seed", estimator=None,
                 ax=ax)
    ax.set(xlabel="iteration (steps)", yscale="log", ylabel="loss / number of loss terms (nats per pixel)",
           title=f"training loss per seed ({caption})")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
