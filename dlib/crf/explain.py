"""What notebook 04 measures to explain the CRF: where to look, the lattice's error, mean field step by step.

* :func:`boundary_window`: a crop around an object boundary, small enough for the exact CRF (dlib.crf.exact);
* :func:`appearance_messages` and :func:`lattice_error`: the permutohedral lattice's appearance message against the
  exact sum over all pairs, and where the two mean fields' marginals differ (Krähenbühl & Koltun 2011, Sec. 4;
  Adams et al. 2010);
* :func:`lattice_steps` and :func:`draw_lattice_steps`: the lattice's embed, splat, blur and slice for a few 2-D
  points, drawn in the plane;
* :func:`largest_object_class`, :func:`local_colour_variance`, :func:`smoothest_interior_pixel`: the pixel whose
  kernels (DeepLab v2, Eq. 3) the notebook draws;
* :func:`label_changes`: how many labels each mean-field step changes (DeepLab v1, Fig. 2; v2, Fig. 5).
* :func:`draw_cv_grid`: the cross-validation grid as annotated heat maps (seaborn), one colour bar in %.

tests/test_explain.py checks each against a loop, a closed form or a hand count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from dlib.core.constants import IGNORE_INDEX
from dlib.crf.lattice import PermutohedralLattice, embed, enclosing_simplex
from dlib.evaluation.metrics import trimap_band

# ----------------------------------------------------------------------------------------------
# Where to look
# ----------------------------------------------------------------------------------------------

def boundary_window(label: np.ndarray, size: tuple[int, int], *,
                    ignore_index: int = IGNORE_INDEX) -> tuple[tuple[Any, Any], tuple[slice, slice]]:
    """A pixel on an object boundary and the ``size`` = (h, w) window centred on it, moved inside the image.

    The pixel is the middle one, in raster order, of the boundary pixels that are not void (dlib.evaluation.metrics'
    trimap band of width 0: pixels next to a different label). Returns ``((row, col), (rows, cols))`` with ``rows``
    and ``cols`` the window's slices: ``image[rows, cols]`` is the (h, w) crop.
    """
    h, w = size
    if not (0 < h <= label.shape[0] and 0 < w <= label.shape[1]):
        raise ValueError(f"window {size} does not fit the {label.shape[0]}x{label.shape[1]} label map")
    boundary = np.argwhere(trimap_band(label, 0) & (label != ignore_index))
    if not len(boundary):
        raise ValueError("the label map has no object boundary")
    r, c = boundary[len(boundary) // 2]
    r0 = int(np.clip(r - h // 2, 0, label.shape[0] - h))
    c0 = int(np.clip(c - w // 2, 0, label.shape[1] - w))
    return (r, c), (slice(r0, r0 + h), slice(c0, c0 + w))


def largest_object_class(label: np.ndarray, *, ignore_index: int = IGNORE_INDEX) -> int:
    """The object class (not background 0, not void) with the most pixels; 0 when there is none."""
    present = [v for v in np.unique(label) if 0 < v < ignore_index]
    return int(max(present, key=lambda v: (label == v).sum())) if present else 0


def local_colour_variance(image: np.ndarray, window: int = 7) -> np.ndarray:
    """Each pixel's colour variance over the ``window`` x ``window`` square around it, summed over R, G, B, (H, W).

    Var = E[x^2] - E[x]^2 per channel, the means over the square (scipy's uniform filter: the image is mirrored
    at its border).
    """
    from scipy import ndimage

    image_f = np.asarray(image).astype(float)
    return sum(ndimage.uniform_filter(ch ** 2, window) - ndimage.uniform_filter(ch, window) ** 2
               for ch in image_f.transpose(2, 0, 1))


def smoothest_interior_pixel(image: np.ndarray, mask: np.ndarray, *, min_depth: float = 6,
                             window: int = 7) -> tuple[Any, Any] | None:
    """(row, col) of the pixel at least ``min_depth`` px inside ``mask`` (Euclidean distance to the nearest pixel
    outside) whose colour varies least around it (:func:`local_colour_variance`); None when no pixel is that deep."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    if not (depth >= min_depth).any():
        return None
    variance = local_colour_variance(image, window)
    return np.unravel_index(np.argmin(np.where(depth >= min_depth, variance, np.inf)), variance.shape)


# ----------------------------------------------------------------------------------------------
# The lattice against the exact filter
# ----------------------------------------------------------------------------------------------

def appearance_messages(image: np.ndarray, q: np.ndarray, *, theta_alpha: float,
                        theta_beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's normalised appearance message sum_j k1(i, j) Q_j(l) / sum_j k1(i, j), j = i included, by the
    permutohedral lattice and exactly over all pairs: ``(lattice, exact)``, each (N, C), N = H*W in raster order.

    k1 is the appearance kernel of DeepLab v2, Eq. 3: exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 /
    2 theta_beta^2), p in px, I in colour levels; ``q`` is (C, H, W). The exact sums build an N x N kernel.
    """
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    feats = np.concatenate([np.stack([xx, yy], -1).reshape(-1, 2) / theta_alpha,
                            image.reshape(-1, 3).astype(float) / theta_beta], axis=1)  # appearance features (N, 5)
    q0 = q.reshape(q.shape[0], -1).T  # (N, C)
    k_exact = np.exp(-0.5 * ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1))  # exact kernel, N x N
    msg_exact = (k_exact @ q0) / k_exact.sum(1, keepdims=True)
    lat_f = PermutohedralLattice(torch.tensor(feats))
    msg_lattice = (lat_f.filter(torch.tensor(q0, dtype=torch.float32)) / lat_f.filter(torch.ones(len(q0), 1))).numpy()
    return msg_lattice, msg_exact


class LatticeError(NamedTuple):
    summary: dict[str, float | int]  # the numbers notebook 04 records (lattice_error_explained.json)
    message_error: np.ndarray  # (H, W): L1 over classes of lattice - exact appearance message
    marginal_error: np.ndarray  # (H, W): the largest |Q - Q_exact| over classes
    gap: np.ndarray  # (H, W): exact mean field's largest marginal minus its second
    flipped: np.ndarray  # (H, W) bool: the two mean fields' labels differ


def lattice_error(image: np.ndarray, probs: np.ndarray, q_exact: np.ndarray, q_lattice: np.ndarray, *,
                  theta_alpha: float, theta_beta: float) -> LatticeError:
    """Why the lattice's mean field (``q_lattice``) and the exact one (``q_exact``), both (C, H, W), differ.

    (1) the appearance message's error for the unary softmax ``probs`` (:func:`appearance_messages`): its mean and
    99th percentile over pixels; (2) the pixels whose largest marginal error exceeds 0.1 and those whose label
    differs; (3) the exact mean field's gap between its two largest marginals at the pixel of the largest
    marginal error, against the median gap over the image.
    """
    h, w = image.shape[:2]
    msg_lattice, msg_exact = appearance_messages(image, probs, theta_alpha=theta_alpha, theta_beta=theta_beta)
    message_error = np.abs(msg_lattice - msg_exact).sum(1)  # per pixel, L1 over classes
    error_map = np.abs(q_exact - q_lattice).max(0)  # per pixel, the largest marginal error
    top2 = np.sort(q_exact, axis=0)[-2:]
    gap = top2[1] - top2[0]  # exact mean field: largest minus second marginal
    flipped = q_exact.argmax(0) != q_lattice.argmax(0)
    summary = {"message_error_mean": float(message_error.mean()),
               "message_error_p99": float(np.quantile(message_error, 0.99)),
               "pixels_with_marginal_error_over_0.1": int((error_map > 0.1).sum()), "pixels": int(error_map.size),
               "pixels_whose_label_differs": int(flipped.sum()),
               "exact_gap_at_worst_pixel": float(gap.reshape(-1)[error_map.argmax()]),
               "exact_gap_median_over_crop": float(np.median(gap))}
    return LatticeError(summary, message_error.reshape(h, w), error_map, gap, flipped)


# ----------------------------------------------------------------------------------------------
# Inside the lattice, drawn in the plane (d = 2)
# ----------------------------------------------------------------------------------------------

# An orthonormal basis of the plane x + y + z = 0 of R^3, where the lattice of 2-D features lives: (3, 2).
PLANE_BASIS = torch.tensor([[1, -1, 0], [1, 1, -2]], dtype=torch.float64).T / torch.tensor([2, 6]).sqrt()


def to_plane(x: torch.Tensor) -> np.ndarray:
    """Points (N, 3) of the plane x + y + z = 0 -> their 2-D coordinates (N, 2) in :data:`PLANE_BASIS`."""
    return (x @ PLANE_BASIS).numpy()


class LatticeSteps(NamedTuple):
    pixel_xy: np.ndarray  # (N, 2): each feature vector embedded (lattice.embed), in the plane
    corner_xy: np.ndarray  # (K, 2): every simplex corner of the points, in the plane
    vertex_xy: np.ndarray  # (M, 2): the lattice points, in the order of the lattice's values
    simplex_xy: np.ndarray  # (N, 3, 2): each point's simplex corners, in the plane
    weights: torch.Tensor  # (N, 3): the barycentric weights of those corners
    splatted: torch.Tensor  # (M, 1): the values splatted onto the lattice points
    blurred: torch.Tensor  # (M, 1): after the [1 2 1]/4 blur along the 3 lattice directions
    sliced: np.ndarray  # (N,): the blurred values read back at each point
    exact: np.ndarray  # (N,): the exact Gaussian exp(-|f_i - f_carrier|^2 / 2)


def lattice_steps(points: torch.Tensor, carrier: int) -> LatticeSteps:
    """The permutohedral lattice's steps (Adams et al. 2010; dlib.crf.lattice) for 2-D features ``points`` (N, 2),
    float64, already divided by sigma, filtering the value 1 at point ``carrier`` and 0 elsewhere: the filter then
    returns its own kernel around the carrier, to compare with the exact Gaussian."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"lattice_steps draws 2-D features (N, 2), got shape {tuple(points.shape)}")
    lat = PermutohedralLattice(points)
    keys, weights = enclosing_simplex(embed(points))
    value = torch.zeros(len(points), 1)
    value[carrier] = 1.0
    splatted = lat.splat(value)
    blurred = lat.blur(splatted)
    vertex_xy = np.zeros((lat.num_points, 2))
    vertex_xy[lat.index.reshape(-1).numpy()] = to_plane(keys.reshape(-1, 3).double())
    simplex_xy = np.array([[to_plane(keys[i, r].double()[None])[0] for r in range(3)] for i in range(len(points))])
    return LatticeSteps(pixel_xy=to_plane(embed(points)),
                        corner_xy=to_plane(torch.unique(keys.reshape(-1, 3), dim=0).double()),
                        vertex_xy=vertex_xy, simplex_xy=simplex_xy, weights=weights, splatted=splatted,
                        blurred=blurred, sliced=lat.slice(blurred)[:, 0].numpy(),
                        exact=np.exp(-((points - points[carrier]) ** 2).sum(1).numpy() / 2))


def draw_lattice_steps(steps: LatticeSteps, axes: Sequence[Any]) -> None:
    """Draw :func:`lattice_steps` on three matplotlib axes, the lattice points in light grey on each: (1-2) every
    point joined to its simplex's corners, line width 3 x the barycentric weight; (3) the lattice points' values
    after the blur (discs) and after the splat (circles), area 400 x value / the largest blurred value; (4) the
    values sliced back at the points (discs, area 400 x value / the largest) and the exact Gaussian (circles)."""
    titles = ["1-2. embed and splat: pixel -> simplex corners", "3. blur on the lattice",
              "4. slice: filtered value at each pixel"]
    for ax, title in zip(axes, titles):
        ax.scatter(*steps.corner_xy.T, s=12, c="lightgray", zorder=1)
        ax.set_title(title)
        ax.set_aspect("equal")
    for i, corners in enumerate(steps.simplex_xy):
        for r, corner in enumerate(corners):
            axes[0].plot(*np.stack([steps.pixel_xy[i], corner]).T, c="tab:blue", lw=3 * float(steps.weights[i, r]))
    axes[0].scatter(*steps.pixel_xy.T, s=15, c="k", zorder=2)
    top = steps.blurred.max().item()
    axes[1].scatter(*steps.vertex_xy.T, s=400 * steps.blurred[:, 0].numpy() / top, c="tab:orange", zorder=2,
                    label="after the blur")
    axes[1].scatter(*steps.vertex_xy.T, s=400 * steps.splatted[:, 0].numpy() / top, facecolors="none",
                    edgecolors="k", zorder=3, label="splatted")
    axes[1].legend(loc="lower right")
    axes[2].scatter(*steps.pixel_xy.T, s=400 * steps.sliced / steps.sliced.max(), c="tab:green", zorder=2,
                    label="lattice")
    axes[2].scatter(*steps.pixel_xy.T, s=400 * steps.exact, facecolors="none", edgecolors="k", zorder=3,
                    label="exact Gaussian")
    axes[2].legend(loc="lower right")
    for ax in axes:
        ax.set_axis_off()  # the plane's coordinates carry no unit of their own: only the shapes matter


# ----------------------------------------------------------------------------------------------
# Mean field, step by step
# ----------------------------------------------------------------------------------------------

def label_changes(beliefs: Sequence[np.ndarray]) -> list[dict[str, float]]:
    """For each mean-field step t >= 1, the share of pixels whose label argmax_l Q_t(l) differs from step t-1's;
    ``beliefs`` are Q_0, Q_1, ... each (C, H, W) (as ``DenseCRF.steps`` yields them)."""
    changed = [float((beliefs[t].argmax(0) != beliefs[t - 1].argmax(0)).mean()) for t in range(1, len(beliefs))]
    return [{"iteration": t, "pixels whose label changed": share} for t, share in enumerate(changed, start=1)]


# ----------------------------------------------------------------------------------------------
# The cross-validation grid, as an annotated heat map
# ----------------------------------------------------------------------------------------------

def draw_cv_grid(table: Any, best: Mapping[str, float], *, caption: str, stage: int = 1):
    """Heat maps of a search's mIoU (%) over theta_alpha x theta_beta, one panel per w1 (stage ``stage`` of
    dlib.crf.crossval.cross_validate's table), one colour scale and one colour bar for all, each cell annotated
    (seaborn picks a dark or light text per cell, so every value reads); the best point framed in red."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Rectangle

    rows = table[table["stage"] == stage]
    w1s = sorted(rows["w1"].unique())
    fig, axes = plt.subplots(1, len(w1s) + 1, figsize=(4.2 * len(w1s) + 1.2, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(w1s) + [0.06]})
    percent = 100 * rows["mean_iou"]
    lo, hi = float(percent.min()), float(percent.max()) + 1e-9
    for ax, w1 in zip(axes[0], w1s):
        heat = (100 * rows[rows["w1"] == w1].pivot(index="theta_beta", columns="theta_alpha", values="mean_iou"))
        sns.heatmap(heat, ax=ax, vmin=lo, vmax=hi, cmap="viridis", annot=True, fmt=".1f", cbar=ax is axes[0, 0],
                    cbar_ax=axes[0, -1], annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": "mIoU (%)"})
        ax.invert_yaxis()
        ax.set(xlabel="σα, theta_alpha (px)", ylabel="σβ, theta_beta (colour levels)", title=f"w1 = {w1:g}")
        ax.set_xticklabels([f"{v:g}" for v in heat.columns])
        ax.set_yticklabels([f"{v:g}" for v in heat.index], rotation=0)
        if np.isclose(w1, best["w1"]):
            i = list(heat.index).index(best["theta_beta"]) if best["theta_beta"] in heat.index else None
            j = list(heat.columns).index(best["theta_alpha"]) if best["theta_alpha"] in heat.columns else None
            if i is not None and j is not None:
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="red", lw=2.5))
    fig.suptitle(caption)
    fig.tight_layout()
    return fig
