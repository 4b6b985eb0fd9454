"""dlib.nets.aspp: the branches compute DeepLab v2's Eq. (1), their scores are summed, the registered
models carry the paper's rates, and the gradient maps stay inside the theoretical receptive field."""

import numpy as np
import pytest
import torch
from torch import nn

from dlib.nets import aspp, atrous, models
from dlib.nets.models import DeepLab


def test_classifier_branch_is_the_atrous_sum_of_eq1():
    torch.manual_seed(0)
    rate = 3
    branch = aspp.ClassifierBranch(2, 1, rate=rate)
    x = torch.randn(1, 2, 11, 10)
    with torch.no_grad():
        y = branch(x)[0, 0]
    w, b = branch.conv.weight[0].detach(), branch.conv.bias[0].item()
    xp = np.pad(x[0].numpy(), ((0, 0), (rate, rate), (rate, rate)))  # zero padding = rate
    for i in range(11):
        for j in range(10):
            # y[i, j] = sum_{c,k,m} x[c, i + r(k-1), j + r(m-1)] w[c, k, m] + b  (DeepLab v2, Eq. 1 in 2-D)
            ref = b + sum(xp[c, i + rate * k, j + rate * m] * w[c, k, m].item()
                          for c in range(2) for k in range(3) for m in range(3))
            assert abs(y[i, j].item() - ref) < 1e-5


@pytest.mark.parametrize("name", ["small_vgg_aspp_l", "small_resnet_aspp", "small_vgg_aspp_s"])
def test_aspp_output_is_the_sum_of_its_branches(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=4).eval()
    x = torch.randn(2, 3, 57, 41)
    with torch.no_grad():
        features = model.backbone(x)
        branches = model.head.branch_outputs(features)
        out = model(x)
    assert len(branches) == 4
    assert torch.allclose(out, branches[0] + branches[1] + branches[2] + branches[3], atol=1e-5)
    assert not torch.allclose(branches[0], branches[3])  # distinct branches, not one copied


def test_paper_rates_and_branch_layouts():
    with torch.device("meta"):
        s = models.build("deeplab_v2_vgg16_aspp_s")
        big = models.build("deeplab_v2_vgg16_aspp_l")
        r = models.build("deeplab_v2_resnet101_aspp")
        fov = models.build("deeplab_v2_resnet101_largefov")
    # DeepLab v2, Sec. 4.1 / Table 3: ASPP-S r = {2, 4, 8, 12}, ASPP-L r = {6, 12, 18, 24}.
    assert [b.fc6.dilation[0] for b in s.head.branches] == [2, 4, 8, 12]
    assert [b.fc6.dilation[0] for b in big.head.branches] == [6, 12, 18, 24]
    assert all((b.fc6.out_channels, b.fc7.out_channels, b.fc8.out_channels) == (1024, 1024, 21)
               for b in big.head.branches)
    assert [b.conv.dilation[0] for b in r.head.branches] == [6, 12, 18, 24]
    assert all(b.conv.in_channels == 2048 and b.conv.kernel_size == (3, 3) for b in r.head.branches)
    assert [b.conv.dilation[0] for b in fov.head.branches] == [12]
    # No v3 ingredients: no batch norm or pooling inside the heads.
    for model in (s, big, r):
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.AdaptiveAvgPool2d)) for m in model.head.modules())


def test_small_rates_keep_aspp_s_below_aspp_l():
    s = models.info("small_vgg_aspp_s").rates
    big = models.info("small_vgg_aspp_l").rates
    assert len(s) == len(big) == 4 and max(s) < max(big) and all(a <= b for a, b in zip(s, big))
    assert models.info("small_resnet_aspp").rates == big


def test_bad_heads_are_rejected():
    with pytest.raises(ValueError, match="rates"):
        aspp.ASPP(8, 2, ())
    with pytest.raises(ValueError, match="even"):
        aspp.ASPP(8, 2, (3,), kernel_size=4)  # 4x4 at rate 3 spans 10 pixels: cannot be centred


def tiny_linear_deeplab(rates):
    """Three stride-2 3x3 convolutions (no nonlinearity) and an ASPP head: RF known in closed form."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                             nn.Conv2d(4, 4, 3, stride=2, padding=1))
    return DeepLab(backbone, aspp.ASPP(4, 2, rates), name="tiny").eval()


def test_branch_gradient_maps_fill_exactly_the_theoretical_receptive_field():
    torch.manual_seed(0)
    model = tiny_linear_deeplab((1, 3))
    image = torch.randn(3, 97, 97)
    maps = aspp.branch_gradient_maps(model, image)  # centre unit 6 of 13 sits on pixel 48
    # By hand: three stride-2 3x3 convolutions see 1 + 2 (1 + 2 + 4) = 15 pixels at stride 8; a 3x3 branch at
    # rate r adds 2 r 8 more: 31 for rate 1, 63 for rate 3.
    for grad, rf in zip(maps, (15 + 2 * 1 * 8, 15 + 2 * 3 * 8), strict=True):
        half = (rf - 1) // 2
        rows, cols = np.nonzero(grad > 0)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (48 - half, 48 + half, 48 - half, 48 + half)
    assert [atrous.receptive_field(model.layers(b)).size for b in range(2)] == [31, 63]


def test_branch_gradient_maps_need_an_aspp_head():
    with pytest.raises(TypeError, match="ASPP"):
        aspp.branch_gradient_maps(nn.Conv2d(3, 3, 1), torch.zeros(3, 8, 8))


@pytest.mark.parametrize("size,rate", [(41, 24), (41, 6), (14, 8), (14, 24), (9, 2)])
def test_valid_tap_fraction_matches_brute_force(size, rate):
    inside = total = 0
    for i in range(size):
        for j in range(size):
            for dy in (-rate, 0, rate):
                for dx in (-rate, 0, rate):
                    total += 1
                    inside += 0 <= i + dy < size and 0 <= j + dx < size
    assert aspp.valid_tap_fraction(size, rate) == pytest.approx(inside / total)


def test_rate_at_least_the_map_size_leaves_only_the_centre_tap():
    assert aspp.valid_tap_fraction(14, 24) == pytest.approx(1 / 9)


def test_native_cpu_conv_matches_conv2d_and_is_used_for_the_7x7_fc6():
    torch.manual_seed(0)
    conv = aspp.NativeCPUConv2d(4, 5, 7, padding=12, dilation=4)
    ref = nn.Conv2d(4, 5, 7, padding=12, dilation=4)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 14, 14, requires_grad=True)
    ours, theirs = conv(x), ref(x)
    assert torch.allclose(ours, theirs, atol=1e-5)
    g = torch.randn_like(ours)
    gx, gw = torch.autograd.grad(ours, (x, conv.weight), g)
    rx, rw = torch.autograd.grad(theirs, (x, ref.weight), g)
    assert torch.allclose(gx, rx, atol=1e-4) and torch.allclose(gw, rw, atol=1e-4)
    with torch.device("meta"):
        fc6 = models.build("deeplab_v1_7x7").head.branches[0].fc6
        largefov_fc6 = models.build("deeplab_v1_largefov").head.branches[0].fc6
    assert type(fc6) is aspp.NativeCPUConv2d and type(largefov_fc6) is nn.Conv2d
