"""python -m dlib train | evaluate | crf: help, overrides, and one tiny end-to-end run on the smoke profile."""

import json
import subprocess
import sys

import pytest

from dlib import results
from dlib.__main__ import main, parse_overrides, parse_value


@pytest.mark.parametrize("command", ["train", "evaluate", "crf"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--profile" in text and "--set" in text


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "dlib", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and "evaluate" in done.stdout and "crf" in done.stdout


def test_set_values_are_parsed():
    assert parse_value("500") == 500 and parse_value("1e-3") == 0.001 and parse_value("true") is True
    assert parse_value("None") is None and parse_value("small_resnet_aspp") == "small_resnet_aspp"
    assert parse_value("[0.5, 1.5]") == [0.5, 1.5]
    assert parse_overrides(["train.iterations=3", "model.pretrained=null"]) == {
        "train.iterations": 3, "model.pretrained": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["train.iterations"])


def test_bad_key_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--profile", "smoke", "--out", str(tmp_path / "run"), "--set", "train.iters=3"])
    assert code == 2 and "unknown config key" in capsys.readouterr().err


def test_train_evaluate_crf_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    common = ["--profile", "smoke", "--no-progress", "--set", "train.iterations=2", "--set", "eval.max_images=3"]
    assert main(["train", "--out", str(run), *common]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["iterations"] == 2 and trained["complete"] and (run / "train_log.csv").exists()
    # Running it again resumes: nothing left to do.
    assert main(["train", "--out", str(run), *common]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 2

    probs = tmp_path / "probs"
    assert main(["evaluate", "--run", str(run), "--cache", str(probs), "--msc", *common]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["num_images"] == 3 and scores["msc"] and 0 <= scores["mean_iou"] <= 1
    assert len(list(probs.glob("*.npz"))) == 3
    written = results.read_json(results.results_root() / "smoke" / "evaluate_run" / "scores_val.json")
    assert written["data"]["mean_iou"] == pytest.approx(scores["mean_iou"])

    assert main(["crf", "--probs", str(probs), "--out", str(tmp_path / "crf"), *common,
                 "--set", "crf.iterations=1"]) == 0
    refined = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert refined["num_images"] == 3 and len(list((tmp_path / "crf").glob("*.png"))) == 3
    assert (results.results_root() / "smoke" / "crf_probs" / "crf_params.json").exists()


def test_evaluate_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--profile", "smoke", "--run", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
