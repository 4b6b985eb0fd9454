"""dlib.training.train: the schedule and the loss in training, resume == uninterrupted, DDP (gloo) == one process."""

import math
import os
import socket

import pytest
import torch
from training_helpers import small_train_cfg, tiny_net  # the training tests' small objects

from dlib import data
from dlib.core import checkpoint, config
from dlib.nets import models, network
from dlib.nets.msc import MSC
from dlib.training import loss, schedule, train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------------
# Learning rate in training (the schedule's values: test_schedule)
# --------------------------------------------------------------------------------------------

def test_training_follows_the_step_schedule(tmp_path):
    cfg = small_train_cfg(**{"train.lr_policy": "step", "train.step_size": 2, "train.gamma": 0.5})
    train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False)
    assert [r["lr"] for r in train.read_log(tmp_path / "run")] == pytest.approx(
        [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_a_run_of_another_config_is_refused_naming_the_keys(tmp_path):
    cfg = small_train_cfg(**{"train.iterations": 4})
    train.train(cfg, tmp_path / "run", model=tiny_net(), stop_after=2, progress=False)
    path = checkpoint.latest_checkpoint(tmp_path / "run")
    state = torch.load(path, weights_only=True)
    for key in ("lr_policy", "step_size", "gamma"):  # as a checkpoint written before these keys existed
        del state["config"]["train"][key]
    torch.save(state, path)
    with pytest.raises(ValueError, match="train.gamma, train.lr_policy, train.step_size"):
        train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False)
    fresh = train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False, resume=False)
    assert fresh.resumed_from == 0 and len(fresh.log) == 4


# --------------------------------------------------------------------------------------------
# The loss in training (the loss itself: test_loss)
# --------------------------------------------------------------------------------------------


def test_msc_training_puts_a_loss_on_every_scale_and_the_fusion(tmp_path):
    for how, outputs in (("sum", 4), ("mean", 1)):
        cfg = small_train_cfg(**{"train.msc": True, "train.iterations": 1, "model.name": "small_resnet_baseline",
                      "train.msc_loss": how})
        result = train.train(cfg, tmp_path / how, progress=False)
        # At initialisation the classifiers output ~0, so each of the 3 scales + fusion costs log(21):
        # DeepLab v2 sums the four losses; "mean" averages them.
        assert result.log[0]["loss"] == pytest.approx(outputs * math.log(21), rel=0.1)

    model = models.build("small_resnet_baseline").train()
    outputs = loss.as_outputs(MSC(model)(torch.randn(1, 3, 33, 33)), (33, 33))
    assert [tuple(o.shape[-2:]) for o, _ in outputs] == [(5, 5), (4, 4), (3, 3), (5, 5)]
    assert [s for _, s in outputs] == [(33, 33), (25, 25), (17, 17), (33, 33)]


# --------------------------------------------------------------------------------------------
# Checkpoints and resuming
# --------------------------------------------------------------------------------------------

def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    cfg = small_train_cfg()
    ds = data.build_dataset(cfg, "train")
    full = train.train(cfg, tmp_path / "full", model=tiny_net(dropout=0.3), dataset=ds, progress=False)
    assert full.complete and full.iterations == 6
    assert sorted(p.name for p in (tmp_path / "full/checkpoints").iterdir()) == ["ckpt_0000004.pt", "ckpt_0000006.pt"]

    # "Killed" after iteration 3: the last checkpoint is iteration 2, iteration 3 is lost.
    part = train.train(cfg, tmp_path / "cut", model=tiny_net(dropout=0.3), dataset=ds, stop_after=3, progress=False)
    assert part.iterations == 3 and not part.complete
    assert checkpoint.latest_checkpoint(tmp_path / "cut").name == "ckpt_0000002.pt"
    # A new process: a differently initialised model, the same folder.
    resumed = train.train(cfg, tmp_path / "cut", model=tiny_net(seed=99, dropout=0.3), dataset=ds, progress=False)
    assert resumed.resumed_from == 2 and resumed.complete
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_full, log_resumed = train.read_log(tmp_path / "full"), train.read_log(tmp_path / "cut")
    assert [r["iteration"] for r in log_resumed] == list(range(1, 7))
    assert [r["loss"] for r in log_resumed] == pytest.approx([r["loss"] for r in log_full], rel=1e-6)
    assert [r["lr"] for r in log_resumed] == pytest.approx([schedule.poly_lr(0.05, i, 6) for i in range(6)])
    # A finished run resumes to "done" immediately with the same weights.
    again = train.train(cfg, tmp_path / "cut", model=tiny_net(seed=7, dropout=0.3), dataset=ds, progress=False)
    assert again.resumed_from == 6 and torch.equal(again.model.head.weight, full.model.head.weight)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = small_train_cfg(**{"train.iterations": 2})
    train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False)
    with pytest.raises(ValueError, match="train.base_lr"):
        train.train(small_train_cfg(**{"train.iterations": 2, "train.base_lr": 0.1}), tmp_path / "run",
                    model=tiny_net(), progress=False)
    fresh = train.train(small_train_cfg(**{"train.iterations": 2, "train.base_lr": 0.1}), tmp_path / "run",
                        model=tiny_net(), resume=False, progress=False)
    assert fresh.resumed_from == 0


def test_weights_load_from_a_run_folder(tmp_path):
    cfg = small_train_cfg(**{"train.iterations": 2, "model.name": "small_resnet_baseline"})
    result = train.train(cfg, tmp_path / "run", progress=False)
    # model.pretrained may name a run folder (the proxy "COCO" pretraining): its weights are the init.
    model = network.build(config.resolve("smoke", overrides={"model.name": "small_resnet_baseline",
                                                                 "model.pretrained": str(tmp_path / "run")}))
    for k, v in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    # load_run: the configured network, then the run's newest checkpoint (what evaluation and the ablation use)
    loaded = network.load_run(cfg.replace({"model.pretrained": None}), tmp_path / "run")
    for k, v in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    # evaluation's view: MSC around the bare network when asked, the bare network otherwise, whatever it was given
    wrapped = network.as_evaluated(loaded, cfg, msc=True)
    assert isinstance(wrapped, MSC) and wrapped.model is loaded
    assert network.as_evaluated(wrapped, cfg, msc=False) is loaded
    with pytest.raises(ValueError, match="does not fit"):
        network.load_weights(models.build("small_resnet_aspp"), tmp_path / "run")


def test_out_of_memory_suggests_gradient_accumulation(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(train, "train_step", oom)
    with pytest.raises(RuntimeError, match="gradient accumulation.*iter_size=2"):
        train.train(small_train_cfg(), tmp_path / "run", model=tiny_net(), progress=False)


def test_batch_must_split_evenly(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        train.train(small_train_cfg(**{"train.iter_size": 3}), tmp_path / "run", model=tiny_net(), progress=False)


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
    result = train.train(cfg, out_dir, model=tiny_net(), progress=False)
    if rank == 0:
        torch.save(result.model.state_dict(), state_path)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    cfg = small_train_cfg(**{"train.iterations": 4})
    ds = data.build_dataset(cfg, "train")
    single = train.train(cfg, tmp_path / "single", model=tiny_net(), dataset=ds, progress=False)
    accumulated = train.train(config.resolve("smoke", seed=5, overrides={**_overrides(cfg), "train.iter_size": 2}),
                              tmp_path / "accum", model=tiny_net(), dataset=ds, progress=False)
    state_path = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path / "ddp"), str(state_path),
                                os.environ["DLIB_CACHE_DIR"]), nprocs=2, join=True)
    ddp = torch.load(state_path)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(ddp[k], v, atol=1e-5, rtol=1e-4), k
        assert torch.allclose(accumulated.model.state_dict()[k], v, atol=1e-5, rtol=1e-4), k
    assert not torch.equal(single.model.head.weight, tiny_net().head.weight)  # it did train
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

    from dlib.core import config

    with pytest.warns(UserWarning, match="frozen batch normalisation"):
        network.build(config.resolve("gpu", overrides={"model.pretrained": None}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network.build(config.resolve("cpu"))


# --------------------------------------------------------------------------------------------
# Damaged checkpoints, file modes, loader workers
# --------------------------------------------------------------------------------------------

def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


def test_a_truncated_latest_checkpoint_is_named_and_training_resumes_from_the_intact_one(tmp_path):
    cfg = small_train_cfg()
    ds = data.build_dataset(cfg, "train")
    full = train.train(cfg, tmp_path / "full", model=tiny_net(), dataset=ds, progress=False)
    train.train(cfg, tmp_path / "cut", model=tiny_net(), dataset=ds, stop_after=4, progress=False)
    latest = tmp_path / "cut" / "checkpoints" / "ckpt_0000004.pt"
    _truncate(latest)
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt_0000004\.pt cannot be read"):
        checkpoint.read_checkpoint(latest)
    with pytest.warns(UserWarning, match=r"ckpt_0000004\.pt cannot be read.*ckpt_0000002\.pt"):
        resumed = train.train(cfg, tmp_path / "cut", model=tiny_net(seed=3), dataset=ds, progress=False)
    assert resumed.resumed_from == 2 and resumed.complete  # resume goes on from the intact checkpoint
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    # evaluate/load_weights also take the newest intact checkpoint; an explicit damaged file is named
    _truncate(tmp_path / "cut" / "checkpoints" / "ckpt_0000006.pt")
    with pytest.warns(UserWarning, match=r"ckpt_0000006\.pt"):
        network.load_weights(tiny_net(), tmp_path / "cut")
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt_0000006\.pt"):
        network.load_weights(tiny_net(), tmp_path / "cut" / "checkpoints" / "ckpt_0000006.pt")


def test_every_checkpoint_corrupt_names_them_and_the_way_out(tmp_path):
    cfg = small_train_cfg(**{"train.iterations": 2})
    train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False)
    _truncate(tmp_path / "run" / "checkpoints" / "ckpt_0000002.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"no intact checkpoint.*ckpt_0000002\.pt.*--fresh"):
        train.train(cfg, tmp_path / "run", model=tiny_net(), progress=False)


def test_a_size_mismatch_names_the_checkpoint(tmp_path):
    cfg = small_train_cfg(**{"train.iterations": 2, "model.name": "small_resnet_aspp", "model.width": 0.5,
                  "model.pretrained": None})
    train.train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"ckpt_0000002\.pt does not fit this model.*model\.width"):
        network.load_weights(models.build("small_resnet_aspp"), tmp_path / "run")


def test_checkpoints_follow_the_umask_and_loader_workers_follow_the_cores(tmp_path, monkeypatch):
    import warnings

    old = os.umask(0o022)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "excessive worker creation" warning: at most one worker per core
            result = train.train(small_train_cfg(**{"train.iterations": 2, "data.loader_workers": 64}),
                                 tmp_path / "run", model=tiny_net(), progress=False)
    finally:
        os.umask(old)
    assert os.stat(result.checkpoint).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "run" / "train_log.csv").st_mode & 0o777 == 0o644
    assert 1 <= config.available_cpus() <= (os.cpu_count() or 1)
