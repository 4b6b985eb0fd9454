"""File formats (dlib.core.io): round trips of images, labels, probability maps and JSON, named errors, and atomic
writes
that survive an interruption or a killed process."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from dlib.core import io as dlib_io
from dlib.core.constants import voc_palette
from dlib.core.io import load_probs, read_image, read_json, read_label, save_probs, write_label


def _softmax(seed, c=4, h=5, w=6):
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=(h, w)).transpose(2, 0, 1).astype(np.float32)


def test_probability_cache_round_trip(tmp_path):
    probs = _softmax(2)
    path = save_probs(tmp_path / "a.npz", probs)
    with np.load(path) as data:
        assert data["probs"].dtype == np.float16 and data["probs"].shape == probs.shape
    back = load_probs(path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(back, probs, atol=2e-3)  # float16 keeps ~3 decimal digits
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        save_probs(tmp_path / "b.npz", probs[0])


def test_a_corrupt_cached_npz_is_named(tmp_path):
    good = np.full((3, 4, 5), 1 / 3, np.float32)
    save_probs(tmp_path / "a.npz", good)
    raw = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "b.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"b\.npz are truncated or corrupt.*--cache"):
        load_probs(tmp_path / "b.npz")
    assert np.allclose(load_probs(tmp_path / "a.npz"), good, atol=1e-3)  # the intact file is untouched
    with pytest.raises(FileNotFoundError):
        load_probs(tmp_path / "missing.npz")


def test_label_png_round_trip_keeps_indices_and_the_voc_palette(tmp_path):
    from PIL import Image

    label = np.arange(30, dtype=np.uint8).reshape(5, 6) % 21
    label[0, 0] = 255  # void
    path = write_label(tmp_path / "sub" / "x.png", label)
    np.testing.assert_array_equal(read_label(path), label)
    with Image.open(path) as im:
        assert im.mode == "P"
        # class 1 is dark red (128, 0, 0) and 15 (person) (192, 128, 128): VOCdevkit's colour map
        assert im.getpalette()[3:6] == [128, 0, 0] and im.getpalette()[45:48] == [192, 128, 128]
        rgb = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(rgb, voc_palette()[label])


def test_image_round_trip_is_rgb_uint8(tmp_path):
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), image)
    Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")  # a grey image comes back as 3 equal channels
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), np.repeat(image[..., :1], 3, axis=2))


def test_read_json_returns_the_object_or_the_default(tmp_path):
    payload = {"a": [1, 2.5, None], "b": {"c": "d"}}
    (tmp_path / "ok.json").write_text(json.dumps(payload))
    assert read_json(tmp_path / "ok.json") == payload
    (tmp_path / "bad.json").write_text('{"a": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not an object"):
        read_json(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
    for name in ("bad.json", "list.json", "missing.json"):
        assert read_json(tmp_path / name, default=None) is None
    assert read_json(tmp_path / "missing.json", default={}) == {}
    assert read_json(tmp_path / "ok.json", default=None) == payload


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    dlib_io.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(dlib_io.os, "replace", boom)  # the os module dlib.core.io writes with
    with pytest.raises(OSError):
        dlib_io.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = dlib_io.atomic_write_text(tmp_path / "scores.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, like any file the user writes
    old = os.umask(0o077)
    try:
        path = dlib_io.atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_killed_write_leaves_the_old_file_and_its_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "scores.json"
    dlib_io.atomic_write_text(target, "old")
    # A writer killed between writing its temporary and renaming it (SIGKILL: no clean-up runs).
    code = ("import os, sys; from dlib.core import io as dlib_io; os.fsync = lambda fd: os._exit(9); "
            f"dlib_io.atomic_write_text({str(target)!r}, 'new')")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(dlib_io.REPO_ROOT)},
                          timeout=60)
    assert done.returncode == 9
    left = list(tmp_path.glob(".*.tmp"))
    assert len(left) == 1 and target.read_text() == "old"  # nothing lost
    dlib_io.atomic_write_text(tmp_path / "other.json", "x")  # any later write in the folder cleans up
    assert not list(tmp_path.glob(".*.tmp")) and target.read_text() == "old"


def test_repo_relative_paths_name_no_machine_folder(tmp_path, monkeypatch):
    root = dlib_io.REPO_ROOT
    assert dlib_io.repo_relative(root / "dlib" / "core" / "io.py") == "dlib/core/io.py"
    assert dlib_io.repo_relative(root) == "."
    # Outside the repository: climb out of it, as many levels as the repository is deep below the common folder.
    assert dlib_io.repo_relative(root.parent / "shared" / "data") == "../shared/data"
    assert dlib_io.repo_relative(tmp_path / "x.png") == os.path.relpath(tmp_path / "x.png", root).replace(os.sep, "/")
    monkeypatch.chdir(root / "dlib")  # a relative path is read from the current directory
    assert dlib_io.repo_relative("weights") == "dlib/weights"


def test_the_sweep_removes_only_the_project_temporaries(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    mine = tmp_path / f".{dlib_io.TMP_PREFIX}scores.json.{dead}.abc123.tmp"
    notes = tmp_path / f".mynotes.{dead}.draft.tmp"  # a user's file in the same pattern, without the prefix
    for path in (mine, notes):
        path.write_text("x")
    dlib_io.atomic_write_text(tmp_path / "other.json", "y")
    assert not mine.exists()
    assert notes.read_text() == "x"  # never touched
    written = list(tmp_path.glob(".*"))
    assert written == [notes]  # the write's own temporary was renamed into place
