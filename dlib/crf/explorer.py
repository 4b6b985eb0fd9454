"""An interactive explorer of the dense CRF's parameters (notebook 04, issue 24).

Sliders for w1, theta_alpha, theta_beta, w2, theta_gamma and the number of mean-field iterations over one image,
refined by the torch backend on a downscaled copy so that each move answers in a fraction of a second.
:func:`update` is the whole computation (settings -> labels), a pure function the tests call directly;
:func:`grid_figure` draws a few settings side by side with it (what a static, executed notebook shows);
:class:`Explorer` only wires ipywidgets sliders to it, for a live kernel (JupyterLab).
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from dlib.core import viz
from dlib.core.config import CRF_DEFAULTS
from dlib.core.constants import IGNORE_INDEX
from dlib.crf.dense import DenseCRF, check_inputs
from dlib.evaluation.metrics import confusion_matrix, scores

PARAMETERS = ("w1", "theta_alpha", "theta_beta", "w2", "theta_gamma", "iterations")
# (smallest, largest, step) of each slider; tests/test_explorer.py checks that every published setting fits.
SLIDERS: dict[str, tuple[float, float, float]] = {
    "w1": (0.0, 20.0, 0.5),  # appearance weight
    "theta_alpha": (1.0, 160.0, 1.0),  # appearance reach (px of the shown copy)
    "theta_beta": (0.5, 30.0, 0.5),  # colour similarity (levels of 0-255)
    "w2": (0.0, 10.0, 0.5),  # smoothness weight
    "theta_gamma": (0.5, 10.0, 0.5),  # smoothness reach (px)
    "iterations": (0, 20, 1),  # mean-field steps
}
UNITS = {"w1": "", "theta_alpha": " px", "theta_beta": " levels", "w2": "", "theta_gamma": " px", "iterations": ""}


class Scene(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8
    probs: np.ndarray  # (C, H, W) float32, the softmax the CRF refines
    label: np.ndarray | None  # (H, W) ground truth (255 void), to score a setting; None: not scored
    scale: float  # the copy's size / the original's


def defaults() -> dict[str, float]:
    """The configured settings (:class:`dlib.core.config.CRFConfig`), the sliders' starting point."""
    return {k: getattr(CRF_DEFAULTS, k) for k in PARAMETERS}


def downscale(image: np.ndarray, probs: np.ndarray, label: np.ndarray | None = None, *,
              max_side: int = 160) -> Scene:
    """A copy whose longer side is at most ``max_side`` px: the image bilinear (PIL), the softmax bilinear with
    antialiasing (a convex combination of probabilities, so each pixel still sums to 1), the label nearest."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    check_inputs(image, probs)
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return Scene(image, probs.astype(np.float32), label, 1.0)
    small = np.array(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
    p = F.interpolate(torch.from_numpy(probs.astype(np.float32))[None], size=size, mode="bilinear",
                      align_corners=False, antialias=True)[0]
    p = (p.clamp_min(0) / p.clamp_min(0).sum(0, keepdim=True)).numpy()
    small_label = None if label is None else np.array(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
    return Scene(small, np.ascontiguousarray(p), small_label, scale)


def model(settings: Mapping[str, float], *, device: str = "cpu") -> DenseCRF:
    """The DenseCRF of ``settings`` (any of :data:`PARAMETERS`; the rest at their defaults), torch backend."""
    unknown = set(settings) - set(PARAMETERS)
    if unknown:
        raise ValueError(f"unknown CRF settings {sorted(unknown)}; choose from {PARAMETERS}")
    full = {**defaults(), **settings}
    return DenseCRF(**{k: full[k] for k in PARAMETERS if k != "iterations"}, iterations=int(full["iterations"]),
                    backend="torch", device=device)


def update(scene: Scene, settings: Mapping[str, float]) -> np.ndarray:
    """The refined labels (H, W) uint8 of ``scene`` with ``settings``: what every slider move computes."""
    return model(settings).predict(scene.image, scene.probs)


def miou(scene: Scene, labels: np.ndarray) -> float:
    """mIoU (fraction) of ``labels`` against the scene's ground truth (void ignored); NaN without one."""
    if scene.label is None:
        return float("nan")
    c = scene.probs.shape[0]
    return float(scores(confusion_matrix(labels, scene.label, c, IGNORE_INDEX))["mean_iou"])


def seconds_per_move(scene: Scene, settings: Mapping[str, float] | None = None, *, repeats: int = 3) -> float:
    """The median wall time (s) of :func:`update` over ``repeats`` calls: how fast a slider answers."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        update(scene, settings or {})
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def describe(settings: Mapping[str, float]) -> str:
    """The settings that differ from the defaults, for a panel's title ("defaults" when none does)."""
    base = defaults()
    changed = [f"{k}={settings[k]:g}{UNITS[k]}" for k in PARAMETERS if k in settings and settings[k] != base[k]]
    return ", ".join(changed) or "configured defaults"


def grid_figure(scene: Scene, settings: Sequence[Mapping[str, float]], *, caption: str, ncols: int = 3):
    """The image, the argmax of its softmax and :func:`update` for each of ``settings``, side by side, each
    titled with what it changes and its mIoU; a class legend below. Returns (figure, {title: labels})."""
    import matplotlib.pyplot as plt

    panels = [("image (downscaled copy)", scene.image, None),
              ("no CRF: argmax of the softmax", None, scene.probs.argmax(0).astype(np.uint8))]
    panels += [(describe(s), None, update(scene, s)) for s in settings]
    rows = -(-len(panels) // ncols)
    h, w = scene.image.shape[:2]
    fig, axes = plt.subplots(rows, ncols, figsize=(3.6 * ncols, (3.6 * h / w + 0.6) * rows + 1.0), squeeze=False,
                             constrained_layout=True)
    results = {}
    for ax, (title, image, labels) in zip(axes.ravel(), panels):
        if labels is not None:
            results[title] = labels
            score = miou(scene, labels)
            title += "" if np.isnan(score) else f"\nmIoU {100 * score:.1f}%"
        ax.imshow(image if labels is None else viz.overlay(scene.image, labels))
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(caption)
    viz.class_legend(fig, list(results.values()))  # below the panels (constrained layout makes room)
    return fig, results


def render(scene: Scene, labels: np.ndarray, title: str) -> bytes:
    """One refined labelling over the image as PNG bytes (what the live explorer shows)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6 * scene.image.shape[0] / scene.image.shape[1]))
    ax.imshow(viz.overlay(scene.image, labels))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    viz.class_legend(ax, labels)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class Explorer:
    """ipywidgets sliders wired to :func:`update`: each move refines the scene again and redraws it.

    ``.sliders`` (name -> slider), ``.settings`` (their values), ``.labels`` (the last result), ``.seconds``
    (its time) and ``.box`` (the widget to display). Nothing here computes: it calls :func:`update`.
    """

    def __init__(self, scene: Scene, start: Mapping[str, float] | None = None):
        import ipywidgets as widgets

        self.scene = scene
        start = {**defaults(), **(start or {})}
        self.sliders = {}
        for name in PARAMETERS:
            lo, hi, step = SLIDERS[name]
            kind = widgets.IntSlider if name == "iterations" else widgets.FloatSlider
            self.sliders[name] = kind(value=start[name], min=lo, max=hi, step=step, description=name,
                                      continuous_update=False, style={"description_width": "90px"})
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()
        for slider in self.sliders.values():
            slider.observe(self.refresh, names="value")
        self.box = widgets.HBox([widgets.VBox([*self.sliders.values(), self.status]), self.image])
        self.refresh()

    @property
    def settings(self) -> dict[str, float]:
        return {name: slider.value for name, slider in self.sliders.items()}

    def refresh(self, change: Any = None) -> None:
        start = time.perf_counter()
        self.labels = update(self.scene, self.settings)
        self.seconds = time.perf_counter() - start
        score = miou(self.scene, self.labels)
        scored = "" if np.isnan(score) else f", mIoU {100 * score:.1f}%"
        self.status.value = f"refined in {self.seconds:.2f} s{scored}"
        self.image.value = render(self.scene, self.labels, describe(self.settings) + scored)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)
