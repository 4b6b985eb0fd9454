"""The README's generated blocks, rewritten from the committed results.

The README holds blocks between ``<!-- NAME -->`` and ``<!-- /NAME -->``: ``HEADLINE_TABLE`` (DeepLab v2
Table 4, paper beside measured, with the verdict of each 95% interval) and ``TIMING_TABLE`` (each
notebook's cpu wall time, from ``notebook_times.csv``). Everything outside the blocks is left as it is.

    python -m dlib.report --profile cpu --readme README.md
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .headline import ablation_rows, headline_rows
from .io import atomic_write_text
from .markdown import markdown_table, read_csv


def readme_headline(results_dir: str | os.PathLike) -> str:
    """The README's headline block: Table 4 paper beside measured (with 95% intervals) and each verdict."""
    header, rows, exists = headline_rows(results_dir, "table4")
    if not exists:
        return "_Not run yet_: no `06_ablation/table4.csv` (run notebook 06)."
    keep = [0, 2, 3, 4, 6, 7]  # row, paper, measured, seeds, paper delta, measured delta [interval]
    table = markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in rows], numbers=False)
    verdicts, _ = ablation_rows(results_dir, "table4")
    said = "; ".join(f"{v['row']}: {v['verdict']}" for v in verdicts[1:] if v.get("verdict"))
    return table + "\n\nVerdicts from the 95% intervals (`dlib.stats.verdict`): " + said + "."


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
    blocks = (("HEADLINE_TABLE", readme_headline(results_dir)), ("TIMING_TABLE", readme_timings(results_dir)))
    for name, block in blocks:
        pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no <!-- {name} --> ... <!-- /{name} --> block")
        # block is bound as a default so the replacement uses this iteration's block (it is called at once anyway).
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    atomic_write_text(path, text)
    return path
