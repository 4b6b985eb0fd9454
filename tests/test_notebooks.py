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


def test_an_unknown_model_name_stops_before_any_notebook_runs(capsys):
    from dlib import results

    code = notebooks.main(["--profile", "smoke", "--only", "03", "--set", "model.name=nonexistent"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'model.name'" in err and "'nonexistent'" in err
    assert "small_resnet_aspp" in err  # the fix: the names it accepts
    assert "03_models_aspp" not in captured.out and not (results.results_root() / "smoke").exists()
