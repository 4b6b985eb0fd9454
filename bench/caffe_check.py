"""The released-Caffe-model path on a GPU, with random weights (the GPU machine has no network and no VOC).

Writes a random DeepLab v2 ResNet-101 ASPP into a temporary .caffemodel (DeepLab's layer names, the new
``layer`` format), loads it as ``python -m dlib evaluate --caffemodel`` does (dlib.train.build_model with
model.caffemodel, model.caffe_layout, data.input_convention=caffe), checks every tensor arrived, and times
the MSC forward at 513x513 (the gpu profile's evaluation) to estimate a VOC val (1,449 images) evaluation.

    python bench/caffe_check.py [--json OUT.json]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlib import caffe, config, models, train  # noqa: E402
from dlib.evaluate import _net, predict_logits  # noqa: E402


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, body: bytes) -> bytes:  # a length-delimited field (wire type 2)
    return _vint(number << 3 | 2) + _vint(len(body)) + body


def write_caffemodel(path: Path, layers: dict[str, list[np.ndarray]]) -> None:
    """NetParameter.layer (100) of LayerParameter name (1), type (2), blobs (7: BlobProto shape 7, data 5)."""
    out = bytearray()
    for name, blobs in layers.items():
        body = _field(1, name.encode()) + _field(2, b"Convolution")
        for a in blobs:
            shape = _field(1, b"".join(_vint(d) for d in a.shape))
            body += _field(7, _field(7, shape) + _field(5, a.astype("<f4").tobytes()))
        out += _field(100, body)
    path.write_bytes(bytes(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--size", type=int, default=513, help="input side (513: the gpu profile's evaluation)")
    args = parser.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    donor = models.build("deeplab_v2_resnet101_aspp", caffe_layout=True)
    state = donor.state_dict()
    for name, t in state.items():  # plausible BN statistics: positive variances
        if name.endswith("running_var"):
            t.uniform_(0.5, 1.5)
    layers: dict[str, dict[int, np.ndarray]] = {}
    for key, ref in caffe.caffe_names(donor).items():
        layers.setdefault(ref.layers[0], {})[ref.index] = state[key].numpy()
    for name in [n for n in layers if n.startswith("bn")]:
        layers[name][2] = np.ones(1, np.float32)  # the BatchNorm scale factor
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.caffemodel"
        t0 = time.perf_counter()
        write_caffemodel(path, {n: [b[i] for i in sorted(b)] for n, b in layers.items()})
        cfg = config.resolve("gpu", overrides={"model.caffemodel": str(path), "model.caffe_layout": True,
                                               "data.input_convention": "caffe", "model.pretrained": None})
        model = train.build_model(cfg)
        load_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
    report = model.load_report
    same = all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    net = _net(model, cfg, msc=True).to(dev).eval()
    side = args.size
    x = torch.randn(1, 3, side, side, device=dev) * 50
    timings = []
    for _ in range(6):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            scores = predict_logits(net, x, (side, side), pad=side)
        if dev == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - t0)
    per_image = float(np.median(timings[1:]))
    out = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "file_mb": round(size_mb, 1),
           "write_and_load_s": round(load_s, 2), "blobs_loaded": len(report.mapped), "missing": len(report.missing),
           "unexpected": len(report.unexpected), "all_tensors_equal": same, "scores_shape": list(scores.shape),
           "input": side, "msc_forward_s": round(per_image, 4),
           "voc_val_1449_forward_min_estimate": round(1449 * per_image / 60, 2)}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if same and not report.missing and not report.unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
