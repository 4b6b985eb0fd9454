"""Files in one place: where they live, atomic writing, and the formats (images, labels, probability maps, JSON).

* an image: any file PIL reads, returned as uint8 RGB (H, W, 3);
* a label map: a VOC-style palette PNG whose pixel values are class indices (255 = void);
* a probability map: ``<id>.npz`` holding one array ``probs`` (C, H, W), float16, compressed
  (the softmax the CRF stage reads, written by ``python -m dlib evaluate --cache``);
* JSON: one object per file (results, caches, checksums).

Writers are atomic (:func:`atomic_write_bytes`): a reader never sees half a file. Checkpoints have their own
loader beside the training code (dlib.core.checkpoint). Where files live: the repository, the local cache
(:func:`cache_root`) and the shared read-only data (:func:`shared_data_root`).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dlib.core.constants import voc_palette

REPO_ROOT = Path(__file__).resolve().parents[2]
_RAISE = object()  # read_json without a default: errors propagate


# --------------------------------------------------------------------------------------------
# Where files live
# --------------------------------------------------------------------------------------------

SHARED_DATA_ENV = "DLIB_SHARED_DATA"
CACHE_ENV = "DLIB_CACHE_DIR"


def shared_data_root() -> Path:
    """``../shared/data`` beside the repository (or ``$DLIB_SHARED_DATA``); it may not exist."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO_ROOT.parent / "shared" / "data"))


def shared_voc_root() -> Path | None:
    """The read-only VOC 2012 train-split subset in ``../shared/data``, or None when absent."""
    root = shared_data_root() / "voc2012-train-subset" / "VOC2012"
    return root if (root / "JPEGImages").is_dir() else None


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` as it should be printed or recorded: relative to the repository (POSIX separators).

    A path outside the repository climbs out of it (``../shared/data/...``), so no output names the machine's
    folders; a relative ``path`` is taken from the current directory. Where no relative path exists (another
    drive on Windows) the file name alone is returned.
    """
    target = Path(path).absolute()
    try:
        return Path(os.path.relpath(target, REPO_ROOT.absolute())).as_posix()
    except ValueError:
        return target.name


def cache_root() -> Path:
    """Local cache folder: ``$DLIB_CACHE_DIR`` if set, else ``<repo>/.cache`` (git-ignored)."""
    return Path(os.environ.get(CACHE_ENV, REPO_ROOT / ".cache"))


# --------------------------------------------------------------------------------------------
# Writing atomically
# --------------------------------------------------------------------------------------------

def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Temporaries are ".dlib-tmp.<name>.<pid>.<random>.tmp": a prefix no user chooses, so the sweep below can never
# remove a user's own ".<something>.<pid>.<x>.tmp".
TMP_PREFIX = "dlib-tmp."
_TMP = re.compile(r"^\." + re.escape(TMP_PREFIX) + r".+\.(\d+)\.[^.]+\.tmp$")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes left in ``path``'s folder; returns the removed paths.

    Only the project's temporaries (``.dlib-tmp.<name>.<pid>.<random>.tmp``) are looked at: one whose writer
    process is gone is stale, one of a live process is a write in progress and stays.
    """
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{TMP_PREFIX}*.tmp"):
        match = _TMP.match(tmp.name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue  # a write in progress
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename.

    The file gets the mode any file the user writes gets (0666 less the umask; ``mkstemp`` alone
    would leave 0600), and temporaries left by earlier killed writes of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{TMP_PREFIX}{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a read-only folder: name the file to be written
        raise type(err)(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise type(err)(err.errno, err.strerror, str(path)) from None  # name the file written, not the temporary
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# Images, labels, probability maps, JSON
# --------------------------------------------------------------------------------------------


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


def probs_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The (C, H, W) shape of a cached softmax, read from the .npy header alone (nothing else is decompressed)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("probs.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, _ = read_header(fh)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"cached probabilities {path} are truncated or corrupt ({type(err).__name__}: {err}); "
                         "delete the file and write it again with 'python -m dlib evaluate --cache'") from None
    return tuple(shape)


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
