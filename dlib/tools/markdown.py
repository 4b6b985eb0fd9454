"""Markdown for the report and the README: numbers rounded for reading, pipe tables, anchors, links.

GitHub renders the report (``results/<profile>/report/README.md``) in place, so every helper here
produces what GitHub's Markdown understands: pipe tables with escaped ``|``, heading anchors as GitHub
makes them, and relative links (with ``%20`` for spaces) that resolve from the page's folder.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_FLOAT = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)


def format_number(value: Any) -> str:
    """A table cell: integers as they are, floats rounded by magnitude, trailing zeros dropped.

    ``0.76254 -> "0.7625"``, ``56.5017 -> "56.5"``, ``134.347 -> "134.3"``, ``23197.19 -> "23197"``,
    ``3.0 -> "3"``, ``""``/NaN -> ``""``; anything that is not a number is returned as text.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    text = str(value).strip()
    if isinstance(value, int) or re.fullmatch(r"[+-]?\d+", text):
        return text
    if not isinstance(value, float) and not _FLOAT.fullmatch(text):
        return text  # not a plain decimal number (an id such as 2007_000170 stays as it is)
    number = float(text)
    if math.isnan(number):
        return ""
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    magnitude = abs(number)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{number:.0f}"
    if magnitude >= 100:
        out = f"{number:.1f}"
    elif magnitude >= 1:
        out = f"{number:.2f}"
    elif magnitude >= 1e-3:
        out = f"{number:.4g}"
        if "e" in out:  # .4g may still pick exponent form near 1e-3
            out = f"{number:.6f}"
    else:
        return f"{number:.2e}"
    return out.rstrip("0").rstrip(".") if "." in out else out


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numbers: bool = True) -> str:
    """A GitHub pipe table; cells are rounded with :func:`format_number` when ``numbers``.

    Why not ``pandas.DataFrame.to_markdown``: it needs ``tabulate``, a dependency nothing else uses, and pads
    every column to its widest cell. Measured on notebook 06's ``table4.csv`` (7 rows, 12 columns): 3,050 bytes
    and a longest line of 338 characters against 1,674 and 218 here, so every README and report diff would
    touch whole tables when one cell changes.
    """
    header = [_cell(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        row = list(row) + [""] * (len(header) - len(row))
        cells = [_cell(format_number(c) if numbers else c) for c in row[:len(header)]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def github_slug(heading: str, seen: dict[str, int] | None = None) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_\[\]]", lambda m: "_" if m.group(0) == "_" else "", heading)
    slug = re.sub(r"[^\w\- ]", "", text.lower(), flags=re.UNICODE).replace(" ", "-")
    if seen is not None:
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            slug = f"{slug}-{count}"
    return slug


def rel(target: Path, start: Path) -> str:
    """``target`` relative to the folder ``start``, with forward slashes."""
    return Path(os.path.relpath(target, start)).as_posix()


def link(text: str, target: Path, start: Path) -> str:
    """A Markdown link to ``target`` from a page in the folder ``start``."""
    return f"[{text}]({rel(target, start).replace(' ', '%20')})"


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV file's header and rows, as text; ``([], [])`` when the file is empty or absent."""
    if not Path(path).is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return (rows[0], rows[1:]) if rows else ([], [])


def to_float(value: Any) -> float | None:
    """``value`` as a float, or None for an empty cell, text or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
