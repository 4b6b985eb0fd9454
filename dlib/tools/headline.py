"""Paper vs measured: DeepLab v2's Tables 4 and 3 beside what notebook 06 measured.

The headline of the report and of the README. Notebook 06 writes ``06_ablation/table4.csv`` (ResNet-101
rows, components cumulative, each row's increment over the row above with its paired 95% interval),
``table3.csv`` (VGG-16 heads before and after the CRF) and ``table3_comparisons.csv`` (Table 3's paired
differences). Here they become Markdown tables, a pandas frame for notebooks, and one figure of the
*increments*, the quantity the paper's ablation is about (a 0-100 mIoU axis would hide them).
Without the CSVs the paper's numbers are shown alone, marked "not run yet"; nothing is faked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlib.core import config, viz
from dlib.core.datasets import dataset_info
from dlib.core.io import read_json
from dlib.experiments import ablation_tables
from dlib.experiments.results import ABLATION_FOLDER, results_root
from dlib.tools.markdown import format_number, link, markdown_table, read_csv, to_float

HEADLINE_TABLES = (
    ("table4", "DeepLab v2 Table 4", "ResNet-101, PASCAL VOC 2012 val; components cumulative, top to bottom"),
    ("table3", "DeepLab v2 Table 3", "VGG-16, PASCAL VOC 2012 val; each head before and after the CRF"),
)
TABLE3_COMPARISONS = "table3_comparisons"  # notebook 06: Table 3's paired differences (dlib.experiments.ablation)


def _paper_rows(table: str) -> list[dict[str, Any]]:
    """The paper's rows of Table 3/4 (from :mod:`dlib.experiments.ablation`), measured columns empty."""

    rows = ablation_tables.TABLE4 if table == "table4" else ablation_tables.TABLE3
    out = [{"table": r.table, "row": r.name, "components": r.components, "model": "", "paper_miou": r.paper_miou,
            "measured_mean": "", "measured_std": "", "seeds": "", "status": "not run yet", "per_seed": ""}
           for r in rows]
    if table == "table4":  # cumulative: each row's increment over the row above (DeepLab v2, Table 4)
        for above, row in zip(out, out[1:]):
            row["paper_increment"] = row["paper_miou"] - above["paper_miou"]
    return out


def ablation_rows(results_dir: str | os.PathLike, table: str) -> tuple[list[dict[str, str]], bool]:
    """The rows of ``06_ablation/<table>.csv`` as dicts of strings, and whether the file exists.

    Without the file, the paper's rows with the measured columns empty and status "not run yet".
    """
    path = Path(results_dir) / ABLATION_FOLDER / f"{table}.csv"
    if not path.is_file():
        return [{k: str(v) for k, v in r.items()} for r in _paper_rows(table)], False
    header, rows = read_csv(path)
    return [dict(zip(header, row)) for row in rows], True


def _measured_text(row: dict[str, str]) -> str:
    status = (row.get("status") or "").strip()
    mean = to_float(row.get("measured_mean"))
    if mean is None:
        return status or "not run"
    std = to_float(row.get("measured_std"))
    seeds = to_float(row.get("seeds"))
    text = f"{mean:.2f}"
    if std is not None and seeds is not None and seeds > 1:
        text += f" ± {std:.2f}"
    if status and status != "ok":
        text += f" ({status})"
    return text


def _delta(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{number:+.2f}"


def headline_rows(results_dir: str | os.PathLike, table: str) -> tuple[list[str], list[list[str]], bool]:
    """Header and rows of the *Paper vs measured* table for ``table`` ("table4"/"table3"), and whether measured."""
    label = dict((t, lab) for t, lab, _ in HEADLINE_TABLES)[table]
    rows, exists = ablation_rows(results_dir, table)
    with_increments = table == "table4"  # Table 4's components are cumulative; Table 3's rows are not
    header = ["row", "components", f"paper, {label} (mIoU %)", "measured mIoU % (mean ± std)", "seeds",
              "per seed"]
    if with_increments:
        header += ["paper Δ", "measured Δ [95% interval]"]
    out = []
    for row in rows:
        paper = to_float(row.get("paper_miou"))
        line = [row.get("row", ""), row.get("components", ""), "" if paper is None else f"{paper:.2f}",
                _measured_text(row),
                format_number(row.get("seeds", "")), (row.get("per_seed") or "").replace(";", ", ")]
        if with_increments:
            measured = _delta(row.get("measured_increment"))
            low, high = _delta(row.get("increment_ci_low")), _delta(row.get("increment_ci_high"))
            line += [_delta(row.get("paper_increment")), f"{measured} [{low}, {high}]" if low and high else measured]
        out.append(line)
    return header, out, exists


def headline_frame(profile: str, results_dir: str | os.PathLike | None = None):
    """The *Paper vs measured* tables (3 and 4) as one pandas DataFrame, for notebooks."""
    import pandas as pd

    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    frames = []
    for table, label, _ in HEADLINE_TABLES:
        header, rows, _ = headline_rows(results_dir, table)
        frame = pd.DataFrame(rows, columns=header).rename(columns={header[2]: "paper mIoU %"})
        frame.insert(0, "table", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).fillna("")  # Table 3 has no increment columns


def _seeds(row: dict[str, str] | None) -> list[float]:
    """The per-seed mIoU values (percent) of one table row, in seed order ("" when none ran)."""
    text = (row or {}).get("per_seed") or ""
    return [float(v) for v in text.split(";") if v.strip()]


def _paired(a: dict[str, str] | None, b: dict[str, str] | None) -> list[float]:
    """Per-seed differences a - b, when both rows ran on every seed (equal counts, as the ``seeds`` column says)."""
    va, vb = _seeds(a), _seeds(b)
    same = len(va) == len(vb) == to_float((a or {}).get("seeds")) == to_float((b or {}).get("seeds"))
    return [x - y for x, y in zip(va, vb)] if va and same else []


def increments(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every increment the paper's ablation measures, paper beside ours (points of mIoU).

    Table 4: each row over the row above (``table4.csv``); Table 3: ASPP against LargeFOV and each CRF gain
    (``table3_comparisons.csv``). Keys: ``table``, ``row``, ``paper``, ``measured``, ``ci_low``, ``ci_high``
    (None where not measured: a row not run, or a CSV not written yet) and ``per_seed``, the paired per-seed
    differences (from the tables' ``per_seed`` columns; empty unless both rows ran on every seed).
    """
    out = []
    rows, _ = ablation_rows(results_dir, "table4")
    for above, row in zip(rows, rows[1:]):
        out.append({"table": "Table 4", "row": row.get("row", ""), "paper": to_float(row.get("paper_increment")),
                    "measured": to_float(row.get("measured_increment")),
                    "ci_low": to_float(row.get("increment_ci_low")), "ci_high": to_float(row.get("increment_ci_high")),
                    "per_seed": _paired(row, above)})
    table3 = {r.get("row"): r for r in ablation_rows(results_dir, "table3")[0]}
    header, lines = read_csv(Path(results_dir) / ABLATION_FOLDER / f"{TABLE3_COMPARISONS}.csv")
    for line in (dict(zip(header, values)) for values in lines):
        a, _, b = line.get("comparison", "").partition(" - ")
        out.append({"table": "Table 3", "row": line.get("comparison", ""),
                    "paper": to_float(line.get("paper_difference")),
                    "measured": to_float(line.get("measured_difference")),
                    "ci_low": to_float(line.get("ci_low")), "ci_high": to_float(line.get("ci_high")),
                    "per_seed": _paired(table3.get(a), table3.get(b))})
    return out


def split_caption(profile: str, results_dir: str | os.PathLike) -> str:
    """"<data set> <split> split, <profile> profile" of notebook 06's run (its ``runs.json`` config), else the
    profile's own evaluation split."""
    path = Path(results_dir) / ABLATION_FOLDER / "runs.json"
    if path.is_file():
        data = read_json(path)["provenance"]["config"]["data"]
        return viz.caption(data["dataset"], data["val_split"], profile)
    return viz.split_caption(config.resolve(profile))


def plot_increments(profile: str, results_dir: str | os.PathLike | None = None):
    """One row per increment: the paper's (grey diamond, labelled with its table), ours as one point per seed
    (paired differences, seaborn) with the mean and its paired 95% interval (red bar).

    The axis spans the increments and their intervals (and 0), not 0-100: the paper's increments are
    0.7 to 4 points, invisible on a full mIoU scale. A row not measured says "not run".
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    items = increments(results_dir)[::-1]  # top to bottom as in the tables
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(items) + 1.6))
    y = list(range(len(items)))
    ax.scatter([it["paper"] for it in items], [k + 0.2 for k in y], marker="D", color="0.45", zorder=3,
               label="paper, DeepLab v2 Table 4 / Table 3")
    seeds = [(v, k - 0.2) for k, it in enumerate(items) for v in it["per_seed"]]
    if seeds:
        sns.scatterplot(x=[v for v, _ in seeds], y=[k for _, k in seeds], color="0.3", s=18, alpha=0.8, ax=ax,
                        zorder=4, label="measured, one point per seed (paired difference)")
    shown = [(k, it) for k, it in enumerate(items) if it["measured"] is not None]
    if shown:
        low = [it["measured"] - (it["ci_low"] if it["ci_low"] is not None else it["measured"]) for _, it in shown]
        high = [(it["ci_high"] if it["ci_high"] is not None else it["measured"]) - it["measured"] for _, it in shown]
        ax.errorbar([it["measured"] for _, it in shown], [k - 0.2 for k, _ in shown], xerr=[low, high], fmt="|",
                    markersize=12, color="#d1495b", capsize=3, zorder=5, label="measured: mean, paired 95% interval")
    values = [0.0] + [v for it in items for v in (it["paper"], it["measured"], it["ci_low"], it["ci_high"],
                                                  *it["per_seed"]) if v is not None]
    pad = 0.08 * (max(values) - min(values) or 1.0)
    ax.set_xlim(min(values) - pad, max(values) + pad)
    for k, it in enumerate(items):
        if it["measured"] is None:
            ax.text(max(values), k, "not run ", ha="right", va="center", fontsize=8, color="#d1495b")
    ax.axvline(0, color="k", lw=0.8)
    for k in range(1, len(items)):
        if items[k]["table"] != items[k - 1]["table"]:
            ax.axhline(k - 0.5, color="0.8", lw=0.8)
    ax.set_yticks(y, [f"{it['table']}: {it['row']}" for it in items], fontsize=8)
    ax.set(xlabel="mIoU increment (points)", ylabel="comparison",
           title=f"DeepLab v2 ablations: increments, paper beside measured ({split_caption(profile, results_dir)})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it hides no row
    ax.grid(axis="x", color="0.92")
    fig.tight_layout()
    return fig


def headline_section(results_dir: Path, report_dir: Path, dataset: str | None) -> list[str]:
    """The report's *Paper vs measured* section: both tables, with their sources or "not run yet"."""
    lines = ["## Paper vs measured", ""]
    if dataset is not None and not dataset_info(dataset).paper:
        lines += ["> The measured numbers of this profile come from the small model variants trained on the "
                  "built-in proxy data set, not from the paper's networks on PASCAL VOC: compare the *pattern* "
                  "(which component helps, by how much relative to the others), not the absolute level.", ""]
    for table, label, caption in HEADLINE_TABLES:
        header, rows, exists = headline_rows(results_dir, table)
        lines += [f"### {label}: {caption}", ""]
        if exists:
            source = link(f"{ABLATION_FOLDER}/{table}.csv", results_dir / ABLATION_FOLDER / f"{table}.csv", report_dir)
            lines += [f"Source: {source}"
                      " (mIoU in percent; std over seeds, ddof = 1).", ""]
        else:
            lines += [f"_Not run yet_: no `{ABLATION_FOLDER}/{table}.csv` for this profile (notebook 06). "
                      "The paper's numbers alone:", ""]
        lines += [markdown_table(header, rows, numbers=False), ""]
    return lines
