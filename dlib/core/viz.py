"""Plotting helpers shared by the notebooks: one figure style, saving (PNG + PDF), label colouring with a
class legend, and the two architecture drawings (the DeepLab pipeline, ASPP's parallel branches)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dlib.core import figures
from dlib.core.constants import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, voc_palette
from dlib.core.io import atomic_write_bytes

# One look for every figure (rcParams): small type that stays legible in a report column, no top/right
# spines, TrueType fonts in the PDF (text stays text, editable and searchable).
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "figure.titlesize": 11,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False,
    "figure.facecolor": "white", "savefig.facecolor": "white",
    "pdf.fonttype": 42, "svg.fonttype": "none",
}
FIGURE_DPI = 110  # PNG resolution of saved figures
VECTOR_FORMAT = "pdf"  # every saved figure also gets this vector copy beside its PNG (for reports)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Draw the figures made inside this block in the house style (``with viz.style(): ...``)."""
    import matplotlib as mpl

    with mpl.rc_context(STYLE):
        yield


def apply_style() -> None:
    """Use the house style for every figure from now on (a notebook calls this once, after its imports)."""
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)


def save_figure(fig, path: str | os.PathLike, *, profile: str, dpi: int = FIGURE_DPI) -> Path:
    """Save ``fig`` as ``path`` (a .png) and as a vector copy beside it (same name, ``.pdf``); returns the PNG path.

    The figure is checked first (:func:`dlib.core.figures.check`: a title naming ``profile`` and the split,
    labelled axes with units, a colour bar or legend where one applies); a figure that fails is not saved and
    the error lists why. The PNG carries the check's description (:func:`dlib.core.figures.read_png`). Both are
    rendered to memory first and then written atomically (vector copy first), so a failed draw
    writes nothing and a reader never finds half a file. Dates are left out so re-runs give the same PDF.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_figure writes a PNG and a .{VECTOR_FORMAT} beside it; give a path ending in "
                         f".png, not {path.name!r}")
    described = figures.to_text(figures.check(fig, profile))
    rendered = {}
    formats = (("png", {"Software": None, figures.METADATA_KEY: described}), (VECTOR_FORMAT, {"CreationDate": None}))
    for fmt, metadata in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        rendered[fmt] = buf.getvalue()
    atomic_write_bytes(path.with_suffix(f".{VECTOR_FORMAT}"), rendered[VECTOR_FORMAT])
    return atomic_write_bytes(path, rendered["png"])


def split_caption(cfg, split: str | None = None) -> str:
    """Where a figure's numbers come from, for its title: ``"<data set> <split> split, <profile> profile"``.

    ``split`` defaults to the evaluation split, ``cfg.data.val_split``.
    """
    return caption(cfg.data.dataset, split or cfg.data.val_split, cfg.profile)


def caption(dataset: str, split: str, profile: str) -> str:
    """``"<dataset> <split> split, <profile> profile"``: the words every figure title ends with
    (:mod:`dlib.core.figures` looks for the profile and the split in them)."""
    return f"{dataset} {split} split, {profile} profile"


def synthetic_caption(cfg, what: str = "made-up numbers") -> str:
    """The title words of a figure of made-up data or a drawing: ``"synthetic (<what>), <profile> profile"``,
    ``what`` saying what was made up (``"a drawing"``, ``"random inputs and weights"``)."""
    return f"synthetic ({what}), {cfg.profile} profile"


def demo_caption(pair, cfg) -> str:
    """The title words of a figure of :func:`dlib.data.demo_pairs`: their data and split, and the profile.

    Real pairs are PASCAL VOC 2012 train-split images; without them the pairs are generated proxy samples.
    """
    voc = pair.source.startswith("PASCAL VOC")
    data = "PASCAL VOC 2012 train split" if voc else "proxy samples (generated: synthetic)"
    return f"{data}, {cfg.profile} profile"


def colorize(label: np.ndarray) -> np.ndarray:
    """Class-index map (H, W) -> RGB (H, W, 3) uint8 with the VOC palette (255, void, is cream)."""
    label = np.asarray(label)
    return voc_palette()[label.astype(np.int64).clip(0, 255)]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colourised label over an RGB image; void pixels stay as in the image."""
    colour = colorize(label).astype(np.float32)
    out = image.astype(np.float32).copy()
    mask = np.asarray(label) != IGNORE_INDEX
    out[mask] = (1 - alpha) * out[mask] + alpha * colour[mask]
    return out.clip(0, 255).astype(np.uint8)


def plot_atrous_taps(ax, *, length: int, kernel: int, rate: int, output_index: int, title: str = "") -> None:
    """Draw a 1-D input as a row of cells and mark the inputs one output of an atrous filter reads."""
    from matplotlib.patches import Rectangle

    taps = [output_index + rate * k for k in range(kernel)]
    for i in range(length):
        used = i in taps
        ax.add_patch(Rectangle((i, 0), 0.9, 0.9, color="tab:orange" if used else "0.85"))
        if used:
            ax.annotate("", xy=(i + 0.45, 0.95), xytext=(output_index + rate * (kernel - 1) / 2 + 0.45, 2.2),
                        arrowprops={"arrowstyle": "->", "color": "0.3"})
    centre = output_index + rate * (kernel - 1) / 2
    ax.add_patch(Rectangle((centre, 2.2), 0.9, 0.9, color="tab:blue"))
    ax.text(centre + 1.2, 2.5, f"output, rate {rate}: {kernel} taps span {rate * (kernel - 1) + 1} inputs",
            va="center", fontsize=9)
    ax.set_xlim(-0.5, length + 0.5)
    ax.set_ylim(-0.5, 3.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10, loc="left")


def plot_aspp_taps(ax, centre, rates, *, output_stride: int = 8, kernel: int = 3, colours=None) -> None:
    """Mark, around image pixel ``centre`` (y, x), the k x k taps of each ASPP branch's atrous filter.

    A rate-r filter on stride-``output_stride`` features reads features r steps apart, i.e. image
    positions output_stride * r pixels apart (DeepLab v2, Fig. 4).
    """
    from matplotlib.patches import Rectangle

    colours = colours or ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    cy, cx = centre
    for rate, colour in zip(rates, colours):
        step = output_stride * rate
        offsets = [step * (k - (kernel - 1) / 2) for k in range(kernel)]
        ys = [cy + dy for dy in offsets for _ in offsets]
        xs = [cx + dx for _ in offsets for dx in offsets]
        ax.scatter(xs, ys, s=28, color=colour, edgecolor="white", linewidth=0.6, zorder=3,
                   label=f"rate {rate}: taps {step} px apart")
        half = step * (kernel - 1) / 2
        ax.add_patch(Rectangle((cx - half, cy - half), 2 * half, 2 * half, fill=False, color=colour,
                               linestyle="--", linewidth=1))


def image_grid(rows, *, col_titles=None, row_titles=None, size: float = 2.3, suptitle: str = "",
               legend: bool = True, names=VOC_CLASSES):
    """A figure of images, one list per row (RGB (H, W, 3) arrays or class maps (H, W), coloured with
    :func:`colorize`); ``col_titles`` label the top row, ``row_titles`` the left column. With ``legend``
    (the default) the classes of all class maps shown get a :func:`class_legend` below the grid."""
    import matplotlib.pyplot as plt

    rows = [list(r) for r in rows]
    if not rows or not rows[0]:
        raise ValueError("image_grid needs at least one row with at least one image")
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * len(rows)), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            panel = np.asarray(row[j])
            ax.imshow(colorize(panel) if panel.ndim == 2 else panel,
                      interpolation="nearest" if panel.ndim == 2 else None)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    label_maps = [np.asarray(p) for r in rows for p in r if np.asarray(p).ndim == 2]
    if legend and label_maps:
        class_legend(fig, label_maps, names, ncol=max(ncols, 4))
    return fig


def classes_present(labels) -> list[int]:
    """The sorted class indices (void included) found in a label map (H, W) or a list of label maps."""
    maps = [labels] if getattr(labels, "ndim", None) == 2 else list(labels)
    return sorted({int(v) for lab in maps for v in np.unique(np.asarray(lab))})


def class_legend(fig_or_ax, labels, names=VOC_CLASSES, *, ncol: int = 7, **kw):
    """A legend of the palette colours of the classes present in ``labels`` (one label map or a list of them;
    void listed if present): one entry per class shown, in class order.

    Every segmentation figure gets one, so a reader can tell the colours apart. On a figure it sits below
    the panels (``ncol`` entries a row); on an axes, to its right in one column.
    """
    from matplotlib.axes import Axes
    from matplotlib.patches import Patch

    palette = voc_palette()
    handles = [Patch(facecolor=palette[c] / 255, edgecolor="k", linewidth=0.3,
                     label="void" if c == IGNORE_INDEX else (names[c] if c < len(names) else str(c)))
               for c in classes_present(labels)]
    if isinstance(fig_or_ax, Axes):
        kw.setdefault("loc", "upper left")
        kw.setdefault("bbox_to_anchor", (1.02, 1.0))
        ncol = 1
    elif "loc" not in kw and fig_or_ax.get_constrained_layout():
        kw["loc"] = "outside lower center"  # constrained layout makes room below the panels
    elif "loc" not in kw:
        for ax in fig_or_ax.axes:
            ax.apply_aspect()  # the panels' final boxes (images shrink to their aspect ratio)
        bottom = min((ax.get_position().y0 for ax in fig_or_ax.axes), default=0.0)
        kw.update(loc="upper center", bbox_to_anchor=(0.5, bottom - 0.01))
    kw.setdefault("fontsize", 8)
    return fig_or_ax.legend(handles=handles, ncol=min(ncol, max(1, len(handles))), frameon=False, **kw)


def show_labels(ax, label, *, title: str = "") -> None:
    """Draw a class-index map (H, W) in the VOC palette on ``ax``, without ticks (pair it with :func:`class_legend`)."""
    ax.imshow(colorize(label), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _box(ax, x: float, y: float, w: float, h: float, text: str, colour: str, *, fontsize: float = 8) -> None:
    """A rounded box with centred text, (x, y) its lower-left corner, in data units."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", facecolor=colour,
                                edgecolor="0.25", linewidth=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


_INCH_PER_UNIT = 0.5  # drawings are laid out in data units; their own figures give each unit half an inch


def _canvas(ax):
    """``ax``, or a new axes filling a figure that is sized later by :func:`_finish`."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure().add_axes((0, 0, 1, 1))


def _finish(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if tuple(ax.get_position(original=True).bounds) == (0, 0, 1, 1):  # our own figure: size it to the drawing
        ax.figure.set_size_inches(_INCH_PER_UNIT * (xlim[1] - xlim[0]), _INCH_PER_UNIT * (ylim[1] - ylim[0]))
    return ax.figure


def _arrow(ax, start, end, text: str = "", *, offset: float = 0.12) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "0.25", "lw": 1.0,
                                                        "shrinkA": 0, "shrinkB": 0})
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + offset, text, ha="center", va="bottom",
                fontsize=7, color="0.25")


def plot_pipeline(ax=None, *, rates: Sequence[int] = (6, 12, 18, 24), output_stride: int = 8,
                  num_classes: int = NUM_CLASSES, title: str = ""):
    """Draw the DeepLab pipeline (DeepLab v2, Fig. 1): a DCNN with atrous convolution at ``output_stride``,
    ASPP at ``rates`` (branch scores summed), bilinear upsampling by ``output_stride``, the fully connected CRF.

    Each arrow names the tensor it carries; a single rate is drawn as DeepLab v1's LargeFOV head; ``title``
    goes above the drawing. Without ``ax``, a figure of the drawing's own size is made; returns the figure.
    """
    ax = _canvas(ax)
    s = output_stride
    head = (f"ASPP\n{len(rates)} branches at\nrates {', '.join(map(str, rates))}\n(scores summed)" if len(rates) > 1
            else f"LargeFOV head\none 3×3 filter\nat rate {rates[0]}")
    stages = [("input image", "white"),
              (f"DCNN\n(VGG-16 or\nResNet-101)\natrous conv.,\noutput stride {s}", "#cfe2f3"),
              (head, "#fce5cd"),
              (f"bilinear\nupsampling x{s}", "#d9ead3"),
              ("fully connected\nCRF\n(mean field)", "#e4d7f0"),
              ("labels", "white")]
    tensors = ["H×W×3", f"H/{s}×W/{s}\nfeatures", f"H/{s}×W/{s}\n×{num_classes} scores",
               f"H×W\n×{num_classes} scores", "H×W\nclass map"]
    width, gap, height = 2.4, 1.5, 1.8
    for i, (text, colour) in enumerate(stages):
        x = i * (width + gap)
        _box(ax, x, 0, width, height, text, colour)
        if i < len(tensors):
            _arrow(ax, (x + width + 0.05, height / 2), (x + width + gap - 0.05, height / 2), tensors[i])
    if title:
        ax.set_title(title)
    return _finish(ax, (-0.2, len(stages) * (width + gap) - gap + 0.2), (-0.3, height + 0.3))


def plot_aspp(ax=None, *, rates: Sequence[int] = (6, 12, 18, 24), kernel_size: int = 3,
              after: Sequence[str] = ("fc7, 1×1", "fc8, 1×1"), output_stride: int = 8, title: str = ""):
    """Draw ASPP (DeepLab v2, Sec. 3.2, Fig. 4): parallel atrous branches on the same features, summed.

    Each branch shows its k x k taps at their rate, on one common scale (so the spacings compare), the
    1x1 layers ``after`` it (VGG-16's fc7 and fc8; none for the ResNet-101 head), and the sum of the
    branch scores; ``title`` goes above the drawing. Without ``ax``, a figure of the drawing's own size is made;
    returns the figure.
    """
    from matplotlib.patches import Circle

    ax = _canvas(ax)
    n, row = len(rates), 1.6
    ys = [(n - 1 - i) * row for i in range(n)]
    mid = (ys[0] + ys[-1]) / 2
    _box(ax, 0, mid - 0.9, 1.9, 1.8, f"DCNN\nfeatures\n(stride {output_stride})", "#cfe2f3")
    half_max = max(rates) * (kernel_size - 1) / 2
    x_conv, x_taps, x_after, x_sum = 2.9, 5.25, 6.3, 8.6 + (0.0 if after else -1.6)
    for rate, y in zip(rates, ys):
        _arrow(ax, (1.95, mid), (x_conv - 0.05, y))
        _box(ax, x_conv, y - 0.5, 1.5, 1.0, f"{kernel_size}×{kernel_size} conv\nrate {rate}", "#fce5cd")
        step = 0.48 * rate / half_max  # common scale: the largest rate's taps span 0.96 units
        offsets = [step * (k - (kernel_size - 1) / 2) for k in range(kernel_size)]
        ax.scatter([x_taps + dx for _ in offsets for dx in offsets], [y + dy for dy in offsets for _ in offsets],
                   s=9, color="tab:orange", edgecolor="0.2", linewidth=0.4, zorder=3)
        ax.text(x_taps, y - 0.58, f"taps {output_stride * rate} px apart", ha="center", va="top", fontsize=6.5,
                color="0.3")
        end = x_taps + 0.65
        if after:
            ax.plot([x_conv + 1.55, x_after + 0.05], [y, y], color="0.75", lw=0.8, zorder=1)
            _box(ax, x_after + 0.1, y - 0.5, 1.5, 1.0, "\n".join(after), "#fff2cc", fontsize=8)
            end = x_after + 1.65
        _arrow(ax, (end, y), (x_sum - 0.28, mid + (y - mid) * 0.15))
    ax.add_patch(Circle((x_sum, mid), 0.27, facecolor="white", edgecolor="0.25", linewidth=0.9))
    ax.text(x_sum, mid, "+", ha="center", va="center", fontsize=13)
    _arrow(ax, (x_sum + 0.3, mid), (x_sum + 1.0, mid))
    _box(ax, x_sum + 1.05, mid - 0.6, 1.8, 1.2, "class scores\n(summed over\nbranches)", "#d9ead3")
    if title:
        ax.set_title(title)
    return _finish(ax, (-0.2, x_sum + 3.1), (ys[-1] - 1.1, ys[0] + 0.8))
