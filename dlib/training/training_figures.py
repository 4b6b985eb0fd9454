"""The figures of notebook 05: the proxy's object sizes, the training loss and learning rate, the convergence
curve on the development split.

Each function draws one figure from plain tables (the training logs of :func:`dlib.training.train.read_log`, the
curves of ``dlib.experiments.ablation_analysis.convergence``) and returns it; the notebook saves and shows it.
Iterations are in steps, sizes in fractions of the image side, mIoU in percent.

    >>> fig = loss_and_lr({"ASPP": log}, outputs=4, title="training, proxy train split, cpu profile")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def object_sizes(sizes: Mapping[str, Sequence[float]], *, title: str, edges: Sequence[float] | None = None):
    """Histogram of object sizes (fraction of the image side, log bins) per split: ``sizes`` maps split -> sizes."""
    import matplotlib.pyplot as plt

    edges = np.geomspace(0.04, 0.45, 13) if edges is None else np.asarray(edges)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.hist(list(sizes.values()), bins=edges, label=[f"{s} split ({len(v)} objects)" for s, v in sizes.items()])
    ax.set(xscale="log", xlabel="object size / image side (fraction, log bins)", ylabel="objects per bin (count)",
           title=title)
    ax.legend()
    return fig


def loss_and_lr(logs: Mapping[str, object], *, outputs: int, title: str):
    """Left: the training loss of each run (``logs`` maps a name to a table with ``iteration``, ``loss``, ``lr``),
    log scale, labelled as the sum over ``outputs`` loss terms (4 with MSC); right: the base (1x) learning rate."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for name, log in logs.items():
        ax_loss.plot(log["iteration"], log["loss"], label=name)
        ax_lr.plot(log["iteration"], log["lr"], label=name)
    summed = f"sum of {outputs} MSC outputs" if outputs > 1 else "one output"
    ax_loss.set(xlabel="iteration (steps)", ylabel=f"training loss (nats, {summed})", yscale="log",
                title="cross-entropy loss")
    ax_lr.set(xlabel="iteration (steps)", ylabel="base learning rate (1x group, per step)",
              title="learning rate (warm-up, then poly, power 0.9)")
    ax_loss.legend(loc="best")
    ax_lr.legend(loc="best")
    fig.suptitle(title)
    return fig


def convergence(curves: Mapping[str, object], *, title: str):
    """mIoU (%) of each run's kept checkpoints against the iteration: ``curves`` maps a name to a table with
    ``iteration`` and ``mean_iou`` (%); the last fifth of the run is shaded (the plateau criterion's span)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.4), layout="constrained")
    last = max(float(np.max(c["iteration"])) for c in curves.values())
    ax.axvspan(0.8 * last, last, color="0.92", zorder=0, label="last fifth of the run")
    for name, curve in curves.items():
        ax.plot(curve["iteration"], curve["mean_iou"], "o-", label=name)
    ax.set(xlabel="iteration (steps)", ylabel="mIoU (%)", ylim=(0, None), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the axes, off the curves
    return fig
