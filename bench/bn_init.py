"""A stand-in for ImageNet weights where none can be downloaded (the GPU check machine has no network).

DeepLab's ResNet-101 keeps batch normalisation frozen (DeepLab v2, Sec. 4.1): with ImageNet weights its
statistics normalise every layer. From a random initialisation the frozen statistics are 0 and 1, so nothing
is normalised and the activations grow block by block until the loss overflows. This module measures the
statistics instead: one pass over some batches with the BN layers in training mode (cumulative averages),
then frozen again. Only for benchmarks and the end-to-end GPU check, never for reported mIoU.

    python bench/bn_init.py MODEL OUT.pt [--size 321] [--batches 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Set every BatchNorm's running mean/var to the statistics of ``batches`` (N, 3, H, W); returns ``model``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
        m.train()
    for x in batches:
        model(x)
    for m in bns:
        m.momentum = 0.1
        m.eval()
    model.train(was_training)  # frozen-BN models put their BN layers back in eval mode here
    return model


def main(argv=None) -> int:
    from dlib.nets import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = models.build(args.model).to(device)
    calibrate_bn(model, (torch.randn(8, 3, args.size, args.size, device=device) for _ in range(args.batches)))
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}}, args.out)
    print(f"wrote {args.out}: {args.model} with batch-norm statistics measured on {args.batches} random batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
