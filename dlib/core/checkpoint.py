"""Training checkpoints: write, find, read and resume; the one reader of PyTorch files.

A run folder keeps ``checkpoints/ckpt_<iteration>.pt`` (written atomically, the newest
``train.keep_checkpoints`` kept), each a dict of plain data:

    {"iteration": int, "model": state dict, "optimizer": state dict, "config": Config.to_dict(),
     "rng": {"torch": ByteTensor, "numpy": {...}, "python": [...], "cuda": [ByteTensor, ...]}, "format": 2}

Format 2 stores the numpy and Python RNG states as tensors, lists and numbers, so a checkpoint reads with
``torch.load(path, weights_only=True)``, which unpickles no code. Format 1 (written before it) kept numpy's
RNG state as a numpy array and is refused like any other file that holds Python objects.

    >>> state = read_checkpoint("runs/aspp/checkpoints/ckpt_0000100.pt")     # doctest: +SKIP
    >>> start = resume("runs/aspp", cfg, model, optimizer)                  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlib.core.config import Config
from dlib.core.io import atomic_write_bytes

CHECKPOINT_DIR = "checkpoints"
FORMAT = 2  # every RNG state as tensors, lists and numbers (format 1, with numpy's own arrays, is no longer read)
_CKPT = re.compile(r"^ckpt_(\d{7})\.pt$")

# Config keys that may change between an interrupted run and its resumption.
RESUMABLE_KEYS = ("train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.iter_size",
                  "data.loader_workers", "device", "eval.", "crf.", "model.pretrained")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file."""


class UnsafeFileError(CheckpointError):
    """A PyTorch file that pickles Python objects other than data; ``names`` lists them."""

    def __init__(self, message: str, names: Sequence[str] = ()):
        super().__init__(message)
        self.names = list(names)


# --------------------------------------------------------------------------------------------
# The one reader
# --------------------------------------------------------------------------------------------

def _check_torch_file(path: Path) -> None:
    """Refuse, by its first bytes, a file that is no PyTorch file at all (neither torch.save's zip nor a pickle)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a PyTorch file (it starts with {head!r}, neither torch.save's zip nor "
                              "a pickle); give a .pt/.pth file written by torch.save: a checkpoint or a state dict")


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, containers, numbers, text.

    Every PyTorch file of the project (checkpoints, pretrained weights, the shipped stand-ins) is read
    here. Unpickling an arbitrary file can run any code it names, so nothing is read with
    ``weights_only=False``. Raises
    :class:`UnsafeFileError` naming other Python objects, :class:`CheckpointError` for an unreadable file.
    """
    path = Path(path)
    _check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only used to name the objects in the message
            found = []
        names = sorted(found)  # torch finds them in no fixed order
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise UnsafeFileError(
            f"{path} holds Python objects other than tensors, numbers and text"
            f"{' (' + shown + ')' if names else ''}; they are refused because unpickling them could "
            "run code (torch.load(weights_only=True)). Save only the state dict, e.g. in a Python session you "
            "trust: torch.save(torch.load(PATH, weights_only=False)['model'], 'weights.pt')", names) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, EOF, not a torch file: all mean "unreadable"
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {first}); it is probably truncated "
                              "(a write killed mid-way or a full disk) or not a PyTorch file") from None


# --------------------------------------------------------------------------------------------
# RNG states as plain data
# --------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """torch, numpy, Python (and CUDA) RNG states as tensors, lists and numbers (format 2)."""
    key, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["key"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Writing, finding, reading
# --------------------------------------------------------------------------------------------

def save_checkpoint(out_dir: str | Path, iteration: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: Config, keep: int = 2) -> Path:
    """Write ``checkpoints/ckpt_<iteration>.pt`` atomically and keep the newest ``keep``.

    ``model``: the bare network (dlib.nets.network.unwrap), so the keys carry no wrapper prefix.
    """
    payload = {"iteration": iteration, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "rng": rng_state(), "config": cfg.to_dict(), "format": FORMAT}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = atomic_write_bytes(Path(out_dir) / CHECKPOINT_DIR / f"ckpt_{iteration:07d}.pt", buf.getvalue())
    for old in checkpoints(out_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def checkpoints(out_dir: str | Path) -> list[Path]:
    """The run folder's ``checkpoints/ckpt_<iteration>.pt`` files, oldest first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(p for p in folder.glob("ckpt_*.pt") if _CKPT.match(p.name)) if folder.is_dir() else []


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint file of a run folder (intact or not; see :func:`load_latest_checkpoint`)."""
    found = checkpoints(out_dir)
    return found[-1] if found else None


def remove_checkpoints(out_dir: str | Path) -> None:
    """Delete a run folder's checkpoints (a fresh start in the same folder)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    for old in folder.glob("ckpt_*.pt") if folder.is_dir() else []:
        old.unlink()


def read_checkpoint(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """A checkpoint's dict (:func:`load_file`); an unreadable file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = load_file(path)
    except UnsafeFileError:
        raise
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of tensors")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; "
                              "it was not written by dlib.training.train")
    return state


def load_latest_checkpoint(out_dir: str | Path, required: Sequence[str] = ("model",)) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint of ``out_dir`` that can be read; None when there is none.

    A corrupt newer checkpoint is reported (a warning naming it) and skipped, so training resumes
    and evaluation runs from the newest intact one; if every checkpoint is corrupt the error names them.
    """
    bad: list[CheckpointError] = []
    for path in reversed(checkpoints(out_dir)):
        try:
            state = read_checkpoint(path, required)
        except CheckpointError as err:
            bad.append(err)
            continue
        if bad:
            warnings.warn(f"{'; '.join(str(b) for b in bad)}. Using the newest intact checkpoint, {path.name} "
                          f"(iteration {state.get('iteration', '?')}); delete the corrupt file(s) when convenient",
                          stacklevel=2)
        return path, state
    if bad:
        raise CheckpointError(f"no intact checkpoint in {Path(out_dir) / CHECKPOINT_DIR}: "
                              f"{'; '.join(str(b) for b in bad)}. "
                              "Start over with --fresh (python -m dlib train; "
                              "resume=False in dlib.training.train.train)")
    return None


# --------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------

def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Config keys that differ between a saved run and ``cfg``, except :data:`RESUMABLE_KEYS`."""
    a, b = _flat(saved), _flat(cfg.to_dict())
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not any(k == r or (r.endswith(".") and k.startswith(r))
                                                                for r in RESUMABLE_KEYS)]


def resume(out_dir: str | Path, cfg: Config, model: nn.Module,
           optimizer: torch.optim.Optimizer) -> tuple[int, Path | None]:
    """Continue a run from its newest intact checkpoint: (iteration, checkpoint path), (0, None) when none.

    Loads the bare network's and the optimizer's states and the RNG states, after checking that the
    run was made with the same config (:func:`config_diff`).
    """
    found = load_latest_checkpoint(out_dir, ("model", "optimizer", "rng", "iteration", "config"))
    if found is None:
        return 0, None
    path, state = found
    diff = config_diff(state["config"], cfg)
    if diff:
        raise ValueError(f"{out_dir} holds a run with a different config ({', '.join(diff[:6])}); "
                         "use another --out, or start over with --fresh (python -m dlib train; resume=False in "
                         "dlib.training.train.train)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return int(state["iteration"]), path
