"""The paper's ablation rows (dlib.experiments.ablation_tables): Tables 3 and 4, one component at a time, per-row
configs."""

import pytest

from dlib.core import config
from dlib.experiments import ablation_tables
from dlib.experiments.ablation_tables import ONE_AT_A_TIME, TABLE3, TABLE4
from dlib.nets import models
from dlib.training import schedule


def test_table4_rows_are_the_papers_numbers_and_add_one_component_each():
    # DeepLab v2, Table 4 (ResNet-101, VOC 2012 val).
    assert [r.paper_miou for r in TABLE4] == [68.72, 71.27, 73.28, 74.87, 75.54, 76.35, 77.69]
    flags = [(r.training.msc, r.training.coco, r.training.aug, r.training.head != "baseline", r.crf)
             for r in TABLE4]
    # Each row switches on exactly one more component (ASPP replaces LargeFOV: same count, other head).
    assert [sum(f) for f in flags] == [0, 1, 2, 3, 4, 4, 5]
    assert TABLE4[4].training.head == "largefov" and TABLE4[5].training.head == "aspp_l"
    assert TABLE4[5].training == TABLE4[6].training  # +CRF reuses the ASPP network


def test_table3_rows_are_the_papers_numbers():
    # DeepLab v2, Table 3 (VGG-16): before / after CRF.
    got = {(r.training.head, r.crf): r.paper_miou for r in TABLE3}
    assert got == {("largefov", False): 65.76, ("largefov", True): 69.84, ("aspp_s", False): 66.98,
                   ("aspp_s", True): 69.73, ("aspp_l", False): 68.96, ("aspp_l", True): 71.57}
    assert {r.training.backbone for r in TABLE3} == {"vgg"}
    # Scale augmentation is a Table-4 component: Table 3's rows are trained without it, and without MSC/COCO.
    assert not any(r.training.aug or r.training.msc or r.training.coco for r in TABLE3)


def test_one_at_a_time_rows_add_a_single_component_to_the_baseline():
    base = ONE_AT_A_TIME[0]
    assert base.training == TABLE4[0].training and not base.crf
    for row in ONE_AT_A_TIME[1:]:
        t = row.training
        assert sum([t.msc, t.coco, t.aug, t.head != "baseline", row.crf]) == 1, row.name


def test_training_config_switches_the_rows_components():
    cfg = config.resolve("cpu")
    full = TABLE4[5].training
    c = ablation_tables.training_config(cfg, full, seed=2)
    assert (c.seed, c.train.msc, c.eval.msc, c.data.scale_aug) == (2, True, True, True)
    assert c.model.name == "small_resnet_aspp" and c.model.coco_checkpoint == "coco"
    assert c.train.iterations == cfg.train.iterations and c.train.msc_loss == "sum"  # the paper's summed MSC loss
    base = ablation_tables.training_config(cfg, TABLE4[0].training, seed=0)
    assert (base.train.msc, base.eval.msc, base.data.scale_aug, base.model.name) == (
        False, False, False, "small_resnet_baseline")
    assert base.model.coco_checkpoint is None and base.model.pretrained == "imagenet"
    # cpu: Table 3's heads on the small VGG-16-shaped network, Table 4's on the small ResNet
    assert [ablation_tables.training_config(cfg, TABLE3[k].training, 0).model.name for k in (0, 2, 4)] == [
        "small_vgg_largefov", "small_vgg_aspp_s", "small_vgg_aspp_l"]
    # gpu profile: the paper's networks; VGG-16 at DeepLab's released base lr 1e-3, ResNet-101 at 2.5e-4.
    gpu = config.resolve("gpu")
    assert ablation_tables.training_config(gpu, full, 0).model.name == "deeplab_v2_resnet101_aspp"
    vgg = ablation_tables.training_config(gpu, TABLE3[4].training, 0)
    assert (vgg.model.name, schedule.base_lr_for(vgg)) == ("deeplab_v2_vgg16_aspp_l", 1e-3)
    assert schedule.base_lr_for(ablation_tables.training_config(gpu, full, 0)) == 2.5e-4
    for row in TABLE4 + TABLE3 + ONE_AT_A_TIME + ablation_tables.COCO_CONTROL:  # every row's network is registered
        for profile in ("cpu", "gpu"):
            assert ablation_tables.model_name(config.resolve(profile), row.training) in models.available()


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_table3_row_trains_without_scale_augmentation(profile):
    cfg = config.resolve(profile)
    for row in TABLE3:
        tcfg = ablation_tables.training_config(cfg, row.training, 0)
        assert tcfg.data.scale_aug is False and not tcfg.train.msc and tcfg.model.coco_checkpoint is None, row.name
    # ... while the Table-4 rows from +Aug on do scale the images (the switch is the row's, not the profile's).
    assert ablation_tables.training_config(cfg, TABLE4[3].training, 0).data.scale_aug is True
