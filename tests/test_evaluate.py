"""dlib.evaluation.evaluate: whole-image scoring against independent counts, flip, MSC, padding, the probability
cache, images
of two sizes."""

import numpy as np
import pytest
import torch
from torch import nn

from dlib.core import config
from dlib.core.io import load_probs, read_json
from dlib.evaluation import evaluate
from dlib.experiments import results
from dlib.nets import network

COLOURS = np.array([[20, 20, 20], [230, 30, 30], [30, 230, 30], [30, 30, 230]], np.float32)


class ColourOracle(nn.Module):
    """Per stride-8 logit: class scores = -distance of the input colour to each class colour (4 of 21 classes)."""

    def __init__(self, cfg):
        super().__init__()
        self.mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)

    def forward(self, x):
        rgb = (x * self.std + self.mean) * 255  # undo the normalisation
        sample = rgb[:, :, ::8, ::8]  # logit i sits on pixel 8i: (N, 3, ceil(H/8), ceil(W/8))
        d = ((sample[:, None] - torch.from_numpy(COLOURS)[None, :, :, None, None]) ** 2).sum(2)
        scores = torch.full((x.shape[0], 21) + d.shape[-2:], -1e4)
        scores[:, :4] = -d / 100
        return scores


class Constant(nn.Module):
    """Predicts class ``k`` everywhere (a bias-only classifier at stride 8)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        out = torch.zeros(x.shape[0], 21, -(-x.shape[2] // 8), -(-x.shape[3] // 8))
        out[:, self.k] = 5.0
        return out


class ListDataset:
    def __init__(self, items):
        self.items = items
        self.ids = [f"img{i}" for i in range(len(items))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _uniform_images(n=5, h=40, w=56):
    items = []
    for i in range(n):
        k = i % 4
        label = np.full((h, w), k, np.uint8)
        label[:2] = 255  # some void
        items.append((np.broadcast_to(COLOURS[k].astype(np.uint8), (h, w, 3)).copy(), label))
    return ListDataset(items)


@pytest.fixture
def cfg():
    return config.resolve("smoke", overrides={"eval.max_images": None})


def test_constant_prediction_puts_every_pixel_in_one_column(cfg):
    ds = _uniform_images()
    out = evaluate.evaluate(cfg, Constant(2), ds, progress=False)
    labels = np.concatenate([lab.ravel() for _, lab in ds.items])
    hist = np.bincount(labels[labels != 255], minlength=21)
    conf = out["confusion"]
    assert np.array_equal(conf[:, 2], hist) and conf.sum() == hist.sum()
    assert out["pixel_acc"] == pytest.approx(hist[2] / hist.sum())
    # classes 0, 1, 3 present but never predicted: IoU 0; class 2: TP / (all pixels)
    assert out["mean_iou"] == pytest.approx((hist[2] / hist.sum()) / 4)
    trivial = evaluate.trivial_baseline(ds)
    background = evaluate.evaluate(cfg, Constant(0), ds, progress=False)
    assert trivial["mean_iou"] == pytest.approx(background["mean_iou"])


def test_perfect_model_scores_one_with_padding_msc_and_flip(cfg):
    # 41 x 57 = 8k+1: the last row and column sit on a logit, so padding never leaks into the image.
    ds = _uniform_images(h=41, w=57)
    for overrides in ({}, {"data.eval_pad": 64}):
        c = config.resolve("smoke", overrides={"eval.max_images": None, **overrides})
        for msc in (False, True):
            out = evaluate.evaluate(c, ColourOracle(c), ds, msc=msc, flip=True, progress=False)
            assert out["mean_iou"] == 1.0 and out["pixel_acc"] == 1.0
            assert out["num_images"] == 5


def test_flip_averaging_makes_predictions_mirror_equivariant(cfg):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=8, padding=2), nn.ReLU(), nn.Conv2d(8, 21, 3, padding=1))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 45, 3), dtype=np.uint8)
    p = evaluate.predict(net, image, cfg, flip=True)
    p_mirror = evaluate.predict(net, image[:, ::-1].copy(), cfg, flip=True)
    assert p.shape == (21, 37, 45)
    assert np.allclose(p[:, :, ::-1], p_mirror, atol=1e-5)
    assert np.allclose(p.sum(0), 1, atol=1e-5)
    no_flip = evaluate.predict(net, image, cfg, flip=False)
    assert not np.allclose(no_flip[:, :, ::-1], evaluate.predict(net, image[:, ::-1].copy(), cfg, flip=False),
                           atol=1e-3)


def test_probability_cache_for_the_crf(cfg, tmp_path):
    ds = _uniform_images(n=3)
    out = evaluate.evaluate(cfg, ColourOracle(cfg), ds, cache_dir=tmp_path / "probs", keep_predictions=True,
                            progress=False)
    files = sorted(p.name for p in (tmp_path / "probs").iterdir())
    assert files == ["img0.npz", "img1.npz", "img2.npz"]
    with np.load(tmp_path / "probs/img1.npz") as z:
        assert z["probs"].dtype == np.float16 and z["probs"].shape == (21, 40, 56)
    probs = load_probs(tmp_path / "probs/img1.npz")
    assert np.array_equal(probs.argmax(0), out["predictions"][1])
    assert np.allclose(probs.sum(0), 1, atol=1e-3)


def test_scores_are_written_with_results(cfg, tmp_path):
    writer = results.Results(cfg, "test_eval", root=tmp_path / "res")
    evaluate.evaluate(cfg, Constant(0), _uniform_images(), results=writer, name="val", progress=False)
    payload = read_json(tmp_path / "res/val.json")
    data = payload["data"]
    assert set(data) >= {"mean_iou", "pixel_acc", "class_iou", "confusion"}
    assert len(data["confusion"]) == 21 and data["class_iou"]["background"] == pytest.approx(
        data["confusion"][0][0] / sum(sum(r) for r in data["confusion"]))
    assert payload["provenance"]["profile"] == "smoke"
    rows = (tmp_path / "res/val_class_iou.csv").read_text().splitlines()
    assert rows[0] == "class,iou" and len(rows) == 22


def test_max_images_and_empty(cfg):
    out = evaluate.evaluate(cfg, Constant(0), _uniform_images(), max_images=2, progress=False)
    assert out["num_images"] == 2
    with pytest.raises(ValueError, match="empty"):
        evaluate.evaluate(cfg, Constant(0), ListDataset([]), progress=False)


# ---- a data set whose images come in two sizes, scored against a hand-counted confusion matrix --------------
# Images of one size are batched together; an image of another size starts a new batch. Each image here is one
# colour and the model predicts that colour's class everywhere, so every pixel's (label, prediction) pair is
# known by hand, whatever the image's size.

def _image(colour, h, w):
    return np.broadcast_to(COLOURS[colour].astype(np.uint8), (h, w, 3)).copy()


def test_two_image_sizes_are_scored_as_counted_by_hand():
    cfg = config.resolve("smoke", overrides={"eval.max_images": None, "data.eval_pad": 0})
    big, small = (16, 24), (9, 13)
    l0 = np.full(big, 1, np.uint8)  # colour 1: 4 void rows, a 12 x 6 block labelled 2, 12 x 18 pixels of 1
    l0[:4] = 255
    l0[4:, :6] = 2
    l1 = np.full(big, 2, np.uint8)  # colour 2: 16 x 24 = 384 pixels of 2
    l2 = np.full(small, 3, np.uint8)  # colour 3, the small image: first row (13) labelled 0, 8 x 13 = 104 of 3
    l2[0] = 0
    l3 = np.zeros(big, np.uint8)  # colour 0: a 4 x 4 corner labelled 1, 384 - 16 = 368 of 0
    l3[-4:, -4:] = 1
    data = ListDataset([(_image(1, *big), l0), (_image(2, *big), l1), (_image(3, *small), l2), (_image(0, *big), l3)])

    out = evaluate.evaluate(cfg, ColourOracle(cfg), data, msc=False, flip=False, keep_predictions=True,
                            progress=False)

    # Rows: label, columns: prediction (each image's colour class).
    hand = np.zeros((21, 21), np.int64)
    hand[1, 1], hand[2, 1] = 216, 72  # image 0
    hand[2, 2] = 384  # image 1
    hand[0, 3], hand[3, 3] = 13, 104  # image 2 (small)
    hand[0, 0], hand[1, 0] = 368, 16  # image 3
    assert np.array_equal(out["confusion"], hand)
    assert [p.shape for p in out["predictions"]] == [big, big, small, big]
    # IoU = TP / (label pixels + predicted pixels - TP), classes 0-3; classes 4-20 are absent (NaN, not averaged).
    ious = [368 / (381 + 384 - 368), 216 / (232 + 288 - 216), 384 / (456 + 384 - 384), 104 / (104 + 117 - 104)]
    assert out["class_iou"][:4] == pytest.approx(ious)
    assert all(np.isnan(out["class_iou"][4:]))
    assert out["mean_iou"] == pytest.approx(sum(ious) / 4)
    assert out["pixel_acc"] == pytest.approx((368 + 216 + 384 + 104) / (381 + 232 + 456 + 104))
    assert out["num_images"] == 4


def test_a_released_caffe_model_is_evaluated_in_float32_unless_asked():
    caffe = {"model.caffemodel": "train_iter_20000.caffemodel", "model.caffe_layout": True,
             "data.input_convention": "caffe"}
    released = config.resolve("gpu", overrides=caffe)
    assert evaluate.eval_precision(released, "cuda") == "float32"  # even where train.bf16 would autocast
    assert evaluate.eval_precision(config.resolve("gpu"), "cuda") == "bf16"  # a trained run: train.bf16 on CUDA
    assert evaluate.eval_precision(config.resolve("gpu"), "cpu") == "float32"
    asked = config.resolve("gpu", overrides={**caffe, "eval.precision": "bf16"})
    assert evaluate.eval_precision(asked, "cuda") == "bf16"
    with pytest.raises(config.ConfigError, match="eval.precision"):
        config.resolve("gpu", overrides={"eval.precision": "fp16"})


def test_precision_contexts_turn_tf32_off_or_autocast():
    conv, x, cpu = nn.Conv2d(3, 2, 3), torch.randn(1, 3, 5, 5), torch.device("cpu")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    with network.precision("float32", cpu):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert conv(x).dtype == torch.float32
    assert torch.backends.cudnn.allow_tf32  # restored
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    with network.precision("bf16", cpu):
        assert conv(x).dtype == torch.bfloat16
