"""The released DeepLab Caffe models loaded into our networks: DeepLab's layer names mapped onto our parameters.

DeepLab's authors released their trained networks as Caffe ``.caffemodel`` files: DeepLab-LargeFOV (v1,
VGG-16), DeepLab v2 VGG-16 ASPP and DeepLab v2 ResNet-101 ASPP, each with the COCO- or ImageNet-pretrained
initial model (``init.caffemodel``) and the final VOC models (``train_iter_20000.caffemodel`` trained on
train_aug, ``train2_iter_20000.caffemodel`` fine-tuned on trainval_aug). This module reads them and loads
them into our networks (dlib.nets.models), so the paper's numbers can be reproduced in minutes
(README, "Replicate in minutes") and the Table 4 "+COCO" rows can start from the authors' COCO model.

**File format**: dlib.nets.caffe_proto reads the protobuf bytes with numpy, without Caffe or protobuf.

**Layers -> our parameters** (:func:`caffe_names`; DeepLab's prototxts, /work/shared/reference):

* VGG-16: ``conv1_1`` ... ``conv5_3`` -> ``backbone.features.<i>``; LargeFOV ``fc6``, ``fc7``,
  ``fc8_voc12`` -> ``head.branches.0.fc6/fc7/fc8``; ASPP ``fc6_k``, ``fc7_k``, ``fc8_voc12_k`` (k = 1..4)
  -> branch k-1.
* ResNet-101: ``conv1`` + ``bn_conv1``/``scale_conv1`` -> ``backbone.conv1``/``bn1``; ``res{s}{b}_branch2a/2b/2c``
  with ``bn{s}{b}_branch2*``/``scale{s}{b}_branch2*`` -> ``backbone.layer{s-1}.<j>.conv1..3``/``bn1..3``,
  ``res{s}a_branch1`` -> ``downsample``; blocks are named a, b, c (res2, res5), a, b1..b3 (res3) and
  a, b1..b22 (res4). ASPP ``fc1_voc12_c0..c3`` -> ``head.branches.0..3.conv``.
* Caffe batch normalisation is two layers: ``BatchNorm`` holds (mean, variance, scale factor) with the
  statistics stored multiplied by the factor (divide; a zero factor means zero statistics, as Caffe does),
  ``eps`` 1e-5 (Caffe's default; the DeepLab prototxts set no other); ``Scale`` holds (gamma, beta). Together
  they are one ``nn.BatchNorm2d`` (weight = gamma, bias = beta). Caffe and PyTorch store convolution weights
  alike, (out, in, kh, kw).
* The MSC test net holds three copies of the network whose weights are shared (``_res075``, ``_res05`` in
  the layer names); the copies are reported as ``shared`` and not loaded twice.

**Classifiers of the initial models.** Caffe copies weights by layer name, and the VOC prototxt's
classifiers are new layers (``fc8_voc12``, ``fc1_voc12_c*``), so DeepLab's VOC training starts them at random
whatever classifier the COCO- or ImageNet-pretrained ``init.caffemodel`` holds. ``head="optional"`` does the
same: a classifier absent from the file (or present under its VOC name with another number of classes)
keeps its initialisation; the report lists it as missing (and skipped), the file's own classifier as unused.

**Architecture and input.** The weights match our networks one to one only with ``model.caffe_layout``
(dlib.nets.backbones: ResNet-101's stride in the 1x1 convolution, the first block of res4/res5 dilated; the
LargeFOV ``pool5a``; every network's pooling with Caffe's size rule, and MSC with Caffe's corner-aligned
Interp, dlib.nets.msc) and ``data.input_convention="caffe"`` (dlib.data.transforms: BGR, 0-255, minus the mean
104.008, 116.669, 122.675). :func:`check_settings` says when they are not set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlib.nets.aspp import ClassifierBranch, FCBranch
from dlib.nets.backbones import ResNet101Dense, VGG16Dense
from dlib.nets.caffe_proto import CaffeLayer, CaffeModelError, read_caffemodel

CAFFE_SUFFIX = ".caffemodel"
BN_EPS = 1e-5  # Caffe's BatchNormParameter default; the DeepLab prototxts set no eps
# The MSC net's weight-sharing copies (DeepLab v2 ResNet prototxt): "conv1_res075", "fc1_voc12_res05_c3".
MSC_COPY = re.compile(r"_res0(75|5)(_|$)")
EXPERIMENT = "voc12"  # DeepLab's ${EXP} in the classifier names (fc8_voc12, fc1_voc12_c0)

# --------------------------------------------------------------------------------------------
# DeepLab's layer names for our parameters
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlobRef:
    """Where one of our tensors lives in a caffemodel: ``layers`` (the first present is used), blob ``index``.

    ``kind``: "copy", or "bn_stat" (BatchNorm mean/variance: divided by the layer's scale-factor blob 2).
    """

    layers: tuple[str, ...]
    index: int
    kind: str = "copy"
    head: bool = False  # a classifier layer (may be absent or of another shape in an initial model)

    @property
    def name(self) -> str:
        return f"{self.layers[0]}/{self.index}"


def _conv(prefix: str, layer: str, bias: bool, head: bool = False,
          alternatives: tuple[str, ...] = ()) -> dict[str, BlobRef]:
    names = (layer,) + alternatives
    out = {f"{prefix}weight": BlobRef(names, 0, head=head)}
    if bias:
        out[f"{prefix}bias"] = BlobRef(names, 1, head=head)
    return out


def _bn(prefix: str, bn: str, scale: str) -> dict[str, BlobRef]:
    """Caffe BatchNorm (mean, var, factor) + Scale (gamma, beta) -> one nn.BatchNorm2d."""
    return {f"{prefix}running_mean": BlobRef((bn,), 0, "bn_stat"), f"{prefix}running_var": BlobRef((bn,), 1, "bn_stat"),
            f"{prefix}weight": BlobRef((scale,), 0), f"{prefix}bias": BlobRef((scale,), 1)}


def resnet_block_name(stage: int, block: int) -> str:
    """DeepLab/MSRA ResNet-101 block names: res2a..c, res3a, b1..b3, res4a, b1..b22, res5a..c (``stage`` 2..5)."""
    if stage in (2, 5):
        return f"{stage}{'abc'[block]}"
    return f"{stage}a" if block == 0 else f"{stage}b{block}"


def bottleneck_names(name: str, prefix: str = "") -> dict[str, BlobRef]:
    """One bottleneck block (``name`` like "3a" or "4b7"): torchvision keys under ``prefix`` -> Caffe blobs,
    in the prototxt's order (the shortcut branch1 first, then branch2a, 2b, 2c)."""
    out = _conv(f"{prefix}downsample.0.", f"res{name}_branch1", bias=False)
    out.update(_bn(f"{prefix}downsample.1.", f"bn{name}_branch1", f"scale{name}_branch1"))
    for i, branch in enumerate(("2a", "2b", "2c"), start=1):
        out.update(_conv(f"{prefix}conv{i}.", f"res{name}_branch{branch}", bias=False))
        out.update(_bn(f"{prefix}bn{i}.", f"bn{name}_branch{branch}", f"scale{name}_branch{branch}"))
    return out


def resnet101_names(backbone: nn.Module, prefix: str = "") -> dict[str, BlobRef]:
    """Every tensor of a :class:`dlib.nets.backbones.ResNet101Dense` -> its DeepLab ResNet-101 blob."""
    out = _conv(f"{prefix}conv1.", "conv1", bias=False)
    out.update(_bn(f"{prefix}bn1.", "bn_conv1", "scale_conv1"))
    for stage in (2, 3, 4, 5):
        layer = getattr(backbone, f"layer{stage - 1}")
        for j, block in enumerate(layer):
            names = bottleneck_names(resnet_block_name(stage, j), f"{prefix}layer{stage - 1}.{j}.")
            if block.downsample is None:
                names = {k: v for k, v in names.items() if ".downsample." not in k}
            out.update(names)
    return out


def vgg16_names(backbone: nn.Module, prefix: str = "") -> dict[str, BlobRef]:
    """conv1_1 ... conv5_3 -> ``features.<i>`` of a :class:`dlib.nets.backbones.VGG16Dense` (no batch norm)."""
    out: dict[str, BlobRef] = {}
    for index, name in backbone.layer_names.items():
        if name.startswith("conv"):
            out.update(_conv(f"{prefix}features.{index}.", name, bias=True))
    return out


def head_names(head: nn.Module, prefix: str = "head.", exp: str = EXPERIMENT) -> dict[str, BlobRef]:
    """The DeepLab head's layer names: VGG fc6/fc7/fc8 (one branch) or fc6_k/fc7_k/fc8_k (ASPP, k = 1..4);
    ResNet fc1_<exp>_c0..c3 (ASPP). One alternative covers an ImageNet init's single fc6/fc7 for every ASPP
    branch; classifiers have none: as in Caffe (weights copied by layer name), an initial model's classifier
    under another name is not loaded and is reported as unused."""

    branches = list(head.branches)
    many = len(branches) > 1
    out: dict[str, BlobRef] = {}
    for i, branch in enumerate(branches):
        p = f"{prefix}branches.{i}."
        if isinstance(branch, FCBranch):
            k = f"_{i + 1}" if many else ""
            out.update(_conv(p + "fc6.", f"fc6{k}", True, alternatives=("fc6",) if many else ()))
            out.update(_conv(p + "fc7.", f"fc7{k}", True, alternatives=("fc7",) if many else ()))
            out.update(_conv(p + "fc8.", f"fc8_{exp}{k}", True, head=True))
        elif isinstance(branch, ClassifierBranch):
            # The released ResNet-101 model is ASPP (c0..c3); a single-branch head (LargeFOV, baseline) was
            # not released: named fc1_<exp> by analogy with the fusion layer of the ASPP net.
            name = f"fc1_{exp}_c{i}" if many else f"fc1_{exp}"
            out.update(_conv(p + "conv.", name, True, head=True))
        else:
            raise CaffeModelError(f"no DeepLab Caffe names for a head branch of type {type(branch).__name__}")
    return out


def caffe_names(model: nn.Module, exp: str = EXPERIMENT) -> dict[str, BlobRef]:
    """Every parameter and BN statistic of a paper DeepLab model (dlib.nets.models) -> its Caffe blob, with the
    layers in the released prototxt's order (:func:`layer_order`).

    BN's ``num_batches_tracked`` has no Caffe counterpart and is left out. Raises for the small CPU models
    (no Caffe release exists for them).
    """

    backbone = model.backbone
    if isinstance(backbone, ResNet101Dense):
        out = resnet101_names(backbone, "backbone.")
    elif isinstance(backbone, VGG16Dense) and backbone.out_channels == 512 and not any(
            isinstance(m, nn.BatchNorm2d) for m in backbone.modules()):
        out = vgg16_names(backbone, "backbone.")
    else:
        raise CaffeModelError(f"{getattr(model, 'name', type(model).__name__)} has no released Caffe model: only "
                              "the paper's VGG-16 and ResNet-101 networks (deeplab_v1_*, deeplab_v2_*) do")
    out.update(head_names(model.head, "head.", exp))
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

@dataclass
class CaffeLoadReport:
    """What a caffemodel load did, by Caffe blob name ("layer/index") and our tensor names."""

    source: str
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (Caffe blob, our key), loaded
    missing: list[str] = field(default_factory=list)  # our keys with no blob in the file: kept their init
    unexpected: list[str] = field(default_factory=list)  # Caffe blobs nothing of ours used
    shared: list[str] = field(default_factory=list)  # MSC weight-sharing copies (_res075, _res05), not reloaded
    skipped: list[str] = field(default_factory=list)  # classifier blobs of another shape (initial models)

    def summary(self) -> str:
        def short(items: list[str], n: int = 5) -> str:
            more = f", ... ({len(items) - n} more)" if len(items) > n else ""
            return f" ({', '.join(items[:n])}{more})" if items else ""

        return (f"{self.source}: {len(self.mapped)} blobs loaded; {len(self.missing)} model tensors missing"
                f"{short(self.missing)}; {len(self.unexpected)} file blobs unused{short(self.unexpected)}; "
                f"{len(self.skipped)} classifier blobs of another shape skipped{short(self.skipped)}; "
                f"{len(self.shared)} MSC copies shared")

    def __str__(self) -> str:
        return self.summary()


def _is_copy(name: str) -> bool:
    return MSC_COPY.search(name) is not None


def _layers_by_name(layers: Iterable[CaffeLayer], report: CaffeLoadReport, source: str) -> dict[str, CaffeLayer]:
    """The layers that hold weights, by name; the MSC net's weight-sharing copies go to ``report.shared``."""
    by_name: dict[str, CaffeLayer] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        if _is_copy(layer.name):
            report.shared += [f"{layer.name}/{i}" for i in range(len(layer.blobs))]
            continue
        if layer.name in by_name:
            raise CaffeModelError(f"{source}: two layers named {layer.name!r} hold weights; cannot tell which to load")
        by_name[layer.name] = layer
    return by_name


def layer_order(names: Mapping[str, BlobRef]) -> list[tuple[str, ...]]:
    """The weight layers a mapping reads (each with its alternative names), in the mapping's order."""
    return list(dict.fromkeys(ref.layers for ref in names.values()))


def _cut_short(names: Mapping[str, BlobRef], by_name: Mapping[str, CaffeLayer], source: str) -> str | None:
    """The error for a file cut at a layer boundary, or None: its weight layers are the first k of the network's
    (prototxt order) and the last of them is the file's last weight layer (an initial model for another task
    also lacks the classifiers, but holds its own after the backbone)."""
    order = layer_order(names)
    present = [next((n for n in group if n in by_name), None) for group in order]
    k = present.index(None) if None in present else len(present)
    if k in (0, len(order)) or any(present[k:]) or present[k - 1] != list(by_name)[-1]:
        return None
    return (f"{source} ends after layer {present[k - 1]} ({k} of the network's {len(order)} weight layers; "
            f"{order[k][0]} and every later one are missing): the file is cut short, download it again")


def _bn_statistic(layer: CaffeLayer, blob: np.ndarray, source: str) -> np.ndarray:
    """A Caffe BatchNorm mean or variance as PyTorch keeps it: divided by the layer's scale-factor blob 2."""
    if len(layer.blobs) < 3:
        raise CaffeModelError(f"{source}: BatchNorm layer {layer.name!r} has {len(layer.blobs)} blobs, expected "
                              "3 (mean, variance, scale factor)")
    factor = float(layer.blobs[2].reshape(-1)[0])
    # Caffe BatchNormLayer: statistics are stored times the factor; a zero factor gives zero statistics.
    return blob * (0.0 if factor == 0 else 1.0 / factor)


def load_blobs(module: nn.Module, names: Mapping[str, BlobRef], layers: Iterable[CaffeLayer], *,
               source: str = "caffemodel", head: str = "require") -> CaffeLoadReport:
    """Copy the Caffe blobs named by ``names`` (our key -> :class:`BlobRef`) into ``module``'s state.

    ``head``: "require" (a final model: every tensor must be in the file, shapes equal) or "optional" (an
    initial model: classifier tensors that are absent or of another shape keep their initialisation and are
    reported). Every other tensor must be present with its shape: otherwise an error naming the Caffe layer
    (and both shapes).
    """
    if head not in ("require", "optional"):
        raise ValueError(f"head must be 'require' (final model) or 'optional' (initial model), got {head!r}")
    report = CaffeLoadReport(source=source)
    by_name = _layers_by_name(layers, report, source)
    state = module.state_dict()
    unknown = sorted(k for k in names if k not in state)
    if unknown:
        raise KeyError(f"mapping names tensors the module does not have: {unknown[:5]}")
    used: set[str] = set()
    new: dict[str, torch.Tensor] = {}
    for key, ref in names.items():
        layer = next((by_name[n] for n in ref.layers if n in by_name), None)
        if layer is None or ref.index >= len(layer.blobs):
            if head == "optional" and ref.head:
                report.missing.append(key)
                continue
            raise CaffeModelError(_cut_short(names, by_name, source) or
                                  f"{source}: no blob {ref.name} (for {key}); tried layers {', '.join(ref.layers)}. "
                                  "Is the file for this network (model.name, and model.caffe_layout for ResNet-101)?")
        blob = layer.blobs[ref.index]
        used.add(f"{layer.name}/{ref.index}")
        if ref.kind == "bn_stat":
            blob = _bn_statistic(layer, blob, source)
            used.add(f"{layer.name}/2")
        target = state[key]
        blob = _as_shape_of(blob, target)
        if tuple(blob.shape) != tuple(target.shape):
            if ref.head and head == "optional":
                report.skipped.append(f"{layer.name}/{ref.index} {tuple(blob.shape)}")
                report.missing.append(key)
                continue
            raise CaffeModelError(f"{source}: Caffe layer {layer.name!r} blob {ref.index} has shape "
                                  f"{tuple(blob.shape)} but {key} is {tuple(target.shape)}; is the file for this "
                                  "network (model.name, model.num_classes, model.caffe_layout)?")
        new[key] = torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32)).to(target.dtype)
        report.mapped.append((f"{layer.name}/{ref.index}", key))
    module.load_state_dict(new, strict=False)
    report.unexpected = sorted(f"{layer.name}/{i}" for layer in by_name.values() for i in range(len(layer.blobs))
                               if f"{layer.name}/{i}" not in used)
    return report


def _as_shape_of(blob: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """``blob`` in ``target``'s shape when only Caffe's legacy 4-d layout differs (a bias (1, 1, 1, N), BN
    statistics); otherwise unchanged (the caller reports the mismatch)."""
    same_values = blob.size == target.numel() and _squeezed(blob.shape) == _squeezed(tuple(target.shape))
    return blob.reshape(tuple(target.shape)) if same_values and blob.ndim != target.dim() else blob


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def load_caffemodel(model: nn.Module, source: str | os.PathLike | Iterable[CaffeLayer], *, head: str = "require",
                    exp: str = EXPERIMENT) -> CaffeLoadReport:
    """Load a released DeepLab caffemodel (a path, or layers from :func:`read_caffemodel`) into a paper model.

    ``head="require"`` for the final VOC models, ``"optional"`` for the initial (ImageNet / COCO) models. The
    report is returned and kept as ``model.load_report``.
    """
    if isinstance(source, (str, os.PathLike)):
        name, layers = str(source), read_caffemodel(source)
    else:
        name, layers = "caffemodel", list(source)
    report = load_blobs(model, caffe_names(model, exp), layers, source=name, head=head)
    model.load_report = report
    return report


def is_caffemodel(path: Any) -> bool:
    """Whether a config value names a Caffe model file (by its ``.caffemodel`` suffix)."""
    return isinstance(path, (str, os.PathLike)) and str(path).endswith(CAFFE_SUFFIX)


# --------------------------------------------------------------------------------------------
# The settings a Caffe model needs
# --------------------------------------------------------------------------------------------

# Builder keywords that give each paper network the released prototxt's layout (dlib.nets.models builders).
# Every one pools as Caffe does (output sizes rounded up, dlib.nets.backbones).
_LAYOUT = {
    # pool5a: 3x3 stride-1 average pooling (DeepLab-LargeFOV prototxt)
    "deeplab_v1_largefov": {"avg_pool5": True, "caffe_layout": True},
    "deeplab_v2_vgg16_aspp_s": {"caffe_layout": True},  # the v2 VGG-16 prototxt has no pool5a
    "deeplab_v2_vgg16_aspp_l": {"caffe_layout": True},
    "deeplab_v2_resnet101_baseline": {"caffe_layout": True},
    "deeplab_v2_resnet101_largefov": {"caffe_layout": True},
    "deeplab_v2_resnet101_aspp": {"caffe_layout": True},
}


def layout_kwargs(model_name: str) -> dict[str, Any]:
    """Builder keywords for ``model.caffe_layout=true``: the released prototxt's layout of ``model_name``."""
    if model_name not in _LAYOUT:
        raise ValueError(f"model.caffe_layout=true is defined for {', '.join(_LAYOUT)} (the networks with a released "
                         f"DeepLab prototxt), not {model_name!r}; set model.caffe_layout=false")
    return dict(_LAYOUT[model_name])


def check_settings(cfg: Any, path: str) -> None:
    """Raise when ``cfg`` would load the caffemodel ``path`` into a network or input it does not match."""
    wrong = []
    if not cfg.model.caffe_layout:
        wrong.append("model.caffe_layout=true")
    if cfg.data.input_convention != "caffe":
        wrong.append("data.input_convention=caffe")
    if wrong:
        raise ValueError(f"{path} is a Caffe model: its weights expect the Caffe network layout and input (BGR, 0-255, "
                         f"mean subtracted); set {' and '.join(wrong)} (--set ...)")

