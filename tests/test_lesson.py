"""dlib.core.lesson: listings read from the library and tied to a formula's terms, predict-then-run answers, the
glossary and the take-aways."""

import inspect
import json
from pathlib import Path

import pytest

from dlib.core import lesson

REPO = Path(__file__).resolve().parents[1]


def poly(base, it, max_it, power=0.9):
    fraction = 1 - it / max_it
    return base * fraction ** power


def test_a_listing_is_the_functions_source_with_its_terms_on_the_right_lines():
    text = lesson.show_code(poly, {"1 - it / max_it": "1 - iter/max_iter", "** power": "(...)^power"},
                            formula=r"\mathrm{lr} = \mathrm{base}\,(1 - \mathrm{iter}/\mathrm{max})^{0.9}")
    source = inspect.getsource(poly).splitlines()
    for i, line in enumerate(source, 1):
        assert f"{i:>3}  {line}" in text.markdown
    assert "| 2 | `fraction = 1 - it / max_it` | 1 - iter/max_iter |" in text.markdown
    assert "| 3 | `return base * fraction ** power` | (...)^power |" in text.markdown
    assert text.markdown.startswith("$$") and str(text) == text.markdown


def test_a_term_tied_to_code_that_is_not_there_or_is_on_two_lines_is_refused():
    with pytest.raises(ValueError, match="'momentum' is on no line"):
        lesson.annotate(poly, {"momentum": "m"})
    with pytest.raises(ValueError, match=r"on 2 lines \(2, 3\)"):
        lesson.annotate(poly, {"fraction": "f"})


@pytest.mark.parametrize("prediction, expected", [
    (None, "none. Set `PREDICTION`"),
    (7.0, "close: off by -0.5, within 1"),
    (10.0, "off by +2.5 (+33% of the measurement)"),
    ("seven", "give a number to compare"),
])
def test_an_answer_reports_the_measurement_and_how_close_the_prediction_was(prediction, expected):
    text = lesson.answer(prediction, 7.5, why="because", unit="px", tolerance=1).markdown
    assert "**Measured:** 7.5 px" in text and "**Why:** because" in text
    assert expected in text


def test_a_non_numeric_answer_is_compared_for_equality():
    assert "right" in lesson.answer("ASPP-L", "ASPP-L", why="w").markdown
    assert "not quite: you said 'ASPP-S'" in lesson.answer("ASPP-S", "ASPP-L", why="w").markdown


def test_glossary_refuses_an_unknown_term_and_names_the_known_ones():
    assert "**marginal**" in lesson.glossary("marginal").markdown
    with pytest.raises(KeyError, match="margin"):
        lesson.glossary("margin")


def _notebook_code(path):
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_every_glossary_term_is_shown_in_a_notebook():
    code = "\n".join(_notebook_code(p) for p in sorted((REPO / "notebooks").glob("*.ipynb")))
    missing = [t for t in lesson.GLOSSARY if f'"{t}"' not in code]
    assert not missing, f"glossary terms no notebook shows (lesson.glossary(...)): {missing}"


def test_takeaways_number_their_points():
    assert lesson.takeaways(["a", "b"]).markdown.endswith("1. a\n2. b")
    with pytest.raises(ValueError):
        lesson.takeaways([])
