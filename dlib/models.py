"""Every network the two DeepLab papers evaluate, plus small CPU variants, behind one registry.

    >>> model = build("deeplab_v2_resnet101_aspp", num_classes=21)       # doctest: +SKIP
    >>> logits = model(images)          # (N, 21, ceil(H/8), ceil(W/8)): 41x41 for 321x321
    >>> scores = upsample_logits(logits, images.shape[-2:])              # (N, 21, H, W)

Paper models (output stride 8, see dlib.backbones and dlib.aspp):

=============================== ======================================================= ==============
name                            network                                                 source
=============================== ======================================================= ==============
deeplab_v1_7x7                  VGG-16, fc6 7x7 rate 4, fc6/fc7 4096                     v1 Table 2
deeplab_v1_4x4                  VGG-16, fc6 4x4 rate 4, 4096 ("DeepLab-CRF")             v1 Table 2
deeplab_v1_4x4_r8               VGG-16, fc6 4x4 rate 8, 4096 ("DeepLab-CRF-4x4")         v1 Table 2
deeplab_v1_largefov             VGG-16, fc6 3x3 rate 12, fc6/fc7 1024                    v1 Table 2
deeplab_v2_vgg16_aspp_s         VGG-16, 4 fc6-fc7-fc8 branches, rates 2, 4, 8, 12        v2 Table 3
deeplab_v2_vgg16_aspp_l         VGG-16, 4 fc6-fc7-fc8 branches, rates 6, 12, 18, 24      v2 Table 3
deeplab_v2_resnet101_baseline   ResNet-101, one 3x3 classifier at rate 1                 v2 Table 4
deeplab_v2_resnet101_largefov   ResNet-101, one 3x3 classifier at rate 12                v2 Table 4
deeplab_v2_resnet101_aspp       ResNet-101, 4 3x3 classifiers at rates 6, 12, 18, 24     v2 Table 4
=============================== ======================================================= ==============

``deeplab_v2_resnet101_baseline``: DeepLab v2 Table 4's first row (no LargeFOV, no ASPP). Neither the
paper nor the released code spells out its classifier; we use one 3x3 convolution at rate 1, i.e.
LargeFOV's layer without the large rate, so the three ResNet heads differ only in their rates.

Small variants (deviation from paper, for the ``cpu`` profile; same heads, fine-tuned from the shipped
stand-in weights of dlib.standins): ``small_resnet_{baseline,largefov,aspp,aspp_s}`` and
``small_vgg_{largefov,aspp_s,aspp_l}``. Their atrous rates are the paper's scaled by the feature-map size:
a 321 crop gives 41x41 features, the cpu profile's 145 crop 19x19, about 1/2, so ASPP-L (6, 12, 18, 24) ->
(3, 6, 9, 12), LargeFOV 12 -> 6, and ASPP-S (2, 4, 8, 12) -> (1, 2, 4, 6). This keeps the share of filter
taps that land on the feature map rather than on zero padding (dlib.aspp.valid_tap_fraction) as in the
paper: ASPP-L on 41x41 gives 0.81, 0.65, 0.50, 0.37 per branch, the scaled rates on 19x19 give 0.80, 0.62,
0.47, 0.34, while the paper's rates on 19x19 would give 0.62, 0.34, 0.14, 0.11 (rates 18 and 24 nearly
exceed the map: only the centre tap is left, a 1x1 filter), and ASPP-S vs ASPP-L would no longer differ in
what they see.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .aspp import ASPP
from .atrous import Layer
from .backbones import ResNet101Dense, SmallDilatedResNet, VGG16Dense, output_size, stack_layers

OUTPUT_STRIDE = 8


class DeepLab(nn.Module):
    """Backbone (image -> features at stride 8) followed by an atrous head (features -> class scores).

    forward: (N, 3, H, W) -> logits (N, classes, ceil(H/8), ceil(W/8)); logit (i, j) is centred on
    input pixel (8i, 8j). Use :func:`upsample_logits` for scores at the input size.
    """

    output_stride = OUTPUT_STRIDE

    def __init__(self, backbone: nn.Module, head: ASPP, *, name: str = "deeplab"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.name = name
        self.load_report: LoadReport | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(x.shape)}")
        return self.head(self.backbone(x))

    def layers(self, branch: int = 0) -> list[Layer]:
        """The layer stack from the image to ``branch``'s scores, for dlib.atrous.receptive_field."""
        return stack_layers(self.backbone) + stack_layers(self.head.branches[branch])


# ----------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, for tables: its family, head and the paper's figures."""

    name: str
    builder: Callable[..., DeepLab]
    backbone: str  # "vgg16", "resnet101", "small_vgg", "small_resnet"
    head: str  # "fov" (DeepLab v1 field-of-view variants), "largefov", "aspp", "baseline"
    kernel_size: int
    rates: tuple[int, ...]
    hidden: int | None  # fc6/fc7 channels (VGG heads), None for single-layer classifiers
    paper_params_m: float | None = None  # published parameter count, millions
    source: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def _register(name: str, backbone: str, head: str, kernel_size: int, rates: tuple[int, ...], hidden: int | None,
              paper_params_m: float | None = None, source: str = ""):
    def wrap(fn: Callable[..., DeepLab]) -> Callable[..., DeepLab]:
        _REGISTRY[name] = ModelInfo(name, fn, backbone, head, kernel_size, rates, hidden, paper_params_m, source)
        return fn
    return wrap


def available() -> list[str]:
    """Names accepted by :func:`build`, in registration order."""
    return list(_REGISTRY)


def info(name: str) -> ModelInfo:
    """The registry entry of ``name`` (family, head, rates, the paper's parameter count)."""
    _check_name(name)
    return _REGISTRY[name]


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(_REGISTRY)}")


def build(name: str, *, num_classes: int = 21, pretrained: str | os.PathLike | None = None, **kw: Any) -> DeepLab:
    """Build a registered model. ``pretrained``: None, "imagenet" (torchvision weights) or a local file.

    Extra keywords go to the builder (e.g. ``dropout``, ``freeze_bn``).
    """
    _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name].builder(num_classes=num_classes, pretrained=pretrained, **kw)


# ----------------------------------------------------------------------------------------------------
# Builders (keyword-only, paper defaults)


def _init_head(head: ASPP) -> None:
    """DeepLab prototxt: new classifier layers ~ N(0, 0.01^2), bias 0; fc6/fc7 (when not from ImageNet) He."""
    for branch in head.branches:
        for m in branch.children():
            if not isinstance(m, nn.Conv2d):
                continue
            if m is branch.classifier:
                nn.init.normal_(m.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def vgg16_deeplab(*, name: str = "vgg16_deeplab", num_classes: int = 21, pretrained=None, rates=(12,),
                  kernel_size: int = 3, hidden: int = 1024, widths=(64, 128, 256, 512, 512), batch_norm: bool = False,
                  dropout: float = 0.5, avg_pool5: bool = False) -> DeepLab:
    """Any DeepLab VGG-16: dense VGG-16 (optionally narrowed / with BN) and a head of fc6-fc7-fc8 branches.

    The registered v1/v2 VGG models and the small VGG variants are this builder with fixed settings.
    """
    backbone = VGG16Dense(widths=widths, batch_norm=batch_norm, avg_pool5=avg_pool5)
    _init_convs(backbone)
    head = ASPP(backbone.out_channels, num_classes, rates, hidden=hidden, kernel_size=kernel_size, dropout=dropout)
    _init_head(head)
    model = DeepLab(backbone, head, name=name)
    return _maybe_load(model, pretrained)


def resnet101_deeplab(*, name: str = "resnet101_deeplab", num_classes: int = 21, pretrained=None,
                      rates=(6, 12, 18, 24), freeze_bn: bool = True, caffe_layout: bool = False) -> DeepLab:
    """DeepLab ResNet-101 with one 3x3 classifier (2048 -> classes) per rate, summed.

    ``caffe_layout``: the released prototxt's ResNet-101 (dlib.backbones.ResNet101Dense), for Caffe weights.
    """
    backbone = ResNet101Dense(freeze_bn=freeze_bn, caffe_layout=caffe_layout)  # torchvision's own initialisation
    head = ASPP(backbone.out_channels, num_classes, rates, hidden=None, kernel_size=3)
    _init_head(head)
    return _maybe_load(DeepLab(backbone, head, name=name), pretrained)


@_register("deeplab_v1_7x7", "vgg16", "fov", 7, (4,), 4096, 134.3, "DeepLab v1, Table 2 (DeepLab-CRF-7x7)")
def deeplab_v1_7x7(*, num_classes: int = 21, pretrained=None, dropout: float = 0.5, avg_pool5: bool = False) -> DeepLab:
    """VGG-16 with fc6 as the full 7x7 ImageNet filter at input stride (rate) 4, fc6/fc7 4096 channels."""
    return vgg16_deeplab(name="deeplab_v1_7x7", num_classes=num_classes, pretrained=pretrained, rates=(4,), kernel_size=7,
                hidden=4096, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v1_4x4", "vgg16", "fov", 4, (4,), 4096, 65.1, "DeepLab v1, Table 2 (DeepLab-CRF)")
def deeplab_v1_4x4(*, num_classes: int = 21, pretrained=None, dropout: float = 0.5, avg_pool5: bool = False) -> DeepLab:
    """VGG-16 with fc6 decimated to 4x4 at rate 4 (receptive field 128 in the paper's count)."""
    return vgg16_deeplab(name="deeplab_v1_4x4", num_classes=num_classes, pretrained=pretrained, rates=(4,), kernel_size=4,
                hidden=4096, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v1_4x4_r8", "vgg16", "fov", 4, (8,), 4096, 65.1, "DeepLab v1, Table 2 (DeepLab-CRF-4x4)")
def deeplab_v1_4x4_r8(*, num_classes: int = 21, pretrained=None, dropout: float = 0.5,
                      avg_pool5: bool = False) -> DeepLab:
    """VGG-16 with fc6 decimated to 4x4 at rate 8 (receptive field 224 in the paper's count)."""
    return vgg16_deeplab(name="deeplab_v1_4x4_r8", num_classes=num_classes, pretrained=pretrained, rates=(8,), kernel_size=4,
                hidden=4096, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v1_largefov", "vgg16", "largefov", 3, (12,), 1024, 20.5,
           "DeepLab v1, Table 2 (DeepLab-CRF-LargeFOV)")
def deeplab_v1_largefov(*, num_classes: int = 21, pretrained=None, dropout: float = 0.5,
                        avg_pool5: bool = False) -> DeepLab:
    """VGG-16 DeepLab-LargeFOV: fc6 3x3 at rate 12, fc6/fc7 reduced to 1024 channels."""
    return vgg16_deeplab(name="deeplab_v1_largefov", num_classes=num_classes, pretrained=pretrained, rates=(12,), kernel_size=3,
                hidden=1024, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v2_vgg16_aspp_s", "vgg16", "aspp", 3, (2, 4, 8, 12), 1024, None, "DeepLab v2, Table 3 (ASPP-S)")
def deeplab_v2_vgg16_aspp_s(*, num_classes: int = 21, pretrained=None, rates=(2, 4, 8, 12), dropout: float = 0.5,
                            avg_pool5: bool = False) -> DeepLab:
    """VGG-16 ASPP-S: four fc6(3x3, rate r, 1024)-fc7-fc8 branches, r = 2, 4, 8, 12, summed."""
    return vgg16_deeplab(name="deeplab_v2_vgg16_aspp_s", num_classes=num_classes, pretrained=pretrained, rates=tuple(rates),
                kernel_size=3, hidden=1024, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v2_vgg16_aspp_l", "vgg16", "aspp", 3, (6, 12, 18, 24), 1024, None,
           "DeepLab v2, Table 3 (ASPP-L)")
def deeplab_v2_vgg16_aspp_l(*, num_classes: int = 21, pretrained=None, rates=(6, 12, 18, 24), dropout: float = 0.5,
                            avg_pool5: bool = False) -> DeepLab:
    """VGG-16 ASPP-L: four fc6(3x3, rate r, 1024)-fc7-fc8 branches, r = 6, 12, 18, 24, summed."""
    return vgg16_deeplab(name="deeplab_v2_vgg16_aspp_l", num_classes=num_classes, pretrained=pretrained, rates=tuple(rates),
                kernel_size=3, hidden=1024, dropout=dropout, avg_pool5=avg_pool5)


@_register("deeplab_v2_resnet101_baseline", "resnet101", "baseline", 3, (1,), None, None,
           "DeepLab v2, Table 4 (first row)")
def deeplab_v2_resnet101_baseline(*, num_classes: int = 21, pretrained=None, freeze_bn: bool = True,
                                  caffe_layout: bool = False) -> DeepLab:
    """ResNet-101 at output stride 8 with one 3x3 classifier at rate 1 (our reading of the baseline row)."""
    return resnet101_deeplab(name="deeplab_v2_resnet101_baseline", num_classes=num_classes, pretrained=pretrained, rates=(1,),
                      freeze_bn=freeze_bn, caffe_layout=caffe_layout)


@_register("deeplab_v2_resnet101_largefov", "resnet101", "largefov", 3, (12,), None, None,
           "DeepLab v2, Table 4 (LargeFOV)")
def deeplab_v2_resnet101_largefov(*, num_classes: int = 21, pretrained=None, freeze_bn: bool = True,
                                  caffe_layout: bool = False) -> DeepLab:
    """ResNet-101 at output stride 8 with one 3x3 classifier at rate 12."""
    return resnet101_deeplab(name="deeplab_v2_resnet101_largefov", num_classes=num_classes, pretrained=pretrained, rates=(12,),
                      freeze_bn=freeze_bn, caffe_layout=caffe_layout)


@_register("deeplab_v2_resnet101_aspp", "resnet101", "aspp", 3, (6, 12, 18, 24), None, None,
           "DeepLab v2, Table 4 (ASPP)")
def deeplab_v2_resnet101_aspp(*, num_classes: int = 21, pretrained=None, rates=(6, 12, 18, 24),
                              freeze_bn: bool = True, caffe_layout: bool = False) -> DeepLab:
    """ResNet-101 at output stride 8 with four 3x3 classifiers (2048 -> classes) at rates 6-24, summed."""
    return resnet101_deeplab(name="deeplab_v2_resnet101_aspp", num_classes=num_classes, pretrained=pretrained,
                      rates=tuple(rates), freeze_bn=freeze_bn, caffe_layout=caffe_layout)


# Small CPU variants ---------------------------------------------------------------------------------
# Deviation from paper (cpu profile): narrow, shallow networks so that 30-odd trainings fit a laptop's half hour.
# Their "ImageNet" weights are the stand-ins of dlib.standins (pretrained='imagenet'), shipped with the project.
SMALL_RESNET_WIDTHS = (16, 16, 32, 64, 96)  # stem, layer1..layer4
SMALL_RESNET_BLOCKS = (1, 1, 1, 1)
SMALL_RESNET_DILATIONS = (1, 2)  # layer3, layer4 (ResNet-101: 2, 4); a small field of view, see dlib.data
SMALL_VGG_WIDTHS = (8, 16, 32, 48, 48)  # VGG-16's (64, 128, 256, 512, 512) narrowed
SMALL_VGG_HIDDEN = 128  # fc6/fc7 channels (LargeFOV: 1024)
# The paper's rates scaled by the feature-map side: a 321 crop gives 41x41 features, the cpu profile's 145 crop
# 19x19, about 1/2: LargeFOV 12 -> 6, ASPP-L (6, 12, 18, 24) -> (3, 6, 9, 12), ASPP-S (2, 4, 8, 12) -> (1, 2, 4, 6).
SMALL_RATES = {"baseline": (1,), "largefov": (6,), "aspp_s": (1, 2, 4, 6), "aspp_l": (3, 6, 9, 12)}


def _scaled(widths, width: float) -> tuple[int, ...]:
    """Channel counts times ``width`` (at least 8 each): cheaper (or wider) variants of the small models."""
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier of the small models' channels, got {width!r}")
    return tuple(max(8, int(round(c * width))) for c in widths)


def _small(name: str, family: str, *, num_classes: int, pretrained, rates, width: float, freeze_bn: bool | None,
           dropout: float = 0.5) -> DeepLab:
    """A small model; ``pretrained="imagenet"`` loads its family's stand-in (dlib.standins) and, as DeepLab
    does with ImageNet weights, freezes batch normalisation (``freeze_bn`` None: frozen exactly when pretrained)."""
    freeze = pretrained is not None if freeze_bn is None else freeze_bn
    if family == "small_resnet":
        backbone = SmallDilatedResNet(widths=_scaled(SMALL_RESNET_WIDTHS, width), blocks=SMALL_RESNET_BLOCKS,
                                      dilations=SMALL_RESNET_DILATIONS, freeze_bn=freeze)
        hidden = None
    else:
        backbone = VGG16Dense(widths=_scaled(SMALL_VGG_WIDTHS, width), batch_norm=True, freeze_bn=freeze)
        hidden = _scaled((SMALL_VGG_HIDDEN,), width)[0]
    _init_convs(backbone)
    head = ASPP(backbone.out_channels, num_classes, rates, hidden=hidden, kernel_size=3, dropout=dropout)
    _init_head(head)
    model = DeepLab(backbone, head, name=name)
    if isinstance(pretrained, str) and pretrained == "imagenet":
        from . import standins

        standins.load_imagenet(model, family, width=width)
        return model
    return _maybe_load(model, pretrained)


def _register_small(name: str, family: str, head: str, doc: str) -> None:
    """Register a small model; its builder is made from the table below (one entry per name)."""
    rates = SMALL_RATES[head]
    kind = "aspp" if len(rates) > 1 else ("baseline" if head == "baseline" else "largefov")

    def builder(*, num_classes: int = 21, pretrained=None, width: float = 1.0, freeze_bn: bool | None = None,
                dropout: float = 0.5, rates: tuple[int, ...] = rates) -> DeepLab:
        return _small(name, family, num_classes=num_classes, pretrained=pretrained, rates=tuple(rates), width=width,
                      freeze_bn=freeze_bn, dropout=dropout)

    builder.__name__, builder.__doc__ = name, doc
    globals()[name] = builder
    _register(name, family, kind, 3, rates, SMALL_VGG_HIDDEN if family == "small_vgg" else None)(builder)


for _name, _family, _head, _doc in (
        ("small_resnet_baseline", "small_resnet", "baseline", "Small dilated ResNet, one 3x3 classifier at rate 1."),
        ("small_resnet_largefov", "small_resnet", "largefov", "Small dilated ResNet, one 3x3 classifier at rate 6."),
        ("small_resnet_aspp", "small_resnet", "aspp_l", "Small dilated ResNet, 3x3 classifiers at 3, 6, 9, 12, summed."),
        ("small_resnet_aspp_s", "small_resnet", "aspp_s", "Small dilated ResNet, 3x3 classifiers at 1, 2, 4, 6, summed."),
        ("small_vgg_largefov", "small_vgg", "largefov", "Narrow VGG-16 (BN), LargeFOV head: fc6 3x3 at rate 6."),
        ("small_vgg_aspp_s", "small_vgg", "aspp_s", "Narrow VGG-16 (BN), ASPP-S: fc6-fc7-fc8 at 1, 2, 4, 6, summed."),
        ("small_vgg_aspp_l", "small_vgg", "aspp_l", "Narrow VGG-16 (BN), ASPP-L: fc6-fc7-fc8 at 3, 6, 9, 12, summed.")):
    _register_small(_name, _family, _head, _doc)


# ----------------------------------------------------------------------------------------------------
# Upsampling and learning-rate groups


def paper_receptive_field(kernel_size: int, rate: int, *, output_stride: int = 8, pool5_stride: int = 32) -> int:
    """DeepLab v1 Table 2's "receptive field" of fc6: its span measured as on the original VGG-16.

    fc6 (k x k at rate r, on stride-8 features) spans r*(k-1) feature steps of 8 pixels; on VGG-16's
    stride-32 pool5 grid that is an equivalent kernel k' = r*(k-1)*8/32 + 1 cells of 32 pixels, and the
    table lists 32*k' = 8*r*(k-1) + 32: 224 for 7x7 at rate 4 (VGG-16's own 7x7 fc6 on pool5),
    128 for 4x4 at rate 4, 224 for 4x4 at rate 8 and for 3x3 at rate 12. It is not the full
    theoretical receptive field of the network (dlib.atrous.receptive_field), which also counts conv1-pool5.
    """
    return output_stride * rate * (kernel_size - 1) + pool5_stride


def upsample_logits(logits: torch.Tensor, size: tuple[int, int] | torch.Size, *,
                    output_stride: int = OUTPUT_STRIDE) -> torch.Tensor:
    """Bilinear x8 upsampling of (N, C, h, w) logits to the input size (H, W), pixel-aligned.

    Logit i is centred on input pixel 8*i (every backbone here pads symmetrically), so pixel p takes
    the bilinear value at logit coordinate p / 8: the logits are interpolated with
    ``align_corners=True`` onto the 8*(h-1)+1 pixels they span, and the at most 7 pixels past the
    last logit centre hold the edge value. For H = 8k+1 (the paper's 321 and 513) this is exactly
    ``F.interpolate(logits, size, mode="bilinear", align_corners=True)``, Caffe's Interp layer.
    (``align_corners=False`` would shift the scores by about 3.5 pixels.)
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (N, C, h, w), got shape {tuple(logits.shape)}")
    H, W = int(size[0]), int(size[1])
    h, w = logits.shape[-2:]
    if output_size(H, output_stride) != h or output_size(W, output_stride) != w:
        raise ValueError(
            f"logits of size {h}x{w} do not come from a {H}x{W} input at output stride {output_stride} "
            f"(expected {output_size(H, output_stride)}x{output_size(W, output_stride)}); "
            "for an arbitrary resize use F.interpolate")
    span = (output_stride * (h - 1) + 1, output_stride * (w - 1) + 1)
    out = F.interpolate(logits, size=span, mode="bilinear", align_corners=True)
    pad_h, pad_w = H - span[0], W - span[1]  # 0..output_stride-1 pixels past the last logit centre
    if pad_h or pad_w:
        out = F.pad(out, (0, pad_w, 0, pad_h), mode="replicate")
    return out


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters split as Caffe's lr_mult groups (DeepLab v2 released solver/prototxt).

    "head_*": the classifier layers the paper initialises at random (fc8 of every VGG branch, the
    3x3 classifiers of the ResNet heads), trained at 10x (weights) and 20x (biases) the base rate.
    "backbone_*": everything else, including VGG's fc6/fc7 (initialised from ImageNet, 1x/2x in the
    prototxt). "*_weight" holds parameters whose name ends in "weight" (convolution kernels, BN
    scales), "*_bias" the rest. Frozen parameters (``requires_grad=False``, e.g. ResNet-101's BN) are
    left out. Works on a :class:`DeepLab` or a wrapper exposing ``.head`` (dlib.msc.MSC).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, ASPP):
        raise TypeError(f"param_groups needs a DeepLab model (with an ASPP .head), got {type(model).__name__}")
    classifier_ids = {id(p) for branch in head.branches for p in branch.classifier.parameters()}
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


# ----------------------------------------------------------------------------------------------------
# Pretrained weights


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be found, read or matched to the model."""


@dataclass
class LoadReport:
    """What a pretrained load did: keys loaded, model keys left at their initialisation, and why."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys absent from the file (head only)
    skipped: list[str] = field(default_factory=list)  # file keys not used (ImageNet classifier, shape change)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors from {self.source}; {len(self.missing)} model tensors kept "
                f"their initialisation{_short(self.missing)}; {len(self.skipped)} file tensors skipped"
                f"{_short(self.skipped)}")


def _short(keys: list[str], n: int = 6) -> str:
    if not keys:
        return ""
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return " (" + ", ".join(keys[:n]) + more + ")"


_IMAGENET = {"vgg16": "VGG16_Weights", "resnet101": "ResNet101_Weights"}


def imagenet_weights_url(backbone: str) -> str:
    """torchvision's IMAGENET1K_V1 URL for ``backbone`` ("vgg16" or "resnet101")."""
    import torchvision.models as tvm

    if backbone not in _IMAGENET:
        raise ValueError(f"no ImageNet weights for backbone {backbone!r}; ImageNet initialisation exists for "
                         f"{', '.join(_IMAGENET)} (the paper models)")
    return getattr(tvm, _IMAGENET[backbone]).IMAGENET1K_V1.url


def imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict through torch.hub's cache ($TORCH_HOME/hub/checkpoints).

    Reads the cached file when present, else downloads it; with neither, raises
    :class:`PretrainedWeightsError` naming the file to fetch and where to put it.
    """
    url = imagenet_weights_url(backbone)
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu", check_hash=True,
                                                  weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure (no network, bad file) gets the same advice
        raise PretrainedWeightsError(
            f"could not get torchvision's ImageNet weights for {backbone} ({type(err).__name__}: {err}). "
            f"Download {url} and save it as {target} (that is $TORCH_HOME/hub/checkpoints/; set TORCH_HOME to "
            "choose the folder), or pass pretrained='<path to a local .pth file>', or pretrained=None to start "
            "from random weights") from err


def _numpy_safe_globals() -> list[Any]:
    """What numpy arrays unpickle through (its array rebuild function, ndarray, dtype): data, no code.

    A training checkpoint of dlib.train holds numpy's RNG state beside the tensors; allowing these lets ``torch.load(weights_only=True)`` read it while every other Python object stays refused.
    """
    rebuild = np.zeros(1).__reduce__()[0]  # numpy._core.multiarray._reconstruct (numpy.core in numpy 1.x)
    return [rebuild, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (tensors, containers, numbers, text, numpy arrays).

    Unpickling an arbitrary file can run any code it names, so a file a user supplies or downloaded is never
    read with ``weights_only=False``. A file holding other Python objects raises
    :class:`PretrainedWeightsError` naming them and the fix.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only used to name the objects in the message
            found = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
        names = [n for n in found if n not in allowed]
        raise PretrainedWeightsError(
            f"{path} holds Python objects other than tensors, numbers, text and numpy arrays"
            f"{' (' + ', '.join(names[:6]) + ')' if names else ''}; they are refused because unpickling them could "
            "run code (torch.load(weights_only=True)). Save only the state dict, e.g. in a Python session you "
            "trust: torch.save(torch.load(PATH, weights_only=False)['model'], 'weights.pt')") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, not a torch file: all mean "unreadable"
        raise PretrainedWeightsError(
            f"could not read {path} as a PyTorch file: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file: unwraps {"state_dict": ...} / {"model": ...}, strips "module."

    Read with :func:`safe_load` (``weights_only=True``): a dlib.train checkpoint (tensors, a config dict,
    numpy RNG states) loads; a file that pickles other Python objects is refused with a clear error.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {str(path)!r} does not exist; give the path of a "
                                     "torchvision ImageNet .pth or a DeepLab checkpoint saved with this library")
    obj = safe_load(path)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    out = {}
    for k, v in obj.items():
        while k.startswith("module."):  # saved from nn.DataParallel / DistributedDataParallel
            k = k[len("module."):]
        out[k] = v
    return out


def decimation_indices(n: int, m: int) -> np.ndarray:
    """m evenly spaced indices out of n, both ends kept: 7 -> 4 gives 0, 2, 4, 6 and 7 -> 3 gives 0, 3, 6."""
    if not 1 <= m <= n:
        raise ValueError(f"cannot keep {m} of {n} entries")
    if m == 1:
        return np.array([(n - 1) // 2])
    return np.round(np.linspace(0, n - 1, m)).astype(np.int64)


def channel_indices(n: int, m: int) -> np.ndarray:
    """m of n channels, every (n // m)-th from 0: 4096 -> 1024 keeps 0, 4, 8, ..., 4092."""
    if not 1 <= m <= n:
        raise ValueError(f"cannot keep {m} of {n} channels")
    return np.arange(m) * (n // m)


def vgg_imagenet_to_deeplab(state_dict: Mapping[str, torch.Tensor], *, kernel_size: int, hidden: int,
                            num_branches: int = 1) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a torchvision VGG-16 ImageNet state dict onto a DeepLab VGG model's names.

    DeepLab v1, Sec. 3.2: fc6 (a 7x7x512 -> 4096 fully connected layer) becomes a convolution,
    "spatially subsampled (by simple decimation)" to ``kernel_size`` (taps
    :func:`decimation_indices`), and for LargeFOV its 4096 outputs (and fc7's inputs/outputs) are
    decimated to ``hidden`` (:func:`channel_indices`). Every ASPP branch receives the same fc6/fc7
    (DeepLab v2's VGG ASPP is initialised from ImageNet in each branch). The ImageNet fc8
    (1000 classes) is not used. Returns (state dict, skipped keys).
    """
    if "classifier.0.weight" not in state_dict:
        raise PretrainedWeightsError("not a torchvision VGG state dict: no 'classifier.0.weight' (fc6)")
    out: dict[str, torch.Tensor] = {}
    skipped = []
    for k, v in state_dict.items():
        if k.startswith("features."):
            out["backbone." + k] = v
        elif not k.startswith("classifier."):
            skipped.append(k)
    skipped += [k for k in state_dict if k.startswith("classifier.6.")]  # ImageNet's 1000-way fc8
    w6, b6 = state_dict["classifier.0.weight"], state_dict["classifier.0.bias"]
    w7, b7 = state_dict["classifier.3.weight"], state_dict["classifier.3.bias"]
    last_conv = max((k for k in state_dict if k.startswith("features.") and k.endswith(".weight")
                     and state_dict[k].dim() == 4), key=lambda k: int(k.split(".")[1]))
    c5 = state_dict[last_conv].shape[0]  # pool5 channels (512)
    full = w6.shape[0]  # 4096
    side = int(round((w6.numel() / (full * c5)) ** 0.5))  # 7
    if w6.dim() == 2:
        if full * c5 * side * side != w6.numel():
            raise PretrainedWeightsError(f"fc6 of shape {tuple(w6.shape)} is not {full} x ({c5} x k x k)")
        w6 = w6.reshape(full, c5, side, side)  # fully connected -> convolution (N_out, C_in, 7, 7)
    taps = torch.as_tensor(decimation_indices(side, kernel_size))
    ch = torch.as_tensor(channel_indices(full, hidden))
    fc6_w = w6[ch][:, :, taps][:, :, :, taps].contiguous()  # (hidden, 512, k, k)
    fc6_b = b6[ch].contiguous()
    fc7_w = w7.reshape(w7.shape[0], w7.shape[1])[ch][:, ch].reshape(hidden, hidden, 1, 1).contiguous()
    fc7_b = b7[ch].contiguous()
    for b in range(num_branches):
        out[f"head.branches.{b}.fc6.weight"] = fc6_w.clone()
        out[f"head.branches.{b}.fc6.bias"] = fc6_b.clone()
        out[f"head.branches.{b}.fc7.weight"] = fc7_w.clone()
        out[f"head.branches.{b}.fc7.bias"] = fc7_b.clone()
    return out, skipped


def resnet_imagenet_to_deeplab(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a torchvision ResNet ImageNet state dict onto ``backbone.*``; the 1000-way ``fc`` is skipped."""
    if "layer4.0.conv1.weight" not in state_dict:
        raise PretrainedWeightsError("not a torchvision ResNet state dict: no 'layer4.0.conv1.weight'")
    out = {"backbone." + k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    return out, [k for k in state_dict if k.startswith("fc.")]


def _convert(model: DeepLab, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Recognise the file's format (torchvision VGG / ResNet, or a DeepLab checkpoint) and rename."""
    if any(k.startswith(("backbone.", "head.")) for k in state_dict):
        return dict(state_dict), []
    if "classifier.0.weight" in state_dict and isinstance(model.backbone, VGG16Dense):
        first = model.head.branches[0]
        return vgg_imagenet_to_deeplab(state_dict, kernel_size=first.kernel_size, hidden=first.fc6.out_channels,
                                       num_branches=len(model.head.branches))
    if "layer4.0.conv1.weight" in state_dict and isinstance(model.backbone, ResNet101Dense):
        return resnet_imagenet_to_deeplab(state_dict)
    sample = ", ".join(list(state_dict)[:4])
    raise PretrainedWeightsError(
        f"the weights (keys like {sample}) match neither a DeepLab checkpoint ('backbone.*', 'head.*') nor the "
        f"torchvision ImageNet layout of {type(model.backbone).__name__}; check that the file is for this model")


def load_pretrained(model: DeepLab, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict") -> LoadReport:
    """Load ImageNet or DeepLab weights into ``model`` and report what was used.

    Backbone tensors must all be present with matching shapes, and no file tensor may be unknown to
    the model (both are errors naming the keys). Head tensors may be missing or of another shape (a
    COCO-pretrained classifier has other classes): those keep their initialisation and are reported.
    """
    converted, skipped = _convert(model, state_dict)
    own = model.state_dict()
    unexpected = sorted(k for k in converted if k not in own)
    if unexpected:
        raise PretrainedWeightsError(f"{source}: {len(unexpected)} tensors have no place in {model.name}"
                                     f"{_short(unexpected)}; is the file for another architecture?")
    # BN's num_batches_tracked is absent from older files and unused with momentum-based statistics.
    backbone_missing = sorted(k for k in own if k.startswith("backbone.") and k not in converted
                              and not k.endswith("num_batches_tracked"))
    if backbone_missing:
        raise PretrainedWeightsError(f"{source}: {len(backbone_missing)} backbone tensors of {model.name} are absent"
                                     f"{_short(backbone_missing)}")
    mismatched = sorted(k for k in converted if converted[k].shape != own[k].shape)
    bad = [k for k in mismatched if k.startswith("backbone.")]
    if bad:
        raise PretrainedWeightsError(
            f"{source}: backbone shapes differ from {model.name}: "
            + "; ".join(f"{k}: file {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}" for k in bad[:6]))
    usable = {k: v for k, v in converted.items() if k not in mismatched}
    model.load_state_dict(usable, strict=False)
    report = LoadReport(source=source, loaded=sorted(usable), missing=sorted(k for k in own if k not in usable),
                        skipped=sorted(skipped + mismatched))
    if mismatched:
        warnings.warn(f"{source}: head tensors of another shape were not loaded{_short(mismatched)} "
                      "(e.g. a classifier for other classes); they keep their random initialisation", stacklevel=2)
    model.load_report = report
    return report


def _maybe_load(model: DeepLab, pretrained) -> DeepLab:
    if pretrained is None:
        return model
    if isinstance(pretrained, str) and pretrained == "imagenet":
        if isinstance(model.backbone, VGG16Dense) and model.backbone.out_channels == 512:
            family = "vgg16"
        elif isinstance(model.backbone, ResNet101Dense):
            family = "resnet101"
        else:
            raise ValueError(f"{model.name} has no ImageNet weights (only full-width VGG-16 and ResNet-101 do); "
                             "use pretrained=None or a local checkpoint of this same model")
        load_pretrained(model, imagenet_state_dict(family), source=f"torchvision ImageNet {family}")
    elif isinstance(pretrained, (str, os.PathLike)):
        load_pretrained(model, read_state_dict(pretrained), source=str(pretrained))
    else:
        raise TypeError(f"pretrained must be None, 'imagenet' or a path, got {pretrained!r}")
    return model
