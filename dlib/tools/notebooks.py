"""Execute the numbered notebooks with papermill on a profile (used by run_all.sh and the tests).

    python -m dlib.tools.notebooks --profile cpu --only 01 02
    python -m dlib.tools.notebooks --profile gpu --set data.voc_root=/data/VOCdevkit --set data.sbd_root=/data/SBD

Every notebook has a ``CONFIG = {}`` parameter: ``--set`` fills it with dotted-key config overrides.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlib.core.config import DEFAULT_PROFILE, PROFILES
from dlib.core.errors import USER_ERRORS, one_line
from dlib.core.io import REPO_ROOT
from dlib.experiments.results import results_root

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook and the failing cell."""


def discover(folder: Path = NOTEBOOK_DIR) -> dict[str, Path]:
    """``{"01": Path(".../01_atrous_1d.ipynb"), ...}`` for every numbered notebook, in order."""
    found = {}
    for path in sorted(Path(folder).glob("*.ipynb")):
        match = _NAME.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


def select(only: Sequence[str] | None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks named by number (``["1", "02"]``) or all of them; unknown numbers are an error."""
    available = discover(folder)
    if not only:
        return list(available.values())
    chosen = []
    for item in only:
        for number in str(item).replace(",", " ").split():
            key = number.zfill(2)
            if key not in available:
                raise ValueError(f"unknown notebook {number!r}; valid numbers are: "
                                 + ", ".join(f"{k} ({p.stem})" for k, p in available.items()))
            chosen.append(available[key])
    return chosen


INCOMPLETE = "INCOMPLETE"  # marker file: this results folder holds an interrupted or failed run's files
RUNNING_ENV = "DLIB_RUNNING_NOTEBOOK"  # set for the kernel: the notebook being run (its own folder is marked)


def incomplete_marker(results_dir: Path) -> Path:
    """The marker file of a notebook's results folder (present while a run is unfinished or after it failed)."""
    return Path(results_dir) / INCOMPLETE


def _mark_incomplete(paths: Sequence[Path], notebook: Path, output: Path, profile: str) -> None:
    from dlib.core.io import atomic_write_text

    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = (f"{notebook.name} started at {started} and has not completed: the files beside this marker may mix "
            f"this run's and an earlier run's. The (partial) executed copy is {output}. Re-run the notebook "
            f"(python -m dlib.tools.notebooks --profile {profile} --only {notebook.name[:2]}); a completed run removes "
            "this file.\n")
    for path in paths:
        atomic_write_text(path, text)


def _dead_kernel_cell(output: Path) -> str:
    """The index of the cell that was running when the kernel died (the last one papermill started), or '?'."""
    try:
        import nbformat

        nb = nbformat.read(output, as_version=4)
    except Exception:  # noqa: BLE001 - no partial copy: the cell is unknown
        return "?"
    started = [i for i, c in enumerate(nb.cells) if (c.get("metadata", {}).get("papermill") or {}).get("start_time")]
    return str(started[-1]) if started else "?"


def relative_papermill_paths(executed: Path) -> None:
    """Record the input and output paths in an executed copy's papermill metadata relative to the repository.

    papermill writes the absolute paths it was given; they would name this machine's folders.
    """
    import nbformat

    from dlib.core.io import atomic_write_text, repo_relative

    executed = Path(executed)
    if not executed.is_file():
        return
    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = repo_relative(meta[key])
    atomic_write_text(executed, nbformat.writes(nb))


def _ipc_kernel(folder: str) -> dict[str, Any]:
    """nbclient's kernel manager over IPC: Unix sockets in ``folder`` (private to this run) instead of TCP ports on
    localhost, so no port is open and ipykernel does not warn that TCP traffic is unencrypted. Windows has no IPC
    transport: it keeps TCP (and the warning)."""
    if os.name == "nt":
        return {}
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.transport = "ipc"
            self.ip = os.path.join(folder, "kernel")  # socket files kernel-<n>

    return {"kernel_manager_class": IPCKernelManager}


def execute(notebook: Path, profile: str, *, seed: int = 0, output_dir: Path | None = None,
            parameters: dict | None = None, log_output: bool = False) -> Path:
    """Run one notebook with papermill; returns the executed copy's path.

    The executed copy goes to ``results/<profile>/notebooks/`` (or ``output_dir``), and is kept even
    when a cell fails; the error then names the notebook and the failing cell. While the notebook
    runs, and after it failed or was interrupted, its results folder ``results/<profile>/<NN_name>/``
    holds an ``INCOMPLETE`` marker (and the executed copy a ``<NN_name>.INCOMPLETE`` beside it);
    the report refuses a marked folder. A completed run removes both markers.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}")
    notebook = Path(notebook)
    out_dir = Path(output_dir) if output_dir else results_root() / profile / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    results_dir = results_root() / profile / notebook.stem
    markers = [incomplete_marker(results_dir), out_dir / f"{notebook.stem}.{INCOMPLETE}"]
    _mark_incomplete(markers, notebook, output, profile)
    params = {"PROFILE": profile, "SEED": seed, **(parameters or {})}
    previous = os.environ.get(RUNNING_ENV)
    os.environ[RUNNING_ENV] = notebook.stem  # the kernel inherits it: the report may read its own marked folder
    try:
        with tempfile.TemporaryDirectory(prefix="dlib-kernel-") as sockets:
            pm.execute_notebook(str(notebook), str(output), parameters=params, cwd=str(notebook.parent),
                                kernel_name="python3", progress_bar=False, log_output=log_output,
                                **_ipc_kernel(sockets))
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(
            f"notebook {notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
            f"{err.ename}: {err.evalue}\n  partial executed copy kept at {output}") from None
    except DeadKernelError:
        raise NotebookFailed(
            f"notebook {notebook.name[:2]}, cell {_dead_kernel_cell(output)}: the kernel died (out of memory?) "
            f"while running {notebook.name}\n  partial executed copy kept at {output}") from None
    finally:
        relative_papermill_paths(output)
        if previous is None:
            os.environ.pop(RUNNING_ENV, None)
        else:
            os.environ[RUNNING_ENV] = previous
    for marker in markers:
        marker.unlink(missing_ok=True)
    if results_dir.is_dir() and not any(results_dir.iterdir()):
        results_dir.rmdir()  # the notebook writes no results: leave no empty folder behind
    return output


def record_time(profile: str, notebook: str, seconds: float) -> Path:
    """Add one notebook's wall time to ``results/<profile>/notebook_times.csv`` (the README's timing table).

    The machine and the cache state are recorded too: a notebook re-run over cached trainings is faster.
    """
    import csv
    import io
    import platform

    from dlib.core.io import atomic_write_text

    path = results_root() / profile / "notebook_times.csv"
    fields = ["notebook", "seconds", "finished_utc", "machine", "cpus"]
    rows = []
    if path.is_file():
        rows = [r for r in csv.DictReader(io.StringIO(path.read_text())) if r.get("notebook") != notebook]
    rows.append({"notebook": notebook, "seconds": f"{seconds:.1f}",
                 "finished_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                 "machine": platform.machine(), "cpus": str(os.cpu_count())})
    rows.sort(key=lambda r: r["notebook"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlib.tools.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers, e.g. --only 01 02")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help="config override passed to every notebook (its CONFIG parameter), repeatable: "
                             "--set data.voc_root=/data/VOCdevkit --set data.sbd_root=/data/benchmark_RELEASE")
    args = parser.parse_args(argv)
    if args.profile not in PROFILES:
        print(f"error: unknown profile {args.profile!r}; valid profiles are {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    try:
        notebooks = select(args.only)
        from dlib.core.config import parse_overrides, resolve

        overrides = parse_overrides(args.overrides)
        from dlib.nets.models import check_names

        # unknown keys, bad values and unknown model names fail here, before any notebook runs
        check_names(resolve(args.profile, overrides=overrides))
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    total = time.time()
    for nb in notebooks:
        start = time.time()
        print(f"[{args.profile}] {nb.name} ...", flush=True)
        try:
            out = execute(nb, args.profile, seed=args.seed, parameters={"CONFIG": overrides} if overrides else None)
        except NotebookFailed as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        record_time(args.profile, nb.stem, time.time() - start)
        shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
        print(f"[{args.profile}] {nb.name} done in {time.time() - start:.1f} s -> {shown}", flush=True)
    print(f"[{args.profile}] {len(notebooks)} notebook(s) in {time.time() - total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
