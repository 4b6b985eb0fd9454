"""What each profile changes from the papers' defaults (the defaults are dlib.core.config's dataclasses).

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
        "model.pretrained": "imagenet",  # the shipped ImageNet stand-in (dlib.nets.standins)
        "model.coco_checkpoint": "coco",  # the shipped COCO stand-in of the model being trained
        # Deviation from paper (batch 10, 20,000 iterations, base lr 2.5e-4 ResNet / 1e-3 VGG, no warm-up): batch 8
        # for 600 iterations at base lr 1e-2 after a 100-iteration linear warm-up, every row. Chosen on the
        # development split (channels_last, the committed stand-ins) by the convergence criterion (the last fifth
        # adds under a point): batch 4 for 1,000 iterations at 5e-3 left a jump in every last fifth as the rate
        # fell (baseline +3.3/+0.9/+1.4 on seeds 0-2; 1,500 iterations +3.1/+2.7), batch 8 for 600 iterations
        # did not (baseline +0.8/+0.7 at 5e-3, -0.2/+0.2 at 1e-2; +MSC +0.9 at 5e-3, +0.7 at 1e-2, seed 0) for
        # about 1.15x the compute. The VGG shape still climbs (ASPP-L +1.8 at 5e-3, +3.6 at 1e-2): notebook 06
        # measures it. The budget (notebook 05) allows about this much for every row in the hour.
        "train.iterations": 600,
        "train.batch_size": 8,
        "train.base_lr": 1e-2,
        "train.base_lr_vgg": 1e-2,
        "train.warmup": 100,
        "train.msc_loss": "sum",
        "train.checkpoint_every": 120,  # a fifth of the run: the convergence criterion compares 80% with 100%
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
