"""Data: the built-in proxy data set, PASCAL VOC 2012 and SBD, and the paper's transforms."""

from __future__ import annotations

import os
from pathlib import Path

from .results import REPO_ROOT

SHARED_DATA_ENV = "DLIB_SHARED_DATA"


def shared_data_root() -> Path:
    """``../shared/data`` beside the repository (or ``$DLIB_SHARED_DATA``); it may not exist."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO_ROOT.parent / "shared" / "data"))


def shared_voc_root() -> Path | None:
    """The read-only VOC 2012 train-split subset in ``../shared/data``, or None when absent."""
    root = shared_data_root() / "voc2012-train-subset" / "VOC2012"
    return root if (root / "JPEGImages").is_dir() else None
