"""dlib.core.errors: every error a user can meet on the command line is one line naming the key or the file and the fix,
and nothing is lost to report it."""

import errno
import json
import shutil

import numpy as np
import pytest
import torch

from dlib.core import errors
from dlib.nets import standins
from dlib.tools.cli import main

SMOKE = ["--profile", "smoke", "--no-progress"]
TINY = ["--set", "train.iterations=1", "--set", "train.msc=off", "--set", "model.pretrained=null"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def run(tmp_path, cache, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMOKE, *TINY]) == 0
    capsys.readouterr()
    return out


def test_os_errors_name_the_file_and_the_fix():
    assert "no space left" in errors.one_line(OSError(errno.ENOSPC, "No space left on device", "/x/a.json"))
    assert "/x/a.json" in errors.one_line(PermissionError(errno.EACCES, "Permission denied", "/x/a.json"))
    assert "is a file, not a folder" in errors.one_line(FileExistsError(errno.EEXIST, "File exists", "/x/run"))
    assert errors.one_line(KeyError("unknown model 'x'")) == "unknown model 'x'"
    assert errors.one_line(ValueError("two\nlines")) == "two lines"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_device_cuda_without_a_gpu(tmp_path, cache, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *SMOKE, *TINY, "--set", "device=cuda"]) == 2
    err = _err(capsys)
    assert "'device'" in err and "device=cpu" in err and not (tmp_path / "r").exists()


def test_an_existing_file_as_the_output_folder(tmp_path, cache, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert main(["train", "--out", str(out), *SMOKE, *TINY]) == 2
    assert str(out) in _err(capsys) and out.read_text() == "mine"


def test_an_existing_file_as_the_cache_folder(run, tmp_path, capsys):
    cache_file = tmp_path / "probs"
    cache_file.write_text("mine")
    assert main(["evaluate", "--run", str(run), *SMOKE, "--cache", str(cache_file)]) == 2
    err = _err(capsys)
    assert str(cache_file) in err and "not a folder" in err and cache_file.read_text() == "mine"


def test_an_existing_file_as_the_crf_output_folder(tmp_path, cache, capsys):
    from dlib import data
    from dlib.core.config import resolve
    from dlib.core.io import save_probs

    dataset = data.build_dataset(resolve("smoke"), "val")
    h, w = np.asarray(dataset[0][0]).shape[:2]
    save_probs(tmp_path / "probs" / f"{dataset.ids[0]}.npz", np.full((21, h, w), 1 / 21, dtype=np.float32))
    out = tmp_path / "crf.png"
    out.write_text("mine")
    assert main(["crf", "--probs", str(tmp_path / "probs"), "--out", str(out), *SMOKE]) == 2
    assert str(out) in _err(capsys) and out.read_text() == "mine"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EACCES, "cannot write"),
                                         (errno.EROFS, "read-only")])
def test_a_full_disk_or_read_only_folder_while_training(code, words, tmp_path, cache, capsys, monkeypatch):
    from dlib import data
    from dlib.core import io as dlib_io
    from dlib.core.config import resolve

    data.build_dataset(resolve("smoke"), "train")  # the proxy data cached first: the training's own writes fail

    def refuse(fd):
        raise OSError(code, "refused")

    monkeypatch.setattr(dlib_io.os, "fsync", refuse)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *SMOKE, *TINY]) == 2
    err = _err(capsys)
    assert words in err and str(out) in err
    assert not list(out.rglob(".dlib-tmp.*"))  # no temporary left behind


@pytest.fixture
def weights(tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    shutil.copytree(standins.WEIGHTS_DIR, copy)
    monkeypatch.setattr(standins, "WEIGHTS_DIR", copy)
    return copy / "small_resnet_imagenet.pt"


@pytest.mark.parametrize("damage, words", [("truncate", "sha256"), ("flip", "sha256"), ("card", "missing"),
                                           ("json", "not valid JSON")])
def test_a_damaged_stand_in_or_card(damage, words, weights, tmp_path, cache, capsys):
    card = standins.card_path(weights)
    raw = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        weights.write_bytes(raw[:1000] + bytes([raw[1000] ^ 1]) + raw[1001:])
    elif damage == "card":
        card.unlink()
    else:
        card.write_text("{not json")
    assert main(["train", "--out", str(tmp_path / "r"), *SMOKE, "--set", "train.iterations=1"]) == 2
    err = _err(capsys)
    assert words in err and (weights.name in err or card.name in err)


def test_a_csv_given_as_weights(tmp_path, cache, capsys):
    csv = tmp_path / "scores.csv"
    csv.write_text("iteration,loss\n1,2.5\n")
    assert main(["train", "--out", str(tmp_path / "r"), *SMOKE, *TINY[:4], "--set", f"model.pretrained={csv}"]) == 2
    err = _err(capsys)
    assert str(csv) in err and "not a PyTorch file" in err and "unpickling" not in err


def test_a_garbage_row_in_the_training_log_names_the_file(run, capsys):
    log = run / "train_log.csv"
    log.write_text(log.read_text() + "garbage,x,y,z,w\n")
    assert main(["train", "--out", str(run), *SMOKE, *TINY]) == 2
    assert str(log) in _err(capsys)


def test_a_changed_config_says_fresh(run, capsys):
    assert main(["train", "--out", str(run), *SMOKE, *TINY, "--set", "train.base_lr=0.5"]) == 2
    err = _err(capsys)
    assert "--fresh" in err and "resume=False to start over" not in err


@pytest.mark.parametrize("args, words", [(["--out", ""], "--out is empty"),
                                         (["--out", "R", "--stop-after", "-1"], "--stop-after")])
def test_empty_out_and_negative_stop_after_are_refused(args, words, tmp_path, cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args, *SMOKE, *TINY]) == 2
    assert words in _err(capsys)
    written = {p.name for p in tmp_path.iterdir()} - {"cache"}
    assert written == set()  # nothing trained into the current folder, no R/


def test_an_empty_cache_folder_is_refused(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--run", str(run), *SMOKE, "--cache", ""]) == 2
    assert "--cache is empty" in _err(capsys) and not list(tmp_path.glob("*.npz"))


def test_the_final_json_line_is_json(run, capsys):
    assert main(["train", "--out", str(run), *SMOKE, *TINY]) == 0  # nothing left to do: no throughput
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}"))
    assert record["images_per_s"] is None and record["resumed_from"] == 1
