"""Reading the ablation: verdicts and paired comparisons of the tables, and diagnoses of where each component's
effect comes from (the figures are in :mod:`dlib.experiments.ablation_figures`). Diagnoses, on the trainings
:func:`dlib.experiments.ablation_runs.run_tables`
left in ``run_root``: :func:`msc_diagnosis` (MSC at training vs at test time), :func:`context_diagnosis` (the
proxy's look-alike classes, which only a large field of view tells apart), :func:`convergence` (the curve of
every checkpoint; the plateau criterion is in :mod:`dlib.experiments.convergence`), :func:`training_curves` and
:func:`collapsed` (runs stuck at the all-background solution). The statistics themselves are in
:mod:`dlib.experiments.stats`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dlib import data as dlib_data
from dlib.core.checkpoint import CHECKPOINT_DIR
from dlib.core.config import Config
from dlib.core.datasets import dataset_info
from dlib.data.proxy import CONTEXT_PAIRS
from dlib.evaluation.evaluate import evaluate
from dlib.experiments.ablation import run_dir_of
from dlib.experiments.ablation_tables import ONE_AT_A_TIME, TABLE3, TABLE4, Row, Training, training_config
from dlib.experiments.stats import paired_stats, verdict
from dlib.nets import network
from dlib.training.loss import loss_terms
from dlib.training.train import read_log


def verdicts(table) -> Any:
    """For each increment: the paper's, ours with its 95% interval, and the verdict that interval gives."""
    cols = ["row", "paper_increment", "measured_increment", "increment_ci_low", "increment_ci_high", "verdict"]
    return table.iloc[1:][cols].rename(columns={"row": "component"}).reset_index(drop=True)


def table3_comparisons(table3, runs: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int]):
    """Table 3's questions, paired per seed: ASPP-S / ASPP-L against LargeFOV and ASPP-L against ASPP-S before the
    CRF, and each CRF gain."""
    import pandas as pd

    by_name = {r.name: r for r in TABLE3}
    paper = table3.set_index("row")["paper_miou"]
    pairs = [("ASPP-S", "LargeFOV"), ("ASPP-L", "LargeFOV"), ("ASPP-L", "ASPP-S")]
    pairs += [(f"{h} +CRF", h) for h in ("LargeFOV", "ASPP-S", "ASPP-L")]
    lines = []
    for a, b in pairs:
        st = paired_stats(runs, by_name[a], by_name[b], seeds)
        diff = float(paper[a] - paper[b])
        lines.append({"comparison": f"{a} - {b}", "paper_difference": diff, "measured_difference": st["mean"],
                      "ci_low": st["ci_low"], "ci_high": st["ci_high"], "seeds": st["n"],
                      "verdict": verdict(st["ci_low"], st["ci_high"], diff)})
    return pd.DataFrame(lines)


def msc_diagnosis(cfg: Config, run_root: str | os.PathLike, seed: int | None = None):
    """Where MSC's effect comes from: the Table-4 baseline and +MSC networks, each scored single-scale and
    with MSC max fusion at test time (mIoU %, val set). Uses the trained runs of ``run_tables``."""
    import pandas as pd

    seed = cfg.ablation.seeds[0] if seed is None else seed
    lines = []
    for row in TABLE4[:2]:
        tcfg = training_config(cfg, row.training, seed)
        model = network.load_run(tcfg, run_dir_of(cfg, row.training, seed, run_root))
        val = dlib_data.build_dataset(tcfg, "val")
        scores = {msc: 100 * evaluate(tcfg, model, val, msc=msc, progress=False)["mean_iou"] for msc in (False, True)}
        lines.append({"trained": f"{row.name} ({'with' if row.training.msc else 'without'} MSC losses)",
                      "test single-scale": scores[False], "test MSC (max fusion)": scores[True]})
    return pd.DataFrame(lines).set_index("trained")


def convergence(cfg: Config, training: Training, seeds: Sequence[int], run_root: str | os.PathLike, *,
                split: str = "val", fractions: Sequence[float] | None = None):
    """mIoU (%) of every kept checkpoint of one training, for each seed, on the proxy ``split`` (default the
    development split): the curve that shows whether ``train.iterations`` reaches a plateau. One line per
    (seed, iteration). ``fractions`` (e.g. (0.8, 1.0)): only the checkpoints at those fractions of the run.
    Uses the trained runs."""
    import pandas as pd

    lines = []
    for seed in seeds:
        tcfg = training_config(cfg, training, seed)
        folder = run_dir_of(cfg, training, seed, run_root) / CHECKPOINT_DIR
        named_splits = dataset_info(cfg.data.dataset).dev_split is not None  # the proxy: data.val_split picks one
        val = dlib_data.build_dataset(tcfg.replace({"data.val_split": split}) if named_splits else tcfg, "val")
        ckpts = sorted(folder.glob("ckpt_*.pt"))
        if fractions is not None:
            total = tcfg.train.iterations
            wanted = {round(f * total) for f in fractions}
            ckpts = [c for c in ckpts if int(c.stem.split("_")[1]) in wanted]
        for ckpt in ckpts:
            model = network.load_run(tcfg, ckpt)
            score = evaluate(tcfg, model, val, progress=False)["mean_iou"]
            lines.append({"seed": seed, "iteration": int(ckpt.stem.split("_")[1]), "mean_iou": 100 * score})
    return pd.DataFrame(lines)


def class_group_iou(class_iou: Sequence[float], num_classes: int) -> dict[str, float]:
    """Mean IoU (%) of the proxy's look-alike classes (the ``CONTEXT_PAIRS``, told apart only by a context
    ring) and of the other foreground classes, from one per-class IoU vector (NaN classes skipped)."""

    context = sorted({c for pair in CONTEXT_PAIRS for c in pair})
    others = [c for c in range(1, num_classes) if c not in context]
    iou = np.asarray(class_iou, dtype=float)
    return {"look-alike classes IoU %": 100 * float(np.nanmean(iou[context])),
            "other classes IoU %": 100 * float(np.nanmean(iou[others]))}


def context_diagnosis(cfg: Config, runs: dict[tuple[str, int], dict[str, Any]], *, seed: int):
    """:func:`class_group_iou` of each head: alone on the baseline (one-at-a-time rows) and in Table 4
    (after +Aug), first seed, before the CRF."""
    import pandas as pd

    rows = [("alone on the baseline", r) for r in ONE_AT_A_TIME if r.name in ("baseline", "+LargeFOV", "+ASPP")]
    rows += [("Table 4", r) for r in TABLE4[3:6]]
    lines = []
    for where, row in rows:
        res = runs.get((row.training.key, seed)) or {}
        if res.get("status") != "ok" or res.get("class_iou") is None:
            continue
        lines.append({"setting": where, "row": row.name, "head": row.training.head,
                      **class_group_iou(res["class_iou"], cfg.model.num_classes), "mIoU %": 100 * res["mean_iou"]})
    return pd.DataFrame(lines).set_index(["setting", "row"]) if lines else pd.DataFrame(lines)


def training_curves(cfg: Config, rows: Sequence[Row], seeds: Sequence[int], run_root: str | os.PathLike):
    """The logged training loss of each row's training for each seed (``train_log.csv``): one line per log entry,
    with ``loss_terms``, how many losses the logged one sums (:func:`dlib.training.loss.loss_terms`)."""
    import pandas as pd

    frames = []
    for row in rows:
        for seed in seeds:
            tcfg = training_config(cfg, row.training, seed)
            log = read_log(run_dir_of(cfg, row.training, seed, run_root))
            terms = loss_terms(tcfg.train.msc, tcfg.model.msc_scales, tcfg.train.msc_loss)
            if log:
                frames.append(pd.DataFrame(log).assign(row=row.name, seed=seed, loss_terms=terms))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collapsed(results: dict[tuple[str, int], dict[str, Any]], trivial_miou: float, *, tolerance: float = 0.005):
    """The (training key, seed) runs whose mIoU is the all-background predictor's (within ``tolerance``):
    trainings that collapsed to predicting background everywhere."""
    return sorted(key for key, res in results.items()
                  if res.get("status") == "ok" and abs(res["mean_iou"] - trivial_miou) <= tolerance)
