import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dlib.core import config
from dlib.experiments import results


def test_json_carries_provenance(tmp_path):
    cfg = config.resolve("smoke", seed=3)
    out = results.Results(cfg, "99_test")
    path = out.json("metrics", {"miou": np.float32(0.5), "arr": np.arange(3), "t": (1, 2)})
    assert path == Path(os.environ["DLIB_RESULTS_DIR"]) / "smoke" / "99_test" / "metrics.json"
    payload = json.loads(path.read_text())
    assert payload["data"] == {"miou": 0.5, "arr": [0, 1, 2], "t": [1, 2]}
    prov = payload["provenance"]
    assert prov["seed"] == 3 and prov["profile"] == "smoke"
    assert prov["config"]["train"]["iterations"] == cfg.train.iterations
    assert prov["git_commit"] == "unknown" or len(prov["git_commit"].split("-")[0]) == 40
    assert "torch" in prov["versions"] and "numpy" in prov["versions"]
    assert prov["device"].startswith(("cpu", "cuda"))
    assert prov["wall_time_s"] >= 0


def test_git_commit_unknown_outside_a_repo(tmp_path):
    assert results.git_commit(tmp_path) == "unknown"


def test_csv_and_figure(tmp_path):
    out = results.Results(config.resolve("smoke"), "99_test", root=tmp_path)
    out.csv("rows", [{"a": 1, "b": 2.5}, {"a": 3, "b": 4.0}])
    assert (tmp_path / "rows.csv").read_text() == "a,b\n1,2.5\n3,4.0\n"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    ax.set(title="a line, synthetic, smoke profile", xlabel="x (px)", ylabel="y (px)")
    png = out.figure("fig", fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_git_commit_is_dirty_for_code_changes_not_for_results(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    run = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "m.json").write_text("{}\n")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert results.git_commit(tmp_path) == sha
    (tmp_path / "results" / "m.json").write_text('{"x": 1}\n')  # a re-run's own output
    assert results.git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("a = 2\n")
    assert results.git_commit(tmp_path) == sha + "-dirty"


def test_versions_come_from_package_metadata_for_every_declared_library(tmp_path):
    from importlib import metadata

    versions = results.library_versions()
    assert versions["python"].count(".") == 2
    # Independent source: the installed packages' own metadata, not the module under test.
    for dist in ("numpy", "torch"):
        assert versions[dist] == metadata.version(dist)
    try:
        expected = metadata.version("pydensecrf2")  # imported as `pydensecrf`, which has no __version__
    except metadata.PackageNotFoundError:
        assert "pydensecrf2" not in versions
    else:
        assert versions["pydensecrf2"] == expected != "unknown"
    assert "unknown" not in versions.values()


def test_declared_distributions_read_pyproject_without_dev(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["Foo_Bar>=1", "baz[extra]==2 ; python_version > \'3\'"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8"]\ncrf = ["pydensecrf2==1.1"]\n')
    names = results.declared_distributions(tmp_path / "pyproject.toml")
    assert names == sorted(["foo-bar", "baz", "pydensecrf2", "numpy", "torch", "torchvision"])
