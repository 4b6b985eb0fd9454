"""What each profile changes from the papers' defaults (the defaults are dlib.config's dataclasses).

`gpu` is the papers' own settings; `cpu` fits a 2-core laptop (the proxy data set, small networks with their
stand-in weights, the reported test split); `smoke` runs every notebook in seconds for the tests. A profile only
changes what must change to fit a machine; each deviation from the paper carries its reason beside it.
"""

from __future__ import annotations

from typing import Any

# What each profile changes from the paper's defaults. `gpu` is the paper itself.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "gpu": {},
    "cpu": {
        "data.dataset": "proxy",
        # Proxy images of 176 px, crops of 129 = 8*16+1 px (the paper: ~500 px, 321 = 8*40+1): 17x17 score maps,
        # 9x9 at MSC scale 0.5 (DeepLab v2: 41x41 and 21x21).
        "data.proxy_image_size": 176,
        "data.crop_size": 129,
        "data.val_split": "test",  # reported on the test split; designed on "val" (the development split)
        "data.eval_pad": 0,
        "data.loader_workers": 0,
        "model.name": "small_resnet_aspp",
        "model.pretrained": "imagenet",  # the shipped ImageNet stand-in (dlib.standins)
        "model.coco_checkpoint": "coco",  # the shipped COCO stand-in of the model being trained
        # Deviation from paper (batch 10, 20,000 iterations, base lr 2.5e-4 ResNet / 1e-3 VGG, no warm-up): batch 4
        # for 1,000 iterations at base lr 5e-3 after a 100-iteration linear warm-up, every row. Measured on the
        # development split (seed 0, 1,200 iterations, the colour-aware ImageNet stand-in): the baseline's last fifth
        # added 1.4 points at 5e-3 against 3.2 at 1e-2, +MSC's 2.8; batch 8 at 145 px cost twice as much per
        # iteration. The budget (notebook 05) allows about 1,000 iterations for every row in the hour.
        "train.iterations": 1000,
        "train.batch_size": 4,
        "train.base_lr": 5e-3,
        "train.base_lr_vgg": 5e-3,
        "train.warmup": 100,
        "train.msc_loss": "sum",
        "train.checkpoint_every": 200,  # a fifth of the run: the convergence criterion compares 80% with 100%
        "train.log_every": 20,
        "crf.workers": 0,
        "ablation.seeds": (0, 1, 2),
        "ablation.crf_tune_on": "heldout_train",
        "ablation.crf_holdout": 30,
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
        "data.val_split": "test",
        "data.loader_workers": 0,
        "model.name": "small_resnet_aspp",
        "model.pretrained": "imagenet",
        "model.coco_checkpoint": "coco",
        "train.iterations": 4,
        "train.batch_size": 2,
        "train.base_lr": 1e-2,
        "train.base_lr_vgg": 1e-2,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "crf.iterations": 2,
        "crf.workers": 1,
        "eval.max_images": 8,
        "ablation.seeds": (0, 1),
        "ablation.iterations": 5,  # five checkpoints: the convergence curve has one at 80%
        "ablation.coco_iterations": 2,
        "ablation.crf_tune_on": "heldout_train",
        "ablation.crf_holdout": 6,
        "ablation.workers": 1,
    },
}
