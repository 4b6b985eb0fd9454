"""The shipped pretrained stand-ins (dlib.nets.standins): cards, checksums, loading, the pretext task."""

import hashlib
import json
import shutil

import pytest
import torch

from dlib.core import config
from dlib.experiments import pretrain
from dlib.nets import models, network, standins
from dlib.nets.standins import CARD_FIELDS

SHIPPED = [standins.imagenet_path(f) for f in standins.FAMILIES] + [standins.coco_path(m) for m in standins.COCO_MODELS]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_stand_in_ships_with_a_card_whose_checksum_matches(path):
    assert path.is_file(), f"{path} is not committed"
    card = json.loads(standins.card_path(path).read_text())
    assert CARD_FIELDS <= set(card)
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # independent of dlib's helper
    assert card["iterations"] == card["config"]["train"]["iterations"]
    assert all(0 < v <= 1 for scores in card["final_scores"].values() for v in scores.values())


def test_stand_ins_stay_under_ten_megabytes_together():
    assert sum(p.stat().st_size for p in standins.WEIGHTS_DIR.glob("*.pt")) <= 10 * 2**20


def test_imagenet_stand_in_loads_the_backbone_freezes_bn_and_leaves_the_classifier_fresh():
    state = torch.load(standins.imagenet_path("small_resnet"), weights_only=True)
    torch.manual_seed(0)
    model = models.build("small_resnet_aspp", pretrained="imagenet")
    own = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert backbone and all(torch.equal(own[k], state[k]) for k in backbone)
    # The stand-in was trained as small_resnet_baseline on 15 pretext classes: no classifier fits 21 classes.
    assert state["head.branches.0.conv.weight"].shape[0] == pretrain.PRETEXT_CLASSES
    assert not any(k.startswith("head.") for k in model.load_report.loaded)
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    assert bns and all(not m.training and not m.weight.requires_grad for m in bns)
    scratch = models.build("small_resnet_aspp")  # no stand-in: BN trains
    scratch.train()
    assert all(m.training for m in scratch.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_vgg_stand_in_copies_fc6_fc7_into_every_aspp_branch():
    state = torch.load(standins.imagenet_path("small_vgg"), weights_only=True)
    model = models.build("small_vgg_aspp_l", pretrained="imagenet")
    for b in range(4):
        branch = model.head.branches[b]
        assert torch.equal(branch.fc6.weight, state["head.branches.0.fc6.weight"])
        assert torch.equal(branch.fc7.bias, state["head.branches.0.fc7.bias"])


def test_a_damaged_stand_in_is_refused_naming_the_file(tmp_path, monkeypatch):
    for path in (standins.imagenet_path("small_resnet"), standins.card_path(standins.imagenet_path("small_resnet"))):
        shutil.copy(path, tmp_path / path.name)
    damaged = tmp_path / "small_resnet_imagenet.pt"
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(standins, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(standins.StandinError, match="small_resnet_imagenet.pt does not match the sha256"):
        models.build("small_resnet_baseline", pretrained="imagenet")
    damaged.unlink()
    with pytest.raises(standins.StandinError, match="missing"):
        models.build("small_resnet_baseline", pretrained="imagenet")


def test_coco_setting_names_the_stand_in_of_the_model_being_trained_or_a_path():
    cfg = config.resolve("cpu", overrides={"model.name": "small_resnet_largefov"})
    assert standins.resolve_coco(cfg) == str(standins.WEIGHTS_DIR / "small_resnet_largefov_coco.pt")
    assert standins.resolve_coco(cfg.replace({"model.coco_checkpoint": "/x/coco.pth"})) == "/x/coco.pth"
    with pytest.raises(ValueError, match="no COCO stand-in"):
        standins.resolve_coco(cfg.replace({"model.name": "small_vgg_largefov"}))


def test_coco_stand_in_holds_the_whole_model_classifier_included():
    from dlib.experiments import ablation

    model = models.build("small_resnet_aspp", pretrained="imagenet")
    ablation.load_coco_checkpoint(model, str(standins.coco_path("small_resnet_aspp")))
    state = torch.load(standins.coco_path("small_resnet_aspp"), weights_only=True)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


def test_cpu_profile_loads_the_stand_ins_through_the_gpu_profiles_settings():
    cfg = config.resolve("cpu")
    assert (cfg.model.pretrained, cfg.model.coco_checkpoint) == ("imagenet", "coco")
    model = network.build(cfg)
    assert model.load_report is not None and "ImageNet stand-in" in model.load_report.source
