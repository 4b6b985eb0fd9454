"""Miniature VOC and SBD archives, made in memory, for the download and fetch tests (never the internet)."""

import io
import tarfile

import numpy as np
import scipy.io
from PIL import Image


def jpeg(h=6, w=8):
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def palette_png(label):
    buf = io.BytesIO()
    im = Image.fromarray(label, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [0] * (254 * 3))
    im.save(buf, "PNG")
    return buf.getvalue()


def mat(label):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"GTcls": {"Segmentation": label, "CategoriesPresent": np.unique(label)}})
    return buf.getvalue()


def tar(members: dict[str, bytes], mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002"], ["2007_000003"]
SBD_TRAIN, SBD_VAL = ["2008_000010", "2007_000003"], ["2008_000011"]  # 2007_000003 is VOC val: left out
SBD_LABELS = {"2008_000010": np.array([[0, 1], [15, 20]], np.uint8), "2007_000003": np.ones((2, 2), np.uint8),
              "2008_000011": np.array([[7, 7], [0, 3]], np.uint8)}


def voc_tar() -> bytes:
    root = "VOCdevkit/VOC2012/"
    members = {f"{root}ImageSets/Segmentation/train.txt": "\n".join(VOC_TRAIN).encode() + b"\n",
               f"{root}ImageSets/Segmentation/val.txt": "\n".join(VOC_VAL).encode() + b"\n"}
    for i in VOC_TRAIN + VOC_VAL + ["2008_000010", "2008_000011"]:
        members[f"{root}JPEGImages/{i}.jpg"] = jpeg(2, 2)
    for i in VOC_TRAIN + VOC_VAL:
        members[f"{root}SegmentationClass/{i}.png"] = palette_png(np.array([[0, 255], [1, 1]], np.uint8))
    return tar(members)


def sbd_tgz() -> bytes:
    root = "benchmark_RELEASE/dataset/"
    members = {f"{root}train.txt": "\n".join(SBD_TRAIN).encode() + b"\n",
               f"{root}val.txt": "\n".join(SBD_VAL).encode() + b"\n"}
    for i, label in SBD_LABELS.items():
        members[f"{root}cls/{i}.mat"] = mat(label)
        members[f"{root}img/{i}.jpg"] = jpeg(2, 2)
    return tar(members, "w:gz")
