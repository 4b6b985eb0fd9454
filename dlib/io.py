"""File formats in one place: images, label maps, cached probability maps, and JSON.

* an image: any file PIL reads, returned as uint8 RGB (H, W, 3);
* a label map: a VOC-style palette PNG whose pixel values are class indices (255 = void);
* a probability map: ``<id>.npz`` holding one array ``probs`` (C, H, W), float16, compressed
  (the softmax the CRF stage reads, written by ``python -m dlib evaluate --cache``);
* JSON: one object per file (results, caches, checksums).

Writers are atomic (dlib.results.atomic_write_bytes): a reader never sees half a file.
Checkpoints have their own loader beside the training code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .constants import voc_palette
from .results import atomic_write_bytes

_RAISE = object()  # read_json without a default: errors propagate


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def write_label(path: str | os.PathLike, label: np.ndarray) -> Path:
    """Write a class map (H, W) as a VOC-style palette PNG, atomically."""
    from PIL import Image

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


def read_json(path: str | os.PathLike, *, default: Any = _RAISE) -> Any:
    """A JSON file holding one object, as a dict.

    With ``default`` given, a missing, unreadable or malformed file (or one holding something other than
    an object) returns ``default`` instead: the reading of an optional cache. Without it, a missing file
    raises FileNotFoundError and a malformed one a ValueError naming the file.
    """
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        if default is not _RAISE:
            return default
        if isinstance(err, OSError):
            raise
        raise ValueError(f"{path} is not valid JSON ({err}); delete it or write it again") from None
    if not isinstance(payload, dict):
        if default is not _RAISE:
            return default
        raise ValueError(f"{path} holds a JSON {type(payload).__name__}, not an object")
    return payload
