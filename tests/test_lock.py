"""dlib.training.lock: a second training on a locked run folder stops naming the holder; a stale lock is taken over."""

import json
import socket
import subprocess
import sys

import pytest

from dlib.tools.cli import main
from dlib.training import lock

DEAD_PID = 2**22 + 12345  # above the default pid_max: no process has it


def _train(out, capsys):
    code = main(["train", "--out", str(out), "--profile", "smoke", "--no-progress", "--set", "train.iterations=1",
                 "--set", "train.msc=off", "--set", "model.pretrained=null"])
    return code, capsys.readouterr().err.strip()


def test_a_second_training_on_a_locked_folder_stops_naming_the_holder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        held = {"pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-02T03:04:05+0000"}
        (run / lock.LOCK_NAME).write_text(json.dumps(held))
        code, err = _train(run, capsys)
        assert code == 2 and len(err.splitlines()) == 1
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and "2026-01-02T03:04:05" in err
        assert str(run) in err and not (run / "checkpoints").exists()  # nothing written
        assert json.loads((run / lock.LOCK_NAME).read_text()) == held  # the holder keeps its lock
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    (run / lock.LOCK_NAME).write_text(json.dumps({"pid": DEAD_PID, "host": socket.gethostname(), "started": "x"}))
    code, _ = _train(run, capsys)
    assert code == 0 and (run / "checkpoints" / "ckpt_0000001.pt").exists()
    assert not (run / lock.LOCK_NAME).exists()  # released when training ended


def test_the_lock_is_exclusive_within_one_host(tmp_path):
    path = lock.acquire(tmp_path)
    with pytest.raises(lock.RunLocked, match="another training"):
        lock.acquire(tmp_path)  # this process holds it and is alive
    lock.release(path)
    assert not path.exists()
    with lock.locked(tmp_path):
        assert path.exists()
    assert not path.exists()


def test_a_folder_made_only_for_the_lock_is_removed(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError, match="before writing"):
        with lock.locked(folder):
            raise RuntimeError("stopped before writing")
    assert not folder.exists()
