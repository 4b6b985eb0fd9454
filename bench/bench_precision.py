"""What bf16 autocast changes against float32 when scoring the shared VOC images: argmax pixels and mIoU.

No released DeepLab caffemodel is available offline, so two stand-ins are measured (neither is the released model):

* ``standin``: the project's shipped small ResNet-ASPP "COCO" stand-in (dlib/weights/small_resnet_aspp_coco.pt), a
  trained network with real class margins, but trained on the proxy data set: its classes are not VOC's, so its
  mIoU against the VOC labels is low and only the bf16-float32 difference means anything;
* ``released-random``: a random-weight network of a released layout (bench/caffe_check.py writes it with the tests'
  .caffemodel writer) loaded through ``--caffemodel``, with the Caffe input convention: the released model's code
  path, but random weights, whose small margins and unstructured features make bf16 look worse than for a trained
  network.

Each network scores the images as ``python -m dlib evaluate`` does (whole images padded to 513,
dlib.evaluation.evaluate), once
with ``eval.precision=float32`` and once with ``bf16`` (autocast on the CPU with native bf16 where the CPU has it,
else emulated), and the two predictions are compared pixel by pixel.

    python bench/bench_precision.py [--network standin|released-random] [--model NAME] [--max-images N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from dlib.core import config, io  # noqa: E402
from dlib.data import voc  # noqa: E402
from dlib.evaluation import evaluate  # noqa: E402
from dlib.nets import models, network, standins  # noqa: E402


def standin(model: str = "small_resnet_aspp"):
    """The shipped "COCO" stand-in of ``model`` and the cpu profile's config for it (ImageNet input convention)."""
    cfg = config.resolve("cpu", overrides={"model.name": model, "model.pretrained": None, "data.eval_pad": 513})
    net = models.build(model)
    network.load_weights(net, standins.coco_path(model))
    return cfg, net


def compare(cfg, net, dataset, max_images: int | None) -> dict:
    """Score ``dataset`` in float32 and in bf16; the share of pixels whose label changes and both mIoUs."""
    runs = {}
    for precision in ("float32", "bf16"):
        t0 = time.perf_counter()
        runs[precision] = evaluate.evaluate(cfg.replace({"eval.precision": precision}), net, dataset, device="cpu",
                                            max_images=max_images, keep_predictions=True, progress=False)
        runs[precision]["seconds"] = time.perf_counter() - t0
    full, half = runs["float32"], runs["bf16"]
    changed = sum(int((a != b).sum()) for a, b in zip(full["predictions"], half["predictions"]))
    total = sum(a.size for a in full["predictions"])
    return {"images": full["num_images"], "pixels": total, "argmax_changed_pct": round(100 * changed / total, 4),
            "miou_float32": round(100 * full["mean_iou"], 3), "miou_bf16": round(100 * half["mean_iou"], 3),
            "miou_difference_points": round(100 * (half["mean_iou"] - full["mean_iou"]), 3),
            "seconds_float32": round(full["seconds"], 1), "seconds_bf16": round(half["seconds"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("standin", "released-random"), default="standin")
    parser.add_argument("--model", default=None, help="standin: small_resnet_aspp (default); released-random: "
                                                      "deeplab_v1_largefov (default) or another released layout")
    parser.add_argument("--max-images", type=int, default=None, help="the first N shared images (default: all 330)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    root = io.shared_voc_root()
    if root is None:
        raise SystemExit("needs the shared VOC subset (../shared/data/voc2012-train-subset)")
    dataset = voc.VOCSegmentation(root, "train")
    with tempfile.TemporaryDirectory() as tmp:
        if args.network == "standin":
            name = args.model or "small_resnet_aspp"
            cfg, net = standin(name)
        else:
            from caffe_check import released_config, write_random_release

            name = args.model or "deeplab_v1_largefov"
            path = Path(tmp) / "random.caffemodel"
            write_random_release(name, path)
            cfg = released_config(name, path, **{"data.dataset": "voc"})
            net = network.build(cfg)
    out = {"network": args.network, "model": name, "cpu_bf16": _cpu_has_bf16(),
           **compare(cfg, net, dataset, args.max_images)}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); otherwise oneDNN emulates it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    sys.exit(main())
