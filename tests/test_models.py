"""dlib.nets.models: registry, parameter counts against closed forms and the papers, output stride,
pixel-aligned upsampling, learning-rate groups, frozen BN and pretrained loading (no network)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlib.nets import atrous, models
from dlib.training import schedule

# The and the lead's list of networks (DeepLab v1 Table 2, v2 Tables 3-4, CPU variants).
PAPER_MODELS = ["deeplab_v1_7x7", "deeplab_v1_4x4", "deeplab_v1_4x4_r8", "deeplab_v1_largefov",
                "deeplab_v2_vgg16_aspp_s", "deeplab_v2_vgg16_aspp_l", "deeplab_v2_resnet101_baseline",
                "deeplab_v2_resnet101_largefov", "deeplab_v2_resnet101_aspp"]
SMALL_MODELS = ["small_resnet_baseline", "small_resnet_largefov", "small_resnet_aspp",
                "small_vgg_largefov", "small_vgg_aspp_s", "small_vgg_aspp_l"]
# DeepLab v1 Table 2 (repeated in v2 Table 1): fc6 kernel, rate, receptive field, parameters (M).
V1_TABLE = {"deeplab_v1_7x7": (7, 4, 224, 134.3), "deeplab_v1_4x4": (4, 4, 128, 65.1),
            "deeplab_v1_4x4_r8": (4, 8, 224, 65.1), "deeplab_v1_largefov": (3, 12, 224, 20.5)}
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def meta_build(name, **kw):
    with torch.device("meta"):
        return models.build(name, **kw)


def n_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def ceil8(n):
    return math.ceil(n / 8)


def test_registry_lists_every_model_and_rejects_unknown_names():
    assert set(PAPER_MODELS + SMALL_MODELS) <= set(models.available())
    with pytest.raises(KeyError, match="deeplab_v1_largefov"):
        models.build("deeplab_v3")


def vgg_closed_form(kernel, hidden, branches, classes=21):
    convs = sum(9 * cin * cout + cout for cin, cout in VGG16_CONVS)
    branch = (kernel * kernel * 512 * hidden + hidden) + (hidden * hidden + hidden) + (hidden * classes + classes)
    return convs + branches * branch


@pytest.mark.parametrize("name", list(V1_TABLE))
def test_v1_parameter_counts_match_closed_form_and_paper(name):
    kernel, _, _, paper_m = V1_TABLE[name]
    hidden = 1024 if name.endswith("largefov") else 4096
    count = n_params(meta_build(name))
    assert count == vgg_closed_form(kernel, hidden, 1)
    assert abs(count / 1e6 - paper_m) < 0.1  # the paper rounds to 0.1M


def test_vgg_aspp_parameter_counts_match_closed_form():
    for name in ("deeplab_v2_vgg16_aspp_s", "deeplab_v2_vgg16_aspp_l"):
        assert n_params(meta_build(name)) == vgg_closed_form(3, 1024, 4)


def resnet101_closed_form():
    """conv1 + BN, then bottlenecks [3, 4, 23, 3] with widths 64..512, expansion 4 (He et al. 2016)."""
    weights = 7 * 7 * 3 * 64
    bn = 2 * 64
    cin = 64
    for blocks, mid in zip((3, 4, 23, 3), (64, 128, 256, 512)):
        cout = 4 * mid
        for b in range(blocks):
            weights += cin * mid + 9 * mid * mid + mid * cout
            bn += 2 * (mid + mid + cout)
            if b == 0:  # projection shortcut
                weights += cin * cout
                bn += 2 * cout
            cin = cout
    return weights, bn


@pytest.mark.parametrize("name,rates", [("deeplab_v2_resnet101_aspp", 4), ("deeplab_v2_resnet101_largefov", 1),
                                        ("deeplab_v2_resnet101_baseline", 1)])
def test_resnet101_parameter_counts_match_closed_form(name, rates):
    weights, bn = resnet101_closed_form()
    head = rates * (9 * 2048 * 21 + 21)
    model = meta_build(name)
    assert n_params(model) == weights + bn + head
    assert n_params(model, trainable_only=True) == weights + head  # BN frozen
    assert weights + bn == 44_549_160 - (2048 * 1000 + 1000)  # torchvision's resnet101 without its fc


@pytest.mark.parametrize("name", PAPER_MODELS + SMALL_MODELS)
def test_output_stride_8_for_every_model(name):
    # Shapes on the meta device: the real conv/pool shape rules, no arithmetic.
    model = meta_build(name)
    for h, w in [(321, 321), (513, 513), (97, 65), (112, 100), (33, 45)]:
        out = model(torch.empty(2, 3, h, w, device="meta"))
        assert tuple(out.shape) == (2, 21, ceil8(h), ceil8(w)), (h, w)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_real_forward_321_gives_41(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 321, 321))
    assert out.shape == (1, 5, 41, 41)
    assert torch.isfinite(out).all()


def test_largefov_real_forward_321_gives_41():
    # The cheapest paper model, really run (ResNet-101 runs in the frozen-BN test below).
    torch.manual_seed(0)
    with torch.no_grad():
        model = models.build("deeplab_v1_largefov").eval()
        assert model(torch.randn(1, 3, 321, 321)).shape == (1, 21, 41, 41)


def test_small_models_fit_the_cpu_budget():
    # 30-odd fine-tunings of 600 iterations must fit a 2-core laptop: a few hundred thousand parameters each.
    for name in SMALL_MODELS:
        assert 0.2e6 <= n_params(meta_build(name)) <= 0.5e6, name


def test_paper_receptive_field_column():
    for name, (kernel, rate, rf, _) in V1_TABLE.items():
        assert models.paper_receptive_field(kernel, rate) == rf
        i = models.info(name)
        assert (i.kernel_size, i.rates) == (kernel, (rate,))


@pytest.mark.parametrize("name", list(V1_TABLE))
def test_layer_stack_read_off_the_model_matches_atrous_vgg16_layers(name):
    kernel, rate, _, _ = V1_TABLE[name]
    model = meta_build(name)
    ours = atrous.receptive_field(model.layers())
    reference = atrous.receptive_field(atrous.vgg16_layers(fc6_kernel=kernel, fc6_rate=rate))
    assert ours == reference


def test_upsample_logits_is_caffe_interp_for_8k_plus_1():
    logits = torch.randn(2, 3, 41, 41)
    ours = models.upsample_logits(logits, (321, 321))
    ref = F.interpolate(logits, size=(321, 321), mode="bilinear", align_corners=True)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_upsample_logits_puts_logit_i_on_pixel_8i_for_any_size():
    h, w = ceil8(112), ceil8(100)  # 14 x 13
    i = torch.arange(h, dtype=torch.float64).view(h, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, w)
    logits = (3.0 * i - 2.0 * j).expand(h, w)[None, None]  # linear in the logit index
    out = models.upsample_logits(logits, (112, 100))[0, 0]
    p = torch.arange(112, dtype=torch.float64).clamp(max=8 * (h - 1)).view(-1, 1)
    q = torch.arange(100, dtype=torch.float64).clamp(max=8 * (w - 1)).view(1, -1)
    assert out.shape == (112, 100)
    assert torch.allclose(out, 3.0 * p / 8 - 2.0 * q / 8, atol=1e-9)


def test_upsample_logits_rejects_logits_of_another_input_size():
    with pytest.raises(ValueError, match="output stride"):
        models.upsample_logits(torch.zeros(1, 2, 10, 10), (321, 321))


def test_param_groups_vgg_head_is_fc8_only():
    model = meta_build("deeplab_v2_vgg16_aspp_l")
    g = schedule.parameter_roles(model)
    assert g["head_weight"] == [b.fc8.weight for b in model.head.branches]
    assert g["head_bias"] == [b.fc8.bias for b in model.head.branches]
    assert any(p is model.head.branches[0].fc6.weight for p in g["backbone_weight"])
    flat = [id(p) for ps in g.values() for p in ps]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))


def test_frozen_bn_stays_frozen_in_train_mode_and_is_left_out_of_param_groups():
    torch.manual_seed(0)
    model = models.build("deeplab_v2_resnet101_baseline", num_classes=3)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 104  # ResNet-101: 1 + 3 per bottleneck (33) + 4 projections
    assert all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert model.head.training
    before = [m.running_mean.clone() for m in bns]
    out = model(torch.randn(2, 3, 33, 45) * 3 + 1)
    assert out.shape == (2, 3, 5, 6)
    out.sum().backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert all(m.weight.grad is None for m in bns)
    groups = schedule.parameter_roles(model)
    in_groups = {id(p) for ps in groups.values() for p in ps}
    assert not in_groups & {id(p) for m in bns for p in m.parameters()}
    assert len(groups["head_weight"]) == 1 and groups["head_weight"][0] is model.head.branches[0].conv.weight
    assert sum(p.numel() for ps in groups.values() for p in ps) == n_params(model, trainable_only=True)


def test_bn_can_be_unfrozen():
    with torch.device("meta"):
        model = models.build("deeplab_v2_resnet101_aspp", freeze_bn=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_upsample_logits_crops_the_extra_logit_of_a_caffe_layout_network():
    # VGG-16 in Caffe's layout gives 14x11 logits for 100x75 (test_caffe); logit i still sits on pixel 8i.
    logits = torch.arange(14 * 11, dtype=torch.float32).view(1, 1, 14, 11)
    out = models.upsample_logits(logits, (100, 75))[0, 0]
    assert out.shape == (100, 75)
    assert torch.equal(out[::8, ::8], logits[0, 0, :13, :10])
    assert torch.allclose(out[99, 74], (logits[0, 0, 12, 9] + 3 / 8 * (logits[0, 0, 13, 9] - logits[0, 0, 12, 9])
                                        + 2 / 8 * (logits[0, 0, 12, 10] - logits[0, 0, 12, 9])))
    with pytest.raises(ValueError, match="one more per side"):
        models.upsample_logits(torch.zeros(1, 1, 15, 11), (100, 75))


def test_a_new_head_answers_the_head_questions_and_needs_no_other_change():
    """A toy head (a 1x1 bottleneck, then a classifier: not an ASPP) in a DeepLab: the learning-rate roles put
    exactly its classifier at the head's rates, from its own classifier_parameters(), and the ASPP branch maps
    refuse it with a message (it has no branches)."""
    from torch import nn

    from dlib.nets import aspp
    from dlib.training import schedule

    class Bottleneck(nn.Module):
        def __init__(self, channels, classes):
            super().__init__()
            self.reduce, self.classifier = nn.Conv2d(channels, 8, 1), nn.Conv2d(8, classes, 1)

        def forward(self, x):
            return self.classifier(torch.relu(self.reduce(x)))

        def classifier_parameters(self):
            return list(self.classifier.parameters())

    base = models.build("small_resnet_baseline")
    model = models.DeepLab(base.backbone, Bottleneck(base.backbone.out_channels, 21), name="toy")
    roles = schedule.parameter_roles_of(model)
    assert [p.shape for p in roles["head_weight"]] == [model.head.classifier.weight.shape]
    assert roles["head_bias"][0] is model.head.classifier.bias
    assert any(p is model.head.reduce.weight for p in roles["backbone_weight"])  # not the classifier: 1x
    with pytest.raises(TypeError, match="has branches"):
        aspp.branch_gradient_maps(model.eval(), torch.zeros(3, 33, 33))
