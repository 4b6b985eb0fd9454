"""Command line: the same profiles and functions the notebooks use.

    python -m dlib train    --profile cpu --out runs/aspp [--set train.iterations=500 ...]
    python -m dlib evaluate --profile cpu --run runs/aspp [--msc] [--flip] [--cache probs/]
    python -m dlib evaluate --profile gpu --caffemodel train_iter_20000.caffemodel --msc --cache probs/
    python -m dlib crf      --profile cpu --probs probs/ --out crf/ [--set crf.w1=5]
    python -m dlib pretrain imagenet|coco   (rebuild the cpu profile's shipped stand-in weights)
    python -m dlib download voc|sbd|weights [--root DIR] [--from-file PATH]
    python -m dlib doctor   [--profile gpu] [--root DIR]   (checklist of a gpu set-up: data, weights, GPU)

Several GPUs or machines: ``torchrun --nproc_per_node=N -m dlib train ...`` (DistributedDataParallel;
the global batch stays ``train.batch_size``). Each command has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlib.core.config import DEFAULT_PROFILE, PROFILES, parse_overrides, resolve
from dlib.core.errors import USER_ERRORS, one_line
from dlib.core.io import atomic_write_text, read_json
from dlib.tools import identity


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES,
                        help=f"config profile (default {DEFAULT_PROFILE}): smoke = seconds, cpu = minutes on a "
                             "laptop (proxy data, small models), gpu = the paper's settings")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help="override a config value, repeatable: --set train.iterations=500 --set model.name="
                             "small_resnet_largefov (each value is converted to the key's type and range-checked: "
                             "numbers, true/false/yes/no/on/off/1/0, null, [lists] or a,b,c)")
    _no_progress(parser)


def _no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress line")


# Each subcommand: its one-line help, its --help description, and whether it takes --profile/--seed/--set.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "train": (
        "train a model; resumes from the output folder's latest checkpoint",
        "Train cfg.model.name on the configured training set (SGD, poly lr; DeepLab v2, Sec. 4.1; --set "
        "train.lr_policy=step for DeepLab v1's step schedule). The base lr follows the model's family: train.base_lr "
        "(ResNet), train.base_lr_vgg (VGG-16). Checkpoints and train_log.csv go to --out; running the same command "
        "again resumes from the latest checkpoint. Under torchrun: DistributedDataParallel.",
        True),
    "evaluate": (
        "score a trained model on whole images (optionally MSC and flip)",
        "Whole-image evaluation: mIoU, pixel accuracy, per-class IoU and the confusion matrix, written under "
        "results/<profile>/. --cache writes the softmax of every image for the CRF stage.",
        True),
    "crf": (
        "refine cached probabilities with the fully connected CRF and score them",
        "Mean-field inference of the fully connected CRF (DeepLab v2, Sec. 3.3) on every cached <id>.npz of --probs; "
        "refined labels go to --out as PNGs, scores under results/<profile>/. CRF parameters: --set crf.w1=4 --set "
        "crf.theta_alpha=67 ...",
        True),
    "pretrain": (
        "rebuild the cpu profile's pretrained stand-ins (dlib/weights/)",
        "Train the stand-ins the cpu profile fine-tunes from (dlib.nets.standins): 'imagenet' (each small backbone on "
        "a pretext task; run first), 'coco' (the whole model per Table-4 head, from the ImageNet stand-in, on the "
        "larger proxy set) or 'control' (the +COCO row's model pretrained as 'coco' on the task's own images). Writes "
        "dlib/weights/<name>.pt and its card <name>.pt.json. Resumes when interrupted; deterministic for a given "
        "thread count.",
        False),
    "download": (
        "fetch PASCAL VOC 2012, SBD or the weights: resumable, checksum verified, extracted safely",
        "Resumable HTTP download (a .part file continued with Range requests), the published md5 checked before "
        "extraction, members extracted only inside --root. 'voc': VOCdevkit/VOC2012. 'sbd': benchmark_RELEASE, "
        "cls/*.mat converted to index-coded PNGs (dataset/SegmentationClassAug); with both present, "
        "VOC2012/ImageSets/Segmentation/train_aug.txt (10,582 ids). 'weights': torchvision's ImageNet "
        "ResNet-101/VGG-16 (into torch.hub's cache unless --root) and DeepLab's released Caffe models (no checksum "
        "published: their sha256 is recorded in --root/checksums.json). Then run: python -m dlib doctor",
        False),
    "doctor": (
        "check a gpu set-up: data, labels, splits, weights, GPU, CRF",
        "Prints a checklist (✓/✗ with a fix per failed line): 10,582 train_aug and 1,449 val ids, every image and "
        "label present, labels index-coded (0..20, 255 void), SBD readable, weights present with matching checksums, "
        "GPU and bf16, a CRF backend. Exit status 1 when a required check fails.",
        True),
}


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder (checkpoints/, train_log.csv)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out")
    p.add_argument("--large", action="store_true",
                   help="train on the large proxy set (the MS-COCO stand-in; proxy data only)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many iterations of this call")


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run folder written by 'train', or a checkpoint file")
    p.add_argument("--caffemodel", default=None,
                   help="a released DeepLab .caffemodel instead of --run (same as --set model.caffemodel=PATH; sets "
                        "model.caffe_layout=true and data.input_convention=caffe unless given; dlib.nets.caffe)")
    p.add_argument("--split", default="val", choices=("train", "val"), help="data split (default val)")
    p.add_argument("--msc", action="store_true", help="multi-scale inputs with max fusion (DeepLab v2, Sec. 3.2)")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--cache", default=None, help="folder for the cached probabilities <id>.npz (float16)")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N images")
    p.add_argument("--name", default=None, help="results folder name (default evaluate_<run folder name>)")


def _crf_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probs", required=True, help="folder of cached probabilities (from 'evaluate --cache')")
    p.add_argument("--out", required=True, help="folder for the refined label PNGs")
    p.add_argument("--split", default="val", choices=("train", "val"), help="data split the probabilities are of")
    p.add_argument("--name", default=None, help="results folder name (default crf_<probs folder name>)")


def _pretrain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=("imagenet", "coco", "control"))
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="some stand-ins only (imagenet: small_resnet small_vgg; coco, control: the model names)")
    _no_progress(p)


def _download_options(p: argparse.ArgumentParser) -> None:
    from dlib.tools.download import DEFAULT_WEIGHTS, WEIGHT_NAMES

    p.add_argument("what", choices=("voc", "sbd", "weights"))
    p.add_argument("--root", default=None,
                   help="target folder (default: <repo>/.cache/datasets for voc/sbd, <repo>/.cache/weights for the "
                        "Caffe models; $DLIB_CACHE_DIR moves both)")
    p.add_argument("--from-file", default=None, metavar="PATH",
                   help="verify and use an archive you downloaded by hand instead of fetching it")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", choices=WEIGHT_NAMES,
                   help=f"weights: which ({', '.join(WEIGHT_NAMES)}; default {' '.join(DEFAULT_WEIGHTS)})")
    _no_progress(p)


def _doctor_options(p: argparse.ArgumentParser) -> None:
    p.set_defaults(profile="gpu")
    p.add_argument("--root", default=None, help="where 'download' put the data, used when data.voc_root / "
                                                "data.sbd_root are not set (default <repo>/.cache/datasets)")
    p.add_argument("--weights-root", default=None, help="where 'download weights' put the Caffe models "
                                                        "(default <repo>/.cache/weights)")
    p.add_argument("--only", nargs="+", default=None, metavar="PART", choices=("data", "weights", "gpu", "crf"),
                   help="check only these parts: data weights gpu crf")
    p.add_argument("--label-sample", type=int, default=300, metavar="N",
                   help="read the pixel values of N labels spread over the splits (every label's mode is "
                        "checked; default 300, 0 = all)")


OPTIONS = {"train": _train_options, "evaluate": _evaluate_options, "crf": _crf_options, "pretrain": _pretrain_options,
           "download": _download_options, "doctor": _doctor_options}



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dlib", description="DeepLab v1/v2 replication: train, "
                                     "evaluate and CRF post-processing with the config profiles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,crf,pretrain,download,doctor}")

    for name, (summary, description, common) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=description)
        if common:
            _common(p)
        OPTIONS[name](p)
    return parser

def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "download":
        return _download(args)
    try:
        overrides = parse_overrides(args.overrides)
        return {"train": _train, "evaluate": _evaluate, "crf": _crf, "doctor": _doctor}[args.command](args, overrides)
    except USER_ERRORS as err:  # one line naming the key or file and the fix (dlib.core.errors); bugs keep a traceback
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def _print_json(record: dict[str, Any]) -> None:
    """The command's last line: one JSON object (NaN, which JSON has not, written as null)."""
    from dlib.experiments.results import jsonable

    print(json.dumps(jsonable(record), allow_nan=False))


def _check_folder_arg(flag: str, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{flag} is empty: give a folder, e.g. {flag} runs/aspp (an empty path would be the "
                         "current folder)")


def _pretrain(args: argparse.Namespace) -> int:
    from dlib.experiments import pretrain
    from dlib.nets import standins

    names = {"imagenet": standins.FAMILIES, "coco": standins.COCO_MODELS, "control": standins.CONTROL_MODELS}[args.task]
    unknown = [n for n in args.only or () if n not in names]
    if unknown:
        print(f"error: unknown {args.task} stand-in {unknown}; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    build = {"imagenet": pretrain.pretrain_imagenet, "coco": pretrain.pretrain_coco,
             "control": pretrain.pretrain_control}[args.task]
    for name in args.only or names:
        path = build(name, progress=not args.no_progress)
        _print_json(json.loads(standins.card_path(path).read_text())["final_scores"] | {"file": str(path)})
    return 0


def _download(args: argparse.Namespace) -> int:
    from dlib.tools import download, fetch

    progress = not args.no_progress
    if args.only and args.what != "weights":
        print("error: --only names weights; use it with 'download weights'", file=sys.stderr)
        return 2
    try:
        if args.what == "weights":
            got = download.download_weights(args.only or download.DEFAULT_WEIGHTS, args.root,
                                            from_file=args.from_file, progress=progress)
            _print_json({name: str(path) for name, path in got.items()})
            return 0
        root = Path(args.root) if args.root else download.data_root()
        get = download.download_voc if args.what == "voc" else download.download_sbd
        get(root, from_file=args.from_file, progress=progress)
        voc, sbd = root / "VOCdevkit", root / "benchmark_RELEASE"
        both = voc.is_dir() and sbd.is_dir()
        _print_json({"voc_root": str(voc) if voc.is_dir() else None,
                          "sbd_root": str(sbd) if sbd.is_dir() else None,
                          "next": (f"python -m dlib doctor --root {root}  (train/evaluate: --set data.voc_root={voc} "
                                   f"--set data.sbd_root={sbd})") if both else
                          f"python -m dlib download {'sbd' if args.what == 'voc' else 'voc'} --root {root}"})
        return 0
    except (fetch.DownloadError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _doctor(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from dlib.tools import doctor

    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    checks = doctor.run_checks(cfg, root=args.root, weights_root=args.weights_root, parts=args.only,
                               label_sample=args.label_sample or None, progress=not args.no_progress)
    print(doctor.format_checklist(checks))
    return doctor.exit_code(checks)


def _train(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    _check_folder_arg("--out", args.out)
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after expects an integer >= 1 (iterations of this call), got {args.stop_after}; "
                         "leave it out to train to train.iterations")
    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    from dlib import data
    from dlib.training import schedule, train

    dataset = data.build_dataset(cfg, "train", large=args.large)
    result = train.train(cfg, args.out, dataset=dataset, resume=not args.fresh, stop_after=args.stop_after,
                         progress=False if args.no_progress else None)
    last = result.log[-1] if result.log else {}
    _print_json({"out_dir": str(result.out_dir), "model": cfg.model.name, "base_lr": schedule.base_lr_for(cfg),
                      "lr_policy": cfg.train.lr_policy, "iterations": result.iterations,
                      "resumed_from": result.resumed_from, "complete": result.complete,
                      "loss": last.get("loss"), "images_per_s": result.images_per_s,
                      "checkpoint": str(result.checkpoint) if result.checkpoint else None})
    return 0


def _saved_checkpoint(run: Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint file, its state): the newest intact checkpoint of a run folder, or the file given."""
    from dlib.core.checkpoint import load_latest_checkpoint, read_checkpoint

    if run.is_dir():
        found = load_latest_checkpoint(run)
        if found is not None:
            return found
    elif run.is_file():
        return run, read_checkpoint(run)
    raise FileNotFoundError(f"no checkpoint in {run}; expected a run folder written by 'python -m dlib train' "
                            "(with checkpoints/ckpt_*.pt) or a checkpoint file")


def _evaluate(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from dlib import data
    from dlib.evaluation import evaluate
    from dlib.experiments import results
    from dlib.nets import network

    if args.cache is not None:
        _check_folder_arg("--cache", args.cache)
    caffemodel = args.caffemodel or overrides.get("model.caffemodel")
    if (args.run is None) == (caffemodel is None):
        raise ValueError("evaluate needs exactly one model: --run (a run folder or checkpoint) or --caffemodel "
                         "(a released DeepLab .caffemodel)")
    if caffemodel is not None:
        # A released Caffe model: its network layout and input convention (dlib.nets.caffe), no other weights.
        overrides = {"model.caffe_layout": True, "data.input_convention": "caffe", **overrides,
                     "model.caffemodel": caffemodel, "model.pretrained": None}
        path, run = Path(caffemodel), Path(caffemodel).with_suffix("")
        iteration = None
    else:
        run = Path(args.run)
        path, saved = _saved_checkpoint(run)
        overrides = identity.model_overrides(path, saved, overrides)  # evaluate the architecture that was trained
        iteration = saved.get("iteration")
        overrides.setdefault("model.pretrained", None)
    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    model = network.build(cfg)
    if caffemodel is None:
        network.load_weights(model, path)
    else:
        precision = network.PRECISION_NAMES[evaluate.eval_precision(cfg)]
        print(f"{model.load_report.summary()}; evaluated in {precision} (eval.precision)", file=sys.stderr)
    dataset = data.build_dataset(cfg, args.split)
    max_images = cfg.eval.max_images if args.max_images is None else args.max_images
    truncated = max_images if max_images is not None and max_images < len(dataset) else None
    out = results.Results(cfg, args.name or f"evaluate_{run.name}")
    source = path if caffemodel is not None else run  # the run folder (or checkpoint file) given, or the caffemodel
    out.identity = {"run": str(source.resolve()), "checkpoint": str(path.resolve()), "iteration": iteration,
                    "split": args.split, "msc": args.msc, "flip": args.flip, "max_images": truncated}
    name = identity.scores_name(args.split, msc=args.msc, flip=args.flip, max_images=truncated)
    s = evaluate.evaluate(cfg, model, dataset, msc=args.msc, flip=args.flip, cache_dir=args.cache,
                          max_images=max_images, results=out, name=f"{name}_{identity.source_key(source, iteration)}",
                          progress=False if args.no_progress else None)
    if args.cache:  # what made the cached probabilities: crf keys its scores by it
        atomic_write_text(Path(args.cache) / identity.PROBS_SOURCE, json.dumps(out.identity, indent=2) + "\n")
    _print_json({"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "num_images": s["num_images"],
                 "msc": s["msc"], "flip": s["flip"], "precision": s["precision"], "checkpoint": str(path),
                 "results": str(out.dir)})
    return 0


def _crf(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from dlib import data
    from dlib.crf.dense import DenseCRF
    from dlib.crf.tuning import refine_and_score
    from dlib.evaluation import evaluate
    from dlib.experiments import results

    _check_folder_arg("--out", args.out)
    _check_folder_arg("--probs", args.probs)
    cfg = resolve(args.profile, seed=args.seed, overrides=overrides)
    dataset = data.build_dataset(cfg, args.split)
    probs_dir = Path(args.probs)
    model_crf = DenseCRF.from_config(cfg)
    s = refine_and_score(probs_dir, args.out, dataset, crf=model_crf, num_classes=cfg.model.num_classes,
                         workers=cfg.crf.workers, progress=not args.no_progress)
    out = results.Results(cfg, args.name or f"crf_{probs_dir.name}")
    source = read_json(probs_dir / identity.PROBS_SOURCE, default=None)  # the run evaluate --cache recorded, if any
    out.identity = {"probs": str(probs_dir.resolve()), "probs_source": source, "split": args.split,
                    "crf": dict(model_crf.params)}
    name = f"{identity.scores_name(args.split, crf=model_crf.params)}_{identity.source_key(probs_dir, extra=source)}"
    evaluate.write_scores(out, name, {**s, "msc": None, "flip": None},
                          evaluate.class_names(dataset, cfg.model.num_classes))
    out.json("crf_params", model_crf.provenance)  # parameters, backend and its version
    _print_json({"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "num_images": s["num_images"],
                      "labels": str(args.out), "results": str(out.dir)})
    return 0

