"""Small plotting helpers shared by the notebooks: the PASCAL VOC palette and label colouring."""

from __future__ import annotations

import numpy as np

from .constants import IGNORE_INDEX, VOC_CLASSES, voc_palette

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


def image_grid(rows, *, col_titles=None, row_titles=None, size: float = 2.3, suptitle: str = ""):
    """A figure of images, one list per row (RGB (H, W, 3) arrays or class maps (H, W), coloured with
    :func:`colorize`); ``col_titles`` label the top row, ``row_titles`` the left column."""
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
            ax.imshow(colorize(panel) if panel.ndim == 2 else panel)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def class_legend(fig_or_ax, labels, names=VOC_CLASSES, *, ncol: int = 7, **kw):
    """A legend of the palette colours of the classes present in ``labels`` (label maps; void listed if present).

    Every segmentation figure gets one, so a reader can tell the colours apart.
    """
    from matplotlib.patches import Patch

    present = sorted({int(v) for lab in labels for v in np.unique(np.asarray(lab))})
    palette = voc_palette()
    handles = [Patch(facecolor=palette[c] / 255, edgecolor="k", linewidth=0.3,
                     label="void" if c == IGNORE_INDEX else (names[c] if c < len(names) else str(c)))
               for c in present]
    kw.setdefault("loc", "lower center")
    kw.setdefault("fontsize", 8)
    return fig_or_ax.legend(handles=handles, ncol=min(ncol, max(1, len(handles))), frameon=False, **kw)
