"""dlib.models: registry, parameter counts against closed forms and the papers, output stride,
pixel-aligned upsampling, learning-rate groups, frozen BN and pretrained loading (no network)."""

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from dlib import atrous, models
from dlib.backbones import VGG16Dense

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
    g = models.param_groups(model)
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
    groups = models.param_groups(model)
    in_groups = {id(p) for ps in groups.values() for p in ps}
    assert not in_groups & {id(p) for m in bns for p in m.parameters()}
    assert len(groups["head_weight"]) == 1 and groups["head_weight"][0] is model.head.branches[0].conv.weight
    assert sum(p.numel() for ps in groups.values() for p in ps) == n_params(model, trainable_only=True)


def test_bn_can_be_unfrozen():
    with torch.device("meta"):
        model = models.build("deeplab_v2_resnet101_aspp", freeze_bn=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ---------------------------------------------------------------------------------------------------
# ImageNet -> DeepLab fc6/fc7 decimation, on a narrow synthetic VGG-16 in torchvision's layout.

NARROW = (4, 4, 8, 8, 6)  # block widths; pool5 has 6 channels
FULL_HIDDEN = 16  # "4096"


def synthetic_vgg_imagenet_state_dict():
    sd = {}
    index = 0
    cin = 3
    for (n_conv, _), width in zip(((2, 0), (2, 0), (3, 0), (3, 0), (3, 0)), NARROW):
        for _ in range(n_conv):
            sd[f"features.{index}.weight"] = torch.randn(width, cin, 3, 3)
            sd[f"features.{index}.bias"] = torch.randn(width)
            index += 2  # conv, ReLU
            cin = width
        index += 1  # pool
    # fc6 entry (o, c, y, x) holds o*1000 + c*100 + y*10 + x, flattened as torchvision does (C, H, W).
    o, c, y, x = torch.meshgrid(torch.arange(FULL_HIDDEN), torch.arange(6), torch.arange(7), torch.arange(7),
                                indexing="ij")
    sd["classifier.0.weight"] = (o * 1000 + c * 100 + y * 10 + x).float().reshape(FULL_HIDDEN, -1)
    sd["classifier.0.bias"] = torch.arange(FULL_HIDDEN).float()
    oo, ii = torch.meshgrid(torch.arange(FULL_HIDDEN), torch.arange(FULL_HIDDEN), indexing="ij")
    sd["classifier.3.weight"] = (oo * 100 + ii).float()
    sd["classifier.3.bias"] = -torch.arange(FULL_HIDDEN).float()
    sd["classifier.6.weight"] = torch.randn(1000, FULL_HIDDEN)
    sd["classifier.6.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("kernel,taps", [(3, [0, 3, 6]), (4, [0, 2, 4, 6]), (7, list(range(7)))])
def test_fc6_decimation_keeps_the_expected_taps_and_channels(kernel, taps):
    sd = synthetic_vgg_imagenet_state_dict()
    hidden = 4  # 16 -> 4: every 4th channel, as 4096 -> 1024
    out, skipped = models.vgg_imagenet_to_deeplab(sd, kernel_size=kernel, hidden=hidden, num_branches=2)
    kept = [0, 4, 8, 12]
    w6 = out["head.branches.1.fc6.weight"]
    assert w6.shape == (hidden, 6, kernel, kernel)
    for a, o in enumerate(kept):
        for c in range(6):
            for b, y in enumerate(taps):
                for d, x in enumerate(taps):
                    assert w6[a, c, b, d] == o * 1000 + c * 100 + y * 10 + x
    assert out["head.branches.0.fc6.bias"].tolist() == kept
    w7 = out["head.branches.0.fc7.weight"]
    assert w7.shape == (hidden, hidden, 1, 1)
    assert w7[:, :, 0, 0].tolist() == [[o * 100 + i for i in kept] for o in kept]
    assert out["head.branches.0.fc7.bias"].tolist() == [-o for o in kept]
    assert sorted(skipped) == ["classifier.6.bias", "classifier.6.weight"]
    assert torch.equal(out["backbone.features.28.weight"], sd["features.28.weight"])


def test_imagenet_file_loads_into_a_deeplab_vgg(tmp_path):
    sd = synthetic_vgg_imagenet_state_dict()
    path = tmp_path / "vgg_imagenet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model = models.vgg16_deeplab(widths=NARROW, hidden=4, rates=(12,), kernel_size=3, pretrained=str(path))
    state = model.state_dict()
    assert torch.equal(state["backbone.features.0.weight"], sd["features.0.weight"])
    assert state["head.branches.0.fc6.weight"][1, 2, 1, 2] == 4 * 1000 + 2 * 100 + 3 * 10 + 6
    report = model.load_report
    assert report.missing == ["head.branches.0.fc8.bias", "head.branches.0.fc8.weight"]
    assert "classifier.6.weight" in report.skipped


def test_full_size_imagenet_vgg_keys_map_onto_every_vgg_model():
    with torch.device("meta"):
        tv = torchvision.models.vgg16().state_dict()
    for name in [n for n in PAPER_MODELS if "resnet" not in n]:
        model = meta_build(name)
        branch = model.head.branches[0]
        out, _ = models.vgg_imagenet_to_deeplab(tv, kernel_size=branch.kernel_size, hidden=branch.fc6.out_channels,
                                                num_branches=len(model.head.branches))
        own = model.state_dict()
        assert set(own) - set(out) == {k for k in own if ".fc8." in k}, name
        assert all(out[k].shape == own[k].shape for k in out), name


def test_imagenet_without_network_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(models.PretrainedWeightsError) as err:
        meta_build("deeplab_v1_largefov", pretrained="imagenet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "pretrained=" in message
    with pytest.raises(models.PretrainedWeightsError, match="resnet101-63fe2227.pth"):
        meta_build("deeplab_v2_resnet101_aspp", pretrained="imagenet")


def test_imagenet_resnet_weights_go_through_torch_hub(monkeypatch):
    torch.manual_seed(0)
    reference = torchvision.models.resnet101().state_dict()
    asked = []

    def fake_hub(url, **kwargs):
        asked.append(url)
        return reference

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    model = models.build("deeplab_v2_resnet101_aspp", pretrained="imagenet")
    assert asked == [torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url]
    assert torch.equal(model.backbone.layer4[2].conv3.weight, reference["layer4.2.conv3.weight"])
    assert torch.equal(model.backbone.bn1.running_var, reference["bn1.running_var"])
    assert model.load_report.skipped == ["fc.bias", "fc.weight"]
    assert all(k.startswith("head.") for k in model.load_report.missing)


def test_small_models_imagenet_weights_are_the_stand_ins_at_full_width_only():
    # pretrained="imagenet" on a small model loads its shipped stand-in (tests/test_standins.py); the stand-ins
    # exist at width 1.0 only, so another width is refused rather than loaded into mismatched shapes.
    with pytest.raises(ValueError, match="trained at model.width=1.0"):
        models.build("small_resnet_aspp", pretrained="imagenet", width=0.5)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(models.PretrainedWeightsError, match="does not exist"):
        models.build("small_resnet_aspp", pretrained=str(tmp_path / "nope.pth"))


def test_deeplab_checkpoint_with_other_classes_loads_backbone_and_reports_head(tmp_path):
    torch.manual_seed(0)
    coco = models.build("small_resnet_aspp", num_classes=91)  # e.g. a COCO-pretrained DeepLab
    path = tmp_path / "coco.pth"
    torch.save({"model": coco.state_dict()}, path)
    with pytest.warns(UserWarning, match="head tensors of another shape"):
        model = models.build("small_resnet_aspp", num_classes=21, pretrained=path)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, coco.backbone.layer3[0].conv1.weight)
    assert model.head.branches[0].conv.weight.shape[0] == 21
    assert "head.branches.0.conv.weight" in model.load_report.skipped
    same = models.build("small_resnet_aspp", num_classes=91, pretrained=path)
    for k, v in coco.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k


def test_checkpoint_with_unknown_or_missing_backbone_keys_is_rejected(tmp_path):
    sd = models.build("small_resnet_aspp").state_dict()
    extra = dict(sd, **{"backbone.layer9.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(models.PretrainedWeightsError, match="layer9"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "extra.pth")
    partial = {k: v for k, v in sd.items() if not k.startswith("backbone.layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(models.PretrainedWeightsError, match="absent"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "partial.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(models.PretrainedWeightsError, match="match neither"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "foreign.pth")


def test_vgg_backbone_keys_follow_torchvision_layout():
    with torch.device("meta"):
        ours = VGG16Dense().features.state_dict()
        tv = torchvision.models.vgg16().features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv.items()}


def test_training_checkpoint_with_extra_objects_loads(tmp_path):
    import numpy as np

    from dlib import config

    sd = models.build("small_vgg_largefov").state_dict()
    # What dlib.train saves beside the weights: numpy RNG arrays and the config as a dict. Plain
    # torch.load(weights_only=True) refuses the numpy arrays; read_state_dict allows exactly those.
    torch.save({"model": sd, "rng": {"numpy": np.random.get_state()}, "config": config.resolve("smoke").to_dict(),
                "iteration": 7}, tmp_path / "ckpt.pt")
    with pytest.raises(Exception):
        torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model = models.build("small_vgg_largefov", pretrained=tmp_path / "ckpt.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert model.load_report.missing == []


class _RunsCode:
    """Unpickling this calls open(marker, "w"): what a malicious checkpoint could do with any callable."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_user_file_that_pickles_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    sd = models.build("small_vgg_largefov").state_dict()
    torch.save({"model": sd, "extra": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(models.PretrainedWeightsError, match=r"\(io\.open\); they are refused because unpickling them could run code"):
        models.build("small_vgg_largefov", pretrained=tmp_path / "evil.pt")
    assert not marker.exists()  # the callable was never called
    # A dataclass instance (not data) is refused too, naming its class.
    from dlib import config
    torch.save({"model": sd, "config": config.resolve("smoke")}, tmp_path / "cfg.pt")
    with pytest.raises(models.PretrainedWeightsError, match="dlib.config.Config"):
        models.read_state_dict(tmp_path / "cfg.pt")
