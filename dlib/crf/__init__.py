"""The fully connected CRF (DeepLab v1 Sec. 4, DeepLab v2 Sec. 3.3).

``dense`` is the wrapper every caller uses (:class:`DenseCRF`, the backend registry); ``lattice`` and
``meanfield`` are the PyTorch backend (the permutohedral lattice and mean-field on it); ``exact`` is the
brute-force reference the tests compare with; ``tuning`` refines and scores data sets, ``crossval`` cross-validates
the parameters, both spreading their work with ``parallel``; ``scenes`` makes synthetic scenes and simulated network
outputs for the notebooks and tests; ``explain`` holds what notebook 04 measures to explain the CRF; ``explorer`` is
notebook 04's interactive explorer (sliders wired to one pure update function, and its static grid).
The wrapper's names are importable from the package itself: ``from dlib import crf; crf.DenseCRF(...)``.
"""

from dlib.crf.dense import (
    BACKEND_REGISTRY,
    PROB_CLIP,
    DenseCRF,
    backend_version,
    backends,
    check_inputs,
    check_params,
    pydensecrf_available,
    pydensecrf_version,
    resolve_backend,
    unary_energy,
)

__all__ = ["BACKEND_REGISTRY", "PROB_CLIP", "DenseCRF", "backend_version", "backends", "check_inputs", "check_params",
           "pydensecrf_available", "pydensecrf_version", "resolve_backend", "unary_energy"]
