"""The ablation tables (dlib.ablation): the paper's rows, the per-row configs, the runs, CRF tuning data."""

import numpy as np
import pytest
import torch

from dlib import ablation, ablation_tables, checkpoint, config, models, schedule
from dlib.ablation_tables import ONE_AT_A_TIME, TABLE3, TABLE4


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
    # cpu deviation: Table 3's heads on the small ResNet (the small VGG does not train in budget; dlib.ablation)
    assert ablation_tables.training_config(cfg, TABLE3[0].training, 0).model.name == "small_resnet_largefov"
    # gpu profile: the paper's networks; VGG-16 at DeepLab's released base lr 1e-3, ResNet-101 at 2.5e-4.
    gpu = config.resolve("gpu")
    assert ablation_tables.training_config(gpu, full, 0).model.name == "deeplab_v2_resnet101_aspp"
    vgg = ablation_tables.training_config(gpu, TABLE3[4].training, 0)
    assert (vgg.model.name, schedule.base_lr_for(vgg)) == ("deeplab_v2_vgg16_aspp_l", 1e-3)
    assert schedule.base_lr_for(ablation_tables.training_config(gpu, full, 0)) == 2.5e-4
    for row in TABLE4 + TABLE3 + ONE_AT_A_TIME:  # every row's network is registered
        for profile in ("cpu", "gpu"):
            assert ablation_tables.model_name(config.resolve(profile), row.training) in models.available()


def test_cpu_profile_runs_at_least_three_seeds():
    assert len(set(config.resolve("cpu").ablation.seeds)) >= 3


def test_split_holdout_keeps_the_last_images_out_of_training():
    class Fake:
        ids = [f"id{i}" for i in range(10)]

        def __len__(self):
            return 10

        def __getitem__(self, i):
            return i

    train, held = ablation.split_holdout(Fake(), 3)
    assert [train[i] for i in range(len(train))] == list(range(7))
    assert [held[i] for i in range(len(held))] == [7, 8, 9]
    assert held.ids == ["id7", "id8", "id9"] and not set(train.ids) & set(held.ids)
    for bad in (0, 10, 11):
        with pytest.raises(ValueError, match="crf_holdout"):
            ablation.split_holdout(Fake(), bad)


def test_coco_rows_on_voc_without_a_checkpoint_are_not_run_and_nothing_is_built(tmp_path, monkeypatch):
    from dlib import train

    def no_build(*_a, **_k):
        raise AssertionError("must not build a model (nor download ImageNet weights)")

    monkeypatch.setattr(train, "build_model", no_build)
    cfg = config.resolve("gpu", overrides={"model.coco_checkpoint": str(tmp_path / "missing.pt")})
    out = ablation.run_training(cfg, TABLE4[2].training, 0, tmp_path)
    assert out["status"].startswith("not run: no COCO-pretrained init")


def test_crf_is_tuned_on_held_out_training_images_never_on_val(tmp_path, monkeypatch):
    from dlib import crf_tuning, data

    cfg = config.resolve("smoke")
    seen = {}
    real = crf_tuning.cross_validate

    def spy(images, probs, labels, **kw):
        seen["images"] = [np.asarray(i) for i in images]
        return real(images, probs, labels, **kw)

    monkeypatch.setattr(crf_tuning, "cross_validate", spy)
    training = TABLE4[0].training
    cv = ablation.tune_crf(cfg, training, 0, tmp_path)
    train_set = data.build_dataset(ablation_tables.training_config(cfg, training, 0), "train")
    n, k = len(train_set), cfg.ablation.crf_holdout
    expected = [train_set[i][0] for i in range(n - k, n)]
    assert len(seen["images"]) == k and all(np.array_equal(a, b) for a, b in zip(seen["images"], expected))
    val = data.build_dataset(cfg, "val")
    assert not any(np.array_equal(a, val[j][0]) for a in seen["images"] for j in range(len(val)))
    grid = ablation.crf_grid(cfg)
    assert cv.best["w1"] in grid["w1"] and cv.best["theta_beta"] in grid["theta_beta"]
    # Cached: a second call reads the JSON instead of running the search again.
    monkeypatch.setattr(crf_tuning, "cross_validate", lambda *a, **k: pytest.fail("search ran twice"))
    again = ablation.tune_crf(cfg, training, 0, tmp_path)
    assert again.best == cv.best


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_every_table3_row_trains_without_scale_augmentation(profile):
    cfg = config.resolve(profile)
    for row in TABLE3:
        tcfg = ablation_tables.training_config(cfg, row.training, 0)
        assert tcfg.data.scale_aug is False and not tcfg.train.msc and tcfg.model.coco_checkpoint is None, row.name
    # ... while the Table-4 rows from +Aug on do scale the images (the switch is the row's, not the profile's).
    assert ablation_tables.training_config(cfg, TABLE4[3].training, 0).data.scale_aug is True


def test_each_table3_crf_row_gets_its_own_crf_search(tmp_path, monkeypatch):
    cfg = config.resolve("smoke")
    tuned = []
    monkeypatch.setattr(ablation, "run_trainings", lambda c, jobs, root, **k: {
        (t.key, s): {"status": "ok", "mean_iou": 0.5, "mean_iou_crf": 0.6} for t, s, _ in jobs})

    def fake_tune(c, training, seed, root, **k):
        tuned.append((training, seed))
        return type("CV", (), {"best": {"w1": 4.0, "theta_alpha": 8.0, "theta_beta": 3.0}})()

    monkeypatch.setattr(ablation, "tune_crf", fake_tune)
    res = ablation.run_tables(cfg, tmp_path, tables=("table3",))
    crf_heads = [r.training for r in TABLE3 if r.crf]
    assert [t for t, _ in tuned] == crf_heads and len(set(crf_heads)) == 3  # LargeFOV, ASPP-S, ASPP-L: one each
    assert all(seed == cfg.ablation.seeds[0] for _, seed in tuned)
    assert set(res.crf) == {t.key for t in crf_heads}


def test_crf_tuning_images_follow_the_protocol(tmp_path):
    from dlib import data

    # gpu: the paper's 100 val images (DeepLab v2, Sec. 4.1); cpu and smoke: held-out training images.
    assert config.resolve("gpu").ablation.crf_tune_on == "val100"
    assert {config.resolve(p).ablation.crf_tune_on for p in ("cpu", "smoke")} == {"heldout_train"}
    cfg = config.resolve("smoke", overrides={"ablation.crf_tune_on": "val100"})
    tcfg = ablation_tables.training_config(cfg, TABLE4[0].training, 0)
    chosen = ablation.crf_tuning_images(cfg, tcfg)
    val = data.build_dataset(tcfg, "val")
    assert len(chosen) == min(100, len(val)) and all(
        np.array_equal(chosen[i][0], val[i][0]) for i in range(len(chosen)))  # the first val images, also scored
    assert "100 val images" in ablation.crf_tuning_description(cfg)
    # The tuning choice names its run: "val100" trains on every training image, so it trains into another folder.
    smoke = config.resolve("smoke")
    assert ablation.run_dir_of(cfg, TABLE4[0].training, 0, tmp_path) != ablation.run_dir_of(
        smoke, TABLE4[0].training, 0, tmp_path)


def test_keys_added_at_their_neutral_value_keep_a_runs_name(tmp_path):
    cpu = config.resolve("cpu")
    d = config.identity_dict(cpu)
    assert "lr_policy" not in d["train"] and "crf_tune_on" not in d["ablation"]  # as before the keys existed
    training = TABLE4[0].training
    same = cpu.replace({"train.lr_policy": "poly", "ablation.crf_tune_on": "heldout_train"})
    assert ablation.run_dir_of(same, training, 0, tmp_path) == ablation.run_dir_of(cpu, training, 0, tmp_path)
    step = cpu.replace({"train.lr_policy": "step"})
    assert ablation.run_dir_of(step, training, 0, tmp_path) != ablation.run_dir_of(cpu, training, 0, tmp_path)


def test_run_tables_on_smoke_fills_every_row_and_resumes_without_retraining(tmp_path, monkeypatch):
    from dlib import train

    cfg = config.resolve("smoke")
    res = ablation.run_tables(cfg, tmp_path)
    t4, t3 = res.tables["table4"], res.tables["table3"]
    assert list(t4["row"]) == [r.name for r in TABLE4] and list(t3["row"]) == [r.name for r in TABLE3]
    assert (t4["status"] == "ok").all() and (t3["status"] == "ok").all()
    assert (t4["seeds"] == len(cfg.ablation.seeds)).all()
    crf_trainings = {r.training.key for r in TABLE4 + TABLE3 + ONE_AT_A_TIME if r.crf}
    assert set(res.crf) == crf_trainings  # each CRF row's network gets its own cross-validated CRF
    crf_runs = [v for (key, _), v in res.runs.items() if key == TABLE4[6].training.key and "crf_params" in v]
    best = res.crf[TABLE4[6].training.key].best
    assert len(crf_runs) == len(cfg.ablation.seeds)
    assert all(r["crf_params"] == {k: float(best[k]) for k in ("w1", "theta_alpha", "theta_beta")} for r in crf_runs)
    assert 0 <= t4["measured_mean"].min() and t4["measured_mean"].max() <= 100
    # Everything is cached: a second call trains and evaluates nothing.
    from dlib import evaluate

    monkeypatch.setattr(train, "train_step", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("re-evaluated a cached run"))
    again = ablation.run_tables(cfg, tmp_path)
    assert again.tables["table4"]["measured_mean"].tolist() == t4["measured_mean"].tolist()


def test_a_training_does_not_depend_on_what_ran_before_it(tmp_path):
    # Worker processes run several trainings in turn: the result must not depend on the global RNG state.

    cfg = config.resolve("smoke")
    training = TABLE4[0].training
    states = []
    for k, noise in enumerate((0, 5)):
        torch.manual_seed(1000 + noise)
        torch.rand(noise + 1)  # another history of the global RNG
        root = tmp_path / f"r{k}"
        ablation.run_training(cfg, training, 0, root)
        ckpt = checkpoint.latest_checkpoint(ablation.run_dir_of(cfg, training, 0, root))
        states.append(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
