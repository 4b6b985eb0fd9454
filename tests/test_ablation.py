"""The ablation tables (dlib.experiments.ablation): the paper's rows, the per-row configs, the runs, CRF tuning data."""

import os

import numpy as np
import pytest
import torch

from dlib.core import checkpoint, config
from dlib.experiments import ablation, ablation_runs, ablation_tables, convergence
from dlib.experiments.ablation_tables import ONE_AT_A_TIME, TABLE3, TABLE4


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
    from dlib.nets import network

    def no_build(*_a, **_k):
        raise AssertionError("must not build a model (nor download ImageNet weights)")

    monkeypatch.setattr(network, "build", no_build)
    cfg = config.resolve("gpu", overrides={"model.coco_checkpoint": str(tmp_path / "missing.pt")})
    out = ablation.run_training(cfg, TABLE4[2].training, 0, tmp_path)
    assert out["status"].startswith("not run: no COCO-pretrained init")


def test_crf_is_tuned_on_held_out_training_images_never_on_val(tmp_path, monkeypatch):
    from dlib import data
    from dlib.crf import crossval

    cfg = config.resolve("smoke")
    seen = {}
    real = crossval.cross_validate

    def spy(images, probs, labels, **kw):
        seen["images"] = [np.asarray(i) for i in images]
        return real(images, probs, labels, **kw)

    monkeypatch.setattr(ablation, "cross_validate", spy)
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
    monkeypatch.setattr(ablation, "cross_validate", lambda *a, **k: pytest.fail("search ran twice"))
    again = ablation.tune_crf(cfg, training, 0, tmp_path)
    assert again.best == cv.best


def test_each_table3_crf_row_gets_its_own_crf_search(tmp_path, monkeypatch):
    cfg = config.resolve("smoke")
    tuned = []
    monkeypatch.setattr(ablation_runs, "run_trainings", lambda c, jobs, root, **k: {
        (t.key, s): {"status": "ok", "mean_iou": 0.5, "mean_iou_crf": 0.6} for t, s, _ in jobs})

    def fake_tune(c, training, seed, root, **k):
        tuned.append((training, seed))
        return type("CV", (), {"best": {"w1": 4.0, "theta_alpha": 8.0, "theta_beta": 3.0}})()

    monkeypatch.setattr(ablation_runs, "tune_crf", fake_tune)
    res = ablation_runs.run_tables(cfg, tmp_path, tables=("table3",))
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


def test_the_cache_computes_once_per_key_and_a_version_bump_retires_old_records(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"score": np.float64(0.25), "pair": (1, 2)}

    path = tmp_path / "scores.json"
    first = ablation.cached(path, {"config": {"a": 1}}, compute)
    again = ablation.cached(path, {"config": {"a": 1}}, compute)
    assert len(calls) == 1 and first == again == {"score": 0.25, "pair": [1, 2]}  # as it reads back from JSON
    ablation.cached(path, {"config": {"a": 2}}, compute)  # another key: computed again
    assert len(calls) == 2
    monkeypatch.setattr(ablation, "CACHE_VERSION", ablation.CACHE_VERSION + 1)
    ablation.cached(path, {"config": {"a": 2}}, compute)  # same key, newer version: the old record is not read
    assert len(calls) == 3


def test_the_cache_version_names_the_run_folder(tmp_path, monkeypatch):
    cpu = config.resolve("cpu")
    training = TABLE4[0].training
    before = ablation.run_dir_of(cpu, training, 0, tmp_path)
    assert ablation.run_dir_of(cpu.replace({"crf.w1": 7.0}), training, 0, tmp_path) == before  # CRF: no retraining
    assert ablation.run_dir_of(cpu.replace({"train.lr_policy": "step"}), training, 0, tmp_path) != before
    monkeypatch.setattr(ablation, "CACHE_VERSION", ablation.CACHE_VERSION + 1)
    assert ablation.run_dir_of(cpu, training, 0, tmp_path) != before


def test_a_crf_row_refines_the_probabilities_its_evaluation_cached(tmp_path, monkeypatch):

    cfg = config.resolve("smoke", overrides={"eval.max_images": 3})
    training = ONE_AT_A_TIME[4].training  # +LargeFOV alone: no table refines it with the CRF
    assert not ablation.has_crf_row(training) and ablation.has_crf_row(TABLE4[6].training)
    plain = ablation.run_training(cfg, training, 0, tmp_path)
    probs = ablation.run_dir_of(cfg, training, 0, tmp_path) / ablation.VAL_PROBS
    assert plain["status"] == "ok" and not probs.exists()
    params = {"w1": 4.0, "theta_alpha": 8.0, "theta_beta": 3.0}
    with_crf = ablation.run_training(cfg, training, 0, tmp_path, crf_params=params)  # evaluates again, keeping them
    assert len(list(probs.glob("*.npz"))) == 3 and with_crf["mean_iou"] == plain["mean_iou"]
    monkeypatch.setattr(ablation, "evaluate", lambda *a, **k: pytest.fail("re-evaluated for another CRF setting"))
    other = ablation.run_training(cfg, training, 0, tmp_path, crf_params={**params, "w1": 6.0})
    assert other["mean_iou"] == plain["mean_iou"] and other["crf_params"]["w1"] == 6.0


@pytest.mark.slow
def test_run_tables_on_smoke_fills_every_row_and_resumes_without_retraining(tmp_path, monkeypatch):
    from dlib.training import train

    cfg = config.resolve("smoke")
    res = ablation_runs.run_tables(cfg, tmp_path)
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

    monkeypatch.setattr(train, "train_step", lambda *a, **k: pytest.fail("retrained a finished run"))
    for module in (ablation, convergence):
        monkeypatch.setattr(module, "evaluate", lambda *a, **k: pytest.fail("re-evaluated a cached run"))
    again = ablation_runs.run_tables(cfg, tmp_path)
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


# The cpu profile runs its trainings two at a time in worker processes (ablation.workers=2). A smoke-sized
# check of that path: two trainings through the process pool give what the same two trainings give one after
# another in this process, on the same number of threads.
@pytest.mark.slow
def test_two_workers_give_what_one_after_another_gives(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.workers": 2, "ablation.seeds": [0, 1],
                                             "eval.max_images": 4})
    baseline = ablation_tables.TABLE4[0].training
    jobs = [(baseline, 0, None), (baseline, 1, None)]
    pooled = ablation_runs.run_trainings(cfg, jobs, tmp_path / "pool")  # workers from the config: 2
    assert set(pooled) == {(baseline.key, 0), (baseline.key, 1)}
    assert all(r["status"] == "ok" for r in pooled.values())
    assert pooled[(baseline.key, 0)]["run_dir"] != pooled[(baseline.key, 1)]["run_dir"]

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))  # as each pool worker runs
    try:
        serial = ablation_runs.run_trainings(cfg, jobs, tmp_path / "serial", workers=1)
    finally:
        torch.set_num_threads(threads)
    for key in pooled:
        assert pooled[key]["threads"] == serial[key]["threads"]
        assert pooled[key]["mean_iou"] == pytest.approx(serial[key]["mean_iou"], abs=1e-9), key
        assert pooled[key]["class_iou"] == pytest.approx(serial[key]["class_iou"], abs=1e-9, nan_ok=True), key


def test_progress_line_names_the_row_seed_score_and_time():
    baseline, msc = TABLE4[0].training, TABLE4[1].training
    line = ablation_runs.progress_line(12, 33, msc, 1, {"status": "ok", "mean_iou": 0.5114}, 61.2)
    assert line == "[12/33] +MSC (table4) seed 1: 51.1% (61 s)"
    crf = ablation_runs.progress_line(3, 9, baseline, 0, {"status": "ok", "mean_iou": 0.4, "mean_iou_crf": 0.45}, 5)
    assert crf == "[3/9] baseline (table4) seed 0: 40.0%, 45.0% with the CRF (5 s)"
    assert "not run: x" in ablation_runs.progress_line(1, 2, baseline, 0, {"status": "not run: x"}, 0)


def test_the_coco_control_starts_from_the_control_stand_in():
    from dlib.nets import standins

    cfg = config.resolve("cpu")
    ref, coco, ctrl = ablation_tables.COCO_CONTROL
    assert ctrl.training.control and ctrl.training.msc and not ctrl.training.coco
    tcfg = ablation_tables.training_config(cfg, ctrl.training, 0)
    assert standins.resolve_coco(tcfg) == str(standins.control_path(tcfg.model.name))
    assert ablation_tables.training_config(cfg, ref.training, 0).model.coco_checkpoint is None
    assert ablation.run_dir_of(cfg, ctrl.training, 0, "r").name.startswith("small_resnet_baseline_msc_control_s0_")
