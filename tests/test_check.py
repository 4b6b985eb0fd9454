"""dlib.tools.check: committed numbers against re-measured ones."""

import json

import numpy as np
import pytest

from dlib import data
from dlib.core import config
from dlib.tools import check


def _write(folder, rel, content):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": content, "provenance": {}}))


def test_agreement_within_tolerance_and_failure_outside(tmp_path):
    _write(tmp_path, "a/x.json", {"v": 0.50})
    checks = [check.Check("close", "a/x.json", lambda d: d["v"], lambda p: 0.504, 0.01),
              check.Check("far", "a/x.json", lambda d: d["v"], lambda p: 0.52, 0.01)]
    rows = check.run_checks("smoke", checks, tmp_path)
    assert [r["ok"] for r in rows] == [True, False]
    assert rows[1]["committed"] == 0.50 and rows[1]["measured"] == 0.52


def test_missing_committed_results_say_how_to_make_them(tmp_path):
    measured = []
    checks = [check.Check("x", "06_ablation/runs.json", lambda d: d, lambda p: measured.append(p) or 0.0, 0.1)]
    with pytest.raises(check.MissingResults, match="run ./run_all.sh"):
        check.run_checks("cpu", checks, tmp_path)
    assert measured == []  # nothing measured before every committed file is found


def test_trivial_baseline_check_measures_the_smoke_val_set(tmp_path):
    cfg = config.resolve("smoke")
    val = data.build_dataset(cfg, "val")
    n = len(val) if cfg.eval.max_images is None else min(len(val), cfg.eval.max_images)
    labels = np.concatenate([np.asarray(val[i][1]).ravel() for i in range(n)])
    labels = labels[labels != 255]
    # Background everywhere, counted by hand: IoU_0 = background pixels / scored pixels; every other class in
    # the labels has IoU 0; classes in neither labels nor prediction leave the mean.
    expected = (labels == 0).mean() / len(set(np.unique(labels).tolist()) | {0})
    _write(tmp_path, "05_training/summary.json", {"trivial": {"mean_iou": expected}})
    trivial = check.default_checks("smoke")[0]
    rows = check.run_checks("smoke", [trivial], tmp_path)
    assert rows[0]["ok"] and rows[0]["measured"] == pytest.approx(expected, rel=1e-12)


def test_main_exit_codes(tmp_path, capsys):
    assert check.main(["--profile", "smoke", "--results", str(tmp_path)]) == 2
    assert "run ./run_all.sh" in capsys.readouterr().err
