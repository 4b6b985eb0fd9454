"""The suite's own promises: clean notebooks, agreeing environment files, a working entry script."""

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from dlib.tools import notebooks

ROOT = Path(__file__).resolve().parent.parent


def test_there_are_numbered_notebooks():
    found = notebooks.discover()
    assert "01" in found and "02" in found
    assert list(found) == sorted(found)


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert 'PROFILE = "cpu"' in "".join(params[0]["source"]) and "SEED = 0" in "".join(params[0]["source"])


def _version(text: str) -> tuple[int, ...]:
    """"3.11" -> (3, 11): compared as numbers, not as strings (where "3.11" < "3.9")."""
    return tuple(int(part) for part in text.split("."))


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    # conda gives the interpreter and pip; the dependency list lives in pyproject.toml only.
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert sorted(d.split("=")[0] for d in conda) == ["pip", "python"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert len(pip_section) == 1 and pip_section[0].startswith("-e .[")
    extras = pip_section[0].removeprefix("-e .[").rstrip("]").split(",")
    assert set(extras) <= set(project["optional-dependencies"]) and "dev" in extras
    python = next(d for d in conda if d.startswith("python="))
    assert project["requires-python"].startswith(">=")
    assert _version(python.split("=")[1]) >= _version(project["requires-python"].removeprefix(">="))


@pytest.mark.parametrize("name", ["seaborn", "ipywidgets"])
def test_a_plotting_or_widget_library_is_a_dependency_exactly_when_something_uses_it(name):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    uses = re.compile(rf"\b(import|from) {name}\b")
    files = [*(ROOT / "dlib").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    users = [p for p in files if uses.search(p.read_text())]
    assert any(d.startswith(name) for d in project["dependencies"]) == bool(users)


def test_ruff_is_a_dev_dependency_configured_in_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("ruff") for d in pyproject["project"]["optional-dependencies"]["dev"])
    assert pyproject["tool"]["ruff"]["line-length"] == 120


def test_pins_are_the_required_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for pin in ("torch==2.14.1", "torchvision==0.29.1"):
        assert pin in project["dependencies"]
    # pydensecrf needs a C++ compiler to install: an extra, never a requirement (dlib.crf falls back to torch).
    assert not any(d.startswith("pydensecrf") for d in project["dependencies"])
    assert "pydensecrf2==1.1" in project["optional-dependencies"]["crf"]


def test_ci_calls_the_readme_test_command():
    assert "./run_all.sh --test" in (ROOT / ".ci" / "run").read_text()
    assert "./run_all.sh --test" in (ROOT / "README.md").read_text()


def _run_all(*args):
    return subprocess.run([str(ROOT / "run_all.sh"), *args], capture_output=True, text=True, timeout=120)


def test_run_all_rejects_unknown_profile_and_notebook():
    bad = _run_all("--profile", "laptop")
    assert bad.returncode == 2 and "smoke cpu gpu" in bad.stderr
    bad = _run_all("--profile", "smoke", "--only", "99")
    assert bad.returncode == 2 and "unknown notebook '99'" in bad.stderr and "01" in bad.stderr
    assert _run_all("--help").returncode == 0


def test_notebook_failure_names_notebook_and_cell(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "cpu"\nSEED = 0', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "98_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(notebooks.NotebookFailed, match=r"98_broken.ipynb failed in cell .*broken on purpose"):
        notebooks.execute(path, "smoke", output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "98_broken.ipynb").exists()  # the partial executed copy is kept
    meta = nbformat.read(tmp_path / "out" / "98_broken.ipynb", as_version=4).metadata["papermill"]
    assert meta["input_path"] == os.path.relpath(path, ROOT).replace(os.sep, "/")  # no machine folder recorded
    assert not os.path.isabs(meta["output_path"]) and meta["output_path"].endswith("out/98_broken.ipynb")


def test_relative_papermill_paths_rewrites_only_the_two_paths(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["papermill"] = {"input_path": str(ROOT / "notebooks" / "01_a.ipynb"),
                                "output_path": str(ROOT / "results" / "smoke" / "notebooks" / "01_a.ipynb"),
                                "parameters": {"PROFILE": "smoke"}}
    path = tmp_path / "01_a.ipynb"
    nbformat.write(nb, path)
    notebooks.relative_papermill_paths(path)
    again = nbformat.read(path, as_version=4)
    assert again.metadata["papermill"] == {"input_path": "notebooks/01_a.ipynb",
                                           "output_path": "results/smoke/notebooks/01_a.ipynb",
                                           "parameters": {"PROFILE": "smoke"}}
    assert again.cells[0].source == "x = 1"
    notebooks.relative_papermill_paths(tmp_path / "missing.ipynb")  # no executed copy: nothing to do


def test_notebook_times_are_recorded_once_per_notebook(tmp_path, monkeypatch):
    import csv

    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path))
    notebooks.record_time("smoke", "02_b", 3.0)
    notebooks.record_time("smoke", "01_a", 1.5)
    path = notebooks.record_time("smoke", "02_b", 4.3)  # a re-run replaces the old time
    rows = list(csv.DictReader(path.open()))
    assert [(r["notebook"], float(r["seconds"])) for r in rows] == [("01_a", 1.5), ("02_b", 4.3)]


def test_set_reaches_every_notebook_as_config_and_bad_keys_stop_before_running(monkeypatch, tmp_path):
    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr(notebooks, "execute", lambda nb, profile, seed=0, parameters=None: (
        seen.append((nb.name[:2], parameters)), tmp_path / nb.name)[1])
    assert notebooks.main(["--profile", "smoke", "--only", "01", "02", "--set", "data.voc_root=/x/VOCdevkit",
                           "--set", "crf.w1=5"]) == 0
    assert seen == [(n, {"CONFIG": {"data.voc_root": "/x/VOCdevkit", "crf.w1": 5}}) for n in ("01", "02")]
    seen.clear()
    assert notebooks.main(["--profile", "smoke", "--only", "01", "--set", "data.no_such_key=1"]) == 2
    assert seen == []


def test_every_notebook_takes_config_overrides():
    import nbformat

    for path in notebooks.discover().values():
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "CONFIG = {}" in params[0].source, path.name
        assert any("config.resolve(" in c.source and "CONFIG" in c.source for c in nb.cells), path.name


# ---- a dead kernel is reported; an interrupted run marks its results incomplete --------------------------

def _notebook(path, *cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PROFILE = "cpu"\nSEED = 0', metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_dead_kernel_is_reported_with_notebook_and_cell_and_the_results_stay_marked(tmp_path, monkeypatch, capsys):
    from dlib.tools import report

    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path / "results"))
    folder = tmp_path / "results" / "smoke" / "97_dies"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text("{}")  # an earlier run's result
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    path = _notebook(nb_dir / "97_dies.ipynb", "x = 1", "import os\nos._exit(1)")
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", nb_dir)
    monkeypatch.setattr(notebooks, "discover", lambda folder=nb_dir: {"97": path})
    assert notebooks.main(["--profile", "smoke", "--only", "97"]) == 1
    err = capsys.readouterr().err
    assert "FAILED: notebook 97, cell 3: the kernel died (out of memory?)" in err
    assert (folder / "old.json").exists() and notebooks.incomplete_marker(folder).exists()  # nothing lost, marked
    assert (tmp_path / "results" / "smoke" / "notebooks" / "97_dies.INCOMPLETE").exists()
    with pytest.raises(report.IncompleteResults, match=r"97_dies .*INCOMPLETE.*--only 97"):
        report.build_report("smoke", notebook_dir=nb_dir)
    assert report.main(["--profile", "smoke"]) == 2
    # A completed run removes the markers; the report is built again.
    _notebook(path, "x = 1")
    notebooks.execute(path, "smoke")
    assert not notebooks.incomplete_marker(folder).exists()
    assert not (tmp_path / "results" / "smoke" / "notebooks" / "97_dies.INCOMPLETE").exists()
    assert report.build_report("smoke", notebook_dir=nb_dir).exists()


def test_the_report_notebook_may_read_its_own_marked_folder(tmp_path, monkeypatch):
    from dlib.tools import report

    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path))
    (tmp_path / "smoke" / "08_report").mkdir(parents=True)
    notebooks.incomplete_marker(tmp_path / "smoke" / "08_report").write_text("running")
    monkeypatch.setenv(notebooks.RUNNING_ENV, "08_report")
    assert report.build_report("smoke").exists()
    monkeypatch.delenv(notebooks.RUNNING_ENV)
    with pytest.raises(report.IncompleteResults, match="08_report"):
        report.build_report("smoke")


# ---- run_all.sh's set-up, tested with a stand-in interpreter (no venv is built) -----------------------------

def test_run_all_help_prints_the_whole_header_however_long_it_is(tmp_path):
    text = (ROOT / "run_all.sh").read_text()
    assert "sed -n" not in text  # no line numbers of its own header
    extra = "#   ./run_all.sh --frobnicate        a line added to the header\n"
    script = tmp_path / "run_all.sh"
    script.write_text(text.replace("#\n", "#\n" + extra, 1))
    for path in (ROOT / "run_all.sh", script):
        out = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stderr == ""
        lines = out.stdout.splitlines()
        assert lines[0].startswith("DeepLab v1/v2 replicated")
        assert "  ./run_all.sh --help" in lines and "set -euo pipefail" not in out.stdout
        assert "--set KEY=VALUE" in out.stdout and "PYTHON=python3.11" in out.stdout
    assert "  ./run_all.sh --frobnicate        a line added to the header" in lines


# A stand-in for `python3`: answers the interpreter questions run_all.sh asks, "creates" a venv by copying
# itself, logs every call, and fails `pip install --upgrade pip` the way an offline machine does.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$0 $*" >> "$FAKE_LOG"
case "$1" in
  -c) case "$2" in *sys.exit*) exit 0 ;; *) echo "$FAKE_ID" ;; esac ;;
  -m) case "$2" in
        venv) dir="${@: -1}"; [ "$3" = --clear ] && rm -rf "$dir"; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python" ;;
        pip) [ "$3" = --version ] && { echo "pip 21.0 from somewhere"; exit 0; }
             [[ "$*" == *"--upgrade pip"* ]] && { echo "ERROR: could not reach the package index" >&2; exit 1; } ;;
      esac ;;
esac
exit 0
"""


def _setup(fake, venv, fake_id, log):
    import os

    env = {**os.environ, "FAKE_ID": fake_id, "FAKE_LOG": str(log)}
    return subprocess.run(["bash", "-c", 'source "$1"; setup_venv "$2" "$3"', "_", str(ROOT / "run_all.sh"),
                           str(fake), str(venv)], capture_output=True, text=True, timeout=60, env=env)


def test_run_all_setup_rebuilds_the_venv_when_the_interpreter_changes_and_shows_pip_errors(tmp_path):
    fake, venv, log = tmp_path / "python3", tmp_path / "venv", tmp_path / "calls.log"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    first = _setup(fake, venv, "/usr/bin/python3.11 3.11.7", log)
    assert first.returncode == 0, first.stderr
    assert (venv / ".dlib-python").read_text().strip() == "/usr/bin/python3.11 3.11.7"
    assert (venv / ".dlib-setup-stamp").exists() and "set-up done" in first.stdout
    # The failed pip upgrade is shown, with the reason, and set-up goes on.
    assert "upgrading pip failed" in first.stderr and "could not reach the package index" in first.stderr
    assert "pip install --quiet -e" in log.read_text()

    log.write_text("")
    again = _setup(fake, venv, "/usr/bin/python3.11 3.11.7", log)  # nothing changed: nothing done
    assert again.returncode == 0 and again.stdout == "" and " -m " not in log.read_text()

    (venv / "left-by-the-old-interpreter").write_text("")
    other = _setup(fake, venv, "/usr/bin/python3.12 3.12.1", log)  # PYTHON=python3.12
    assert other.returncode == 0, other.stderr
    assert "rebuilding" in other.stdout and "3.11.7" in other.stdout and "3.12.1" in other.stdout
    assert f"-m venv --clear {venv}" in log.read_text()
    assert not (venv / "left-by-the-old-interpreter").exists()
    assert (venv / ".dlib-python").read_text().strip() == "/usr/bin/python3.12 3.12.1"
