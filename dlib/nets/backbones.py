"""DeepLab backbones: VGG-16 and ResNet-101 made dense (output stride 8), and small variants for CPU.

Every backbone maps an image (N, 3, H, W) to features (N, C, ceil(H/8), ceil(W/8)): all strided
layers are 3x3 with padding 1 (or 7x7 with padding 3, or 1x1), so each one maps n -> ceil(n/2), and
ceil(ceil(ceil(n/2)/2)/2) = ceil(n/8). Feature unit i is centred on input pixel 8*i; 321 -> 41.

Caffe's size rule (``caffe_layout``, the released prototxts): Caffe's pooling rounds its output size up,

    pooled = ceil((n + 2 pad - k) / s) + 1,   minus 1 if (pooled - 1) s >= n + pad

(the last window must start inside the image or its leading padding; PoolingLayer::Reshape), which is
PyTorch's ``ceil_mode=True`` rule to the letter. A 3x3 stride-2 pad-1 pool then maps n -> floor(n/2) + 1,
one more than ceil(n/2) for even n: VGG-16 at 100x75 gives 14x11 features, ResNet-101 at 64x64 9x9
(torchvision layout: 13x10 and 8x8). Sides of the form 8k+1 (321, 513) agree in both layouts; every
feature unit is still centred on input pixel 8*i, and a Caffe-layout map has at most one unit more.

* VGG-16 (DeepLab v1, Sec. 3.1; released DeepLab prototxt): pool1-3 are 3x3 max pooling, stride 2,
  padding 1; pool4 and pool5 are 3x3, stride 1, padding 1 (the "hole algorithm" removes their
  subsampling); conv5_1-conv5_3 are atrous with rate 2 to keep their field of view.
* ResNet-101 (DeepLab v2, Sec. 4.1): layer3 ("res4") at dilation 2 and layer4 ("res5") at dilation 4
  instead of stride 2; batch normalisation frozen (ImageNet statistics and affine parameters fixed).
* Small variants (our deviation, for the ``cpu`` profile, trained from scratch): same output stride
  and heads, narrower and shallower, with trainable batch normalisation.

Module order inside every backbone is the forward order, so :func:`stack_layers` can read the layer
stack (kernel, stride, dilation) off the modules for receptive-field arithmetic (dlib.nets.atrous).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from dlib.nets.atrous import Layer

# VGG-16 configuration D (Simonyan & Zisserman 2015): channels per block, convolutions per block.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


class VGG16Dense(nn.Module):
    """VGG-16 conv1_1..pool5 at output stride 8 (DeepLab v1, Sec. 3.1). Output (N, widths[-1], H/8, W/8).

    ``features`` uses torchvision's layer indices (conv, ReLU, ..., pool; or conv, BN, ReLU with
    ``batch_norm=True``, as torchvision's ``vgg16_bn``), so torchvision ImageNet ``features.*`` weights
    load by name. ``avg_pool5`` appends the 3x3 stride-1 average pooling ("pool5a") that the released
    DeepLab-LargeFOV prototxt has after pool5; the paper's text does not mention it (default off).
    ``caffe_pooling``: pool1-3 round their output size up as Caffe does (module docstring; the released
    prototxts), instead of down (default, torchvision).
    """

    def __init__(self, *, widths: Sequence[int] = (64, 128, 256, 512, 512), batch_norm: bool = False,
                 conv5_rate: int = 2, avg_pool5: bool = False, freeze_bn: bool = False, caffe_pooling: bool = False):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must give 5 block widths (VGG-16 has 5 blocks), got {widths!r}")
        layers: list[nn.Module] = []
        self.layer_names: dict[int, str] = {}
        in_ch = 3
        for block, ((n_conv, _), width) in enumerate(zip(VGG16_BLOCKS, widths), start=1):
            rate = conv5_rate if block == 5 else 1
            for i in range(n_conv):
                self.layer_names[len(layers)] = f"conv{block}_{i + 1}"
                # 3x3 atrous convolution, padding = rate keeps the spatial size (DeepLab v2, Eq. 1).
                layers.append(nn.Conv2d(in_ch, width, 3, padding=rate, dilation=rate))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                in_ch = width
            self.layer_names[len(layers)] = f"pool{block}"
            # pool1-3: 3x3 stride 2 (n -> ceil(n/2)); pool4-5: 3x3 stride 1 (size kept), DeepLab v1 Sec. 3.1.
            layers.append(nn.MaxPool2d(3, stride=2 if block <= 3 else 1, padding=1, ceil_mode=caffe_pooling))
        if avg_pool5:
            self.layer_names[len(layers)] = "pool5a"
            layers.append(nn.AvgPool2d(3, stride=1, padding=1))
        self.features = nn.Sequential(*layers)
        self.out_channels = in_ch
        self.freeze_bn = freeze_bn and batch_norm
        _freeze_bn(self, self.freeze_bn)

    def train(self, mode: bool = True) -> VGG16Dense:
        super().train(mode)
        _bn_eval(self, self.freeze_bn)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 3, H, W) -> (N, C5, ceil(H/8), ceil(W/8))


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convolutions and an identity (or 1x1) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride, dilation)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, 1, dilation)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


def _freeze_bn(module: nn.Module, freeze: bool) -> None:
    """Stop gradients into every BatchNorm's affine parameters (DeepLab v2: BN frozen at ImageNet values)."""
    if freeze:
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)
        module.train(module.training)


def _bn_eval(module: nn.Module, freeze: bool) -> None:
    """Keep every BatchNorm in eval mode (running statistics, never batch statistics) when frozen."""
    if freeze:
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


class SmallDilatedResNet(nn.Module):
    """A small dilated ResNet (our CPU stand-in for ResNet-101), output stride 8.

    stem: 3x3/2 conv, 3x3 conv, 3x3/2 max pool (stride 4); layer1 at stride 4; layer2 reaches stride 8;
    layer3 and layer4 keep stride 8 with atrous convolution at ``dilations`` (ResNet-101's res4/res5 in
    DeepLab v2 use 2 and 4). ``freeze_bn``: as :class:`ResNet101Dense` (the paper's setting once the
    backbone is pretrained, here on the "ImageNet" stand-in of dlib.nets.standins).
    Deviation from paper: basic blocks and few channels, so it trains on a CPU.
    """

    def __init__(self, *, widths: Sequence[int] = (32, 32, 64, 128, 160), blocks: Sequence[int] = (1, 2, 2, 1),
                 dilations: Sequence[int] = (2, 4), freeze_bn: bool = False):
        super().__init__()
        if len(widths) != 5 or len(blocks) != 4 or len(dilations) != 2:
            raise ValueError(f"widths needs 5 entries (stem + 4 stages), blocks 4 and dilations 2 (layer3, layer4), "
                             f"got {widths!r}, {blocks!r}, {dilations!r}")
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = _conv3x3(stem, stem)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_ch = stem
        # (stride, dilation) per stage: output strides 4, 8, 8 (rate 2), 8 (rate 4).
        d3, d4 = (int(d) for d in dilations)
        for width, n, (stride, dilation) in zip(widths[1:], blocks, ((1, 1), (2, 1), (1, d3), (1, d4))):
            layer = [BasicBlock(in_ch, width, stride=stride, dilation=dilation)]
            layer += [BasicBlock(width, width, dilation=dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = in_ch
        self.freeze_bn = freeze_bn
        _freeze_bn(self, freeze_bn)

    def train(self, mode: bool = True) -> SmallDilatedResNet:
        super().train(mode)
        _bn_eval(self, self.freeze_bn)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, C0, H/2, W/2)
        x = self.maxpool(self.relu(self.bn2(self.conv2(x))))  # (N, C0, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (N, C2, H/8, W/8)
        return self.layer4(self.layer3(x))  # (N, C4, H/8, W/8)


class ResNet101Dense(nn.Module):
    """ResNet-101 conv1..layer4 with layer3 at dilation 2 and layer4 at dilation 4 (DeepLab v2, Sec. 4.1).

    Output (N, 2048, ceil(H/8), ceil(W/8)). Parameter names are torchvision's (``conv1.weight``,
    ``layer3.0.conv2.weight``...), so torchvision ImageNet weights load by name.
    With ``freeze_bn`` (the paper's setting) every BatchNorm stays in eval mode, even under
    ``model.train()``, and its affine parameters do not require gradients.
    Deviation from paper (default): torchvision's ResNet ("v1.5", stride in the 3x3 convolution, first block
    of a dilated stage at the previous dilation) instead of the original Caffe ResNet-101 (stride in the 1x1).
    ``caffe_layout=True`` builds the network of DeepLab's released prototxt instead, so the released Caffe
    weights (dlib.nets.caffe) load one to one: the stride-2 of res3a sits in its first 1x1 convolution
    (``layer2.0.conv1``, res3a_branch2a) and the 3x3 keeps stride 1; every 3x3 of res4 has dilation 2 and
    every 3x3 of res5 dilation 4, the first block of each stage included (torchvision: 1 and 2 there).
    Its pool1 rounds its output size up, as Caffe's (module docstring): 64 -> conv1 32 -> pool1 17 -> 9 features.
    The parameter names and shapes are the same in both layouts.
    Deviation from Caffe (torchvision layout): pool1 rounds its output size down; the two agree whenever
    conv1's output is odd, i.e. inputs of 4k+1 or 4k+2 pixels (321, 513, and 513's MSC sizes 385, 257).
    """

    def __init__(self, *, freeze_bn: bool = True, caffe_layout: bool = False):
        super().__init__()
        from torchvision.models import resnet101

        tv = resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.caffe_layout = caffe_layout
        if caffe_layout:
            caffe_bottleneck_layout(self.layer2[0], stride=2)  # res3a: stride in res3a_branch2a
            caffe_bottleneck_layout(self.layer3[0], dilation=2)  # res4a_branch2b: dilation 2, pad 2
            caffe_bottleneck_layout(self.layer4[0], dilation=4)  # res5a_branch2b: dilation 4, pad 4
            self.maxpool.ceil_mode = True  # pool1: Caffe's size rule (3x3, stride 2, pad 1, rounded up)
        self.out_channels = 2048
        self.freeze_bn = freeze_bn
        _freeze_bn(self, freeze_bn)

    def train(self, mode: bool = True) -> ResNet101Dense:
        super().train(mode)
        _bn_eval(self, self.freeze_bn)  # DeepLab v2 (released prototxt): ImageNet statistics, never batch ones
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (N, 512, H/8, W/8)
        return self.layer4(self.layer3(x))  # (N, 2048, H/8, W/8)


def caffe_bottleneck_layout(block: nn.Module, *, stride: int = 1, dilation: int | None = None) -> nn.Module:
    """Turn a torchvision Bottleneck into the MSRA/Caffe one in place (DeepLab v2 released prototxt).

    ``stride`` moves to the first 1x1 convolution (conv1; a 1x1 with stride s maps n -> ceil(n/s) like the
    3x3 with padding 1 it replaces), the 3x3 (conv2) gets stride 1; ``dilation`` (when given) sets the 3x3's
    dilation and padding. The shortcut's 1x1 keeps its stride. Returns ``block``.
    """
    block.conv1.stride = (stride, stride)
    block.conv2.stride = (1, 1)
    if dilation is not None:
        block.conv2.dilation = (dilation, dilation)
        block.conv2.padding = (dilation, dilation)
    return block


def stack_layers(module: nn.Module, *, skip: Iterable[str] = ("downsample",)) -> list[Layer]:
    """The main-path layer stack of ``module`` (convolutions and poolings in registration order).

    Shortcut branches (modules whose name contains ``downsample``) are left out: the receptive field
    of a residual network is that of its longest path. Registration order must be forward order
    (true for every module in this package).
    """
    skip = tuple(skip)
    names = getattr(module, "layer_names", {})
    out = []
    for name, m in module.named_modules():
        if any(s in name.split(".") for s in skip):
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s = m.kernel_size, m.stride
            d = getattr(m, "dilation", 1)
            k, s, d = (v[0] if isinstance(v, tuple) else v for v in (k, s, d))
            index = name.split(".")[-1]
            label = names.get(int(index), name) if index.isdigit() else name
            out.append(Layer(int(k), int(s), int(d), label))
    return out


def output_size(n: int, output_stride: int = 8) -> int:
    """Feature-map size for an input of n pixels: ceil(n / output_stride) (321 -> 41)."""
    return -(-int(n) // output_stride)
