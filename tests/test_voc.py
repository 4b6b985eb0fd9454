"""dlib.data.voc: VOC / SBD readers on tiny data sets written here, the train_aug list, pre-flight and its errors."""

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from dlib.core import config
from dlib.core import io as dlib_io
from dlib.core.constants import voc_palette
from dlib.data import proxy
from dlib.data import voc as dlib_voc


def _palette_png(path, label):
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def _write_voc(root, ids_labels, split="train", val=()):
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, label in ids_labels.items():
        pixels = rng.integers(0, 255, label.shape + (3,), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{name}.jpg")
        _palette_png(voc / "SegmentationClass" / f"{name}.png", label)
    (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids_labels))
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{n}\n" for n in val))
    return voc


def test_voc_reads_images_and_palette_labels_as_indices(tmp_path):
    label = np.zeros((20, 30), np.uint8)
    label[5:10, 5:15] = 15
    label[4, :] = 255
    voc = _write_voc(tmp_path, {"2007_000001": label})
    for root in (tmp_path / "VOCdevkit", voc):
        ds = dlib_voc.VOCSegmentation(root, "train")
        image, lab = ds[0]
        assert ds.ids == ["2007_000001"]
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
        assert np.array_equal(lab, label)  # indices, not palette colours; 255 kept


def test_voc_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit.*(?s:.*)[Dd]ownload"):
        dlib_voc.VOCSegmentation(tmp_path / "nowhere", "train")
    label = np.zeros((8, 8), np.uint8)
    voc = _write_voc(tmp_path, {"a": label, "b": label})
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        dlib_voc.VOCSegmentation(voc, "trainval")
    with pytest.raises(FileNotFoundError, match="SBD"):
        dlib_voc.VOCSegmentation(voc, "train_aug")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(voc / "SegmentationClass" / "a.png")  # RGB label
    with pytest.raises(ValueError, match=r"a\.png.*RGB"):
        dlib_voc.VOCSegmentation(voc, "train")[0]
    bad = label.copy()
    bad[0, 0] = 30
    _palette_png(voc / "SegmentationClass" / "b.png", bad)
    with pytest.raises(ValueError, match=r"b\.png.*\[30\]"):
        dlib_voc.VOCSegmentation(voc, "train")[1]


def _write_sbd(root, labels, train, val):
    ds = root / "benchmark_RELEASE" / "dataset"
    (ds / "cls").mkdir(parents=True)
    (ds / "img").mkdir()
    for name, label in labels.items():
        # SBD's layout: a MATLAB struct GTcls with fields Boundaries, Segmentation, CategoriesPresent.
        scipy.io.savemat(ds / "cls" / f"{name}.mat", {"GTcls": {
            "Segmentation": label.astype(np.uint8), "Boundaries": np.zeros((1, 1)),
            "CategoriesPresent": np.unique(label[label > 0]).astype(np.uint8)}})
        Image.fromarray(np.full(label.shape + (3,), 90, np.uint8)).save(ds / "img" / f"{name}.jpg")
    (ds / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (ds / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return ds


def test_sbd_mat_labels_are_read(tmp_path):
    label = np.zeros((12, 9), np.uint8)
    label[2:6, 3:7] = 7
    sbd = _write_sbd(tmp_path, {"2008_000002": label}, ["2008_000002"], [])
    assert np.array_equal(dlib_voc.read_sbd_label(sbd / "cls" / "2008_000002.mat"), label)
    ds = dlib_voc.SBDSegmentation(tmp_path / "benchmark_RELEASE", "train")
    image, lab = ds[0]
    assert image.shape == (12, 9, 3) and np.array_equal(lab, label)
    scipy.io.savemat(sbd / "cls" / "broken.mat", {"other": np.zeros(3)})
    with pytest.raises(ValueError, match="broken.mat.*GTcls"):
        dlib_voc.read_sbd_label(sbd / "cls" / "broken.mat")
    with pytest.raises(FileNotFoundError, match="benchmark_RELEASE"):
        dlib_voc.SBDSegmentation(tmp_path / "missing")


def test_train_aug_is_sbd_train_val_plus_voc_train_minus_voc_val(tmp_path):
    lab = np.zeros((6, 6), np.uint8)
    voc = _write_voc(tmp_path, {"a": lab, "d": lab, "b": lab}, val=["b"])
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nd\n")
    sbd_label = np.full((6, 6), 3, np.uint8)
    _write_sbd(tmp_path, {"a": sbd_label, "b": sbd_label, "c": sbd_label}, ["a", "b"], ["c"])
    ids = dlib_voc.train_aug_ids(voc, tmp_path / "benchmark_RELEASE")
    assert ids == ["a", "c", "d"]
    ds = dlib_voc.VOCSegmentation(voc, "train_aug", sbd_root=tmp_path / "benchmark_RELEASE")
    assert ds.ids == ids
    assert (ds[0][1] == 0).all()  # "a" has a VOC annotation: it is preferred
    assert (ds[1][1] == 3).all()  # "c" exists only in SBD: label and image from SBD


def test_shared_voc_subset():
    root = dlib_io.shared_voc_root()
    if root is None:
        pytest.skip("../shared/data/voc2012-train-subset is absent on this machine")
    ds = dlib_voc.VOCSegmentation(root, "train")
    assert len(ds) == 330
    for i in (0, 1, len(ds) - 1):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape[:2] == label.shape and image.shape[2] == 3
        assert set(np.unique(label).tolist()) <= set(range(21)) | {255}
        assert (label == 255).any()  # VOC outlines objects with void


# --------------------------------------------------------------------------------------------
# Pre-flight: every file opened before a run starts; a damaged one is named
# --------------------------------------------------------------------------------------------

def _truncate(path, keep=0.5):
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])


def _voc_of_three(tmp_path):
    rng = np.random.default_rng(1)
    labels = {n: rng.integers(0, 21, (40, 48)).astype(np.uint8) for n in ("a", "b", "c")}
    return _write_voc(tmp_path, labels)


def test_preflight_passes_intact_data_and_skips_the_in_memory_proxy(tmp_path):
    voc = _voc_of_three(tmp_path)
    assert dlib_voc.preflight(dlib_voc.VOCSegmentation(voc, "train")) == 3
    assert dlib_voc.preflight(proxy.ProxySegmentation("val", size=32, count=2, cache_dir=tmp_path)) == 0


def test_preflight_names_a_truncated_jpeg(tmp_path):
    voc = _voc_of_three(tmp_path)
    before = (voc / "JPEGImages" / "b.jpg").read_bytes()
    _truncate(voc / "JPEGImages" / "b.jpg")
    ds = dlib_voc.VOCSegmentation(voc, "train")
    with pytest.raises(dlib_voc.DataError, match=r"image .*JPEGImages/b\.jpg is truncated.*VOC 2012.*VOCtrainval"):
        dlib_voc.preflight(ds)
    with pytest.raises(dlib_voc.DataError, match=r"JPEGImages/b\.jpg"):  # reading it later names it too
        ds[1]
    assert (voc / "JPEGImages" / "b.jpg").read_bytes() == before[:len(before) // 2]  # nothing was changed


def test_preflight_names_an_rgb_label_and_a_label_of_the_wrong_size(tmp_path):
    voc = _voc_of_three(tmp_path)
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(voc / "SegmentationClass" / "c.png")
    with pytest.raises(dlib_voc.DataError, match=r"SegmentationClass/c\.png is a RGB image"):
        dlib_voc.preflight(dlib_voc.VOCSegmentation(voc, "train"))
    _palette_png(voc / "SegmentationClass" / "c.png", np.zeros((40, 40), np.uint8))
    with pytest.raises(dlib_voc.DataError, match=r"c\.jpg is \(40, 48\).*c\.png is \(40, 40\)"):
        dlib_voc.preflight(dlib_voc.VOCSegmentation(voc, "train"))


def test_preflight_names_a_corrupt_sbd_mat(tmp_path):
    label = np.ones((10, 12), np.uint8)
    sbd = _write_sbd(tmp_path, {"x": label, "y": label}, ["x", "y"], [])
    _truncate(sbd / "cls" / "y.mat", 0.6)
    ds = dlib_voc.SBDSegmentation(tmp_path / "benchmark_RELEASE", "train")
    with pytest.raises(dlib_voc.DataError, match=r"SBD label .*cls/y\.mat is truncated or corrupt.*benchmark\.tgz"):
        dlib_voc.preflight(ds)


def test_a_damaged_file_is_named_from_inside_loader_workers(tmp_path):
    voc = _voc_of_three(tmp_path)
    _truncate(voc / "JPEGImages" / "c.jpg")
    loader = torch.utils.data.DataLoader(dlib_voc.VOCSegmentation(voc, "train"), batch_size=1, num_workers=2,
                                         collate_fn=lambda batch: batch)
    with pytest.raises(dlib_voc.DataError, match=r"JPEGImages/c\.jpg"):
        for _ in loader:
            pass


def test_training_fails_before_the_first_step_on_a_damaged_file(tmp_path, monkeypatch):
    from dlib.training import train

    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))
    voc = _voc_of_three(tmp_path)
    _truncate(voc / "JPEGImages" / "c.jpg")
    cfg = config.resolve("smoke", overrides={"data.dataset": "voc", "data.voc_root": str(voc),
                                             "data.train_split": "train", "train.iterations": 2,
                                             "data.crop_size": 32})
    steps = []
    with pytest.raises(dlib_voc.DataError, match=r"c\.jpg"):
        train.train(cfg, tmp_path / "run", callback=lambda i, loss: steps.append(i), progress=False)
    assert steps == [] and not (tmp_path / "run" / "checkpoints").exists()
