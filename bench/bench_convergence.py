"""How far the cpu ablation's trainings are from their plateau: train some of them for longer than the profile does
and compare, on the development split, the score at 80% and 100% of the longer run with the profile's own run.

    flock /tmp/heavy.lock .venv/bin/python bench/bench_convergence.py --iterations 1200 \
        --trainings resnet_baseline_msc resnet_aspp_l_msc_coco_aug vgg_aspp_s --seeds 0 1 2 --workers 2

Prints one line per (training, seed) and a mean per training: the last fifth's gain of the longer run (the
plateau criterion of dlib.experiments.convergence, under 1 point means converged) and what the longer run adds to the
profile's own run at its end (from the committed ``results/<profile>/06_ablation/convergence.csv``).
The trainings go under ``.cache/bench_convergence/<iterations>``: a second call re-reads them.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlib.core import config, io
from dlib.experiments import ablation_runs, ablation_tables, results
from dlib.experiments.convergence import CONVERGED_POINTS
from dlib.experiments.results import ABLATION_FOLDER


def main() -> None:
    keys = [t.key for t in ablation_tables.trainings_of()]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--iterations", type=int, required=True, help="iterations of the longer runs")
    p.add_argument("--trainings", nargs="+", required=True, choices=keys, metavar="KEY",
                   help=f"training keys: {', '.join(keys)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2, help="trainings side by side, one thread each")
    p.add_argument("--profile-runs", type=Path, default=None,
                   help="the profile's convergence.csv, for the comparison column (default: the committed one of "
                        "--profile; skipped when missing)")
    args = p.parse_args()
    # Scored on the development split: the design is judged there, never on the reported test split.
    cfg = config.resolve(args.profile, overrides={"ablation.iterations": args.iterations, "data.val_split": "val",
                                                  "ablation.workers": args.workers})
    by_key = {t.key: t for t in ablation_tables.trainings_of()}
    jobs = [(by_key[k], seed, None) for k in args.trainings for seed in args.seeds]
    out = ablation_runs.run_trainings(cfg, jobs, io.cache_root() / "bench_convergence" / str(args.iterations),
                                 progress=lambda line: print(line, flush=True))
    profile_end = _profile_scores(args.profile_runs or results.results_root() / args.profile / ABLATION_FOLDER
                                  / "convergence.csv")
    for key in args.trainings:
        gains, adds = [], []
        for seed in args.seeds:
            (_, at80), (_, at100) = out[(key, seed)]["convergence"]
            gains.append(at100 - at80)
            line = f"{key} seed {seed}: {at80:.1f} -> {at100:.1f} in the last fifth ({at100 - at80:+.2f})"
            if (key, seed) in profile_end:
                adds.append(at100 - profile_end[(key, seed)])
                line += f"; the profile's own run ended at {profile_end[(key, seed)]:.1f} ({adds[-1]:+.1f})"
            print(line)
        verdict = "converged" if statistics.mean(gains) < CONVERGED_POINTS else "not converged"
        summary = f"{key} at {args.iterations} iterations: last fifth {statistics.mean(gains):+.2f} ({verdict})"
        if adds:
            summary += f"; {statistics.mean(adds):+.2f} over the profile's run"
        print(summary)


def _profile_scores(path: Path) -> dict[tuple[str, int], float]:
    """(training, seed) -> development-split mIoU % at the end of the profile's runs (convergence.csv)."""
    if not path.is_file():
        return {}
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    last = {}
    for row in rows:
        key = (row["training"], int(row["seed"]))
        if key not in last or int(row["iteration"]) > last[key][0]:
            last[key] = (int(row["iteration"]), float(row["miou"]))
    return {k: v[1] for k, v in last.items()}


if __name__ == "__main__":
    main()
