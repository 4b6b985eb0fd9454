"""Mean-field inference of the fully connected CRF in PyTorch, on the permutohedral lattice (dlib.crf.lattice).

The ``backend="torch"`` of :class:`dlib.crf.DenseCRF`: the same energy, parameters and normalisations
as pydensecrf (Krähenbühl's C++ code), without a compiler, on CPU or CUDA, batched over images. Each
mean-field step (Krähenbühl & Koltun 2011, Alg. 1, Potts model):

    Q_i(l) <- softmax_l( log P_i(l) + w1 [K1 Q(l)]_i + w2 [K2 Q(l)]_i )

with K1 the appearance kernel on features (x/theta_alpha, y/theta_alpha, r/theta_beta, g/theta_beta,
b/theta_beta) and K2 the smoothness kernel on (x/theta_gamma, y/theta_gamma), each a Gaussian filter
computed by the lattice and normalised as pydensecrf does, with d_i = [K 1]_i (the lattice's filter
of ones, j = i included):

    "symmetric" (default, pydensecrf's NORMALIZE_SYMMETRIC):  K Q -> D^-1/2 K D^-1/2 Q
    "before"    (NORMALIZE_BEFORE):                           K Q -> K D^-1 Q
    "after"     (NORMALIZE_AFTER):                            K Q -> D^-1 K Q
    "none"      (NO_NORMALIZATION):                           K Q -> K Q, the paper's Gaussians (j = i included)
    "deeplab"   (DeepLab's densecrf, per pixel = "after"):    K Q -> D^-1 K Q

The lattice of each kernel depends only on the image: it is built once, and the iterations only
filter new values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from dlib.core.constants import kernel_normalization
from dlib.crf.lattice import PermutohedralLattice


def pixel_features(image: np.ndarray, theta_position: float, theta_colour: float | None = None) -> torch.Tensor:
    """(N, 2) = (x, y) / theta_position, or (N, 5) with (r, g, b) / theta_colour appended; N = H*W, row-major.

    The order is pydensecrf's DenseCRF2D (x = column first), so both lattices are built alike.
    """
    h, w = image.shape[:2]
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    feats = [cols.reshape(-1, 1) / theta_position, rows.reshape(-1, 1) / theta_position]
    if theta_colour is not None:
        feats.append(torch.from_numpy(image.reshape(-1, 3).astype(np.float64)) / theta_colour)
    return torch.cat(feats, dim=1)


class NormalisedKernel:
    """One Gaussian kernel of the CRF over a batch of images: its lattice and its normalisation.

    ``features`` (N, d) of all pixels of the batch, ``segment`` (N,) image index of each pixel
    (one lattice for the whole batch; images never interact).
    ``apply(q)`` (N, C) -> the normalised filter of q, as listed in the module docstring.
    """

    def __init__(self, features: torch.Tensor, segment: torch.Tensor, num_images: int, normalization: str):
        normalization = kernel_normalization(normalization)  # "deeplab" runs "after"
        self.lattice = PermutohedralLattice(features, segment if num_images > 1 else None)
        self.normalization = normalization
        ones = torch.ones(features.shape[0], 1, dtype=torch.float32, device=features.device)
        d = self.lattice.filter(ones)[:, 0]  # d_i = sum_j k_ij (approximately)
        if normalization == "symmetric":
            self.scale = 1.0 / torch.sqrt(d + 1e-20)[:, None]
        elif normalization in ("before", "after"):
            self.scale = 1.0 / (d + 1e-20)[:, None]

    def apply(self, q: torch.Tensor) -> torch.Tensor:
        if self.normalization == "symmetric":
            return self.scale * self.lattice.filter(self.scale * q)
        if self.normalization == "before":
            return self.lattice.filter(self.scale * q)
        if self.normalization == "after":
            return self.scale * self.lattice.filter(q)
        return self.lattice.filter(q)  # "none"


def mean_field_steps(images: Sequence[np.ndarray], unaries: Sequence[np.ndarray], *, w1: float, theta_alpha: float,
                     theta_beta: float, w2: float, theta_gamma: float, iterations: int,
                     normalization: str = "symmetric",
                     device: str | torch.device = "cpu") -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (iteration, scores, Q) for iterations 0..n over a batch; scores and Q are (N, C) float32 on ``device``.

    ``images`` uint8 (H_b, W_b, 3), ``unaries`` -log P (C, H_b*W_b) float32 (dlib.crf.unary_energy);
    the rows of scores and Q are the pixels of image 0, then image 1, ... Iteration 0 is the unary alone.
    """
    device = torch.device(device)
    sizes = [u.shape[1] for u in unaries]
    segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    # Appearance (bilateral) and smoothness kernels, DeepLab v2 Eq. 3; each lattice built once.
    kernels = []
    if w1 > 0:
        feats = torch.cat([pixel_features(im, theta_alpha, theta_beta) for im in images]).to(device)
        kernels.append((w1, NormalisedKernel(feats, segment, len(sizes), normalization)))
    if w2 > 0:
        feats = torch.cat([pixel_features(im, theta_gamma) for im in images]).to(device)
        kernels.append((w2, NormalisedKernel(feats, segment, len(sizes), normalization)))
    log_p = -torch.from_numpy(np.concatenate([u.T for u in unaries])).to(device)  # (N, C): log P, clipped
    q = torch.softmax(log_p, dim=1)
    yield 0, log_p, q
    for it in range(1, iterations + 1):
        scores = log_p.clone()
        for weight, kernel in kernels:
            scores += weight * kernel.apply(q)  # Potts: + w sum_j k_ij Q_j(l)
        q = torch.softmax(scores, dim=1)
        yield it, scores, q


def mean_field(images: Sequence[np.ndarray], unaries: Sequence[np.ndarray], **params) -> list[np.ndarray]:
    """Q after the last iteration, one (C, H_b*W_b) float32 numpy array per image (see mean_field_steps)."""
    for _, _, q in mean_field_steps(images, unaries, **params):  # noqa: B007 (q is read after the loop)
        pass  # keep only the last Q
    sizes = [u.shape[1] for u in unaries]
    return [part.T.contiguous().cpu().numpy() for part in torch.split(q, sizes)]
