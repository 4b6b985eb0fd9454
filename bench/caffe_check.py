"""The released-Caffe-model path with random weights (the GPU machine has no network and no VOC): float32 against bf16.

Writes a random-weight network of the released layout (DeepLab's layer names and order, with the tests' own
protobuf writer, tests/caffemodel_writer.py; batch-norm statistics measured on random batches, bench/bn_init.py,
so the ResNet's activations stay normalised), loads it as ``python -m dlib evaluate --caffemodel`` does
(dlib.nets.network.build with model.caffemodel, model.caffe_layout, data.input_convention=caffe), checks every
tensor arrived, then scores one input at ``--size`` (513: the gpu profile's padded evaluation; MSC for the
ResNet, as its test.prototxt) in float32 with TF32 off (what evaluate runs for a released model) and under bf16
autocast, and reports each one's time and their agreement (argmax pixels that change, logit difference).
The agreement is that of random weights, not of the released model: a random 101-layer residual network
amplifies rounding through its blocks (on a CPU at 65x65 bf16 changes the argmax at 48% of positions, against
0.14% for the random LargeFOV); bench/bench_precision.py measures a trained network on VOC images.

    python bench/caffe_check.py [--model deeplab_v2_resnet101_aspp] [--size 513] [--json OUT.json]
    python bench/caffe_check.py --size 65              # the same path on a CPU in seconds (tiny input)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from bn_init import calibrate_bn  # noqa: E402
from caffemodel_writer import write_net  # noqa: E402  (the tests' independent .caffemodel writer)

from dlib.core import config  # noqa: E402
from dlib.evaluation import evaluate  # noqa: E402
from dlib.nets import caffe, models, network  # noqa: E402

LEGACY = {"deeplab_v1_largefov"}  # released in Caffe's V1 "layers" format (dlib.nets.caffe_proto)


def write_random_release(name: str, path: Path, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight ``name`` in its released layout written to ``path``; returns the weights written."""
    torch.manual_seed(seed)
    donor = models.build(name, **caffe.layout_kwargs(name)).eval()
    calibrate_bn(donor, [torch.randn(2, 3, 65, 65) * 50 for _ in range(2)])  # Caffe input scale (0-255, mean off)
    state = donor.state_dict()
    layers: dict[str, dict[int, np.ndarray]] = {}
    for key, ref in caffe.caffe_names(donor).items():  # prototxt order
        layers.setdefault(ref.layers[0], {})[ref.index] = state[key].numpy()
    for layer in [n for n in layers if n.startswith("bn")]:
        layers[layer][2] = np.ones(1, np.float32)  # the BatchNorm scale factor: statistics stored as they are
    write_net(path, [(n, "Convolution", [b[i] for i in sorted(b)]) for n, b in layers.items()], legacy=name in LEGACY)
    return state


def released_config(name: str, path: Path, **overrides) -> config.Config:
    """The config ``evaluate --caffemodel PATH --set model.name=NAME`` resolves (gpu profile)."""
    return config.resolve("gpu", overrides={"model.name": name, "model.caffemodel": str(path),
                                            "model.caffe_layout": True, "data.input_convention": "caffe",
                                            "model.pretrained": None, **overrides})


def _timed(net, x, side: int, precision: str, dev: torch.device, repeats: int) -> tuple[torch.Tensor, float]:
    timings, scores = [], None
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with evaluate.precision(precision, dev):
            scores = evaluate.predict_logits(net, x, (side, side), pad=side)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - t0)
    return scores.float(), float(np.median(timings[1:] if repeats > 1 else timings))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplab_v2_resnet101_aspp", choices=sorted(caffe._LAYOUT))
    parser.add_argument("--size", type=int, default=513, help="input side (513: the gpu profile's evaluation)")
    parser.add_argument("--msc", action=argparse.BooleanOptionalAction, default=None,
                        help="MSC (default: for the ResNet, as its released test.prototxt)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    msc = "resnet" in args.model if args.msc is None else args.msc
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.caffemodel"
        t0 = time.perf_counter()
        state = write_random_release(args.model, path)
        write_s, t0 = time.perf_counter() - t0, time.perf_counter()
        cfg = released_config(args.model, path)
        model = network.build(cfg)
        load_s, size_mb = time.perf_counter() - t0, path.stat().st_size / 2**20
    report = model.load_report
    same = all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    net = evaluate._net(model, cfg, msc).to(dev).eval()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(dev) * 50
    with torch.no_grad():
        full, full_s = _timed(net, x, args.size, evaluate.eval_precision(cfg, dev), dev, args.repeats)
        half, half_s = _timed(net, x, args.size, "bf16", dev, args.repeats)
    flipped = float((full.argmax(1) != half.argmax(1)).float().mean())
    out = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "model": args.model, "msc": msc,
           "file_mb": round(size_mb, 1), "write_s": round(write_s, 2), "load_s": round(load_s, 2),
           "blobs_loaded": len(report.mapped), "missing": len(report.missing), "unexpected": len(report.unexpected),
           "all_tensors_equal": same, "scores_shape": list(full.shape), "input": args.size,
           "default_precision": evaluate.eval_precision(cfg, dev),
           "float32_forward_s": round(full_s, 4), "bf16_forward_s": round(half_s, 4),
           "bf16_argmax_changed_pct": round(100 * flipped, 3),
           "bf16_max_abs_logit_diff_rel": round(float((full - half).abs().max() / full.abs().max()), 5),
           "voc_val_1449_forward_min_float32": round(1449 * full_s / 60, 2),
           "voc_val_1449_forward_min_bf16": round(1449 * half_s / 60, 2)}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if same and not report.missing and not report.unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
