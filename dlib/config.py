"""Profiles (`smoke`, `cpu`, `gpu`) resolved once into a frozen configuration.

Configuration flows one way:

    paper defaults  ->  profile overrides  ->  explicit overrides  ->  frozen ``Config``

The dataclass defaults below are the papers' values (DeepLab v2, Sec. 4: batch 10, crop 321,
poly power 0.9, momentum 0.9, weight decay 5e-4, 20k iterations, MSC scales {1, 0.75, 0.5},
CRF with w2 = theta_gamma = 3 and 10 mean-field iterations). A profile only changes what must
change to fit a machine (sizes, iterations, data set, model width). Everything else in the
library receives the resolved ``Config`` and never reads a file or an environment variable
for its settings.

    >>> cfg = resolve("smoke", seed=1, overrides={"train.iterations": 3})
    >>> cfg.train.iterations, cfg.profile
    (3, 'smoke')
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Mapping, Sequence

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
    num_classes: int = 21  # PASCAL VOC: background + 20 classes
    pretrained: str | None = "imagenet"  # "imagenet", a local path, or None
    msc_scales: tuple[float, ...] = (1.0, 0.75, 0.5)  # DeepLab v2, Sec. 3.1
    coco_checkpoint: str | None = None  # local COCO-pretrained DeepLab checkpoint (Table 4 "+COCO" rows, gpu)
    width: float = 1.0  # channel multiplier of the small_* models (cpu profile); the paper's models ignore it


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 20000  # DeepLab v2, Sec. 4.1
    batch_size: int = 10
    iter_size: int = 1  # gradient accumulation steps per iteration (global batch = batch_size)
    base_lr: float = 2.5e-4  # ResNet-101 (DeepLab v2 released prototxt); VGG-16 uses 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9  # DeepLab v2, Sec. 4.1: lr = base * (1 - iter/max_iter)^power
    head_lr_mult: float = 10.0  # classifier weights at 10x (Caffe lr_mult)
    head_bias_lr_mult: float = 20.0  # classifier biases at 20x
    backbone_bias_lr_mult: float = 2.0  # backbone biases at 2x, no weight decay (Caffe prototxt)
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    msc: bool = False
    msc_loss: str = "sum"  # "sum" (DeepLab v2 prototxt: a loss on every scale + fusion, summed) or "mean"
    checkpoint_every: int = 1000
    log_every: int = 20


@dataclass(frozen=True)
class CRFConfig:
    # w1, theta_alpha, theta_beta: DeepLab v2's cross-validated values for ResNet-101 on VOC
    # (released config); the project's own cross-validation (notebook 04) may replace them.
    w1: float = 4.0
    theta_alpha: float = 67.0
    theta_beta: float = 3.0
    w2: float = 3.0  # DeepLab v2, Sec. 4.1: fixed
    theta_gamma: float = 3.0  # fixed
    iterations: int = 10  # mean-field iterations
    workers: int = 0  # 0 means all cores
    backend: str = "auto"  # "pydensecrf", "torch" (dlib.crf_torch) or "auto" (pydensecrf when importable)
    normalization: str = "symmetric"  # kernel normalisation (dlib.crf.NORMALIZATIONS), pydensecrf's default
    device: str = "cpu"  # torch backend only: "cpu" or "cuda" (batched over images)


@dataclass(frozen=True)
class EvalConfig:
    msc: bool = False
    flip: bool = False
    max_images: int | None = None  # None: the whole split


@dataclass(frozen=True)
class AblationConfig:
    """The ablation tables (notebook 06): which seeds, how long each row trains, CRF tuning data."""

    seeds: tuple[int, ...] = (0,)  # the paper reports one run per row
    iterations: int | None = None  # None: train.iterations
    coco_iterations: int | None = None  # proxy "COCO" pretraining (cpu/smoke); None: train.iterations
    crf_holdout: int = 100  # training images held out for CRF cross-validation (the paper used 100 images)
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
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Rebuild a Config from :meth:`to_dict` (e.g. in a worker process)."""
        rest = {k: v for k, v in d.items() if k != "profile"}
        return _apply(cls(profile=d.get("profile", "gpu")), _flatten(rest))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A new frozen config with dotted-key overrides applied (``{"train.iterations": 5}``)."""
        return _apply(self, _flatten(overrides))


# What each profile changes from the paper's defaults. `gpu` is the paper itself.
_PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "gpu": {},
    "cpu": {
        "data.dataset": "proxy",
        "data.crop_size": 112,
        "data.eval_pad": 0,
        "data.loader_workers": 0,
        "model.name": "small_resnet_aspp",
        "model.pretrained": None,
        "train.iterations": 1000,
        "train.batch_size": 10,
        "train.base_lr": 1e-2,  # Deviation from paper: small nets trained from scratch need a larger lr
        # Deviation from paper: average the MSC losses (the paper sums them); the sum at lr 1e-2 diverges.
        "train.msc_loss": "mean",
        "train.checkpoint_every": 250,
        "train.log_every": 20,
        "crf.workers": 0,
        # Notebook 06: 10 trainings x 3 seeds must fit the 25-minute cpu budget beside the other notebooks.
        "ablation.seeds": (0, 1, 2),
        # Half-width small models (4x fewer FLOPs, ~4 points lower mIoU than full width in our runs).
        "ablation.width": 0.5,
        "ablation.iterations": 400,
        "ablation.coco_iterations": 400,
        "ablation.crf_holdout": 50,
        "ablation.workers": 2,
    },
    "smoke": {
        "data.dataset": "proxy",
        "data.crop_size": 48,
        "data.eval_pad": 0,
        "data.proxy_image_size": 64,
        "data.proxy_train": 24,
        "data.proxy_val": 8,
        "data.proxy_large_train": 32,
        "data.loader_workers": 0,
        "model.name": "small_resnet_aspp",
        "model.pretrained": None,
        "train.iterations": 4,
        "train.batch_size": 2,
        "train.base_lr": 1e-2,
        "train.msc_loss": "mean",
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "crf.iterations": 2,
        "crf.workers": 1,
        "eval.max_images": 8,
        "ablation.seeds": (0, 1),
        "ablation.iterations": 2,
        "ablation.coco_iterations": 2,
        "ablation.crf_holdout": 6,
        "ablation.workers": 1,
    },
}


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


def profile_overrides(profile: str) -> dict[str, Any]:
    """The dotted-key overrides a profile applies on top of the paper's defaults."""
    _check_profile(profile)
    return dict(_PROFILE_OVERRIDES[profile])


def resolve(profile: str = DEFAULT_PROFILE, *, seed: int = 0,
            overrides: Mapping[str, Any] | None = None) -> Config:
    """Resolve ``profile`` (then ``overrides``, dotted keys or nested dicts) into a frozen Config."""
    _check_profile(profile)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    cfg = _apply(Config(profile=profile, seed=seed), _PROFILE_OVERRIDES[profile])
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
    """Every dotted key an override may name."""
    obj = Config() if obj is None else obj
    keys = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            keys.extend(valid_keys(value, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def _apply(cfg: Config, flat: Mapping[str, Any]) -> Config:
    for dotted, value in flat.items():
        if dotted == "profile":
            raise ValueError("set the profile with resolve(profile=...), not as an override")
        cfg = _set(cfg, dotted.split("."), value, dotted)
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
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        return dataclasses.replace(obj, **{head: value})
    if not is_dataclass(current):
        raise KeyError(f"unknown config key {dotted!r}; valid keys: {', '.join(valid_keys())}")
    return dataclasses.replace(obj, **{head: _set(current, path[1:], value, dotted)})


def pick_device(cfg: Config) -> str:
    """The torch device string this config runs on ("cuda" when available and asked for)."""
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
