"""Training throughput: the `cpu` profile's model on this machine's cores, its data loader, and on a GPU
(when one is present) DeepLab-v2 ResNet-101 ASPP at batch 10, 321x321, bf16 + channels_last.

    flock /tmp/heavy.lock .venv/bin/python bench/bench_train.py [--quick]

Prints one line per measurement and writes results/<profile>/bench_train/bench_train.json.
The data loader must deliver at least twice the training rate, or training waits for data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bn_init import calibrate_bn  # noqa: E402

from dlib import config, data, distributed, models, results, sampling, schedule, train  # noqa: E402
from dlib.transforms import TrainTransform  # noqa: E402


def step_rate(cfg, model_name: str, *, batch: int, crop: int, steps: int, warmup: int, device: str,
              msc: bool = False) -> float:
    """Images per second of forward + backward + SGD step on random inputs (no data loading)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    model = models.build(model_name, num_classes=21).to(dev).train()
    if dev.type == "cuda":  # random init: measured BN statistics stand in for ImageNet's (see bn_init.py)
        calibrate_bn(model, [torch.randn(4, 3, crop, crop, device=dev) for _ in range(2)])
    cfg = cfg.replace({"model.name": model_name, "train.msc": msc})
    net = train.wrap_msc(model, cfg) if msc else model
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a rough figure in ~30 s)")
    parser.add_argument("--profile", default="cpu", choices=config.PROFILES)
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA measurement")
    args = parser.parse_args(argv)
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
