"""Profiles (`smoke`, `cpu`, `gpu`) resolved once into a frozen configuration.

Configuration flows one way:

    paper defaults  ->  profile overrides  ->  explicit overrides  ->  frozen ``Config``

The dataclass defaults below are the papers' values (DeepLab v2, Sec. 4: batch 10, crop 321,
poly power 0.9, momentum 0.9, weight decay 5e-4, 20k iterations, MSC scales {1, 0.75, 0.5},
CRF with w2 = theta_gamma = 3 and 10 mean-field iterations). A profile only changes what must
change to fit a machine (sizes, iterations, data set, model width). Everything else in the
library receives the resolved ``Config`` and never reads a file or an environment variable
for its settings.

Every override (command line, a notebook's ``CONFIG``, the Python API) is converted to its
field's annotated type and checked against its range (:func:`convert_value`, the ``RANGES``
table and a default rule for sizes, counts and intervals); an invalid value raises
:class:`ConfigError`, one line naming the key, what it expects and an example.

    >>> cfg = resolve("smoke", seed=1, overrides={"train.iterations": 3})
    >>> cfg.train.iterations, cfg.profile
    (3, 'smoke')
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dlib.core.config_values import ConfigError, convert
from dlib.core.constants import MSC_SCALES, NUM_CLASSES
from dlib.core.datasets import dataset_info
from dlib.core.profiles import PROFILE_OVERRIDES

PROFILES = ("smoke", "cpu", "gpu")
DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "voc"  # "proxy" (built-in, generated) or "voc" (PASCAL VOC 2012 + SBD)
    voc_root: str | None = None  # VOCdevkit folder, or the VOC2012 folder inside it
    sbd_root: str | None = None  # benchmark_RELEASE folder (SBD)
    train_split: str = "train_aug"  # DeepLab v2, Sec. 4.1: 10,582 train_aug images
    val_split: str = "val"  # 1,449 images
    crop_size: int = 321  # DeepLab v2, Sec. 4.1: 321x321 random crops
    scale_range: tuple[float, float] = (0.5, 1.5)  # DeepLab v2, Table 4 "Aug"
    scale_aug: bool = True
    flip: bool = True
    eval_pad: int = 513  # whole-image evaluation, padded to 513x513
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics (torchvision init)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # "imagenet": RGB, (x/255 - mean)/std with data.mean/data.std (torchvision's ImageNet weights);
    # "caffe": DeepLab's released Caffe models: BGR, 0-255, minus (104.008, 116.669, 122.675) (B, G, R), no
    # std (dlib.data.transforms.CAFFE_MEAN_BGR; data.mean/data.std are not used).
    input_convention: str = "imagenet"
    # Built-in proxy data set (only used when dataset == "proxy").
    proxy_image_size: int = 128
    proxy_train: int = 600
    proxy_val: int = 150
    proxy_large_train: int = 1800  # the larger proxy set standing in for MS-COCO
    proxy_seed: int = 0  # the proxy images are fixed by this seed, not by the training seed
    loader_workers: int = 4


@dataclass(frozen=True)
class ModelConfig:
    name: str = "deeplab_v2_resnet101_aspp"
    num_classes: int = NUM_CLASSES  # PASCAL VOC: background + 20 classes
    pretrained: str | None = "imagenet"  # "imagenet", a local path, or None
    msc_scales: tuple[float, ...] = MSC_SCALES  # DeepLab v2, Sec. 3.2
    coco_checkpoint: str | None = None  # local COCO-pretrained DeepLab checkpoint or released init.caffemodel
    # (Table 4 "+COCO" rows, gpu; a .caffemodel trains those rows with caffe_layout and the Caffe input)
    caffemodel: str | None = None  # a released DeepLab .caffemodel loaded whole (final VOC model; dlib.nets.caffe)
    caffe_layout: bool = False  # the released prototxt's network layout (ResNet-101 strides/dilations, pool5a)
    width: float = 1.0  # channel multiplier of the small_* models (cpu profile); the paper's models ignore it


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 20000  # DeepLab v2, Sec. 4.1
    batch_size: int = 10
    iter_size: int = 1  # gradient accumulation steps per iteration (global batch = batch_size)
    # The base lr is chosen by the model's family, in one place (dlib.training.schedule.base_lr_for): base_lr for
    # ResNet (and small_resnet) models, base_lr_vgg for VGG-16 (and small_vgg) models, wherever a model is trained.
    base_lr: float = 2.5e-4  # ResNet-101 (DeepLab v2 released solver)
    base_lr_vgg: float = 1e-3  # VGG-16 models (DeepLab v1/v2 released solvers, DeepLab v1 Sec. 4.1)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_policy: str = "poly"  # "poly" (DeepLab v2, Sec. 4.1) or "step" (DeepLab v1: x gamma every step_size its)
    poly_power: float = 0.9  # DeepLab v2, Sec. 4.1: lr = base * (1 - iter/max_iter)^power
    warmup: int = 0  # linear lr warm-up over this many iterations (not in the papers: 0)
    # DeepLab v1 (Sec. 4.1; released DeepLab-LargeFOV solver.prototxt: lr_policy "step", gamma 0.1, stepsize 2000,
    # max_iter 6000, batch 20): lr = base * gamma^floor(iter / step_size). Used only with lr_policy="step".
    step_size: int = 2000
    gamma: float = 0.1
    head_lr_mult: float = 10.0  # classifier weights at 10x (Caffe lr_mult)
    head_bias_lr_mult: float = 20.0  # classifier biases at 20x
    backbone_bias_lr_mult: float = 2.0  # backbone biases at 2x, no weight decay (Caffe prototxt)
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # NHWC memory layout for the network and its inputs (dlib.nets.network.to_device)
    msc: bool = False
    msc_loss: str = "sum"  # "sum" (DeepLab v2 prototxt: a loss on every scale + fusion, summed) or "mean"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2  # newest checkpoints kept (0: all, e.g. for a convergence curve)
    log_every: int = 20


@dataclass(frozen=True)
class CRFSetting:
    """One published set of the fully connected CRF's parameters (DeepLab v2, Eq. 3) and where it is written.

    Names as the paper: w1, theta_alpha (px), theta_beta (colour levels) of the appearance kernel; w2,
    theta_gamma (px) of the smoothness kernel. None: the source does not give that value.
    DeepLab's own tools name them bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std.
    """

    name: str
    w1: float | None
    theta_alpha: float | None
    theta_beta: float | None
    w2: float
    theta_gamma: float
    source: str


# The two sources disagree on the smoothness kernel (theta_gamma 3 in the paper's text, 1 in the released
# ResNet-101 settings); notebook 04 measures how much that moves the labels (dlib.crf.tuning.setting_effects).
PAPER_TEXT = CRFSetting(
    "paper_text", None, None, None, 3.0, 3.0,
    "DeepLab v2 (arXiv:1606.00915), Sec. 4.1: 'default values of w2 = 3 and sigma_gamma = 3'; w1, theta_alpha, "
    "theta_beta cross-validated per model on 100 val images (ranges: dlib.crf.crossval.PAPER_SEARCH_RANGES)")
RELEASED_RESNET101 = CRFSetting(
    "released_resnet101", 4.0, 67.0, 3.0, 3.0, 1.0,
    "DeepLab v2 ResNet-101 VOC model page, http://liangchiehchen.com/projects/DeepLabv2_resnet.html: 'bi_w = 4, "
    "bi_xy_std = 67, bi_rgb_std = 3, pos_w = 3, pos_xy_std = 1' (the values kazuto1011/deeplab-pytorch "
    "configs/voc12.yaml uses)")
RELEASED_VGG16 = CRFSetting(
    "released_vgg16", 4.0, 65.0, 3.0, 2.0, 2.0,
    "DeepLab v2 VGG-16 release, as quoted beside the ResNet-101 values in third-party code: 'bi_w = 4, "
    "bi_xy_std = 65, bi_rgb_std = 3, pos_w = 2, pos_xy_std = 2'")
CRF_SETTINGS = {s.name: s for s in (PAPER_TEXT, RELEASED_RESNET101, RELEASED_VGG16)}


@dataclass(frozen=True)
class CRFConfig:
    # The defaults mix two sources (dlib.core.config.CRF_SETTINGS): the appearance kernel w1 = 4, theta_alpha = 67,
    # theta_beta = 3 of the released ResNet-101 VOC settings (the authors' cross-validation), the smoothness
    # kernel w2 = 3, theta_gamma = 3 of the paper's text (the released ResNet-101 settings use theta_gamma = 1).
    # The project's own cross-validation (notebook 04) may replace w1, theta_alpha, theta_beta.
    w1: float = RELEASED_RESNET101.w1
    theta_alpha: float = RELEASED_RESNET101.theta_alpha
    theta_beta: float = RELEASED_RESNET101.theta_beta
    w2: float = PAPER_TEXT.w2  # DeepLab v2, Sec. 4.1: fixed
    theta_gamma: float = PAPER_TEXT.theta_gamma  # DeepLab v2, Sec. 4.1: fixed (released ResNet-101: 1)
    iterations: int = 10  # mean-field iterations
    workers: int = 0  # 0 means all cores
    backend: str = "auto"  # "pydensecrf", "torch" (dlib.crf.meanfield) or "auto" (pydensecrf when importable)
    # Kernel normalisation (dlib.core.constants.NORMALIZATIONS): "symmetric" is pydensecrf's default; "deeplab" is what
    # DeepLab's own densecrf code (Kraehenbuehl's 2011 code) computes, per pixel (pydensecrf's NORMALIZE_AFTER).
    normalization: str = "symmetric"
    device: str = "cpu"  # torch backend only: "cpu" or "cuda" (batched over images)


CRF_DEFAULTS = CRFConfig()  # the one instance the CRF modules take their default parameters from


@dataclass(frozen=True)
class EvalConfig:
    msc: bool = False
    flip: bool = False
    max_images: int | None = None  # None: the whole split
    # "float32" (TF32 off), "bf16" (autocast on the device, CPU included) or "auto": float32 for a released Caffe
    # model (model.caffemodel: the paper's number should not depend on bf16 rounding), else bf16 on CUDA when
    # train.bf16 and float32 on CPU (dlib.evaluation.evaluate.eval_precision).
    precision: str = "auto"


@dataclass(frozen=True)
class AblationConfig:
    """The ablation tables (notebook 06): which seeds, how long each row trains, CRF tuning data."""

    seeds: tuple[int, ...] = (0,)  # the paper reports one run per row
    iterations: int | None = None  # None: train.iterations
    coco_iterations: int | None = None  # proxy "COCO" pretraining (cpu/smoke); None: train.iterations
    # Where each CRF row's w1, theta_alpha, theta_beta are cross-validated: "val100", the paper's protocol (DeepLab
    # v2, Sec. 4.1: 100 val images, which are then also scored), or "heldout_train" (ours: ablation.crf_holdout
    # training images kept out of training; the evaluation images are never touched).
    crf_tune_on: str = "val100"
    crf_holdout: int = 100  # training images held out for CRF cross-validation ("heldout_train")
    workers: int = 1  # trainings run side by side, each in its own process
    width: float | None = None  # channel multiplier of the small models in the ablation; None: model.width


@dataclass(frozen=True)
class Config:
    profile: str = "gpu"
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda when available, else cpu
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Rebuild a Config from :meth:`to_dict` (e.g. in a worker process)."""
        rest = {k: v for k, v in d.items() if k != "profile"}
        return _apply(cls(profile=d.get("profile", "gpu")), _flatten(rest))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, overrides: Mapping[str, Any]) -> Config:
        """A new frozen config with dotted-key overrides applied (``{"train.iterations": 5}``)."""
        return _apply(self, _flatten(overrides))


def parse_value(text: str) -> Any:
    """A --set value: JSON (numbers, true/false/null, lists, quoted strings), Python's True/False/None, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    return {"True": True, "False": False, "None": None, "none": None}.get(text, text)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (e.g. train.iterations=500), got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def resolve(profile: str = DEFAULT_PROFILE, *, seed: int = 0,
            overrides: Mapping[str, Any] | None = None) -> Config:
    """Resolve ``profile`` (then ``overrides``, dotted keys or nested dicts) into a frozen Config."""
    _check_profile(profile)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"config key 'seed' expects an integer >= 0 (e.g. seed=0), got {seed!r}")
    cfg = _apply(Config(profile=profile), {**PROFILE_OVERRIDES[profile], "seed": seed})
    if overrides:
        cfg = _apply(cfg, _flatten(overrides))
    return cfg


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)} "
            "(smoke: seconds, for tests; cpu: the default, minutes on a laptop; gpu: the paper's settings)")


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def valid_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """Every dotted key an override may name (``profile`` is chosen separately, not overridden)."""
    obj = Config() if obj is None else obj
    keys = []
    for f in fields(obj):
        if not prefix and f.name == "profile":
            continue
        value = getattr(obj, f.name)
        if is_dataclass(value):
            keys.extend(valid_keys(value, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def _apply(cfg: Config, flat: Mapping[str, Any]) -> Config:
    for dotted, value in flat.items():
        if dotted == "profile":
            raise ConfigError(
                "'profile' is not an override key: choose it with --profile (command line), the notebook's PROFILE "
                f"parameter, or resolve(profile=...) (Python); valid profiles are {', '.join(PROFILES)}")
        cfg = _set(cfg, dotted.split("."), value, dotted)
    check_config(cfg)
    return cfg


def _set(obj: Any, path: list[str], value: Any, dotted: str) -> Any:
    names = {f.name: f for f in fields(obj)}
    head = path[0]
    if head not in names:
        raise KeyError(f"unknown config key {dotted!r}; valid keys: {', '.join(valid_keys())}")
    current = getattr(obj, head)
    if len(path) == 1:
        if is_dataclass(current):
            raise KeyError(f"config key {dotted!r} is a section; name one of its fields")
        value = convert_value(dotted, value, _field_types(type(obj))[head], example=current)
        return dataclasses.replace(obj, **{head: value})
    if not is_dataclass(current):
        raise KeyError(f"unknown config key {dotted!r}; valid keys: {', '.join(valid_keys())}")
    return dataclasses.replace(obj, **{head: _set(current, path[1:], value, dotted)})


# The allowed values of each key live in dlib.core.config_values; here they are looked up by key.

_TYPE_CACHE: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (``from __future__ import annotations`` makes them text)."""
    if cls not in _TYPE_CACHE:
        _TYPE_CACHE[cls] = typing.get_type_hints(cls)
    return _TYPE_CACHE[cls]


def field_type(dotted: str) -> Any:
    """The annotated type of a dotted key (``"train.msc"`` -> ``bool``)."""
    obj: Any = Config()
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    return _field_types(type(obj))[parts[-1]]


def convert_value(dotted: str, value: Any, tp: Any | None = None, *, example: Any = None) -> Any:
    """``value`` as the type of config key ``dotted`` (its annotation unless ``tp`` is given), range-checked.

    Booleans accept true/false, yes/no, on/off, 1/0 (any case); numbers accept their text; tuples accept lists
    (and a single item for variable-length tuples); ``null``/``none`` only where the field allows None.
    Raises :class:`ConfigError` naming the key, the expected type or range, and an example.
    """
    return convert(dotted, value, field_type(dotted) if tp is None else tp, example=example)


def check_config(cfg: Config) -> Config:
    """Checks that span several keys; raises :class:`ConfigError` naming them."""
    lo, hi = cfg.data.scale_range
    if lo > hi:
        raise ConfigError(f"config key 'data.scale_range' must be [low, high] with low <= high "
                          f"(e.g. data.scale_range=[0.5,1.5]), got {list(cfg.data.scale_range)}")
    expected = dataset_info(cfg.data.dataset).num_classes
    if cfg.model.num_classes != expected:
        raise ConfigError(f"config key 'model.num_classes' is {cfg.model.num_classes} but the {cfg.data.dataset!r} "
                          f"data set has {expected} classes; set model.num_classes={expected}")
    if cfg.model.caffemodel is not None and not (cfg.model.caffe_layout and cfg.data.input_convention == "caffe"):
        raise ConfigError("config key 'model.caffemodel' loads a released Caffe model, which needs its network layout "
                          "and input: set model.caffe_layout=true and data.input_convention=caffe")
    if cfg.train.batch_size % cfg.train.iter_size:
        raise ConfigError(f"config key 'train.batch_size' ({cfg.train.batch_size}) must be divisible by "
                          f"'train.iter_size' ({cfg.train.iter_size}), e.g. train.iter_size=2 with train.batch_size=10")
    if cfg.ablation.workers > 1 and cfg.data.loader_workers > 0:
        # The ablation's training processes are a multiprocessing pool's (daemonic) workers, which cannot start
        # the DataLoader's worker processes.
        raise ConfigError(f"config keys 'ablation.workers' ({cfg.ablation.workers}) and 'data.loader_workers' "
                          f"({cfg.data.loader_workers}) cannot both use processes: set ablation.workers=1 (trainings "
                          "one after another, each with its loader workers) or data.loader_workers=0")
    return cfg


def pick_device(cfg: Config) -> str:
    """The torch device string this config runs on ("cuda" when available and asked for)."""
    import torch

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is {cfg.device!r} but no CUDA GPU is available here "
                          "(torch.cuda.is_available() is False); set device=cpu or device=auto")
    if cfg.device != "auto":
        return cfg.device

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_cpus() -> int:
    """The number of cores this process may run on (its CPU affinity, else ``os.cpu_count()``): the one count of
    usable cores, for trainings side by side, CRF pools and data loaders."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
