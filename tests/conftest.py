import os

import pytest

# Keep tests on two cores predictable, and never write into the repository's results/.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path / "results"))
    yield


@pytest.fixture
def two_halves():
    """A hand-made CRF case (tests of dlib.crf and dlib.crf_tuning): left half red = class 0, right half
    blue = class 1; the unary gives the true class 0.7, but 0.4 at four 'salt' pixels. (image, probs, truth)."""
    import numpy as np

    h, w = 10, 12
    truth = np.zeros((h, w), np.int64)
    truth[:, 6:] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[truth == 0] = (200, 30, 30)
    image[truth == 1] = (30, 30, 200)
    p_true = np.full((h, w), 0.7)
    for r, c in [(2, 2), (7, 3), (4, 9), (8, 10)]:
        p_true[r, c] = 0.4
    probs = np.stack([np.where(truth == 0, p_true, 1 - p_true), np.where(truth == 1, p_true, 1 - p_true)])
    return image, probs.astype(np.float32), truth
