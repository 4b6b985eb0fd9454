"""The ablation tables (dlib.ablation): the paper's rows, the per-row configs, the summary, CRF tuning data."""

import statistics

import numpy as np
import pytest
import torch

from dlib import ablation, config, models, train


def test_table4_rows_are_the_papers_numbers_and_add_one_component_each():
    # DeepLab v2, Table 4 (ResNet-101, VOC 2012 val).
    assert [r.paper_miou for r in ablation.TABLE4] == [68.72, 71.27, 73.28, 74.87, 75.54, 76.35, 77.69]
    flags = [(r.training.msc, r.training.coco, r.training.aug, r.training.head != "baseline", r.crf)
             for r in ablation.TABLE4]
    # Each row switches on exactly one more component (ASPP replaces LargeFOV: same count, other head).
    assert [sum(f) for f in flags] == [0, 1, 2, 3, 4, 4, 5]
    assert ablation.TABLE4[4].training.head == "largefov" and ablation.TABLE4[5].training.head == "aspp_l"
    assert ablation.TABLE4[5].training == ablation.TABLE4[6].training  # +CRF reuses the ASPP network


def test_table3_rows_are_the_papers_numbers():
    # DeepLab v2, Table 3 (VGG-16): before / after CRF.
    got = {(r.training.head, r.crf): r.paper_miou for r in ablation.TABLE3}
    assert got == {("largefov", False): 65.76, ("largefov", True): 69.84, ("aspp_s", False): 66.98,
                   ("aspp_s", True): 69.73, ("aspp_l", False): 68.96, ("aspp_l", True): 71.57}
    assert {r.training.backbone for r in ablation.TABLE3} == {"vgg"}
    # Scale augmentation is a Table-4 component: Table 3's rows are trained without it, and without MSC/COCO.
    assert not any(r.training.aug or r.training.msc or r.training.coco for r in ablation.TABLE3)


def test_one_at_a_time_rows_add_a_single_component_to_the_baseline():
    base = ablation.ONE_AT_A_TIME[0]
    assert base.training == ablation.TABLE4[0].training and not base.crf
    for row in ablation.ONE_AT_A_TIME[1:]:
        t = row.training
        assert sum([t.msc, t.coco, t.aug, t.head != "baseline", row.crf]) == 1, row.name


def test_training_config_switches_the_rows_components():
    cfg = config.resolve("cpu")
    full = ablation.TABLE4[5].training
    c = ablation.training_config(cfg, full, seed=2)
    assert (c.seed, c.train.msc, c.eval.msc, c.data.scale_aug) == (2, True, True, True)
    assert c.model.name == "small_resnet_aspp" and c.model.coco_checkpoint == "coco"
    assert c.train.iterations == cfg.train.iterations and c.train.msc_loss == "sum"  # the paper's summed MSC loss
    base = ablation.training_config(cfg, ablation.TABLE4[0].training, seed=0)
    assert (base.train.msc, base.eval.msc, base.data.scale_aug, base.model.name) == (
        False, False, False, "small_resnet_baseline")
    assert base.model.coco_checkpoint is None and base.model.pretrained == "imagenet"
    # cpu deviation: Table 3's heads on the small ResNet (the small VGG does not train in budget; dlib.ablation)
    assert ablation.training_config(cfg, ablation.TABLE3[0].training, 0).model.name == "small_resnet_largefov"
    # gpu profile: the paper's networks; VGG-16 at DeepLab's released base lr 1e-3, ResNet-101 at 2.5e-4.
    gpu = config.resolve("gpu")
    assert ablation.training_config(gpu, full, 0).model.name == "deeplab_v2_resnet101_aspp"
    vgg = ablation.training_config(gpu, ablation.TABLE3[4].training, 0)
    assert (vgg.model.name, train.base_lr_for(vgg)) == ("deeplab_v2_vgg16_aspp_l", 1e-3)
    assert train.base_lr_for(ablation.training_config(gpu, full, 0)) == 2.5e-4
    for row in ablation.TABLE4 + ablation.TABLE3 + ablation.ONE_AT_A_TIME:  # every row's network is registered
        for profile in ("cpu", "gpu"):
            assert ablation.model_name(config.resolve(profile), row.training) in models.available()


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


def _fake_results(values):
    """values: {training key: {seed: (miou, miou_crf)}} -> the results dict run_trainings returns."""
    return {(key, seed): {"status": "ok", "mean_iou": a / 100, "mean_iou_crf": b / 100, "model": "m"}
            for key, per_seed in values.items() for seed, (a, b) in per_seed.items()}


def test_summarise_mean_std_and_paired_increments_against_statistics():
    rows = ablation.TABLE4
    keys = [r.training.key for r in rows]
    rng = np.random.default_rng(0)
    values = {k: {s: (float(rng.uniform(30, 60)), float(rng.uniform(30, 60))) for s in (0, 1, 2)} for k in keys}
    df = ablation.summarise(rows, _fake_results(values), seeds=(0, 1, 2))
    for i, row in enumerate(rows):
        per = [values[row.training.key][s][1 if row.crf else 0] for s in (0, 1, 2)]
        assert df.loc[i, "measured_mean"] == pytest.approx(statistics.mean(per))
        assert df.loc[i, "measured_std"] == pytest.approx(statistics.stdev(per))
        assert df.loc[i, "seeds"] == 3 and df.loc[i, "status"] == "ok"
        if i:
            prev = [values[rows[i - 1].training.key][s][1 if rows[i - 1].crf else 0] for s in (0, 1, 2)]
            diffs = [a - b for a, b in zip(per, prev)]
            assert df.loc[i, "measured_increment"] == pytest.approx(statistics.mean(diffs))
            assert df.loc[i, "increment_std"] == pytest.approx(statistics.stdev(diffs))
            assert df.loc[i, "paper_increment"] == pytest.approx(row.paper_miou - rows[i - 1].paper_miou)


def test_summarise_reports_rows_that_did_not_run():
    rows = ablation.TABLE4
    results = _fake_results({rows[0].training.key: {0: (50.0, 55.0)}})
    results[(rows[2].training.key, 0)] = {"status": "not run: no COCO-pretrained init"}
    df = ablation.summarise(rows, results, seeds=(0,))
    assert df.loc[0, "status"] == "ok" and df.loc[0, "measured_mean"] == pytest.approx(50.0)
    assert df.loc[2, "status"].startswith("not run: no COCO") and np.isnan(df.loc[2, "measured_mean"])
    assert df.loc[1, "status"] == "not run" and df.loc[2, "seeds"] == 0


def test_coco_rows_on_voc_without_a_checkpoint_are_not_run_and_nothing_is_built(tmp_path, monkeypatch):
    from dlib import train

    def no_build(*_a, **_k):
        raise AssertionError("must not build a model (nor download ImageNet weights)")

    monkeypatch.setattr(train, "build_model", no_build)
    cfg = config.resolve("gpu", overrides={"model.coco_checkpoint": str(tmp_path / "missing.pt")})
    out = ablation.run_training(cfg, ablation.TABLE4[2].training, 0, tmp_path)
    assert out["status"].startswith("not run: no COCO-pretrained init")


def test_crf_is_tuned_on_held_out_training_images_never_on_val(tmp_path, monkeypatch):
    from dlib import crf_tuning
    from dlib import data

    cfg = config.resolve("smoke")
    seen = {}
    real = crf_tuning.cross_validate

    def spy(images, probs, labels, **kw):
        seen["images"] = [np.asarray(i) for i in images]
        return real(images, probs, labels, **kw)

    monkeypatch.setattr(crf_tuning, "cross_validate", spy)
    training = ablation.TABLE4[0].training
    cv = ablation.tune_crf(cfg, training, 0, tmp_path)
    train_set = data.build_dataset(ablation.training_config(cfg, training, 0), "train")
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
    for row in ablation.TABLE3:
        tcfg = ablation.training_config(cfg, row.training, 0)
        assert tcfg.data.scale_aug is False and not tcfg.train.msc and tcfg.model.coco_checkpoint is None, row.name
    # ... while the Table-4 rows from +Aug on do scale the images (the switch is the row's, not the profile's).
    assert ablation.training_config(cfg, ablation.TABLE4[3].training, 0).data.scale_aug is True


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
    crf_heads = [r.training for r in ablation.TABLE3 if r.crf]
    assert [t for t, _ in tuned] == crf_heads and len(set(crf_heads)) == 3  # LargeFOV, ASPP-S, ASPP-L: one each
    assert all(seed == cfg.ablation.seeds[0] for _, seed in tuned)
    assert set(res.crf) == {t.key for t in crf_heads}


def test_crf_tuning_images_follow_the_protocol(tmp_path):
    from dlib import data

    # gpu: the paper's 100 val images (DeepLab v2, Sec. 4.1); cpu and smoke: held-out training images.
    assert config.resolve("gpu").ablation.crf_tune_on == "val100"
    assert {config.resolve(p).ablation.crf_tune_on for p in ("cpu", "smoke")} == {"heldout_train"}
    cfg = config.resolve("smoke", overrides={"ablation.crf_tune_on": "val100"})
    tcfg = ablation.training_config(cfg, ablation.TABLE4[0].training, 0)
    chosen = ablation.crf_tuning_images(cfg, tcfg)
    val = data.build_dataset(tcfg, "val")
    assert len(chosen) == min(100, len(val)) and all(
        np.array_equal(chosen[i][0], val[i][0]) for i in range(len(chosen)))  # the first val images, also scored
    assert "100 val images" in ablation.crf_tuning_description(cfg)
    # The tuning choice names its run: "val100" trains on every training image, so it trains into another folder.
    smoke = config.resolve("smoke")
    assert ablation.run_dir_of(cfg, ablation.TABLE4[0].training, 0, tmp_path) != ablation.run_dir_of(
        smoke, ablation.TABLE4[0].training, 0, tmp_path)


def test_keys_added_at_their_neutral_value_keep_a_runs_name(tmp_path):
    cpu = config.resolve("cpu")
    d = config.identity_dict(cpu)
    assert "lr_policy" not in d["train"] and "crf_tune_on" not in d["ablation"]  # as before the keys existed
    training = ablation.TABLE4[0].training
    same = cpu.replace({"train.lr_policy": "poly", "ablation.crf_tune_on": "heldout_train"})
    assert ablation.run_dir_of(same, training, 0, tmp_path) == ablation.run_dir_of(cpu, training, 0, tmp_path)
    step = cpu.replace({"train.lr_policy": "step"})
    assert ablation.run_dir_of(step, training, 0, tmp_path) != ablation.run_dir_of(cpu, training, 0, tmp_path)


def test_run_tables_on_smoke_fills_every_row_and_resumes_without_retraining(tmp_path, monkeypatch):
    from dlib import train

    cfg = config.resolve("smoke")
    res = ablation.run_tables(cfg, tmp_path)
    t4, t3 = res.tables["table4"], res.tables["table3"]
    assert list(t4["row"]) == [r.name for r in ablation.TABLE4] and list(t3["row"]) == [r.name for r in ablation.TABLE3]
    assert (t4["status"] == "ok").all() and (t3["status"] == "ok").all()
    assert (t4["seeds"] == len(cfg.ablation.seeds)).all()
    crf_trainings = {r.training.key for r in ablation.TABLE4 + ablation.TABLE3 + ablation.ONE_AT_A_TIME if r.crf}
    assert set(res.crf) == crf_trainings  # each CRF row's network gets its own cross-validated CRF
    crf_runs = [v for (key, _), v in res.runs.items() if key == ablation.TABLE4[6].training.key and "crf_params" in v]
    best = res.crf[ablation.TABLE4[6].training.key].best
    assert len(crf_runs) == len(cfg.ablation.seeds)
    assert all(r["crf_params"] == {k: float(best[k]) for k in ("w1", "theta_alpha", "theta_beta")} for r in crf_runs)
    assert 0 <= t4["measured_mean"].min() and t4["measured_mean"].max() <= 100
    # Everything is cached: a second call trains and evaluates nothing.
    from dlib import evaluate

    monkeypatch.setattr(train, "_step", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("re-evaluated a cached run"))
    again = ablation.run_tables(cfg, tmp_path)
    assert again.tables["table4"]["measured_mean"].tolist() == t4["measured_mean"].tolist()


def test_increment_interval_against_a_hand_computed_t_interval():
    # Differences 1, 2, 3: mean 2, sd 1, n 3; t(0.975, df=2) = 4.303 (printed t tables): half-width 4.303/sqrt(3).
    st = ablation.increment_stats([1.0, 2.0, 3.0])
    assert (st["mean"], st["sd"], st["n"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert st["ci_low"] == pytest.approx(2 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert st["ci_high"] == pytest.approx(2 + 4.3027 / 3 ** 0.5, abs=1e-3)
    # Five seeds: t(0.975, df=4) = 2.776.
    st5 = ablation.increment_stats([0.5, 1.5, 1.0, 2.0, 0.0])
    sd = statistics.stdev([0.5, 1.5, 1.0, 2.0, 0.0])
    assert st5["ci_high"] - st5["mean"] == pytest.approx(2.7764 * sd / 5 ** 0.5, abs=1e-3)
    one = ablation.increment_stats([4.0])
    assert one["mean"] == 4.0 and np.isnan(one["ci_low"])


def test_verdicts_follow_the_interval():
    assert ablation.verdict(0.2, 3.0, 2.5).startswith("helps") and "as in the paper" in ablation.verdict(0.2, 3.0, 2.5)
    assert ablation.verdict(-3.0, -0.1, 2.5) == "hurts (interval below 0); the paper's sign is the opposite"
    assert ablation.verdict(-1.0, 2.0, 2.5) == "not resolved (interval contains 0)"
    assert ablation.verdict(float("nan"), float("nan")).startswith("not measured")


def test_summarise_writes_the_interval_columns():
    rows = ablation.TABLE4[:2]
    values = {rows[0].training.key: {s: (40.0 + s, 0.0) for s in (0, 1, 2)},
              rows[1].training.key: {s: (41.0 + 2 * s, 0.0) for s in (0, 1, 2)}}  # diffs 1, 2, 3
    df = ablation.summarise(rows, _fake_results(values), seeds=(0, 1, 2))
    assert df.loc[1, "increment_ci_low"] == pytest.approx(2 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert df.loc[1, "verdict"] == "not resolved (interval contains 0)"
    ofat = ablation.summarise(ablation.ONE_AT_A_TIME[:3], _fake_results({
        ablation.ONE_AT_A_TIME[0].training.key: {0: (40.0, 0), 1: (41.0, 0)},
        ablation.ONE_AT_A_TIME[1].training.key: {0: (43.0, 0), 1: (45.0, 0)},
        ablation.ONE_AT_A_TIME[2].training.key: {0: (50.0, 0), 1: (52.0, 0)}}), seeds=(0, 1), reference="first")
    assert ofat["measured_increment"].tolist()[1:] == [pytest.approx(3.5), pytest.approx(10.5)]  # against the baseline


def test_msc_diagnosis_scores_both_networks_both_ways(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.seeds": [0]})
    ablation.run_trainings(cfg, [(r.training, 0, None) for r in ablation.TABLE4[:2]], tmp_path)
    df = ablation.msc_diagnosis(cfg, tmp_path)
    assert df.shape == (2, 2) and ((df.to_numpy() >= 0) & (df.to_numpy() <= 100)).all()
    # The +MSC network scored with MSC at test time is the +MSC row of the table (the same evaluation).
    res = ablation.run_training(cfg, ablation.TABLE4[1].training, 0, tmp_path)
    assert df.iloc[1]["test MSC (max fusion)"] == pytest.approx(100 * res["mean_iou"])


def test_a_training_does_not_depend_on_what_ran_before_it(tmp_path):
    # Worker processes run several trainings in turn: the result must not depend on the global RNG state.
    from dlib import train

    cfg = config.resolve("smoke")
    training = ablation.TABLE4[0].training
    states = []
    for k, noise in enumerate((0, 5)):
        torch.manual_seed(1000 + noise)
        torch.rand(noise + 1)  # another history of the global RNG
        root = tmp_path / f"r{k}"
        ablation.run_training(cfg, training, 0, root)
        ckpt = train.latest_checkpoint(ablation.run_dir_of(cfg, training, 0, root))
        states.append(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_class_group_iou_splits_look_alike_classes_from_the_others():
    # 21 classes: look-alikes (CONTEXT_PAIRS) 6, 8, 10, 11, 12, 17, 18, 19 at 0.2; others (1..20 minus those)
    # at 0.8 except class 3 at NaN (absent) and class 4 at 0.5; background (0) at 0.99 is in neither group.
    iou = np.full(21, 0.8)
    iou[0] = 0.99
    iou[[6, 8, 10, 11, 12, 17, 18, 19]] = 0.2
    iou[3], iou[4] = np.nan, 0.5
    groups = ablation.class_group_iou(iou, 21)
    others = [0.8] * 10 + [0.5]  # 12 other classes minus the absent one
    assert groups["look-alike classes IoU %"] == pytest.approx(20.0)
    assert groups["other classes IoU %"] == pytest.approx(100 * sum(others) / len(others))


def test_last_fifth_gain_is_taken_on_the_mean_over_seeds_at_80_percent():
    import pandas as pd

    # Two seeds, checkpoints at 100..500: mean at 400 = (40 + 44) / 2 = 42, at 500 = (41 + 46) / 2 = 43.5.
    curve = pd.DataFrame({"seed": [0] * 5 + [1] * 5, "iteration": [100, 200, 300, 400, 500] * 2,
                          "mean_iou": [10, 20, 30, 40, 41, 12, 22, 33, 44, 46]})
    assert ablation.last_fifth_gain(curve) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        ablation.last_fifth_gain(curve[curve["iteration"] != 400])
