"""``python -m dlib doctor``: is this machine set up to replicate the paper? A checklist with a fix per ✗.

The usual reason a DeepLab v2 reproduction lands near 68-70% instead of 76% is the set-up, not the code:
colour (RGB) label PNGs instead of index-coded ones, the 1,464-image VOC train list instead of the 10,582
train_aug ids, val images leaking into training, missing SBD labels, the wrong initial weights. Each check
below looks for one of these and names the fix.

    >>> checks = run_checks(resolve("gpu"), root="~/data", parts=["data"])   # doctest: +SKIP
    >>> print(format_checklist(checks)); exit_code(checks)                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlib import crf
from dlib.core import constants
from dlib.core.config import Config
from dlib.data import voc as dlib_voc
from dlib.nets import models
from dlib.tools import download
from dlib.tools.download import CHECKSUMS_FILE, data_root, file_digest, read_checksums

PARTS = ("data", "weights", "gpu", "crf")


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, what was found, and how to fix it when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True  # a failed required check makes the exit status non-zero


def format_checklist(checks: Sequence[Check]) -> str:
    lines = []
    for c in checks:
        mark = "✓" if c.ok else ("✗" if c.required else "!")  # "!": failed, but not required
        lines.append(f"{mark} {c.name}: {c.detail}" + ("" if c.ok or c.required else " (optional)"))
        if not c.ok and c.fix:
            lines.append(f"    fix: {c.fix}")
    failed = [c for c in checks if not c.ok and c.required]
    lines.append(f"{sum(c.ok for c in checks)}/{len(checks)} checks passed" + (
        f"; {len(failed)} required check(s) failed" if failed else "; ready"))
    return "\n".join(lines)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when every required check passed, else 1."""
    return int(any(not c.ok and c.required for c in checks))


def run_checks(cfg: Config, *, root: str | os.PathLike | None = None, weights_root: str | os.PathLike | None = None,
               parts: Sequence[str] | None = None, label_sample: int | None = 300,
               expected_train: int = dlib_voc.TRAIN_AUG_SIZE, expected_val: int = dlib_voc.VAL_SIZE,
               progress: bool = False) -> list[Check]:
    """The checklist for ``cfg`` (its data roots, model, bf16 setting); ``parts`` picks from :data:`PARTS`.

    ``root``: where ``download`` put the data, used when ``data.voc_root`` / ``data.sbd_root`` are unset.
    ``label_sample``: how many labels (spread evenly over the splits) have their pixel values read; every
    label's mode is checked from its header. ``expected_*``: the split sizes (the paper's by default).
    """
    parts = list(parts or PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown doctor parts {unknown}; choose from {', '.join(PARTS)}")
    checks: list[Check] = []
    if "data" in parts:
        checks += data_checks(cfg, root=root, label_sample=label_sample, expected_train=expected_train,
                              expected_val=expected_val, progress=progress)
    if "weights" in parts:
        checks += weight_checks(cfg, weights_root=weights_root)
    if "gpu" in parts:
        checks += gpu_checks(cfg)
    if "crf" in parts:
        checks += crf_checks(cfg)
    return checks


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def _roots(cfg: Config, root: str | os.PathLike | None) -> tuple[Path, Path]:

    base = Path(root).expanduser() if root is not None else data_root()
    voc = Path(cfg.data.voc_root).expanduser() if cfg.data.voc_root else base / "VOCdevkit"
    sbd = Path(cfg.data.sbd_root).expanduser() if cfg.data.sbd_root else base / "benchmark_RELEASE"
    return voc, sbd


def _download_fix(what: str, root: str | os.PathLike | None) -> str:
    return f"python -m dlib download {what}" + (f" --root {root}" if root is not None else "")


def data_checks(cfg: Config, *, root=None, label_sample: int | None = 300,
                expected_train: int = dlib_voc.TRAIN_AUG_SIZE, expected_val: int = dlib_voc.VAL_SIZE,
                progress: bool = False) -> list[Check]:
    voc_path, sbd_path = _roots(cfg, root)
    out: list[Check] = []
    try:
        voc = dlib_voc.find_voc2012(voc_path)
    except FileNotFoundError:
        return [Check("PASCAL VOC 2012", False, f"no VOCdevkit/VOC2012 at {voc_path}",
                      f"{_download_fix('voc', root)}, or --set data.voc_root=<your VOCdevkit>")]
    out.append(Check("PASCAL VOC 2012", True, str(voc)))

    try:
        sbd = dlib_voc.find_sbd(sbd_path)
    except FileNotFoundError:
        sbd = None
    out.append(_sbd_check(sbd, sbd_path, root))

    splits: dict[str, list[str]] = {}
    for split, expected, why in ((cfg.data.train_split, expected_train,
                                  "SBD train+val plus VOC train, minus VOC val (DeepLab v2, Sec. 4.1)"),
                                 (cfg.data.val_split, expected_val, "the official VOC 2012 val list")):
        check, ids = _split_check(voc / "ImageSets" / "Segmentation" / f"{split}.txt", split, expected, why, root)
        out.append(check)
        if ids is not None:
            splits[split] = ids
    train, val = splits.get(cfg.data.train_split), splits.get(cfg.data.val_split)
    if train is not None and val is not None:
        leak = sorted(set(train) & set(val))
        out.append(Check("train and val disjoint", not leak,
                         "no val image in the training list" if not leak else
                         f"{len(leak)} val images are in {cfg.data.train_split}, e.g. {leak[:3]}",
                         "" if not leak else
                         "rebuild the training list without VOC val: " + _download_fix("sbd", root)))
    if splits:
        out += _file_checks(voc, sbd, splits, label_sample, progress)
    return out


def _split_check(path: Path, split: str, expected: int, why: str, root) -> tuple[Check, list[str] | None]:
    """One split list: present, of the expected size, no id twice; (its check, its ids or None)."""
    if not path.is_file():
        fix = (_download_fix("sbd", root) + " (writes train_aug.txt once VOC and SBD are both there)"
               if split == "train_aug" else f"re-extract ImageSets/Segmentation/{split}.txt from "
                                            f"VOCtrainval_11-May-2012.tar ({_download_fix('voc', root)})")
        return Check(f"split {split}", False, f"{path} is missing", fix), None
    ids = dlib_voc.read_ids(path)
    dupes = len(ids) - len(set(ids))
    ok = len(ids) == expected and not dupes
    detail = f"{len(ids):,} ids in {path.name}" + (f" ({dupes} repeated)" if dupes else "")
    fix = "" if ok else (f"expected {expected:,} ({why}); "
                         + (_download_fix("sbd", root) + " rewrites train_aug.txt" if split == "train_aug"
                            else f"re-extract it ({_download_fix('voc', root)})"))
    return Check(f"split {split}", ok, detail if ok else f"{detail}, expected {expected:,}", fix), ids


def _sbd_check(sbd: Path | None, sbd_path: Path, root) -> Check:
    if sbd is None:
        return Check("SBD", False, f"no benchmark_RELEASE/dataset at {sbd_path}",
                     f"{_download_fix('sbd', root)}, or --set data.sbd_root=<your benchmark_RELEASE>", required=False)
    mats = sorted((sbd / "cls").glob("*.mat"))
    if not mats:
        return Check("SBD", False, f"{sbd / 'cls'} holds no .mat labels", f"re-extract benchmark.tgz: "
                     f"{_download_fix('sbd', root)}", required=False)
    try:
        label = dlib_voc.read_sbd_label(mats[0])
    except (ImportError, ValueError, OSError) as err:
        return Check("SBD", False, f"{mats[0]} unreadable: {err}", "pip install scipy, or re-extract benchmark.tgz",
                     required=False)
    pngs = len(list((sbd / dlib_voc.SBD_PNG_DIR).glob("*.png"))) if (sbd / dlib_voc.SBD_PNG_DIR).is_dir() else 0
    return Check("SBD", True, f"{len(mats):,} .mat labels ({mats[0].name}: {label.shape[1]}x{label.shape[0]} "
                 f"readable), {pngs:,} converted PNGs in {dlib_voc.SBD_PNG_DIR}/")


def _label_mode(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return im.mode


def _file_checks(voc: Path, sbd: Path | None, splits: dict[str, list[str]], label_sample: int | None,
                 progress: bool) -> list[Check]:
    from tqdm import tqdm

    ds = dlib_voc.VOCSegmentation(voc, ids=[], sbd_root=sbd.parent if sbd is not None else None)
    names = sorted({i for ids in splits.values() for i in ids})
    missing_images, missing_labels, colour, bad_mode, sources = [], [], [], [], {}
    for name in tqdm(names, desc="doctor: files", unit="id", disable=not progress, mininterval=1.0):
        if not ds.image_path(name).is_file():
            missing_images.append(name)
        label = ds.label_source(name)
        if not label.is_file():
            missing_labels.append(name)
            continue
        sources[name] = label
        if label.suffix == ".png":
            mode = _label_mode(label)
            if mode in ("RGB", "RGBA"):
                colour.append(label)
            elif mode not in ("P", "L"):
                bad_mode.append((label, mode))
    n = len(names)
    out = [Check("images present", not missing_images,
                 f"{n - len(missing_images):,}/{n:,} listed images found" + (
                     f"; missing e.g. {missing_images[:3]}" if missing_images else ""),
                 "" if not missing_images else "JPEGImages/<id>.jpg must exist for every listed id; re-extract "
                 "VOCtrainval_11-May-2012.tar (python -m dlib download voc)")]
    out.append(Check("labels present", not missing_labels,
                     f"{n - len(missing_labels):,}/{n:,} labels found (VOC SegmentationClass, else SBD)" + (
                         f"; missing e.g. {missing_labels[:3]}" if missing_labels else ""),
                     "" if not missing_labels else "ids outside VOC's 2,913 annotated images take SBD's label: "
                     "python -m dlib download sbd (and --set data.sbd_root=<benchmark_RELEASE> if elsewhere)"))
    if colour:
        out.append(Check("labels index-coded", False, f"{len(colour):,} label PNGs are colour (RGB) images, e.g. "
                         f"{colour[0]}", "the common mistake: these are the coloured visualisations. Labels must "
                         "hold class indices (mode 'P' palette PNGs as in VOCtrainval_11-May-2012.tar's "
                         "SegmentationClass, or SBD converted by 'python -m dlib download sbd'); replace them"))
    elif bad_mode:
        out.append(Check("labels index-coded", False, f"{len(bad_mode):,} labels have mode {bad_mode[0][1]!r}, e.g. "
                         f"{bad_mode[0][0]}", "labels must be 8-bit palette ('P') or grey ('L') PNGs of class indices"))
    else:
        out.append(_value_check(sources, label_sample))
    return out


def _value_check(sources: dict[str, Path], label_sample: int | None) -> Check:
    """Read ``label_sample`` labels (evenly spread; all when None) and check their values: 0..20 and 255."""
    names = sorted(sources)
    if label_sample is not None and label_sample < len(names):
        names = [names[i] for i in np.linspace(0, len(names) - 1, label_sample).round().astype(int)]
    seen: set[int] = set()
    for name in names:
        try:
            label = dlib_voc.read_label_file(sources[name])
        except (ValueError, OSError) as err:  # DataError is a ValueError: values outside 0..20 and 255
            return Check("labels index-coded", False, str(err),
                         f"labels hold class indices 0..{constants.NUM_CLASSES - 1} and {constants.IGNORE_INDEX} "
                         "(void) only; replace this file from the original archive")
        seen.update(np.unique(label).tolist())
    classes = sorted(v for v in seen if v != constants.IGNORE_INDEX)
    void = constants.IGNORE_INDEX in seen
    return Check("labels index-coded", True, f"{len(names):,} labels read: values in 0..{max(classes, default=0)}"
                 f"{f' and {constants.IGNORE_INDEX} (void)' if void else ''}, {len(classes)} classes seen")


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def weight_checks(cfg: Config, *, weights_root=None) -> list[Check]:

    out = []
    pretrained = cfg.model.pretrained
    if pretrained == "imagenet":
        try:
            backbone = models.info(cfg.model.name).backbone
        except KeyError:
            backbone = None
        if backbone in download.IMAGENET:
            path = download.imagenet_file(backbone)
            if not path.is_file():
                out.append(Check(f"ImageNet {backbone}", False, f"{path} is missing",
                                 f"python -m dlib download weights --only {backbone}_imagenet"))
            elif not download.imagenet_hash_ok(path):
                out.append(Check(f"ImageNet {backbone}", False, f"{path} does not match the sha256 prefix in its "
                                 "name (damaged or truncated)", f"delete it and run python -m dlib download "
                                 f"weights --only {backbone}_imagenet"))
            else:
                out.append(Check(f"ImageNet {backbone}", True, f"{path} (sha256 matches torchvision's)"))
        else:
            out.append(Check("ImageNet weights", True, f"{cfg.model.name} uses the shipped stand-ins or none"))
    elif pretrained:
        out.append(_user_file("model.pretrained", pretrained))
    if cfg.model.coco_checkpoint and cfg.model.coco_checkpoint != "coco":
        out.append(_user_file("model.coco_checkpoint", cfg.model.coco_checkpoint, required=False))
    out += _caffe_checks(Path(weights_root) if weights_root is not None else download.weights_root())
    return out


def _user_file(key: str, value: str, required: bool = True) -> Check:
    path = Path(value).expanduser()
    if not path.is_file():
        return Check(key, False, f"{path} does not exist", f"--set {key}=<an existing file>", required=required)
    return Check(key, True, f"{path} ({path.stat().st_size / 1e6:.0f} MB; no checksum is known for a file you chose)")


def _caffe_checks(folder: Path) -> list[Check]:

    sums = read_checksums(folder)
    if not sums:
        return [Check("released Caffe models", False, f"none recorded in {folder / CHECKSUMS_FILE}",
                      "optional (the released DeepLab models): python -m dlib download weights --only "
                      "deeplab_v2_resnet101_caffe", required=False)]
    bad = [rel for rel, digest in sums.items() if not (folder / rel).is_file() or file_digest(folder / rel) != digest]
    return [Check("released Caffe models", not bad,
                  f"{len(sums) - len(bad)}/{len(sums)} files match the sha256 recorded at download (none is "
                  "published by the authors)" + (f"; changed or missing: {bad[:3]}" if bad else ""),
                  "" if not bad else "download them again: python -m dlib download weights --only <name>",
                  required=False)]


# --------------------------------------------------------------------------------------------
# GPU and CRF
# --------------------------------------------------------------------------------------------

def gpu_checks(cfg: Config, *, cuda: Any = None) -> list[Check]:
    """CUDA and bf16 (``cuda``: torch.cuda, replaceable in tests)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return [Check("GPU", False, "torch.cuda.is_available() is False",
                      "install a CUDA build of torch 2.14.1 matching the driver (nvidia-smi), or use --profile cpu")]
    names = [cuda.get_device_name(i) for i in range(cuda.device_count())]
    out = [Check("GPU", True, f"{len(names)} x {names[0]}")]
    bf16 = bool(cuda.is_bf16_supported())
    out.append(Check("bf16", bf16 or not cfg.train.bf16,
                     "supported" if bf16 else "not supported by this GPU" + (
                         " (train.bf16=false: float32 is used)" if not cfg.train.bf16 else ""),
                     "" if bf16 else "--set train.bf16=false (float32; slower, same numbers)"))
    return out


def crf_checks(cfg: Config, *, registry: Mapping[str, Any] | None = None) -> list[Check]:
    """The CRF backend ``crf.backend`` names (or, for "auto", any registered one) can run here."""

    registry = crf.BACKEND_REGISTRY if registry is None else registry
    here = [name for name, backend in registry.items() if backend.available()]
    wanted = cfg.crf.backend
    if wanted != "auto" and wanted not in here:
        others = " or ".join(f"--set crf.backend={n}" for n in here)
        return [Check("CRF backend", False, f"crf.backend={wanted} but it cannot run here",
                      registry[wanted].missing + (f"; or {others}" if others else ""))]
    if not here:
        return [Check("CRF backend", False, "no CRF backend can run here", "pip install -e '.[crf]'")]
    return [Check("CRF backend", True, f"{wanted if wanted != 'auto' else here[0]} runs (available here: "
                  f"{', '.join(here)}; registered: {', '.join(registry)})")]
