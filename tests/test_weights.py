"""dlib.nets.weights: ImageNet -> DeepLab conversion (fc6/fc7 decimation), loading with a report, unsafe files
refused."""

import urllib.error

import pytest
import torch
import torchvision

from dlib.nets import models, weights
from dlib.nets.backbones import VGG16Dense


def meta_build(name, **kw):
    with torch.device("meta"):
        return models.build(name, **kw)

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
    out, skipped = weights.vgg_imagenet_to_deeplab(sd, kernel_size=kernel, hidden=hidden, num_branches=2)
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
    for name in [n for n in models.available() if models.info(n).backbone == "vgg16"]:
        model = meta_build(name)
        branch = model.head.branches[0]
        out, _ = weights.vgg_imagenet_to_deeplab(tv, kernel_size=branch.kernel_size, hidden=branch.fc6.out_channels,
                                                num_branches=len(model.head.branches))
        own = model.state_dict()
        assert set(own) - set(out) == {k for k in own if ".fc8." in k}, name
        assert all(out[k].shape == own[k].shape for k in out), name


def test_imagenet_without_network_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(weights.PretrainedWeightsError) as err:
        meta_build("deeplab_v1_largefov", pretrained="imagenet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "pretrained=" in message
    with pytest.raises(weights.PretrainedWeightsError, match="resnet101-63fe2227.pth"):
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
    with pytest.raises(weights.PretrainedWeightsError, match="does not exist"):
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
    with pytest.raises(weights.PretrainedWeightsError, match="layer9"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "extra.pth")
    partial = {k: v for k, v in sd.items() if not k.startswith("backbone.layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(weights.PretrainedWeightsError, match="absent"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "partial.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(weights.PretrainedWeightsError, match="match neither"):
        models.build("small_resnet_aspp", pretrained=tmp_path / "foreign.pth")


def test_vgg_backbone_keys_follow_torchvision_layout():
    with torch.device("meta"):
        ours = VGG16Dense().features.state_dict()
        tv = torchvision.models.vgg16().features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv.items()}


def test_training_checkpoint_with_extra_objects_loads(tmp_path):
    from dlib.core import config

    sd = models.build("small_vgg_largefov").state_dict()
    # What dlib.training.train saves beside the weights: RNG states as tensors, lists and numbers, the config as a dict.
    torch.save({"model": sd, "rng": {"torch": torch.get_rng_state(), "python": [3, [1, 2], None]},
                "config": config.resolve("smoke").to_dict(), "iteration": 7}, tmp_path / "ckpt.pt")
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
    with pytest.raises(weights.PretrainedWeightsError,
                       match=r"\(io\.open\); they are refused because unpickling them could run code"):
        models.build("small_vgg_largefov", pretrained=tmp_path / "evil.pt")
    assert not marker.exists()  # the callable was never called
    # A dataclass instance (not data) is refused too, naming its class.
    from dlib.core import config
    torch.save({"model": sd, "config": config.resolve("smoke")}, tmp_path / "cfg.pt")
    with pytest.raises(weights.PretrainedWeightsError, match="dlib.core.config.Config"):
        weights.read_state_dict(tmp_path / "cfg.pt")
