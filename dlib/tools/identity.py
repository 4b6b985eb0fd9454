"""What produced a result, for the evaluate and crf commands: the architecture a checkpoint fixes, the scores
file's name (what was evaluated) and a short key of the source (which run), so that two evaluations never
overwrite each other."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dlib.core.config import convert_value

PROBS_SOURCE = ".dlib-source.json"  # in an evaluate --cache folder: the identity of the run that wrote it

# What a checkpoint fixes about the network: evaluate rebuilds exactly that.
_ARCHITECTURE_KEYS = ("model.name", "model.width", "model.num_classes")


def model_overrides(path: Path, saved: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` plus the checkpoint's model name, width and classes; a conflicting override is an error."""
    out = dict(overrides)
    model = saved.get("config", {}).get("model", {})
    for key in _ARCHITECTURE_KEYS:
        name = key.split(".", 1)[1]
        if name not in model:
            continue
        recorded = convert_value(key, model[name])
        if key in overrides and convert_value(key, overrides[key]) != recorded:
            raise ValueError(f"--set {key}={overrides[key]} conflicts with checkpoint {path}, which was trained with "
                             f"{key}={recorded}; evaluate takes the model from the checkpoint: drop the --set")
        out[key] = recorded
    return out


def scores_name(split: str, *, msc: bool = False, flip: bool = False, max_images: int | None = None,
                crf: dict[str, float] | None = None) -> str:
    """The scores file's name: what was evaluated, so that two evaluations of one run never overwrite each other.

    ``scores_val``, ``scores_val_msc_flip``, ``scores_val_first50``, ``scores_val_crf_w1-4_ta-67_tb-3_w2-3_tg-3_it-10``.
    """
    parts = [f"scores_{split}"] + (["msc"] if msc else []) + (["flip"] if flip else [])
    if max_images is not None:
        parts.append(f"first{max_images}")
    if crf is not None:
        short = {"w1": "w1", "theta_alpha": "ta", "theta_beta": "tb", "w2": "w2", "theta_gamma": "tg",
                 "iterations": "it"}
        parts.append("crf_" + "_".join(f"{short.get(k, k)}-{v:g}" for k, v in crf.items()))
    return "_".join(parts)


def source_key(path: Path, iteration: int | None = None, extra: Any = None) -> str:
    """A short key of what produced a result: sha256 of the resolved path (and ``extra``, JSON; 8 hex digits) and
    the iteration.

    Two runs whose folders share a name (``/x/a/base``, ``/x/b/base``) get different keys, so their scores
    land in different files; the full identity goes into each file's provenance.
    """
    text = str(path.resolve()) + ("" if extra is None else json.dumps(extra, sort_keys=True))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return digest if iteration is None else f"{digest}-it{iteration}"
