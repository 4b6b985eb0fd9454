"""The README's generated blocks, rewritten from the committed results.

The README holds blocks between ``<!-- NAME -->`` and ``<!-- /NAME -->``: ``HEADLINE_TABLE`` (DeepLab v2
Table 4, paper beside measured, with the verdict of each 95% interval), ``HEADLINE_CLAIMS`` (the paper's claims
judged, the +COCO control and the convergence check, in sentences made from notebook 06's CSVs) and
``STANDINS_TABLE`` (the shipped stand-ins, from their cards) and ``TIMING_TABLE`` (each notebook's cpu wall
time, from ``notebook_times.csv``). Everything outside the blocks is left as it is.

    python -m dlib.tools.report --profile cpu --readme README.md
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dlib.core.io import atomic_write_text
from dlib.experiments.claims import claim_sentences, coco_control_sentence
from dlib.experiments.convergence import CONVERGED_POINTS
from dlib.experiments.results import ABLATION_FOLDER
from dlib.nets.standins import cards
from dlib.tools.headline import ablation_rows, headline_rows
from dlib.tools.markdown import markdown_table, read_csv


def readme_headline(results_dir: str | os.PathLike) -> str:
    """The README's headline block: Table 4 paper beside measured (with 95% intervals) and each verdict."""
    header, rows, exists = headline_rows(results_dir, "table4")
    if not exists:
        return "_Not run yet_: no `06_ablation/table4.csv` (run notebook 06)."
    keep = [0, 2, 3, 4, 6, 7]  # row, paper, measured, seeds, paper delta, measured delta [interval]
    table = markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in rows], numbers=False)
    verdicts, _ = ablation_rows(results_dir, "table4")
    said = "; ".join(f"{v['row']}: {v['verdict']}" for v in verdicts[1:] if v.get("verdict"))
    return table + "\n\nVerdicts from the 95% intervals (`dlib.experiments.stats.verdict`): " + said + "."


def readme_claims(results_dir: str | os.PathLike) -> str:
    """The README's reading of the ablation, every number from notebook 06's CSVs: which of the paper's claims the
    measurement supports, contradicts or leaves unresolved (``paper_claims.csv``), how much of +COCO is its data
    (``coco_control.csv``) and whether every training converged (``convergence_summary.csv``)."""
    import pandas as pd

    folder = Path(results_dir) / ABLATION_FOLDER
    paths = [folder / f"{name}.csv" for name in ("paper_claims", "coco_control", "convergence_summary")]
    if not all(p.is_file() for p in paths):
        return ("_Not run yet_: run notebook 06 for `paper_claims.csv`, `coco_control.csv` and "
                "`convergence_summary.csv`.")
    claims, control, conv = (pd.read_csv(p) for p in paths)
    lines = [f"* {sentence}" for sentence in claim_sentences(claims)]
    lines.append(f"* **What +COCO measures.** {coco_control_sentence(control)}")
    worst = conv.loc[conv["last_fifth_gain"].idxmax()]
    lines.append(f"* **Convergence.** {int(conv['converged'].sum())} of {len(conv)} trainings add under "
                 f"{CONVERGED_POINTS:g} point in the last fifth of their run (mean over seeds, development split); "
                 f"the largest gain is {worst['last_fifth_gain']:+.2f} ({worst['training']}).")
    return "\n".join(lines)


def readme_standins() -> str:
    """The README's table of the shipped stand-ins, every figure from their cards (dlib.nets.standins.cards)."""

    lines = []
    for card in cards():
        (split, score), = card["final_scores"].items()
        lines.append([f"`{card['file']}`", card["stand_in_for"], card.get("model", card.get("family", "")),
                      card["task"], f"{card['iterations']:,}", f"{100 * score['mean_iou']:.1f}% ({split})",
                      f"{card['train_seconds'] / 60:.1f}", card["commit"][:10]])
    return markdown_table(["file", "stands in for", "network", "task", "iterations", "held-out mIoU",
                           "minutes (1 thread)", "commit"], lines, numbers=False)


def readme_timings(results_dir: str | os.PathLike) -> str:
    """The README's per-notebook wall times (cpu), from ``notebook_times.csv``."""
    _, rows = read_csv(Path(results_dir) / "notebook_times.csv")
    if not rows:
        return "_No timings yet_: run ./run_all.sh."
    total = sum(float(r[1]) for r in rows)
    lines = [[r[0], f"{float(r[1]):.0f}"] for r in rows] + [["**all**", f"**{total / 60:.1f} min**"]]
    return markdown_table(["notebook", "cpu wall time (s)"], lines, numbers=False)


def update_readme(readme: str | os.PathLike, results_dir: str | os.PathLike) -> Path:
    """Rewrite the generated blocks of the README (between ``<!-- NAME -->`` and ``<!-- /NAME -->``)."""
    path = Path(readme)
    text = path.read_text()
    blocks = (("HEADLINE_TABLE", readme_headline(results_dir)), ("HEADLINE_CLAIMS", readme_claims(results_dir)),
              ("STANDINS_TABLE", readme_standins()), ("TIMING_TABLE", readme_timings(results_dir)))
    for name, block in blocks:
        pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no <!-- {name} --> ... <!-- /{name} --> block")
        # block is bound as a default so the replacement uses this iteration's block (it is called at once anyway).
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    atomic_write_text(path, text)
    return path
