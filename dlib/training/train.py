"""Training (DeepLab v2, Sec. 4.1): SGD with momentum, the poly learning rate, resumable checkpoints.

The recipe, from the papers and their released Caffe solvers:

* SGD, momentum 0.9, weight decay 5e-4, batch 10 (``train.batch_size``, the *global* batch:
  split over ``train.iter_size`` accumulation steps and over processes, it stays 10).
* "poly" learning rate (DeepLab v2, Sec. 4.1): lr(it) = base_lr * (1 - it / max_iter) ** 0.9; or,
  with ``train.lr_policy="step"``, DeepLab v1's step schedule (DeepLab v1, Sec. 4.1 and its released
  DeepLab-LargeFOV solver: base 1e-3, x0.1 every 2000 iterations, 6000 iterations, batch 20):
  lr(it) = base_lr * gamma ** floor(it / step_size) (dlib.training.schedule).
  Base lr by the model's family, decided by :func:`dlib.training.schedule.base_lr_for` wherever a model is trained
  (command
  line, notebooks, ablation): ``train.base_lr`` for ResNet models (2.5e-4 for ResNet-101),
  ``train.base_lr_vgg`` for VGG-16 models (1e-3), from the released solvers; the ``cpu``/``smoke``
  profiles set both to the small models' rate (a deviation).
* Caffe ``lr_mult``: backbone weights 1x, backbone biases 2x (no weight decay), classifier weights
  10x, classifier biases 20x (no weight decay); ResNet batch normalisation frozen.
* Loss: per-pixel softmax cross-entropy against the label subsampled to the stride-8 score map by
  nearest neighbour (DeepLab v1, Sec. 3.1), void (255) ignored. With multi-scale inputs (MSC) the
  loss is summed over every scale's output and the max-fused output (DeepLab v2, Sec. 3.2).
  Each output's loss is the mean over the valid label pixels of the whole global batch, so the
  gradient is the same however the batch is split over accumulation steps or processes.
  Deviation from paper: Caffe normalises each micro-batch by its own valid-pixel count.
  ``train.msc_loss="mean"`` averages the MSC losses instead of summing them (not the paper's; kept for
  comparison).

Robustness: a checkpoint every ``train.checkpoint_every`` iterations is written atomically to
``<out_dir>/checkpoints/`` (dlib.core.checkpoint); calling :func:`train` again with the same ``out_dir`` resumes from
the
latest one (model, optimizer, iteration, RNG states; the learning rate and the data stream are
functions of the iteration), and ends with the same weights as an uninterrupted run. The sample
stream is a pure function of (seed, position) (dlib.data.sampling), so augmentation is identical whatever the number
of workers or processes. Under ``torchrun --nproc_per_node=N`` the same entry point runs
DistributedDataParallel (nccl on GPU, gloo on CPU). channels_last on both devices; on CUDA bf16 autocast.

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlib import data as dlib_data
from dlib.core import checkpoint as ckpt
from dlib.core.config import Config, available_cpus, pick_device
from dlib.core.io import atomic_write_text
from dlib.data.sampling import AugmentedView, MicroBatches, SampleStream
from dlib.data.transforms import TrainTransform
from dlib.data.voc import preflight
from dlib.nets.network import build, precision, to_device, unwrap, wrap_msc
from dlib.training import distributed, limits, lock
from dlib.training.loss import as_outputs, segmentation_loss, valid_pixel_counts
from dlib.training.schedule import base_lr_for, learning_rate, optimizer_groups, set_lr

LOG_NAME = "train_log.csv"
LOG_FIELDS = ("iteration", "loss", "lr", "images_per_s", "elapsed_s")


# --------------------------------------------------------------------------------------------
# The log
# --------------------------------------------------------------------------------------------

def read_log(out_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``<out_dir>/train_log.csv`` (iteration, loss, lr, images_per_s, elapsed_s)."""
    path = Path(out_dir) / LOG_NAME
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return [{k: (int(v) if k == "iteration" else float(v)) for k, v in row.items()} for row in rows]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} holds a row that is not numbers ({err}); delete the file or that row (the "
                         "checkpoints are the training's state; the log is only its record)") from None


# --------------------------------------------------------------------------------------------
# Training: train() -> _train() -> train_one_span() -> train_step()
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


def _check_settings(cfg: Config, world_size: int) -> None:
    """Settings that would fail later fail here, before any work."""
    t = cfg.train
    learning_rate(cfg, 0)  # a bad lr_policy
    limits.check_crop(cfg)
    if t.msc_loss not in ("sum", "mean"):
        raise ValueError(f"train.msc_loss must be 'sum' (the paper) or 'mean', got {t.msc_loss!r}")
    if t.batch_size % (t.iter_size * world_size):
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by train.iter_size={t.iter_size} "
                         f"x {world_size} process(es)")


def train(cfg: Config, out_dir: str | Path, *, model: nn.Module | None = None, dataset: Any = None,
          resume: bool = True, stop_after: int | None = None, progress: bool | None = None,
          callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` (default :func:`dlib.nets.network.build`) on ``dataset`` (default the configured train set).

    ``out_dir`` receives ``checkpoints/`` and ``train_log.csv``; with ``resume`` (default) training
    continues from its latest checkpoint, after checking that the config matches. ``stop_after``
    stops after that many iterations of this call (as if killed right after a checkpoint or not);
    ``callback(iteration, loss)`` runs after every iteration. ``progress``: tqdm bar (default: when
    stderr is a terminal). Under torchrun, every process calls this with the same arguments.
    """

    start_time = time.time()
    device = torch.device(pick_device(cfg))
    info = distributed.init_from_env(device.type)
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        _check_settings(cfg, info.world_size)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        if model is None:
            model = build(cfg)
        limits.check_memory(cfg, model, device, info.world_size)  # before the data are built or a file written
        with lock.locked(out_dir, enabled=info.is_main):  # one training writes a run folder at a time
            if dataset is None:
                dataset = dlib_data.build_dataset(cfg, "train")
            preflight(dataset)  # a damaged file fails now, naming it, not hours in inside a loader worker
            session = _Session(cfg, Path(out_dir), model, device, info, start_time, callback)
            return _train(session, dataset, resume, stop_after, progress)
    finally:
        distributed.cleanup(info)


@dataclass
class _Session:
    """What one :func:`train` call works with; ``net`` and ``optimizer`` are set by :func:`_train`."""

    cfg: Config
    out_dir: Path
    model: nn.Module  # the bare network (checkpoints, the result)
    device: torch.device
    info: Any  # dlib.training.distributed's process information
    start_time: float
    callback: Callable[[int, float], None] | None = None
    net: nn.Module | None = None  # what is trained: the model inside MSC / DDP wrappers
    optimizer: torch.optim.Optimizer | None = None
    log: _Log | None = None


def _train(s: _Session, dataset: Any, resume: bool, stop_after: int | None, progress: bool | None) -> TrainResult:
    t, model, device = s.cfg.train, to_device(s.model, s.device, s.cfg.train.channels_last), s.device
    s.optimizer = torch.optim.SGD(optimizer_groups(model, s.cfg), lr=base_lr_for(s.cfg), momentum=t.momentum,
                                  weight_decay=t.weight_decay)
    start, checkpoint = _resume(s, resume)
    stop = t.iterations if stop_after is None else min(t.iterations, start + stop_after)
    s.net = _wrap(model, s.cfg, device, s.info)
    s.log = _Log(s.out_dir, [r for r in read_log(s.out_dir) if r["iteration"] <= start] if resume else [],
                 s.info.is_main)
    loader = _loader(dataset, s.cfg, device, s.info, start, stop)
    from tqdm import tqdm

    show = (sys.stderr.isatty() if progress is None else progress) and s.info.is_main
    bar = tqdm(total=t.iterations, initial=start, disable=not show, desc="train", unit="it", dynamic_ncols=True)
    s.net.train()
    run_t = time.time()
    try:
        checkpoint, images = train_one_span(s, iter(loader), start, stop, bar, checkpoint)
    finally:
        bar.close()
        s.log.close()
    elapsed = time.time() - run_t
    model.eval()
    return TrainResult(model=unwrap(model), out_dir=s.out_dir, iterations=stop, resumed_from=start,
                       log=s.log.rows, checkpoint=checkpoint, seconds=time.time() - s.start_time,
                       images_per_s=images / elapsed if images else float("nan"), complete=stop >= t.iterations)


def _resume(s: _Session, resume: bool) -> tuple[int, Path | None]:
    """(first iteration, its checkpoint): the run's latest checkpoint, or a fresh start that clears the folder."""
    found = ckpt.resume(s.out_dir, s.cfg, unwrap(s.model), s.optimizer) if resume else (0, None)
    if not resume and s.info.is_main:
        ckpt.remove_checkpoints(s.out_dir)
    distributed.barrier(s.info)
    return found


def _wrap(model: nn.Module, cfg: Config, device: torch.device, info: Any) -> nn.Module:
    """The network as trained: inside MSC (``train.msc``) and, under torchrun, DistributedDataParallel."""
    net = wrap_msc(model, cfg) if cfg.train.msc else model
    if info.distributed:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        net = nn.parallel.DistributedDataParallel(net, **ddp_kw)
    return net


def _loader(dataset: Any, cfg: Config, device: torch.device, info: Any, start: int,
            stop: int) -> torch.utils.data.DataLoader:
    """This process's micro-batches of iterations [start, stop) (dlib.data.sampling)."""
    t = cfg.train
    view = AugmentedView(dataset, TrainTransform.from_config(cfg), cfg.seed)
    sampler = MicroBatches(SampleStream(len(dataset), cfg.seed), batch_size=t.batch_size, iter_size=t.iter_size,
                           world=info.world_size, rank=info.rank, start=start, stop=stop)
    # Never more loader processes than cores this process may use (more only oversubscribe the CPU, and
    # PyTorch warns about "excessive worker creation"); the sample stream does not depend on the count.
    workers = min(cfg.data.loader_workers, available_cpus())
    return torch.utils.data.DataLoader(
        view, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False, generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        prefetch_factor=4 if workers > 0 else None)


class _Log:
    """``train_log.csv``: rewritten with the rows kept from before (a resumed run), then appended to.

    Only the main process writes; every process keeps ``rows``. :meth:`add` averages the losses of the
    iterations since the last row.
    """

    def __init__(self, out_dir: Path, rows: list[dict[str, float]], write: bool):
        self.rows, self.fh = rows, None
        self.loss, self.n, self.t = 0.0, 0, time.time()
        if write:
            out_dir.mkdir(parents=True, exist_ok=True)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(out_dir / LOG_NAME, buf.getvalue())
            self.fh = open(out_dir / LOG_NAME, "a", newline="", encoding="utf-8")

    def add(self, loss: float) -> None:
        self.loss += loss
        self.n += 1

    def row(self, iteration: int, lr: float, batch_size: int, start_time: float) -> dict[str, float]:
        """Close the window: a row with its mean loss and throughput, written to the file."""
        now = time.time()
        row = {"iteration": iteration, "loss": self.loss / self.n, "lr": lr,
               "images_per_s": self.n * batch_size / max(now - self.t, 1e-9), "elapsed_s": now - start_time}
        self.rows.append(row)
        if self.fh is not None:
            csv.DictWriter(self.fh, fieldnames=LOG_FIELDS, lineterminator="\n").writerow(row)
            self.fh.flush()
        self.loss, self.n, self.t = 0.0, 0, now
        return row

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def train_one_span(s: _Session, batches, start: int, stop: int, bar,
                   checkpoint: Path | None) -> tuple[Path | None, int]:
    """Iterations [start, stop): lr, step, log, checkpoint. Returns (last checkpoint, images seen)."""
    t, images = s.cfg.train, 0
    for it in range(start, stop):
        lr = set_lr(s.optimizer, s.cfg, it)
        s.optimizer.zero_grad(set_to_none=True)
        chunk = [next(batches) for _ in range(t.iter_size)]
        loss_value = _guarded_step(s, chunk)
        s.optimizer.step()
        done = it + 1
        s.log.add(loss_value)
        images += t.batch_size
        if s.callback is not None:
            s.callback(done, loss_value)
        if done % t.log_every == 0 or done == stop:
            row = s.log.row(done, lr, t.batch_size, s.start_time)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{row['images_per_s']:.1f}")
        bar.update(1)
        if done % t.checkpoint_every == 0 or done == t.iterations:
            if s.info.is_main:
                checkpoint = ckpt.save_checkpoint(s.out_dir, done, unwrap(s.model), s.optimizer, s.cfg,
                                                  keep=t.keep_checkpoints)
            distributed.barrier(s.info)
    return checkpoint, images


def _guarded_step(s: _Session, chunk: list) -> float:
    """:func:`train_step`; out of memory gets the advice to accumulate gradients."""
    t = s.cfg.train
    try:
        return train_step(s.net, chunk, s.device, s.info, s.device.type == "cuda" and t.bf16, t.iter_size,
                          t.msc_loss)
    except torch.cuda.OutOfMemoryError as err:
        micro = t.batch_size // (t.iter_size * s.info.world_size)
        crop = s.cfg.data.crop_size
        raise RuntimeError(
            f"out of memory with {micro} images of {crop}x{crop} per step on {s.device}; use gradient "
            f"accumulation: --set train.iter_size={2 * t.iter_size} keeps the global batch of {t.batch_size} "
            f"with {micro // 2 or 1} images per step") from err


def _layout_of(net: nn.Module) -> torch.memory_format:
    """The memory layout of ``net``'s first 4-D weight (channels_last or contiguous), for its inputs."""
    weight = next((p for p in net.parameters() if p.ndim == 4), None)
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def train_step(net: nn.Module, chunk: list, device: torch.device, info, use_bf16: bool, iter_size: int,
               msc_loss: str = "sum") -> float:
    """Forward/backward every micro-batch of one iteration (dlib.training.loss); returns the global-batch loss."""
    # Every micro-batch has the same crop size, so one output layout serves them all: count the valid
    # label pixels of the whole global batch per output first (all processes, all micro-batches).
    labels = [y for _, y in chunk]
    counts: list[torch.Tensor] | None = None
    loss_sum = 0.0
    for k, (x, y) in enumerate(chunk):
        image_size = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.to(device, non_blocking=True).contiguous(memory_format=_layout_of(net))
        sync = k == len(chunk) - 1 or not info.distributed
        with contextlib.nullcontext() if sync else net.no_sync():
            with precision("bf16", device) if device.type == "cuda" and use_bf16 else contextlib.nullcontext():
                outputs = as_outputs(net(x), image_size)
            if counts is None:
                vec = valid_pixel_counts(labels, image_size, [(size, tuple(o.shape[-2:])) for o, size in outputs])
                distributed.all_reduce_sum(vec, info)
                counts = [c.clamp(min=1.0) for c in vec]
            loss = segmentation_loss(outputs, y, image_size, counts, msc_loss=msc_loss, device=device)
            # DDP averages gradients over processes; the loss is already normalised globally, so undo that.
            (loss * info.world_size).backward()
        loss_sum += float(loss.detach())
    total = torch.tensor(loss_sum, dtype=torch.float64)
    distributed.all_reduce_sum(total, info)
    value = float(total)
    if not math.isfinite(value):
        raise FloatingPointError(f"the training loss became {value}; lower train.base_lr")
    return value
