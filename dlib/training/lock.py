"""A run folder's lock: one training writes a folder at a time.

``<folder>/.dlib-lock.json`` holds the holder's pid, host and start time. It is created with ``O_EXCL`` (only one
process can create it); a lock whose pid is dead on this host is stale and taken over; the holder removes it
when it stops, however it stops (a SIGKILL leaves a stale lock, which the next training takes over).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlib.core.errors import UserError
from dlib.core.io import pid_alive

LOCK_NAME = ".dlib-lock.json"


class RunLocked(RuntimeError, UserError):
    """The folder is being written by another live training; the message names it."""


def _holder(path: Path) -> dict[str, Any] | None:
    """The lock's content, or None when it is unreadable (a holder killed while writing it)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _stale(holder: dict[str, Any] | None) -> bool:
    if holder is None:
        return True
    return holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"])


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def acquire(folder: str | os.PathLike) -> Path:
    """Lock ``folder`` (created if missing) for this process; raise :class:`RunLocked` naming a live holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    mine = json.dumps(_me())
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not _stale(holder):
                raise RunLocked(
                    f"run folder {folder} is being written by another training (pid {holder['pid']} on "
                    f"{holder.get('host')}, started {holder.get('started')}; lock {path}); wait for it, stop it, or "
                    "give this training another --out (delete the lock only if that process is gone)") from None
            path.unlink(missing_ok=True)  # stale: its holder is dead; take it over
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(mine)
        return path
    raise RunLocked(f"run folder {folder}: could not take its lock {path}; another training keeps taking it")


def release(path: Path) -> None:
    """Remove the lock if this process still holds it."""
    holder = _holder(path)
    if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(folder: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block (``enabled=False``: no lock, e.g. non-main DDP ranks)."""
    if not enabled:
        yield
        return
    created = not Path(folder).exists()
    path = acquire(folder)
    try:
        yield
    finally:
        release(path)
        if created and not any(path.parent.iterdir()):
            path.parent.rmdir()  # a folder made only for the lock (the training stopped before writing) goes too
