"""Pretrained stand-ins for the cpu profile: the small networks' "ImageNet" and "COCO" weights.

DeepLab never trains from scratch: VGG-16 and ResNet-101 start from ImageNet classification weights,
and Table 4's "+COCO" rows start from a whole DeepLab model fine-tuned on MS-COCO (DeepLab v2, Sec. 4.1).
Table 4's increments are fine-tuning effects on such features. The cpu profile's small networks get
the same two stages, on generated data, trained once by ``python -m dlib pretrain imagenet|coco|control`` and
shipped as small weight files in ``dlib/weights/``, each with a card beside it (``<file>.json``:
config, data seed, iterations, final scores, sha256, commit):

* **"ImageNet" stand-in** (``<family>_imagenet.pt``, for ``small_resnet`` and ``small_vgg``): a
  *different task and distribution* from the 21-class proxy set. Each backbone learns to segment 42
  pretext classes, 7 shapes x 3 colour groups (the strongest RGB channel), each plain or textured, drawn in
  any colour on noisy backgrounds at 96 px; the context rings and the proxy's class definitions play no part.
  As with ImageNet, only the feature extractor (for the VGG-16 shape also fc6/fc7, copied into every branch) is
  kept; the classifier starts afresh, and batch normalisation is then frozen.
* **"COCO" stand-in** (``<model>_coco.pt``, one per Table-4 head): the whole DeepLab model, started from the
  ImageNet stand-in and trained on another distribution of the 21 proxy classes (busy backgrounds, clutter,
  more and smaller objects; ``proxy.PROXY_RECIPE_LARGE``), without scale augmentation. The +COCO rows start
  from it, classifier included, as the paper's do.
* **The +COCO control** (``<model>_control.pt``): the +COCO row's network pretrained exactly as its COCO
  stand-in, on the task's own training images (``model.coco_checkpoint="control"``).

Both load through the same settings as the gpu profile's real weights: ``model.pretrained="imagenet"``
and ``model.coco_checkpoint="coco"`` (the gpu profile takes a path there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dlib.core.checkpoint import load_file
from dlib.core.config import Config
from dlib.core.errors import UserError
from dlib.nets.weights import load_pretrained

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # dlib/weights/
FAMILIES = ("small_resnet", "small_vgg")
# What every stand-in card records (dlib.experiments.pretrain refuses to write one without them).
CARD_FIELDS = frozenset({"config", "data_seed", "iterations", "final_scores", "sha256", "commit"})
# The model each family's ImageNet stand-in is trained as: a classifier at rate 1 (VGG: fc6 3x3 at rate 1 and fc7,
# pretrained and then copied into every branch, where fc6 runs at the branch's rate, as DeepLab runs VGG-16's fc6).
IMAGENET_MODELS = {"small_resnet": "small_resnet_baseline", "small_vgg": "small_vgg_pretext"}
COCO_MODELS = ("small_resnet_baseline", "small_resnet_largefov", "small_resnet_aspp")  # Table 4's three heads
COCO_KEYWORD = "coco"  # model.coco_checkpoint="coco": the shipped stand-in of the model being trained
# The control of +COCO: the COCO stand-in's pretraining, run on the task's own training images instead.
CONTROL_MODELS = ("small_resnet_baseline",)  # the +COCO row of Table 4 trains this network
CONTROL_KEYWORD = "control"  # model.coco_checkpoint="control": the shipped control of the model being trained

class StandinError(RuntimeError, UserError):
    """A stand-in weights file is missing, or its checksum does not match its card."""


# --------------------------------------------------------------------------------------------
# The pretext data set of the ImageNet stand-in
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


def control_path(model_name: str) -> Path:
    if model_name not in CONTROL_MODELS:
        raise ValueError(f"no +COCO control stand-in for {model_name!r}; it exists for {', '.join(CONTROL_MODELS)}")
    return WEIGHTS_DIR / f"{model_name}_control.pt"


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
    try:
        expected = json.loads(card.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise StandinError(f"the card {card} of {path.name} is not valid JSON with a 'sha256' ({type(err).__name__}: "
                           f"{err}); git checkout dlib/weights restores it") from None
    if sha256(path) != expected:
        raise StandinError(f"{path} does not match the sha256 on its card {card.name}; the file is damaged or "
                           "was rebuilt without its card: git checkout dlib/weights, or python -m dlib pretrain ...")

    return load_file(path)


def load_imagenet(model, family: str, *, width: float = 1.0):
    """Load ``family``'s ImageNet stand-in into ``model``: the backbone, and for VGG fc6/fc7 into every branch.

    The classifier (fc8 / the 3x3 classifiers) keeps its fresh initialisation (DeepLab v2, Sec. 4.1).
    """

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
    """``model.coco_checkpoint`` as a file path: the shipped stand-in for "coco", its control for "control", else
    the path given."""
    value = cfg.model.coco_checkpoint
    if value == COCO_KEYWORD:
        return str(coco_path(cfg.model.name))
    if value == CONTROL_KEYWORD:
        return str(control_path(cfg.model.name))
    return value


def cards() -> list[dict[str, Any]]:
    """Every shipped card (one per weights file), for tables."""
    return [json.loads(p.read_text()) for p in sorted(WEIGHTS_DIR.glob("*.pt.json"))]

