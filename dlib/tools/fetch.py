"""Move a file from the network to disk safely: resumable HTTP, checksums, and extraction that stays inside its folder.

The mechanics under ``python -m dlib download`` (dlib.tools.download says *what* to fetch: VOC, SBD, the weights):

* :func:`fetch`: bytes arrive in ``<file>.part``; an interrupted transfer continues with an HTTP ``Range``
  request, within one call (a few retries) and across calls.
* :func:`verify`: the whole file's md5/sha256 against the published value, before anything is extracted.
* :func:`safe_extract`: every member of a tar or zip archive is checked first; an absolute path, a ``..``
  component, a link that points outside, or a device file refuses the whole archive and nothing is written.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlib.core.errors import UserError

CHUNK = 1 << 20


class DownloadError(RuntimeError, UserError):
    """A download, checksum or extraction that failed; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Resource:
    """One file to fetch: its address, the name it is saved under and the checksums published for it."""

    name: str  # what `python -m dlib download` calls it
    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = "none published"  # where the checksum comes from
    extract: bool = True  # an archive to unpack into the target folder
    note: str = ""


# --------------------------------------------------------------------------------------------
# Resumable HTTP
# --------------------------------------------------------------------------------------------

class _Progress:
    """One line on stderr, rewritten at most once a second: name, MB done / total, percent, speed."""

    def __init__(self, name: str, enabled: bool):
        self.name, self.enabled, self.last, self.start = name, enabled, 0.0, time.monotonic()

    def __call__(self, done: int, total: int | None, first: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 1.0):
            return
        self.last = now
        speed = (done - first) / max(now - self.start, 1e-6) / 1e6
        size = f"{done / 1e6:.1f} MB"
        if total:
            size = f"{done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done / total:.0f}%)"
        print(f"\r{self.name}: {size}, {speed:.1f} MB/s", end="\n" if final else "", file=sys.stderr, flush=True)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "dlib-download/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch(url: str, dest: str | os.PathLike, *, retries: int = 3, timeout: float = 60.0, progress: bool = True,
          hint: str = "", backoff: float = 2.0) -> Path:
    """Download ``url`` to ``dest``, continuing ``<dest>.part`` when a transfer was interrupted.

    A server that honours ``Range`` (206) continues from the bytes already there; one that ignores it (200)
    starts over. A connection that drops after some bytes is retried up to ``retries`` times within this
    call; the ``.part`` stays for the next call otherwise. Failure raises :class:`DownloadError` naming the
    address and ``hint`` (how to fetch the file by hand).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    show = _Progress(dest.name, progress)
    failures = 0
    while True:
        have = part.stat().st_size if part.is_file() else 0
        got = 0
        try:
            with _open(url, have, timeout) as resp:
                have = _resumed_at(resp, have, url, part)
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as fh:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        got += len(chunk)
                        show(have + got, total, have)
                if total is not None and have + got < total:
                    raise http.client.IncompleteRead(b"", total - have - got)
            show(have + got, total, have, final=True)
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # nothing left to send: the .part is whole (the checksum decides)
                os.replace(part, dest)
                return dest
            raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}{hint}") from None
        except DownloadError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            failures += 1
            if got == 0 or failures > retries:  # no connection at all, or it keeps dropping
                reason = getattr(err, "reason", None) or err
                kept = f" ({part.stat().st_size} bytes kept in {part}; run again to continue)" if part.is_file() else ""
                raise DownloadError(f"could not download {url}: {type(err).__name__}: {reason}{kept}{hint}") from None
            time.sleep(backoff * failures)  # seconds before resuming


def _resumed_at(resp: Any, have: int, url: str, part: Path) -> int:
    """Where the response continues ``part``: at ``have`` when the server answered the Range request (206) from
    there, at 0 when it sends the whole file (first request, or Range ignored: start over)."""
    if not (have and resp.status == 206):
        return 0
    start = _range_start(resp.headers.get("Content-Range"))
    if start != have:
        raise DownloadError(f"{url} answered a resume request for byte {have} with byte {start}; "
                            f"delete {part} and run again")
    return have


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(content_range.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------

def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, resource: Resource) -> None:
    """Compare ``path`` with every checksum ``resource`` publishes; :class:`DownloadError` on a mismatch."""
    for algorithm in ("md5", "sha256"):
        expected = getattr(resource, algorithm)
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual != expected.lower():
            raise DownloadError(f"{path} has {algorithm} {actual}, but {resource.url} is published with {expected} "
                                f"({resource.checksum_source}): the file is damaged or not the one expected; "
                                "nothing was extracted")


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------

def _inside(name: str) -> str | None:
    """``name`` normalised relative to the target folder, or None when it is absolute or climbs out."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):  # /abs, \\share, C:
        return None
    if ".." in name.replace("\\", "/").split("/"):
        return None
    return posixpath.normpath(name)


def _check_tar(members: Sequence[tarfile.TarInfo], archive: Path) -> None:
    for m in members:
        where = f"{archive}: member {m.name!r}"
        if _inside(m.name) is None:
            raise DownloadError(f"{where} would be written outside the target folder (absolute path or '..'); "
                                "refusing the whole archive, nothing was extracted")
        if m.issym() or m.islnk():
            # a symlink is relative to its own folder, a hard link to the archive's root
            base = posixpath.dirname(m.name) if m.issym() else ""
            target = m.linkname
            if target.startswith("/") or _inside(posixpath.normpath(posixpath.join(base, target))) is None:
                raise DownloadError(f"{where} is a link to {target!r}, outside the target folder; refusing the "
                                    "whole archive, nothing was extracted")
        elif not (m.isfile() or m.isdir()):
            raise DownloadError(f"{where} is a device, FIFO or other special file; refusing the whole archive, "
                                "nothing was extracted")


def _check_zip(infos: Sequence[zipfile.ZipInfo], archive: Path) -> None:
    for info in infos:
        where = f"{archive}: member {info.filename!r}"
        if _inside(info.filename.rstrip("/") or info.filename) is None:
            raise DownloadError(f"{where} would be written outside the target folder (absolute path or '..'); "
                                "refusing the whole archive, nothing was extracted")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DownloadError(f"{where} is a symbolic link; refusing the whole archive, nothing was extracted")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Unpack a tar (any compression) or zip archive into ``target``; returns the top-level names.

    Every member is checked before anything is written: absolute paths, ``..``, links whose target lies
    outside ``target`` and special files refuse the whole archive (:class:`DownloadError`). Tar extraction
    also runs under tarfile's ``data`` filter (no set-uid bits, no links out), a second line of defence.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_zip(infos, archive)
            zf.extractall(target)
            names = [i.filename for i in infos]
    else:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                _check_tar(members, archive)
                tf.extractall(target, members=members, filter="data")
                names = [m.name for m in members]
        except tarfile.TarError as err:
            raise DownloadError(f"{archive} is not a readable tar or zip archive ({err}); delete it and download "
                                "again") from None
    return sorted({posixpath.normpath(n).split("/")[0] for n in names if n.strip("/")})
