"""What a training can fit, checked before any work: the crop against the images, memory against the machine.

The memory estimate (``training_bytes``) counts what one optimiser step must keep: every convolution's output for
the images processed at once (``train.batch_size / train.iter_size`` per process, at ``data.crop_size``, and
again at each MSC scale), which autograd holds for the backward pass, in float32 (bf16 on CUDA with
``train.bf16``), plus four float32 copies of the parameters (weights, gradients, momentum, a spare for the update).
Normalisation and activation outputs, cuDNN workspaces and the allocator's slack are left out, so it stays below
what training takes (DeepLab-v2 ResNet-101 ASPP, batch 10, 321x321 on an H100: estimate 5.7 GiB in float32, 3.2
in bf16; measured peaks 8.7 and 4.1 GiB, README Performance): a setting it refuses cannot fit.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from dlib.core.config import Config
from dlib.core.config_values import ConfigError
from dlib.core.datasets import dataset_info

_PROBE = 33  # side of the probe input (px): 8k+1 as the crops; activations scale with the pixel count
_GIB = 2**30


def activations_per_pixel(model: nn.Module) -> float:
    """Floats output by the model's convolutions per input pixel, measured on one (1, 3, 33, 33) probe image."""
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        total += sum(t.numel() for t in (output if isinstance(output, (tuple, list)) else [output])
                     if isinstance(t, torch.Tensor))

    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    hooks = [m.register_forward_hook(count) for m in convs]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, _PROBE, _PROBE, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total / _PROBE**2


def training_bytes(cfg: Config, model: nn.Module, world_size: int = 1, *, cuda: bool = False) -> int:
    """At least the bytes one training step of ``cfg`` needs per process (see the module docstring)."""
    t = cfg.train
    images = max(1, t.batch_size // (t.iter_size * world_size))
    scales = 1.0 + (sum(s * s for s in cfg.model.msc_scales if s != 1) if t.msc else 0.0)
    elements = activations_per_pixel(model) * images * cfg.data.crop_size**2 * scales
    params = sum(p.numel() for p in model.parameters())
    activation_bytes = 2 if cuda and t.bf16 else 4  # bf16 autocast on CUDA (dlib.training.train), else float32
    return int(activation_bytes * elements + 4 * 4 * params)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the driver's free memory; CPU: MemAvailable), None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(cfg: Config, model: nn.Module, device: torch.device, world_size: int = 1) -> None:
    """Raise :class:`ConfigError` naming ``train.batch_size`` when the estimate exceeds the free memory."""
    free = available_bytes(device)
    if free is None:
        return
    need = training_bytes(cfg, model, world_size, cuda=device.type == "cuda")
    if need > free:
        t = cfg.train
        raise ConfigError(
            f"config key 'train.batch_size' ({t.batch_size} crops of {cfg.data.crop_size}x{cfg.data.crop_size}, "
            f"{cfg.model.name}{', MSC' if t.msc else ''}) needs at least {need / _GIB:.1f} GiB to train (estimate, "
            f"dlib.training.limits) but {device.type} has {free / _GIB:.1f} GiB free; lower train.batch_size, raise "
            "train.iter_size (the same batch in smaller pieces) or lower data.crop_size")


def check_crop(cfg: Config) -> None:
    """Raise :class:`ConfigError` when ``data.crop_size`` exceeds the largest generated image (proxy data).

    A crop larger than the image is padded with void; on the generated data sets, whose images all have one
    size, that is only wasted work (a 500-px crop of 64-px images trains about 15 times slower for nothing).
    """
    if not dataset_info(cfg.data.dataset).generated:
        return  # VOC's images vary in size; DeepLab pads the smaller ones to the crop, as Caffe did
    largest = int(cfg.data.proxy_image_size * (cfg.data.scale_range[1] if cfg.data.scale_aug else 1.0))
    if cfg.data.crop_size > largest:
        raise ConfigError(
            f"config key 'data.crop_size' ({cfg.data.crop_size}) is larger than the {cfg.data.dataset} images "
            f"({cfg.data.proxy_image_size} px, at most {largest} px after data.scale_range); set "
            f"data.crop_size<={largest} or a larger data.proxy_image_size")
