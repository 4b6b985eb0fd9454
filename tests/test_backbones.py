"""dlib.nets.backbones: output stride 8 by shape, and parameter counts against torchvision's published ones."""

import pytest
import torch
from torch import nn

from dlib.nets import backbones
from dlib.nets.backbones import ResNet101Dense, SmallDilatedResNet, VGG16Dense

# torchvision's model cards: ResNet-101 has 44,549,160 parameters and VGG-16 138,357,544, each with its
# ImageNet classifier. The dense backbones drop the classifier:
# ResNet-101's fc is 2048 x 1000 + 1000; VGG-16's is 25088 x 4096 + 4096, 4096 x 4096 + 4096, 4096 x 1000 + 1000.
RESNET101_PARAMS = 44_549_160 - (2048 * 1000 + 1000)
VGG16_PARAMS = 138_357_544 - (25088 * 4096 + 4096) - (4096 * 4096 + 4096) - (4096 * 1000 + 1000)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("caffe_layout", [False, True])
def test_resnet101_has_torchvisions_parameters_without_the_classifier(caffe_layout):
    with torch.device("meta"):
        net = ResNet101Dense(caffe_layout=caffe_layout)
    assert _count(net) == RESNET101_PARAMS == 42_500_160
    assert net.out_channels == 2048


def test_vgg16_has_the_thirteen_convolutions_of_configuration_d():
    with torch.device("meta"):
        net = VGG16Dense()
    assert _count(net) == VGG16_PARAMS == 14_714_688
    layers = backbones.stack_layers(net)
    assert sum(1 for layer in layers if layer.name.startswith("conv")) == 13
    assert [layer.name for layer in layers if layer.name.startswith("pool")] == [f"pool{i}" for i in range(1, 6)]


def test_resnet101_main_path_has_one_hundred_convolutions():
    # ResNet-101: 101 weighted layers = conv1 + 3 x (3 + 4 + 23 + 3) bottleneck convolutions + the classifier.
    with torch.device("meta"):
        net = ResNet101Dense()
    layers = backbones.stack_layers(net)  # the main path: shortcut (downsample) convolutions left out
    assert len(layers) == 101 and [layer.name for layer in layers].count("maxpool") == 1  # 100 convs + pool1
    stride = 1
    for layer in layers:
        stride *= layer.stride
    assert stride == 8  # conv1, maxpool and layer2 subsample; layer3 and layer4 dilate instead


@pytest.mark.parametrize("size", [(33, 47), (17, 16), (65, 64)])
def test_small_backbones_have_output_stride_8(size):
    h, w = size
    expected = (-(-h // 8), -(-w // 8))  # ceil(n / 8), the paper's 321 -> 41
    torch.manual_seed(0)
    for net in (VGG16Dense(widths=(4, 4, 8, 8, 8)), SmallDilatedResNet(widths=(4, 4, 8, 8, 8))):
        with torch.no_grad():
            out = net.eval()(torch.randn(1, 3, h, w))
        assert tuple(out.shape) == (1, 8, *expected), type(net).__name__
    assert backbones.output_size(321) == 41 and backbones.output_size(513) == 65


@pytest.mark.parametrize("caffe_layout", [False, True])
def test_resnet101_has_output_stride_8(caffe_layout):
    with torch.device("meta"):  # shapes only: no weights are initialised, no arithmetic is done
        net = ResNet101Dense(caffe_layout=caffe_layout).eval()
        shapes = [tuple(net(torch.empty(1, 3, h, w)).shape) for h, w in ((41, 50), (321, 321), (513, 513))]
    assert shapes == [(1, 2048, 6, 7), (1, 2048, 41, 41), (1, 2048, 65, 65)]  # ceil(n/8): 321 -> 41, 513 -> 65


def test_frozen_batch_norm_stays_in_eval_and_untrained():
    net = SmallDilatedResNet(widths=(4, 4, 8, 8, 8), freeze_bn=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = bns[0].running_mean.clone()
    net(torch.randn(2, 3, 16, 16) * 5 + 3)
    assert torch.equal(bns[0].running_mean, before)  # batch statistics never used or stored
    free = SmallDilatedResNet(widths=(4, 4, 8, 8, 8)).train()
    assert all(m.training for m in free.modules() if isinstance(m, nn.BatchNorm2d))


def test_caffe_layout_moves_the_stride_to_the_1x1_convolution():
    from torchvision.models.resnet import Bottleneck

    block = Bottleneck(8, 2, stride=2, downsample=nn.Conv2d(8, 8, 1, stride=2))
    backbones.caffe_bottleneck_layout(block, stride=2, dilation=3)
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.conv2.dilation == (3, 3) and block.conv2.padding == (3, 3)
    x = torch.randn(1, 8, 9, 10)
    assert tuple(block(x).shape) == (1, 8, 5, 5)  # 1x1 stride 2: n -> ceil(n/2), as the 3x3 it replaces


def test_bad_widths_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="5 block widths"):
        VGG16Dense(widths=(4, 4))
    with pytest.raises(ValueError, match="widths needs 5 entries"):
        SmallDilatedResNet(blocks=(1, 1))


@pytest.mark.parametrize("caffe_layout", [False, True])
def test_torchvision_layout_rounds_down_and_caffe_layout_up(caffe_layout):
    """torchvision layout: ceil(n/8) at every size; Caffe layout (pooling rounded up, test_caffe checks it against
    the prototxts): one more where a stride-2 pool sees an even side, the same at 8k+1."""
    sizes = [(100, 75), (64, 64), (66, 97), (65, 65)]
    with torch.device("meta"):
        nets = (ResNet101Dense(caffe_layout=caffe_layout), VGG16Dense(caffe_pooling=caffe_layout))
        got = [[tuple(net.eval()(torch.empty(1, 3, h, w)).shape[-2:]) for h, w in sizes] for net in nets]
    if not caffe_layout:
        assert got[0] == got[1] == [(13, 10), (8, 8), (9, 13), (9, 9)]
    else:  # ResNet: 64 -> conv1 32 -> pool1 floor(32/2)+1 = 17 -> 9; VGG: 100 -> 51 -> 26 -> 14
        assert got == [[(13, 10), (9, 9), (9, 13), (9, 9)], [(14, 11), (9, 9), (10, 13), (9, 9)]]


def test_caffe_pooling_takes_the_max_over_caffes_clipped_windows():
    x = torch.randn(1, 2, 6, 4, generator=torch.Generator().manual_seed(0))
    pool = VGG16Dense(widths=(2, 2, 2, 2, 2), caffe_pooling=True).features[4]  # pool1: 3x3, stride 2, pad 1
    got = pool(x)
    # Caffe PoolingLayer (MAX): window [2i - 1, 2i + 2) clipped to the image; 6 -> 4 rows, 4 -> 3 columns
    want = torch.stack([torch.stack([x[0, :, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2].amax((1, 2))
                                     for j in range(3)], -1) for i in range(4)], -2)
    assert got.shape == (1, 2, 4, 3) and torch.equal(got[0], want)


def test_both_poolings_give_the_same_features_at_8k_plus_1():
    torch.manual_seed(3)
    plain = VGG16Dense(widths=(4, 4, 8, 8, 8)).eval()
    caffe_net = VGG16Dense(widths=(4, 4, 8, 8, 8), caffe_pooling=True).eval()
    caffe_net.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        assert torch.equal(plain(x), caffe_net(x))
