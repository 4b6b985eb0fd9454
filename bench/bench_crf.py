"""Benchmark the dense CRF: pydensecrf against the torch lattice on CPU and GPU; wrapper overhead; workers.

Seconds per 500x375 image (21 labels, 10 mean-field iterations, DeepLab v2's parameters):

* pydensecrf (one core) and ``dlib.crf.DenseCRF(backend="torch")`` on the CPU with 2 threads;
  goal: torch <= 3x pydensecrf;
* torch on a GPU when one is present, one image and per image in a batch of 16 (``DenseCRF.batch``);
  goal: >= 20x faster than pydensecrf on one core, per image in the batch;
* ``dlib.crf.DenseCRF`` (input checks included) against the same pydensecrf calls made directly;
  goal: ratio <= 1.05. Then images per second of ``dlib.crf.tuning.refine_dataset`` over 20+ cached
  softmaxes with 1 worker and with every core; goal: >= 1.8x on 2 cores.

``--agreement`` instead refines every shared VOC image with both backends and reports the share of
pixels with the same label and the mIoU of each (goal: >= 99.5%, mIoU within 0.2 points).
Uses real VOC images from ``../shared/data`` when present (softmaxes SIMULATED from their labels,
stride 8), synthetic scenes otherwise. pydensecrf's figures are skipped when it is not installed.

    .venv/bin/python bench/bench_crf.py              # 10 repeats, 24 images
    .venv/bin/python bench/bench_crf.py --quick      # 3 repeats, 20 images
    .venv/bin/python bench/bench_crf.py --agreement  # every shared VOC image, both backends
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dlib import crf
from dlib.core import io as dlib_io
from dlib.core.io import read_image, read_label, save_probs
from dlib.crf import scenes, tuning
from dlib.evaluation import metrics

H, W, C = 375, 500, 21


def inputs(n: int) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """n (ids, images, simulated softmaxes) of size 375x500, and where they came from."""
    root = dlib_io.shared_voc_root()
    images, probs = {}, {}
    if root is not None:
        for image_id in (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
            image = read_image(root / "JPEGImages" / f"{image_id}.jpg")
            if image.shape[:2] != (H, W):
                continue
            label = read_label(root / "SegmentationClass" / f"{image_id}.png")
            images[image_id] = image
            probs[image_id] = scenes.simulate_unaries(label, C, seed=len(images))
            if len(images) == n:
                return list(images), images, probs, f"VOC 2012 images from {root} (softmax simulated)"
    for k in range(n):
        image, label = scenes.synthetic_scene(H, W, num_objects=4, num_classes=C, seed=k)
        images[f"synthetic{k:03d}"] = image
        probs[f"synthetic{k:03d}"] = scenes.simulate_unaries(label, C, seed=k)
    return list(images), images, probs, "synthetic scenes (scenes.synthetic_scene; softmax simulated)"


def raw_pydensecrf(image: np.ndarray, probs: np.ndarray, params: dict) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=params["theta_gamma"], compat=params["w2"])
    d.addPairwiseBilateral(sxy=params["theta_alpha"], srgb=params["theta_beta"], rgbim=image, compat=params["w1"])
    return np.array(d.inference(params["iterations"])).reshape(probs.shape)


def time_backends(image: np.ndarray, probs: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per image: pydensecrf, torch on CPU (2 threads), torch on a GPU (1 image, batch of 16)."""
    figures: dict[str, float] = {}
    runs = {}
    if crf.pydensecrf_available():
        runs["pydensecrf_s"] = (crf.DenseCRF(backend="pydensecrf"), 1)
    runs["torch_cpu_s"] = (crf.DenseCRF(backend="torch"), 1)
    if torch.cuda.is_available():
        runs["torch_gpu_s"] = (crf.DenseCRF(backend="torch", device="cuda"), 1)
        runs["torch_gpu_batch16_s_per_image"] = (crf.DenseCRF(backend="torch", device="cuda"), 16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name, (model, batch) in runs.items():
            model.batch([image] * batch, [probs] * batch)  # warm-up (first-call set-up, CUDA context)
            times = []
            for _ in range(repeats):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model.batch([image] * batch, [probs] * batch)  # returns numpy: synchronised
                times.append((time.perf_counter() - t) / batch)
            figures[name] = statistics.median(times)
    finally:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():  # the same answer on the GPU as on the CPU
        on_cpu = runs["torch_cpu_s"][0].predict(image, probs)
        on_gpu = runs["torch_gpu_s"][0].predict(image, probs)
        figures["gpu_cpu_same_label_pct"] = 100 * float((on_cpu == on_gpu).mean())
    return figures


def agreement(max_images: int | None = None) -> dict:
    """Both backends on every shared VOC image (simulated stride-8 softmax): same-label share, mIoU each."""
    root = dlib_io.shared_voc_root()
    if root is None or not crf.pydensecrf_available():
        raise SystemExit("--agreement needs the shared VOC subset and pydensecrf")
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:max_images]
    models = {b: crf.DenseCRF(backend=b) for b in ("pydensecrf", "torch")}
    conf = {name: np.zeros((C, C), np.int64) for name in ("none", *models)}
    same = total = 0
    for k, image_id in enumerate(ids):
        image = read_image(root / "JPEGImages" / f"{image_id}.jpg")
        label = read_label(root / "SegmentationClass" / f"{image_id}.png")
        probs = scenes.simulate_unaries(label, C, seed=k)
        preds = {b: m.predict(image, probs) for b, m in models.items()}
        same += int((preds["torch"] == preds["pydensecrf"]).sum())
        total += label.size
        conf["none"] += metrics.confusion_matrix(probs.argmax(0), label, C)
        for b in models:
            conf[b] += metrics.confusion_matrix(preds[b], label, C)
        if (k + 1) % 10 == 0:
            miou = {b: 100 * metrics.scores(c)["mean_iou"] for b, c in conf.items()}
            print(f"  {k + 1} images: same label on {100 * same / total:.3f}% of pixels, mIoU no CRF "
                  f"{miou['none']:.2f}, pydensecrf {miou['pydensecrf']:.2f}, torch {miou['torch']:.2f}", flush=True)
    miou = {b: 100 * metrics.scores(c)["mean_iou"] for b, c in conf.items()}
    return {"images": len(ids), "same_label_pct": 100 * same / total, "miou_no_crf": miou["none"],
            "miou_pydensecrf": miou["pydensecrf"], "miou_torch": miou["torch"],
            "miou_difference_points": miou["torch"] - miou["pydensecrf"]}


def time_single(image: np.ndarray, probs: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds per image of the raw call and of the wrapper, interleaved to share any drift."""
    model = crf.DenseCRF(backend="pydensecrf")
    params = model.params
    assert np.array_equal(model(image, probs), raw_pydensecrf(image, probs, params))  # same result, then time
    raw, ours = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        raw_pydensecrf(image, probs, params)
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        model(image, probs)
        ours.append(time.perf_counter() - t)
    return statistics.median(raw), statistics.median(ours)


def time_batch(ids, images, probs, workers: int) -> float:
    """Images per second of refine_dataset (pydensecrf) over cached float16 softmaxes, writing label PNGs."""
    with tempfile.TemporaryDirectory() as tmp:
        for image_id in ids:
            save_probs(Path(tmp) / "probs" / f"{image_id}.npz", probs[image_id])
        t = time.perf_counter()
        tuning.refine_dataset(Path(tmp) / "probs", Path(tmp) / "out", images.__getitem__, ids=ids,
                                  crf=crf.DenseCRF(backend="pydensecrf"), workers=workers, progress=False)
        return len(ids) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and 20 images")
    parser.add_argument("--agreement", action="store_true", help="both backends on every shared VOC image")
    parser.add_argument("--max-images", type=int, help="--agreement on the first N images only")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.agreement:
        result = agreement(args.max_images)
        print(f"{result['images']} VOC images (softmax simulated, stride 8): same label on "
              f"{result['same_label_pct']:.3f}% of pixels (goal >= 99.5%); mIoU no CRF {result['miou_no_crf']:.2f}, "
              f"pydensecrf {result['miou_pydensecrf']:.2f}, torch {result['miou_torch']:.2f} "
              f"(difference {result['miou_difference_points']:+.3f} points, goal within 0.2)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    repeats, n = (3, 20) if args.quick else (10, 24)
    ids, images, probs, source = inputs(n)
    cores = tuning.resolve_workers(0)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"dense CRF, {H}x{W}, {C} labels, {crf.DenseCRF(backend='torch').params}; {source}; {cores} cores; {gpu}")

    figures = time_backends(images[ids[0]], probs[ids[0]], repeats)
    line = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
    print(f"seconds per image (median of {repeats}): {line}")
    if "pydensecrf_s" in figures:
        base = figures["pydensecrf_s"]
        print(f"torch on CPU (2 threads) / pydensecrf: {figures['torch_cpu_s'] / base:.2f}x (goal <= 3x)")
        if "torch_gpu_batch16_s_per_image" in figures:
            print(f"pydensecrf / torch on GPU, batch of 16: {base / figures['torch_gpu_batch16_s_per_image']:.1f}x "
                  "faster per image (goal >= 20x)")
    else:
        print("pydensecrf is not installed: its figures, the wrapper overhead and the worker scaling are skipped")
    if not torch.cuda.is_available():
        print("no GPU here: the GPU figures are left to a machine with one (bench/gpu_check.sh)")
    result = {"source": source, "cores": cores, "repeats": repeats, "gpu": gpu, **figures,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if crf.pydensecrf_available():
        raw, ours = time_single(images[ids[0]], probs[ids[0]], repeats)
        print(f"single image (median of {repeats}): raw pydensecrf {raw:.3f} s, dlib.crf.DenseCRF {ours:.3f} s, "
              f"ratio {ours / raw:.3f} (goal <= 1.05)")
        one = time_batch(ids, images, probs, workers=1)
        every = time_batch(ids, images, probs, workers=0)
        print(f"batch of {len(ids)}: 1 worker {one:.2f} img/s, {cores} workers {every:.2f} img/s, "
              f"speed-up {every / one:.2f}x (goal >= 1.8x on 2 cores)")
        result.update({"images": len(ids), "single_raw_s": raw, "single_wrapper_s": ours, "ratio": ours / raw,
                       "batch_1_worker_img_per_s": one, "batch_all_workers_img_per_s": every,
                       "speedup": every / one})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
