"""PASCAL VOC 2012 and SBD: readers, label checks, the train_aug list and a pre-flight check of the files.

:class:`VOCSegmentation` reads the VOCdevkit layout (``VOC2012/JPEGImages``,
``SegmentationClass``, ``ImageSets/Segmentation/<split>.txt``); :class:`SBDSegmentation` reads
the Semantic Boundaries Dataset (``benchmark_RELEASE/dataset/cls/<id>.mat``, field
``GTcls.Segmentation``). The ``train_aug`` split (10,582 images; DeepLab v2, Sec. 4.1) is SBD
train+val plus VOC train, minus VOC val (:func:`train_aug_ids`).

Every reader has the interface of :mod:`dlib.data` (``len``, ``ids``, ``ds[i] -> (image, label)``); a damaged
file raises :class:`DataError` naming the file, its data set and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dlib.core.constants import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from dlib.core.io import atomic_write_text, write_label

TRAIN_AUG_SIZE = 10582  # DeepLab v2, Sec. 4.1: the augmented training set (SBD train+val + VOC train - VOC val)
VAL_SIZE = 1449  # PASCAL VOC 2012 segmentation val
# SBD's cls/<id>.mat labels as index-coded palette PNGs (benchmark_RELEASE/dataset/SegmentationClassAug/<id>.png),
# written once by `python -m dlib download sbd` (convert_sbd_labels); read in place of the .mat when present.
SBD_PNG_DIR = "SegmentationClassAug"

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"
SBD_URL = ("http://home.bharathh.info/pubs/codes/SBD/download.html "
           "(benchmark.tgz, unpacks to benchmark_RELEASE/)")


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the data set and the fix."""


# Errors PIL, scipy and numpy raise for damaged files (truncated, not the format the name says).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError, AttributeError)


def _where(path: Path) -> str:
    """Which data set a file belongs to, and how to repair it, from its location."""
    text = str(path)
    if "/cls/" in text or "benchmark_RELEASE" in text or "/img/" in text:
        return f"SBD; re-extract it from benchmark.tgz ({SBD_URL})"
    if "JPEGImages" in text or "SegmentationClass" in text or "VOC" in text:
        return f"PASCAL VOC 2012; re-extract it from VOCtrainval_11-May-2012.tar ({VOC_URL})"
    return "re-create or re-download it"


def _damaged(kind: str, path: Path, err: BaseException) -> DataError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"{kind} {path} is truncated or corrupt ({type(err).__name__}: {reason}); "
                     f"data set: {_where(path)}, "
                     "or remove its id from the split file")


def _complete(path: Path) -> bool:
    """The file ends as its format requires (JPEG: an EOI marker; PNG: the IEND chunk); other formats pass."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(0, os.SEEK_END)
        fh.seek(max(fh.tell() - 1024, 0))
        tail = fh.read()
    if head[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in tail  # in the entropy-coded data 0xFF is never followed by 0xD9
    if head == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in tail[-32:]
    return True


def image_size(path: str | os.PathLike, kind: str = "image") -> tuple[int, int]:
    """(H, W) of an image file from its header, after checking the file is complete; DataError names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} is missing; data set: {_where(path)}")
    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
        complete = _complete(path)
    except _DECODE_ERRORS as err:
        raise _damaged(kind, path, err) from None
    if not complete:
        raise _damaged(kind, path, EOFError("the file ends before its end marker"))
    if kind == "label":
        _check_label_mode(path, mode)
    return height, width


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image {path} is missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except _DECODE_ERRORS as err:
        raise _damaged("image", path, err) from None


def check_label(label: np.ndarray, source: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Raise ValueError naming ``source`` if ``label`` holds values outside 0..num_classes-1 and 255."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label {source} has shape {label.shape}; expected a 2-D (H, W) map of class indices")
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if np.issubdtype(label.dtype, np.signedinteger):
        bad |= label < 0
    if bad.any():
        values = np.unique(label[bad])[:8].tolist()
        raise ValueError(f"label {source} holds values {values} outside 0..{num_classes - 1} and {IGNORE_INDEX} "
                         "(void); a VOC label must be a palette PNG of class indices")
    return label.astype(np.uint8)


def read_label_png(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A VOC label PNG as class indices (H, W) uint8; the palette is not applied (255 stays void)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label {path} is missing")
    try:
        with Image.open(path) as im:
            _check_label_mode(path, im.mode)
            label = np.asarray(im)
    except DataError:
        raise
    except _DECODE_ERRORS as err:
        raise _damaged("label", path, err) from None
    return check_label(label, path, num_classes)


def _check_label_mode(path: Path, mode: str) -> None:
    if mode not in ("P", "L", "I", "I;16"):
        raise DataError(f"label {path} is a {mode} image; VOC labels are palette (mode 'P') or index "
                        "(mode 'L') PNGs whose pixel values are class indices, not colours — convert "
                        "colours to indices with the VOC palette first")


def read_sbd_label(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """SBD's ``cls/<id>.mat`` as class indices (H, W) uint8 (field ``GTcls.Segmentation``)."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SBD label {path} is missing")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except _DECODE_ERRORS as err:  # scipy's MatReadError is a ValueError
        raise _damaged("SBD label", path, err) from None
    if "GTcls" not in mat:
        raise ValueError(f"SBD label {path} has no 'GTcls' variable "
                         f"(found {sorted(k for k in mat if not k.startswith('__'))})"
                         "; expected benchmark_RELEASE/dataset/cls/<id>.mat")
    gt = mat["GTcls"]
    if isinstance(gt, np.ndarray) and gt.dtype == object and gt.size == 1:
        gt = gt.item()
    seg = getattr(gt, "Segmentation", None)
    if seg is None and isinstance(gt, np.ndarray) and gt.dtype.names and "Segmentation" in gt.dtype.names:
        seg = gt["Segmentation"].item()  # struct_as_record=True style record
    if seg is None:
        raise ValueError(f"SBD label {path}: GTcls has no 'Segmentation' field")
    return check_label(np.asarray(seg), path, num_classes)


def sbd_label_path(sbd: Path, name: str) -> Path:
    """Where SBD's label of ``name`` is read from.

    The converted PNG (:data:`SBD_PNG_DIR`) when present, else the .mat.
    """
    png = sbd / SBD_PNG_DIR / f"{name}.png"
    return png if png.is_file() else sbd / "cls" / f"{name}.mat"


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """A label as class indices, by its suffix: an index-coded PNG (VOC, converted SBD) or SBD's .mat."""
    path = Path(path)
    return read_label_png(path) if path.suffix == ".png" else read_sbd_label(path)


def convert_sbd_labels(sbd_root: str | os.PathLike, *, progress: bool = False) -> int:
    """Write every ``cls/<id>.mat`` of SBD as an index-coded palette PNG in :data:`SBD_PNG_DIR`; returns the count.

    Values are copied unchanged (0 background, 1..20 classes; SBD has no void band). PNGs already there are
    kept, so an interrupted conversion continues; each file is written atomically.
    """
    sbd = find_sbd(sbd_root)
    mats = sorted((sbd / "cls").glob("*.mat"))
    written = 0
    for mat in tqdm(mats, desc="SBD .mat -> PNG", unit="label", disable=not progress, mininterval=1.0):
        png = sbd / SBD_PNG_DIR / f"{mat.stem}.png"
        if not png.is_file():
            write_label(png, read_sbd_label(mat))
            written += 1
    return written


def write_train_aug_list(voc_root: str | os.PathLike, sbd_root: str | os.PathLike) -> Path:
    """Write :func:`train_aug_ids` to ``VOC2012/ImageSets/Segmentation/train_aug.txt`` (atomically); returns it."""
    ids = train_aug_ids(voc_root, sbd_root)
    path = find_voc2012(voc_root) / "ImageSets" / "Segmentation" / "train_aug.txt"
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))
    return path


def read_ids(path: Path) -> list[str]:
    """The image ids of a split file, one per line (the first field; blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        return [line.split()[0] for line in fh if line.strip()]


def find_voc2012(root: str | os.PathLike) -> Path:
    """The ``VOC2012`` folder for ``root`` (``VOCdevkit`` or ``VOCdevkit/VOC2012``) or FileNotFoundError."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    raise FileNotFoundError(
        f"no PASCAL VOC 2012 data set at {root}: expected VOCdevkit/VOC2012/ with JPEGImages/<id>.jpg, "
        f"SegmentationClass/<id>.png and ImageSets/Segmentation/<split>.txt (root may be the VOCdevkit or "
        f"the VOC2012 folder). Get it with: python -m dlib download voc (from {VOC_URL}), "
        "or use the built-in proxy data set "
        "(data.dataset=proxy)")


def find_sbd(root: str | os.PathLike) -> Path:
    """SBD's ``dataset`` folder for ``root`` (``benchmark_RELEASE`` or its ``dataset``) or FileNotFoundError."""
    root = Path(root)
    for cand in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (cand / "cls").is_dir():
            return cand
    raise FileNotFoundError(
        f"no SBD data set at {root}: expected benchmark_RELEASE/dataset/ with cls/<id>.mat, img/<id>.jpg and "
        f"train.txt/val.txt (root may be benchmark_RELEASE or its dataset folder). "
        f"Get it with: python -m dlib download sbd (from {SBD_URL})")


def train_aug_ids(voc_root: str | os.PathLike, sbd_root: str | os.PathLike) -> list[str]:
    """DeepLab's train_aug ids: SBD train+val plus VOC train, minus VOC val (10,582 with the full sets)."""
    voc = find_voc2012(voc_root)
    sbd = find_sbd(sbd_root)
    seg = voc / "ImageSets" / "Segmentation"
    ids: set[str] = set()
    for name in ("train.txt", "val.txt"):
        path = sbd / name
        if not path.is_file():
            raise FileNotFoundError(f"SBD split file {path} is missing; expected benchmark_RELEASE/dataset/{name}")
        ids.update(read_ids(path))
    for name in ("train.txt", "val.txt"):
        if not (seg / name).is_file():
            raise FileNotFoundError(f"VOC split file {seg / name} is missing; expected the VOCdevkit layout "
                                    "VOC2012/ImageSets/Segmentation/{train,val}.txt")
    ids.update(read_ids(seg / "train.txt"))
    ids.difference_update(read_ids(seg / "val.txt"))
    return sorted(ids)


class SBDSegmentation:
    """The Semantic Boundaries Dataset's class labels (``cls/<id>.mat``) with its images (``img/<id>.jpg``)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        self.root = find_sbd(root)
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"SBD split file {split_file} is missing; SBD ships train.txt and val.txt in "
                                    f"benchmark_RELEASE/dataset/ (download: {SBD_URL})")
        self.split = split
        self.ids = read_ids(split_file)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        name = self.ids[i]
        image = _read_image(self.root / "img" / f"{name}.jpg")
        label = read_label_file(sbd_label_path(self.root, name))
        return self.transform(image, label) if self.transform is not None else (image, label)

    def preflight_item(self, i: int) -> None:
        """Check image and label ``i`` are readable and of one size (:func:`preflight`)."""
        name = self.ids[i]
        label = sbd_label_path(self.root, name)
        _same_size(image_size(self.root / "img" / f"{name}.jpg"), self.root / "img" / f"{name}.jpg",
                   _label_size(label), label)


class VOCSegmentation:
    """PASCAL VOC 2012 segmentation over the VOCdevkit layout; ``split`` names ImageSets/Segmentation/<split>.txt.

    ``split="train_aug"`` uses ``ImageSets/Segmentation/train_aug.txt`` when present, else builds the
    list from SBD (``sbd_root``); labels of images without a VOC annotation come from SBD's .mat files
    (VOC's own annotation, with its void outline band, is preferred where both exist).
    """

    classes = VOC_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 sbd_root: str | os.PathLike | None = None, ids: Sequence[str] | None = None):
        self.root = find_voc2012(root)
        self.sbd = find_sbd(sbd_root) if sbd_root is not None else None
        self.split = split
        self.transform = transform
        if ids is not None:
            self.ids = list(ids)
        else:
            split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
            if split_file.is_file():
                self.ids = read_ids(split_file)
            elif split == "train_aug" and self.sbd is not None:
                self.ids = train_aug_ids(self.root, self.sbd)
            else:
                hint = (" (train_aug also needs SBD: pass sbd_root, the benchmark_RELEASE folder; "
                        f"download: {SBD_URL})" if split == "train_aug" else "")
                raise FileNotFoundError(f"VOC split file {split_file} is missing; expected the VOCdevkit layout "
                                        f"VOC2012/ImageSets/Segmentation/<split>.txt{hint}. Download: {VOC_URL}")

    def __len__(self) -> int:
        return len(self.ids)

    def label_path(self, name: str) -> Path:
        return self.root / "SegmentationClass" / f"{name}.png"

    def label_source(self, name: str) -> Path:
        """The file ``name``'s label is read from: VOC's own PNG (with its void outline band) when it exists,
        else SBD's (the converted PNG, else the .mat); the VOC path when neither exists."""
        png = self.label_path(name)
        if png.is_file() or self.sbd is None:
            return png
        sbd = sbd_label_path(self.sbd, name)
        return sbd if sbd.is_file() else png

    def read_label(self, name: str) -> np.ndarray:
        return read_label_file(self.label_source(name))

    def image_path(self, name: str) -> Path:
        path = self.root / "JPEGImages" / f"{name}.jpg"
        if not path.is_file() and self.sbd is not None and (self.sbd / "img" / f"{name}.jpg").is_file():
            path = self.sbd / "img" / f"{name}.jpg"
        return path

    def read_image(self, name: str) -> np.ndarray:
        return _read_image(self.image_path(name))

    def preflight_item(self, i: int) -> None:
        """Check image and label ``i`` are readable and of one size (:func:`preflight`): headers only for
        PNG labels, the whole file for SBD's .mat labels."""
        name = self.ids[i]
        image = self.image_path(name)
        label = self.label_source(name)
        _same_size(image_size(image), image, _label_size(label), label)

    def __getitem__(self, i: int):
        name = self.ids[i]
        image, label = self.read_image(name), self.read_label(name)
        if image.shape[:2] != label.shape:
            raise DataError(f"image {self.image_path(name)} is {image.shape[:2]} but its label is {label.shape}; "
                            "the label must have the image's size")
        return self.transform(image, label) if self.transform is not None else (image, label)


def _label_size(path: Path) -> tuple[int, ...]:
    """(H, W) of a label: from the header of a PNG, by reading a .mat whole."""
    return read_sbd_label(path).shape if path.suffix == ".mat" else image_size(path, "label")


def _same_size(image_hw: tuple[int, int], image: Path, label_hw: tuple[int, ...], label: Path) -> None:
    if tuple(image_hw) != tuple(label_hw):
        raise DataError(f"image {image} is {tuple(image_hw)} (H, W) but its label {label} is {tuple(label_hw)}; "
                        f"a label must have its image's size. Data set: {_where(label)}")


def preflight(dataset: Any, *, max_images: int | None = None, progress: bool = False) -> int:
    """Open every image and label of ``dataset`` before a long run starts; returns the number checked.

    Fast checks (headers, sizes, the files' end markers; SBD's .mat labels are read whole): a
    truncated JPEG, a colour (RGB) label, a corrupt .mat or a label of the wrong size raises
    :class:`DataError` naming the file, the data set and the fix now rather than hours into training
    inside a loader worker. Data sets without files (the proxy set, in memory) have nothing to check.
    ``python -m dlib doctor`` can reuse this. ``max_images`` checks only the first N items.
    """
    check = getattr(dataset, "preflight_item", None)
    if check is None:
        return 0
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    for i in tqdm(range(n), desc="pre-flight", unit="img", disable=not progress, mininterval=1.0):
        check(i)
    return n
