"""One report of every notebook's results: ``results/<profile>/report/README.md``.

The report gathers what the notebooks wrote under ``results/<profile>/<NN_name>/`` (CSV tables,
figures, JSON metrics with provenance) into one Markdown page that GitHub renders in place:

* a headline section, *Paper vs measured* (:mod:`dlib.tools.headline`): DeepLab v2's Table 4 (ResNet-101) and
  Table 3 (VGG-16) mIoU beside our measured mean +- std over seeds (notebook 06's CSVs);
* where and when the numbers were produced (git commit, device, every library version, seeds), from
  the provenance every JSON carries (:func:`dlib.experiments.results.provenance`);
* one section per notebook: its title, links to the executed notebook and the raw files, its
  tables as Markdown, and its figures **linked where the notebook wrote them** (with the vector copy
  beside each PNG, when there is one). Nothing is copied: each figure is stored once.

The page carries no build timestamp: rebuilding from unchanged results gives identical bytes.
Markdown helpers live in :mod:`dlib.tools.markdown`, the README's generated blocks in :mod:`dlib.tools.readme`.

    python -m dlib.tools.report --profile cpu [--readme README.md]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlib.core.config import PROFILES, resolve
from dlib.core.io import atomic_write_text, read_json
from dlib.experiments.results import ABLATION_FOLDER, results_root
from dlib.tools.headline import HEADLINE_TABLES, headline_section
from dlib.tools.markdown import format_number, github_slug, link, markdown_table, read_csv, rel
from dlib.tools.readme import update_readme
from dlib.tools.results_tree import REPORT_DIR, Folder, IncompleteResults, folders, provenances, refuse_incomplete

LEGACY_FIGURE_DIR = "figures"  # report/figures/: copies older versions made; removed when the report is built
VECTOR_SUFFIXES = (".svg", ".pdf")  # a figure's vector copy, saved beside its PNG
MAX_ROWS = 30  # longer tables are cut, with a link to the full CSV
MAX_JSON_ITEMS = 40


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

def _short_commit(commit: str) -> str:
    if not commit or commit == "unknown":
        return "unknown"
    sha, _, rest = commit.partition("-")
    return sha[:10] + (f" ({rest}: uncommitted changes)" if rest == "dirty" else (f"-{rest}" if rest else ""))


def _summarise_provenance(provs: Sequence[dict[str, Any]]) -> dict[str, str]:
    def values(key: str) -> list[str]:
        return sorted({str(p.get(key)) for p in provs if p.get(key) not in (None, "")})

    written = values("written_at")
    walls = [p.get("wall_time_s") for p in provs if isinstance(p.get("wall_time_s"), (int, float))]
    return {
        "written": (written[0] if len(written) == 1 else f"{written[0]} to {written[-1]}") if written else "?",
        "commit": ", ".join(_short_commit(c) for c in values("git_commit")) or "unknown",
        "device": "; ".join(values("device")) or "unknown",
        "seed": ", ".join(values("seed")) or "?",
        "profile": ", ".join(values("profile")) or "?",
        "wall": f"{max(walls):.0f} s" if walls else "?",
    }


def _versions_table(per_folder: dict[str, list[dict[str, Any]]]) -> str:
    """One line per library; where notebooks ran under different versions, which ran under which."""
    seen: dict[str, dict[str, set[str]]] = {}
    for key, provs in per_folder.items():
        for prov in provs:
            for lib, version in (prov.get("versions") or {}).items():
                seen.setdefault(lib, {}).setdefault(str(version), set()).add(key)
    if not seen:
        return "_No library versions recorded._"
    rows = []
    for lib in sorted(seen, key=lambda name: (name != "python", name)):
        versions = seen[lib]
        if len(versions) == 1:
            rows.append([lib, next(iter(versions))])
        else:
            rows.append([lib, "; ".join(f"{v} ({', '.join(sorted(k))})" for v, k in sorted(versions.items()))])
    return markdown_table(["library", "version"], rows, numbers=False)


# ---------------------------------------------------------------------------------------------
# Sections per results folder
# ---------------------------------------------------------------------------------------------

def _json_items(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Scalar leaves of a JSON value as (dotted key, text); long lists and lists of records skipped."""
    items: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key in sorted(data, key=str):
            items += _json_items(data[key], f"{prefix}{key}.")
        return items
    key = prefix[:-1]
    if isinstance(data, list):
        if len(data) <= 8 and all(not isinstance(v, (dict, list)) for v in data):
            items.append((key, ", ".join(format_number(v) for v in data)))
        return items
    text = format_number(data)
    items.append((key, text if len(text) <= 200 else text[:197] + "..."))
    return items


def _records_table(records: list[Any]) -> tuple[list[str], list[list[Any]]] | None:
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    header: list[str] = []
    for record in records:
        header += [k for k in record if k not in header]
    return header, [[r.get(k, "") for k in header] for r in records]


def _table_block(header: list[str], rows: list[list[Any]], source: Path, report_dir: Path) -> list[str]:
    lines = [markdown_table(header, rows[:MAX_ROWS])]
    if len(rows) > MAX_ROWS:
        lines += ["", f"_Showing {MAX_ROWS} of {len(rows)} rows; the full table: "
                      f"{link(source.name, source, report_dir)}._"]
    return lines


def _links_line(folder: Folder, results_dir: Path, report_dir: Path) -> list[str]:
    links = []
    executed = results_dir / "notebooks" / f"{folder.name}.ipynb"
    if executed.is_file():
        links.append(link("executed notebook", executed, report_dir))
    if folder.notebook is not None and _inside(results_dir, folder.notebook.parent.parent):
        links.append(link("source notebook", folder.notebook, report_dir))
    if folder.path is not None:
        links.append(link("raw results", folder.path, report_dir))
    return links


def _csv_blocks(folder: Folder, report_dir: Path) -> list[str]:
    lines = []
    csvs = sorted(folder.path.glob("*.csv"))
    if folder.name == ABLATION_FOLDER:
        shown_above = [p for p in csvs if p.stem in {t for t, _, _ in HEADLINE_TABLES}]
        if shown_above:
            lines += ["Tables " + ", ".join(link(p.name, p, report_dir) for p in shown_above)
                      + ": see [Paper vs measured](#paper-vs-measured).", ""]
        csvs = [p for p in csvs if p not in shown_above]
    for path in csvs:
        header, rows = read_csv(path)
        lines += [f"**{path.stem}** ({link(path.name, path, report_dir)})", ""]
        lines += (_table_block(header, rows, path, report_dir) if header else ["_(empty table)_"]) + [""]
    return lines


def _json_blocks(folder: Folder, report_dir: Path) -> list[str]:
    """Each JSON's values, folded: a records table for ``rows`` (unless a CSV of that name shows it), then key/value."""
    lines = []
    csv_stems = {p.stem for p in folder.path.glob("*.csv")}
    for path in sorted(folder.path.glob("*.json")):
        payload = read_json(path, default=None)
        if payload is None:
            continue
        data = payload.get("data", payload) if "provenance" in payload else payload
        block: list[str] = []
        if isinstance(data, dict) and path.stem not in csv_stems:
            table = _records_table(data.get("rows")) if isinstance(data.get("rows"), list) else None
            if table is not None:
                block += _table_block(table[0], table[1], path, report_dir) + [""]
        items = _json_items(data if isinstance(data, dict) else {"value": data})
        if items:
            block += [markdown_table(["key", "value"], items[:MAX_JSON_ITEMS], numbers=False)]
            if len(items) > MAX_JSON_ITEMS:
                block += ["", f"_Showing {MAX_JSON_ITEMS} of {len(items)} values; all in "
                              f"{link(path.name, path, report_dir)}._"]
        if block:
            lines += [f"<details><summary>Metrics: {path.name}</summary>", "", *block, "", "</details>", ""]
    return lines


def _figure_blocks(folder: Folder, report_dir: Path) -> list[str]:
    """Each PNG embedded from where the notebook wrote it, with links to its vector copies (same stem)."""
    lines = []
    for path in sorted(folder.path.glob("*.png")):
        vectors = [path.with_suffix(s) for s in VECTOR_SUFFIXES if path.with_suffix(s).is_file()]
        also = "".join(f" · {link(v.suffix[1:].upper(), v, report_dir)}" for v in vectors)
        target = rel(path, report_dir).replace(" ", "%20")
        lines += [f"**{path.stem}** ({link(path.name, path, report_dir)}{also})", "",
                  f"![{folder.key} {path.stem}]({target})", ""]
    return lines


def _folder_section(folder: Folder, results_dir: Path, report_dir: Path, profile: str, heading: str) -> list[str]:
    """The Markdown of one results folder: links, provenance, tables, folded metrics, linked figures."""
    lines = [heading, ""]
    links = _links_line(folder, results_dir, report_dir)
    if folder.path is None:
        return lines + [f"_Not run yet_ on the `{profile}` profile: `python -m dlib.tools.notebooks "
                        f"--profile {profile} --only {folder.key}`." + (f" ({', '.join(links)})" if links else ""), ""]
    lines += [" · ".join(links), ""]
    provs = provenances(folder.path)
    if provs:
        s = _summarise_provenance([p for _, p in provs])
        lines += [f"Written {s['written']} at commit {s['commit']} on {s['device']}; profile {s['profile']}, "
                  f"seed {s['seed']}; wall time to the last JSON {s['wall']}.", ""]
    else:
        lines += ["_No JSON with provenance in this folder._", ""]
    return (lines + _csv_blocks(folder, report_dir) + _json_blocks(folder, report_dir)
            + _figure_blocks(folder, report_dir))


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def _provenance_section(folders: Sequence[Folder], per_folder: dict[str, list[dict[str, Any]]],
                        profile: str) -> list[str]:
    """Where and when: one row per results folder, a warning for a foreign profile, every library version."""
    all_provs = [p for provs in per_folder.values() for p in provs]
    lines = ["## Provenance", ""]
    if not all_provs:
        return lines + ["_No results with provenance yet for this profile._", ""]
    s = _summarise_provenance(all_provs)
    lines += [f"Results written {s['written']}; git commit(s): {s['commit']}; device(s): {s['device']}.", ""]
    rows = []
    for folder in folders:
        provs = per_folder.get(folder.name) or []
        if folder.path is not None and not provs:
            rows.append([folder.name, "(no JSON)", "", "", "", ""])
        elif provs:
            f = _summarise_provenance(provs)
            rows.append([folder.name, f["written"], f["commit"], f["device"], f["profile"], f["seed"]])
    lines += [markdown_table(["results", "written", "git commit", "device", "profile", "seed"], rows, numbers=False),
              ""]
    profiles = {str(p.get("profile")) for p in all_provs if p.get("profile")}
    if profiles - {profile}:
        lines += [f"> **Warning**: some results were written under profile(s) "
                  f"{', '.join(sorted(profiles - {profile}))}, "
                  f"not `{profile}`.", ""]
    return lines + ["Library versions:", "", _versions_table(per_folder), ""]


def _notebook_sections(numbered: Sequence[Folder], others: Sequence[Folder], results_dir: Path, report_dir: Path,
                       profile: str) -> tuple[list[str], list[str]]:
    """The table of contents and the per-folder sections (notebooks, then other results)."""
    seen_slugs: dict[str, int] = {}
    for fixed in ("Paper vs measured", "Provenance", "Notebooks", "Other results"):
        github_slug(fixed, seen_slugs)
    contents = ["- [Paper vs measured](#paper-vs-measured)", "- [Provenance](#provenance)", "- [Notebooks](#notebooks)"]
    sections = ["## Notebooks", ""]
    for folder in numbered:
        title = folder.title or folder.name
        title = title if title.startswith(folder.key) else f"{folder.key} · {title}"
        contents.append(f"  - [{title}](#{github_slug(title, seen_slugs)})"
                        + ("" if folder.path is not None else " (not run yet)"))
        sections += _folder_section(folder, results_dir, report_dir, profile, f"### {title}")
    if others:
        contents.append("- [Other results](#other-results)")
        sections += ["## Other results", "", "Result folders that belong to no notebook (benchmarks, tools).", ""]
        for folder in others:
            sections += _folder_section(folder, results_dir, report_dir, profile, f"### {folder.name}")
    return contents, sections


def _remove_legacy_copies(report_dir: Path) -> None:
    """Delete ``report/figures/``: the figure copies older versions of the report made (now linked instead)."""
    legacy = report_dir / LEGACY_FIGURE_DIR
    if legacy.is_dir():
        for copy in legacy.glob("*.png"):
            copy.unlink()
        if not any(legacy.iterdir()):
            legacy.rmdir()


def build_report(profile: str, results_dir: str | os.PathLike | None = None, *,
                 notebook_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/report/README.md``; returns its path.

    ``results_dir`` defaults to ``results_root() / profile`` (``$DLIB_RESULTS_DIR`` is honoured);
    ``notebook_dir`` to the repository's ``notebooks/``. Notebooks without results are listed as
    not run yet; nothing missing is an error, but a folder marked INCOMPLETE (an interrupted or failed
    notebook run) is: :class:`IncompleteResults` names it. Figures are linked, never copied.
    """

    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a profile name such as {', '.join(PROFILES)}, got {profile!r}")
    results_dir = Path(results_dir) if results_dir is not None else results_root() / profile
    report_dir = results_dir / REPORT_DIR
    numbered, others = folders(results_dir, Path(notebook_dir) if notebook_dir is not None else None)
    refuse_incomplete(numbered + others, profile)
    per_folder = {f.name: [p for _, p in provenances(f.path)] for f in numbered + others if f.path is not None}
    contents, sections = _notebook_sections(numbered, others, results_dir, report_dir, profile)
    missing = [f.name for f in numbered if f.path is None]
    head = [f"# DeepLab v1/v2 replication: results report, profile `{profile}`", "",
            "Built by `dlib.tools.report.build_report` (notebook 08) from the notebooks' outputs in "
            f"{link(f'results/{profile}/', results_dir, report_dir)}; rebuild with "
            f"`python -m dlib.tools.notebooks --profile {profile} --only 08` or "
            f"`python -m dlib.tools.report --profile {profile}`. "
            "Paper numbers are labelled with their table; every other number was measured by this code. "
            "Figures are shown from the notebooks' own folders.", "",
            f"{len(numbered) - len(missing)} of {len(numbered)} notebooks have results for this profile"
            + (f"; not run yet: {', '.join(missing)}." if missing else "."), "", *contents, ""]
    dataset = resolve(profile).data.dataset if profile in PROFILES else None
    body = (headline_section(results_dir, report_dir, dataset)
            + _provenance_section(numbered + others, per_folder, profile))
    text = "\n".join(head + body + sections).rstrip() + "\n"
    readme = report_dir / "README.md"
    if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
        atomic_write_text(readme, text)
    _remove_legacy_copies(report_dir)
    return readme


def main(argv: Sequence[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m dlib.tools.report", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results-dir", default=None, help="default: results/<profile>/ ($DLIB_RESULTS_DIR honoured)")
    parser.add_argument("--readme", default=None, metavar="PATH",
                        help="also rewrite the generated tables of this README (e.g. README.md) from the results")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.profile, args.results_dir)
    except IncompleteResults as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    if args.readme:
        print(update_readme(args.readme, args.results_dir or results_root() / args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
