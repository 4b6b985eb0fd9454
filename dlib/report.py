"""One report of every notebook's results: ``results/<profile>/report/README.md``.

The report gathers what the notebooks wrote under ``results/<profile>/<NN_name>/`` (CSV tables,
PNG figures, JSON metrics with provenance) into one Markdown page that GitHub renders in place:

* a headline section, *Paper vs measured*, with DeepLab v2's Table 4 (ResNet-101) and Table 3
  (VGG-16) mIoU beside our measured mean +- std over seeds (notebook 06's ``table4.csv``/``table3.csv``);
* where and when the numbers were produced (git commit, device, library versions, seeds), taken
  from the provenance every JSON carries (:func:`dlib.results.provenance`);
* one section per notebook: its title, links to the executed notebook and the raw files, its
  tables as Markdown, its figures copied to ``report/figures/<NN>_<name>.png``.

Figure names are stable, so a rerun overwrites the same files (and slides or papers that link them
pick up the new version); figures whose source has gone are deleted, so the folder stays true.
The page carries no build timestamp: rebuilding from unchanged results gives identical bytes.

    python -m dlib.report --profile cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .io import read_json
from .results import atomic_write_bytes, atomic_write_text, results_root

REPORT_DIR = "report"
FIGURE_DIR = "figures"
MAX_ROWS = 30  # longer tables are cut, with a link to the full CSV
MAX_JSON_ITEMS = 40
HEADLINE_FOLDER = "06_ablation"
HEADLINE_TABLES = (
    ("table4", "DeepLab v2 Table 4", "ResNet-101, PASCAL VOC 2012 val; components cumulative, top to bottom"),
    ("table3", "DeepLab v2 Table 3", "VGG-16, PASCAL VOC 2012 val; each head before and after the CRF"),
)
_NUMBERED = re.compile(r"^(\d\d)_[A-Za-z0-9_]+$")
_NOT_RESULTS = {REPORT_DIR, "notebooks"}
_FLOAT = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)


@dataclass
class _Folder:
    """One results folder (``NN_name`` for a notebook, any other name for benchmarks and tools)."""

    key: str  # "05" for a notebook, the folder name otherwise
    name: str  # "05_training"
    path: Path | None  # None when the notebook has not run on this profile
    notebook: Path | None = None  # the source notebook, when known
    title: str = ""


# ---------------------------------------------------------------------------------------------
# Reading the results tree
# ---------------------------------------------------------------------------------------------

def notebook_title(path: str | os.PathLike) -> str:
    """The first Markdown heading of a notebook (``# 01 · Atrous ...`` -> ``01 · Atrous ...``), or ``""``."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        for line in text.splitlines():
            match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match and match.group(1):
                return match.group(1)
    return ""


def _discover_notebooks(notebook_dir: Path | None) -> dict[str, Path]:
    from .notebooks import NOTEBOOK_DIR, discover

    folder = NOTEBOOK_DIR if notebook_dir is None else Path(notebook_dir)
    return discover(folder) if folder.is_dir() else {}


def _folders(results_dir: Path, notebook_dir: Path | None) -> tuple[list[_Folder], list[_Folder]]:
    """Notebook folders in notebook order (run or not), then the other result folders by name.

    A numbered folder without a notebook of the same name (a renamed or removed notebook) is kept,
    under its own name: the report shows what is on disk.
    """
    present = {p.name: p for p in sorted(results_dir.iterdir())} if results_dir.is_dir() else {}
    present = {n: p for n, p in present.items() if p.is_dir() and not n.startswith(".") and n not in _NOT_RESULTS}
    numbered = {nb.stem: _Folder(key, nb.stem, present.get(nb.stem), nb, notebook_title(nb))
                for key, nb in _discover_notebooks(notebook_dir).items()}
    for name, path in present.items():
        match = _NUMBERED.match(name)
        if match and name not in numbered:
            numbered[name] = _Folder(match.group(1), name, path)
    others = [_Folder(name, name, path) for name, path in present.items() if not _NUMBERED.match(name)]
    return sorted(numbered.values(), key=lambda f: (f.key, f.name)), others


def notebook_status(profile: str, results_dir: str | os.PathLike | None = None, *,
                    notebook_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One dict per numbered notebook (and numbered results folder): number, name, title, files written."""
    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    numbered, _ = _folders(results_dir, Path(notebook_dir) if notebook_dir is not None else None)
    rows = []
    for f in numbered:
        files = sorted(p.suffix for p in f.path.iterdir() if p.is_file()) if f.path is not None else []
        status = "not run yet" if f.path is None else ("incomplete" if (f.path / "INCOMPLETE").exists() else "ran")
        rows.append({"notebook": f.name, "title": f.title or f.name, "status": status,
                     "tables": files.count(".csv"), "figures": files.count(".png"), "json": files.count(".json")})
    return rows


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [], []
    return rows[0], rows[1:]


# ---------------------------------------------------------------------------------------------
# Markdown helpers
# ---------------------------------------------------------------------------------------------

def format_number(value: Any) -> str:
    """A table cell: integers as they are, floats rounded by magnitude, trailing zeros dropped.

    ``0.76254 -> "0.7625"``, ``56.5017 -> "56.5"``, ``134.347 -> "134.3"``, ``23197.19 -> "23197"``,
    ``3.0 -> "3"``, ``""``/NaN -> ``""``; anything that is not a number is returned as text.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    text = str(value).strip()
    if isinstance(value, int) or re.fullmatch(r"[+-]?\d+", text):
        return text
    if not isinstance(value, float) and not _FLOAT.fullmatch(text):
        return text  # not a plain decimal number (an id such as 2007_000170 stays as it is)
    number = float(text)
    if math.isnan(number):
        return ""
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    magnitude = abs(number)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{number:.0f}"
    if magnitude >= 100:
        out = f"{number:.1f}"
    elif magnitude >= 1:
        out = f"{number:.2f}"
    elif magnitude >= 1e-3:
        out = f"{number:.4g}"
        if "e" in out:  # .4g may still pick exponent form near 1e-3
            out = f"{number:.6f}"
    else:
        return f"{number:.2e}"
    return out.rstrip("0").rstrip(".") if "." in out else out


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numbers: bool = True) -> str:
    """A GitHub pipe table; cells are rounded with :func:`format_number` when ``numbers``."""
    header = [_cell(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        row = list(row) + [""] * (len(header) - len(row))
        cells = [_cell(format_number(c) if numbers else c) for c in row[:len(header)]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def github_slug(heading: str, seen: dict[str, int] | None = None) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_\[\]]", lambda m: "_" if m.group(0) == "_" else "", heading)
    slug = re.sub(r"[^\w\- ]", "", text.lower(), flags=re.UNICODE).replace(" ", "-")
    if seen is not None:
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            slug = f"{slug}-{count}"
    return slug


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _link(text: str, target: Path, start: Path) -> str:
    rel = _rel(target, start).replace(" ", "%20")
    return f"[{text}]({rel})"


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

def _short_commit(commit: str) -> str:
    if not commit or commit == "unknown":
        return "unknown"
    sha, _, rest = commit.partition("-")
    return sha[:10] + (f" ({rest}: uncommitted changes)" if rest == "dirty" else (f"-{rest}" if rest else ""))


def _provenances(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        payload = read_json(path, default=None)
        if payload and isinstance(payload.get("provenance"), dict):
            found.append((path.name, payload["provenance"]))
    return found


def _summarise_provenance(provs: Sequence[dict[str, Any]]) -> dict[str, str]:
    def values(key: str) -> list[str]:
        return sorted({str(p.get(key)) for p in provs if p.get(key) not in (None, "")})

    written = values("written_at")
    walls = [p.get("wall_time_s") for p in provs if isinstance(p.get("wall_time_s"), (int, float))]
    return {
        "written": (written[0] if len(written) == 1 else f"{written[0]} to {written[-1]}") if written else "?",
        "commit": ", ".join(_short_commit(c) for c in values("git_commit")) or "unknown",
        "device": "; ".join(values("device")) or "unknown",
        "seed": ", ".join(values("seed")) or "?",
        "profile": ", ".join(values("profile")) or "?",
        "wall": f"{max(walls):.0f} s" if walls else "?",
    }


def _versions_table(per_folder: dict[str, list[dict[str, Any]]]) -> str:
    """One line per library; where notebooks ran under different versions, which ran under which."""
    seen: dict[str, dict[str, set[str]]] = {}
    for key, provs in per_folder.items():
        for prov in provs:
            for lib, version in (prov.get("versions") or {}).items():
                seen.setdefault(lib, {}).setdefault(str(version), set()).add(key)
    if not seen:
        return "_No library versions recorded._"
    rows = []
    for lib in sorted(seen, key=lambda name: (name != "python", name)):
        versions = seen[lib]
        if len(versions) == 1:
            rows.append([lib, next(iter(versions))])
        else:
            rows.append([lib, "; ".join(f"{v} ({', '.join(sorted(k))})" for v, k in sorted(versions.items()))])
    return markdown_table(["library", "version"], rows, numbers=False)


# ---------------------------------------------------------------------------------------------
# Paper vs measured (notebook 06's ablation tables)
# ---------------------------------------------------------------------------------------------

def _paper_rows(table: str) -> list[dict[str, Any]]:
    """The paper's rows of Table 3/4 (from :mod:`dlib.ablation`), measured columns empty."""
    from . import ablation

    rows = ablation.TABLE4 if table == "table4" else ablation.TABLE3
    return [{"table": r.table, "row": r.name, "components": r.components, "model": "", "paper_miou": r.paper_miou,
             "measured_mean": "", "measured_std": "", "seeds": "", "status": "not run yet", "per_seed": ""}
            for r in rows]


def ablation_rows(results_dir: str | os.PathLike, table: str) -> tuple[list[dict[str, str]], bool]:
    """The rows of ``06_ablation/<table>.csv`` as dicts of strings, and whether the file exists.

    Without the file, the paper's rows with the measured columns empty and status "not run yet".
    """
    path = Path(results_dir) / HEADLINE_FOLDER / f"{table}.csv"
    if not path.is_file():
        return [{k: str(v) for k, v in r.items()} for r in _paper_rows(table)], False
    header, rows = _read_csv(path)
    return [dict(zip(header, row)) for row in rows], True


def _measured_text(row: dict[str, str]) -> str:
    status = (row.get("status") or "").strip()
    mean = _float(row.get("measured_mean"))
    if mean is None:
        return status or "not run"
    std = _float(row.get("measured_std"))
    seeds = _float(row.get("seeds"))
    text = f"{mean:.2f}"
    if std is not None and seeds is not None and seeds > 1:
        text += f" ± {std:.2f}"
    if status and status != "ok":
        text += f" ({status})"
    return text


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _delta(value: Any) -> str:
    number = _float(value)
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
        paper = _float(row.get("paper_miou"))
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


def plot_paper_vs_measured(profile: str, results_dir: str | os.PathLike | None = None):
    """Bars: the paper's mIoU and ours (mean, +- std over seeds) for Tables 4 and 3; unrun rows marked."""
    import matplotlib.pyplot as plt

    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [7, 6]})
    for ax, (table, label, _) in zip(axes, HEADLINE_TABLES):
        rows, _ = ablation_rows(results_dir, table)
        names = [r.get("row", "") for r in rows]
        paper = [_float(r.get("paper_miou")) or 0.0 for r in rows]
        mean = [_float(r.get("measured_mean")) for r in rows]
        std = [_float(r.get("measured_std")) or 0.0 for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], paper, width=0.4, color="#9aa5b1", label=f"paper ({label})")
        ax.bar([i + 0.2 for i in x], [m or 0.0 for m in mean], width=0.4, yerr=[s if m is not None else 0
               for m, s in zip(mean, std)], color="#d1495b", capsize=2, label=f"measured ({profile})")
        for i, m in enumerate(mean):
            if m is None:
                ax.text(i + 0.2, 2, "not run", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(x), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("mIoU (%)")
        ax.set_title(label.replace("DeepLab v2 ", ""), fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _headline_section(results_dir: Path, report_dir: Path, dataset: str | None) -> list[str]:
    lines = ["## Paper vs measured", ""]
    if dataset == "proxy":
        lines += ["> The measured numbers of this profile come from the small model variants trained on the "
                  "built-in proxy data set, not from the paper's networks on PASCAL VOC: compare the *pattern* "
                  "(which component helps, by how much relative to the others), not the absolute level.", ""]
    for table, label, caption in HEADLINE_TABLES:
        header, rows, exists = headline_rows(results_dir, table)
        lines += [f"### {label}: {caption}", ""]
        if exists:
            lines += [f"Source: {_link(f'{HEADLINE_FOLDER}/{table}.csv', results_dir / HEADLINE_FOLDER / f'{table}.csv', report_dir)}"
                      " (mIoU in percent; std over seeds, ddof = 1).", ""]
        else:
            lines += [f"_Not run yet_: no `{HEADLINE_FOLDER}/{table}.csv` for this profile (notebook 06). "
                      "The paper's numbers alone:", ""]
        lines += [markdown_table(header, rows, numbers=False), ""]
    return lines


# ---------------------------------------------------------------------------------------------
# Sections per results folder
# ---------------------------------------------------------------------------------------------

def _figure_name(folder: _Folder, source: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem)  # a safe file name and link target
    return f"{folder.key}_{stem}.png"


def _json_items(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Scalar leaves of a JSON value as (dotted key, text); long lists and lists of records skipped."""
    items: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key in sorted(data, key=str):
            items += _json_items(data[key], f"{prefix}{key}.")
        return items
    key = prefix[:-1]
    if isinstance(data, list):
        if len(data) <= 8 and all(not isinstance(v, (dict, list)) for v in data):
            items.append((key, ", ".join(format_number(v) for v in data)))
        return items
    text = format_number(data)
    items.append((key, text if len(text) <= 200 else text[:197] + "..."))
    return items


def _records_table(records: list[Any]) -> tuple[list[str], list[list[Any]]] | None:
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    header: list[str] = []
    for record in records:
        header += [k for k in record if k not in header]
    return header, [[r.get(k, "") for k in header] for r in records]


def _table_block(header: list[str], rows: list[list[Any]], source: Path, report_dir: Path) -> list[str]:
    lines = []
    shown = rows[:MAX_ROWS]
    lines.append(markdown_table(header, shown))
    if len(rows) > MAX_ROWS:
        lines += ["", f"_Showing {MAX_ROWS} of {len(rows)} rows; the full table: "
                      f"{_link(source.name, source, report_dir)}._"]
    return lines


def _folder_section(folder: _Folder, results_dir: Path, report_dir: Path, figures_dir: Path,
                    profile: str, heading: str) -> tuple[list[str], dict[str, bytes]]:
    """The Markdown of one folder, and the figures to copy ({report file name: bytes})."""
    lines = [heading, ""]
    figures: dict[str, bytes] = {}
    links = []
    executed = results_dir / "notebooks" / f"{folder.name}.ipynb"
    if executed.is_file():
        links.append(_link("executed notebook", executed, report_dir))
    if folder.notebook is not None and _inside(results_dir, folder.notebook.parent.parent):
            links.append(_link("source notebook", folder.notebook, report_dir))
    if folder.path is None:
        lines += [f"_Not run yet_ on the `{profile}` profile: `python -m dlib.notebooks --profile {profile} "
                  f"--only {folder.key}`." + (f" ({', '.join(links)})" if links else ""), ""]
        return lines, figures
    links.append(_link("raw results", folder.path, report_dir))
    lines += [" · ".join(links), ""]

    provs = _provenances(folder.path)
    if provs:
        s = _summarise_provenance([p for _, p in provs])
        lines += [f"Written {s['written']} at commit {s['commit']} on {s['device']}; profile {s['profile']}, "
                  f"seed {s['seed']}; wall time to the last JSON {s['wall']}.", ""]
    else:
        lines += ["_No JSON with provenance in this folder._", ""]

    csvs = sorted(folder.path.glob("*.csv"))
    csv_stems = {p.stem for p in csvs}
    if folder.name == HEADLINE_FOLDER:
        shown_above = [p for p in csvs if p.stem in dict((t, 1) for t, _, _ in HEADLINE_TABLES)]
        if shown_above:
            lines += ["Tables " + ", ".join(_link(p.name, p, report_dir) for p in shown_above)
                      + ": see [Paper vs measured](#paper-vs-measured).", ""]
        csvs = [p for p in csvs if p not in shown_above]
    for path in csvs:
        header, rows = _read_csv(path)
        lines += [f"**{path.stem}** ({_link(path.name, path, report_dir)})", ""]
        lines += (_table_block(header, rows, path, report_dir) if header else ["_(empty table)_"]) + [""]

    for name, prov_path in ((p.name, p) for p in sorted(folder.path.glob("*.json"))):
        payload = read_json(prov_path, default=None)
        if payload is None:
            continue
        data = payload.get("data", payload) if "provenance" in payload else payload
        block: list[str] = []
        if isinstance(data, dict) and prov_path.stem not in csv_stems:
            table = _records_table(data.get("rows")) if isinstance(data.get("rows"), list) else None
            if table is not None:
                block += _table_block(table[0], table[1], prov_path, report_dir) + [""]
        items = _json_items(data if isinstance(data, dict) else {"value": data})
        if items:
            cut = len(items) > MAX_JSON_ITEMS
            block += [markdown_table(["key", "value"], items[:MAX_JSON_ITEMS], numbers=False)]
            if cut:
                block += ["", f"_Showing {MAX_JSON_ITEMS} of {len(items)} values; all in "
                              f"{_link(name, prov_path, report_dir)}._"]
        if block:
            lines += [f"<details><summary>Metrics: {name}</summary>", "", *block, "", "</details>", ""]

    for path in sorted(folder.path.glob("*.png")):
        target = _figure_name(folder, path)
        figures[target] = path.read_bytes()
        lines += [f"**{path.stem}** (`figures/{target}`)", "",
                  f"![{folder.key} {path.stem}]({_rel(figures_dir / target, report_dir)})", ""]
    return lines, figures


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

class IncompleteResults(ValueError):
    """A results folder is marked INCOMPLETE (a notebook run was interrupted or failed)."""


def _refuse_incomplete(folders: Sequence[_Folder], profile: str) -> None:
    """Raise naming every folder marked incomplete, except the one of the notebook running now (notebook 08)."""
    from .notebooks import RUNNING_ENV, incomplete_marker

    running = os.environ.get(RUNNING_ENV)
    marked = [f for f in folders if f.path is not None and f.name != running and incomplete_marker(f.path).exists()]
    if marked:
        numbers = " ".join(f.name[:2] for f in marked if f.name[:2].isdigit())
        raise IncompleteResults(
            f"results folder(s) {', '.join(str(f.path) for f in marked)} are marked INCOMPLETE (a notebook run was "
            "interrupted or failed, so old and new files may be mixed); re-run "
            + (f"them (python -m dlib.notebooks --profile {profile} --only {numbers})" if numbers else "them")
            + " before building the report")


def build_report(profile: str, results_dir: str | os.PathLike | None = None, *,
                 notebook_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/report/README.md`` (and ``report/figures/``); returns the README's path.

    ``results_dir`` defaults to ``results_root() / profile`` (``$DLIB_RESULTS_DIR`` is honoured);
    ``notebook_dir`` to the repository's ``notebooks/``. Notebooks without results are listed as
    not run yet; nothing missing is an error, but a folder marked INCOMPLETE (an interrupted or failed
    notebook run) is: :class:`IncompleteResults` names it.
    """
    from .config import PROFILES, resolve

    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a profile name such as {', '.join(PROFILES)}, got {profile!r}")
    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    notebook_dir = Path(notebook_dir) if notebook_dir is not None else None
    report_dir = results_dir / REPORT_DIR
    figures_dir = report_dir / FIGURE_DIR
    dataset = resolve(profile).data.dataset if profile in PROFILES else None

    numbered, others = _folders(results_dir, notebook_dir)
    _refuse_incomplete(numbered + others, profile)
    ran = [f for f in numbered if f.path is not None]

    per_folder = {f.name: [p for _, p in _provenances(f.path)] for f in numbered + others if f.path is not None}
    all_provs = [p for provs in per_folder.values() for p in provs]

    seen_slugs: dict[str, int] = {}
    for fixed in ("Paper vs measured", "Provenance", "Notebooks", "Other results"):
        github_slug(fixed, seen_slugs)

    body: list[str] = []
    figures: dict[str, bytes] = {}
    contents = ["- [Paper vs measured](#paper-vs-measured)", "- [Provenance](#provenance)", "- [Notebooks](#notebooks)"]
    sections: list[str] = ["## Notebooks", ""]
    for folder in numbered:
        title = folder.title or folder.name
        if not title.startswith(folder.key):
            title = f"{folder.key} · {title}"
        heading = f"### {title}"
        slug = github_slug(title, seen_slugs)
        contents.append(f"  - [{title}](#{slug})" + ("" if folder.path is not None else " (not run yet)"))
        text, figs = _folder_section(folder, results_dir, report_dir, figures_dir, profile, heading)
        sections += text
        figures.update(figs)
    if others:
        contents.append("- [Other results](#other-results)")
        sections += ["## Other results", "", "Result folders that belong to no notebook (benchmarks, tools).", ""]
        for folder in others:
            text, figs = _folder_section(folder, results_dir, report_dir, figures_dir, profile, f"### {folder.name}")
            sections += text
            figures.update(figs)

    head = [f"# DeepLab v1/v2 replication: results report, profile `{profile}`", "",
            "Built by `dlib.report.build_report` (notebook 08) from the notebooks' outputs in "
            f"{_link(f'results/{profile}/', results_dir, report_dir)}; rebuild with "
            f"`python -m dlib.notebooks --profile {profile} --only 08` or `python -m dlib.report --profile {profile}`. "
            "Paper numbers are labelled with their table; every other number was measured by this code.", ""]
    missing = [f for f in numbered if f.path is None]
    head += [f"{len(ran)} of {len(numbered)} notebooks have results for this profile"
             + (f"; not run yet: {', '.join(f.name for f in missing)}." if missing else "."), ""]
    head += contents + [""]
    body += _headline_section(results_dir, report_dir, dataset)

    body += ["## Provenance", ""]
    if all_provs:
        s = _summarise_provenance(all_provs)
        body += [f"Results written {s['written']}; git commit(s): {s['commit']}; device(s): {s['device']}.", ""]
        prov_rows = []
        for folder in numbered + others:
            if folder.path is None:
                continue
            provs = per_folder.get(folder.name) or []
            if not provs:
                prov_rows.append([folder.name, "(no JSON)", "", "", "", ""])
                continue
            f = _summarise_provenance(provs)
            prov_rows.append([folder.name, f["written"], f["commit"], f["device"], f["profile"], f["seed"]])
        body += [markdown_table(["results", "written", "git commit", "device", "profile", "seed"], prov_rows,
                                numbers=False), ""]
        profiles = {str(p.get("profile")) for p in all_provs if p.get("profile")}
        if profiles - {profile}:
            body += [f"> **Warning**: some results were written under profile(s) {', '.join(sorted(profiles - {profile}))}, "
                     f"not `{profile}`.", ""]
        body += ["Library versions:", "", _versions_table(per_folder), ""]
    else:
        body += ["_No results with provenance yet for this profile._", ""]

    text = "\n".join(head + body + sections).rstrip() + "\n"

    # Figures first (so the page never links a missing file), then the page, then stale figures out.
    for name, data in sorted(figures.items()):
        target = figures_dir / name
        if not target.is_file() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
    readme = report_dir / "README.md"
    if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
        atomic_write_text(readme, text)
    if figures_dir.is_dir():
        for stale in sorted(figures_dir.iterdir()):
            if stale.is_file() and not stale.name.startswith(".") and stale.name not in figures:
                stale.unlink()
    return readme


def readme_headline(results_dir: str | os.PathLike) -> str:
    """The README's headline block: Table 4 paper beside measured (with 95% intervals) and each verdict."""
    header, rows, exists = headline_rows(results_dir, "table4")
    if not exists:
        return "_Not run yet_: no `06_ablation/table4.csv` (run notebook 06)."
    keep = [0, 2, 3, 4, 6, 7]  # row, paper, measured, seeds, paper delta, measured delta [interval]
    table = markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in rows], numbers=False)
    verdicts, _ = ablation_rows(results_dir, "table4")
    said = "; ".join(f"{v['row']}: {v['verdict']}" for v in verdicts[1:] if v.get("verdict"))
    return table + "\n\nVerdicts from the 95% intervals (`dlib.ablation.verdict`): " + said + "."


def readme_timings(results_dir: str | os.PathLike) -> str:
    """The README's per-notebook wall times (cpu), from ``notebook_times.csv``."""
    header, rows = _read_csv(Path(results_dir) / "notebook_times.csv")
    if not rows:
        return "_No timings yet_: run ./run_all.sh."
    total = sum(float(r[1]) for r in rows)
    lines = [[r[0], f"{float(r[1]):.0f}"] for r in rows] + [["**all**", f"**{total / 60:.1f} min**"]]
    return markdown_table(["notebook", "cpu wall time (s)"], lines, numbers=False)


def update_readme(readme: str | os.PathLike, results_dir: str | os.PathLike) -> Path:
    """Rewrite the generated blocks of the README (between ``<!-- NAME -->`` and ``<!-- /NAME -->``)."""
    import re

    path = Path(readme)
    text = path.read_text()
    for name, block in (("HEADLINE_TABLE", readme_headline(results_dir)), ("TIMING_TABLE", readme_timings(results_dir))):
        pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no <!-- {name} --> ... <!-- /{name} --> block")
        text = pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text)
    atomic_write_text(path, text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlib.report", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results-dir", default=None, help="default: results/<profile>/ ($DLIB_RESULTS_DIR honoured)")
    parser.add_argument("--readme", default=None, metavar="PATH",
                        help="also rewrite the generated tables of this README (e.g. README.md) from the results")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.profile, args.results_dir)
    except IncompleteResults as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    if args.readme:
        print(update_readme(args.readme, args.results_dir or results_root() / args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
