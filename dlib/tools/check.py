"""Re-run a cheap part of the committed results and compare (``./run_all.sh --check``).

    python -m dlib.tools.check [--profile cpu] [--results DIR]

The committed ``results/<profile>/`` holds what a student should see. This re-measures, in a scratch folder,

* the trivial all-background baseline of notebook 05 (the proxy val set and the metrics: exact), and
* the Table-4 baseline of notebook 06, fine-tuned again from the shipped ImageNet stand-in for the first seed
  (about a minute on 2 cores)
  on the committed run's number of threads: CPU training is then deterministic, so on the same software the
  mIoU repeats to rounding; the tolerance allows for another CPU or BLAS build,

and prints each committed number beside the measured one. Before that it re-derives every table, interval
and verdict notebook 06 computes from its committed per-training scores, and the README's headline and the
report's *Paper vs measured* from those (:mod:`dlib.tools.rederive`; ``--derived-only`` runs this part alone, in
seconds). Exit status 1 when a number is outside its tolerance or a derived file differs, 2 when the committed
results are missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dlib import data
from dlib.core.config import DEFAULT_PROFILE, PROFILES, resolve
from dlib.core.io import REPO_ROOT, read_json
from dlib.evaluation import evaluate
from dlib.experiments import ablation, ablation_tables
from dlib.experiments.results import ABLATION_FOLDER, results_root
from dlib.tools import rederive

TRIVIAL_TOLERANCE = 1e-9  # mIoU fraction: the same images, the same counts
RETRAIN_TOLERANCE = 0.01  # mIoU fraction (1 point): the same seed on another CPU/BLAS may round differently


@dataclass(frozen=True)
class Check:
    name: str
    source: str  # committed file, relative to results/<profile>/
    committed: Callable[[dict], float]  # reads the committed value from the JSON file's content
    measure: Callable[[str], float]  # measures it again (argument: the profile)
    tolerance: float


class MissingResults(FileNotFoundError):
    pass


def _data(path: Path) -> dict:
    if not path.is_file():
        raise MissingResults(f"committed result {path} is missing: run ./run_all.sh (the cpu profile) first, "
                             "or check out the committed results/")
    content = read_json(path)
    return content.get("data", content)


def _trivial(profile: str) -> float:

    cfg = resolve(profile)
    return evaluate.trivial_baseline(data.build_dataset(cfg, "val"), cfg.model.num_classes,
                                     max_images=cfg.eval.max_images)["mean_iou"]


def _ablation_baseline(profile: str, threads: int = 1) -> float:
    import torch

    cfg = resolve(profile)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # float sums depend on the thread count: use the committed run's
    try:
        with tempfile.TemporaryDirectory(prefix="dlib-check-") as tmp:
            scores = ablation.run_training(cfg, ablation_tables.TABLE4[0].training, cfg.ablation.seeds[0], tmp)
    finally:
        torch.set_num_threads(before)
    return scores["mean_iou"]


def _baseline_key(profile: str) -> str:

    return f"{ablation_tables.TABLE4[0].training.key}_s{resolve(profile).ablation.seeds[0]}"


def default_checks(profile: str, results_dir: Path | None = None) -> list[Check]:

    key = _baseline_key(profile)
    folder = Path(results_dir) if results_dir else results_root() / profile
    runs = folder / ABLATION_FOLDER / rederive.RUNS_FILE
    threads = int(_data(runs)["runs"].get(key, {}).get("threads", 1)) if runs.is_file() else 1
    return [
        Check("05 all-background baseline mIoU", "05_training/summary.json",
              lambda d: d["trivial"]["mean_iou"], _trivial, TRIVIAL_TOLERANCE),
        Check(f"06 Table 4 baseline mIoU ({key}, retrained on {threads} thread(s))",
              f"{ABLATION_FOLDER}/{rederive.RUNS_FILE}",
              lambda d: d["runs"][key]["mean_iou"], lambda p: _ablation_baseline(p, threads), RETRAIN_TOLERANCE),
    ]


def run_checks(profile: str, checks: Sequence[Check], results_dir: Path | None = None) -> list[dict]:
    """Measure every check; returns one dict per check (committed, measured, tolerance, ok)."""
    folder = Path(results_dir) if results_dir else results_root() / profile
    committed = [(c, c.committed(_data(folder / c.source))) for c in checks]  # all present before measuring
    rows = []
    for check, value in committed:
        measured = float(check.measure(profile))
        rows.append({"check": check.name, "committed": float(value), "measured": measured,
                     "tolerance": check.tolerance, "ok": abs(measured - float(value)) <= check.tolerance})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlib.tools.check", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES)
    parser.add_argument("--results", type=Path, default=None, help="committed results folder "
                        "(default: results/<profile>/ in the repository)")
    parser.add_argument("--derived-only", action="store_true",
                        help="only re-derive notebook 06's tables and the headlines from its committed scores")
    args = parser.parse_args(argv)
    folder = args.results or results_root() / args.profile
    try:
        derived_failed = _check_derived(folder, args.results is None and args.profile == "cpu")
        if args.derived_only:
            return 1 if derived_failed else 0
        rows = run_checks(args.profile, default_checks(args.profile, args.results), args.results)
    except MissingResults as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: committed {r['committed']:.6f}, measured "
              f"{r['measured']:.6f} (|diff| {abs(r['measured'] - r['committed']):.2g}, tolerance {r['tolerance']:g})")
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} checks agree with the committed results/{args.profile}/")
    return 1 if failed or derived_failed else 0


def _check_derived(folder: Path, with_readme: bool) -> int:
    """Print one line per re-derived file (dlib.tools.rederive); returns how many differ."""

    _data(folder / ABLATION_FOLDER / rederive.RUNS_FILE)  # present, or MissingResults
    rows = rederive.check_derived(folder, REPO_ROOT / "README.md" if with_readme else None)
    for what, diff in rows:
        print(f"ok   {what} re-derived from {ABLATION_FOLDER}/{rederive.RUNS_FILE}" if diff is None else f"FAIL {diff}")
    failed = sum(diff is not None for _, diff in rows)
    print(f"{len(rows) - failed} of {len(rows)} derived files agree with the committed scores")
    return failed


if __name__ == "__main__":
    sys.exit(main())
