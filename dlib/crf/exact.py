"""The fully connected CRF computed exactly, over all pixel pairs: the reference the lattice is tested against.

O(N^2) in memory and time (N = H*W), so small images only (:data:`MAX_EXACT_PIXELS`). It holds:

* :func:`exact_kernels`: the appearance and smoothness kernels of DeepLab v2, Eq. 3, between all pairs,
  unnormalised (the equation as written), symmetric-normalised (what pydensecrf computes) or per pixel
  (what DeepLab's densecrf computes); see dlib.crf for the normalisations;
* :func:`dense_crf_exact`: mean-field inference with those kernels (Krähenbühl & Koltun 2011, Alg. 1);
* :func:`energy_terms` / :func:`crf_energy`: E(x) of DeepLab v2, Eq. 2, split into its terms;
* :func:`kernel_maps`: both kernels around one pixel, to picture what each one pulls together.

tests/test_exact.py checks these against loops over pixel pairs; tests/test_dense.py checks both
lattice backends against :func:`dense_crf_exact`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlib.core.config import CRF_DEFAULTS
from dlib.crf.dense import check_inputs, check_params, unary_energy

MAX_EXACT_PIXELS = 4096  # dense_crf_exact builds N x N kernels; 4096 px = 128 MiB per kernel

def _features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    positions = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)  # (N, 2) as (x, y), px
    colours = image.reshape(-1, 3).astype(np.float64)  # (N, 3), 0-255
    return positions, colours


def _sqdist(a: np.ndarray) -> np.ndarray:
    """All-pairs squared Euclidean distances of the rows of a (N, d): (N, N)."""
    sq = (a ** 2).sum(1)
    d = a @ a.T
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    return np.maximum(d, 0.0, out=d)  # |a_i|^2 + |a_j|^2 - 2 a_i.a_j


def exact_kernels(image: np.ndarray, *, theta_alpha: float, theta_beta: float, theta_gamma: float,
                  normalization: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """The appearance and smoothness kernels between all pixel pairs, each (N, N) float64, N = H*W.

    ``normalization="none"``: the paper's Gaussians; ``"symmetric"``: k_ij / sqrt(d_i d_j) with
    d_i = sum_j k_ij (j = i included), as pydensecrf computes them; ``"deeplab"`` (or ``"after"``):
    k_ij / d_i, the per-pixel normalisation of DeepLab's densecrf (row i sums to 1; not symmetric).
    """
    if normalization not in ("none", "symmetric", "deeplab", "after"):
        raise ValueError(f"normalization must be 'none' (the paper's Eq. 3), 'symmetric' (pydensecrf) or 'deeplab' "
                         f"(DeepLab's densecrf, per pixel), got {normalization!r}")
    n = image.shape[0] * image.shape[1]
    if n > MAX_EXACT_PIXELS:
        raise ValueError(f"the exact CRF builds N x N kernels; {n} pixels is too many (max {MAX_EXACT_PIXELS}); "
                         "use a smaller crop or DenseCRF")
    positions, colours = _features(image)
    d_pos = _sqdist(positions)
    # DeepLab v2, Eq. 3: appearance and smoothness kernels (computed in place: N x N arrays are large).
    appearance = _sqdist(colours)
    appearance *= -1.0 / (2 * theta_beta ** 2)
    appearance -= d_pos / (2 * theta_alpha ** 2)
    np.exp(appearance, out=appearance)
    d_pos *= -1.0 / (2 * theta_gamma ** 2)
    smoothness = np.exp(d_pos, out=d_pos)
    if normalization == "symmetric":
        for k in (appearance, smoothness):
            inv = 1.0 / np.sqrt(k.sum(axis=1))
            k *= inv[:, None]
            k *= inv[None, :]
    elif normalization in ("deeplab", "after"):  # densecrf 2011: norm_i = 1 / sum_j k_ij, message norm_i (K Q)_i
        for k in (appearance, smoothness):
            k /= k.sum(axis=1)[:, None]
    return appearance, smoothness


def _softmax0(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=0, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=0, keepdims=True)


def dense_crf_exact(image: np.ndarray, probs: np.ndarray, *, w1: float = CRF_DEFAULTS.w1,
                    theta_alpha: float = CRF_DEFAULTS.theta_alpha, theta_beta: float = CRF_DEFAULTS.theta_beta,
                    w2: float = CRF_DEFAULTS.w2, theta_gamma: float = CRF_DEFAULTS.theta_gamma,
                    iterations: int = CRF_DEFAULTS.iterations, normalization: str = "symmetric",
                    include_self: bool = True) -> np.ndarray:
    """Brute-force mean field with exact Gaussian kernels over all pairs: Q (C, H, W) float64.

    Each step (Krähenbühl & Koltun 2011, Alg. 1, Potts model):
        Q_i(l) <- softmax_l( log P_i(l) + sum_j [w1 k1_ij + w2 k2_ij] Q_j(l) )
    The defaults (symmetric normalisation, j = i included) are what pydensecrf computes;
    ``normalization="deeplab"`` what DeepLab's densecrf computes (k_ij / d_i);
    ``normalization="none", include_self=False`` is mean field for the energy exactly as written.
    Small images only (H*W <= 4096).
    """
    check_inputs(image, probs)
    check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations)
    k1, k2 = exact_kernels(image, theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma,
                           normalization=normalization)
    pairwise = w1 * k1 + w2 * k2  # (N, N)
    if not include_self:
        np.fill_diagonal(pairwise, 0.0)
    log_p = -unary_energy(probs).astype(np.float64)  # (C, N)
    q = _softmax0(log_p)
    for _ in range(iterations):
        q = _softmax0(log_p + q @ pairwise.T)  # message_i = sum_j pairwise_ij Q_j: (C, N) @ (N, N)^T
    return q.reshape(probs.shape)


def _labelling(labels: np.ndarray, image: np.ndarray, probs: np.ndarray, normalization: str) -> np.ndarray:
    """The checked labelling of :func:`energy_terms`, flattened to (N,) int64."""
    check_inputs(image, probs)
    if normalization not in ("none", "symmetric"):  # a per-pixel (row) normalised kernel is not symmetric
        raise ValueError(f"energy_terms needs a symmetric kernel: normalization 'none' or 'symmetric', got "
                         f"{normalization!r} (DeepLab's per-pixel normalisation defines a mean field, not an energy)")
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels must be (H, W) = {image.shape[:2]}, got {labels.shape}")
    c = probs.shape[0]
    flat = labels.astype(np.int64).ravel()
    if flat.min() < 0 or flat.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}) (no void pixels in a CRF labelling)")
    return flat


def energy_terms(labels: np.ndarray, image: np.ndarray, probs: np.ndarray, *, w1: float = CRF_DEFAULTS.w1,
                 theta_alpha: float = CRF_DEFAULTS.theta_alpha, theta_beta: float = CRF_DEFAULTS.theta_beta,
                 w2: float = CRF_DEFAULTS.w2, theta_gamma: float = CRF_DEFAULTS.theta_gamma,
                 normalization: str = "none") -> dict[str, float]:
    """E(x) of a labelling (H, W) split into its terms: ``unary``, ``appearance``, ``smoothness``, ``total``.

    Exact (all pairs), small images only. ``normalization="none"`` is DeepLab v2, Eq. 2-3 as written;
    ``"symmetric"`` is the energy whose mean field pydensecrf runs.
    """
    flat = _labelling(labels, image, probs, normalization)
    unary = unary_energy(probs).astype(np.float64)[flat, np.arange(flat.size)].sum()  # sum_i -log P(x_i)
    k1, k2 = exact_kernels(image, theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma,
                           normalization=normalization)
    # Potts: sum over pairs with different labels = all pairs - pairs with the same label, and
    # sum_{i<j} = half the sum over ordered pairs (the kernels are symmetric; i = j never differs).
    onehot = np.eye(probs.shape[0])[flat]  # (N, C)

    def differing(k: np.ndarray) -> float:
        return 0.5 * float(k.sum() - (onehot * (k @ onehot)).sum())

    appearance = w1 * differing(k1)
    smoothness = w2 * differing(k2)
    return {"unary": float(unary), "appearance": float(appearance), "smoothness": float(smoothness),
            "total": float(unary + appearance + smoothness)}


def crf_energy(labels: np.ndarray, image: np.ndarray, probs: np.ndarray, **params: Any) -> float:
    """E(x) (DeepLab v2, Eq. 2-3) of a labelling (H, W), exactly; keyword parameters as energy_terms."""
    return energy_terms(labels, image, probs, **params)["total"]


def kernel_maps(image: np.ndarray, pixel: tuple[int, int], *, theta_alpha: float = CRF_DEFAULTS.theta_alpha,
                theta_beta: float = CRF_DEFAULTS.theta_beta,
                theta_gamma: float = CRF_DEFAULTS.theta_gamma) -> tuple[np.ndarray, np.ndarray]:
    """k1(i, .) and k2(i, .) for one pixel i = (row, col): the appearance and smoothness kernels, each (H, W)."""
    image = np.asarray(image, dtype=np.float64)
    row, col = pixel
    h, w = image.shape[:2]
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel {pixel} is outside the {h}x{w} image")
    rows, cols = np.mgrid[0:h, 0:w]
    d_pos = (rows - row) ** 2 + (cols - col) ** 2
    d_col = ((image - image[row, col]) ** 2).sum(-1)
    appearance = np.exp(-d_pos / (2 * theta_alpha ** 2) - d_col / (2 * theta_beta ** 2))
    smoothness = np.exp(-d_pos / (2 * theta_gamma ** 2))
    return appearance, smoothness

