"""What each profile changes from the paper (dlib.core.profiles)."""

from dlib.core import config


def test_cpu_profile_runs_at_least_three_seeds():
    assert len(set(config.resolve("cpu").ablation.seeds)) >= 3


def test_the_cpu_profile_trains_two_at_a_time():
    cpu = config.resolve("cpu")
    assert cpu.ablation.workers == 2 and cpu.data.loader_workers == 0  # pool workers cannot start loaders


def test_the_cpu_profile_is_what_the_readme_states():
    # README, "Deviations from the papers", states the cpu profile's training in one sentence: held against the config.
    from dlib.core.io import REPO_ROOT

    cpu = config.resolve("cpu")
    text = " ".join((REPO_ROOT / "README.md").read_text().split())
    c = cpu.data.crop_size
    stated = (f"batch {cpu.train.batch_size} of {c}x{c} crops from {cpu.data.proxy_image_size}-px proxy images, "
              f"{cpu.train.iterations:,} iterations at base lr {cpu.train.base_lr:g} after a "
              f"{cpu.train.warmup}-iteration linear warm-up")
    assert stated in text
    assert cpu.train.base_lr_vgg == cpu.train.base_lr and cpu.train.msc_loss == "sum"  # "for every row", "summed"
    assert (cpu.data.dataset, cpu.data.val_split) == ("proxy", "test")
    assert (c - 1) % 8 == 0  # 8k+1 crops, as DeepLab's 321
    assert cpu.train.checkpoint_every * 5 == cpu.train.iterations  # a checkpoint at 80%: the convergence criterion
    # MSC's smallest scale keeps a score map of at least 9x9: a side of (c - 1) * 0.5 + 1 px at output stride 8.
    smallest = min(cpu.model.msc_scales)
    assert -(-int((c - 1) * smallest + 1) // 8) >= 9


def test_profiles_change_only_keys_that_exist_and_gpu_changes_none():
    from dlib.core.profiles import PROFILE_OVERRIDES

    assert set(PROFILE_OVERRIDES) == set(config.PROFILES)
    assert PROFILE_OVERRIDES["gpu"] == {}  # the gpu profile is the papers' defaults
    for name, overrides in PROFILE_OVERRIDES.items():
        assert set(overrides) <= set(config.valid_keys()), name
