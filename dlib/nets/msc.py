"""Multi-scale inputs with max fusion, "MSC" (DeepLab v2, Sec. 3.2 and Sec. 4.1, Table 4).

The same network (shared weights) scores the image at scales s in {1, 0.75, 0.5}; the score maps
are brought to the scale-1 logit grid and fused by taking, at each position and for each class,
the maximum over scales:

    score(x) = max_s  R_s( f(D_s(x)) )      D_s: resize the image by s,  R_s: resize the scores back

DeepLab v2 fuses "both during training and testing" (Sec. 3.2); its released training prototxt puts
a softmax loss on every scale's output and on the fused one, which :func:`msc_loss` does. At test
time only the fused scores are used. The fusion is done on the scale-1 logit grid (stride 8), as in
the released prototxt, rather than at full image resolution.

Resizing the image follows Caffe's Interp layer used by DeepLab: an n-pixel side becomes (n-1)*s + 1
pixels (321 -> 241 -> 161, all of the form 8k+1), corners aligned. Two alignments of the scores:

* ``interp="pixel"`` (default, torchvision layout): every logit sits on its image pixel (8j on the scale-1
  grid, 8j*(n_s-1)/(n-1) on the scaled input); the scaled scores are sampled where the scale-1 logits sit.
* ``interp="caffe"`` (``model.caffe_layout``; the released test.prototxt): as DeepLab's Interp layers.
  The image is shrunk by ``data_res075`` (shrink 4, zoom 3) and ``data_res05`` (shrink 2), whose output side
  is z*((n-1)//k) + 1 for scale z/k; each scale's scores are resized to the scale-1 score map with corners
  aligned, value at j = bilinear at j*(h_s-1)/(h-1) (``fc1_*_interp``: caffe_cpu_interp2), then fused.
  The two agree when every scale's sides are of the form 8k+1, i.e. sides of 32k+1 (321, and 513, the
  default padding: 513 -> 385 -> 257).
  Deviation from Caffe: where the prototxt's zoom/shrink sizes miss the scale-1 map (e.g. a 75-pixel side at
  0.75: 9 scores against 10), Caffe's Eltwise fusion stops with an error; here the scores are resized to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dlib.core.constants import MSC_SCALES
from dlib.nets.backbones import output_size


def scaled_size(n: int, scale: float) -> int:
    """Side of an n-pixel side resized by ``scale``, corners aligned: (n-1)*scale + 1 (321, 0.75 -> 241)."""
    return int((n - 1) * scale + 1e-6) + 1


def caffe_scaled_size(n: int, scale: float) -> int:
    """Side of Caffe's Interp output for ``scale`` = zoom/shrink: shrink first, (n-1)//k + 1, then zoom,
    z*(m-1) + 1 (DeepLab's interp_layer.cpp); together z*((n-1)//k) + 1. 100 at 0.75 (3/4) -> 73."""
    ratio = Fraction(scale).limit_denominator(64)
    return ratio.numerator * ((int(n) - 1) // ratio.denominator) + 1


INTERP_SIZES = {"pixel": scaled_size, "caffe": caffe_scaled_size}


class MSCOutput(NamedTuple):
    """Training output of :class:`MSC`."""

    per_scale: list[torch.Tensor]  # logits of each scale, (N, C, ceil(H_s/8), ceil(W_s/8)) (Caffe: up to +1)
    fused: torch.Tensor  # max over scales on the scale-1 grid, (N, C, ceil(H/8), ceil(W/8)) (Caffe: up to +1)
    input_sizes: list[tuple[int, int]]  # (H_s, W_s) the network saw at each scale
    image_size: tuple[int, int]  # (H, W) of the original input

    def all(self) -> list[torch.Tensor]:
        """Every output the training loss is taken on: each scale, then the fusion."""
        return [*self.per_scale, self.fused]


def _source_coords(n_out: int, stride: int, n_image: int, n_scaled: int, n_logits: int) -> torch.Tensor:
    """For logit j of the scale-1 grid (pixel stride*j of the image), its coordinate on a scaled grid.

    Image pixel p sits at scaled pixel p*(n_scaled-1)/(n_image-1), i.e. scaled logit p*(...)/stride;
    returned normalised to [-1, 1] for grid_sample with align_corners=True.
    """
    j = torch.arange(n_out, dtype=torch.float64)
    ratio = (n_scaled - 1) / (n_image - 1) if n_image > 1 else 1.0
    u = (j * stride).clamp(max=n_image - 1) * ratio / stride
    return (2 * u / max(n_logits - 1, 1) - 1).float()


def resample_to_grid(logits: torch.Tensor, image_size: tuple[int, int], scaled: tuple[int, int],
                     grid: tuple[int, int], *, output_stride: int = 8) -> torch.Tensor:
    """Bilinearly resample a scaled input's logits onto the scale-1 logit grid (pixel-aligned)."""
    if tuple(logits.shape[-2:]) == tuple(grid) and tuple(scaled) == tuple(image_size):
        return logits
    ys = _source_coords(grid[0], output_stride, image_size[0], scaled[0], logits.shape[-2])
    xs = _source_coords(grid[1], output_stride, image_size[1], scaled[1], logits.shape[-1])
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    sample = torch.stack((gx, gy), dim=-1).to(logits)  # (h, w, 2), x first
    sample = sample.unsqueeze(0).expand(logits.shape[0], -1, -1, -1)
    return F.grid_sample(logits, sample, mode="bilinear", padding_mode="border", align_corners=True)


class MSC(nn.Module):
    """Wrap a DeepLab model to score multi-scale inputs with max fusion (DeepLab v2, "MSC").

    ``forward(x)``: in ``train()`` mode an :class:`MSCOutput` (every scale's logits and the fusion),
    in ``eval()`` mode the fused logits alone, (N, C, ceil(H/8), ceil(W/8)).
    ``.backbone`` and ``.head`` are the wrapped model's, so dlib.training.schedule.parameter_roles works on it.
    """

    def __init__(self, model: nn.Module, scales: Sequence[float] = MSC_SCALES, *, interp: str = "pixel"):
        super().__init__()
        scales = tuple(float(s) for s in scales)
        if not scales or any(not 0 < s <= 4 for s in scales):
            raise ValueError(f"scales must be a non-empty sequence of numbers in (0, 4], got {scales!r}")
        if interp not in INTERP_SIZES:
            raise ValueError(f"interp must be one of {', '.join(INTERP_SIZES)}, got {interp!r}")
        self.model = model
        self.scales = scales
        self.interp = interp
        self.output_stride = getattr(model, "output_stride", 8)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def head(self) -> nn.Module:
        return self.model.head

    def input_size(self, image_size: tuple[int, int], scale: float) -> tuple[int, int]:
        """(H_s, W_s): the side lengths the network sees at ``scale`` (:data:`INTERP_SIZES` of ``interp``)."""
        return tuple(INTERP_SIZES[self.interp](n, scale) for n in image_size)

    def to_scale1_grid(self, per_scale: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]],
                       image_size: tuple[int, int]) -> list[torch.Tensor]:
        """R_s: every scale's logits (input ``sizes[i]``) resized onto the scale-1 logit grid, same shape each."""
        H, W = image_size
        if self.interp == "caffe":  # the scale-1 score map, whatever its size (fc1_voc12 in the prototxt)
            grid = next((tuple(o.shape[-2:]) for o, sz in zip(per_scale, sizes) if sz == (H, W)),
                        (output_size(H, self.output_stride), output_size(W, self.output_stride)))
            return [o if tuple(o.shape[-2:]) == grid else
                    F.interpolate(o, size=grid, mode="bilinear", align_corners=True) for o in per_scale]
        grid = (output_size(H, self.output_stride), output_size(W, self.output_stride))
        return [resample_to_grid(o, (H, W), sz, grid, output_stride=self.output_stride)
                for o, sz in zip(per_scale, sizes)]

    def forward(self, x: torch.Tensor) -> MSCOutput | torch.Tensor:
        """DeepLab v2, Sec. 3.2: f_MSC(x) = max over s of R_s(f(D_s x)), per position and class."""
        if x.dim() != 4:
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        per_scale, sizes = [], []
        for s in self.scales:  # s in {1, 0.75, 0.5}
            size = self.input_size((H, W), s)
            xs = x if size == (H, W) else F.interpolate(x, size=size, mode="bilinear", align_corners=True)  # D_s x
            per_scale.append(self.model(xs))  # f(D_s x), (N, C, h_s, w_s): ceil(H_s/8) (Caffe: up to one more)
            sizes.append(size)
        aligned = self.to_scale1_grid(per_scale, sizes, (H, W))  # R_s: each onto the scale-1 grid
        fused = torch.stack(aligned).amax(dim=0)  # max over scales, per position and class
        if self.training:
            return MSCOutput(per_scale, fused, sizes, (int(H), int(W)))
        return fused


def labels_at_logits(labels: torch.Tensor, image_size: tuple[int, int], input_size: tuple[int, int],
                     logit_size: tuple[int, int], *, output_stride: int = 8) -> torch.Tensor:
    """The ground truth subsampled to a logit grid (DeepLab v1, Sec. 3.1: labels subsampled by 8).

    ``labels`` (N, H, W) at ``image_size``; the network saw the image resized to ``input_size`` and
    produced ``logit_size`` logits. Logit i sits on resized pixel 8i, i.e. image pixel
    8i*(H-1)/(H_s-1); the nearest label there is taken (void labels stay void).
    """
    idx = []
    for n_img, n_in, n_log in zip(image_size, input_size, logit_size):
        ratio = (n_img - 1) / (n_in - 1) if n_in > 1 else 0.0
        pos = torch.arange(n_log, dtype=torch.float64) * output_stride * ratio
        idx.append(pos.round().long().clamp(0, n_img - 1).to(labels.device))
    return labels[:, idx[0]][:, :, idx[1]]


class CentreSurroundDetector(nn.Module):
    """A hand-set, single-scale "network" for illustrating MSC (notebook 03); not a DeepLab model.

    It scores "object" where a bright disc of about ``radius`` pixels sits: a zero-mean centre-surround
    filter (+ inside ``radius``, - in the ring out to 1.5 ``radius``) on the grey image responds with the
    disc's contrast at the centre of a disc of that radius, about a quarter of it for a disc half as
    large, and at most half of it along the edge of a much larger one. Logits (N, 2, ceil(H/8),
    ceil(W/8)) on DeepLab's grid (unit i on pixel 8i; each unit keeps the strongest response within 4
    pixels, so a disc between grid points is not missed): background 0, object gain * (response - threshold).
    Its field of view is fixed, as a trained network's is: objects of other sizes are only found at
    another input scale, which is what MSC supplies.
    """

    output_stride = 8

    def __init__(self, radius: float, *, threshold: float = 0.5, gain: float = 10.0):
        super().__init__()
        if radius < 1:
            raise ValueError(f"radius must be at least 1 pixel, got {radius}")
        reach = int(math.ceil(1.5 * radius))
        yy, xx = torch.meshgrid(torch.arange(-reach, reach + 1.0), torch.arange(-reach, reach + 1.0), indexing="ij")
        d = torch.hypot(yy, xx)
        centre, ring = d <= radius, (d > radius) & (d <= 1.5 * radius)
        kernel = centre / centre.sum() - ring / ring.sum()  # zero mean: flat regions score 0
        self.register_buffer("kernel", kernel[None, None].float())
        self.radius, self.threshold, self.gain, self.reach = radius, threshold, gain, reach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
        response = F.conv2d(grey, self.kernel, padding=self.reach)  # (N, 1, H, W)
        # 9x9 max pooling at stride 8, padding 4: n -> ceil(n/8), unit i centred on pixel 8i.
        response = F.max_pool2d(response, kernel_size=9, stride=8, padding=4)
        obj = self.gain * (response - self.threshold)
        return torch.cat([torch.zeros_like(obj), obj], dim=1)
