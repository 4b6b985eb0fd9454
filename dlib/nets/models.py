"""Every network the two DeepLab papers evaluate, plus small CPU variants, behind one registry.

    >>> model = build("deeplab_v2_resnet101_aspp", num_classes=21)       # doctest: +SKIP
    >>> logits = model(images)          # (N, 21, ceil(H/8), ceil(W/8)): 41x41 for 321x321
    >>> scores = upsample_logits(logits, images.shape[-2:])              # (N, 21, H, W)

Paper models (output stride 8, see dlib.nets.backbones and dlib.nets.aspp):

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

Small variants (deviation from paper, for the ``cpu`` profile; same heads, fine-tuned from the shipped stand-in
weights of dlib.nets.standins): ``small_resnet_{baseline,largefov,aspp,aspp_s}`` and
``small_vgg_{largefov,aspp_s,aspp_l}``. Their atrous rates are the paper's scaled by the feature-map size: a 321
crop gives 41x41 features, the cpu profile's 129 crop 17x17, about 1/2, so ASPP-L (6, 12, 18, 24) -> (3, 6, 9, 12),
LargeFOV 12 -> 6, and ASPP-S (2, 4, 8, 12) -> (1, 2, 4, 6). This keeps the share of filter taps that land on the
feature map rather than on zero padding (dlib.nets.aspp.valid_tap_fraction) as in the paper: ASPP-L on 41x41 gives
0.81, 0.65, 0.50, 0.37 per branch, the scaled rates on 17x17 give 0.78, 0.58, 0.42, 0.28, while the paper's rates on
17x17 would give 0.58, 0.28, 0.11, 0.11 (rates 18 and 24 nearly exceed the map: only the centre tap is left, a 1x1
filter), and ASPP-S vs ASPP-L would no longer differ in what they see.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlib.core.config_values import ConfigError
from dlib.core.constants import NUM_CLASSES
from dlib.nets.aspp import ASPP
from dlib.nets.atrous import Layer
from dlib.nets.backbones import ResNet101Dense, SmallDilatedResNet, VGG16Dense, output_size, stack_layers
from dlib.nets.weights import LoadReport, maybe_load

OUTPUT_STRIDE = 8

# Small CPU variants ---------------------------------------------------------------------------------
# Deviation from paper (cpu profile): narrow, shallow networks so that 30-odd trainings fit a laptop's half hour.
# Their "ImageNet" weights are the stand-ins of dlib.nets.standins (pretrained='imagenet'), shipped with the project.
SMALL_RESNET_WIDTHS = (16, 16, 32, 64, 96)  # stem, layer1..layer4
SMALL_RESNET_BLOCKS = (1, 1, 1, 1)
SMALL_RESNET_DILATIONS = (1, 2)  # layer3, layer4 (ResNet-101: 2, 4); a small field of view, see dlib.data
SMALL_VGG_WIDTHS = (8, 16, 32, 48, 48)  # VGG-16's (64, 128, 256, 512, 512) narrowed
SMALL_VGG_HIDDEN = 128  # fc6/fc7 channels (LargeFOV: 1024)
# The paper's rates scaled by the feature-map side, 17/41 (the module docstring says why).
SMALL_RATES = {"baseline": (1,), "largefov": (6,), "aspp_s": (1, 2, 4, 6), "aspp_l": (3, 6, 9, 12)}


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
        """The layer stack from the image to ``branch``'s scores, for dlib.nets.atrous.receptive_field."""
        return stack_layers(self.backbone) + stack_layers(self.head.branches[branch])


# ----------------------------------------------------------------------------------------------------
# The model table: one row per registered name; the builders are made from it (see the end of this file)


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its family, head, the paper's figures, and the builder made from the row."""

    name: str
    backbone: str  # "vgg16", "resnet101", "small_vgg", "small_resnet"
    head: str  # "fov" (DeepLab v1 field-of-view variants), "largefov", "aspp", "baseline"
    kernel_size: int
    rates: tuple[int, ...]
    hidden: int | None  # fc6/fc7 channels (VGG heads), None for single-layer classifiers
    paper_params_m: float | None = None  # published parameter count, millions
    source: str = ""
    doc: str = ""
    ablation: tuple[str, str] | None = None  # the (backbone, head) of the ablation trainings it runs (ablation_tables)

    @property
    def builder(self) -> Callable[..., DeepLab]:
        return _BUILDERS[self.name]


def _row(name, backbone, head, kernel_size, rates, hidden, paper_params_m=None, source="", doc="",
         ablation=None) -> ModelInfo:
    return ModelInfo(name, backbone, head, kernel_size, tuple(rates), hidden, paper_params_m, source, doc, ablation)


# The small CPU backbones: what each is, its fc6/fc7 width (None: one-layer classifiers), its ablation family.
_SMALL = {"small_resnet": ("Small dilated ResNet", None, "resnet"),
          "small_vgg": ("Narrow VGG-16 (BN)", SMALL_VGG_HIDDEN, "vgg")}


def _small_row(backbone: str, suffix: str, rates: str, what: str, ablation: str | None = None) -> ModelInfo:
    """A small CPU variant ``<backbone>_<suffix>``: a 3x3 head at ``SMALL_RATES[rates]``."""
    family, hidden, group = _SMALL[backbone]
    return _row(f"{backbone}_{suffix}", backbone, "aspp" if rates.startswith("aspp") else rates, 3, SMALL_RATES[rates],
                hidden, doc=f"{family}, {what}.", ablation=(group, ablation) if ablation else None)


TABLE: tuple[ModelInfo, ...] = (
    _row("deeplab_v1_7x7", "vgg16", "fov", 7, (4,), 4096, 134.3, "DeepLab v1, Table 2 (DeepLab-CRF-7x7)",
         "VGG-16 with fc6 as the full 7x7 ImageNet filter at input stride (rate) 4, fc6/fc7 4096 channels."),
    _row("deeplab_v1_4x4", "vgg16", "fov", 4, (4,), 4096, 65.1, "DeepLab v1, Table 2 (DeepLab-CRF)",
         "VGG-16 with fc6 decimated to 4x4 at rate 4 (receptive field 128 in the paper's count)."),
    _row("deeplab_v1_4x4_r8", "vgg16", "fov", 4, (8,), 4096, 65.1, "DeepLab v1, Table 2 (DeepLab-CRF-4x4)",
         "VGG-16 with fc6 decimated to 4x4 at rate 8 (receptive field 224 in the paper's count)."),
    _row("deeplab_v1_largefov", "vgg16", "largefov", 3, (12,), 1024, 20.5, "DeepLab v1, Table 2 (DeepLab-CRF-LargeFOV)",
         "VGG-16 DeepLab-LargeFOV: fc6 3x3 at rate 12, fc6/fc7 reduced to 1024 channels.",
         ablation=("vgg", "largefov")),
    _row("deeplab_v2_vgg16_aspp_s", "vgg16", "aspp", 3, (2, 4, 8, 12), 1024, None, "DeepLab v2, Table 3 (ASPP-S)",
         "VGG-16 ASPP-S: four fc6(3x3, rate r, 1024)-fc7-fc8 branches, r = 2, 4, 8, 12, summed.",
         ablation=("vgg", "aspp_s")),
    _row("deeplab_v2_vgg16_aspp_l", "vgg16", "aspp", 3, (6, 12, 18, 24), 1024, None, "DeepLab v2, Table 3 (ASPP-L)",
         "VGG-16 ASPP-L: four fc6(3x3, rate r, 1024)-fc7-fc8 branches, r = 6, 12, 18, 24, summed.",
         ablation=("vgg", "aspp_l")),
    _row("deeplab_v2_resnet101_baseline", "resnet101", "baseline", 3, (1,), None, None,
         "DeepLab v2, Table 4 (first row)",
         "ResNet-101 at output stride 8 with one 3x3 classifier at rate 1 (our reading of the baseline row).",
         ablation=("resnet", "baseline")),
    _row("deeplab_v2_resnet101_largefov", "resnet101", "largefov", 3, (12,), None, None,
         "DeepLab v2, Table 4 (LargeFOV)",
         "ResNet-101 at output stride 8 with one 3x3 classifier at rate 12.", ablation=("resnet", "largefov")),
    _row("deeplab_v2_resnet101_aspp", "resnet101", "aspp", 3, (6, 12, 18, 24), None, None, "DeepLab v2, Table 4 (ASPP)",
         "ResNet-101 at output stride 8 with four 3x3 classifiers (2048 -> classes) at rates 6-24, summed.",
         ablation=("resnet", "aspp_l")),
    # Small CPU variants (deviation from paper; see SMALL_RATES)
    _small_row("small_resnet", "baseline", "baseline", "one 3x3 classifier at rate 1", ablation="baseline"),
    _small_row("small_resnet", "largefov", "largefov", "one 3x3 classifier at rate 6", ablation="largefov"),
    _small_row("small_resnet", "aspp", "aspp_l", "3x3 classifiers at 3, 6, 9, 12, summed", ablation="aspp_l"),
    _small_row("small_resnet", "aspp_s", "aspp_s", "3x3 classifiers at 1, 2, 4, 6, summed"),
    _row("small_vgg_pretext", "small_vgg", "largefov", 3, (1,), SMALL_VGG_HIDDEN,
         doc="Narrow VGG-16 (BN) with fc6 3x3 at rate 1: the shape its ImageNet stand-in is trained in (as VGG-16's "
             "fc6 is dense on ImageNet; DeepLab then applies the same filter with holes)."),
    _small_row("small_vgg", "largefov", "largefov", "LargeFOV head: fc6 3x3 at rate 6", ablation="largefov"),
    _small_row("small_vgg", "aspp_s", "aspp_s", "ASPP-S: fc6-fc7-fc8 at 1, 2, 4, 6, summed", ablation="aspp_s"),
    _small_row("small_vgg", "aspp_l", "aspp_l", "ASPP-L: fc6-fc7-fc8 at 3, 6, 9, 12, summed", ablation="aspp_l"),
)
_REGISTRY: dict[str, ModelInfo] = {row.name: row for row in TABLE}


def available() -> list[str]:
    """Names accepted by :func:`build`, in table order."""
    return list(_REGISTRY)


def info(name: str) -> ModelInfo:
    """The table row of ``name`` (family, head, rates, the paper's parameter count)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def check_names(cfg: Any) -> Any:
    """Raise :class:`dlib.core.config_values.ConfigError` naming ``model.name`` when the table has no such model."""
    if cfg.model.name not in _REGISTRY:
        raise ConfigError(f"config key 'model.name' is {cfg.model.name!r}, which is no model here; "
                          f"choose one of {', '.join(_REGISTRY)}")
    return cfg


def build(name: str, *, num_classes: int = NUM_CLASSES, pretrained: str | os.PathLike | None = None,
          **kw: Any) -> DeepLab:
    """Build a registered model. ``pretrained``: None, "imagenet" (torchvision weights) or a local file.

    Extra keywords go to the builder (e.g. ``dropout``, ``freeze_bn``).
    """
    info(name)  # an unknown name is a KeyError naming the available ones
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _BUILDERS[name](num_classes=num_classes, pretrained=pretrained, **kw)


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


def vgg16_deeplab(*, name: str = "vgg16_deeplab", num_classes: int = NUM_CLASSES, pretrained=None, rates=(12,),
                  kernel_size: int = 3, hidden: int = 1024, widths=(64, 128, 256, 512, 512), batch_norm: bool = False,
                  dropout: float = 0.5, avg_pool5: bool = False, caffe_layout: bool = False) -> DeepLab:
    """Any DeepLab VGG-16: dense VGG-16 (optionally narrowed / with BN) and a head of fc6-fc7-fc8 branches.

    The registered v1/v2 VGG models and the small VGG variants are this builder with fixed settings.
    ``caffe_layout``: the released prototxts' pooling, rounded up (dlib.nets.backbones.VGG16Dense ``caffe_pooling``).
    """
    backbone = VGG16Dense(widths=widths, batch_norm=batch_norm, avg_pool5=avg_pool5, caffe_pooling=caffe_layout)
    _init_convs(backbone)
    head = ASPP(backbone.out_channels, num_classes, rates, hidden=hidden, kernel_size=kernel_size, dropout=dropout)
    _init_head(head)
    model = DeepLab(backbone, head, name=name)
    return maybe_load(model, pretrained)


def resnet101_deeplab(*, name: str = "resnet101_deeplab", num_classes: int = NUM_CLASSES, pretrained=None,
                      rates=(6, 12, 18, 24), freeze_bn: bool = True, caffe_layout: bool = False) -> DeepLab:
    """DeepLab ResNet-101 with one 3x3 classifier (2048 -> classes) per rate, summed.

    ``caffe_layout``: the released prototxt's ResNet-101 (dlib.nets.backbones.ResNet101Dense), for Caffe weights.
    """
    backbone = ResNet101Dense(freeze_bn=freeze_bn, caffe_layout=caffe_layout)  # torchvision's own initialisation
    head = ASPP(backbone.out_channels, num_classes, rates, hidden=None, kernel_size=3)
    _init_head(head)
    return maybe_load(DeepLab(backbone, head, name=name), pretrained)


def _scaled(widths, width: float) -> tuple[int, ...]:
    """Channel counts times ``width`` (at least 8 each): cheaper (or wider) variants of the small models."""
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier of the small models' channels, got {width!r}")
    return tuple(max(8, int(round(c * width))) for c in widths)


def _small(name: str, family: str, *, num_classes: int, pretrained, rates, width: float, freeze_bn: bool | None,
           dropout: float = 0.0) -> DeepLab:
    """A small model; ``pretrained="imagenet"`` loads its family's stand-in (dlib.nets.standins) and, as DeepLab
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
        from dlib.nets import standins

        standins.load_imagenet(model, family, width=width)
        return model
    return maybe_load(model, pretrained)


# ----------------------------------------------------------------------------------------------------
# Field of view and upsampling (the learning-rate groups: dlib.training.schedule.parameter_roles)


def paper_receptive_field(kernel_size: int, rate: int, *, output_stride: int = 8, pool5_stride: int = 32) -> int:
    """DeepLab v1 Table 2's "receptive field" of fc6: its span measured as on the original VGG-16.

    fc6 (k x k at rate r, on stride-8 features) spans r*(k-1) feature steps of 8 pixels; on VGG-16's
    stride-32 pool5 grid that is an equivalent kernel k' = r*(k-1)*8/32 + 1 cells of 32 pixels, and the
    table lists 32*k' = 8*r*(k-1) + 32: 224 for 7x7 at rate 4 (VGG-16's own 7x7 fc6 on pool5),
    128 for 4x4 at rate 4, 224 for 4x4 at rate 8 and for 3x3 at rate 12. It is not the full
    theoretical receptive field of the network (dlib.nets.atrous.receptive_field), which also counts conv1-pool5.
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
    (``align_corners=False`` would shift the scores by about 3.5 pixels.) A Caffe-layout network
    (dlib.nets.backbones, pooling rounded up) may give one logit more, ceil(H/8) + 1, whose centre 8*ceil(H/8)
    lies past the last pixel: the span is cut to the image, as DeepLab crops its ``fc8_interp`` output.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (N, C, h, w), got shape {tuple(logits.shape)}")
    H, W = int(size[0]), int(size[1])
    h, w = logits.shape[-2:]
    lo_h, lo_w = output_size(H, output_stride), output_size(W, output_stride)
    if h not in (lo_h, lo_h + 1) or w not in (lo_w, lo_w + 1):
        raise ValueError(
            f"logits of size {h}x{w} do not come from a {H}x{W} input at output stride {output_stride} "
            f"(expected {lo_h}x{lo_w}, or one more per side from a Caffe-layout network); "
            "for an arbitrary resize use F.interpolate")
    span = (output_stride * (h - 1) + 1, output_stride * (w - 1) + 1)
    out = F.interpolate(logits, size=span, mode="bilinear", align_corners=True)[..., :H, :W]
    pad_h, pad_w = H - out.shape[-2], W - out.shape[-1]  # 0..output_stride-1 pixels past the last logit centre
    if pad_h or pad_w:
        out = F.pad(out, (0, pad_w, 0, pad_h), mode="replicate")
    return out


# ----------------------------------------------------------------------------------------------------
# Builders made from the table: one keyword-only function per row, with the row's rates as default


def _from_vgg16(row: ModelInfo, *, num_classes: int, pretrained, rates, dropout: float = 0.5,
                avg_pool5: bool = False, caffe_layout: bool = False) -> DeepLab:
    return vgg16_deeplab(name=row.name, num_classes=num_classes, pretrained=pretrained, rates=tuple(rates),
                         kernel_size=row.kernel_size, hidden=row.hidden, dropout=dropout, avg_pool5=avg_pool5,
                         caffe_layout=caffe_layout)


def _from_resnet101(row: ModelInfo, *, num_classes: int, pretrained, rates, freeze_bn: bool = True,
                    caffe_layout: bool = False) -> DeepLab:
    return resnet101_deeplab(name=row.name, num_classes=num_classes, pretrained=pretrained, rates=tuple(rates),
                             freeze_bn=freeze_bn, caffe_layout=caffe_layout)


def _from_small(row: ModelInfo, *, num_classes: int, pretrained, rates, width: float = 1.0,
                freeze_bn: bool | None = None, dropout: float = 0.0) -> DeepLab:
    # Deviation from paper (DeepLab's fc6/fc7 dropout 0.5): no dropout in the small VGG's 128-channel fc6/fc7. With
    # it the VGG-shaped stand-in did not learn its pretext task (2.5% mIoU after 2,000 iterations; training loss
    # 0.96 against 1.04 at 420 iterations without it).
    return _small(row.name, row.backbone, num_classes=num_classes, pretrained=pretrained, rates=tuple(rates),
                  width=width, freeze_bn=freeze_bn, dropout=dropout)


_FAMILY_BUILDERS: dict[str, Callable[..., DeepLab]] = {
    "vgg16": _from_vgg16, "resnet101": _from_resnet101, "small_vgg": _from_small, "small_resnet": _from_small}


def _make_builder(row: ModelInfo) -> Callable[..., DeepLab]:
    """``row.name(*, num_classes=21, pretrained=None, rates=row.rates, <family options>)``."""
    family = _FAMILY_BUILDERS[row.backbone]
    options = [p for p in inspect.signature(family).parameters.values()
               if p.kind is p.KEYWORD_ONLY and p.name not in ("num_classes", "pretrained", "rates")]

    def builder(*, num_classes: int = NUM_CLASSES, pretrained=None, rates: tuple[int, ...] = row.rates,
                **kw: Any) -> DeepLab:
        unknown = sorted(set(kw) - {p.name for p in options})
        if unknown:
            raise TypeError(f"{row.name}() got unexpected keyword(s) {', '.join(unknown)}; it takes num_classes, "
                            f"pretrained, rates, {', '.join(p.name for p in options)}")
        return family(row, num_classes=num_classes, pretrained=pretrained, rates=rates, **kw)

    K = inspect.Parameter.KEYWORD_ONLY
    builder.__signature__ = inspect.Signature(
        [inspect.Parameter("num_classes", K, default=NUM_CLASSES), inspect.Parameter("pretrained", K, default=None),
         inspect.Parameter("rates", K, default=row.rates)] + options, return_annotation="DeepLab")
    builder.__name__ = builder.__qualname__ = row.name
    source = row.source or "Deviation from paper: a small CPU variant (see the module docstring)."
    builder.__doc__ = f"{row.doc}\n\n    {source}"
    return builder


_BUILDERS: dict[str, Callable[..., DeepLab]] = {row.name: _make_builder(row) for row in TABLE}  # build(name) reads it
