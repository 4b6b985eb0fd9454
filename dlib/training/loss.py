"""The training loss: per-pixel softmax cross-entropy at stride 8 (DeepLab v1, Sec. 3.1; MSC: DeepLab v2, Sec. 3.2).

The label is subsampled to the score map by nearest neighbour (the label at each logit's centre), void
(255) is ignored, and each output's loss is the sum over valid pixels divided by the valid pixels of the
whole global batch (so the gradient is the same however the batch is split; dlib.training.train). With multi-scale
inputs (dlib.nets.msc.MSC) there is one loss per scale and one on the max-fused output, summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dlib.core.constants import IGNORE_INDEX
from dlib.nets.msc import labels_at_logits

# (input size the network saw, logit grid) of each output
Layout = list[tuple[tuple[int, int], tuple[int, int]]]


def as_outputs(out: Any, image_size: tuple[int, int]) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """A model's training output as (scores (N, C, h, w), input size the network saw) pairs.

    A plain network gives one pair; :class:`dlib.nets.msc.MSC` gives every scale and the max fusion
    (DeepLab v2, Sec. 3.2: a loss on each). Lists/tuples of tensors count as full-size outputs.
    """
    if isinstance(out, torch.Tensor):
        return [(out, image_size)]
    if hasattr(out, "per_scale") and hasattr(out, "fused"):  # dlib.nets.msc.MSCOutput
        pairs = [(o, tuple(s)) for o, s in zip(out.per_scale, out.input_sizes)]
        return pairs + [(out.fused, tuple(out.image_size))]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)) and all(isinstance(o, torch.Tensor) for o in out):
        return [(o, image_size) for o in out]
    raise TypeError(f"model returned {type(out).__name__}; expected a tensor, dlib.nets.msc.MSCOutput, or a "
                    "list/tuple/dict of tensors")


def subsample_label(label: torch.Tensor, image_size: tuple[int, int], input_size: tuple[int, int],
                    logit_size: Sequence[int]) -> torch.Tensor:
    """(N, H, W) int64 -> (N, h, w): the label at each logit's centre, nearest pixel (DeepLab v1, Sec. 3.1).

    Logit i of a network that saw the image resized to ``input_size`` sits on image pixel
    8i (H-1)/(H_s-1) (corner-aligned resizing, as dlib.nets.msc).
    """
    return labels_at_logits(label, tuple(image_size), tuple(input_size), tuple(logit_size))


def valid_pixel_counts(labels: Sequence[torch.Tensor], image_size: tuple[int, int], layout: Layout) -> torch.Tensor:
    """(outputs,) float64: the labelled (non-void) pixels of every label batch at each output's grid, summed."""
    return torch.tensor([[float((subsample_label(lab, image_size, size, grid) != IGNORE_INDEX).sum())
                          for size, grid in layout] for lab in labels], dtype=torch.float64).sum(0)


def segmentation_loss(outputs: list[tuple[torch.Tensor, tuple[int, int]]], label: torch.Tensor,
                      image_size: tuple[int, int], counts: Sequence[torch.Tensor], *, msc_loss: str = "sum",
                      device: torch.device | None = None) -> torch.Tensor:
    """Sum over outputs of cross-entropy summed over valid pixels / ``counts`` (valid pixels, global batch).

    DeepLab v2 (prototxt): one loss per MSC output, summed ("sum"); "mean" divides by the number of
    outputs so the gradient scale matches single-scale training at the same learning rate.
    """
    device = outputs[0][0].device if device is None else device
    loss = torch.zeros((), device=device)
    weight = 1.0 / len(outputs) if msc_loss == "mean" else 1.0
    for (out, size), count in zip(outputs, counts):
        target = subsample_label(label, image_size, size, tuple(out.shape[-2:])).to(device, non_blocking=True)
        ce = F.cross_entropy(out.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss + ce * (weight / float(count))
    return loss


def loss_terms(msc: bool, msc_scales: Sequence[float], msc_loss: str) -> int:
    """How many losses :func:`segmentation_loss` adds up for a training: one per MSC scale and one for the fusion
    when MSC's losses are summed (DeepLab v2, Sec. 3.2), else one (a plain network, or "mean")."""
    return len(msc_scales) + 1 if msc and msc_loss == "sum" else 1
