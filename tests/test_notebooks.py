"""Every numbered notebook executes on the smoke profile (papermill), as CI does."""

import json

import pytest

from dlib.tools import notebooks


@pytest.mark.notebook
@pytest.mark.parametrize("number", list(notebooks.discover()), ids=lambda n: notebooks.discover()[n].stem)
def test_notebook_executes_on_smoke(number, tmp_path):
    out = notebooks.execute(notebooks.discover()[number], "smoke", output_dir=tmp_path)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] if c["cell_type"] == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # Outputs are committed (results/cpu/notebooks): they name no folder of the machine that ran them, and show
    # no Path object (the results folder is inside the repository there, outside it here: paths print relative to
    # the repository when they can, dlib.core.io.repo_relative).
    outputs = json.dumps([c.get("outputs", []) for c in executed["cells"] if c["cell_type"] == "code"])
    assert str(notebooks.REPO_ROOT) not in outputs and "PosixPath(" not in outputs, (
        "an output names a machine folder: end the cell with ';' or print dlib.core.io.repo_relative(path)")


def test_an_unknown_model_name_stops_before_any_notebook_runs(capsys):
    from dlib.experiments import results

    code = notebooks.main(["--profile", "smoke", "--only", "03", "--set", "model.name=nonexistent"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'model.name'" in err and "'nonexistent'" in err
    assert "small_resnet_aspp" in err  # the fix: the names it accepts
    assert "03_models_aspp" not in captured.out and not (results.results_root() / "smoke").exists()


def _broken_notebook(folder, source):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "cpu"\nSEED = 0', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "98_broken.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_is_one_failed_line_with_the_library_message_and_no_kernel_warning(
        tmp_path, monkeypatch, capfd):
    source = "from dlib.core import config\nconfig.resolve(PROFILE, overrides={'train.iterations': 0})"
    path = _broken_notebook(tmp_path, source)
    monkeypatch.setattr(notebooks, "discover", lambda folder=None: {"98": path})
    assert notebooks.main(["--profile", "smoke", "--only", "98"]) == 1
    captured = capfd.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "'train.iterations'" in failed[0] and "98_broken.ipynb" in failed[0]
    assert "Traceback" not in captured.err and "\x1b[" not in captured.err  # no papermill traceback, no colours
    assert "without encryption" not in captured.out + captured.err  # the kernel runs over IPC


def test_the_incomplete_marker_says_how_to_re_run_with_the_profile(tmp_path):
    marker = tmp_path / "INCOMPLETE"
    notebooks._mark_incomplete([marker], tmp_path / "06_ablation.ipynb", tmp_path / "out.ipynb", "smoke")
    assert "python -m dlib.tools.notebooks --profile smoke --only 06" in marker.read_text()
