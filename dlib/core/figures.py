"""What a saved figure must show to read right on its own, read back from the matplotlib objects.

Every figure the suite saves (:func:`dlib.core.viz.save_figure`) is described here first; the description is
checked and stored in the PNG (a text chunk, key :data:`METADATA_KEY`), so a test can re-check every committed
figure without the code that drew it. The rules:

- a title (the figure's or an axes') names the profile (``"cpu profile"``) and the data (``"val split"``, or
  ``"synthetic"`` for a drawing of made-up numbers); :func:`dlib.core.viz.split_caption` writes both;
- an axis that shows tick values has a label, and a numeric one a unit in brackets: ``"iteration (steps)"``,
  ``"mIoU (%)"``, ``"ratio (fraction)"``; a shared axis or ``fig.supxlabel`` / ``supylabel`` label it too;
- colour-mapped data (a 2-D image, a heat map, coloured points) has a colour bar for its colour map and
  range, or a legend (a label map's class legend);
- two or more labelled series on one axes have a legend.
"""

from __future__ import annotations

import json
import re
from typing import Any

METADATA_KEY = "dlib-figure"  # PNG text chunk holding :func:`describe`'s JSON
UNIT = re.compile(r"[(\[][^)\]]+[)\]]")  # "(px)", "[%]"
DATA_WORDS = re.compile(r"\bsplit\b|\bsynthetic\b", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(\d+([.,]\d*)?|\.\d+)([eE][-+]?\d+)?%?$")


def _is_number(text: str) -> bool:
    text = text.replace("\u2212", "-").replace("$", "").replace("\\mathdefault", "").strip("{} ")
    return bool(_NUMBER.match(text)) or "10^" in text


def _axis(ax, which: str) -> dict[str, Any]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    ticks = [t.get_text() for t in (ax.get_xticklabels() if which == "x" else ax.get_yticklabels())
             if t.get_visible() and t.get_text().strip()]
    shows = bool(ticks) and axis.get_visible() and ax.axison
    label = ax.get_xlabel() if which == "x" else ax.get_ylabel()
    if not label:
        siblings = (ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()).get_siblings(ax)
        label = next((s.get_xlabel() if which == "x" else s.get_ylabel() for s in siblings
                      if (s.get_xlabel() if which == "x" else s.get_ylabel())), "")
    return {"label": label, "shows_values": shows, "numeric": shows and all(_is_number(t) for t in ticks)}


def _mapped(ax) -> list:
    """The colour-mapped artists of ``ax``: scalar images, meshes, points coloured by value."""
    images = [im for im in ax.images if im.get_array() is not None and im.get_array().ndim == 2]
    meshes = [c for c in ax.collections if c.get_array() is not None and getattr(c, "cmap", None) is not None]
    return images + meshes


def _has_colourbar(artist, colourbars) -> bool:
    return any(cb.mappable is artist or (cb.mappable.cmap.name == artist.cmap.name
                                         and tuple(cb.mappable.get_clim()) == tuple(artist.get_clim()))
               for cb in colourbars)


def describe(fig) -> dict[str, Any]:
    """Titles, axis labels, colour maps, colour bars and legends of ``fig``, as JSON-able data."""
    fig.canvas.draw()  # tick labels exist only once drawn
    colourbars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    sup = fig._suptitle.get_text() if fig._suptitle is not None else ""
    supx = fig._supxlabel.get_text() if getattr(fig, "_supxlabel", None) is not None else ""
    supy = fig._supylabel.get_text() if getattr(fig, "_supylabel", None) is not None else ""
    axes = []
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None or not ax.get_visible():
            continue
        x, y = _axis(ax, "x"), _axis(ax, "y")
        x["label"] = x["label"] or supx
        y["label"] = y["label"] or supy
        series = [lab for lab in ax.get_legend_handles_labels()[1] if lab and not lab.startswith("_")]
        axes.append({
            "title": " ".join(t for t in (ax.get_title(loc) for loc in ("left", "center", "right")) if t),
            "x": x, "y": y, "series": len(series), "legend": ax.get_legend() is not None,
            "maps_without_colourbar": sum(not _has_colourbar(a, colourbars) for a in _mapped(ax)),
        })
    return {"suptitle": sup, "axes": axes, "figure_legend": bool(fig.legends), "colourbars": len(colourbars)}


def problems(info: dict[str, Any], profile: str) -> list[str]:
    """What keeps a described figure from reading right on its own (empty when nothing does)."""
    found = []
    titles = " ".join([info["suptitle"]] + [a["title"] for a in info["axes"]])
    if f"{profile} profile" not in titles:
        found.append(f"no title names the profile: put '{profile} profile' in a title (viz.split_caption(cfg))")
    if not DATA_WORDS.search(titles):
        found.append("no title names the data: say which split ('val split'), or 'synthetic' for made-up numbers")
    for i, ax in enumerate(info["axes"]):
        name = f"axes {i}" + (f" ({ax['title'][:40]!r})" if ax["title"] else "")
        for which in ("x", "y"):
            axis = ax[which]
            if axis["shows_values"] and not axis["label"]:
                found.append(f"{name}: the {which} axis shows values but has no label (ax.set_{which}label)")
            elif axis["numeric"] and not UNIT.search(axis["label"]):
                found.append(f"{name}: the {which} label {axis['label']!r} has no unit in brackets, e.g. '(px)', "
                             "'(%)', '(count)'")
        if ax["maps_without_colourbar"] and not (ax["legend"] or info["figure_legend"]):
            found.append(f"{name}: colour-mapped data without a colour bar or legend (fig.colorbar)")
        if ax["series"] >= 2 and not (ax["legend"] or info["figure_legend"]):
            found.append(f"{name}: {ax['series']} labelled series without a legend (ax.legend())")
    return found


def check(fig, profile: str) -> dict[str, Any]:
    """Describe ``fig`` and raise ``ValueError`` listing every problem; returns the description to store."""
    info = describe(fig)
    found = problems(info, profile)
    if found:
        raise ValueError("this figure would not read right on its own:\n  - " + "\n  - ".join(found))
    return {"profile": profile, **info}


def to_text(info: dict[str, Any]) -> str:
    return json.dumps(info, sort_keys=True)


def read_png(path) -> dict[str, Any] | None:
    """The description stored in a saved PNG, or None for a PNG saved without one."""
    from PIL import Image

    with Image.open(path) as im:
        text = im.text.get(METADATA_KEY)
    return json.loads(text) if text else None
