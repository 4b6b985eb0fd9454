"""Pretrained weights for the DeepLab models: ImageNet files, their conversion, and loading with a report.

DeepLab initialises from ImageNet (DeepLab v1, Sec. 3.2; v2, Sec. 4.1): the VGG-16 fully connected fc6/fc7
become convolutions, decimated in space and channels (:func:`vgg_imagenet_to_deeplab`); ResNet-101 is used
as it is (:func:`resnet_imagenet_to_deeplab`). :func:`load_pretrained` loads ImageNet or DeepLab weights and
says what it used (:class:`LoadReport`).

    >>> model = dlib.nets.models.build("deeplab_v1_largefov", pretrained=None)               # doctest: +SKIP
    >>> load_pretrained(model, imagenet_state_dict("vgg16")).summary()                   # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlib.core.checkpoint import CheckpointError, load_file
from dlib.core.errors import UserError
from dlib.nets.backbones import ResNet101Dense, VGG16Dense


class PretrainedWeightsError(RuntimeError, UserError):
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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local file: unwraps {"state_dict": ...} / {"model": ...}, strips "module."

    Read with dlib.core.checkpoint.load_file (``weights_only=True``): a dlib.training.train checkpoint (tensors, a
    config
    dict, RNG states) loads; a file that pickles other Python objects is refused with a clear error.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {str(path)!r} does not exist; give the path of a "
                                     "torchvision ImageNet .pth or a DeepLab checkpoint saved with this library")
    try:
        obj = load_file(path)
    except CheckpointError as err:  # unreadable, or Python objects refused: the message says which
        raise PretrainedWeightsError(str(err)) from None
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


def _convert(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
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


def load_pretrained(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                    source: str = "state dict") -> LoadReport:
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


def maybe_load(model: nn.Module, pretrained) -> nn.Module:
    """Load ``pretrained`` into ``model``: None (nothing), "imagenet" (torchvision's weights) or a local file."""
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
