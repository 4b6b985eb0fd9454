import os

import pytest

# Keep tests on two cores predictable, and never write into the repository's results/.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path / "results"))
    yield
