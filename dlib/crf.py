"""The fully connected CRF (DeepLab v1, Sec. 4; DeepLab v2, Sec. 3.3), its exact reference, and its tuning.

The energy over a labelling x of all pixels (DeepLab v2, Eq. 2-3):

    E(x) = sum_i -log P(x_i)
         + sum_{i<j} mu(x_i, x_j) [ w1 exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2)
                                  + w2 exp(-|p_i-p_j|^2 / 2 theta_gamma^2) ]

with P the network's softmax, p pixel positions (px), I RGB colours (0-255), and mu the Potts
model (1 when the labels differ, 0 otherwise). The first kernel ("appearance", bilateral) pulls
together pixels of similar colour and position; the second ("smoothness") only removes small
isolated regions. Mean-field inference (Krähenbühl & Koltun, NIPS 2011) runs on a permutohedral
lattice, by one of two backends with the same parameters and results (``DenseCRF(backend=...)``):

* ``"pydensecrf"``: Krähenbühl's C++ code through pydensecrf (package ``pydensecrf2``, an optional
  extra: ``pip install -e '.[crf]'`` needs a C++ compiler);
* ``"torch"``: our own lattice in PyTorch tensor operations (dlib.lattice, dlib.crf_torch), on CPU or
  CUDA and batched over images (:meth:`DenseCRF.batch`); no compiler needed;
* ``"auto"`` (default) picks pydensecrf when it imports, torch otherwise.

pydensecrf is wrapped once here with the paper's names:

    paper                        pydensecrf
    -log P(x_i)              ->  setUnaryEnergy(-log max(P, 1e-5))
    w1, theta_alpha, theta_beta  addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, compat=w1)
    w2, theta_gamma          ->  addPairwiseGaussian(sxy=theta_gamma, compat=w2)
    mu (Potts)               ->  a number as ``compat`` is a Potts compatibility
    10 mean-field iterations ->  inference(10)

pydensecrf divides positions by ``sxy`` and colours by ``srgb`` and its lattice approximates
exp(-|f_i - f_j|^2 / 2) of those features, which is the paper's kernel (checked numerically
against :func:`dense_crf_exact` in tests/test_crf.py). Two things differ from the energy as
written above, both from Krähenbühl's C++ code that pydensecrf wraps (DeepLab used the same
authors' public implementation):

* Deviation from paper's Eq. 3 as written: each kernel is normalised. By default symmetrically,
  k_ij / sqrt(d_i d_j) with d_i = sum_j k_ij (pydensecrf's default NORMALIZE_SYMMETRIC), so w1 and w2
  weigh an average over the kernel rather than a sum over up to ~10^5 pixels. ``normalization=``
  offers pydensecrf's other options too ("before", "after", and "none", the paper's Gaussians with
  j = i; see dlib.crf_torch) and ``"deeplab"``, what DeepLab itself ran (below);
* the lattice's sums include the pixel itself (j = i), and the Gaussian is approximated.

**The CRF as DeepLab ran it** (``normalization="deeplab"``). DeepLab post-processed with its own copy of
Krähenbühl's 2011 densecrf code (``densecrf/`` of deeplab-public / deeplab-public-ver2;
``refine_pascal_v4/dense_inference.cpp`` calls ``addPairwiseGaussian`` and ``addPairwiseBilateral`` with
their defaults). There each kernel is a ``PottsPotential(..., per_pixel_normalization=true)``: the
normaliser is norm_i = 1 / (sum_j k_ij + 1e-20) (the lattice's filter of ones, j = i included) and the
message is w * norm_i * sum_j k_ij Q_j(l), i.e. K Q -> D^-1 K Q, normalised per pixel *after* filtering.
Krähenbühl's 2013 rewrite, which pydensecrf wraps, calls the same operation NORMALIZE_AFTER
(``DenseKernel::filter`` multiplies by norm_ after the lattice when not transposed) and defaults to
NORMALIZE_SYMMETRIC instead. So "deeplab" runs "after" in both backends; the name says why. (DeepLab's
tool also reads the network's scores as the unary, -score; -log P differs from it by a constant per pixel,
which mean field ignores, except that we clip P at 1e-5.)

**Parameters and their sources** (:data:`dlib.config.CRF_SETTINGS`): the paper's text fixes w2 = 3 and
theta_gamma = 3 (:data:`PAPER_TEXT`); the released ResNet-101 VOC settings are w1 = 4, theta_alpha = 67,
theta_beta = 3, w2 = 3, theta_gamma = 1 (:data:`RELEASED_RESNET101`); the released VGG-16 ones w1 = 4,
theta_alpha = 65, theta_beta = 3, w2 = 2, theta_gamma = 2 (:data:`RELEASED_VGG16`). Our defaults
(:class:`dlib.config.CRFConfig`) take w1, theta_alpha, theta_beta from the released ResNet-101 settings and
w2, theta_gamma from the paper's text; :func:`setting_effects` measures what the choices change.

:func:`dense_crf_exact` implements both the library's variant (the default) and the equation as
written (``normalization="none", include_self=False``), with exact O(N^2) kernels.
"""

from __future__ import annotations

import importlib.util
import io
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .config import Config, CRFConfig
# The published parameter sets live beside the defaults they feed (dlib.config); re-exported here.
from .config import CRF_SETTINGS, PAPER_TEXT, RELEASED_RESNET101, RELEASED_VGG16, CRFSetting  # noqa: F401
from .metrics import IGNORE_INDEX, confusion_matrix, scores
from .results import atomic_write_bytes

_DEFAULTS = CRFConfig()  # the single source of the default parameters (dlib/config.py)
PROB_CLIP = 1e-5  # smallest probability before the log: unary at most -log(1e-5) = 11.5 (as pydensecrf.utils)
MAX_EXACT_PIXELS = 4096  # dense_crf_exact builds N x N kernels; 4096 px = 128 MiB per kernel
BACKENDS = ("auto", "pydensecrf", "torch")
# pydensecrf's NORMALIZE_* and NO_NORMALIZATION, and "deeplab": DeepLab's densecrf (per pixel), which is "after".
NORMALIZATIONS = ("symmetric", "before", "after", "none", "deeplab")
NORMALIZATION_ALIASES = {"deeplab": "after"}  # the name a user picks -> the operation both backends run
TORCH_BATCH = 16  # images per lattice when the torch backend refines a data set on a GPU

# The papers' cross-validation ranges, MATLAB notation expanded ([30:10:100] = 30, 40, ..., 100).
PAPER_SEARCH_RANGES = {
    # DeepLab v2, Sec. 4.1: w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6]
    "v2": {"w1": (3, 4, 5, 6), "theta_alpha": tuple(range(30, 101, 10)), "theta_beta": (3, 4, 5, 6)},
    # DeepLab v1, Sec. 5 (CRF parameters): w1 in [5:10], theta_alpha in [50:10:100], theta_beta in [3:10]
    "v1": {"w1": tuple(range(5, 11)), "theta_alpha": tuple(range(50, 101, 10)), "theta_beta": tuple(range(3, 11))},
}


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------

def check_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    """Raise a clear TypeError / ValueError unless image is uint8 (H, W, 3) and probs a softmax (C, H, W)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 numpy array (H, W, 3) with values 0-255, got "
                        f"{getattr(image, 'dtype', type(image).__name__)}; use np.asarray(img, dtype=np.uint8)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB, channels last), got {image.shape}")
    if not isinstance(probs, np.ndarray) or not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(f"probs must be a float numpy array (C, H, W) of softmax probabilities, got "
                        f"{getattr(probs, 'dtype', type(probs).__name__)}")
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (C, H, W) (classes first), got {probs.shape}")
    if probs.shape[0] < 2:
        raise ValueError(f"probs needs at least 2 classes along axis 0, got shape {probs.shape}")
    if probs.shape[0] > 255:
        raise ValueError(f"at most 255 classes are supported (255 is the void label), got {probs.shape[0]}")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} but probs is {probs.shape[1]}x{probs.shape[2]}"
                         " (H x W); upsample the scores to the image size before the CRF")
    total = probs.sum(axis=0, dtype=np.float32)  # NaN and +-inf propagate into the sum
    if not np.isfinite(total).all():
        raise ValueError("probs contains NaN or infinity; check the network's output")
    if probs.min() < 0:
        raise ValueError(f"probs has negative values (min {float(probs.min()):.3g}); pass a softmax, not logits")
    tol = 2e-2 if probs.dtype == np.float16 else 1e-3
    worst = float(np.abs(total - 1).max())
    if worst > tol:
        raise ValueError(f"probs must sum to 1 over classes (axis 0) at every pixel; the worst pixel is off by "
                         f"{worst:.3g}; apply a softmax over axis 0 (classes first)")


def _check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations) -> None:
    for name, value in (("w1", w1), ("w2", w2)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite weight >= 0, got {value!r}")
    for name, value in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta), ("theta_gamma", theta_gamma)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite standard deviation > 0 (pixels or colour levels), got {value!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise TypeError(f"iterations must be an int, got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 mean-field step (the papers use 10), got {iterations}")


def unary_energy(probs: np.ndarray) -> np.ndarray:
    """-log P per class and pixel, (C, H*W) float32, probabilities clipped at 1e-5 first."""
    # Deviation from paper: P is clipped at 1e-5 so a zero probability gives a finite energy (11.5),
    # exactly as pydensecrf.utils.unary_from_softmax does.
    c = probs.shape[0]
    if probs.dtype == np.float16:
        probs = probs.astype(np.float32)  # float16 logs near the clip are too coarse
    return np.ascontiguousarray(-np.log(np.clip(probs, PROB_CLIP, 1.0)).reshape(c, -1).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------

def pydensecrf_available() -> bool:
    """True when pydensecrf (the optional extra ``[crf]``, package pydensecrf2) is installed."""
    return importlib.util.find_spec("pydensecrf") is not None


def resolve_backend(backend: str = "auto") -> str:
    """"pydensecrf" or "torch": ``auto`` is pydensecrf when importable, torch otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "pydensecrf" if pydensecrf_available() else "torch"
    if backend == "pydensecrf" and not pydensecrf_available():
        raise ImportError("backend='pydensecrf' needs the optional extra: pip install -e '.[crf]' (a C++ compiler "
                          "builds pydensecrf2); backend='torch' needs nothing more")
    return backend


def backend_version(backend: str = "auto") -> dict[str, str]:
    """{"backend": name, "version": ...} of the backend ``backend`` resolves to (for the provenance)."""
    from importlib import metadata

    name = resolve_backend(backend)
    if name == "pydensecrf":
        try:
            return {"backend": name, "version": f"pydensecrf2 {metadata.version('pydensecrf2')}"}
        except metadata.PackageNotFoundError:
            return {"backend": name, "version": "pydensecrf (version unknown)"}
    import torch

    return {"backend": name, "version": f"dlib.lattice on torch {torch.__version__}"}


_PYDENSECRF_NORMALIZATION = {"symmetric": "NORMALIZE_SYMMETRIC", "before": "NORMALIZE_BEFORE",
                             "after": "NORMALIZE_AFTER", "none": "NO_NORMALIZATION"}


def kernel_normalization(name: str) -> str:
    """The kernel normalisation ``name`` runs: one of symmetric, before, after, none ("deeplab" -> "after")."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {name!r}")
    return NORMALIZATION_ALIASES.get(name, name)


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------

class DenseCRF:
    """The fully connected CRF with the paper's parameter names; call with (image, probs) -> Q (C, H, W).

    Defaults come from :class:`dlib.config.CRFConfig`, the single source, and mix two sources
    (:data:`dlib.config.CRF_SETTINGS`): w2 = theta_gamma = 3 and 10 iterations from the paper's text
    (DeepLab v2, Sec. 4.1; the released ResNet-101 settings use theta_gamma = 1); w1 = 4, theta_alpha = 67 (px),
    theta_beta = 3 (colour levels) from DeepLab v2's released ResNet-101 VOC settings, found by the
    authors' cross-validation on 100 val images. Notebook 04 repeats that search
    (:func:`cross_validate`) and writes ``results/<profile>/04_dense_crf/cv_best.json``; adopt its
    values by changing CRFConfig, nowhere else.

    ``backend``: "pydensecrf", "torch" or "auto" (pydensecrf when importable); ``self.backend`` is the
    one resolved. ``normalization``: one of NORMALIZATIONS (pydensecrf's options, "symmetric" its
    default; "deeplab" what DeepLab's densecrf computed, see the module docstring). ``device``: torch
    backend only ("cpu", "cuda").
    """

    def __init__(self, *, w1: float = _DEFAULTS.w1, theta_alpha: float = _DEFAULTS.theta_alpha,
                 theta_beta: float = _DEFAULTS.theta_beta, w2: float = _DEFAULTS.w2,
                 theta_gamma: float = _DEFAULTS.theta_gamma, iterations: int = _DEFAULTS.iterations,
                 backend: str = _DEFAULTS.backend, normalization: str = _DEFAULTS.normalization,
                 device: str = _DEFAULTS.device):
        _check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS} (pydensecrf's options), "
                             f"got {normalization!r}")
        self.w1, self.theta_alpha, self.theta_beta = float(w1), float(theta_alpha), float(theta_beta)
        self.w2, self.theta_gamma, self.iterations = float(w2), float(theta_gamma), int(iterations)
        self.backend = resolve_backend(backend)
        self.normalization, self.device = normalization, str(device)
        if self.backend == "pydensecrf" and self.device != "cpu":
            raise ValueError(f"the pydensecrf backend runs on the CPU only, got device={device!r}; "
                             "use backend='torch' on a GPU")

    @classmethod
    def from_config(cls, cfg: CRFConfig | Config) -> "DenseCRF":
        """Build from ``cfg.crf`` (or a CRFConfig itself)."""
        crf = cfg.crf if isinstance(cfg, Config) else cfg
        if not isinstance(crf, CRFConfig):
            raise TypeError(f"from_config expects a Config or CRFConfig, got {type(cfg).__name__}")
        return cls(w1=crf.w1, theta_alpha=crf.theta_alpha, theta_beta=crf.theta_beta, w2=crf.w2,
                   theta_gamma=crf.theta_gamma, iterations=crf.iterations, backend=crf.backend,
                   normalization=crf.normalization, device=crf.device)

    @property
    def params(self) -> dict[str, float]:
        return {"w1": self.w1, "theta_alpha": self.theta_alpha, "theta_beta": self.theta_beta,
                "w2": self.w2, "theta_gamma": self.theta_gamma, "iterations": self.iterations}

    @property
    def options(self) -> dict[str, str]:
        """backend, normalization, device: pass on with ``**model.options`` (e.g. to cross_validate)."""
        return {"backend": self.backend, "normalization": self.normalization, "device": self.device}

    @property
    def provenance(self) -> dict[str, Any]:
        """Parameters, normalisation, backend and its version: what made a refined result."""
        return {**self.params, "normalization": self.normalization, "device": self.device,
                **backend_version(self.backend)}

    def __repr__(self) -> str:
        return ("DenseCRF(" + ", ".join(f"{k}={v:g}" for k, v in self.params.items())
                + f", backend={self.backend!r}, normalization={self.normalization!r}"
                + (f", device={self.device!r})" if self.backend == "torch" else ")"))

    def build(self, image: np.ndarray, probs: np.ndarray):
        """The checked pydensecrf.densecrf.DenseCRF2D for this image, ready for inference (pydensecrf only)."""
        import pydensecrf.densecrf as dcrf

        check_inputs(image, probs)
        c, h, w = probs.shape
        norm = getattr(dcrf, _PYDENSECRF_NORMALIZATION[kernel_normalization(self.normalization)])
        crf = dcrf.DenseCRF2D(w, h, c)  # pydensecrf takes width first
        crf.setUnaryEnergy(unary_energy(probs))  # sum_i -log P(x_i)
        # Smoothness kernel: w2 exp(-|p_i-p_j|^2 / 2 theta_gamma^2), features p / theta_gamma.
        crf.addPairwiseGaussian(sxy=self.theta_gamma, compat=self.w2, normalization=norm)
        # Appearance kernel: w1 exp(-|p_i-p_j|^2 / 2 theta_alpha^2 - |I_i-I_j|^2 / 2 theta_beta^2).
        crf.addPairwiseBilateral(sxy=self.theta_alpha, srgb=self.theta_beta,
                                 rgbim=np.require(image, requirements=["C", "W"]), compat=self.w1,
                                 normalization=norm)
        return crf

    def _torch_params(self) -> dict[str, Any]:
        return {**self.params, "normalization": self.normalization, "device": self.device}

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Mean-field marginals Q after ``iterations`` steps, (C, H, W) float32, summing to 1 per pixel."""
        if self.backend == "torch":
            return self.batch([image], [probs])[0]
        crf = self.build(image, probs)
        return np.array(crf.inference(self.iterations)).reshape(probs.shape)

    def batch(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Q (C, H_b, W_b) float32 for each (image, probs) pair; the torch backend shares one lattice per kernel.

        Images may differ in size; every probs must have the same number of classes. pydensecrf loops.
        """
        images, probs = list(images), list(probs)
        if len(images) != len(probs):
            raise ValueError(f"need as many images as probs, got {len(images)} and {len(probs)}")
        for image, p in zip(images, probs):
            check_inputs(image, p)
        if self.backend == "pydensecrf":
            return [self(image, p) for image, p in zip(images, probs)]
        if len({p.shape[0] for p in probs}) > 1:
            raise ValueError("every probs of a batch needs the same number of classes")
        from .crf_torch import mean_field

        qs = mean_field(images, [unary_energy(p) for p in probs], **self._torch_params())
        return [q.reshape(p.shape) for q, p in zip(qs, probs)]

    def predict(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The refined labelling argmax_l Q(l), (H, W) uint8."""
        return self(image, probs).argmax(axis=0).astype(np.uint8)

    def predict_batch(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The refined labellings of a batch (see :meth:`batch`), each (H_b, W_b) uint8."""
        return [q.argmax(axis=0).astype(np.uint8) for q in self.batch(images, probs)]

    def steps(self, image: np.ndarray, probs: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (iteration, scores, Q) for iterations 0..n; scores (C, H, W) are the pre-softmax values.

        Iteration 0 is the unary alone (scores = log P, clipped); step t adds the pairwise messages
        computed from Q of step t-1 (DeepLab v1, Fig. 2 / v2, Fig. 5: score map vs belief map).
        """
        if self.backend == "torch":
            from .crf_torch import mean_field_steps

            check_inputs(image, probs)
            for it, scores, q in mean_field_steps([image], [unary_energy(probs)], **self._torch_params()):
                yield it, scores.T.cpu().numpy().reshape(probs.shape), q.T.cpu().numpy().reshape(probs.shape)
            return
        import pydensecrf.eigen as eigen

        crf = self.build(image, probs)
        shape = probs.shape
        q, _, tmp2 = crf.startInference()
        # pydensecrf's matrix wrapper fixes its numpy shape when created: pre-size the score buffer.
        tmp1 = eigen.matrixXf(np.zeros((shape[0], shape[1] * shape[2]), dtype=np.float32))
        yield 0, -unary_energy(probs).reshape(shape), np.array(q).reshape(shape)
        for it in range(1, self.iterations + 1):
            crf.stepInference(q, tmp1, tmp2)
            yield it, np.array(tmp1).reshape(shape), np.array(q).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Exact reference: all pairs, O(N^2)
# ----------------------------------------------------------------------------------------------

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


def dense_crf_exact(image: np.ndarray, probs: np.ndarray, *, w1: float = _DEFAULTS.w1,
                    theta_alpha: float = _DEFAULTS.theta_alpha, theta_beta: float = _DEFAULTS.theta_beta,
                    w2: float = _DEFAULTS.w2, theta_gamma: float = _DEFAULTS.theta_gamma,
                    iterations: int = _DEFAULTS.iterations, normalization: str = "symmetric",
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
    _check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations)
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


def energy_terms(labels: np.ndarray, image: np.ndarray, probs: np.ndarray, *, w1: float = _DEFAULTS.w1,
                 theta_alpha: float = _DEFAULTS.theta_alpha, theta_beta: float = _DEFAULTS.theta_beta,
                 w2: float = _DEFAULTS.w2, theta_gamma: float = _DEFAULTS.theta_gamma,
                 normalization: str = "none") -> dict[str, float]:
    """E(x) of a labelling (H, W) split into its terms: ``unary``, ``appearance``, ``smoothness``, ``total``.

    Exact (all pairs), small images only. ``normalization="none"`` is DeepLab v2, Eq. 2-3 as written;
    ``"symmetric"`` is the energy whose mean field pydensecrf runs.
    """
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
    unary = unary_energy(probs).astype(np.float64)[flat, np.arange(flat.size)].sum()  # sum_i -log P(x_i)
    k1, k2 = exact_kernels(image, theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma,
                           normalization=normalization)
    # Potts: sum over pairs with different labels = all pairs - pairs with the same label, and
    # sum_{i<j} = half the sum over ordered pairs (the kernels are symmetric; i = j never differs).
    onehot = np.eye(c)[flat]  # (N, C)

    def differing(k: np.ndarray) -> float:
        return 0.5 * float(k.sum() - (onehot * (k @ onehot)).sum())

    appearance = w1 * differing(k1)
    smoothness = w2 * differing(k2)
    return {"unary": float(unary), "appearance": float(appearance), "smoothness": float(smoothness),
            "total": float(unary + appearance + smoothness)}


def crf_energy(labels: np.ndarray, image: np.ndarray, probs: np.ndarray, **params: Any) -> float:
    """E(x) (DeepLab v2, Eq. 2-3) of a labelling (H, W), exactly; keyword parameters as energy_terms."""
    return energy_terms(labels, image, probs, **params)["total"]


def kernel_maps(image: np.ndarray, pixel: tuple[int, int], *, theta_alpha: float = _DEFAULTS.theta_alpha,
                theta_beta: float = _DEFAULTS.theta_beta,
                theta_gamma: float = _DEFAULTS.theta_gamma) -> tuple[np.ndarray, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------
# Which CRF: the published choices and what they change
# ----------------------------------------------------------------------------------------------

def setting_variants() -> dict[str, dict[str, Any]]:
    """The choices the sources leave open, as DenseCRF keyword overrides: the kernel normalisation (pydensecrf's
    default "symmetric", DeepLab's "deeplab") x the smoothness kernel (the paper's text theta_gamma = 3, the released
    ResNet-101 settings theta_gamma = 1; both w2 = 3). The first is our default configuration."""
    out = {}
    for norm, norm_name in (("symmetric", "symmetric (pydensecrf)"), ("deeplab", "per pixel (DeepLab's densecrf)")):
        for setting in (PAPER_TEXT, RELEASED_RESNET101):
            out[f"{norm_name}, theta_gamma={setting.theta_gamma:g} ({setting.name})"] = {
                "normalization": norm, "w2": setting.w2, "theta_gamma": setting.theta_gamma}
    return out


def setting_effects(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    variants: dict[str, dict[str, Any]] | None = None, *, base: DenseCRF | None = None,
                    ignore_index: int = IGNORE_INDEX):
    """How much each CRF variant moves the labels: a table (pandas DataFrame), one row per variant.

    ``variants``: name -> DenseCRF keyword overrides on ``base`` (default :func:`setting_variants` on
    ``DenseCRF()``); the first variant is the reference. Columns: ``mean_iou`` (%, VOC measure over all
    images, void ignored), ``changed_vs_reference`` and ``changed_vs_no_crf`` (% of all pixels whose label
    differs from the reference variant's / from the argmax of P). The first row, "no CRF", is argmax P.
    """
    import pandas as pd

    variants = setting_variants() if variants is None else variants
    if not variants:
        raise ValueError("give at least one variant (name -> DenseCRF keyword overrides)")
    base = DenseCRF() if base is None else base
    num_classes = probs[0].shape[0]
    preds = {"no CRF": [p.argmax(0) for p in probs]}
    settings = {"no CRF": {"normalization": None, "w2": None, "theta_gamma": None}}
    for name, overrides in variants.items():
        model = DenseCRF(**{**base.params, **base.options, **overrides})
        preds[name] = model.predict_batch(images, probs)
        settings[name] = {"normalization": model.normalization, "w2": model.w2, "theta_gamma": model.theta_gamma}
    reference = next(iter(variants))
    total = sum(lab.size for lab in labels)

    def changed(a: str, b: str) -> float:
        return 100.0 * sum(int((x != y).sum()) for x, y in zip(preds[a], preds[b])) / total

    rows = []
    for name, pred in preds.items():
        conf = sum(confusion_matrix(x, np.asarray(y), num_classes, ignore_index) for x, y in zip(pred, labels))
        rows.append({"setting": name, **settings[name], "mean_iou": 100.0 * scores(conf)["mean_iou"],
                     "changed_vs_reference": changed(name, reference), "changed_vs_no_crf": changed(name, "no CRF")})
    return pd.DataFrame(rows).set_index("setting")


# ----------------------------------------------------------------------------------------------
# Simulated inputs (for notebooks, tests and benchmarks; never a substitute for a network's output)
# ----------------------------------------------------------------------------------------------

def simulate_unaries(label: np.ndarray, num_classes: int, *, stride: int = 8, confidence: float = 5.0,
                     noise: float = 2.0, noise_cells: float = 1.5, distractors: int = 0, seed: int = 0,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """SIMULATED softmax scores (C, H, W) float32 from a ground-truth label, coarse like DeepLab's.

    The label is sampled at the centre of each ``stride`` x ``stride`` cell (DeepLab's output stride
    is 8), turned into scores ``confidence * one_hot + noise * field``, upsampled bilinearly to the
    label's size and passed through a softmax: blurry boundaries and blob-shaped mistakes like a
    network's. ``field`` is N(0, 1) smoothed over ``noise_cells`` cells, on the classes present plus
    ``distractors`` absent ones. Void pixels take the label of the nearest non-void pixel.
    """
    from scipy import ndimage

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W), got shape {label.shape}")
    void = label == ignore_index
    if void.all():
        raise ValueError("label is entirely void; nothing to simulate from")
    if void.any():
        idx = ndimage.distance_transform_edt(void, return_distances=False, return_indices=True)
        label = label[idx[0], idx[1]]
    if label.max() >= num_classes:
        raise ValueError(f"label has class {int(label.max())} >= num_classes={num_classes}")
    h, w = label.shape
    off = stride // 2
    if min(h, w) <= off:
        raise ValueError(f"label {h}x{w} is too small for stride {stride}")
    coarse = label[off::stride, off::stride]  # (h', w'), the stride-8 grid
    rng = np.random.default_rng(seed)
    scores_small = confidence * np.eye(num_classes, dtype=np.float64)[coarse].transpose(2, 0, 1)
    # Errors of a network are spatially correlated blobs, not independent per cell: smooth the noise
    # over ``noise_cells`` coarse cells (Gaussian sd), then rescale it to sd ``noise``.
    field = rng.standard_normal(scores_small.shape)
    if noise_cells > 0:
        field = ndimage.gaussian_filter(field, sigma=(0, noise_cells, noise_cells), mode="reflect")
        field /= max(float(field.std()), 1e-12)
    # Noise only on the classes in the image and ``distractors`` absent ones, the confusions a network
    # makes; the other classes stay ``confidence`` below the true one.
    present = np.unique(coarse)
    absent = np.setdiff1d(np.arange(num_classes), present)
    noisy = np.concatenate([present, rng.choice(absent, size=min(distractors, absent.size), replace=False)])
    scores_small[noisy] += noise * field[noisy]
    # Bilinear upsampling: pixel y sits at (y - off) / stride on the coarse grid.
    ys = (np.arange(h) - off) / stride
    xs = (np.arange(w) - off) / stride
    grid = np.meshgrid(ys, xs, indexing="ij")
    up = np.stack([ndimage.map_coordinates(s, grid, order=1, mode="nearest") for s in scores_small])
    return _softmax0(up).astype(np.float32)


def synthetic_scene(height: int = 96, width: int = 128, *, num_objects: int = 3, num_classes: int = 21,
                    void_width: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A toy (image uint8 (H, W, 3), label uint8 (H, W)): coloured ellipses on a shaded background.

    Objects have random classes 1..C-1 and colours that differ from the background, so the label
    boundaries are colour edges; pixel noise (sd 4 levels) keeps it from being trivial. With
    ``void_width`` > 0 the label gets VOC-style void (255) outlines of about that width.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 215, size=3)
    image = base + 30 * (rows / height - 0.5)[..., None] * rng.choice([-1, 1], size=3)
    label = np.zeros((height, width), dtype=np.uint8)
    for _ in range(num_objects):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.12, 0.3) * width
        inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - base).max() < 80:  # a visible colour edge against the background
            colour = rng.uniform(0, 255, size=3)
        image[inside] = colour
        label[inside] = rng.integers(1, num_classes)
    image = np.clip(image + rng.normal(0, 4, size=image.shape), 0, 255).astype(np.uint8)
    if void_width > 0:
        from .metrics import trimap_band

        label[trimap_band(label, void_width / 2, ignore_index=None)] = IGNORE_INDEX
    return image, label


def sample_images(n: int, *, seed: int = 0, scale: float = 1.0,
                  num_classes: int = 21) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """n (id, image uint8 (H, W, 3), label uint8 (H, W)) and a line saying where they came from.

    Real VOC 2012 images and labels from the shared read-only subset (dlib.data.shared_voc_root())
    when present, drawn at random with ``seed``; :func:`synthetic_scene` otherwise. ``scale`` < 1
    shrinks them (bilinear for the image, nearest for the label).
    """
    from PIL import Image

    from .data import shared_voc_root

    root = shared_voc_root()
    rng = np.random.default_rng(seed)
    if root is not None:
        ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
        chosen = sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())
        samples = [(i, read_image(root / "JPEGImages" / f"{i}.jpg"), read_label(root / "SegmentationClass" / f"{i}.png"))
                   for i in chosen]
        source = f"PASCAL VOC 2012 train images ({root})"
    else:
        samples = [(f"synthetic{k:03d}", *synthetic_scene(240, 320, num_objects=3, num_classes=num_classes,
                                                          void_width=4, seed=seed * 1000 + k)) for k in range(n)]
        source = "synthetic scenes (dlib.crf.synthetic_scene; no VOC data found)"
    if scale != 1.0:
        resized = []
        for image_id, image, label in samples:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))  # PIL: (W, H)
            resized.append((image_id, np.array(Image.fromarray(image).resize(size, Image.BILINEAR)),
                            np.array(Image.fromarray(label).resize(size, Image.NEAREST))))
        samples = resized
    return samples, source


# ----------------------------------------------------------------------------------------------
# Data sets on disk: cached probabilities in, refined label maps out
# ----------------------------------------------------------------------------------------------

def save_probs(path: str | os.PathLike, probs: np.ndarray) -> Path:
    """Cache a softmax (C, H, W) as ``<id>.npz`` (key ``probs``, float16, compressed), atomically."""
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (C, H, W), got shape {probs.shape}")
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs.astype(np.float16))
    return atomic_write_bytes(path, buf.getvalue())


def load_probs(path: str | os.PathLike) -> np.ndarray:
    """Read a cached softmax: (C, H, W) float32, renormalised to sum to 1 (float16 rounding undone)."""
    import zipfile

    try:
        with np.load(path) as data:
            if "probs" not in data:
                raise ValueError(f"{path} has no 'probs' array (keys: {list(data.keys())}); write it with save_probs")
            probs = data["probs"].astype(np.float32)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"cached probabilities {path} are truncated or corrupt ({type(err).__name__}: {err}); "
                         "delete the file and write it again with 'python -m dlib evaluate --cache'") from None
    return probs / probs.sum(axis=0, keepdims=True)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def write_label(path: str | os.PathLike, label: np.ndarray) -> Path:
    """Write a class map (H, W) as a VOC-style palette PNG, atomically."""
    from PIL import Image

    from .viz import voc_palette

    im = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A palette PNG label as its class indices (H, W) uint8."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im, dtype=np.uint8)


ImageSource = str | os.PathLike | Callable[[str], np.ndarray]
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _load_image(images: ImageSource, image_id: str) -> np.ndarray:
    if callable(images):
        return images(image_id)
    for ext in _IMAGE_EXTENSIONS:
        path = Path(images) / f"{image_id}{ext}"
        if path.exists():
            return read_image(path)
    raise FileNotFoundError(f"no image for id {image_id!r} in {images} (looked for {', '.join(_IMAGE_EXTENSIONS)})")


def resolve_workers(workers: int) -> int:
    """0 -> every core this process may use; otherwise the number given (>= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 (0 = all cores), got {workers!r}")
    if workers == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(workers)


# Per-process state of the worker pool: set by the pool initializer (inherited on fork).
_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # one thread per worker process (the torch backend): the workers share the cores
        sys.modules["torch"].set_num_threads(1)
    _STATE.clear()
    _STATE.update(state)


def _pool(workers: int, state: dict[str, Any]):
    # fork: the image reader (which may be a lambda) and in-memory arrays reach workers without pickling.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    return ctx.Pool(workers, initializer=_init_worker, initargs=(state,))


def _map(fn: Callable, items: Sequence, state: dict[str, Any], workers: int, desc: str, progress: bool) -> list:
    """[fn(state, item) for item in items] over ``workers`` processes, in order, with a progress bar."""
    from tqdm import tqdm

    results: list = [None] * len(items)
    with tqdm(total=len(items), desc=desc, disable=not progress, mininterval=1.0) as bar:
        if workers == 1 or len(items) <= 1:
            for k, item in enumerate(items):
                results[k] = fn(state, item)
                bar.update()
        else:
            with _pool(min(workers, len(items)), state) as pool:
                for k, value in pool.imap_unordered(_run_task, [(fn, k, item) for k, item in enumerate(items)]):
                    results[k] = value
                    bar.update()
    return results


def _run_task(task: tuple[Callable, int, Any]) -> tuple[int, Any]:
    fn, k, item = task
    return k, fn(_STATE, item)


def _refine_one(state: dict[str, Any], image_id: str) -> str:
    out = Path(state["out_dir"]) / f"{image_id}.png"
    if out.exists() and not state["overwrite"]:
        return str(out)
    probs = load_probs(Path(state["prob_dir"]) / f"{image_id}.npz")
    image = _load_image(state["images"], image_id)
    write_label(out, state["crf"].predict(image, probs))
    return str(out)


def refine_dataset(prob_dir: str | os.PathLike, out_dir: str | os.PathLike, images: ImageSource, *,
                   crf: DenseCRF | None = None, ids: Iterable[str] | None = None, workers: int = 0,
                   overwrite: bool = True, progress: bool = True) -> list[Path]:
    """Refine every cached softmax ``<prob_dir>/<id>.npz`` into ``<out_dir>/<id>.png`` in parallel.

    ``images`` is a folder holding ``<id>.jpg``/``.jpeg``/``.png`` or a callable ``id -> uint8 (H, W, 3)``.
    ``workers`` processes (0 = all cores); each output is exactly ``crf.predict(image, load_probs(npz))``,
    written atomically. ``overwrite=False`` keeps outputs already there (resume an interrupted run).
    Returns the written paths in the order of ``ids`` (default: every .npz, sorted).
    """
    prob_dir, out_dir = Path(prob_dir), Path(out_dir)
    if not prob_dir.is_dir():
        raise FileNotFoundError(f"probability folder {prob_dir} does not exist")
    ids = sorted(p.stem for p in prob_dir.glob("*.npz")) if ids is None else [str(i) for i in ids]
    if not ids:
        raise ValueError(f"no cached probabilities (<id>.npz) in {prob_dir}")
    missing = [i for i in ids if not (prob_dir / f"{i}.npz").exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no {prob_dir}/<id>.npz, e.g. {missing[:3]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    crf = crf if crf is not None else DenseCRF()
    if _on_gpu(crf):  # one process, TORCH_BATCH images per lattice (CUDA does not survive fork)
        return _refine_batched(crf, ids, prob_dir, out_dir, images, overwrite, progress)
    state = {"crf": crf, "images": images, "prob_dir": str(prob_dir),
             "out_dir": str(out_dir), "overwrite": overwrite}
    paths = _map(_refine_one, ids, state, resolve_workers(workers), "CRF", progress)
    return [Path(p) for p in paths]


def _on_gpu(crf: DenseCRF) -> bool:
    return crf.backend == "torch" and crf.device != "cpu"


def _refine_batched(crf: DenseCRF, ids: list[str], prob_dir: Path, out_dir: Path, images: ImageSource,
                    overwrite: bool, progress: bool) -> list[Path]:
    from tqdm import tqdm

    paths = [out_dir / f"{i}.png" for i in ids]
    todo = [k for k, p in enumerate(paths) if overwrite or not p.exists()]
    with tqdm(total=len(todo), desc="CRF", disable=not progress, mininterval=1.0) as bar:
        for start in range(0, len(todo), TORCH_BATCH):
            chunk = todo[start:start + TORCH_BATCH]
            labels = crf.predict_batch([_load_image(images, ids[k]) for k in chunk],
                                       [load_probs(prob_dir / f"{ids[k]}.npz") for k in chunk])
            for k, label in zip(chunk, labels):
                write_label(paths[k], label)
            bar.update(len(chunk))
    return paths


# ----------------------------------------------------------------------------------------------
# Cross-validation (DeepLab v1, Sec. 5; v2, Sec. 4.1): coarse grid, then a finer grid around the best
# ----------------------------------------------------------------------------------------------

class CVResult(NamedTuple):
    table: Any  # pandas DataFrame: stage, w1, theta_alpha, theta_beta, mean_iou, pixel_acc
    best: dict  # the best row as a dict
    baseline: dict  # mean_iou and pixel_acc of argmax P (no CRF)


def _cv_one(state: dict[str, Any], task: tuple[int, int]) -> np.ndarray:
    p, k = task
    w1, theta_alpha, theta_beta = state["points"][p]
    crf = DenseCRF(w1=w1, theta_alpha=theta_alpha, theta_beta=theta_beta, **state["fixed"])
    pred = crf.predict(state["images"][k], state["probs"][k])
    return confusion_matrix(pred, state["labels"][k], state["num_classes"], state["ignore_index"])


def _cv_point_batched(state: dict[str, Any], p: int) -> list[np.ndarray]:
    """The confusion matrices of every image at point p, TORCH_BATCH images per call (torch on a GPU)."""
    w1, theta_alpha, theta_beta = state["points"][p]
    crf = DenseCRF(w1=w1, theta_alpha=theta_alpha, theta_beta=theta_beta, **state["fixed"])
    confs = []
    for start in range(0, len(state["images"]), TORCH_BATCH):
        preds = crf.predict_batch(state["images"][start:start + TORCH_BATCH], state["probs"][start:start + TORCH_BATCH])
        confs += [confusion_matrix(pred, lab, state["num_classes"], state["ignore_index"])
                  for pred, lab in zip(preds, state["labels"][start:start + TORCH_BATCH])]
    return confs


def _finer(grid: Sequence[float], best: float, lower: float) -> list[float]:
    """best and best +- half the coarse step (values above ``lower`` only)."""
    values = sorted(set(float(v) for v in grid))
    steps = np.diff(values)
    if len(values) < 2:
        return [best]
    half = float(steps.min()) / 2
    return [v for v in (best - half, best, best + half) if v > lower]


def cross_validate(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   w1_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["w1"],
                   theta_alpha_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["theta_alpha"],
                   theta_beta_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["theta_beta"],
                   w2: float = _DEFAULTS.w2, theta_gamma: float = _DEFAULTS.theta_gamma,
                   iterations: int = _DEFAULTS.iterations, refine: bool = True,
                   ignore_index: int = IGNORE_INDEX, workers: int = 0, progress: bool = True,
                   backend: str = _DEFAULTS.backend, normalization: str = _DEFAULTS.normalization,
                   device: str = _DEFAULTS.device) -> CVResult:
    """The papers' coarse-to-fine search of w1, theta_alpha, theta_beta by mIoU on held-out images.

    Stage 1 scores every point of the grid (default: DeepLab v2's ranges); stage 2 (``refine``) scores
    the points at half the coarse step around stage 1's best, as the papers "refine the search step
    sizes around the first round's best values". mIoU is accumulated over all images (VOC measure).
    Work is spread over ``workers`` processes (0 = all cores), one (point, image) pair per task;
    the torch backend on a GPU runs in this process instead, TORCH_BATCH images per call.
    ``backend``, ``normalization``, ``device``: as :class:`DenseCRF`.
    """
    import pandas as pd

    images, probs, labels = list(images), list(probs), list(labels)
    if not (len(images) == len(probs) == len(labels)) or not images:
        raise ValueError(f"need the same non-zero number of images, probs and labels, got "
                         f"{len(images)}, {len(probs)}, {len(labels)}")
    num_classes = probs[0].shape[0]
    for img, p, lab in zip(images, probs, labels):
        check_inputs(img, p)
        if np.shape(lab) != img.shape[:2] or p.shape[0] != num_classes:
            raise ValueError("every label must match its image's (H, W) and every probs the same C")
    fixed = {"w2": w2, "theta_gamma": theta_gamma, "iterations": iterations, "normalization": normalization,
             "backend": resolve_backend(backend), "device": device}
    _check_params(min(w1_grid), min(theta_alpha_grid), min(theta_beta_grid), w2, theta_gamma, iterations)
    on_gpu = _on_gpu(DenseCRF(**fixed))
    baseline_conf = sum(confusion_matrix(p.argmax(0), lab, num_classes, ignore_index) for p, lab in zip(probs, labels))
    base = scores(baseline_conf)
    workers = resolve_workers(workers)

    rows: list[dict] = []
    seen: set[tuple[float, float, float]] = set()

    def run_stage(stage: int, points: list[tuple[float, float, float]]) -> None:
        points = [pt for pt in points if pt not in seen]
        seen.update(points)
        state = {"points": points, "fixed": fixed, "images": images, "probs": probs, "labels": labels,
                 "num_classes": num_classes, "ignore_index": ignore_index}
        tasks = [(p, k) for p in range(len(points)) for k in range(len(images))]
        if on_gpu:
            confs = sum(_map(_cv_point_batched, range(len(points)), state, 1,
                             f"CRF cross-validation, stage {stage}", progress), [])
        else:
            confs = _map(_cv_one, tasks, state, workers, f"CRF cross-validation, stage {stage}", progress)
        totals = [np.zeros((num_classes, num_classes), dtype=np.int64) for _ in points]
        for (p, _), conf in zip(tasks, confs):
            totals[p] += conf
        for (w1, ta, tb), conf in zip(points, totals):
            s = scores(conf)
            rows.append({"stage": stage, "w1": w1, "theta_alpha": ta, "theta_beta": tb,
                         "mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"]})

    coarse = [(float(a), float(b), float(c)) for a in w1_grid for b in theta_alpha_grid for c in theta_beta_grid]
    run_stage(1, coarse)
    if refine:
        b = max(rows, key=lambda r: r["mean_iou"])
        fine = [(a, t, c) for a in _finer(w1_grid, b["w1"], 0.0)
                for t in _finer(theta_alpha_grid, b["theta_alpha"], 0.0)
                for c in _finer(theta_beta_grid, b["theta_beta"], 0.0)]
        run_stage(2, fine)
    table = pd.DataFrame(rows)
    best = table.loc[table["mean_iou"].idxmax()].to_dict()
    best["stage"] = int(best["stage"])
    return CVResult(table=table, best=best, baseline={"mean_iou": base["mean_iou"], "pixel_acc": base["pixel_acc"]})
