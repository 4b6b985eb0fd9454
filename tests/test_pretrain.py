"""The stand-ins' pretraining (dlib.experiments.pretrain): the pretext task, and weights written with a matching
card."""

import hashlib
import json

import numpy as np
import torch

from dlib.experiments import pretrain
from dlib.nets import models, standins
from dlib.nets.standins import CARD_FIELDS


def test_pretext_labels_follow_shape_colour_group_and_texture():
    red, green, blue = np.array([200, 10, 10]), np.array([10, 200, 90]), np.array([0, 60, 61])
    # 1 + 6 * shape + 2 * group (strongest channel) + textured: disc (shape 0), trapezoid (shape 6).
    assert pretrain.pretext_class("disc", "flat", red) == 1 and pretrain.pretext_class("disc", "dots", red) == 2
    assert pretrain.pretext_class("disc", "flat", green) == 3 and pretrain.pretext_class("disc", "rings", blue) == 6
    assert pretrain.pretext_class("trapezoid", "rings", blue) == pretrain.PRETEXT_CLASSES - 1 == 42
    image, label = pretrain.make_pretext_sample(np.random.default_rng(3))
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and label.max() < pretrain.PRETEXT_CLASSES
    again = pretrain.make_pretext_sample(np.random.default_rng(3))
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])


def test_pretraining_writes_weights_and_a_matching_card(tmp_path, monkeypatch):
    # Two iterations on a few pretext images: the file and its card, not the quality, are under test.
    real = pretrain.imagenet_config
    monkeypatch.setattr(pretrain, "imagenet_config", lambda family: real(family).replace(
        {"train.iterations": 2, "train.batch_size": 2, "train.checkpoint_every": 2}))
    monkeypatch.setattr(pretrain, "IMAGENET_IMAGES", 4)
    monkeypatch.setattr(pretrain, "EVAL_IMAGES", 2)
    monkeypatch.setattr(standins, "WEIGHTS_DIR", tmp_path / "weights")
    path = pretrain.pretrain_imagenet("small_resnet", run_root=tmp_path / "runs", progress=False)
    card = json.loads(standins.card_path(path).read_text())
    assert CARD_FIELDS <= set(card) and card["iterations"] == 2 and card["images"] == 4
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(card["final_scores"]) == {"heldout_pretext"}
    model = models.build("small_resnet_baseline", pretrained="imagenet")  # loads the new file through its card
    assert torch.equal(model.state_dict()["backbone.conv1.weight"],
                       torch.load(path, weights_only=True)["backbone.conv1.weight"])


def test_a_build_that_rewrites_the_shipped_weights_is_not_dirty(tmp_path):
    # The shipped weights are tracked files that each build rewrites: an output, not a code change.
    import subprocess

    from dlib.experiments import results

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "dlib" / "weights").mkdir(parents=True)
    (tmp_path / "dlib" / "weights" / "a.pt").write_text("old")
    (tmp_path / "code.py").write_text("x = 1")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    sha = git("rev-parse", "HEAD").strip()
    (tmp_path / "dlib" / "weights" / "a.pt").write_text("new")  # another stand-in rebuilt first
    assert results.git_commit(tmp_path, outputs=("results", "dlib/weights")) == sha
    assert results.git_commit(tmp_path) == sha + "-dirty"  # results' provenance still counts the weights
    (tmp_path / "code.py").write_text("x = 2")
    assert results.git_commit(tmp_path, outputs=("results", "dlib/weights")) == sha + "-dirty"
