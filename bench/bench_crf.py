"""Benchmark the dense CRF: the wrapper's overhead over raw pydensecrf, and batch throughput over workers.

Seconds per 500x375 image (21 labels, 10 mean-field iterations, DeepLab v2's parameters) for
``dlib.crf.DenseCRF`` (input checks included) against the same pydensecrf calls made directly;
goal: ratio <= 1.05. Then images per second of ``dlib.crf.refine_dataset`` over 20+ cached
softmaxes with 1 worker and with every core; goal: >= 1.8x on 2 cores. Uses real VOC images from
``../shared/data`` when present (softmaxes SIMULATED from their labels), synthetic scenes otherwise.

    .venv/bin/python bench/bench_crf.py            # 10 repeats, 24 images
    .venv/bin/python bench/bench_crf.py --quick    # 3 repeats, 20 images
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

from dlib import crf, data

H, W, C = 375, 500, 21


def inputs(n: int) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """n (ids, images, simulated softmaxes) of size 375x500, and where they came from."""
    root = data.shared_voc_root()
    images, probs = {}, {}
    if root is not None:
        for image_id in (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split():
            image = crf.read_image(root / "JPEGImages" / f"{image_id}.jpg")
            if image.shape[:2] != (H, W):
                continue
            label = crf.read_label(root / "SegmentationClass" / f"{image_id}.png")
            images[image_id] = image
            probs[image_id] = crf.simulate_unaries(label, C, seed=len(images))
            if len(images) == n:
                return list(images), images, probs, f"VOC 2012 images from {root} (softmax simulated)"
    for k in range(n):
        image, label = crf.synthetic_scene(H, W, num_objects=4, num_classes=C, seed=k)
        images[f"synthetic{k:03d}"] = image
        probs[f"synthetic{k:03d}"] = crf.simulate_unaries(label, C, seed=k)
    return list(images), images, probs, "synthetic scenes (crf.synthetic_scene; softmax simulated)"


def raw_pydensecrf(image: np.ndarray, probs: np.ndarray, params: dict) -> np.ndarray:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=params["theta_gamma"], compat=params["w2"])
    d.addPairwiseBilateral(sxy=params["theta_alpha"], srgb=params["theta_beta"], rgbim=image, compat=params["w1"])
    return np.array(d.inference(params["iterations"])).reshape(probs.shape)


def time_single(image: np.ndarray, probs: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds per image of the raw call and of the wrapper, interleaved to share any drift."""
    model = crf.DenseCRF()
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
    """Images per second of refine_dataset over cached float16 softmaxes, writing label PNGs."""
    with tempfile.TemporaryDirectory() as tmp:
        for image_id in ids:
            crf.save_probs(Path(tmp) / "probs" / f"{image_id}.npz", probs[image_id])
        t = time.perf_counter()
        crf.refine_dataset(Path(tmp) / "probs", Path(tmp) / "out", images.__getitem__, ids=ids,
                           workers=workers, progress=False)
        return len(ids) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and 20 images")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    repeats, n = (3, 20) if args.quick else (10, 24)
    ids, images, probs, source = inputs(n)
    cores = crf.resolve_workers(0)
    print(f"dense CRF, {H}x{W}, {C} labels, {crf.DenseCRF().params}; {source}; {cores} cores")

    raw, ours = time_single(images[ids[0]], probs[ids[0]], repeats)
    print(f"single image (median of {repeats}): raw pydensecrf {raw:.3f} s, dlib.crf.DenseCRF {ours:.3f} s, "
          f"ratio {ours / raw:.3f} (goal <= 1.05)")
    one = time_batch(ids, images, probs, workers=1)
    every = time_batch(ids, images, probs, workers=0)
    print(f"batch of {len(ids)}: 1 worker {one:.2f} img/s, {cores} workers {every:.2f} img/s, "
          f"speed-up {every / one:.2f}x (goal >= 1.8x on 2 cores)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "source": source, "cores": cores, "repeats": repeats, "images": len(ids),
            "single_raw_s": raw, "single_wrapper_s": ours, "ratio": ours / raw,
            "batch_1_worker_img_per_s": one, "batch_all_workers_img_per_s": every, "speedup": every / one,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
