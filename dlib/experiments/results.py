"""Write metrics, tables and figures under ``results/<profile>/<NN_name>/``, atomically, with provenance.

Every file is written to a temporary name in the same folder and renamed into place, so a reader
(or an interrupted run) never sees half a file. Every JSON carries the provenance a reader needs
to trust a number: the config, the seed, the git commit, the device, library versions, wall time.

    >>> w = Results(cfg, "01_atrous_1d")          # doctest: +SKIP
    >>> w.json("check", {"max_abs_error": 0.0})   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlib.core.config import Config
from dlib.core.io import REPO_ROOT, atomic_write_text
from dlib.core.viz import FIGURE_DPI, save_figure
from dlib.crf.dense import backend_version

RESULTS_ENV = "DLIB_RESULTS_DIR"  # tests point this at a temporary folder
ABLATION_FOLDER = "06_ablation"  # notebook 06's folder: results/<profile>/06_ablation and its trainings' cache


def results_root() -> Path:
    """The top results folder: ``$DLIB_RESULTS_DIR`` if set, else ``<repo>/results``."""
    return Path(os.environ.get(RESULTS_ENV, REPO_ROOT / "results"))


def git_commit(cwd: str | os.PathLike = REPO_ROOT, *, outputs: tuple[str, ...] = ("results",)) -> str:
    """The current git commit (with ``-dirty`` if tracked files outside ``outputs`` changed), or ``"unknown"``.

    Changes under ``outputs`` are the run's own outputs (results/cpu is committed; the stand-in builds write
    dlib/weights), not a code change.
    """
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){o}" for o in outputs)], cwd=cwd, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Libraries whose version is not in pyproject.toml's lists but which every run uses.
_ALWAYS_RECORDED = ("numpy", "torch", "torchvision", "pydensecrf2")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def declared_distributions(pyproject: str | os.PathLike = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The distributions the project declares (``dependencies`` and every optional extra but ``dev``).

    Read from ``pyproject.toml`` (the one list of dependencies); where it is absent (an installed copy),
    from the installed ``deeplab-replication`` metadata. Always includes numpy, torch, torchvision, pydensecrf2.
    """
    import tomllib
    from importlib import metadata

    requirements: list[str] = []
    try:
        project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8")).get("project", {})
        requirements += project.get("dependencies", [])
        for extra, reqs in project.get("optional-dependencies", {}).items():
            requirements += reqs if extra != "dev" else []
    except (OSError, ValueError):
        try:
            requirements += [r for r in metadata.requires("deeplab-replication") or [] if "extra == \"dev\"" not in r]
        except metadata.PackageNotFoundError:
            pass
    names = [m.group(1) for m in map(_REQUIREMENT_NAME.match, requirements) if m]
    return sorted({n.lower().replace("_", "-") for n in (*names, *_ALWAYS_RECORDED)})


def library_versions() -> dict[str, str]:
    """Python's version and each declared distribution's installed version (by package metadata).

    Keys are distribution names as pip knows them (``pydensecrf2``, imported as ``pydensecrf``);
    a distribution that is not installed is left out.
    """
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in declared_distributions():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an optional library that is not installed here
    return versions


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        threads = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        threads = os.cpu_count()
    return f"cpu:{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {threads} torch threads)"


def crf_backend(cfg: Config) -> dict[str, str]:
    """The dense CRF backend cfg.crf.backend resolves to here, and its version (dlib.crf.backend_version)."""
    try:
        return backend_version(cfg.crf.backend)
    except (ImportError, ValueError) as err:
        return {"backend": cfg.crf.backend, "version": f"unavailable: {err}"}


def provenance(cfg: Config, started: float | None = None) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "profile": cfg.profile,
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "device": device_description(),
        "versions": library_versions(),
        "crf_backend": crf_backend(cfg),
        "wall_time_s": None if started is None else round(time.time() - started, 3),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and paths into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return jsonable(value.tolist())
    if isinstance(value, float) and value != value:
        return None  # NaN is not JSON
    return value


class Results:
    """The results folder of one notebook (or command) for one profile."""

    def __init__(self, cfg: Config, name: str, root: str | os.PathLike | None = None):
        self.cfg = cfg
        self.name = name
        self.dir = Path(root) if root is not None else results_root() / cfg.profile / name
        self.started = time.time()
        self.identity: dict[str, Any] | None = None  # what produced these results (a run, a checkpoint, ...)

    def path(self, filename: str) -> Path:
        return self.dir / filename

    def json(self, name: str, data: Mapping[str, Any]) -> Path:
        """Write ``<name>.json`` = ``{"data": data, "provenance": {...}}`` (with ``identity`` when set)."""
        prov = provenance(self.cfg, self.started)
        if self.identity is not None:
            prov["identity"] = jsonable(self.identity)
        payload = {"data": jsonable(data), "provenance": prov}
        return atomic_write_text(self.path(f"{name}.json"), json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def csv(self, name: str, rows: Any) -> Path:
        """Write ``<name>.csv`` from a pandas DataFrame or an iterable of dicts (same keys)."""
        if hasattr(rows, "to_csv"):
            text = rows.to_csv(index=False)
        else:
            rows = list(rows)
            buf = io.StringIO()
            if rows:
                writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
                writer.writeheader()
                writer.writerows(jsonable(r) for r in rows)
            text = buf.getvalue()
        return atomic_write_text(self.path(f"{name}.csv"), text)

    def figure(self, name: str, fig: Any, dpi: int | None = None) -> Path:
        """Save a matplotlib figure as ``<name>.png`` and a vector copy beside it
        (:func:`dlib.core.viz.save_figure`, which checks it reads right on its own for this profile)."""
        return save_figure(fig, self.path(f"{name}.png"), profile=self.cfg.profile, dpi=dpi or FIGURE_DPI)

