"""Atrous Spatial Pyramid Pooling as in DeepLab v2 (TPAMI 2018, Sec. 3.2, Fig. 4 and Fig. 7).

ASPP probes the same feature map with parallel atrous filters at several rates r and **sums** the
per-branch class scores (DeepLab v2, Sec. 3.2: "the features extracted for each sampling rate are
further processed in separate branches and fused"; the released prototxt fuses with an Eltwise SUM):

    score(x) = sum_r  f_r(x),   f_r = branch at rate r

* VGG-16 ASPP (DeepLab v2, Fig. 7): each branch is fc6 (3x3, rate r, 1024) -> ReLU -> dropout ->
  fc7 (1x1, 1024) -> ReLU -> dropout -> fc8 (1x1, classes). ASPP-S: r = 2, 4, 8, 12; ASPP-L: 6, 12, 18, 24.
* ResNet-101 ASPP (released prototxt "fc1_voc12_c0..c3"): each branch is one 3x3 atrous convolution
  2048 -> classes, rates 6, 12, 18, 24.
* DeepLab-LargeFOV is the single-branch case (one 3x3 fc6 at rate 12, DeepLab v1 Table 2), and the
  DeepLab v1 field-of-view variants are single branches with a 7x7 or 4x4 fc6.

This is **not** torchvision's DeepLab v3 ASPP (batch norm, image pooling, concatenation).
Notebook 03 explains it with a figure of what each branch sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlib.nets.atrous import kernel_span


class NativeCPUConv2d(nn.Conv2d):
    """nn.Conv2d computed as im2col + matrix product on CPU when gradients are needed (same result).

    Workaround, not a paper detail: with torch 2.14 on CPU, oneDNN's backward pass of a large dilated
    7x7 convolution (DeepLab v1's 7x7 fc6, 512 -> 4096 at rate 4) on batches > 1 takes minutes
    instead of seconds (measured here: 39 s vs 0.5 s for 2x512x14x14 -> 3072 channels). Unfolding the
    dilated 7x7 windows and multiplying by the (out, in*7*7) weight matrix, i.e. computing fc6 as the
    fully connected layer it was, keeps forward and backward on plain matrix products.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            return super().forward(x)
        n, _, h, w = x.shape
        # (N, C*k*k, L) windows of the padded input, L = h*w output positions (size-preserving padding).
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        out = self.weight.flatten(1) @ cols  # (N, out, L)
        if self.bias is not None:
            out = out + self.bias[:, None]
        h_out = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        w_out = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        return out.view(n, self.out_channels, h_out, w_out)


def _atrous_conv(in_ch: int, out_ch: int, kernel_size: int, rate: int) -> nn.Conv2d:
    """k x k convolution at ``rate`` padded to keep the spatial size (needs rate*(k-1) even)."""
    span = kernel_span(kernel_size, rate)  # r*(k-1)+1 inputs per axis (DeepLab v2, Eq. 1)
    if (span - 1) % 2:
        raise ValueError(f"a {kernel_size}x{kernel_size} filter at rate {rate} spans {span} inputs, an even "
                         "number, so it cannot be centred; use an even rate with even kernels")
    conv = NativeCPUConv2d if kernel_size >= 7 and rate > 1 else nn.Conv2d
    return conv(in_ch, out_ch, kernel_size, padding=(span - 1) // 2, dilation=rate)


class ClassifierBranch(nn.Module):
    """One atrous convolution straight to class scores: (N, C_in, h, w) -> (N, classes, h, w).

    The ResNet-101 ASPP branch ("fc1_voc12_c*" in the released prototxt).
    """

    def __init__(self, in_channels: int, num_classes: int, *, rate: int, kernel_size: int = 3):
        super().__init__()
        self.rate, self.kernel_size = rate, kernel_size
        self.conv = _atrous_conv(in_channels, num_classes, kernel_size, rate)

    @property
    def classifier(self) -> nn.Conv2d:
        return self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FCBranch(nn.Module):
    """fc6 (k x k, rate r) -> ReLU -> dropout -> fc7 (1x1) -> ReLU -> dropout -> fc8 (1x1, classes).

    The VGG-16 head of DeepLab v1 (fc6/fc7 are VGG's fully connected layers made convolutional) and
    one branch of the VGG-16 ASPP (DeepLab v2, Fig. 7). (N, C_in, h, w) -> (N, classes, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, *, rate: int, hidden: int = 1024,
                 kernel_size: int = 3, dropout: float = 0.5):
        super().__init__()
        self.rate, self.kernel_size = rate, kernel_size
        self.fc6 = _atrous_conv(in_channels, hidden, kernel_size, rate)
        self.fc7 = nn.Conv2d(hidden, hidden, 1)
        self.fc8 = nn.Conv2d(hidden, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        # Caffe's Dropout layer drops single activations (not whole channels), like nn.Dropout.
        self.drop = nn.Dropout(dropout)

    @property
    def classifier(self) -> nn.Conv2d:
        return self.fc8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return self.fc8(x)


class ASPP(nn.Module):
    """Parallel atrous branches whose class scores are summed (DeepLab v2, Sec. 3.2, Fig. 4).

    One branch per rate; a single rate gives DeepLab-LargeFOV (or the v1 field-of-view variants).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int], *, hidden: int | None = None,
                 kernel_size: int = 3, dropout: float = 0.5):
        super().__init__()
        rates = tuple(int(r) for r in rates)
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"rates must be a non-empty sequence of integers >= 1, got {rates!r}")
        self.rates = rates
        if hidden is None:
            branches = [ClassifierBranch(in_channels, num_classes, rate=r, kernel_size=kernel_size) for r in rates]
        else:
            branches = [FCBranch(in_channels, num_classes, rate=r, hidden=hidden, kernel_size=kernel_size,
                                 dropout=dropout) for r in rates]
        self.branches = nn.ModuleList(branches)

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-branch class scores f_r(x), each (N, classes, h, w)."""
        return [branch(x) for branch in self.branches]

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The layers the paper initialises at random and trains at 10x / 20x the base rate: each branch's
        classifier (fc8, or the 3x3 classifier of a ResNet head). With ``branches`` and :meth:`branch_outputs`,
        what every DeepLab head answers (dlib.training.schedule.parameter_roles, :func:`branch_gradient_maps`)."""
        return [p for branch in self.branches for p in branch.classifier.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """DeepLab v2, Sec. 3.2: f(x) = sum over the rates r of f_r(x), (N, C_in, h, w) -> (N, classes, h, w)."""
        out = self.branches[0](x)  # f_r(x) of the first rate
        for branch in self.branches[1:]:  # every other rate r in R
            out = out + branch(x)  # + f_r(x)
        return out


def branch_gradient_maps(model: nn.Module, image: torch.Tensor,
                         position: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Effective receptive field of each ASPP branch: |d score / d image| for one output unit.

    ``model`` has ``backbone`` and an :class:`ASPP` ``head``; ``image`` is (3, H, W) or (1, 3, H, W).
    For branch b, the sum of its class scores at feature ``position`` (default: the centre) is
    differentiated with respect to the image; the map returned is the absolute gradient summed over
    colour channels, (H, W). Nonzero only inside the branch's theoretical receptive field.
    Run on a model in eval mode (dropout off) for a deterministic map.
    """
    head = getattr(model, "head", None)
    if not callable(getattr(head, "branch_outputs", None)):
        raise TypeError("branch_gradient_maps needs a DeepLab model whose head has branches (model.head, e.g. an "
                        f"ASPP); got head {type(head).__name__}")
    x = image if image.dim() == 4 else image.unsqueeze(0)
    if x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    x = x.detach().clone().requires_grad_(True)
    features = model.backbone(x)  # (1, C, h, w)
    h, w = features.shape[-2:]
    i, j = position if position is not None else (h // 2, w // 2)
    maps = []
    for b, branch in enumerate(head.branches):
        score = branch(features)[0, :, i, j].sum()
        (grad,) = torch.autograd.grad(score, x, retain_graph=b < len(head.branches) - 1)
        maps.append(grad[0].abs().sum(0).numpy())
    return maps


def valid_tap_fraction(size: int, rate: int, kernel_size: int = 3) -> float:
    """Share of a k x k atrous filter's taps that land inside a size x size feature map (not padding).

    Averaged over all output positions. Per axis, tap t of output i reads i + rate*(t - (k-1)/2);
    the two axes are independent, so the 2-D share is the square of the 1-D one. A rate at least as
    large as the map leaves only the centre tap (share 1/k^2): the filter degenerates to 1x1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    half = (kernel_size - 1) / 2
    i = np.arange(size)[:, None]
    taps = i + rate * (np.arange(kernel_size)[None, :] - half)
    share_1d = ((taps >= 0) & (taps <= size - 1)).mean()
    return float(share_1d ** 2)
