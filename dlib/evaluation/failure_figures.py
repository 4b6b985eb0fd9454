"""The figures of notebook 07: per-class IoU, recall against object width, the trimap curve, the VOC bound.

Each function draws one figure from the tables of :mod:`dlib.evaluation.failure` and
:mod:`dlib.evaluation.stride_bound` and returns it; the notebook saves and shows it. IoU and recall
are fractions in [0, 1], drawn in percent or as fractions as each axis says; widths are in px.

    >>> fig = class_iou_bars(class_iou, thin=[2, 9], title="per-class IoU")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

_THIN_COLOURS = ("magenta", "darkorange")


CRF_SERIES = {"before_crf": "DeepLab (before CRF)", "after_crf": "after the dense CRF"}


def class_iou_bars(class_iou, thin: Sequence[int], *, title: str, series: Mapping[str, str] = CRF_SERIES):
    """Seaborn bars of IoU (%) per class, one colour per column of ``series`` (column of ``class_iou`` -> legend
    text; default notebook 07's ``before_crf`` and ``after_crf``), beside a ``class`` column; the ``thin`` classes'
    (by number) tick labels in red. The legend sits right of the axes, never on the bars; a class without an IoU
    (NaN: absent from label and prediction) has no bar."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    classes = list(class_iou["class"])
    long = class_iou.melt(id_vars="class", value_vars=list(series), var_name="series", value_name="iou")
    long = long.assign(series=long["series"].map(series), iou=100 * long["iou"]).dropna(subset=["iou"])
    fig, ax = plt.subplots(figsize=(12, 3.8), layout="constrained")
    sns.barplot(long, x="class", y="iou", hue="series", order=classes, hue_order=list(series.values()),
                errorbar=None, width=0.8, ax=ax)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    for k in thin:
        ax.get_xticklabels()[k].set_color("crimson")
    ax.set(xlabel="class", ylabel="IoU (%)", ylim=(0, 100), title=title)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title=None, frameon=False)
    return fig


def _scatter_objects(ax, objects, column: str, thin: Mapping[int, str], sizes: tuple[float, float],
                     unit: str = "") -> None:
    """One dot per object (width, ``column``): grey for the other classes, a colour per ``thin`` class."""
    mask = objects["class"].isin(list(thin))
    ax.scatter(objects.loc[~mask, "width"], objects.loc[~mask, column], s=sizes[0], color="0.65",
               label="other classes")
    for (k, name), colour in zip(thin.items(), _THIN_COLOURS):
        part = objects[objects["class"] == k]
        ax.scatter(part["width"], part[column], s=sizes[1], color=colour, edgecolor="k", linewidth=0.4,
                   label=f"{name} ({len(part)}{unit})")


def recall_vs_width(objects, bins, thin: Mapping[int, str], curves: Mapping[str, str], *, title: str):
    """Per-object recall before the CRF against width (log axis), and the pixel recall per width bin of each
    prediction in ``curves`` (name -> legend text) from ``bins`` (:func:`~dlib.evaluation.failure.recall_by_width_of`);
    the ``thin`` classes (number -> name) in colour."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    _scatter_objects(ax, objects, "recall_model", thin, (10, 22), " objects")
    for (m, text), style in zip(curves.items(), ("k-", "k--", "b:")):
        b = bins[(bins["prediction"] == m) & (bins["objects"] > 0)]
        ax.plot(b["median_width"], b["pixel_recall"], style, marker="o", ms=4,
                label=f"pixel recall per width bin, {text}")
    ax.set(xscale="log", xlabel="object width (px, ribbon width = area / skeleton length for long objects)",
           ylabel="recall (fraction of the object's pixels)", ylim=(-0.03, 1.03), title=title)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def trimap_figure(trimap, image: np.ndarray, label: np.ndarray, *, band_width: float, image_id: str, title: str):
    """Left: ``image`` (H, W, 3) uint8 with everything outside the trimap band of ``band_width`` px around the
    boundaries of ``label`` (H, W) faded; right: mIoU (%) inside the band against its width, one line per
    ``method`` of a :func:`~dlib.evaluation.failure.trimap_table`."""
    import matplotlib.pyplot as plt

    from dlib.evaluation.metrics import trimap_band

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    image, band = np.asarray(image), trimap_band(label, band_width)
    axes[0].imshow(np.where(band[..., None], image, 255 - (255 - image) // 4))
    axes[0].set_title(f"trimap band of {band_width:g} px ({image_id[-12:]})", fontsize=9)
    axes[0].axis("off")
    for method, group in trimap.groupby("method", sort=False):
        axes[1].plot(group["width"], 100 * group["mean_iou"], "o-", label=method)
    axes[1].set(xlabel="trimap band width b (px)", ylabel="mIoU inside the band (%)", title=title)
    axes[1].legend()
    return fig


def stride_bound_figure(bound, thin: Mapping[int, str], *, stride: int, suptitle: str):
    """Three panels of a :class:`~dlib.evaluation.stride_bound.StrideBound`: per-class IoU (%) sorted, the
    ``thin`` classes in red; per-object recall against width; mIoU (%) in the trimap band against its width."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.5, 1.2, 0.9]})
    order = bound.class_iou.dropna().sort_values("iou_stride8_upper_bound")
    colours = ["crimson" if c in thin.values() else "tab:blue" for c in order["class"]]
    axes[0].bar(order["class"], 100 * order["iou_stride8_upper_bound"], color=colours)
    axes[0].set_ylim(100 * order["iou_stride8_upper_bound"].min() - 5, 100)
    axes[0].tick_params(axis="x", rotation=70)
    axes[0].set(xlabel="class", ylabel="IoU (%) (axis zoomed)",
                title=f"per-class IoU of a perfect stride-{stride} prediction")
    _scatter_objects(axes[1], bound.objects, "recall_stride8", thin, (8, 20))
    axes[1].set(xscale="log", xlabel="object width (px)", ylabel="recall (fraction of the object's pixels)",
                ylim=(-0.03, 1.03),
                title="per-object recall vs width")
    axes[1].legend(fontsize=8, loc="center right")
    axes[2].plot(bound.trimap["width"], 100 * bound.trimap["mean_iou"], "o-")
    axes[2].set(xlabel="trimap band width (px)", ylabel="mIoU in the band (%)", title="boundary band")
    fig.suptitle(suptitle)
    return fig
