"""The notebooks teach in one way (issue 24): every display equation has the code that computes it beside it
(``lesson.show_code``), every "Try it" exercise asks for a ``PREDICTION`` before its answer cell
(``lesson.answer``), and every notebook ends with its take-aways (``lesson.takeaways``). Read from the committed
notebooks' cells."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text())["cells"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_display_equation_has_its_code_beside_it(path):
    cells = _cells(path)
    bare = []
    for i, (kind, text) in enumerate(cells):
        if kind == "markdown" and "$$" in text:
            following = [t for k, t in cells[i + 1:i + 3] if k == "code"]
            if not any("lesson.show_code(" in t for t in following):
                bare.append(text.strip().splitlines()[0][:80])
    assert not bare, f"equations without lesson.show_code in the next two cells: {bare}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_asks_for_a_prediction_before_its_answer(path):
    cells = _cells(path)
    start = next(i for i, (k, t) in enumerate(cells) if k == "markdown" and t.lstrip().startswith("## Try it"))
    answers = [i for i, (k, t) in enumerate(cells) if i > start and k == "code" and "lesson.answer(" in t]
    assert len(answers) >= 2, "a Try it section has at least two exercises, each answered by lesson.answer"
    for i in answers:
        asked = [t for k, t in cells[start:i] if k == "code"]
        assert asked and asked[-1].lstrip().startswith("PREDICTION = None"), (
            f"cell {i}: the code cell before an answer is the student's 'PREDICTION = None  # ...'")
        assert "lesson.answer(PREDICTION" in cells[i][1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_ends_with_its_takeaways(path):
    kind, text = _cells(path)[-1]
    assert kind == "code" and "lesson.takeaways(" in text
