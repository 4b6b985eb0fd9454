"""The learning rate of DeepLab's solvers: the poly and step schedules, the base lr by family, Caffe's lr_mult.

* "poly" (DeepLab v2, Sec. 4.1): lr(it) = base_lr * (1 - it / max_iter) ** power, power 0.9.
* "step" (DeepLab v1, Sec. 4.1; the released DeepLab-LargeFOV solver): lr(it) = base_lr * gamma ** floor(it /
  step_size), gamma 0.1 every 2000 iterations.
* ``train.warmup`` (ours, 0 in the papers' profile): the poly rate ramped up linearly over the first iterations.
* The base lr is chosen by the model's family (:func:`base_lr_for`): ``train.base_lr_vgg`` for VGG-16 (1e-3),
  ``train.base_lr`` for ResNet-101 (2.5e-4), from the released solvers.
* Caffe's ``lr_mult`` as SGD parameter groups (:func:`optimizer_groups`): backbone weights 1x, backbone biases 2x
  without weight decay, classifier weights 10x, classifier biases 20x without weight decay.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlib.core.config import Config


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """DeepLab v2, Sec. 4.1: the "poly" rate, base_lr at iteration 0 falling to 0 at max_iter (formula: module
    docstring); ``power`` 0.9 in the paper."""
    if not 0 <= iteration <= max_iter:
        raise ValueError(f"iteration {iteration} outside [0, {max_iter}]")
    remaining = 1 - iteration / max_iter  # the share of training still ahead, 1 -> 0
    return base_lr * remaining ** power


def step_lr(base_lr: float, iteration: int, step_size: int, gamma: float = 0.1) -> float:
    """Caffe's "step" policy (DeepLab v1, Sec. 4.1): base_lr * gamma ** floor(iteration / step_size)."""
    if iteration < 0 or step_size < 1:
        raise ValueError(f"need iteration >= 0 and step_size >= 1, got {iteration} and {step_size}")
    return base_lr * gamma ** (iteration // step_size)


# Backbone families trained at train.base_lr_vgg (dlib.nets.models.ModelInfo.backbone); every other family at
# train.base_lr.
VGG_FAMILIES = ("vgg16", "small_vgg")


def base_lr_for(cfg: Config, model_name: str | None = None) -> float:
    """The base learning rate of ``model_name`` (default ``cfg.model.name``), chosen by its family.

    ``train.base_lr_vgg`` for VGG-16 models (DeepLab v1/v2 released solvers: 1e-3), ``train.base_lr`` for
    the others (ResNet-101: 2.5e-4). The one place that decides it; training, the command line, the
    notebooks and the ablation all ask here.
    """
    from dlib.nets.models import info

    name = cfg.model.name if model_name is None else model_name
    return cfg.train.base_lr_vgg if info(name).backbone in VGG_FAMILIES else cfg.train.base_lr


def learning_rate(cfg: Config, iteration: int) -> float:
    """The base (1x) learning rate at ``iteration``: ``train.lr_policy`` "poly" or "step" from :func:`base_lr_for`."""
    t = cfg.train
    base = base_lr_for(cfg)
    if t.lr_policy == "step":
        return step_lr(base, iteration, t.step_size, t.gamma)
    if t.lr_policy != "poly":
        raise ValueError(f"train.lr_policy must be 'poly' (DeepLab v2) or 'step' (DeepLab v1), got {t.lr_policy!r}")
    return poly_lr(base, iteration, t.iterations, t.poly_power) * warmup_factor(iteration, t.warmup)


def warmup_factor(iteration: int, warmup: int) -> float:
    """Linear warm-up (not in the papers): (iteration + 1) / warmup for the first ``warmup`` iterations, then 1."""
    return min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0


def optimizer_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """SGD parameter groups with Caffe's lr multipliers and weight-decay multipliers.

    backbone weights 1x (decay), backbone biases ``backbone_bias_lr_mult`` (2x, no decay),
    head (classifier) weights ``head_lr_mult`` (10x, decay), head biases ``head_bias_lr_mult``
    (20x, no decay), from :func:`parameter_roles_of`. Parameters that do not require gradients
    (frozen BN) are left out.
    """
    t = cfg.train
    base = base_lr_for(cfg)
    split = parameter_roles_of(model)
    spec = {"backbone_weight": (1.0, t.weight_decay), "backbone_bias": (t.backbone_bias_lr_mult, 0.0),
            "head_weight": (t.head_lr_mult, t.weight_decay), "head_bias": (t.head_bias_lr_mult, 0.0)}
    groups = []
    for name, (mult, decay) in spec.items():
        params = [p for p in split.get(name, []) if p.requires_grad]
        if params:
            groups.append({"params": params, "name": name, "lr_mult": mult, "lr": base * mult,
                           "weight_decay": decay})
    return groups


def parameter_roles(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters split as Caffe's lr_mult groups (DeepLab v2 released solver/prototxt).

    "head_*": the classifier layers the paper initialises at random (fc8 of every VGG branch, the
    3x3 classifiers of the ResNet heads), trained at 10x (weights) and 20x (biases) the base rate.
    "backbone_*": everything else, including VGG's fc6/fc7 (initialised from ImageNet, 1x/2x in the
    prototxt). "*_weight" holds parameters whose name ends in "weight" (convolution kernels, BN
    scales), "*_bias" the rest. Frozen parameters (``requires_grad=False``, e.g. ResNet-101's BN) are
    left out. Works on a :class:`dlib.nets.models.DeepLab` or a wrapper exposing ``.head`` (dlib.nets.msc.MSC).
    """
    head = getattr(model, "head", None)
    if not callable(getattr(head, "classifier_parameters", None)):
        raise TypeError(f"parameter_roles needs a DeepLab model (with a head such as ASPP), got {type(model).__name__}")
    classifier_ids = {id(p) for p in head.classifier_parameters()}
    groups: dict[str, list[nn.Parameter]] = {"backbone_weight": [], "backbone_bias": [], "head_weight": [],
                                             "head_bias": []}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        part = "head" if id(p) in classifier_ids else "backbone"
        kind = "weight" if name.endswith("weight") else "bias"
        groups[f"{part}_{kind}"].append(p)
    return groups


def parameter_roles_of(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """:func:`parameter_roles` for a DeepLab model (or a wrapper with its ASPP ``.head``); for any
    other network, parameters under a module named head/classifier/aspp are the head."""
    if callable(getattr(getattr(model, "head", None), "classifier_parameters", None)):
        return {k: list(v) for k, v in parameter_roles(model).items()}
    out: dict[str, list[nn.Parameter]] = {"backbone_weight": [], "backbone_bias": [], "head_weight": [],
                                          "head_bias": []}
    for name, p in model.named_parameters():
        head = any(part in ("head", "classifier", "aspp") for part in name.split("."))
        kind = "weight" if p.ndim > 1 else "bias"
        out[f"{'head' if head else 'backbone'}_{kind}"].append(p)
    return out


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, iteration: int) -> float:
    """Set every group's lr to :func:`learning_rate` * its multiplier; returns the base (1x) lr."""
    lr = learning_rate(cfg, iteration)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr
