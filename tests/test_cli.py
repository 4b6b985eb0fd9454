"""python -m dlib train | evaluate | crf: help, overrides, and one tiny end-to-end run on the smoke profile."""

import json
import subprocess
import sys

import pytest

from dlib.core.config import parse_overrides, parse_value
from dlib.core.io import read_json
from dlib.experiments import results
from dlib.tools.cli import main


@pytest.mark.parametrize("command", ["train", "evaluate", "crf"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--profile" in text and "--set" in text


def _one(folder, pattern):
    """The one file of ``folder`` matching ``pattern``."""
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


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
    written = read_json(_one(results.results_root() / "smoke" / "evaluate_run", "scores_val_msc_first3_*-it2.json"))
    assert written["data"]["mean_iou"] == pytest.approx(scores["mean_iou"])

    assert main(["crf", "--probs", str(probs), "--out", str(tmp_path / "crf"), *common,
                 "--set", "crf.iterations=1"]) == 0
    refined = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert refined["num_images"] == 3 and len(list((tmp_path / "crf").glob("*.png"))) == 3
    assert (results.results_root() / "smoke" / "crf_probs" / "crf_params.json").exists()
    # the CRF's scores are keyed by its parameters: another setting never overwrites them
    assert _one(results.results_root() / "smoke" / "crf_probs", "scores_val_crf_w1-4_ta-67_tb-3_w2-3_tg-3_it-1_*.json")


def test_evaluate_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--profile", "smoke", "--run", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# ---- typed --set values, evaluations that never overwrite, the model from the checkpoint ----------------

@pytest.mark.parametrize("setting, key", [
    ("train.iterations=abc", "train.iterations"), ("train.iterations=3.7", "train.iterations"),
    ("train.checkpoint_every=0", "train.checkpoint_every"), ("train.batch_size=0", "train.batch_size"),
    ("model.num_classes=5", "model.num_classes"), ("seed=abc", "seed"), ("train.base_lr=-1", "train.base_lr"),
    ("train.msc=maybe", "train.msc"), ("profile=gpu", "profile"),
    ("train.iterations=1000000000000", "train.iterations"), ("train.base_lr=1e308", "train.base_lr"),
    ("train.batch_size=10000000", "train.batch_size"), ("data.crop_size=500", "data.crop_size"),
])
def test_a_bad_set_value_is_one_line_naming_the_key(setting, key, tmp_path, capsys):
    code = main(["train", "--profile", "smoke", "--out", str(tmp_path / "run"), "--set", setting])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and repr(key) in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.fixture
def trained_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--profile", "smoke", "--no-progress", "--set", "train.iterations=1",
                 "--set", "train.msc=off", "--set", "model.width=0.5", "--set", "model.pretrained=null"]) == 0
    capsys.readouterr()
    return run


def test_two_evaluations_of_one_run_keep_both_scores(trained_run, capsys):
    import torch

    saved = torch.load(trained_run / "checkpoints" / "ckpt_0000001.pt", weights_only=True)["config"]
    assert saved["train"]["msc"] is False  # the checkpoint records the boolean, not the text 'off'
    common = ["--profile", "smoke", "--no-progress", "--run", str(trained_run)]
    assert main(["evaluate", *common]) == 0  # model.width=0.5 comes from the checkpoint
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", *common, "--flip"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = results.results_root() / "smoke" / "evaluate_run"
    plain = read_json(_one(folder, "scores_val_????????-it1.json"))
    flipped = read_json(_one(folder, "scores_val_flip_*.json"))
    assert plain["data"]["flip"] is False and flipped["data"]["flip"] is True  # nothing overwritten
    assert plain["data"]["mean_iou"] == pytest.approx(first["mean_iou"])
    assert flipped["data"]["mean_iou"] == pytest.approx(second["mean_iou"])


def test_evaluate_refuses_a_model_override_that_conflicts_with_the_checkpoint(trained_run, capsys):
    common = ["--profile", "smoke", "--no-progress", "--run", str(trained_run)]
    assert main(["evaluate", *common, "--set", "model.name=small_resnet_aspp_s"]) == 2
    err = capsys.readouterr().err
    assert "model.name" in err and "small_resnet_aspp" in err and "ckpt_0000001.pt" in err
    assert main(["evaluate", *common, "--set", "model.width=1.0"]) == 2
    assert "model.width" in capsys.readouterr().err
    assert not (results.results_root() / "smoke" / "evaluate_run").exists()
    assert main(["evaluate", *common, "--set", "model.width=0.5"]) == 0  # agreeing with it is fine


def test_evaluate_names_a_truncated_checkpoint_and_uses_the_intact_one(trained_run, capsys):
    ckpt = trained_run / "checkpoints" / "ckpt_0000001.pt"
    raw = ckpt.read_bytes()
    (trained_run / "checkpoints" / "ckpt_0000002.pt").write_bytes(raw[: len(raw) // 2])  # a truncated newer one
    with pytest.warns(UserWarning, match=r"ckpt_0000002\.pt cannot be read"):
        assert main(["evaluate", "--profile", "smoke", "--no-progress", "--run", str(trained_run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"].endswith("ckpt_0000001.pt")
    assert main(["evaluate", "--profile", "smoke", "--no-progress", "--run",
                 str(trained_run / "checkpoints" / "ckpt_0000002.pt")]) == 2
    assert "ckpt_0000002.pt cannot be read" in capsys.readouterr().err


# ---- results keyed by what produced them --------------------------------------------------------------------

def _train_tiny(out, capsys):
    assert main(["train", "--out", str(out), "--profile", "smoke", "--no-progress", "--set", "train.iterations=1",
                 "--set", "train.msc=off", "--set", "model.width=0.5", "--set", "model.pretrained=null"]) == 0
    capsys.readouterr()


def _scores_files(folder):
    return sorted(p for p in folder.glob("scores_*.json"))


def test_two_runs_with_one_folder_name_keep_both_scores_and_their_identity(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "base", tmp_path / "b" / "base"
    _train_tiny(first, capsys)
    _train_tiny(second, capsys)
    common = ["--profile", "smoke", "--no-progress", "--set", "eval.max_images=2"]
    for run in (first, second):
        assert main(["evaluate", "--run", str(run), *common, "--cache", str(run.parent / "probs")]) == 0
        capsys.readouterr()
    files = _scores_files(results.results_root() / "smoke" / "evaluate_base")
    assert len(files) == 2  # the second run's scores did not replace the first's
    identities = [read_json(f)["provenance"]["identity"] for f in files]
    assert sorted(i["run"] for i in identities) == sorted([str(first.resolve()), str(second.resolve())])
    assert all(i["iteration"] == 1 and i["split"] == "val" and i["msc"] is False for i in identities)
    assert all(i["checkpoint"].endswith("ckpt_0000001.pt") for i in identities)

    for run in (first, second):  # two probs folders with one name: crf keeps both too
        assert main(["crf", "--probs", str(run.parent / "probs"), "--out", str(run.parent / "crf"), *common,
                     "--set", "crf.iterations=1"]) == 0
        capsys.readouterr()
    crf_files = _scores_files(results.results_root() / "smoke" / "crf_probs")
    assert len(crf_files) == 2
    probs = sorted(read_json(f)["provenance"]["identity"]["probs"] for f in crf_files)
    assert probs == sorted(str((r.parent / "probs").resolve()) for r in (first, second))
    assert all(read_json(f)["provenance"]["identity"]["crf"]["iterations"] == 1 for f in crf_files)


def test_crf_refuses_probabilities_of_another_class_count_before_refining(tmp_path, monkeypatch, capsys):
    import numpy as np

    from dlib import data
    from dlib.core.config import resolve
    from dlib.core.io import save_probs

    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    dataset = data.build_dataset(resolve("smoke"), "val")
    h, w = np.asarray(dataset[0][0]).shape[:2]
    probs = tmp_path / "probs"
    save_probs(probs / f"{dataset.ids[0]}.npz", np.full((5, h, w), 0.2, dtype=np.float32))
    out = tmp_path / "crf"
    assert main(["crf", "--profile", "smoke", "--no-progress", "--probs", str(probs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{dataset.ids[0]}.npz" in err and "5 classes" in err and "21" in err
    assert not out.exists() or not list(out.iterdir())  # nothing refined or scored
    assert not (results.results_root() / "smoke" / "crf_probs").exists()


def test_crf_scores_of_one_probs_folder_refilled_by_another_run_keep_both(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "base", tmp_path / "b" / "base"
    probs = tmp_path / "probs"
    common = ["--profile", "smoke", "--no-progress", "--set", "eval.max_images=2"]
    for run in (first, second):
        _train_tiny(run, capsys)
        assert main(["evaluate", "--run", str(run), *common, "--cache", str(probs)]) == 0
        assert main(["crf", "--probs", str(probs), "--out", str(tmp_path / "crf"), *common,
                     "--set", "crf.iterations=1"]) == 0
        capsys.readouterr()
    crf_files = _scores_files(results.results_root() / "smoke" / "crf_probs")
    assert len(crf_files) == 2  # the probabilities came from two runs: two CRF results
    sources = sorted(read_json(f)["provenance"]["identity"]["probs_source"]["run"] for f in crf_files)
    assert sources == sorted([str(first.resolve()), str(second.resolve())])
