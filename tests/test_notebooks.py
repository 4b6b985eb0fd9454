"""Every numbered notebook executes on the smoke profile (papermill), as CI does."""

import json

import pytest

from dlib import notebooks


@pytest.mark.notebook
@pytest.mark.parametrize("number", list(notebooks.discover()), ids=lambda n: notebooks.discover()[n].stem)
def test_notebook_executes_on_smoke(number, tmp_path):
    out = notebooks.execute(notebooks.discover()[number], "smoke", output_dir=tmp_path)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
