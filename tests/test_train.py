"""dlib.train: poly lr, Caffe lr multipliers, the loss, resume == uninterrupted, DDP (gloo) == one process."""

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlib import checkpoint, config, data, distributed, loss, models, sampling, schedule, train


class Tiny(nn.Module):
    """Three stride-2 convolutions (output stride 8) and a 3x3 classifier named ``head``."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Conv2d(8, 21, 3, padding=1)

    def forward(self, x):
        return self.head(self.body(x))


def _cfg(**extra):
    overrides = {"train.iterations": 6, "train.batch_size": 4, "train.checkpoint_every": 2, "train.log_every": 1,
                 "data.crop_size": 24, "data.proxy_image_size": 32, "data.proxy_train": 12,
                 "train.base_lr": 0.05}
    overrides.update(extra)
    return config.resolve("smoke", seed=5, overrides=overrides)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))


def _tiny(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return Tiny(dropout)


# --------------------------------------------------------------------------------------------
# Learning rate
# --------------------------------------------------------------------------------------------

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
    cfg = _cfg(**{"train.base_lr": 0.3, "train.base_lr_vgg": 0.02, "model.name": "small_vgg_largefov"})
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


def test_training_follows_the_step_schedule(tmp_path):
    cfg = _cfg(**{"train.lr_policy": "step", "train.step_size": 2, "train.gamma": 0.5})
    train.train(cfg, tmp_path / "run", model=_tiny(), progress=False)
    assert [r["lr"] for r in train.read_log(tmp_path / "run")] == pytest.approx(
        [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_a_run_saved_before_the_schedule_keys_existed_still_resumes(tmp_path):
    cfg = _cfg(**{"train.iterations": 4})
    train.train(cfg, tmp_path / "run", model=_tiny(), stop_after=2, progress=False)
    path = checkpoint.latest_checkpoint(tmp_path / "run")
    state = torch.load(path, weights_only=True)
    for key in ("lr_policy", "step_size", "gamma"):  # as a checkpoint written before these keys existed
        del state["config"]["train"][key]
    torch.save(state, path)
    assert train.train(cfg, tmp_path / "run", model=_tiny(), progress=False).resumed_from == 2
    with pytest.raises(ValueError, match="train.lr_policy"):  # but a run of the other schedule is refused
        train.train(cfg.replace({"train.lr_policy": "step"}), tmp_path / "run", model=_tiny(), progress=False)


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
    model = _tiny()
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


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------

def test_loss_is_the_mean_over_valid_pixels_of_the_global_batch_however_it_is_split():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(4, 3, 24, 24)
    y = torch.randint(0, 21, (4, 24, 24))
    y[0, :12] = 255  # different numbers of void pixels per image
    y[3] = 255
    y[3, 0, 0] = 4
    logits = model(x)
    target = y[:, ::8, ::8]  # logit i sits on pixel 8i
    expected = F.cross_entropy(logits, target, ignore_index=255)
    expected.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    info = distributed.DistInfo()
    one = train.train_step(model, [(x, y)], torch.device("cpu"), info, False, 1)
    assert math.isclose(one, float(expected.detach()), rel_tol=1e-5)
    model.zero_grad()
    two = train.train_step(model, [(x[:1], y[:1]), (x[1:], y[1:])], torch.device("cpu"), info, False, 2)
    assert math.isclose(two, float(expected.detach()), rel_tol=1e-5)
    for p, g in zip(model.parameters(), ref):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_msc_training_puts_a_loss_on_every_scale_and_the_fusion(tmp_path):
    for how, outputs in (("sum", 4), ("mean", 1)):
        cfg = _cfg(**{"train.msc": True, "train.iterations": 1, "model.name": "small_resnet_baseline",
                      "train.msc_loss": how})
        result = train.train(cfg, tmp_path / how, progress=False)
        # At initialisation the classifiers output ~0, so each of the 3 scales + fusion costs log(21):
        # DeepLab v2 sums the four losses; "mean" averages them.
        assert result.log[0]["loss"] == pytest.approx(outputs * math.log(21), rel=0.1)
    from dlib.msc import MSC

    model = models.build("small_resnet_baseline").train()
    outputs = loss.as_outputs(MSC(model)(torch.randn(1, 3, 33, 33)), (33, 33))
    assert [tuple(o.shape[-2:]) for o, _ in outputs] == [(5, 5), (4, 4), (3, 3), (5, 5)]
    assert [s for _, s in outputs] == [(33, 33), (25, 25), (17, 17), (33, 33)]


# --------------------------------------------------------------------------------------------
# Checkpoints and resuming
# --------------------------------------------------------------------------------------------

def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    cfg = _cfg()
    ds = data.build_dataset(cfg, "train")
    full = train.train(cfg, tmp_path / "full", model=_tiny(dropout=0.3), dataset=ds, progress=False)
    assert full.complete and full.iterations == 6
    assert sorted(p.name for p in (tmp_path / "full/checkpoints").iterdir()) == ["ckpt_0000004.pt", "ckpt_0000006.pt"]

    # "Killed" after iteration 3: the last checkpoint is iteration 2, iteration 3 is lost.
    part = train.train(cfg, tmp_path / "cut", model=_tiny(dropout=0.3), dataset=ds, stop_after=3, progress=False)
    assert part.iterations == 3 and not part.complete
    assert checkpoint.latest_checkpoint(tmp_path / "cut").name == "ckpt_0000002.pt"
    # A new process: a differently initialised model, the same folder.
    resumed = train.train(cfg, tmp_path / "cut", model=_tiny(seed=99, dropout=0.3), dataset=ds, progress=False)
    assert resumed.resumed_from == 2 and resumed.complete
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_full, log_resumed = train.read_log(tmp_path / "full"), train.read_log(tmp_path / "cut")
    assert [r["iteration"] for r in log_resumed] == list(range(1, 7))
    assert [r["loss"] for r in log_resumed] == pytest.approx([r["loss"] for r in log_full], rel=1e-6)
    assert [r["lr"] for r in log_resumed] == pytest.approx([schedule.poly_lr(0.05, i, 6) for i in range(6)])
    # A finished run resumes to "done" immediately with the same weights.
    again = train.train(cfg, tmp_path / "cut", model=_tiny(seed=7, dropout=0.3), dataset=ds, progress=False)
    assert again.resumed_from == 6 and torch.equal(again.model.head.weight, full.model.head.weight)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = _cfg(**{"train.iterations": 2})
    train.train(cfg, tmp_path / "run", model=_tiny(), progress=False)
    with pytest.raises(ValueError, match="train.base_lr"):
        train.train(_cfg(**{"train.iterations": 2, "train.base_lr": 0.1}), tmp_path / "run", model=_tiny(),
                    progress=False)
    fresh = train.train(_cfg(**{"train.iterations": 2, "train.base_lr": 0.1}), tmp_path / "run", model=_tiny(),
                        resume=False, progress=False)
    assert fresh.resumed_from == 0


def test_weights_load_from_a_run_folder(tmp_path):
    cfg = _cfg(**{"train.iterations": 2, "model.name": "small_resnet_baseline"})
    result = train.train(cfg, tmp_path / "run", progress=False)
    # model.pretrained may name a run folder (the proxy "COCO" pretraining): its weights are the init.
    model = train.build_model(config.resolve("smoke", overrides={"model.name": "small_resnet_baseline",
                                                                 "model.pretrained": str(tmp_path / "run")}))
    for k, v in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(ValueError, match="does not fit"):
        train.load_weights(models.build("small_resnet_aspp"), tmp_path / "run")


def test_out_of_memory_suggests_gradient_accumulation(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(train, "train_step", oom)
    with pytest.raises(RuntimeError, match="gradient accumulation.*iter_size=2"):
        train.train(_cfg(), tmp_path / "run", model=_tiny(), progress=False)


def test_batch_must_split_evenly(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        train.train(_cfg(**{"train.iter_size": 3}), tmp_path / "run", model=_tiny(), progress=False)


def test_sample_stream_is_a_permutation_per_epoch_and_splits_the_global_batch():
    stream = sampling.SampleStream(10, seed=1)
    epoch0 = [stream.index(p) for p in range(10)]
    epoch1 = [stream.index(p) for p in range(10, 20)]
    assert sorted(epoch0) == list(range(10)) == sorted(epoch1) and epoch0 != epoch1
    one = list(sampling.MicroBatches(stream, batch_size=4, iter_size=1, world=1, rank=0, start=1, stop=3))
    parts = [list(sampling.MicroBatches(stream, batch_size=4, iter_size=2, world=2, rank=r, start=1, stop=3))
             for r in range(2)]
    # iteration 1 = positions 4..7: step 0 -> rank 0 gets 4,5 and rank 1 gets 6,7; step 1 -> 8,9 / 10,11 ...
    assert [p for _, p in one[0]] == [4, 5, 6, 7]
    assert [p for _, p in parts[0][0]] == [4] and [p for _, p in parts[1][0]] == [5]
    merged = sorted(p for r in range(2) for b in parts[r] for _, p in b)
    assert merged == sorted(p for b in one for _, p in b)


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, out_dir, state_path, cache):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), DLIB_CACHE_DIR=cache)
    torch.set_num_threads(1)
    result = train.train(cfg, out_dir, model=_tiny(), progress=False)
    if rank == 0:
        torch.save(result.model.state_dict(), state_path)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    cfg = _cfg(**{"train.iterations": 4})
    ds = data.build_dataset(cfg, "train")
    single = train.train(cfg, tmp_path / "single", model=_tiny(), dataset=ds, progress=False)
    accumulated = train.train(config.resolve("smoke", seed=5, overrides={**_overrides(cfg), "train.iter_size": 2}),
                              tmp_path / "accum", model=_tiny(), dataset=ds, progress=False)
    state_path = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path / "ddp"), str(state_path),
                                os.environ["DLIB_CACHE_DIR"]), nprocs=2, join=True)
    ddp = torch.load(state_path)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(ddp[k], v, atol=1e-5, rtol=1e-4), k
        assert torch.allclose(accumulated.model.state_dict()[k], v, atol=1e-5, rtol=1e-4), k
    assert not torch.equal(single.model.head.weight, _tiny().head.weight)  # it did train
    log = train.read_log(tmp_path / "ddp")
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in single.log], rel=1e-4)


def _overrides(cfg):
    return {"train.iterations": cfg.train.iterations, "train.batch_size": cfg.train.batch_size,
            "train.checkpoint_every": cfg.train.checkpoint_every, "train.log_every": 1,
            "data.crop_size": cfg.data.crop_size, "data.proxy_image_size": cfg.data.proxy_image_size,
            "data.proxy_train": cfg.data.proxy_train, "train.base_lr": cfg.train.base_lr}


def test_frozen_bn_without_pretrained_weights_warns_and_small_models_do_not():
    # A frozen-BN ResNet-101 from a random init diverges (measured on CPU and on an H100: NaN within 20
    # iterations): building one must say so; the small from-scratch models must not warn.
    import warnings

    from dlib import config, train

    with pytest.warns(UserWarning, match="frozen batch normalisation"):
        train.build_model(config.resolve("gpu", overrides={"model.pretrained": None}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.build_model(config.resolve("cpu"))


# --------------------------------------------------------------------------------------------
# Damaged checkpoints, file modes, loader workers (issue 10, defects 4 and 8)
# --------------------------------------------------------------------------------------------

def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


def test_a_truncated_latest_checkpoint_is_named_and_training_resumes_from_the_intact_one(tmp_path):
    cfg = _cfg()
    ds = data.build_dataset(cfg, "train")
    full = train.train(cfg, tmp_path / "full", model=_tiny(), dataset=ds, progress=False)
    train.train(cfg, tmp_path / "cut", model=_tiny(), dataset=ds, stop_after=4, progress=False)
    latest = tmp_path / "cut" / "checkpoints" / "ckpt_0000004.pt"
    _truncate(latest)
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt_0000004\.pt cannot be read"):
        checkpoint.read_checkpoint(latest)
    with pytest.warns(UserWarning, match=r"ckpt_0000004\.pt cannot be read.*ckpt_0000002\.pt"):
        resumed = train.train(cfg, tmp_path / "cut", model=_tiny(seed=3), dataset=ds, progress=False)
    assert resumed.resumed_from == 2 and resumed.complete  # resume goes on from the intact checkpoint
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    # evaluate/load_weights also take the newest intact checkpoint; an explicit damaged file is named
    _truncate(tmp_path / "cut" / "checkpoints" / "ckpt_0000006.pt")
    with pytest.warns(UserWarning, match=r"ckpt_0000006\.pt"):
        train.load_weights(_tiny(), tmp_path / "cut")
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt_0000006\.pt"):
        train.load_weights(_tiny(), tmp_path / "cut" / "checkpoints" / "ckpt_0000006.pt")


def test_every_checkpoint_corrupt_names_them_and_the_way_out(tmp_path):
    cfg = _cfg(**{"train.iterations": 2})
    train.train(cfg, tmp_path / "run", model=_tiny(), progress=False)
    _truncate(tmp_path / "run" / "checkpoints" / "ckpt_0000002.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"no intact checkpoint.*ckpt_0000002\.pt.*--fresh"):
        train.train(cfg, tmp_path / "run", model=_tiny(), progress=False)


def test_a_size_mismatch_names_the_checkpoint(tmp_path):
    cfg = _cfg(**{"train.iterations": 2, "model.name": "small_resnet_aspp", "model.width": 0.5,
                  "model.pretrained": None})
    train.train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"ckpt_0000002\.pt does not fit this model.*model\.width"):
        train.load_weights(models.build("small_resnet_aspp"), tmp_path / "run")


def test_checkpoints_follow_the_umask_and_loader_workers_follow_the_cores(tmp_path, monkeypatch):
    import warnings

    old = os.umask(0o022)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "excessive worker creation" warning: at most one worker per core
            result = train.train(_cfg(**{"train.iterations": 2, "data.loader_workers": 64}), tmp_path / "run",
                                 model=_tiny(), progress=False)
    finally:
        os.umask(old)
    assert os.stat(result.checkpoint).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "run" / "train_log.csv").st_mode & 0o777 == 0o644
    assert 1 <= train.available_cpus() <= (os.cpu_count() or 1)
