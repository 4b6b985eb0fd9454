"""The fully connected CRF (DeepLab v1, Sec. 4; DeepLab v2, Sec. 3.3): one wrapper, two backends.

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
* ``"torch"``: our own lattice in PyTorch tensor operations (dlib.crf.lattice, dlib.crf.meanfield), on CPU or
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
against dlib.crf.exact.dense_crf_exact in tests/test_dense.py). Two things differ from the energy as
written above, both from Krähenbühl's C++ code that pydensecrf wraps (DeepLab used the same
authors' public implementation):

* Deviation from paper's Eq. 3 as written: each kernel is normalised. By default symmetrically,
  k_ij / sqrt(d_i d_j) with d_i = sum_j k_ij (pydensecrf's default NORMALIZE_SYMMETRIC), so w1 and w2
  weigh an average over the kernel rather than a sum over up to ~10^5 pixels. ``normalization=``
  offers pydensecrf's other options too ("before", "after", and "none", the paper's Gaussians with
  j = i; see dlib.crf.meanfield) and ``"deeplab"``, what DeepLab itself ran (below);
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

**Parameters and their sources** (:data:`dlib.core.config.CRF_SETTINGS`): the paper's text fixes w2 = 3 and
theta_gamma = 3 (:data:`dlib.core.config.PAPER_TEXT`); the released ResNet-101 VOC settings are w1 = 4, theta_alpha =
67,
theta_beta = 3, w2 = 3, theta_gamma = 1 (:data:`dlib.core.config.RELEASED_RESNET101`); the released VGG-16 ones w1 = 4,
theta_alpha = 65, theta_beta = 3, w2 = 2, theta_gamma = 2 (:data:`dlib.core.config.RELEASED_VGG16`). Our defaults
(:class:`dlib.core.config.CRFConfig`) take w1, theta_alpha, theta_beta from the released ResNet-101 settings and
w2, theta_gamma from the paper's text; dlib.crf.tuning.setting_effects measures what the choices change.

Elsewhere: the exact O(N^2) mean field and energy, for testing (dlib.crf.exact); refining and scoring a
data set (dlib.crf.tuning); cross-validating the parameters (dlib.crf.crossval); simulated unaries (dlib.crf.scenes).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dlib.core.config import CRF_DEFAULTS, Config, CRFConfig
from dlib.core.constants import NORMALIZATIONS, kernel_normalization

PROB_CLIP = 1e-5  # smallest probability before the log: unary at most -log(1e-5) = 11.5 (as pydensecrf.utils)
PYDENSECRF_DISTRIBUTION = "pydensecrf2"  # the package that installs the module pydensecrf (extra [crf])


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


def check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations) -> None:
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


def pydensecrf_version() -> str | None:
    """The installed pydensecrf's version, from its distribution's metadata (the module has no __version__)."""
    from importlib import metadata

    try:
        return metadata.version(PYDENSECRF_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


_PYDENSECRF_NORMALIZATION = {"symmetric": "NORMALIZE_SYMMETRIC", "before": "NORMALIZE_BEFORE",
                             "after": "NORMALIZE_AFTER", "none": "NO_NORMALIZATION"}


class PydenseCRFBackend:
    """Krähenbühl's C++ code through pydensecrf: one image at a time, on the CPU."""

    name = "pydensecrf"
    uses_device = False  # CPU only; crf.device must be "cpu"
    missing = ("backend='pydensecrf' needs the optional extra: pip install -e '.[crf]' (a C++ compiler builds "
               "pydensecrf2); backend='torch' needs nothing more")

    def available(self) -> bool:
        return pydensecrf_available()

    def version(self) -> str:
        version = pydensecrf_version()
        return (f"{PYDENSECRF_DISTRIBUTION} {version}" if version
                else "pydensecrf (not installed from the pydensecrf2 distribution; version unknown)")

    def batch(self, crf: DenseCRF, images: list[np.ndarray], probs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.array(crf.build(image, p).inference(crf.iterations)).reshape(p.shape)
                for image, p in zip(images, probs)]

    def steps(self, crf: DenseCRF, image: np.ndarray, probs: np.ndarray) -> Iterator[tuple[int, np.ndarray,
                                                                                          np.ndarray]]:
        import pydensecrf.eigen as eigen

        model = crf.build(image, probs)
        shape = probs.shape
        q, _, tmp2 = model.startInference()
        # pydensecrf's matrix wrapper fixes its numpy shape when created: pre-size the score buffer.
        tmp1 = eigen.matrixXf(np.zeros((shape[0], shape[1] * shape[2]), dtype=np.float32))
        yield 0, -unary_energy(probs).reshape(shape), np.array(q).reshape(shape)
        for it in range(1, crf.iterations + 1):
            model.stepInference(q, tmp1, tmp2)
            yield it, np.array(tmp1).reshape(shape), np.array(q).reshape(shape)


class TorchLatticeBackend:
    """Our permutohedral lattice in PyTorch (dlib.crf.lattice, dlib.crf.meanfield): batched, on CPU or GPU."""

    name = "torch"
    uses_device = True  # crf.device: "cpu" or "cuda"
    missing = ""

    def available(self) -> bool:
        return True

    def version(self) -> str:
        import torch

        return f"dlib.crf.lattice on torch {torch.__version__}"

    def batch(self, crf: DenseCRF, images: list[np.ndarray], probs: list[np.ndarray]) -> list[np.ndarray]:
        if len({p.shape[0] for p in probs}) > 1:
            raise ValueError("every probs of a batch needs the same number of classes")
        from dlib.crf.meanfield import mean_field

        qs = mean_field(images, [unary_energy(p) for p in probs], **crf.torch_params())
        return [q.reshape(p.shape) for q, p in zip(qs, probs)]

    def steps(self, crf: DenseCRF, image: np.ndarray, probs: np.ndarray) -> Iterator[tuple[int, np.ndarray,
                                                                                          np.ndarray]]:
        from dlib.crf.meanfield import mean_field_steps

        for it, scores, q in mean_field_steps([image], [unary_energy(probs)], **crf.torch_params()):
            yield it, scores.T.cpu().numpy().reshape(probs.shape), q.T.cpu().numpy().reshape(probs.shape)


# The backends by name, in the order "auto" tries them: a new backend is one class (name, uses_device, missing,
# available, version, batch, steps) and one entry here.
BACKEND_REGISTRY: dict[str, Any] = {"pydensecrf": PydenseCRFBackend(), "torch": TorchLatticeBackend()}


def backends() -> tuple[str, ...]:
    """The values crf.backend accepts: "auto" and every registered backend."""
    return ("auto", *BACKEND_REGISTRY)


def resolve_backend(backend: str = "auto") -> str:
    """The registered backend ``backend`` names; ``auto`` is the first one available (pydensecrf, then torch)."""
    if backend not in backends():
        raise ValueError(f"backend must be one of {backends()}, got {backend!r}")
    if backend == "auto":
        return next(name for name, impl in BACKEND_REGISTRY.items() if impl.available())
    if not BACKEND_REGISTRY[backend].available():
        raise ImportError(BACKEND_REGISTRY[backend].missing)
    return backend


def backend_version(backend: str = "auto") -> dict[str, str]:
    """{"backend": name, "version": ...} of the backend ``backend`` resolves to (for the provenance)."""
    name = resolve_backend(backend)
    return {"backend": name, "version": BACKEND_REGISTRY[name].version()}


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------

class DenseCRF:
    """The fully connected CRF with the paper's parameter names; call with (image, probs) -> Q (C, H, W).

    Defaults come from :class:`dlib.core.config.CRFConfig`, the single source, and mix two sources
    (:data:`dlib.core.config.CRF_SETTINGS`): w2 = theta_gamma = 3 and 10 iterations from the paper's text
    (DeepLab v2, Sec. 4.1; the released ResNet-101 settings use theta_gamma = 1); w1 = 4, theta_alpha = 67 (px),
    theta_beta = 3 (colour levels) from DeepLab v2's released ResNet-101 VOC settings, found by the
    authors' cross-validation on 100 val images. Notebook 04 repeats that search
    (dlib.crf.crossval.cross_validate) and writes ``results/<profile>/04_dense_crf/cv_best.json``; adopt its
    values by changing CRFConfig, nowhere else.

    ``backend``: "pydensecrf", "torch" or "auto" (pydensecrf when importable); ``self.backend`` is the
    one resolved. ``normalization``: one of NORMALIZATIONS (pydensecrf's options, "symmetric" its
    default; "deeplab" what DeepLab's densecrf computed, see the module docstring). ``device``: torch
    backend only ("cpu", "cuda").
    """

    def __init__(self, *, w1: float = CRF_DEFAULTS.w1, theta_alpha: float = CRF_DEFAULTS.theta_alpha,
                 theta_beta: float = CRF_DEFAULTS.theta_beta, w2: float = CRF_DEFAULTS.w2,
                 theta_gamma: float = CRF_DEFAULTS.theta_gamma, iterations: int = CRF_DEFAULTS.iterations,
                 backend: str = CRF_DEFAULTS.backend, normalization: str = CRF_DEFAULTS.normalization,
                 device: str = CRF_DEFAULTS.device):
        check_params(w1, theta_alpha, theta_beta, w2, theta_gamma, iterations)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS} (pydensecrf's options), "
                             f"got {normalization!r}")
        self.w1, self.theta_alpha, self.theta_beta = float(w1), float(theta_alpha), float(theta_beta)
        self.w2, self.theta_gamma, self.iterations = float(w2), float(theta_gamma), int(iterations)
        self.backend = resolve_backend(backend)
        self.normalization, self.device = normalization, str(device)
        if not self.uses_device and self.device != "cpu":
            raise ValueError(f"the {self.backend} backend runs on the CPU only, got device={device!r}; "
                             "use backend='torch' on a GPU")

    @classmethod
    def from_config(cls, cfg: CRFConfig | Config, **overrides: Any) -> DenseCRF:
        """Build from ``cfg.crf`` (or a CRFConfig itself); keyword ``overrides`` replace single settings,
        e.g. cross-validated ``w1=..., theta_alpha=..., theta_beta=...``."""
        crf = cfg.crf if isinstance(cfg, Config) else cfg
        if not isinstance(crf, CRFConfig):
            raise TypeError(f"from_config expects a Config or CRFConfig, got {type(cfg).__name__}")
        settings = {"w1": crf.w1, "theta_alpha": crf.theta_alpha, "theta_beta": crf.theta_beta, "w2": crf.w2,
                    "theta_gamma": crf.theta_gamma, "iterations": crf.iterations, "backend": crf.backend,
                    "normalization": crf.normalization, "device": crf.device}
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"from_config got unknown settings {sorted(unknown)}; choose from {sorted(settings)}")
        return cls(**{**settings, **overrides})

    @property
    def uses_device(self) -> bool:
        """Whether the backend runs on ``device`` (torch) rather than on the CPU only (pydensecrf)."""
        return BACKEND_REGISTRY[self.backend].uses_device

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
                + (f", device={self.device!r})" if self.uses_device else ")"))

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

    def torch_params(self) -> dict[str, Any]:
        """The keywords of dlib.crf.meanfield's mean field: the parameters, normalisation and device."""
        return {**self.params, "normalization": self.normalization, "device": self.device}

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Mean-field marginals Q after ``iterations`` steps, (C, H, W) float32, summing to 1 per pixel."""
        return self.batch([image], [probs])[0]

    def batch(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Q (C, H_b, W_b) float32 for each (image, probs) pair; the torch backend shares one lattice per kernel.

        Images may differ in size; every probs must have the same number of classes. pydensecrf loops.
        """
        images, probs = list(images), list(probs)
        if len(images) != len(probs):
            raise ValueError(f"need as many images as probs, got {len(images)} and {len(probs)}")
        for image, p in zip(images, probs):
            check_inputs(image, p)
        return BACKEND_REGISTRY[self.backend].batch(self, images, probs)

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
        check_inputs(image, probs)
        yield from BACKEND_REGISTRY[self.backend].steps(self, image, probs)
