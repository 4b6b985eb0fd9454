"""What each profile changes from the paper (dlib.profiles)."""

from dlib import config


def test_cpu_profile_runs_at_least_three_seeds():
    assert len(set(config.resolve("cpu").ablation.seeds)) >= 3


def test_the_cpu_profile_trains_two_at_a_time():
    cpu = config.resolve("cpu")
    assert cpu.ablation.workers == 2 and cpu.data.loader_workers == 0  # pool workers cannot start loaders
