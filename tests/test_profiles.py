"""What each profile changes from the paper (dlib.profiles)."""

from dlib import config


def test_cpu_profile_runs_at_least_three_seeds():
    assert len(set(config.resolve("cpu").ablation.seeds)) >= 3


def test_the_cpu_profile_trains_two_at_a_time():
    cpu = config.resolve("cpu")
    assert cpu.ablation.workers == 2 and cpu.data.loader_workers == 0  # pool workers cannot start loaders


def test_the_cpu_profile_is_what_the_readme_states():
    # README, "Deviations from the papers": batch 8 of 145x145 crops from 176-px proxy images, 600 iterations,
    # base lr 5e-3 for every row, the MSC loss summed as in the paper; reported on the proxy's test split.
    cpu = config.resolve("cpu")
    assert (cpu.train.batch_size, cpu.data.crop_size, cpu.data.proxy_image_size) == (8, 145, 176)
    assert cpu.train.iterations == 600 and cpu.train.msc_loss == "sum"
    assert cpu.train.base_lr == 5e-3 and cpu.train.base_lr_vgg == 5e-3
    assert (cpu.data.dataset, cpu.data.val_split) == ("proxy", "test")
    assert (cpu.data.crop_size - 1) % 8 == 0  # 8k+1 crops, as DeepLab's 321: the score map is (145 - 1) / 8 + 1 = 19


def test_profiles_change_only_keys_that_exist_and_gpu_changes_none():
    from dlib.profiles import PROFILE_OVERRIDES

    assert set(PROFILE_OVERRIDES) == set(config.PROFILES)
    assert PROFILE_OVERRIDES["gpu"] == {}  # the gpu profile is the papers' defaults
    for name, overrides in PROFILE_OVERRIDES.items():
        assert set(overrides) <= set(config.valid_keys()), name
