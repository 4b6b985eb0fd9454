"""Training throughput: the `cpu` profile's model on this machine's cores, its data loader, and on a GPU
(when one is present) DeepLab-v2 ResNet-101 ASPP at batch 10, 321x321, bf16 + channels_last.

    flock /tmp/heavy.lock .venv/bin/python bench/bench_train.py [--quick]
    flock /tmp/heavy.lock .venv/bin/python bench/bench_train.py --budget [--quick]

Prints one line per measurement and writes results/<profile>/bench_train/bench_train.json.
The data loader must deliver at least twice the training rate, or training waits for data.

``--budget`` is the compute budget of notebook 06: for every network the cpu ablation trains
(dlib.experiments.ablation_tables),
with and without MSC, ms per step and images/s with 1 and 2 threads alone, and with 1 thread while a second,
identical training runs beside it (two processes, as ``ablation.workers=2`` runs them); then trainings x
iterations x seconds per step = minutes for the whole ablation. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bn_init import calibrate_bn  # noqa: E402

from dlib import data
from dlib.core import config
from dlib.data import sampling
from dlib.data.transforms import TrainTransform
from dlib.experiments import budget, results
from dlib.nets import models, network
from dlib.training import distributed, schedule, train


def step_rate(cfg, model_name: str, *, batch: int, crop: int, steps: int, warmup: int, device: str,
              msc: bool = False) -> float:
    """Images per second of forward + backward + SGD step on random inputs (no data loading)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = models.build(model_name, num_classes=21).to(dev).train()
    if dev.type == "cuda":  # random init: measured BN statistics stand in for ImageNet's (see bn_init.py)
        calibrate_bn(model, [torch.randn(4, 3, crop, crop, device=dev) for _ in range(2)])
    cfg = cfg.replace({"model.name": model_name, "train.msc": msc})
    net = network.wrap_msc(model, cfg) if msc else model
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.SGD(schedule.optimizer_groups(model, cfg), lr=cfg.train.base_lr, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, 21, (batch, crop, crop))
    info = distributed.DistInfo()
    use_bf16 = dev.type == "cuda"
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        train.train_step(net, [(x, y)], dev, info, use_bf16, 1)
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def loader_rate(cfg, *, batches: int) -> float:
    """Images per second the training data pipeline delivers (proxy set, paper augmentation)."""
    ds = data.build_dataset(cfg, "train")
    view = sampling.AugmentedView(ds, TrainTransform.from_config(cfg), cfg.seed)
    sampler = sampling.MicroBatches(sampling.SampleStream(len(ds), cfg.seed), batch_size=cfg.train.batch_size,
                                    iter_size=1, world=1, rank=0, start=0, stop=batches + 2)
    workers = cfg.data.loader_workers
    loader = torch.utils.data.DataLoader(view, batch_sampler=sampler, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it), next(it)  # warm up (workers start)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return cfg.train.batch_size * batches / (time.perf_counter() - start)


def _one(argv) -> int:
    """``--one MODEL MSC THREADS STEPS``: one dlib.experiments.budget.step_seconds measurement, printed as a JSON
    line."""
    name, msc, threads, steps = argv[0], argv[1] == "1", int(argv[2]), int(argv[3])
    torch.set_num_threads(threads)
    cfg = config.resolve("cpu")
    sec = budget.step_seconds(cfg, name, msc=msc, steps=steps, warmup=max(2, steps // 5))
    print(json.dumps({"model": name, "msc": msc, "threads": threads, "ms_per_step": 1000 * sec,
                      "images_per_s": cfg.train.batch_size / sec}), flush=True)
    return 0


def _measure(name: str, msc: bool, threads: int, steps: int, side_by_side: int = 1) -> dict:
    """Start ``side_by_side`` identical measurement processes at once; the first one's figures."""
    cmd = [sys.executable, __file__, "--one", name, str(int(msc)), str(threads), str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(side_by_side)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return outs[0]


def budget_rows(quick: bool) -> list[dict]:
    """ms per step of every network of the cpu ablation, alone (1, 2 threads) and two side by side (1 thread)."""
    cfg = config.resolve("cpu")
    steps = 6 if quick else 20
    rows = []
    for name, msc in budget.networks_of(cfg):
        row = {"model": name, "msc": msc}
        for label, threads, side in (("1 thread", 1, 1), ("2 threads", 2, 1), ("1 thread, 2 side by side", 1, 2)):
            m = _measure(name, msc, threads, steps, side)
            row[f"ms/step {label}"] = round(m["ms_per_step"], 1)
            row[f"img/s {label}"] = round(m["images_per_s"], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    side_by_side = {(r["model"], r["msc"]): r["ms/step 1 thread, 2 side by side"] / 1000 for r in rows}
    table = budget.budget_table(cfg, side_by_side)
    workers = max(1, cfg.ablation.workers)
    print(f"budget: {len(table)} trainings x {len(cfg.ablation.seeds)} seeds, {workers} side by side: "
          f"{table['minutes'].sum():.1f} training-minutes -> {table['minutes'].sum() / workers:.1f} min of wall time "
          "(training steps only: no evaluation, CRF or start-up)", flush=True)
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        return _one(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a rough figure in ~30 s)")
    parser.add_argument("--profile", default="cpu", choices=config.PROFILES)
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA measurement")
    parser.add_argument("--budget", action="store_true", help="every network of the cpu ablation, 1/2 threads, "
                        "1/2 trainings side by side, and the ablation's minutes")
    args = parser.parse_args(argv)
    if args.budget:
        rows = budget_rows(args.quick)
        results.Results(config.resolve("cpu"), "bench_train").json("bench_budget", {"rows": rows})
        return 0
    cfg = config.resolve(args.profile)
    steps, warmup = (8, 2) if args.quick else (30, 5)
    rows = []

    def report(name, value, **info):
        rows.append({"measurement": name, "images_per_s": round(value, 2), **info})
        print(f"{name:<48s} {value:8.1f} img/s  {info}", flush=True)

    if not args.gpu_only:
        crop, batch = cfg.data.crop_size, cfg.train.batch_size
        train_rate = step_rate(cfg, cfg.model.name, batch=batch, crop=crop, steps=steps, warmup=warmup, device="cpu")
        report(f"train step, {cfg.model.name}", train_rate, batch=batch, crop=crop, threads=torch.get_num_threads())
        msc_rate = step_rate(cfg, cfg.model.name, batch=batch, crop=crop, steps=steps, warmup=warmup, device="cpu",
                             msc=True)
        report(f"train step, {cfg.model.name} + MSC", msc_rate, batch=batch, crop=crop)
        for name in ("small_resnet_baseline", "small_vgg_largefov"):
            report(f"train step, {name}", step_rate(cfg, name, batch=batch, crop=crop, steps=steps // 2 or 1,
                                                    warmup=warmup, device="cpu"), batch=batch, crop=crop)
        load = loader_rate(cfg, batches=steps * 2)
        report("data loader (proxy, scale/crop/flip/normalise)", load, workers=cfg.data.loader_workers,
               ratio_to_training=round(load / train_rate, 1))
        if load < 2 * train_rate:
            print(f"WARNING: the data loader ({load:.0f} img/s) is less than twice the training rate "
                  f"({train_rate:.0f} img/s); raise data.loader_workers", flush=True)

    if torch.cuda.is_available():
        gpu = config.resolve("gpu")
        report("train step, deeplab_v2_resnet101_aspp (cuda, bf16 + channels_last)",
               step_rate(gpu, "deeplab_v2_resnet101_aspp", batch=10, crop=321, steps=steps, warmup=warmup,
                         device="cuda"), batch=10, crop=321, device=torch.cuda.get_device_name(0))
        report("train step, deeplab_v2_resnet101_aspp + MSC (cuda, bf16 + channels_last)",
               step_rate(gpu, "deeplab_v2_resnet101_aspp", batch=10, crop=321, steps=steps, warmup=warmup,
                         device="cuda", msc=True), batch=10, crop=321, device=torch.cuda.get_device_name(0))
    else:
        print("no GPU: deeplab_v2_resnet101_aspp at batch 10, 321x321 not measured", flush=True)
    out = results.Results(cfg, "bench_train")
    path = out.json("bench_train", {"rows": rows, "quick": args.quick})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
