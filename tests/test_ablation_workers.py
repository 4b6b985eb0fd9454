"""The cpu profile's ablation runs its trainings two at a time in worker processes (ablation.workers=2).

A smoke-sized check of that path: two trainings through the process pool give what the same two trainings
give one after another in this process, on the same number of threads.
"""

import os

import pytest
import torch

from dlib import ablation, ablation_tables, config


def test_the_cpu_profile_trains_two_at_a_time():
    cpu = config.resolve("cpu")
    assert cpu.ablation.workers == 2 and cpu.data.loader_workers == 0  # pool workers cannot start loaders


@pytest.mark.slow
def test_two_workers_give_what_one_after_another_gives(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.workers": 2, "ablation.seeds": [0, 1],
                                             "eval.max_images": 4})
    baseline = ablation_tables.TABLE4[0].training
    jobs = [(baseline, 0, None), (baseline, 1, None)]
    pooled = ablation.run_trainings(cfg, jobs, tmp_path / "pool")  # workers from the config: 2
    assert set(pooled) == {(baseline.key, 0), (baseline.key, 1)}
    assert all(r["status"] == "ok" for r in pooled.values())
    assert pooled[(baseline.key, 0)]["run_dir"] != pooled[(baseline.key, 1)]["run_dir"]

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))  # as each pool worker runs
    try:
        serial = ablation.run_trainings(cfg, jobs, tmp_path / "serial", workers=1)
    finally:
        torch.set_num_threads(threads)
    for key in pooled:
        assert pooled[key]["threads"] == serial[key]["threads"]
        assert pooled[key]["mean_iou"] == pytest.approx(serial[key]["mean_iou"], abs=1e-9), key
        assert pooled[key]["class_iou"] == pytest.approx(serial[key]["class_iou"], abs=1e-9, nan_ok=True), key
