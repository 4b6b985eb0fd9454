"""Get PASCAL VOC 2012, SBD and the weights right: resumable downloads, checksums first, safe extraction.

    python -m dlib download voc      [--root DIR] [--from-file VOCtrainval_11-May-2012.tar]
    python -m dlib download sbd      [--root DIR] [--from-file benchmark.tgz]
    python -m dlib download weights  [--root DIR] [--only NAME ...] [--from-file FILE]

What each step guarantees:

* **Resumable**: bytes arrive in ``<file>.part``; an interrupted transfer continues from where it stopped
  (an HTTP ``Range`` request), within one call (a few retries) and across calls.
* **Verified before use**: the whole file's md5/sha256 is compared with the published value before anything
  is extracted; a mismatch deletes the download (never a file the user gave with ``--from-file``).
* **Extracted only inside the target folder**: every member of the archive is checked first; an absolute
  path, a ``..`` component, a link that points outside, or a device file refuses the whole archive and
  nothing is written (:func:`safe_extract`).
* **One layout**: the folders are the ones :mod:`dlib.data.voc` reads. ``download sbd`` converts SBD's
  ``cls/*.mat`` into index-coded PNGs (``benchmark_RELEASE/dataset/SegmentationClassAug/``) and, once both
  data sets are present, writes ``VOC2012/ImageSets/Segmentation/train_aug.txt`` (10,582 ids).

Default folder (``--root``): ``<repo>/.cache/datasets`` for the data and ``<repo>/.cache/weights`` for the
released Caffe models (``$DLIB_CACHE_DIR`` moves both); torchvision's ImageNet weights go to torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``), where :func:`dlib.nets.weights.imagenet_state_dict` reads them.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dlib.core.io import atomic_write_text, cache_root, read_json
from dlib.data.voc import convert_sbd_labels, find_sbd, find_voc2012, write_train_aug_list
from dlib.tools.fetch import DownloadError, Resource, fetch, file_digest, safe_extract, verify

# PASCAL VOC 2012 trainval: md5 as published with torchvision.datasets.VOCSegmentation (year 2012).
VOC = Resource("voc", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
               "VOCtrainval_11-May-2012.tar", md5="6cd6e144f989b92b3379bac3b3de84fd",
               checksum_source="torchvision.datasets.VOCSegmentation (year 2012)")
# SBD (Hariharan et al. 2011), the Berkeley address; md5 as published with torchvision.datasets.SBDataset.
SBD = Resource("sbd", "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
               "benchmark.tgz", "benchmark.tgz", md5="82b4d87ceb2ed10f6038a1cba92111cb",
               checksum_source="torchvision.datasets.SBDataset")

# The authors' released Caffe models (DeepLab v2 project pages, liangchiehchen.com / ccvl.jhu.edu). No checksum
# is published for any of them: the sha256 of what was downloaded is recorded in <root>/checksums.json so that
# `doctor` can tell a later damaged or truncated copy, not whether the first download was the authors' file.
CAFFE_MODELS = {
    r.name: r for r in (
        Resource("deeplab_v2_resnet101_caffe",
                 "http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
                 "deeplab_v2_resnet101_prototxt_and_model.zip",
                 note="DeepLab v2 ResNet-101 ASPP-L: init.caffemodel (MS-COCO pretrained), "
                      "train_iter_20000.caffemodel (fine-tuned on train_aug: the val numbers), "
                      "train2_iter_20000.caffemodel (trainval_aug, for test)"),
        Resource("deeplab_v2_vgg16_caffe",
                 "http://liangchiehchen.com/projects/released/deeplab_aspp_vgg16/prototxt_and_model.zip",
                 "deeplab_v2_vgg16_prototxt_and_model.zip",
                 note="DeepLab v2 VGG-16 ASPP-L: its init and trained caffemodels with their prototxts"),
        Resource("deeplab_v1_largefov_caffe",
                 "http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/train2_iter_8000.caffemodel",
                 "deeplab_v1_largefov_train2_iter_8000.caffemodel", extract=False,
                 note="DeepLab v1 LargeFOV, the released final model"),
    )
}
IMAGENET = ("resnet101", "vgg16")  # torchvision IMAGENET1K_V1 weights (dlib.nets.weights.imagenet_weights_url)
WEIGHT_NAMES = tuple(f"{b}_imagenet" for b in IMAGENET) + tuple(CAFFE_MODELS)
DEFAULT_WEIGHTS = ("resnet101_imagenet", "vgg16_imagenet", "deeplab_v2_resnet101_caffe")
CHECKSUMS_FILE = "checksums.json"  # sha256 of the downloaded Caffe files (none published)


def data_root() -> Path:
    """Default folder for the data sets: ``$DLIB_CACHE_DIR/datasets`` (``<repo>/.cache/datasets``)."""
    return cache_root() / "datasets"


def weights_root() -> Path:
    """Default folder for the released Caffe models: ``$DLIB_CACHE_DIR/weights``."""
    return cache_root() / "weights"


# --------------------------------------------------------------------------------------------
# One resource: fetch (or take the user's file), verify, extract
# --------------------------------------------------------------------------------------------

def _by_hand(resource: Resource, command: str) -> str:
    return (f". Without network: download {resource.url} by hand and run "
            f"python -m dlib download {command} --from-file PATH")


def obtain(resource: Resource, folder: Path, *, from_file: str | os.PathLike | None = None, command: str = "",
           progress: bool = True, retries: int = 3, timeout: float = 60.0, backoff: float = 2.0) -> Path:
    """The verified file of ``resource`` in ``folder`` (``downloads/`` below the target): the user's
    ``from_file`` or a (resumed) download. A download that fails its checksum is deleted."""
    if from_file is not None:
        path = Path(from_file)
        if not path.is_file():
            raise DownloadError(f"--from-file {path} does not exist; give the {resource.filename} you downloaded "
                                f"from {resource.url}")
        verify(path, resource)
        return path
    dest = folder / resource.filename
    if not dest.is_file():
        fetch(resource.url, dest, retries=retries, timeout=timeout, progress=progress, backoff=backoff,
              hint=_by_hand(resource, command or resource.name))
    try:
        verify(dest, resource)
    except DownloadError as err:
        dest.unlink()
        raise DownloadError(f"{err}; the download was deleted, run the command again to fetch it afresh") from None
    return dest


def fetch_and_extract(resource: Resource, root: str | os.PathLike, **kw) -> Path:
    """:func:`obtain` then :func:`safe_extract` into ``root``, once: a marker file records a finished extraction."""
    root = Path(root)
    marker = root / f".{resource.filename}.extracted"
    if marker.is_file():
        return root
    path = obtain(resource, root / "downloads", **kw)
    if kw.get("progress", True):
        print(f"extracting {path.name} into {root} ...", file=sys.stderr, flush=True)
    safe_extract(path, root)
    atomic_write_text(marker, json.dumps({"file": path.name, "url": resource.url}) + "\n")
    return root


# --------------------------------------------------------------------------------------------
# The data sets
# --------------------------------------------------------------------------------------------

def _try(find: Callable[[Path], Path], path: Path) -> Path | None:
    try:
        return find(path)
    except FileNotFoundError:
        return None


def finish_train_aug(root: Path, *, progress: bool = True) -> Path | None:
    """When VOC and SBD are both under ``root``: write train_aug.txt; returns its path (None if one is missing)."""
    voc, sbd = _try(find_voc2012, root / "VOCdevkit"), _try(find_sbd, root / "benchmark_RELEASE")
    if voc is None or sbd is None:
        return None
    path = write_train_aug_list(voc, sbd)
    if progress:
        n = sum(1 for line in path.read_text().splitlines() if line.strip())
        print(f"wrote {path} ({n} ids)", file=sys.stderr)
    return path


def download_voc(root: str | os.PathLike | None = None, **kw) -> Path:
    """PASCAL VOC 2012 trainval into ``root``/VOCdevkit/VOC2012; returns the VOCdevkit folder."""
    root = Path(root) if root is not None else data_root()
    fetch_and_extract(VOC, root, command="voc", **kw)
    voc = find_voc2012(root / "VOCdevkit")
    finish_train_aug(root, progress=kw.get("progress", True))
    return voc.parent


def download_sbd(root: str | os.PathLike | None = None, **kw) -> Path:
    """SBD into ``root``/benchmark_RELEASE, its labels converted to PNGs; returns the benchmark_RELEASE folder."""
    root = Path(root) if root is not None else data_root()
    fetch_and_extract(SBD, root, command="sbd", **kw)
    sbd = find_sbd(root / "benchmark_RELEASE")
    convert_sbd_labels(sbd, progress=kw.get("progress", True))
    finish_train_aug(root, progress=kw.get("progress", True))
    return sbd.parent


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def imagenet_file(backbone: str, folder: str | os.PathLike | None = None) -> Path:
    """Where torchvision's ImageNet file of ``backbone`` lives: ``folder`` or torch.hub's checkpoints folder."""
    import torch

    from dlib.nets.weights import imagenet_weights_url

    folder = Path(folder) if folder is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / posixpath.basename(imagenet_weights_url(backbone))


def imagenet_hash_ok(path: str | os.PathLike) -> bool:
    """torchvision's convention: ``<name>-<first 8+ hex digits of the file's sha256>.pth``."""
    path = Path(path)
    prefix = path.stem.rsplit("-", 1)[-1]
    return len(prefix) >= 8 and file_digest(path).startswith(prefix)


def download_imagenet(backbone: str, folder: str | os.PathLike | None = None, *, from_file=None,
                      progress: bool = True) -> Path:
    """torchvision's IMAGENET1K_V1 weights of ``backbone`` ("resnet101", "vgg16") through torchvision's API
    (``<Model>_Weights.IMAGENET1K_V1.get_state_dict``, hash checked) into ``folder`` or torch.hub's cache."""
    import torchvision.models as tvm

    from dlib.nets.weights import _IMAGENET, imagenet_weights_url

    dest = imagenet_file(backbone, folder)
    url = imagenet_weights_url(backbone)
    if from_file is not None:
        src = Path(from_file)
        if not src.is_file():
            raise DownloadError(f"--from-file {src} does not exist; give the {dest.name} downloaded from {url}")
        prefix = dest.stem.rsplit("-", 1)[-1]
        if not file_digest(src).startswith(prefix):
            raise DownloadError(f"{src} does not match {url}: its sha256 does not start with {prefix} "
                                "(torchvision's published hash prefix)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest
    weights = getattr(tvm, _IMAGENET[backbone]).IMAGENET1K_V1
    try:
        weights.get_state_dict(progress=progress, check_hash=True, weights_only=True,
                               model_dir=None if folder is None else str(folder))
    except Exception as err:  # noqa: BLE001 - no network, a bad hash: the same advice
        raise DownloadError(f"could not get {url} ({type(err).__name__}: {err}). Without network: download it by "
                            f"hand and run python -m dlib download weights --only {backbone}_imagenet "
                            "--from-file PATH") from None
    return dest


def read_checksums(folder: Path) -> dict[str, str]:
    path = folder / CHECKSUMS_FILE
    return read_json(path) if path.is_file() else {}


def download_caffe(name: str, folder: str | os.PathLike | None = None, **kw) -> Path:
    """A released DeepLab Caffe model into ``folder``/<name>/ (zips unpacked there); returns that folder.

    No checksum is published for these files: the sha256 of the archive and of every extracted
    ``.caffemodel`` is recorded in ``folder``/checksums.json (paths relative to ``folder``), so that
    ``doctor`` can tell a later damaged copy.
    """
    resource = CAFFE_MODELS[name]
    folder = Path(folder) if folder is not None else weights_root()
    target = folder / name
    path = obtain(resource, folder / "downloads" if resource.extract else target,
                  command=f"weights --only {name}", **kw)
    if resource.extract:
        safe_extract(path, target)
    elif path.resolve() != (target / resource.filename).resolve():  # the user's --from-file
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / resource.filename)
    sums = read_checksums(folder)
    for f in [path, *sorted(target.rglob("*.caffemodel"))]:
        if f.resolve().is_relative_to(folder.resolve()):
            sums[f.resolve().relative_to(folder.resolve()).as_posix()] = file_digest(f)
    atomic_write_text(folder / CHECKSUMS_FILE, json.dumps(sums, indent=1, sort_keys=True) + "\n")
    return target


def download_weights(names: Sequence[str] = DEFAULT_WEIGHTS, root: str | os.PathLike | None = None, *,
                     from_file=None, progress: bool = True, **kw) -> dict[str, Path]:
    """Each of ``names`` (:data:`WEIGHT_NAMES`); ``root`` holds all of them (default: ImageNet in torch.hub's
    cache, Caffe models in :func:`weights_root`)."""
    unknown = [n for n in names if n not in WEIGHT_NAMES]
    if unknown:
        raise ValueError(f"unknown weights {unknown}; choose from {', '.join(WEIGHT_NAMES)}")
    if from_file is not None and len(names) != 1:
        raise ValueError("--from-file gives one file: name which with --only NAME")
    out = {}
    for name in names:
        if name.endswith("_imagenet"):
            out[name] = download_imagenet(name[:-len("_imagenet")], root, from_file=from_file, progress=progress)
        else:
            out[name] = download_caffe(name, root, from_file=from_file, progress=progress, **kw)
    return out

