"""The compute budget of the ablation: seconds per training step of each network, times iterations and seeds.

    minutes = sum over trainings of (seeds x iterations x seconds per step) / trainings side by side

:func:`step_seconds` times forward + backward + SGD step of one network on random inputs of the profile's batch
and crop (no data loading, which runs ahead of training), in this process with its current number of threads.
:func:`ablation_budget` does it for every distinct network of the ablation tables (dlib.experiments.ablation_tables) and
turns it into minutes. ``bench/bench_train.py --budget`` measures the same steps with 1 and 2 threads and with
two trainings side by side, on a quiet machine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dlib.core.config import Config
from dlib.experiments.ablation_tables import TABLES, model_name, training_config, trainings_of
from dlib.nets import models, network
from dlib.training import distributed, schedule, train


def step_seconds(cfg: Config, name: str, *, msc: bool = False, steps: int = 5, warmup: int = 2) -> float:
    """Median seconds of one SGD step of ``name`` (MSC or not) at ``train.batch_size`` x ``data.crop_size``."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    run_cfg = cfg.replace({"model.name": name, "train.msc": msc})
    model = network.to_device(models.build(name, num_classes=cfg.model.num_classes).train(), torch.device("cpu"),
                            cfg.train.channels_last)
    net = network.wrap_msc(model, run_cfg) if msc else model
    opt = torch.optim.SGD(schedule.optimizer_groups(model, run_cfg), lr=1e-4, momentum=0.9)
    batch, crop = cfg.train.batch_size, cfg.data.crop_size
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, cfg.model.num_classes, (batch, crop, crop))
    info, times = distributed.DistInfo(), []
    for i in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        train.train_step(net, [(x, y)], torch.device("cpu"), info, False, 1, cfg.train.msc_loss)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def budget_table(cfg: Config, seconds: Mapping[tuple[str, bool], float],
                 tables: tuple[str, ...] = tuple(TABLES)) -> Any:
    """One line per distinct training of ``tables``: its network, MSC, seeds, iterations, seconds per step (from
    ``seconds``, keyed by (network, MSC)) and minutes (seeds x iterations x seconds per step)."""
    import pandas as pd

    seeds = len(cfg.ablation.seeds)
    lines = []
    for t in trainings_of(tables):
        name = model_name(cfg, t)
        iters = training_config(cfg, t, 0).train.iterations
        sec = seconds[(name, t.msc)]
        lines.append({"training": t.key, "model": name, "MSC": t.msc, "seeds": seeds, "iterations": iters,
                      "s/step": sec, "minutes": seeds * iters * sec / 60})
    return pd.DataFrame(lines)


def networks_of(cfg: Config, tables: tuple[str, ...] = tuple(TABLES)) -> list[tuple[str, bool]]:
    """The distinct (network, MSC) pairs the trainings of ``tables`` run: each is timed once."""
    return list(dict.fromkeys((model_name(cfg, t), t.msc) for t in trainings_of(tables)))


def ablation_budget(cfg: Config, *, steps: int = 5, threads: int = 1, tables: tuple[str, ...] = tuple(TABLES)) -> Any:
    """:func:`budget_table` with each network's seconds per step measured here (:func:`step_seconds`) on
    ``threads`` threads (1: as each of ``ablation.workers`` trainings side by side runs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timed = {(name, msc): step_seconds(cfg, name, msc=msc, steps=steps) for name, msc in networks_of(cfg, tables)}
    finally:
        torch.set_num_threads(before)
    return budget_table(cfg, timed, tables)
