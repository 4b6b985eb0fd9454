"""Has a training reached its plateau? Scores at 80% and 100% of a run on the development split, and the criterion.

A component that adds difficulty can only be judged on a network that has finished learning. Every training of the
ablation (dlib.experiments.ablation.run_training) is scored on the **development** split (the split the iteration
count is chosen
on) with its checkpoint at 80% of the run and its final weights (:func:`convergence_scores`); a training has
converged when the mean over seeds of the difference is under :data:`CONVERGED_POINTS`
(:func:`convergence_summary`). With the poly schedule the rate falls to zero at the end, so every curve flattens by
design; the criterion asks whether it flattens at a level the network has reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlib import data as dlib_data
from dlib.core.checkpoint import CHECKPOINT_DIR
from dlib.core.config import Config
from dlib.core.datasets import dataset_info
from dlib.evaluation.evaluate import evaluate
from dlib.nets import network

CONVERGENCE_FRACTIONS = (0.8, 1.0)  # the criterion compares the scores at 80% and 100% of a run
CONVERGED_POINTS = 1.0  # a training has converged when its last fifth adds less than this (mean over seeds)


def development_set(tcfg: Config) -> Any:
    """The split a design (iterations, rates) is chosen on: the proxy's "val" split; VOC's val (it has no other)."""

    dev = dataset_info(tcfg.data.dataset).dev_split
    return dlib_data.build_dataset(tcfg.replace({"data.val_split": dev}) if dev else tcfg, "val")


def convergence_scores(tcfg: Config, model: Any, run_dir: Path) -> list[list[float]]:
    """``[[iteration, mIoU %], ...]`` on the development split at :data:`CONVERGENCE_FRACTIONS` of the run: the
    trained ``model`` for 100%, the kept checkpoint for the others (skipped when none was kept there)."""

    dev, total, out = development_set(tcfg), tcfg.train.iterations, []
    for fraction in CONVERGENCE_FRACTIONS:
        iteration = round(fraction * total)
        if iteration == total:
            net = model
        else:
            path = run_dir / CHECKPOINT_DIR / f"ckpt_{iteration:07d}.pt"
            if not path.is_file():
                continue
            net = network.load_run(tcfg, path)
        out.append([iteration, 100 * evaluate(tcfg, net, dev, progress=False)["mean_iou"]])
    return out


def last_fifth_gain(curve) -> float:
    """mIoU gained over the last fifth of training (points), on the mean over seeds: the final checkpoint minus
    the checkpoint at 80% of the run. Raises when no checkpoint sits at 80% (set ``train.checkpoint_every`` to
    a fifth of ``train.iterations``)."""
    mean = curve.groupby("iteration")["mean_iou"].mean()
    last = int(mean.index.max())
    if 0.8 * last not in mean.index:
        raise ValueError(f"no checkpoint at 80% of {last} iterations (have {list(mean.index)}); set "
                         f"train.checkpoint_every to a fifth of train.iterations")
    return float(mean.loc[last] - mean.loc[0.8 * last])


def convergence_table(runs: dict[tuple[str, int], dict[str, Any]], trainings: Sequence[Any],
                      seeds: Sequence[int]):
    """``training, seed, iteration, miou``: every training's development-split score at 80% and 100% of its run,
    per seed, as :func:`dlib.experiments.ablation.run_training` measured it (``convergence``)."""
    import pandas as pd

    lines = [{"training": t.key, "seed": seed, "iteration": int(it), "miou": float(miou)}
             for t in trainings for seed in seeds
             for it, miou in (runs.get((t.key, seed)) or {}).get("convergence", [])]
    return pd.DataFrame(lines, columns=["training", "seed", "iteration", "miou"])


def convergence_summary(table):
    """Per training: the mean over seeds at 80% and at 100% of the run, the last fifth's gain (points) and whether
    it is under :data:`CONVERGED_POINTS`."""
    import pandas as pd

    lines = []
    for key, part in table.groupby("training", sort=False):
        gain = last_fifth_gain(part.rename(columns={"miou": "mean_iou"}))
        mean = part.groupby("iteration")["miou"].mean()
        lines.append({"training": key, "seeds": part["seed"].nunique(), "iterations": int(mean.index.max()),
                      "miou_at_80": float(mean.iloc[0]), "miou_at_100": float(mean.iloc[-1]),
                      "last_fifth_gain": gain, "converged": bool(gain < CONVERGED_POINTS)})
    return pd.DataFrame(lines)


