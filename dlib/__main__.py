"""Command line: the same profiles and functions the notebooks use.

    python -m dlib train    --profile cpu --out runs/aspp [--set train.iterations=500 ...]
    python -m dlib evaluate --profile cpu --run runs/aspp [--msc] [--flip] [--cache probs/]
    python -m dlib crf      --profile cpu --probs probs/ --out crf/ [--set crf.w1=5]

Several GPUs or machines: ``torchrun --nproc_per_node=N -m dlib train ...`` (DistributedDataParallel;
the global batch stays ``train.batch_size``). Each command has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import DEFAULT_PROFILE, PROFILES, parse_overrides, parse_value, resolve  # noqa: F401


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES,
                        help=f"config profile (default {DEFAULT_PROFILE}): smoke = seconds, cpu = minutes on a "
                             "laptop (proxy data, small models), gpu = the paper's settings")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help="override a config value, repeatable: --set train.iterations=500 --set model.name="
                             "small_resnet_largefov (values are JSON: numbers, true/false/null, [lists])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dlib", description="DeepLab v1/v2 replication: train, "
                                     "evaluate and CRF post-processing with the config profiles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,crf}")

    p = sub.add_parser("train", help="train a model; resumes from the output folder's latest checkpoint",
                       description="Train cfg.model.name on the configured training set (SGD, poly lr; DeepLab v2, "
                                   "Sec. 4.1). Checkpoints and train_log.csv go to --out; running the same command "
                                   "again resumes from the latest checkpoint. Under torchrun: DistributedDataParallel.")
    _common(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints/, train_log.csv)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out")
    p.add_argument("--large", action="store_true",
                   help="train on the large proxy set (the MS-COCO stand-in; proxy data only)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many iterations of this call")

    p = sub.add_parser("evaluate", help="score a trained model on whole images (optionally MSC and flip)",
                       description="Whole-image evaluation: mIoU, pixel accuracy, per-class IoU and the confusion "
                                   "matrix, written under results/<profile>/. --cache writes the softmax of every "
                                   "image for the CRF stage.")
    _common(p)
    p.add_argument("--run", required=True, help="run folder written by 'train', or a checkpoint file")
    p.add_argument("--split", default="val", choices=("train", "val"), help="data split (default val)")
    p.add_argument("--msc", action="store_true", help="multi-scale inputs with max fusion (DeepLab v2, Sec. 3.1)")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--cache", default=None, help="folder for the cached probabilities <id>.npz (float16)")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N images")
    p.add_argument("--name", default=None, help="results folder name (default evaluate_<run folder name>)")

    p = sub.add_parser("crf", help="refine cached probabilities with the fully connected CRF and score them",
                       description="Mean-field inference of the fully connected CRF (DeepLab v2, Sec. 3.3) on every "
                                   "cached <id>.npz of --probs; refined labels go to --out as PNGs, scores under "
                                   "results/<profile>/. CRF parameters: --set crf.w1=4 --set crf.theta_alpha=67 ...")
    _common(p)
    p.add_argument("--probs", required=True, help="folder of cached probabilities (from 'evaluate --cache')")
    p.add_argument("--out", required=True, help="folder for the refined label PNGs")
    p.add_argument("--split", default="val", choices=("train", "val"), help="data split the probabilities are of")
    p.add_argument("--name", default=None, help="results folder name (default crf_<probs folder name>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return {"train": _train, "evaluate": _evaluate, "crf": _crf}[args.command](args, overrides)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    from . import data, train

    dataset = data.build_dataset(cfg, "train", large=args.large)
    result = train.train(cfg, args.out, dataset=dataset, resume=not args.fresh, stop_after=args.stop_after,
                         progress=False if args.no_progress else None)
    last = result.log[-1] if result.log else {}
    print(json.dumps({"out_dir": str(result.out_dir), "iterations": result.iterations,
                      "resumed_from": result.resumed_from, "complete": result.complete,
                      "loss": last.get("loss"), "images_per_s": result.images_per_s,
                      "checkpoint": str(result.checkpoint) if result.checkpoint else None}))
    return 0


def _saved_config(run: Path) -> dict[str, Any]:
    import torch

    from .train import latest_checkpoint

    path = latest_checkpoint(run) if run.is_dir() else run
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run}; expected a run folder written by 'python -m dlib train' "
                                "(with checkpoints/ckpt_*.pt) or a checkpoint file")
    return torch.load(path, map_location="cpu", weights_only=False).get("config", {})


def _evaluate(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from . import data, evaluate, results, train

    run = Path(args.run)
    saved = _saved_config(run)
    if "model.name" not in overrides and saved.get("model", {}).get("name"):
        overrides["model.name"] = saved["model"]["name"]  # evaluate the architecture that was trained
    overrides.setdefault("model.pretrained", None)
    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    model = train.build_model(cfg)
    train.load_weights(model, run)
    dataset = data.build_dataset(cfg, args.split)
    out = results.Results(cfg, args.name or f"evaluate_{run.name}")
    s = evaluate.evaluate(cfg, model, dataset, msc=args.msc, flip=args.flip, cache_dir=args.cache,
                          max_images=args.max_images, results=out, name=f"scores_{args.split}",
                          progress=False if args.no_progress else None)
    print(json.dumps({"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "num_images": s["num_images"],
                      "msc": s["msc"], "flip": s["flip"], "results": str(out.dir)}))
    return 0


def _crf(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import numpy as np

    from . import crf, data, evaluate, results
    from .metrics import confusion_matrix, scores

    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    dataset = data.build_dataset(cfg, args.split)
    index = {name: i for i, name in enumerate(dataset.ids)}
    probs_dir = Path(args.probs)
    ids = sorted(p.stem for p in probs_dir.glob("*.npz"))
    unknown = [i for i in ids if i not in index]
    if unknown:
        raise ValueError(f"{len(unknown)} cached ids are not in the {args.split} split, e.g. {unknown[:3]}; "
                         "use the same --profile/--set and --split as 'evaluate --cache'")
    paths = crf.refine_dataset(probs_dir, args.out, lambda name: np.asarray(dataset[index[name]][0]),
                               crf=crf.DenseCRF.from_config(cfg), ids=ids or None, workers=cfg.crf.workers,
                               progress=not args.no_progress)
    c = cfg.model.num_classes
    conf = np.zeros((c, c), dtype=np.int64)
    for name, path in zip(ids, paths):
        conf += confusion_matrix(crf.read_label(path), np.asarray(dataset[index[name]][1]), c)
    s = scores(conf)
    out_scores = {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "class_iou": list(s["class_iou"]),
                  "confusion": conf, "num_images": len(ids), "msc": None, "flip": None}
    out = results.Results(cfg, args.name or f"crf_{probs_dir.name}")
    evaluate.write_scores(out, f"scores_{args.split}", out_scores, evaluate.class_names(dataset, c))
    out.json("crf_params", crf.DenseCRF.from_config(cfg).provenance)  # parameters, backend and its version
    print(json.dumps({"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "num_images": len(ids),
                      "labels": str(args.out), "results": str(out.dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
