"""Whole ablation tables: every training x seed of the chosen tables, run in worker processes, then the CRF rows
(each training with a CRF row gets its own cross-validated parameters, :func:`dlib.experiments.ablation.tune_crf`).

One training is :func:`dlib.experiments.ablation.run_training` (train -> evaluate -> CRF, each stage cached);
this module schedules them: trainings shared by several rows run once, two single-threaded trainings side by
side on a small CPU, one progress line per finished training, and a JSON-ready record of every score.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlib.core.config import Config, available_cpus
from dlib.experiments.ablation import run_dir_of, run_training, tune_crf
from dlib.experiments.ablation_tables import REFERENCES, TABLES, Training, trainings_of
from dlib.experiments.stats import summarise


def _job(args: tuple) -> tuple[str, int, dict[str, Any], float]:
    cfg_dict, training, seed, run_root, crf_params, threads = args
    import time

    import torch

    torch.set_num_threads(threads)
    cfg = Config.from_dict(cfg_dict)
    start = time.time()
    res = run_training(cfg, training, seed, run_root, crf_params=crf_params)
    return training.key, seed, res, time.time() - start


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def training_label(training: Training) -> str:
    """The first table row that trains ``training``, e.g. "+MSC (table4)"."""
    row = next((r for rows in TABLES.values() for r in rows if r.training == training), None)
    return f"{row.name} ({row.table})" if row else training.key


def progress_line(done: int, total: int, training: Training, seed: int, res: dict[str, Any], seconds: float) -> str:
    """One line per finished training: ``[12/33] +MSC (table4) seed 1: 51.1% (61 s)``."""
    if res.get("status") != "ok":
        score = res.get("status", "not run")
    else:
        crf = f", {100 * res['mean_iou_crf']:.1f}% with the CRF" if "mean_iou_crf" in res else ""
        score = f"{100 * res['mean_iou']:.1f}%{crf}"
    return f"[{done}/{total}] {training_label(training)} seed {seed}: {score} ({seconds:.0f} s)"


def run_trainings(cfg: Config, jobs: Sequence[tuple[Training, int, dict | None]], run_root: str | os.PathLike, *,
                  workers: int | None = None, progress: Callable[[str], None] | None = None
                  ) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (training, seed, crf_params) jobs, ``workers`` at a time in separate processes (1: in this one).

    On a small CPU two single-threaded trainings side by side beat one two-threaded training. Results are
    deterministic for a given number of threads per training. ``progress`` gets one :func:`progress_line` per
    finished job.
    """
    workers = cfg.ablation.workers if workers is None else workers
    # Jobs that train the same network (same run folder) run once; every row key gets the result.
    unique: dict[tuple[Path, str], tuple[Training, int, dict | None]] = {}
    keys: dict[tuple[Path, str], list[tuple[str, int]]] = {}
    for training, seed, crf_params in jobs:
        ident = (run_dir_of(cfg, training, seed, run_root), json.dumps(crf_params, sort_keys=True))
        unique.setdefault(ident, (training, seed, crf_params))
        keys.setdefault(ident, []).append((training.key, seed))
    done: dict[tuple[str, int], dict[str, Any]] = {}
    trainings = {t.key: t for t, _, _ in unique.values()}

    def finished(key: str, seed: int, res: dict[str, Any], seconds: float) -> None:
        done[(key, seed)] = res
        if progress:
            progress(progress_line(len(done), len(unique), trainings[key], seed, res, seconds))

    if workers <= 1:
        for training, seed, crf_params in unique.values():
            finished(*_job((cfg.to_dict(), training, seed, str(run_root), crf_params, _threads())))
    else:
        threads = max(1, available_cpus() // workers)
        args = [(cfg.to_dict(), t, s, str(run_root), p, threads) for t, s, p in unique.values()]
        # Longest first (MSC trainings cost about twice the others), so the pool ends together.
        args.sort(key=lambda a: (not a[1].msc, a[1].head == "baseline"))
        # spawn: a fresh interpreter per worker (fork would copy this process's torch threads and state); a worker
        # is replaced after 4 trainings. Not concurrent.futures: its ProcessPoolExecutor(max_tasks_per_child=4) hung
        # on Python 3.11.7 once the first worker retired (a cold run of notebook 06 stopped after 6 trainings, all
        # workers gone, the executor waiting forever), and without a task limit the workers' memory is not renewed.
        with mp.get_context("spawn").Pool(workers, maxtasksperchild=4) as pool:
            for key, seed, res, seconds in pool.imap_unordered(_job, args):
                finished(key, seed, res, seconds)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for ident, (training, seed, _) in unique.items():
        for key in keys[ident]:
            out[key] = done[(training.key, seed)]
    return out


@dataclass
class AblationResult:
    tables: dict[str, Any]  # "table4"/"table3"/"ofat" -> pandas DataFrame (see dlib.experiments.stats.summarise)
    crf: dict[str, Any]  # training key -> dlib.crf.crossval.CVResult of its CRF tuning (ablation.crf_tune_on's images)
    runs: dict[tuple[str, int], dict[str, Any]]  # (training key, seed) -> scores


def run_tables(cfg: Config, run_root: str | os.PathLike,
               tables: Sequence[str] = ("table4", "table3", "ofat", "coco_control"), *,
               progress: Callable[[str], None] | None = None) -> AblationResult:
    """Every training of ``tables`` for every seed of ``cfg.ablation.seeds``, then the CRF rows.

    Each training that has a CRF row gets its own CRF parameters (:func:`tune_crf`), cross-validated with its
    first seed's model on the images ``ablation.crf_tune_on`` names and applied to every seed: 100 val images
    on gpu, as the paper (which are then also scored), held-out training images on cpu/smoke.
    """
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; valid: {sorted(TABLES)}")
    seeds = tuple(cfg.ablation.seeds)
    if not seeds:
        raise ValueError("ablation.seeds is empty; give at least one seed")
    trainings = trainings_of(tables)
    runs = run_trainings(cfg, [(t, s, None) for t in trainings for s in seeds], run_root, progress=progress)
    crf, crf_jobs = {}, []
    for training in dict.fromkeys(r.training for name in tables for r in TABLES[name] if r.crf):
        if runs[(training.key, seeds[0])].get("status") != "ok":
            continue  # e.g. the COCO rows on VOC without a COCO checkpoint: reported as not run
        crf[training.key] = tune_crf(cfg, training, seeds[0], run_root)
        params = {k: float(crf[training.key].best[k]) for k in ("w1", "theta_alpha", "theta_beta")}
        crf_jobs += [(training, seed, params) for seed in seeds]
    runs.update(run_trainings(cfg, crf_jobs, run_root, progress=progress))
    return AblationResult({name: summarise(TABLES[name], runs, seeds, reference=REFERENCES[name])
                           for name in tables}, crf, runs)


def runs_record(result: AblationResult) -> dict[str, Any]:
    """Every (training, seed) score of a run, JSON-ready (what ``dlib.tools.check`` compares against)."""
    runs = {}
    for (key, seed), res in sorted(result.runs.items()):
        runs[f"{key}_s{seed}"] = {k: v for k, v in res.items() if k not in ("class_iou", "class_iou_crf", "run_dir")}
    best = {name: {k: float(cv.best[k]) for k in ("w1", "theta_alpha", "theta_beta", "mean_iou")}
            for name, cv in result.crf.items()}
    return {"runs": runs, "crf_best": best}
