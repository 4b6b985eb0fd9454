"""Benchmark every DeepLab model: parameters, CPU forward and train-step time, peak memory.

    .venv/bin/python bench/bench_models.py            # every model, 321x321 and the cpu profile's crop
    .venv/bin/python bench/bench_models.py --quick    # small models, LargeFOV, ResNet-101 ASPP; 1 timed run

Each (model, input size) runs in its own subprocess so that its peak resident memory (ru_maxrss) is
its own; "peak memory" is that peak minus the process's peak before the model was built (imports).
Times are medians over ``--repeats`` runs after one warm-up run, on ``--threads`` CPU threads
(2 by default, the project's laptop budget). torchvision's ``deeplabv3_resnet101`` (DeepLab v3, not
a paper model) is timed on the same inputs in the same run as a reference: "vs v3" is our time
divided by its time. At 321x321 the batch is 1 (CPU); at the cpu profile's crop it is the profile's
batch. When CUDA is available, DeepLab-v2 ResNet-101 ASPP training throughput is also measured at the
paper's batch 10, 321x321, with bf16 autocast and channels_last.
Results go to results/cpu/bench_models/ (JSON with provenance, CSV) unless --no-save.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = "torchvision_deeplabv3_resnet101"
QUICK_MODELS = ["deeplab_v1_largefov", "deeplab_v2_resnet101_aspp"]


def _build(name: str, num_classes: int):
    import torch
    import torchvision

    from dlib.nets import models

    if name == REFERENCE:
        net = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                  num_classes=num_classes, aux_loss=False)

        class Wrapped(torch.nn.Module):  # returns full-resolution logits (DeepLab v3 upsamples inside)
            def __init__(self):
                super().__init__()
                self.net = net

            def train(self, mode: bool = True):
                # BN kept in eval mode, as our frozen-BN ResNet-101 (and so that batch 1 works: v3's
                # image-pooling branch has a single value per channel to normalise).
                super().train(mode)
                for m in self.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.eval()
                return self

            def forward(self, x):
                return self.net(x)["out"]

        return Wrapped()
    return models.build(name, num_classes=num_classes)


def worker(name: str, size: int, batch: int, repeats: int, threads: int) -> dict:
    """Time forward (eval, no grad) and one SGD train step of ``name`` on (batch, 3, size, size)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports, before the model
    model = _build(name, 21)
    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(batch, 3, size, size)

    model.eval()
    forward = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t = time.perf_counter()
            out = model(x)
            if i:
                forward.append(time.perf_counter() - t)
    labels = torch.randint(0, 21, (batch, *out.shape[-2:]))
    model.train()
    opt = torch.optim.SGD(trainable, lr=1e-4, momentum=0.9)
    step = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        if i:
            step.append(time.perf_counter() - t)
    return {"model": name, "size": size, "batch": batch, "params_m": params / 1e6,
            "trainable_m": sum(p.numel() for p in trainable) / 1e6,
            "forward_s": statistics.median(forward), "train_step_s": statistics.median(step),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "model_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mib,
            "threads": threads}


def run_one(name: str, size: int, batch: int, repeats: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", name, str(size), str(batch), str(repeats), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        return {"model": name, "size": size, "batch": batch, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


GPU_CASES = [  # (model, bf16 autocast + channels_last, MSC): the paper's batch 10 at 321x321
    ("deeplab_v2_resnet101_aspp", True, False),
    ("deeplab_v2_resnet101_aspp", False, False),
    ("deeplab_v2_resnet101_aspp", True, True),
    ("deeplab_v2_resnet101_largefov", True, False),
    ("deeplab_v1_largefov", True, False),
    ("deeplab_v2_vgg16_aspp_l", True, False),
    (REFERENCE, True, False),
]


def gpu_throughput(name: str = "deeplab_v2_resnet101_aspp", *, bf16: bool = True, msc: bool = False,
                   iters: int = 20, batch: int = 10, size: int = 321, device: str = "cuda") -> dict | None:
    """Paper-scale training speed on CUDA: batch 10, 321x321 (bf16 autocast and channels_last when ``bf16``)."""
    import torch
    import torch.nn.functional as F

    from dlib.nets.msc import MSC, MSCOutput

    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        return None

    def sync():
        if cuda:
            torch.cuda.synchronize()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = _build(name, 21).to(device).train()
    from bn_init import calibrate_bn  # random init: measured BN statistics stand in for ImageNet's

    calibrate_bn(model, [torch.randn(4, 3, size, size, device=device) for _ in range(2)])
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = MSC(model) if msc else model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=2.5e-4, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
    targets: dict[tuple[int, ...], torch.Tensor] = {}

    def loss_of(out):
        # As in training (and Caffe): the loss on each output's own grid, labels subsampled to it.
        outs = out.all() if isinstance(out, MSCOutput) else [out]
        total = 0.0
        for o in outs:
            shape = (o.shape[0], *o.shape[-2:])
            if shape not in targets:
                targets[shape] = torch.randint(0, 21, shape, device=device)
            total = total + F.cross_entropy(o.float(), targets[shape])
        return total

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss_of(out).backward()
        opt.step()

    for _ in range(5):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    elapsed = time.perf_counter() - t
    model.eval()
    xe = torch.randn(1, 3, 513, 513, device=device).to(memory_format=fmt)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(3):
            model(xe)
        sync()
        te = time.perf_counter()
        for _ in range(20):
            model(xe)
        sync()
    eval_s = (time.perf_counter() - te) / 20
    row = {"model": name, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "batch": batch, "size": size,
           "amp": "bf16" if bf16 else "fp32", "channels_last": bf16, "msc": msc,
           "train_img_per_s": batch * iters / elapsed, "train_step_ms": 1000 * elapsed / iters,
           "eval_513_ms": 1000 * eval_s, "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}
    return row  # the model and optimizer go with this frame; run_gpu empties the CUDA cache between cases


def gpu_table(rows: list[dict]) -> str:
    lines = ["| model | precision | MSC | train img/s (batch 10, 321x321) | train step (ms) | eval 513x513 (ms) "
             "| peak GPU memory (GiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['amp']}{' + channels_last' if r['channels_last'] else ''} | "
                     f"{'yes' if r['msc'] else 'no'} | {r['train_img_per_s']:.1f} | {r['train_step_ms']:.0f} | "
                     f"{r['eval_513_ms']:.1f} | {r['peak_gpu_mem_gib']:.1f} |")
    return "\n".join(lines)


def run_gpu() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        print("\nGPU: CUDA not available, GPU throughput not measured")
        return []
    rows = []
    for name, bf16, msc in GPU_CASES:
        row = gpu_throughput(name, bf16=bf16, msc=msc)
        torch.cuda.empty_cache()
        rows.append(row)
        print(f"GPU {row['device']}: {name} {row['amp']} msc={msc}: {row['train_img_per_s']:.1f} img/s train, "
              f"{row['eval_513_ms']:.1f} ms eval 513, peak {row['peak_gpu_mem_gib']:.1f} GiB", flush=True)
    print(gpu_table(rows))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer models, one timed run")
    parser.add_argument("--models", nargs="*", help="model names (default: all registered)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3, quick 1)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA training/eval throughput table")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        name, size, batch, repeats, threads = args.worker
        print(json.dumps(worker(name, int(size), int(batch), int(repeats), int(threads))))
        return 0

    from dlib.core import config
    from dlib.nets import models

    cfg = config.resolve("cpu")
    if args.gpu_only:
        gpu = run_gpu()
        if gpu and not args.no_save:
            from dlib.experiments import results

            path = results.Results(config.resolve("gpu"), "bench_models").json("bench_models_gpu", {"gpu": gpu})
            print(f"saved to {path}")
        return 0 if gpu else 1
    small = [n for n in models.available() if n.startswith("small_")]
    if args.models:
        names = list(args.models)
    elif args.quick:
        names = small + QUICK_MODELS
    else:
        names = models.available()
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = [(321, 1), (cfg.data.crop_size, cfg.train.batch_size)]
    rows = []
    started = time.time()
    for size, batch in sizes:
        ref = run_one(REFERENCE, size, batch, repeats, args.threads)
        rows.append(ref)
        for name in names:
            if size == 321 and name.startswith("small_") and args.quick:
                continue
            row = run_one(name, size, batch, repeats, args.threads)
            if "error" not in row and "error" not in ref:
                row["forward_vs_v3"] = row["forward_s"] / ref["forward_s"]
                row["train_step_vs_v3"] = row["train_step_s"] / ref["train_step_s"]
            rows.append(row)
            print(_format(row), flush=True)
        print(_format(ref), flush=True)
    print(f"\n{len(rows)} measurements in {time.time() - started:.0f} s, {args.threads} threads, "
          f"median of {repeats} run(s) after 1 warm-up")
    print(_table(rows))
    gpu = run_gpu()
    if not args.no_save:
        from dlib.experiments import results

        out = results.Results(cfg, "bench_models")
        out.json("bench_models", {"rows": rows, "gpu": gpu, "threads": args.threads, "repeats": repeats,
                                  "quick": args.quick})
        out.csv("bench_models", [{k: r.get(k) for k in _COLUMNS} for r in rows])
        print(f"saved to {out.dir}")
    return 0


_COLUMNS = ["model", "size", "batch", "params_m", "forward_s", "train_step_s", "peak_rss_mib", "model_peak_mib",
            "forward_vs_v3",
            "train_step_vs_v3"]


def _format(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:32s} {row['size']}x{row['size']} batch {row['batch']}: FAILED {row['error']}"
    ratio = f" ({row['train_step_vs_v3']:.2f}x v3)" if "train_step_vs_v3" in row else ""
    return (f"{row['model']:32s} {row['size']}x{row['size']} b{row['batch']:<2d} {row['params_m']:7.2f}M  "
            f"fwd {row['forward_s'] * 1000:8.0f} ms  step {row['train_step_s'] * 1000:8.0f} ms{ratio}  "
            f"peak +{row['model_peak_mib']:6.0f} MiB")


def _table(rows: list[dict]) -> str:
    lines = ["| model | input | batch | params (M) | forward (ms) | train step (ms) | step vs v3 | peak memory (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | {r['batch']} | failed | | | | |")
            continue
        ratio = f"{r['train_step_vs_v3']:.2f}" if "train_step_vs_v3" in r else "-"
        if r["model"] == REFERENCE:
            ratio = "1 (reference)"
        lines.append(f"| {r['model']} | {r['size']}x{r['size']} | {r['batch']} | {r['params_m']:.2f} | "
                     f"{r['forward_s'] * 1000:.0f} | {r['train_step_s'] * 1000:.0f} | {ratio} | "
                     f"{r['model_peak_mib']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
