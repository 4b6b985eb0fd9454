"""Training (DeepLab v2, Sec. 4.1): SGD with momentum, the poly learning rate, resumable checkpoints.

The recipe, from the papers and their released Caffe solvers:

* SGD, momentum 0.9, weight decay 5e-4, batch 10 (``train.batch_size``, the *global* batch:
  split over ``train.iter_size`` accumulation steps and over processes, it stays 10).
* "poly" learning rate (DeepLab v2, Sec. 4.1): lr(it) = base_lr * (1 - it / max_iter) ** 0.9; or,
  with ``train.lr_policy="step"``, DeepLab v1's step schedule (DeepLab v1, Sec. 4.1 and its released
  DeepLab-LargeFOV solver: base 1e-3, x0.1 every 2000 iterations, 6000 iterations, batch 20):
  lr(it) = base_lr * gamma ** floor(it / step_size) (:func:`learning_rate`).
  Base lr by the model's family, decided by :func:`base_lr_for` wherever a model is trained (command
  line, notebooks, ablation): ``train.base_lr`` for ResNet models (2.5e-4 for ResNet-101),
  ``train.base_lr_vgg`` for VGG-16 models (1e-3), from the released solvers; the ``cpu``/``smoke``
  profiles set both to the small models' rate (a deviation).
* Caffe ``lr_mult``: backbone weights 1x, backbone biases 2x (no weight decay), classifier weights
  10x, classifier biases 20x (no weight decay); ResNet batch normalisation frozen.
* Loss: per-pixel softmax cross-entropy against the label subsampled to the stride-8 score map by
  nearest neighbour (DeepLab v1, Sec. 3.1), void (255) ignored. With multi-scale inputs (MSC) the
  loss is summed over every scale's output and the max-fused output (DeepLab v2, Sec. 3.1).
  Each output's loss is the mean over the valid label pixels of the whole global batch, so the
  gradient is the same however the batch is split over accumulation steps or processes.
  Deviation from paper: Caffe normalises each micro-batch by its own valid-pixel count.
  ``train.msc_loss="mean"`` (the ``cpu``/``smoke`` profiles; a deviation) averages the MSC losses
  instead of summing them: summed, the gradient is ~4x larger, and at the small models' lr 1e-2
  training diverges.

Robustness: a checkpoint every ``train.checkpoint_every`` iterations is written atomically to
``<out_dir>/checkpoints/``; calling :func:`train` again with the same ``out_dir`` resumes from the
latest one (model, optimizer, iteration, RNG states; the learning rate and the data stream are
functions of the iteration), and ends with the same weights as an uninterrupted run. The sample
stream is a pure function of (seed, position), so augmentation is identical whatever the number
of workers or processes. Under ``torchrun --nproc_per_node=N`` the same entry point runs
DistributedDataParallel (nccl on GPU, gloo on CPU). On CUDA: bf16 autocast and channels_last.

    >>> result = train(cfg, "runs/aspp")        # doctest: +SKIP
    >>> result.model, result.log[-1]["loss"]    # doctest: +SKIP

The "+COCO" row of the ablation on the proxy: pretrain on the large proxy set, then fine-tune from it:

    >>> train(cfg, "runs/pre", dataset=data.build_dataset(cfg, "train", large=True))           # doctest: +SKIP
    >>> train(cfg.replace({"model.pretrained": "runs/pre"}), "runs/coco")                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .constants import IGNORE_INDEX
from . import distributed
from .config import NEUTRAL_ADDED_KEYS, Config, pick_device
from .results import atomic_write_bytes, atomic_write_text
from .transforms import TrainTransform

CHECKPOINT_DIR = "checkpoints"
LOG_NAME = "train_log.csv"
_CKPT = re.compile(r"^ckpt_(\d{7})\.pt$")
LOG_FIELDS = ("iteration", "loss", "lr", "images_per_s", "elapsed_s")

# Config keys that may change between an interrupted run and its resumption.
RESUMABLE_KEYS = ("train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.iter_size", "data.loader_workers",
                  "device", "eval.", "crf.", "model.pretrained")


# --------------------------------------------------------------------------------------------
# Learning rate
# --------------------------------------------------------------------------------------------

def available_cpus() -> int:
    """The number of cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float = 0.9) -> float:
    """DeepLab v2, Sec. 4.1: base_lr * (1 - iteration / max_iter) ** power."""
    if not 0 <= iteration <= max_iter:
        raise ValueError(f"iteration {iteration} outside [0, {max_iter}]")
    return base_lr * (1 - iteration / max_iter) ** power


def step_lr(base_lr: float, iteration: int, step_size: int, gamma: float = 0.1) -> float:
    """Caffe's "step" policy (DeepLab v1, Sec. 4.1): base_lr * gamma ** floor(iteration / step_size)."""
    if iteration < 0 or step_size < 1:
        raise ValueError(f"need iteration >= 0 and step_size >= 1, got {iteration} and {step_size}")
    return base_lr * gamma ** (iteration // step_size)


# Backbone families trained at train.base_lr_vgg (dlib.models.ModelInfo.backbone); every other family at train.base_lr.
VGG_FAMILIES = ("vgg16", "small_vgg")


def base_lr_for(cfg: Config, model_name: str | None = None) -> float:
    """The base learning rate of ``model_name`` (default ``cfg.model.name``), chosen by its family.

    ``train.base_lr_vgg`` for VGG-16 models (DeepLab v1/v2 released solvers: 1e-3), ``train.base_lr`` for
    the others (ResNet-101: 2.5e-4). The one place that decides it; training, the command line, the
    notebooks and the ablation all ask here.
    """
    from .models import info

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
    return poly_lr(base, iteration, t.iterations, t.poly_power)


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """SGD parameter groups with Caffe's lr multipliers and weight-decay multipliers.

    backbone weights 1x (decay), backbone biases ``backbone_bias_lr_mult`` (2x, no decay),
    head (classifier) weights ``head_lr_mult`` (10x, decay), head biases ``head_bias_lr_mult``
    (20x, no decay). Parameters that do not require gradients (frozen BN) are left out.
    """
    t = cfg.train
    base = base_lr_for(cfg)
    split = _split_params(model)
    spec = {"backbone_weight": (1.0, t.weight_decay), "backbone_bias": (t.backbone_bias_lr_mult, 0.0),
            "head_weight": (t.head_lr_mult, t.weight_decay), "head_bias": (t.head_bias_lr_mult, 0.0)}
    groups = []
    for name, (mult, decay) in spec.items():
        params = [p for p in split.get(name, []) if p.requires_grad]
        if params:
            groups.append({"params": params, "name": name, "lr_mult": mult, "lr": base * mult,
                           "weight_decay": decay})
    return groups


def _split_params(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """dlib.models.param_groups when it knows the model, else: modules named head/classifier/aspp are the head."""
    try:
        from . import models

        groups = models.param_groups(model)
        if groups:
            return {k: list(v) for k, v in groups.items()}
    except (ImportError, AttributeError, TypeError, ValueError, KeyError):
        pass
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


# --------------------------------------------------------------------------------------------
# The sample stream: a deterministic function of (seed, position)
# --------------------------------------------------------------------------------------------

class SampleStream:
    """Position p of the training stream -> (dataset index, p): epoch-wise permutations from the seed.

    Global iteration ``it`` uses positions ``it*B .. it*B+B-1`` (B = global batch); accumulation step
    k of process r takes the m = B / (iter_size * world) positions starting at it*B + (k*world + r)*m.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the training data set is empty")
        self.n, self.seed = n, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 104729, epoch]).permutation(self.n))
        return int(self._perm[1][offset])


class MicroBatches(torch.utils.data.Sampler):
    """Batch sampler: the micro-batches of one process for iterations [start, stop)."""

    def __init__(self, stream: SampleStream, *, batch_size: int, iter_size: int, world: int, rank: int,
                 start: int, stop: int):
        self.stream, self.batch_size, self.iter_size = stream, batch_size, iter_size
        self.world, self.rank, self.start, self.stop = world, rank, start, stop
        self.micro = batch_size // (iter_size * world)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.iter_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            for k in range(self.iter_size):
                first = it * self.batch_size + (k * self.world + self.rank) * self.micro
                yield [(self.stream.index(p), p) for p in range(first, first + self.micro)]


class AugmentedView(torch.utils.data.Dataset):
    """``view[(index, position)]`` = the transformed sample, augmented with a generator seeded by position."""

    def __init__(self, dataset: Any, transform: Callable, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, position = key
        image, label = self.dataset[index]
        rng = np.random.default_rng([self.seed, 7919, position])
        return self.transform(image, label, rng)


# --------------------------------------------------------------------------------------------
# Model, loss
# --------------------------------------------------------------------------------------------

def build_model(cfg: Config) -> nn.Module:
    """``dlib.models.build(cfg.model.name)``; a ``model.pretrained`` path to a dlib checkpoint or run
    folder (e.g. the proxy "COCO" pretraining run) is loaded here, other values go to the builder.

    Caffe (dlib.caffe): ``model.caffe_layout`` builds the released prototxt's layout; a ``model.pretrained``
    ending in .caffemodel is an initial model (ImageNet / COCO: its classifier may be absent or of other
    classes); ``model.caffemodel`` is a whole released model, loaded last. The load report is kept as
    ``model.load_report``.
    """
    from . import caffe, models

    pretrained = cfg.model.pretrained
    ckpt = caffe_init = None
    if caffe.is_caffemodel(pretrained):
        caffe_init, pretrained = pretrained, None
    elif isinstance(pretrained, str) and pretrained not in ("imagenet",) and Path(pretrained).exists():
        ckpt, pretrained = pretrained, None
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
    if ckpt is not None:
        load_weights(model, ckpt)
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
        missing, unexpected = _unwrap(model).load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor size mismatches
        first = str(err).strip().splitlines()
        raise ValueError(f"checkpoint {path} does not fit this model ({first[1].strip() if len(first) > 1 else first[0]}); "
                         "was it trained with another model.name or model.width?") from None
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {list(missing)[:5]}, "
                         f"unexpected {list(unexpected)[:5]}; was it trained with another model.name?")
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP and MSC wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif type(model).__name__ == "MSC" and isinstance(getattr(model, "model", None), nn.Module):
            model = model.model
        else:
            return model


def wrap_msc(model: nn.Module, cfg: Config) -> nn.Module:
    from .msc import MSC

    return MSC(model, scales=tuple(cfg.model.msc_scales))


def as_outputs(out: Any, image_size: tuple[int, int]) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """A model's training output as (scores (N, C, h, w), input size the network saw) pairs.

    A plain network gives one pair; :class:`dlib.msc.MSC` gives every scale and the max fusion
    (DeepLab v2, Sec. 3.1: a loss on each). Lists/tuples of tensors count as full-size outputs.
    """
    if isinstance(out, torch.Tensor):
        return [(out, image_size)]
    if hasattr(out, "per_scale") and hasattr(out, "fused"):  # dlib.msc.MSCOutput
        pairs = [(o, tuple(s)) for o, s in zip(out.per_scale, out.input_sizes)]
        return pairs + [(out.fused, tuple(out.image_size))]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return [(o, image_size) for o in out]
    raise TypeError(f"model returned {type(out).__name__}; expected a tensor, dlib.msc.MSCOutput, or a "
                    "list/tuple/dict of tensors")


def subsample_label(label: torch.Tensor, image_size: tuple[int, int], input_size: tuple[int, int],
                    logit_size: Sequence[int]) -> torch.Tensor:
    """(N, H, W) int64 -> (N, h, w): the label at each logit's centre, nearest pixel (DeepLab v1, Sec. 3.1).

    Logit i of a network that saw the image resized to ``input_size`` sits on image pixel
    8i (H-1)/(H_s-1) (corner-aligned resizing, as dlib.msc).
    """
    from .msc import labels_at_logits

    return labels_at_logits(label, tuple(image_size), tuple(input_size), tuple(logit_size))


# --------------------------------------------------------------------------------------------
# Checkpoints and the log
# --------------------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file."""


def checkpoints(out_dir: str | Path) -> list[Path]:
    """The run folder's ``checkpoints/ckpt_<iteration>.pt`` files, oldest first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(p for p in folder.glob("ckpt_*.pt") if _CKPT.match(p.name)) if folder.is_dir() else []


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint file of a run folder (intact or not; see :func:`load_latest_checkpoint`)."""
    found = checkpoints(out_dir)
    return found[-1] if found else None


def read_checkpoint(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU; an unreadable file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle errors, EOF: all mean "unreadable"
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                              "it is probably truncated (a write killed mid-way or a full disk)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of tensors")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by dlib.train")
    return state


def load_latest_checkpoint(out_dir: str | Path, required: Sequence[str] = ("model",)) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint of ``out_dir`` that can be read; None when there is none.

    A corrupt newer checkpoint is reported (a warning naming it) and skipped, so training resumes
    and evaluation runs from the newest intact one; if every checkpoint is corrupt the error names them.
    """
    bad: list[CheckpointError] = []
    for path in reversed(checkpoints(out_dir)):
        try:
            state = read_checkpoint(path, required)
        except CheckpointError as err:
            bad.append(err)
            continue
        if bad:
            warnings.warn(f"{'; '.join(str(b) for b in bad)}. Using the newest intact checkpoint, {path.name} "
                          f"(iteration {state.get('iteration', '?')}); delete the corrupt file(s) when convenient",
                          stacklevel=2)
        return path, state
    if bad:
        raise CheckpointError(f"no intact checkpoint in {Path(out_dir) / CHECKPOINT_DIR}: {'; '.join(str(b) for b in bad)}. "
                              "Start over with --fresh (python -m dlib train) or resume=False")
    return None


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, iteration: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: Config, keep: int = 2) -> Path:
    """Write ``checkpoints/ckpt_<iteration>.pt`` atomically and keep the newest ``keep``."""
    payload = {"iteration": iteration, "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
               "rng": _rng_state(), "config": cfg.to_dict(), "format": 1}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = atomic_write_bytes(Path(out_dir) / CHECKPOINT_DIR / f"ckpt_{iteration:07d}.pt", buf.getvalue())
    for old in sorted((Path(out_dir) / CHECKPOINT_DIR).glob("ckpt_*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def _config_diff(saved: dict[str, Any], cfg: Config) -> list[str]:
    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = list(v) if isinstance(v, tuple) else v
        return out

    # A key added since the run was saved counts as its neutral value there (dlib.config.NEUTRAL_ADDED_KEYS).
    a, b = {**NEUTRAL_ADDED_KEYS, **flat(saved)}, {**NEUTRAL_ADDED_KEYS, **flat(cfg.to_dict())}
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not any(k == r or (r.endswith(".") and k.startswith(r))
                                                                for r in RESUMABLE_KEYS)]


def read_log(out_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``<out_dir>/train_log.csv`` (iteration, loss, lr, images_per_s, elapsed_s)."""
    path = Path(out_dir) / LOG_NAME
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: (int(v) if k == "iteration" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    model: nn.Module  # the trained network (unwrapped, eval mode, on the training device)
    out_dir: Path
    iterations: int  # iterations done in total (== cfg.train.iterations when complete)
    resumed_from: int  # 0 for a fresh run
    log: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0  # wall time of this call
    images_per_s: float = float("nan")  # training throughput of this call (global images)
    complete: bool = False  # True when cfg.train.iterations have been done


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(cfg: Config, out_dir: str | Path, *, model: nn.Module | None = None, dataset: Any = None,
          resume: bool = True, stop_after: int | None = None, progress: bool | None = None,
          callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` (default :func:`build_model`) on ``dataset`` (default the configured train set).

    ``out_dir`` receives ``checkpoints/`` and ``train_log.csv``; with ``resume`` (default) training
    continues from its latest checkpoint, after checking that the config matches. ``stop_after``
    stops after that many iterations of this call (as if killed right after a checkpoint or not);
    ``callback(iteration, loss)`` runs after every iteration. ``progress``: tqdm bar (default: when
    stderr is a terminal). Under torchrun, every process calls this with the same arguments.
    """
    from . import data as dlib_data
    from .voc import preflight

    start_time = time.time()
    out_dir = Path(out_dir)
    t = cfg.train
    device = torch.device(pick_device(cfg))
    info = distributed.init_from_env(device.type)
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        learning_rate(cfg, 0)  # a bad lr_policy fails here, before any work
        if t.msc_loss not in ("sum", "mean"):
            raise ValueError(f"train.msc_loss must be 'sum' (the paper) or 'mean', got {t.msc_loss!r}")
        if t.batch_size % (t.iter_size * info.world_size):
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by train.iter_size={t.iter_size} "
                             f"x {info.world_size} process(es)")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        if model is None:
            model = build_model(cfg)
        if dataset is None:
            dataset = dlib_data.build_dataset(cfg, "train")
        preflight(dataset)  # a damaged file fails now, naming it, not hours in inside a loader worker
        return _train(cfg, out_dir, model, dataset, device, info, resume, stop_after, progress, callback, start_time)
    finally:
        distributed.cleanup(info)


def _train(cfg, out_dir, model, dataset, device, info, resume, stop_after, progress, callback, start_time):
    t = cfg.train
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=base_lr_for(cfg), momentum=t.momentum,
                                weight_decay=t.weight_decay)

    start = 0
    found = load_latest_checkpoint(out_dir, ("model", "optimizer", "rng", "iteration", "config")) if resume else None
    ckpt_path = found[0] if found is not None else None
    if not resume and info.is_main and (out_dir / CHECKPOINT_DIR).is_dir():
        for old in (out_dir / CHECKPOINT_DIR).glob("ckpt_*.pt"):
            old.unlink()
    distributed.barrier(info)
    if found is not None:
        state = found[1]
        diff = _config_diff(state["config"], cfg)
        if diff:
            raise ValueError(f"{out_dir} holds a run with a different config ({', '.join(diff[:6])}); "
                             "use another output folder, or resume=False to start over")
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
    resumed_from = start
    stop = t.iterations if stop_after is None else min(t.iterations, start + stop_after)

    net = wrap_msc(model, cfg) if t.msc else model
    if info.distributed:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net = nn.parallel.DistributedDataParallel(net, **ddp_kw)

    log_rows = [r for r in read_log(out_dir) if r["iteration"] <= start] if resume else []
    log_fh = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(log_rows)
        atomic_write_text(out_dir / LOG_NAME, buf.getvalue())
        log_fh = open(out_dir / LOG_NAME, "a", newline="", encoding="utf-8")

    stream = SampleStream(len(dataset), cfg.seed)
    view = AugmentedView(dataset, TrainTransform.from_config(cfg), cfg.seed)
    sampler = MicroBatches(stream, batch_size=t.batch_size, iter_size=t.iter_size, world=info.world_size,
                           rank=info.rank, start=start, stop=stop)
    # Never more loader processes than cores this process may use (more only oversubscribe the CPU, and
    # PyTorch warns about "excessive worker creation"); the sample stream does not depend on the count.
    workers = min(cfg.data.loader_workers, available_cpus())
    loader = torch.utils.data.DataLoader(
        view, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False, generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        prefetch_factor=4 if workers > 0 else None)

    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm import tqdm

    bar = tqdm(total=t.iterations, initial=start, disable=not (progress and info.is_main), desc="train",
               unit="it", dynamic_ncols=True)
    net.train()
    use_bf16 = device.type == "cuda" and t.bf16
    window_loss, window_n, window_t = 0.0, 0, time.time()
    run_t, run_imgs = time.time(), 0
    checkpoint = ckpt_path
    micro = t.batch_size // (t.iter_size * info.world_size)
    batches = iter(loader)
    try:
        for it in range(start, stop):
            lr = set_lr(optimizer, cfg, it)
            optimizer.zero_grad(set_to_none=True)
            chunk = [next(batches) for _ in range(t.iter_size)]
            try:
                loss_value = _step(net, chunk, device, info, use_bf16, t.iter_size, t.msc_loss)
            except torch.cuda.OutOfMemoryError as err:
                raise RuntimeError(
                    f"out of memory with {micro} images of {cfg.data.crop_size}x{cfg.data.crop_size} per step on "
                    f"{device}; use gradient accumulation: --set train.iter_size={2 * t.iter_size} keeps the global "
                    f"batch of {t.batch_size} with {micro // 2 or 1} images per step") from err
            optimizer.step()
            done = it + 1
            window_loss += loss_value
            window_n += 1
            run_imgs += t.batch_size
            if callback is not None:
                callback(done, loss_value)
            if done % t.log_every == 0 or done == stop:
                now = time.time()
                row = {"iteration": done, "loss": window_loss / window_n, "lr": lr,
                       "images_per_s": window_n * t.batch_size / max(now - window_t, 1e-9),
                       "elapsed_s": now - start_time}
                log_rows.append(row)
                if log_fh is not None:
                    csv.DictWriter(log_fh, fieldnames=LOG_FIELDS, lineterminator="\n").writerow(row)
                    log_fh.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{row['images_per_s']:.1f}")
                window_loss, window_n, window_t = 0.0, 0, now
            bar.update(1)
            if done % t.checkpoint_every == 0 or done == t.iterations:
                if info.is_main:
                    checkpoint = save_checkpoint(out_dir, done, model, optimizer, cfg, keep=t.keep_checkpoints)
                distributed.barrier(info)
    finally:
        bar.close()
        if log_fh is not None:
            log_fh.close()
    elapsed = time.time() - run_t
    model.eval()
    return TrainResult(model=_unwrap(model), out_dir=out_dir, iterations=stop, resumed_from=resumed_from,
                       log=log_rows, checkpoint=checkpoint, seconds=time.time() - start_time,
                       images_per_s=run_imgs / elapsed if run_imgs else float("nan"),
                       complete=stop >= t.iterations)


def _step(net: nn.Module, chunk: list, device: torch.device, info, use_bf16: bool, iter_size: int,
          msc_loss: str = "sum") -> float:
    """Forward/backward every micro-batch of one iteration; returns the global-batch loss."""
    # Every micro-batch has the same crop size, so one output layout serves them all: count the valid
    # label pixels of the whole global batch per output first (all processes, all micro-batches).
    labels = [y for _, y in chunk]
    counts: list[torch.Tensor] | None = None
    loss_sum = 0.0
    for k, (x, y) in enumerate(chunk):
        image_size = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        sync = k == len(chunk) - 1 or not info.distributed
        with contextlib.nullcontext() if sync else net.no_sync():
            with _autocast(device, use_bf16):
                outputs = as_outputs(net(x), image_size)
            layout = [(size, tuple(o.shape[-2:])) for o, size in outputs]
            if counts is None:
                vec = torch.tensor([[float((subsample_label(lab, image_size, size, grid) != IGNORE_INDEX).sum())
                                     for size, grid in layout] for lab in labels], dtype=torch.float64).sum(0)
                distributed.all_reduce_sum(vec, info)
                counts = [c.clamp(min=1.0) for c in vec]
            loss = torch.zeros((), device=device)
            # DeepLab v2 (prototxt): one loss per MSC output, summed ("sum"); "mean" divides by the number of
            # outputs so the gradient scale matches single-scale training at the same learning rate.
            weight = 1.0 / len(outputs) if msc_loss == "mean" else 1.0
            for (out, _), (size, grid), count in zip(outputs, layout, counts):
                target = subsample_label(y, image_size, size, grid).to(device, non_blocking=True)
                # Softmax cross-entropy summed over valid pixels / valid pixels of the whole global batch.
                ce = F.cross_entropy(out.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
                loss = loss + ce * (weight / float(count))
            # DDP averages gradients over processes; the loss is already normalised globally, so undo that.
            (loss * info.world_size).backward()
        loss_sum += float(loss.detach())
    total = torch.tensor(loss_sum, dtype=torch.float64)
    distributed.all_reduce_sum(total, info)
    value = float(total)
    if not math.isfinite(value):
        raise FloatingPointError(f"the training loss became {value}; lower train.base_lr")
    return value
