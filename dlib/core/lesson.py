"""Teaching cells of the notebooks: an equation's code shown from the library, predict-then-run answers, the
glossary and the closing take-aways. Each returns an object a notebook displays (Markdown in JupyterLab, plain
text in a terminal), so a cell stays one call and the words live here, tested, in one place.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Text:
    """Markdown for JupyterLab, the same words as plain text elsewhere."""

    markdown: str

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __str__(self) -> str:
        return self.markdown

    __repr__ = __str__


# ---------------------------------------------------------------------------------------------------------------
# The equation beside its code


def source_lines(obj: Callable | type) -> tuple[list[str], int]:
    """The source of ``obj`` as lines (dedented) and the file line number of the first one."""
    lines, first = inspect.getsourcelines(obj)
    return textwrap.dedent("".join(lines)).splitlines(), first


def annotate(obj: Callable | type, terms: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """Tie lines of ``obj``'s source to terms of a formula: ``terms`` maps a piece of code to what it computes.

    Each piece must occur on exactly one line (else ``ValueError``), so a listing cannot drift from the code it
    shows: rename the code and the notebook that explains it fails. Returns (line in the listing, code, term).
    """
    lines, _ = source_lines(obj)
    tied = []
    for piece, term in terms.items():
        hits = [i for i, line in enumerate(lines) if piece in line]
        if len(hits) != 1:
            where = "no line" if not hits else f"{len(hits)} lines ({', '.join(str(h + 1) for h in hits)})"
            raise ValueError(f"{obj.__qualname__}: the code {piece!r} is on {where} of its source; tie the term "
                             f"{term!r} to a piece that is on exactly one line")
        tied.append((hits[0] + 1, lines[hits[0]].strip(), term))
    return sorted(tied)


def show_code(obj: Callable | type, terms: Mapping[str, str], *, formula: str = "") -> Text:
    """The listing of ``obj`` read from the library (so it is the code that runs), then a table tying its
    lines to the terms of ``formula`` (LaTeX, shown above the listing when given)."""
    lines, first = source_lines(obj)
    module = inspect.getmodule(obj).__name__
    listing = "\n".join(f"{i + 1:>3}  {line}" for i, line in enumerate(lines))
    rows = "\n".join(f"| {n} | `{code.replace('|', '¦')}` | {term} |" for n, code, term in annotate(obj, terms))
    head = f"$${formula}$$\n\n" if formula else ""
    return Text(f"{head}`{module}.{obj.__qualname__}` (source line {first}):\n\n```python\n{listing}\n```\n\n"
                f"| line | code | term of the formula |\n|---:|---|---|\n{rows}\n")


# ---------------------------------------------------------------------------------------------------------------
# Predict, then run


def _close(prediction: Any, measured: Any, tolerance: float | None) -> str:
    if isinstance(measured, bool) or not isinstance(measured, (int, float)):
        return "right" if prediction == measured else f"not quite: you said {prediction!r}"
    if not isinstance(prediction, (int, float)) or isinstance(prediction, bool):
        return f"give a number to compare (you gave {prediction!r})"
    off = prediction - measured
    scale = abs(measured) if measured else 1.0
    if tolerance is not None and abs(off) <= tolerance:
        return f"close: off by {off:+.3g}, within {tolerance:g}"
    return f"off by {off:+.3g} ({100 * off / scale:+.0f}% of the measurement)"


def answer(prediction: Any, measured: Any, *, why: str, unit: str = "", tolerance: float | None = None) -> Text:
    """The answer cell of a "Try it": the measurement, why it comes out so, and how close the prediction was.

    ``prediction`` is the student's ``PREDICTION`` (``None`` when they made none: the cell runs either way).
    A number is compared with ``measured`` (``tolerance`` says what counts as close); anything else must equal it.
    """
    shown = f"{measured:.4g}" if isinstance(measured, float) and math.isfinite(measured) else f"{measured}"
    lines = [f"**Measured:** {shown}{(' ' + unit) if unit else ''}", f"**Why:** {why}"]
    if prediction is None:
        lines.append("**Your prediction:** none. Set `PREDICTION` above, run this cell again, and compare.")
    else:
        lines.append(f"**Your prediction:** {prediction!r}, {_close(prediction, measured, tolerance)}.")
    return Text("\n\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# Glossary: a sentence or two per term, with where the papers use it

GLOSSARY: dict[str, tuple[str, str]] = {
    "atrous convolution": (
        "A convolution whose filter taps sit r inputs apart (r is the rate); r = 1 is the usual convolution. It "
        "widens what a filter sees without more weights or a coarser output.", "DeepLab v2, Sec. 3.1"),
    "output stride": (
        "How many input pixels one step of a feature map spans: 32 for a classification VGG-16, 8 for DeepLab, "
        "which removes the last poolings' subsampling and dilates the layers after them instead.",
        "DeepLab v2, Sec. 3.1"),
    "field of view": (
        "The span of input pixels one output can depend on (its theoretical receptive field); a k-tap filter at "
        "rate r adds r(k - 1) inputs.", "DeepLab v1, Sec. 3.1; v2, Sec. 3.1"),
    "meta device": (
        "PyTorch's 'meta' device holds tensors' shapes and types but no numbers, so a 100-million-parameter "
        "network can be built and counted in milliseconds without memory for its weights.", "PyTorch docs"),
    "marginal": (
        "The probability one pixel takes one label, with every other pixel's label summed out. The CRF's output "
        "is a marginal per pixel and label; the prediction is its argmax.", "DeepLab v2, Sec. 3.3"),
    "mean field": (
        "An approximation of the CRF's joint distribution by a product of independent per-pixel distributions, "
        "the closest one in KL divergence; its update is a message pass, repeated (10 times in DeepLab).",
        "Krähenbühl & Koltun 2011, Sec. 3; DeepLab v2, Sec. 3.3"),
    "lattice": (
        "The permutohedral lattice: a grid in the 5-D (position, colour) space on which the Gaussian message "
        "sum of the dense CRF is approximated in time linear in the pixels (splat, blur, slice).",
        "Adams et al. 2010; Krähenbühl & Koltun 2011, Sec. 4"),
    "symmetric normalisation": (
        "Scaling a filter's output by the filter applied to ones, on both sides (D^-1/2 K D^-1/2), so that "
        "every pixel's message has the same total weight however crowded its neighbourhood.",
        "Krähenbühl & Koltun 2013 (the pydensecrf default)"),
    "paired t-interval": (
        "A 95% interval for a mean difference when both rows are run on the same seeds: the per-seed "
        "differences' mean, plus or minus t(0.975, n - 1) times their standard error. It excludes 0 when the "
        "difference is resolved.", "any statistics text; our dlib.experiments.stats"),
    "poly schedule": (
        "The learning rate base_lr (1 - iter / max_iter)^power with power 0.9, falling smoothly to 0.",
        "DeepLab v2, Sec. 4.1"),
    "multi-scale inputs (MSC)": (
        "The image is scored at scales 1, 0.75 and 0.5 by one network; the upsampled score maps are fused by "
        "a per-pixel max, and the loss is taken on every scale and the fusion.", "DeepLab v2, Sec. 3.2 and 4.1"),
}


def glossary(*terms: str) -> Text:
    """The glossary entries of ``terms`` (keys of :data:`GLOSSARY`), for the cell where they are first used."""
    unknown = [t for t in terms if t not in GLOSSARY]
    if unknown:
        raise KeyError(f"not in dlib.core.lesson.GLOSSARY: {unknown}; known terms: {sorted(GLOSSARY)}")
    return Text("\n".join(f"- **{t}**: {GLOSSARY[t][0]} ({GLOSSARY[t][1]})" for t in terms))


# ---------------------------------------------------------------------------------------------------------------
# What you should take away


def takeaways(points: Sequence[str]) -> Text:
    """The closing cell: the notebook's lessons, each sentence written from its measured numbers."""
    if not points:
        raise ValueError("a take-away cell needs at least one point")
    return Text("### What you should take away\n\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1)))
