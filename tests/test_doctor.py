"""python -m dlib doctor on good and broken layouts built (by links) from ../shared/data's real VOC files."""

import types

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dlib.core import io as dlib_io
from dlib.core.config import resolve
from dlib.tools import doctor
from dlib.tools.cli import main

TRAIN, VAL, SBD_ONLY = 4, 2, 1  # ids in the miniature train_aug (plus one labelled by SBD only) and val


@pytest.fixture
def layout(tmp_path):
    """<tmp>/VOCdevkit/VOC2012 with 7 real images/labels (links into ../shared/data) and a one-label SBD."""
    shared = dlib_io.shared_voc_root()
    if shared is None:
        pytest.skip("../shared/data/voc2012-train-subset is absent on this machine")
    ids = (shared / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:TRAIN + VAL + SBD_ONLY]
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for i in ids:
        (voc / "JPEGImages" / f"{i}.jpg").symlink_to(shared / "JPEGImages" / f"{i}.jpg")
    for i in ids[:TRAIN + VAL]:
        (voc / "SegmentationClass" / f"{i}.png").symlink_to(shared / "SegmentationClass" / f"{i}.png")
    sbd_id = ids[-1]  # its label only in SBD, as a .mat (SBD has no void band: 255 -> 0)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    with Image.open(shared / "SegmentationClass" / f"{sbd_id}.png") as im:
        label = np.asarray(im).copy()
    label[label == 255] = 0
    scipy.io.savemat(sbd / "cls" / f"{sbd_id}.mat", {"GTcls": {"Segmentation": label}})
    (sbd / "train.txt").write_text(sbd_id + "\n")
    (sbd / "val.txt").write_text("")
    train, val = ids[:TRAIN] + [sbd_id], ids[TRAIN:TRAIN + VAL]
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    return types.SimpleNamespace(root=tmp_path, voc=voc, train=train, val=val, shared=shared, sbd_id=sbd_id)


def _checks(layout, **kw):
    checks = doctor.run_checks(resolve("gpu"), root=layout.root, parts=["data"], expected_train=len(layout.train),
                               expected_val=len(layout.val), label_sample=None, **kw)
    return {c.name: c for c in checks}, checks


def test_a_good_layout_passes_every_data_check(layout):
    by_name, checks = _checks(layout)
    assert all(c.ok for c in checks), doctor.format_checklist(checks)
    assert doctor.exit_code(checks) == 0
    assert by_name["split train_aug"].detail.startswith("5 ids") and by_name["split val"].detail.startswith("2 ids")
    # the value check agrees with the files read directly: largest class index, void present, classes seen
    values = set()
    for i in layout.train + layout.val:
        png = layout.voc / "SegmentationClass" / f"{i}.png"
        if png.exists():
            with Image.open(png) as im:
                values |= set(np.unique(np.asarray(im)).tolist())
        else:
            values |= set(np.unique(scipy.io.loadmat(layout.root / "benchmark_RELEASE" / "dataset" / "cls" /
                                                     f"{i}.mat")["GTcls"][0, 0]["Segmentation"]).tolist())
    classes = sorted(values - {255})
    assert by_name["labels index-coded"].detail.endswith(
        f"values in 0..{max(classes)} and 255 (void), {len(classes)} classes seen")
    text = doctor.format_checklist(checks)
    assert "✗" not in text and text.endswith("ready")


def test_the_papers_counts_are_required_by_default(layout):
    checks = doctor.run_checks(resolve("gpu"), root=layout.root, parts=["data"])
    by_name = {c.name: c for c in checks}
    assert not by_name["split train_aug"].ok and "expected 10,582" in by_name["split train_aug"].detail
    assert not by_name["split val"].ok and "expected 1,449" in by_name["split val"].detail
    assert doctor.exit_code(checks) == 1


def test_rgb_colour_labels_are_named_as_the_common_mistake(layout):
    name = layout.train[1]
    link = layout.voc / "SegmentationClass" / f"{name}.png"
    with Image.open(link) as im:
        rgb = im.convert("RGB")  # what a visualised copy of the labels looks like
    link.unlink()
    rgb.save(link)
    by_name, checks = _checks(layout)
    bad = by_name["labels index-coded"]
    assert not bad.ok and "colour (RGB)" in bad.detail and str(link) in bad.detail
    assert "common mistake" in bad.fix and doctor.exit_code(checks) == 1
    assert "✗ labels index-coded" in doctor.format_checklist(checks)


def test_a_missing_split_file_fails_with_its_fix(layout):
    (layout.voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    by_name, checks = _checks(layout)
    assert not by_name["split val"].ok and "val.txt is missing" in by_name["split val"].detail
    assert "VOCtrainval_11-May-2012.tar" in by_name["split val"].fix and doctor.exit_code(checks) == 1


def test_a_missing_image_and_a_missing_label_are_named(layout):
    (layout.voc / "JPEGImages" / f"{layout.val[0]}.jpg").unlink()
    (layout.root / "benchmark_RELEASE" / "dataset" / "cls" / f"{layout.sbd_id}.mat").unlink()
    by_name, checks = _checks(layout)
    assert not by_name["images present"].ok and layout.val[0] in by_name["images present"].detail
    assert by_name["images present"].detail.startswith("6/7 listed images found")
    assert not by_name["labels present"].ok and layout.sbd_id in by_name["labels present"].detail


def test_val_images_in_the_training_list_are_caught(layout):
    train_aug = layout.voc / "ImageSets" / "Segmentation" / "train_aug.txt"
    train_aug.write_text("\n".join(layout.train[1:] + layout.val[:1]))
    by_name, _ = _checks(layout)
    assert not by_name["train and val disjoint"].ok and layout.val[0] in by_name["train and val disjoint"].detail


def test_cli_prints_the_checklist_and_fails_on_a_broken_layout(layout, capsys):
    (layout.voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    assert main(["doctor", "--root", str(layout.root), "--only", "data", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "✓ PASCAL VOC 2012" in out and "✗ split val" in out and "fix:" in out


def test_gpu_and_bf16_checks():
    class Cuda:
        def __init__(self, available, bf16):
            self.available, self.bf16 = available, bf16

        def is_available(self):
            return self.available

        def device_count(self):
            return 1

        def get_device_name(self, i):
            return "Fake GPU"

        def is_bf16_supported(self):
            return self.bf16

    cfg = resolve("gpu")
    assert [c.ok for c in doctor.gpu_checks(cfg, cuda=Cuda(False, False))] == [False]
    assert [c.ok for c in doctor.gpu_checks(cfg, cuda=Cuda(True, True))] == [True, True]
    no_bf16 = doctor.gpu_checks(cfg, cuda=Cuda(True, False))
    assert not no_bf16[1].ok and "train.bf16=false" in no_bf16[1].fix
    assert doctor.gpu_checks(cfg.replace({"train.bf16": False}), cuda=Cuda(True, False))[1].ok


def test_crf_backend_check_reads_the_registry():
    class Toy:
        def __init__(self, here, missing=""):
            self.here, self.missing = here, missing

        def available(self):
            return self.here

    cfg = resolve("gpu")
    both = {"pydensecrf": Toy(True), "torch": Toy(True)}
    assert doctor.crf_checks(cfg, registry=both)[0].ok
    no_cpp = {"pydensecrf": Toy(False, "pip install -e '.[crf]'"), "torch": Toy(True)}
    check = doctor.crf_checks(cfg, registry=no_cpp)[0]
    assert check.ok and "torch runs" in check.detail  # "auto" falls back to the torch backend
    bad = doctor.crf_checks(cfg.replace({"crf.backend": "pydensecrf"}), registry=no_cpp)[0]
    assert not bad.ok and "pip install -e '.[crf]'" in bad.fix and "--set crf.backend=torch" in bad.fix
    none = {"pydensecrf": Toy(False), "torch": Toy(False)}
    assert not doctor.crf_checks(cfg, registry=none)[0].ok


def test_imagenet_weights_missing_or_damaged(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = resolve("gpu")  # deeplab_v2_resnet101_aspp from ImageNet
    check = doctor.weight_checks(cfg, weights_root=tmp_path / "w")[0]
    assert not check.ok and "--only resnet101_imagenet" in check.fix
    path = tmp_path / "torch" / "hub" / "checkpoints" / "resnet101-63fe2227.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert not hashlib.sha256(b"truncated").hexdigest().startswith("63fe2227")
    check = doctor.weight_checks(cfg, weights_root=tmp_path / "w")[0]
    assert not check.ok and "sha256 prefix" in check.detail
