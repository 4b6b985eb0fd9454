"""One home for a network as the pipelines use it: built from a Config, its weights loaded from a run,
wrapped for multi-scale inputs (MSC), unwrapped, and placed on a device.

* :func:`build` -- ``cfg.model`` -> the network with its initial weights (the builder's "imagenet", a dlib
  checkpoint or run folder such as the proxy "COCO" pretraining, or a released Caffe model);
* :func:`load_weights` / :func:`load_run` -- a trained run's weights (its newest intact checkpoint) into it;
* :func:`wrap_msc` / :func:`unwrap` / :func:`as_evaluated` -- the MSC and DistributedDataParallel wrappers;
* :func:`to_device` -- the device and the memory layout that training uses;
* :func:`precision` -- the arithmetic a forward pass runs in: bf16 autocast, or float32 with TF32 off.

Training (dlib.training.train), evaluation (dlib.evaluation.evaluate), the ablation and the command line all come
here, so none of
them imports the training loop to get a network.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dlib.core.checkpoint import load_latest_checkpoint, read_checkpoint
from dlib.core.config import Config
from dlib.nets import caffe, models
from dlib.nets.msc import MSC


def build(cfg: Config) -> nn.Module:
    """``dlib.nets.models.build(cfg.model.name)``; a ``model.pretrained`` path to a dlib checkpoint or run
    folder (e.g. the proxy "COCO" pretraining run) is loaded here, other values go to the builder.

    Caffe (dlib.nets.caffe): ``model.caffe_layout`` builds the released prototxt's layout; a ``model.pretrained``
    ending in .caffemodel is an initial model (ImageNet / COCO: its classifier may be absent or of other
    classes); ``model.caffemodel`` is a whole released model, loaded last. The load report is kept as
    ``model.load_report``.
    """
    pretrained = cfg.model.pretrained
    checkpoint = caffe_init = None
    if caffe.is_caffemodel(pretrained):
        caffe_init, pretrained = pretrained, None
    elif isinstance(pretrained, str) and pretrained not in ("imagenet",) and Path(pretrained).exists():
        checkpoint, pretrained = pretrained, None
    extra = {"width": cfg.model.width} if cfg.model.name.startswith("small_") else {}
    if cfg.model.caffe_layout:
        extra.update(caffe.layout_kwargs(cfg.model.name))
    model = models.build(cfg.model.name, num_classes=cfg.model.num_classes, pretrained=pretrained, **extra)
    if caffe_init is not None:
        caffe.check_settings(cfg, caffe_init)
        caffe.load_caffemodel(model, caffe_init, head="optional")
    if cfg.model.caffemodel is not None:
        caffe.check_settings(cfg, cfg.model.caffemodel)
        caffe.load_caffemodel(model, cfg.model.caffemodel, head="require")
    if checkpoint is not None:
        load_weights(model, checkpoint)
    elif caffe_init is None and cfg.model.caffemodel is None and pretrained is None and any(
            getattr(m, "freeze_bn", False) for m in model.modules()):
        # Frozen BN keeps its initial statistics (mean 0, var 1): from a random init nothing is normalised,
        # activations grow through the 33 residual blocks and the loss overflows within a few iterations.
        warnings.warn(f"{cfg.model.name} has frozen batch normalisation (DeepLab v2, Sec. 4.1) but no pretrained "
                      "weights: expect the loss to diverge. Set model.pretrained='imagenet' (or a local weights "
                      "file), or use a small_* model to train from scratch.", stacklevel=2)
    return model


def load_weights(model: nn.Module, source: str | Path) -> nn.Module:
    """Load model weights from a checkpoint file or a run folder (its newest intact checkpoint)."""
    path = Path(source)
    if path.is_dir():
        found = load_latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (checkpoints/ckpt_*.pt) in run folder {path}")
        path, state = found
    else:
        state = read_checkpoint(path)
    state = state.get("model", state)
    try:
        missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor size mismatches
        first = str(err).strip().splitlines()
        raise ValueError(f"checkpoint {path} does not fit this model "
                         f"({first[1].strip() if len(first) > 1 else first[0]}); "
                         "was it trained with another model.name or model.width?") from None
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}; was it trained with another model.name?")
    return model


def load_run(cfg: Config, source: str | Path) -> nn.Module:
    """:func:`build` for ``cfg``, then the weights of ``source`` (a checkpoint file or a run folder)."""
    return load_weights(build(cfg), source)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel and :class:`dlib.nets.msc.MSC` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, MSC)):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model.model
    return model


def wrap_msc(model: nn.Module, cfg: Config) -> nn.Module:
    """MSC over ``model.msc_scales``; with ``model.caffe_layout`` resized as Caffe's Interp layers (dlib.nets.msc)."""
    return MSC(model, scales=tuple(cfg.model.msc_scales), interp="caffe" if cfg.model.caffe_layout else "pixel")


def as_evaluated(model: nn.Module, cfg: Config, msc: bool) -> nn.Module:
    """The bare network of ``model``, inside MSC over ``model.msc_scales`` when ``msc`` (evaluation's view)."""
    base = unwrap(model)
    return wrap_msc(base, cfg) if msc else base


def to_device(model: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module:
    """The model on ``device`` in the layout training uses (``train.channels_last``): NHWC took 11-25% less time
    per 1-thread CPU training step of the small networks than NCHW (baseline 39.8 -> 30.9 ms, +MSC 74.6 -> 66.2,
    VGG ASPP-L 88.9 -> 66.4; batch 4, 129 px) and is cuDNN's fast layout with bf16. :func:`train_step` gives
    the inputs the layout of the network's first weight."""
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model


PRECISION_NAMES = {"float32": "float32 (TF32 off)", "bf16": "bf16 autocast"}


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """Run the block in ``name``: "bf16" (autocast on ``device``'s type) or "float32" with TF32 off (on Ampere and
    later GPUs TF32 rounds convolution and matmul inputs to 10 mantissa bits; the flags are restored after)."""
    if name == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
