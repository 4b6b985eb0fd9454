"""Notebook 06's derived results, re-derived from its committed per-training scores and compared.

``06_ablation/runs.json`` holds every (training, seed) score of the committed run. Every table, interval and
verdict notebook 06 writes from those scores is computed again here with the functions the notebook calls
(:func:`derived`: each table of :data:`dlib.experiments.ablation_tables.TABLES` through
:func:`dlib.experiments.stats.summarise`, the
verdicts of each table with increments, Table 3's paired comparisons, the collapsed runs, the paper's claims,
the +COCO control, and every training's development-split scores at 80% and 100% with the convergence summary),
and so are the README's headline and claims blocks and the report's *Paper vs measured* section, which are built
from those tables. Any
difference from the committed files is reported. Nothing is trained; this takes seconds.

The rest of notebook 06 (the baseline's whole curve, the MSC and context diagnoses, the CRF cross-validation
tables) reads checkpoints, which are not committed: ``dlib.tools.check`` covers those only through its retrained
baseline.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlib.core.io import read_json
from dlib.experiments.ablation_analysis import collapsed, table3_comparisons, verdicts
from dlib.experiments.ablation_tables import REFERENCES, TABLES, table_file, trainings_of
from dlib.experiments.claims import coco_control, paper_claims
from dlib.experiments.convergence import convergence_summary, convergence_table
from dlib.experiments.results import ABLATION_FOLDER
from dlib.experiments.stats import summarise
from dlib.tools.headline import headline_section
from dlib.tools.readme import readme_claims, readme_headline

RUNS_FILE = "runs.json"
TOLERANCE = 1e-9  # relative and absolute, per number: the same computation on the same scores


@dataclass
class Scores:
    """What notebook 06 computed its tables from: the runs by (training key, seed), the seeds, the tables."""

    runs: dict[tuple[str, int], dict[str, Any]]
    seeds: tuple[int, ...]
    tables: dict[str, Any]
    folder: Path


def load_scores(folder: Path) -> Scores:
    """The committed runs file's scores (keys ``<training>_s<seed>``) and the seeds its config ran."""
    content = read_json(folder / RUNS_FILE)
    runs = {}
    for name, scores in content["data"]["runs"].items():
        key, seed = name.rsplit("_s", 1)
        runs[(key, int(seed))] = scores
    seeds = tuple(content["provenance"]["config"]["ablation"]["seeds"])
    tables = {name: summarise(rows, runs, seeds, reference=REFERENCES[name]) for name, rows in TABLES.items()}
    return Scores(runs, seeds, tables, folder)


def _collapsed(s: Scores) -> dict[str, Any]:
    trivial = read_json(s.folder / "collapsed_runs.json")["data"]["all_background_miou"]
    return {"all_background_miou": trivial, "collapsed": [f"{k}_s{n}" for k, n in collapsed(s.runs, trivial)]}


def derived() -> dict[str, Callable[[Scores], Any]]:
    """File name -> how notebook 06 derives it from the scores (a DataFrame for a CSV, a dict for a JSON)."""
    out: dict[str, Callable[[Scores], Any]] = {}
    for name in TABLES:
        out[f"{table_file(name)}.csv"] = lambda s, name=name: s.tables[name]
        if REFERENCES[name] is not None:  # tables with increments have verdicts
            out[f"{table_file(name)}_verdicts.csv"] = lambda s, name=name: verdicts(s.tables[name])
    out["table3_comparisons.csv"] = lambda s: table3_comparisons(s.tables["table3"], s.runs, s.seeds)
    out["collapsed_runs.json"] = _collapsed
    out["paper_claims.csv"] = lambda s: paper_claims(s.runs, s.seeds)
    out["coco_control.csv"] = lambda s: coco_control(s.runs, s.seeds)
    out["convergence.csv"] = lambda s: convergence_table(s.runs, trainings_of(), s.seeds)
    out["convergence_summary.csv"] = lambda s: convergence_summary(convergence_table(s.runs, trainings_of(), s.seeds))
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def _csv_difference(path: Path, frame: Any) -> str | None:
    import io

    import pandas as pd

    committed = pd.read_csv(path, keep_default_na=False)
    derived_ = pd.read_csv(io.StringIO(frame.to_csv(index=False)), keep_default_na=False)
    if list(committed.columns) != list(derived_.columns) or len(committed) != len(derived_):
        return (f"{path}: columns/rows {list(committed.columns)} x {len(committed)} committed, "
                f"{list(derived_.columns)} x {len(derived_)} derived")
    for i in range(len(committed)):
        for col in committed.columns:
            a, b = committed.at[i, col], derived_.at[i, col]
            if not _same(a if a != "" else "nan", b if b != "" else "nan"):
                return f"{path}: row {i} ({committed.iat[i, 0]}), column {col}: committed {a}, derived {b}"
    return None


def _json_difference(path: Path, data: dict[str, Any]) -> str | None:
    committed = read_json(path)["data"]
    for key, value in data.items():
        if json.dumps(committed.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
            return f"{path}: {key}: committed {committed.get(key)}, derived {value}"
    return None


def compare_tables(results_dir: Path, scratch: Path | None = None) -> list[tuple[str, str | None]]:
    """(file, difference or None) for every derived file; with ``scratch`` the derived CSVs are written there."""
    folder = Path(results_dir) / ABLATION_FOLDER
    scores = load_scores(folder)
    rows = []
    for name, derive in derived().items():
        value = derive(scores)
        path = folder / name
        if not path.is_file():
            rows.append((f"{ABLATION_FOLDER}/{name}", f"{path} is missing: notebook 06 writes it"))
            continue
        diff = _csv_difference(path, value) if name.endswith(".csv") else _json_difference(path, value)
        rows.append((f"{ABLATION_FOLDER}/{name}", diff))
        if scratch is not None and name.endswith(".csv"):
            (scratch / ABLATION_FOLDER).mkdir(parents=True, exist_ok=True)
            value.to_csv(scratch / ABLATION_FOLDER / name, index=False)
    return rows


def _block(text: str, name: str) -> str | None:
    found = re.search(rf"<!-- {name} -->\n(.*?)\n<!-- /{name} -->", text, re.S)
    return found.group(1) if found else None


def compare_headlines(results_dir: Path, scratch: Path, readme: Path | None) -> list[tuple[str, str | None]]:
    """The README's headline block and the report's *Paper vs measured* section, built from the derived tables."""

    rows = []
    if readme is not None and readme.is_file():
        text = readme.read_text(encoding="utf-8")
        for name, want in (("HEADLINE_TABLE", readme_headline(scratch)), ("HEADLINE_CLAIMS", readme_claims(scratch))):
            rows.append((f"{readme.name} {name}", None if _block(text, name) == want else
                         f"{readme}: the {name} block differs from the one the derived tables give; "
                         "rewrite it with python -m dlib.tools.report --profile cpu --readme README.md"))
    report = Path(results_dir) / "report" / "README.md"
    if report.is_file():
        dataset = read_json(Path(results_dir) / ABLATION_FOLDER / RUNS_FILE)["provenance"]["config"]["data"]["dataset"]
        text = report.read_text(encoding="utf-8")
        missing = [line for line in headline_section(scratch, scratch / "report", dataset) if line and line not in text]
        rows.append(("report/README.md headline", None if not missing else
                     f"{report}: a line of 'Paper vs measured' differs from the derived tables: {missing[0][:120]}"))
    return rows


def check_derived(results_dir: Path, readme: Path | None = None) -> list[tuple[str, str | None]]:
    """Every comparison of this module: (what, difference or None)."""
    with tempfile.TemporaryDirectory(prefix="dlib-rederive-") as tmp:
        scratch = Path(tmp)
        return compare_tables(results_dir, scratch) + compare_headlines(results_dir, scratch, readme)
