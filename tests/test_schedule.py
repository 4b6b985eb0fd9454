"""The learning-rate schedule and Caffe's lr multipliers (dlib.training.schedule): poly and step values by hand, the
base lr
of each model family, the optimizer's parameter groups."""

import math

import pytest
import torch
from training_helpers import small_train_cfg, tiny_net  # the training tests' small config and tiny network

from dlib.core import config
from dlib.nets import models
from dlib.training import schedule


def test_poly_lr_values():
    assert schedule.poly_lr(0.01, 0, 100) == 0.01
    assert math.isclose(schedule.poly_lr(0.01, 50, 100), 0.01 * 0.5 ** 0.9)
    assert math.isclose(schedule.poly_lr(2.5e-4, 19999, 20000), 2.5e-4 * (1 / 20000) ** 0.9)
    assert schedule.poly_lr(0.01, 100, 100) == 0.0
    assert math.isclose(schedule.poly_lr(1.0, 25, 100, power=1.0), 0.75)
    with pytest.raises(ValueError):
        schedule.poly_lr(0.01, 101, 100)


def test_base_lr_is_chosen_by_the_model_family():
    # The released solvers: 1e-3 for VGG-16 (DeepLab v1 LargeFOV, v2 VGG-16), 2.5e-4 for ResNet-101.
    gpu = config.resolve("gpu")
    assert schedule.base_lr_for(gpu) == 2.5e-4  # the gpu default model is ResNet-101 ASPP
    for name, lr in (("deeplab_v1_largefov", 1e-3), ("deeplab_v2_vgg16_aspp_l", 1e-3),
                     ("deeplab_v2_vgg16_aspp_s", 1e-3), ("deeplab_v2_resnet101_aspp", 2.5e-4),
                     ("deeplab_v2_resnet101_baseline", 2.5e-4)):
        assert schedule.base_lr_for(gpu, name) == lr, name
        assert schedule.base_lr_for(gpu.replace({"model.name": name})) == lr, name
    # The small families follow the same rule; distinct numbers show which key was read.
    cfg = small_train_cfg(**{"train.base_lr": 0.3, "train.base_lr_vgg": 0.02, "model.name": "small_vgg_largefov"})
    assert schedule.base_lr_for(cfg) == 0.02 and schedule.base_lr_for(cfg, "small_resnet_aspp") == 0.3
    # ... and it is what the optimizer's groups and the schedule start from.
    groups = schedule.optimizer_groups(models.build("small_vgg_largefov", pretrained=None), cfg)
    assert sorted({g["lr"] / g["lr_mult"] for g in groups}) == pytest.approx([0.02])
    assert schedule.learning_rate(cfg, 0) == pytest.approx(0.02)
    # The cpu profile fine-tunes both small families at one rate, its train.base_lr.
    cpu = config.resolve("cpu")
    assert cpu.train.base_lr_vgg == cpu.train.base_lr
    assert (schedule.base_lr_for(cpu, "small_vgg_largefov") == schedule.base_lr_for(cpu, "small_resnet_aspp")
            == cpu.train.base_lr)


def test_step_schedule_is_deeplab_v1s():
    # DeepLab v1 LargeFOV solver: base 1e-3, x0.1 every 2000 iterations, 6000 iterations (hand-computed values).
    assert [schedule.step_lr(1e-3, i, 2000) for i in (0, 1999, 2000, 3999, 4000, 5999)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    assert schedule.step_lr(0.5, 7, 3, gamma=0.5) == pytest.approx(0.125)  # floor(7 / 3) = 2 halvings
    with pytest.raises(ValueError):
        schedule.step_lr(1e-3, -1, 2000)
    gpu = config.resolve("gpu", overrides={"model.name": "deeplab_v1_largefov", "train.lr_policy": "step",
                                           "train.iterations": 6000, "train.batch_size": 20})
    assert [schedule.learning_rate(gpu, i) for i in (0, 2000, 5999)] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert config.resolve("gpu").train.lr_policy == "poly"  # the default stays DeepLab v2's poly
    with pytest.raises(config.ConfigError, match="train.lr_policy"):
        config.resolve("smoke", overrides={"train.lr_policy": "cosine"})


def test_lr_multipliers_follow_caffe_lr_mult():
    cfg = config.resolve("cpu")
    model = models.build("small_resnet_aspp")
    opt = torch.optim.SGD(schedule.optimizer_groups(model, cfg), lr=1.0, momentum=0.9)
    base = schedule.set_lr(opt, cfg, 300)
    assert math.isclose(base, cfg.train.base_lr * (1 - 300 / cfg.train.iterations) ** 0.9)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert {k: by_name[k]["lr"] / base for k in by_name} == pytest.approx(
        {"backbone_weight": 1, "backbone_bias": 2, "head_weight": 10, "head_bias": 20})
    assert by_name["head_bias"]["weight_decay"] == 0 == by_name["backbone_bias"]["weight_decay"]
    assert by_name["head_weight"]["weight_decay"] == 5e-4 == by_name["backbone_weight"]["weight_decay"]
    classifiers = {id(p) for b in model.head.branches for p in b.classifier.parameters()}
    head = {id(p) for k in ("head_weight", "head_bias") for p in by_name[k]["params"]}
    assert head == classifiers
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len([p for p in model.parameters() if p.requires_grad])


def test_one_sgd_step_moves_the_head_ten_times_faster():
    cfg = config.resolve("smoke", overrides={"train.weight_decay": 0.0})
    model = tiny_net()
    opt = torch.optim.SGD(schedule.optimizer_groups(model, cfg), lr=1.0, momentum=0.0, weight_decay=0.0)
    schedule.set_lr(opt, cfg, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(2, 3, 24, 24)).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    lr = cfg.train.base_lr
    for name, p in model.named_parameters():
        mult = {("head", True): 10, ("head", False): 20, ("body", True): 1, ("body", False): 2}[
            (name.split(".")[0], name.endswith("weight"))]
        assert torch.allclose(before[name] - p.detach(), lr * mult * grads[name], atol=1e-7), name


def test_warmup_ramps_the_poly_rate_linearly():
    cfg = config.resolve("smoke", overrides={"train.warmup": 4, "train.iterations": 100, "train.base_lr": 0.01})
    # (iteration + 1) / 4 of the poly rate for the first 4 iterations, then the poly rate itself.
    for it, frac in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        assert math.isclose(schedule.learning_rate(cfg, it), frac * schedule.poly_lr(0.01, it, 100))
    off = cfg.replace({"train.warmup": 0})
    assert schedule.learning_rate(off, 0) == schedule.poly_lr(0.01, 0, 100)
