"""Pretrained stand-ins for the cpu profile: the small networks' "ImageNet" and "COCO" weights.

DeepLab never trains from scratch: VGG-16 and ResNet-101 start from ImageNet classification weights,
and Table 4's "+COCO" rows start from a whole DeepLab model fine-tuned on MS-COCO (DeepLab v2, Sec. 4.1).
Table 4's increments are fine-tuning effects on such features. The cpu profile's small networks get
the same two stages, on generated data, trained once by ``python -m dlib pretrain imagenet|coco`` and
shipped as small weight files in ``dlib/weights/``, each with a card beside it (``<file>.json``:
config, data seed, iterations, final scores, sha256, commit):

* **"ImageNet" stand-in** (``<family>_imagenet.pt``, for ``small_resnet`` and ``small_vgg``): a
  *different task and distribution* from the 21-class proxy set. Each backbone learns to segment 14
  pretext classes, 7 shapes each plain or textured (5 textures), drawn in random colours on noisy
  backgrounds at 96 px. Colour, the context rings and the proxy's class definitions play no part. As
  with ImageNet, only the feature extractor (for the VGG-16 shape also fc6/fc7, copied into every
  branch) is kept; the classifier starts afresh, and batch normalisation is then frozen.
* **"COCO" stand-in** (``<model>_coco.pt``, one per Table-4 head): the whole DeepLab model, started
  from the ImageNet stand-in and trained to a plateau on the larger, more varied proxy set (the 21
  classes, more objects, every scale, cluttered backgrounds; ``proxy.PROXY_RECIPE_LARGE``). The +COCO
  rows start from it, classifier included, as the paper's do.

Both load through the same settings as the gpu profile's real weights: ``model.pretrained="imagenet"``
and ``model.coco_checkpoint="coco"`` (the gpu profile takes a path there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import data as dlib_data
from . import proxy as dlib_proxy
from .config import NUM_CLASSES_OF_DATASET, Config, resolve
from .io import atomic_write_bytes, atomic_write_text, cache_root
from .results import git_commit, jsonable

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FAMILIES = ("small_resnet", "small_vgg")
# The model each family's ImageNet stand-in is trained as (VGG: LargeFOV, so fc6/fc7 are pretrained too).
IMAGENET_MODELS = {"small_resnet": "small_resnet_baseline", "small_vgg": "small_vgg_largefov"}
COCO_MODELS = ("small_resnet_baseline", "small_resnet_largefov", "small_resnet_aspp")  # Table 4's three heads
COCO_KEYWORD = "coco"  # model.coco_checkpoint="coco": the shipped stand-in of the model being trained

# The pretext task of the ImageNet stand-in: 7 shapes x 6 textures.
PRETEXT_SHAPES = ("disc", "ellipse", "rect", "triangle", "cross", "diamond", "trapezoid")
PRETEXT_TEXTURES = ("flat", "hstripes", "vstripes", "checker", "dots", "rings")
PRETEXT_CLASSES = NUM_CLASSES_OF_DATASET["pretext"]  # background + each shape, plain or textured
assert PRETEXT_CLASSES == 1 + 2 * len(PRETEXT_SHAPES)
PRETEXT_SIZE = 96
PRETEXT_SEED = 1000  # data seed of the pretext images (disjoint from the proxy set's seeds)

# How each stand-in is trained (dotted config overrides on the cpu profile). Both families pretrain at lr 0.05
# (the lr is chosen by family, dlib.schedule.base_lr_for; the shipped small_vgg stand-in was trained at 0.05).
IMAGENET_SETTINGS: dict[str, Any] = {
    "data.dataset": "pretext", "data.crop_size": 89, "data.scale_aug": True, "model.pretrained": None,
    "model.num_classes": PRETEXT_CLASSES,
    "train.batch_size": 16, "train.base_lr": 0.05, "train.base_lr_vgg": 0.05, "train.head_lr_mult": 1.0,
    "train.head_bias_lr_mult": 2.0, "train.msc": False, "train.checkpoint_every": 500,
}
IMAGENET_ITERATIONS = {"small_resnet": 3000, "small_vgg": 2000}  # the VGG shape is 3x slower per image
IMAGENET_IMAGES = 3000
COCO_SETTINGS: dict[str, Any] = {
    "data.scale_aug": True, "model.pretrained": "imagenet", "model.coco_checkpoint": None, "train.base_lr": 1e-2,
    "train.batch_size": 8, "train.iterations": 1500, "train.msc": False, "train.checkpoint_every": 500,
}
COCO_IMAGES = 3000
EVAL_IMAGES = 200


class StandinError(RuntimeError):
    """A stand-in weights file is missing, or its checksum does not match its card."""


# --------------------------------------------------------------------------------------------
# The pretext data set of the ImageNet stand-in
# --------------------------------------------------------------------------------------------

def pretext_class(shape: str, texture: str) -> int:
    """Label of a (shape, texture) pair: 1 + 2 * shape index, + 1 when textured (any texture but flat)."""
    return 1 + 2 * PRETEXT_SHAPES.index(shape) + int(texture != "flat")


def make_pretext_sample(rng: np.random.Generator, size: int = PRETEXT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One pretext image (uint8 (size, size, 3)) and label (uint8 (size, size), 0 background, 1..42)."""
    image = rng.uniform(40, 215, 3)[None, None, :] + 30 * dlib_proxy._smooth_field(rng, size, 5)[..., None]
    image = image + rng.normal(0, 12, (size, size, 3))  # textured noise background: no gradient, unlike the proxy
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        shape = PRETEXT_SHAPES[int(rng.integers(len(PRETEXT_SHAPES)))]
        texture = PRETEXT_TEXTURES[int(rng.integers(len(PRETEXT_TEXTURES)))]
        r = float(np.exp(rng.uniform(np.log(0.12 * size), np.log(0.4 * size))))
        cls = dlib_proxy.ProxyClass(0, "pretext", shape, float(rng.uniform(0.5, 2.0)), "red", texture)
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        mask = dlib_proxy._shape_mask(cls, dx, dy, r)
        colour = rng.uniform(0, 255, 3)  # any colour: colour tells nothing about the class
        tex = dlib_proxy._texture(texture, dx, dy, r, 2.5)
        image[mask] = (colour[None, None, :] * (1 + 0.3 * tex[..., None]))[mask]
        label[mask] = pretext_class(shape, texture)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


class PretextSegmentation:
    """``count`` pretext images (``make_pretext_sample``), image i drawn from ``default_rng([seed, i])``."""

    classes = ("background",) + tuple(f"{s}/{t}" for s in PRETEXT_SHAPES for t in ("plain", "textured"))

    def __init__(self, count: int, *, seed: int = PRETEXT_SEED, size: int = PRETEXT_SIZE):
        pairs = [make_pretext_sample(np.random.default_rng([seed, i]), size) for i in range(count)]
        self.images = np.stack([p[0] for p in pairs])
        self.labels = np.stack([p[1] for p in pairs])
        self.ids = [f"pretext_{seed}_{i:05d}" for i in range(count)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


# --------------------------------------------------------------------------------------------
# Files and cards
# --------------------------------------------------------------------------------------------

def imagenet_path(family: str) -> Path:
    if family not in FAMILIES:
        raise ValueError(f"no ImageNet stand-in for {family!r}; stand-ins exist for {', '.join(FAMILIES)}")
    return WEIGHTS_DIR / f"{family}_imagenet.pt"


def coco_path(model_name: str) -> Path:
    if model_name not in COCO_MODELS:
        raise ValueError(f"no COCO stand-in for {model_name!r}; stand-ins exist for {', '.join(COCO_MODELS)} "
                         "(on the gpu profile, set model.coco_checkpoint to a COCO-pretrained DeepLab file)")
    return WEIGHTS_DIR / f"{model_name}_coco.pt"


def card_path(weights: Path) -> Path:
    return weights.with_name(weights.name + ".json")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_verified(path: Path) -> dict[str, Any]:
    """The state dict of a stand-in file, after checking it against the sha256 on its card."""

    path = Path(path)
    card = card_path(path)
    if not path.is_file() or not card.is_file():
        raise StandinError(f"stand-in weights {path} (or its card {card.name}) are missing; they ship with the "
                           "project (git checkout dlib/weights), or rebuild them: python -m dlib pretrain imagenet "
                           "&& python -m dlib pretrain coco")
    expected = json.loads(card.read_text())["sha256"]
    if sha256(path) != expected:
        raise StandinError(f"{path} does not match the sha256 on its card {card.name}; the file is damaged or "
                           "was rebuilt without its card: git checkout dlib/weights, or python -m dlib pretrain ...")
    from .checkpoint import load_file

    return load_file(path)


def load_imagenet(model, family: str, *, width: float = 1.0):
    """Load ``family``'s ImageNet stand-in into ``model``: the backbone, and for VGG fc6/fc7 into every branch.

    The classifier (fc8 / the 3x3 classifiers) keeps its fresh initialisation (DeepLab v2, Sec. 4.1).
    """
    from .weights import load_pretrained

    if width != 1.0:
        raise ValueError(f"the ImageNet stand-ins are trained at model.width=1.0, not {width}; use width 1.0 or "
                         "model.pretrained=null (train from scratch)")
    state = read_verified(imagenet_path(family))
    out = {k: v for k, v in state.items() if k.startswith("backbone.")}
    for b in range(len(model.head.branches)):
        for layer in ("fc6", "fc7"):
            for kind in ("weight", "bias"):
                key = f"head.branches.0.{layer}.{kind}"
                if key in state:
                    out[f"head.branches.{b}.{layer}.{kind}"] = state[key].clone()
    return load_pretrained(model, out, source=f"ImageNet stand-in {imagenet_path(family).name}")


def resolve_coco(cfg: Config) -> str | None:
    """``model.coco_checkpoint`` as a file path: the shipped stand-in for "coco", else the path given."""
    value = cfg.model.coco_checkpoint
    if value == COCO_KEYWORD:
        return str(coco_path(cfg.model.name))
    return value


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------

def imagenet_config(family: str) -> Config:
    """The resolved config of ``family``'s ImageNet stand-in pretraining."""
    return resolve("cpu", seed=0, overrides={**IMAGENET_SETTINGS, "model.name": IMAGENET_MODELS[family],
                                             "train.iterations": IMAGENET_ITERATIONS[family],
                                             "data.proxy_image_size": PRETEXT_SIZE})


def coco_config(model_name: str) -> Config:
    """The resolved config of a COCO stand-in pretraining (the cpu profile's data and lr, the large set)."""
    if model_name not in COCO_MODELS:
        raise ValueError(f"no COCO stand-in for {model_name!r}; choose from {', '.join(COCO_MODELS)}")
    return resolve("cpu", seed=0, overrides={**COCO_SETTINGS, "model.name": model_name,
                                             "data.proxy_large_train": COCO_IMAGES})


def _score(cfg: Config, model, dataset) -> dict[str, float]:
    from .evaluate import evaluate

    s = evaluate(cfg, model, dataset, progress=False)
    return {"mean_iou": float(s["mean_iou"]), "pixel_acc": float(s["pixel_acc"])}


def _save(model, path: Path, card: dict[str, Any]) -> Path:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())
    card = {**card, "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "commit": git_commit()}
    atomic_write_text(card_path(path), json.dumps(jsonable(card), indent=1, sort_keys=True) + "\n")
    return path


def _train_and_save(cfg: Config, run_dir: Path, dataset, held, path: Path, card: dict[str, Any], *,
                    progress: bool) -> Path:
    """Train ``cfg`` on ``dataset`` (resumable in ``run_dir``), score it on ``held`` and write it with its card."""
    import torch

    from . import train as dlib_train

    torch.manual_seed(cfg.seed)
    result = dlib_train.train(cfg, run_dir, dataset=dataset, progress=progress)
    scores_key = card.pop("scores_on")
    card = {**card, "config": cfg.to_dict(), "iterations": cfg.train.iterations,
            "final_scores": {scores_key: _score(cfg, result.model, held)}, "eval_images": EVAL_IMAGES,
            "threads": torch.get_num_threads(), "train_seconds": result.seconds}
    return _save(result.model, path, card)


def _run_root(run_root: Path | None) -> Path:
    return Path(run_root or cache_root() / "standins")


def pretrain_imagenet(family: str, *, run_root: Path | None = None, progress: bool = True) -> Path:
    """Train ``family``'s ImageNet stand-in (resumable, under ``run_root``) and write it with its card."""
    cfg = imagenet_config(family)
    card = {"stand_in_for": "ImageNet", "family": family, "model": cfg.model.name,
            "task": f"segment {PRETEXT_CLASSES - 1} classes (7 shapes, plain or textured) in random colours, "
                    f"{PRETEXT_SIZE} px",
            "data_seed": PRETEXT_SEED, "images": IMAGENET_IMAGES, "scores_on": "heldout_pretext"}
    return _train_and_save(cfg, _run_root(run_root) / f"imagenet_{family}", PretextSegmentation(IMAGENET_IMAGES),
                           PretextSegmentation(EVAL_IMAGES, seed=PRETEXT_SEED + 1), imagenet_path(family), card,
                           progress=progress)


def pretrain_coco(model_name: str, *, run_root: Path | None = None, progress: bool = True) -> Path:
    """Train one COCO stand-in (from the ImageNet stand-in) and write it with its card."""
    cfg = coco_config(model_name)
    held = dlib_proxy.ProxySegmentation("val", size=cfg.data.proxy_image_size, count=EVAL_IMAGES,
                                       seed=cfg.data.proxy_seed, large=True)
    card = {"stand_in_for": "MS-COCO", "model": model_name,
            "task": "the 21 proxy classes on the larger proxy set (data.PROXY_RECIPE_LARGE)",
            "data_seed": cfg.data.proxy_seed, "images": COCO_IMAGES,
            "initialised_from": imagenet_path("small_resnet").name, "scores_on": "heldout_large_set"}
    return _train_and_save(cfg, _run_root(run_root) / f"coco_{model_name}",
                           dlib_data.build_dataset(cfg, "train", large=True), held, coco_path(model_name), card,
                           progress=progress)


def cards() -> list[dict[str, Any]]:
    """Every shipped card (one per weights file), for tables."""
    return [json.loads(p.read_text()) for p in sorted(WEIGHTS_DIR.glob("*.pt.json"))]

