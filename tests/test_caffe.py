"""dlib.nets.caffe: the layer-name mapping against DeepLab's prototxts, and Caffe-layout blocks loaded from files
written by
an independent writer (test_caffe_proto) against outputs computed by hand."""

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from caffemodel_writer import rand, write_net  # the independent .caffemodel writer

from dlib.core import config
from dlib.data import transforms
from dlib.nets import caffe, models
from dlib.nets.aspp import ASPP
from dlib.nets.backbones import ResNet101Dense, VGG16Dense

PROTOTXT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "deeplab_prototxt"
if not PROTOTXT.is_dir():
    PROTOTXT = Path("/work/shared/reference/deeplab_prototxt")

# ------------------------------------------------------------------------------------------------
# Blocks loaded from a file give the outputs computed by hand
# ------------------------------------------------------------------------------------------------

def bn_by_hand(z, mean, var, factor, gamma, beta, eps=1e-5):
    """Caffe BatchNorm (statistics stored times ``factor``) followed by Scale, on (N, C, H, W)."""
    t = lambda a: torch.as_tensor(a, dtype=torch.float64).view(1, -1, 1, 1)  # noqa: E731
    return (z - t(mean / factor)) / torch.sqrt(t(var / factor) + eps) * t(gamma) + t(beta)


def test_caffe_layout_bottleneck_res3a_matches_hand_computation(tmp_path):
    """res3a of the released ResNet-101: stride 2 in res3a_branch2a (1x1) and res3a_branch1, BN + Scale."""
    rng = np.random.default_rng(1)
    block = ResNet101Dense(caffe_layout=True).layer2[0].eval()  # 256 -> 128 -> 128 -> 512
    convs = {"2a": rand(rng, 128, 256, 1, 1) * 0.05, "2b": rand(rng, 128, 128, 3, 3) * 0.03,
             "2c": rand(rng, 512, 128, 1, 1) * 0.05, "1": rand(rng, 512, 256, 1, 1) * 0.05}
    # As Caffe stores them: mean and variance multiplied by the scale factor (blob 2), then Scale's gamma, beta.
    bns = {k: (rand(rng, v.shape[0]), rand(rng, v.shape[0], positive=True), np.float32(rng.uniform(0.5, 4)),
               rand(rng, v.shape[0]), rand(rng, v.shape[0])) for k, v in convs.items()}
    layers = []
    for k in ("1", "2a", "2b", "2c"):
        stored_mean, stored_var, f, gamma, beta = bns[k]
        layers += [(f"res3a_branch{k}", "Convolution", [convs[k]]),
                   (f"bn3a_branch{k}", "BatchNorm", [stored_mean, stored_var, np.array([f], np.float32)]),
                   (f"scale3a_branch{k}", "Scale", [gamma, beta])]
    path = write_net(tmp_path / "res3a.caffemodel", layers)
    report = caffe.load_blobs(block, caffe.bottleneck_names("3a"), caffe.read_caffemodel(path))
    assert len(report.mapped) == 4 * 5 and not report.missing and not report.unexpected

    x = torch.randn(1, 256, 9, 9, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = block(x).double()
    xd = x.double()
    c = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in convs.items()}
    bn = {k: [np.asarray(a, np.float64) for a in v] for k, v in bns.items()}
    h = F.relu(bn_by_hand(F.conv2d(xd, c["2a"], stride=2), *bn["2a"]))
    h = F.relu(bn_by_hand(F.conv2d(h, c["2b"], padding=1), *bn["2b"]))
    h = bn_by_hand(F.conv2d(h, c["2c"]), *bn["2c"])
    want = F.relu(h + bn_by_hand(F.conv2d(xd, c["1"], stride=2), *bn["1"]))
    assert got.shape == (1, 512, 5, 5)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_vgg_block_from_a_v1_file_matches_hand_computation(tmp_path):
    """conv1_1, conv1_2 (+ ReLU) and pool1 of DeepLab-LargeFOV, stored in the legacy V1 format."""
    rng = np.random.default_rng(2)
    backbone = VGG16Dense().eval()
    w1, b1, w2, b2 = rand(rng, 64, 3, 3, 3) * 0.2, rand(rng, 64), rand(rng, 64, 64, 3, 3) * 0.05, rand(rng, 64)
    path = write_net(tmp_path / "v1.caffemodel", [("conv1_1", "Convolution", [w1, b1]), ("relu1_1", "ReLU", []),
                                                  ("conv1_2", "Convolution", [w2, b2])], legacy=True)
    names = {k: v for k, v in caffe.vgg16_names(backbone).items() if v.layers[0] in ("conv1_1", "conv1_2")}
    report = caffe.load_blobs(backbone, names, caffe.read_caffemodel(path))
    assert sorted(k for _, k in report.mapped) == ["features.0.bias", "features.0.weight", "features.2.bias",
                                                    "features.2.weight"]
    x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = backbone.features[:5](x)
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    h = F.relu(F.conv2d(x, t(w1), t(b1), padding=1))
    h = F.relu(F.conv2d(h, t(w2), t(b2), padding=1))
    want = F.max_pool2d(h, 3, stride=2, padding=1)  # pool1: 3x3, stride 2, pad 1 (prototxt)
    assert got.shape == (1, 64, 4, 4) and torch.allclose(got, want, atol=1e-4)


def test_shape_mismatch_names_the_layer_and_both_shapes(tmp_path):
    backbone = VGG16Dense()
    path = write_net(tmp_path / "bad.caffemodel", [("conv1_1", "Convolution", [np.zeros((32, 3, 3, 3), np.float32),
                                                                                np.zeros(32, np.float32)])])
    names = {k: v for k, v in caffe.vgg16_names(backbone).items() if v.layers[0] == "conv1_1"}
    with pytest.raises(caffe.CaffeModelError, match=r"conv1_1.*\(32, 3, 3, 3\).*\(64, 3, 3, 3\)"):
        caffe.load_blobs(backbone, names, caffe.read_caffemodel(path))


def test_load_report_lists_missing_unexpected_shared_and_skipped(tmp_path):
    rng = np.random.default_rng(3)
    head = ASPP(8, 3, (1, 2))  # two ResNet-style classifier branches: fc1_voc12_c0, fc1_voc12_c1
    c0w, c0b = rand(rng, 3, 8, 3, 3), rand(rng, 3)
    path = write_net(tmp_path / "init.caffemodel", [
        ("fc1_voc12_c0", "Convolution", [c0w, c0b]),
        ("fc1_voc12_c0_res075", "Convolution", [c0w, c0b]),  # an MSC weight-sharing copy
        ("fc1_voc12_c1", "Convolution", [rand(rng, 5, 8, 3, 3), rand(rng, 5)]),  # a classifier of 5 classes
        ("fc1_c0", "Convolution", [rand(rng, 3, 8, 3, 3), rand(rng, 3)]),  # another name: never copied (Caffe)
        ("fc_extra", "Convolution", [rand(rng, 2, 2)])])
    layers = caffe.read_caffemodel(path)
    before = head.branches[1].conv.weight.detach().clone()
    report = caffe.load_blobs(head, caffe.head_names(head, ""), layers, head="optional", source="init")
    assert sorted(report.mapped) == [("fc1_voc12_c0/0", "branches.0.conv.weight"),
                                     ("fc1_voc12_c0/1", "branches.0.conv.bias")]
    assert report.missing == ["branches.1.conv.weight", "branches.1.conv.bias"]
    assert report.skipped == ["fc1_voc12_c1/0 (5, 8, 3, 3)", "fc1_voc12_c1/1 (5,)"]
    assert report.unexpected == ["fc1_c0/0", "fc1_c0/1", "fc_extra/0"]  # (skipped blobs are listed once)
    assert report.shared == ["fc1_voc12_c0_res075/0", "fc1_voc12_c0_res075/1"]
    assert torch.equal(head.branches[0].conv.weight.detach(), torch.as_tensor(c0w))
    assert torch.equal(head.branches[1].conv.weight.detach(), before)  # kept its initialisation
    assert "2 blobs loaded" in report.summary() and "fc_extra/0" in str(report)
    with pytest.raises(caffe.CaffeModelError, match=r"fc1_voc12_c1.*\(5, 8, 3, 3\).*\(3, 8, 3, 3\)"):
        caffe.load_blobs(head, caffe.head_names(head, ""), layers, head="require")
    with pytest.raises(caffe.CaffeModelError, match="no blob fc1_voc12_c1/0"):  # another task's classifier last
        caffe.load_blobs(head, caffe.head_names(head, ""), [layers[0], layers[3]], head="require")
    with pytest.raises(caffe.CaffeModelError, match=r"^init ends after layer fc1_voc12_c0 \(1 of the network's 2 "
                                                    r"weight layers; fc1_voc12_c1 and every later one are missing"):
        caffe.load_blobs(head, caffe.head_names(head, ""), [layers[0]], head="require", source="init")


def test_a_file_cut_at_a_layer_boundary_says_where_it_ends(tmp_path):
    rng = np.random.default_rng(6)
    backbone = VGG16Dense(widths=(4, 4, 8, 8, 8))
    names = caffe.vgg16_names(backbone)
    state = backbone.state_dict()
    kept = [(f"conv{b}_{i}", "Convolution", [rand(rng, *state[f"features.{k}.weight"].shape),
                                             rand(rng, *state[f"features.{k}.bias"].shape)])
            for k, (b, i) in zip((0, 2, 5, 7, 10, 12, 14), ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)))]
    path = write_net(tmp_path / "cut.caffemodel", kept[:5] + [("relu3_1", "ReLU", [])])
    with pytest.raises(caffe.CaffeModelError) as err:
        caffe.load_blobs(backbone, names, caffe.read_caffemodel(path), source=str(path))
    assert str(err.value) == (f"{path} ends after layer conv3_1 (5 of the network's 13 weight layers; conv3_2 and "
                              "every later one are missing): the file is cut short, download it again")


# ------------------------------------------------------------------------------------------------
# The mapping covers our full models and agrees with DeepLab's prototxts
# ------------------------------------------------------------------------------------------------

def _prototxt_int(block: str, key: str, default):
    m = re.search(rf"\b{key}:\s*(\d+)", block)
    return int(m.group(1)) if m else default


def parse_prototxt(path: Path) -> dict[str, dict]:
    """Layer name -> {type, num_output, kernel_size, stride, pad, dilation, bias_term} (crude, for tests)."""
    text = path.read_text().replace("${EXP}", "voc12").replace("${NUM_LABELS}", "21")
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out = {}
    for block in re.split(r"\n\s*layers? \{", text)[1:]:
        name = re.search(r'name:\s*"([^"]+)"', block).group(1)
        kind = re.search(r'type:\s*"?(\w+)"?', block).group(1)
        get = functools.partial(_prototxt_int, block)
        out[name] = {"type": kind.lower(), "num_output": get("num_output", None), "kernel": get("kernel_size", None),
                     "stride": get("stride", 1), "pad": get("pad", 0),
                     "dilation": get("dilation", get("hole", 1)), "bias": "bias_term: false" not in block}
    return out


CASES = [("deeplab_v2_resnet101_aspp", "deeplab-public-ver2/resnet101/test.prototxt"),
         ("deeplab_v1_largefov", "deeplab-public/deeplab_largeFOV/test.prototxt"),
         ("deeplab_v2_vgg16_aspp_l", "deeplab-public-ver2/vgg16/test.prototxt")]


@pytest.mark.parametrize("name,prototxt", CASES)
def test_mapping_covers_every_tensor_and_matches_the_prototxt(name, prototxt):
    torch.manual_seed(0)
    model = models.build(name, num_classes=21, **caffe.layout_kwargs(name))
    names = caffe.caffe_names(model)
    state = model.state_dict()
    ours = sorted(k for k in state if not k.endswith("num_batches_tracked"))
    assert sorted(names) == ours  # every parameter and BN statistic has a Caffe blob
    blobs = [(ref.layers[0], ref.index) for ref in names.values()]
    assert len(set(blobs)) == len(blobs)  # no two tensors read the same blob

    if not (PROTOTXT / prototxt).is_file():
        pytest.skip("DeepLab's prototxts (../shared/reference/deeplab_prototxt) are absent")
    proto = {n: v for n, v in parse_prototxt(PROTOTXT / prototxt).items() if not caffe._is_copy(n)}
    with_weights = {n for n, v in proto.items() if v["type"] in ("convolution", "batchnorm", "scale")}
    assert {layer for layer, _ in blobs} == with_weights  # the mapping uses exactly the prototxt's weight layers
    for key, ref in names.items():
        layer = proto[ref.layers[0]]
        if layer["type"] != "convolution":
            continue
        tensor = state[key]
        if ref.index == 1:
            assert layer["bias"], f"{key} is a bias but {ref.layers[0]} has bias_term false"
            continue
        assert tensor.shape[0] == layer["num_output"] and tensor.shape[-1] == layer["kernel"], (key, layer)
        assert (ref.layers[0], 1) in blobs if layer["bias"] else (ref.layers[0], 1) not in blobs
        conv = model.get_submodule(key.rsplit(".", 1)[0])  # stride, padding, dilation as the prototxt has them
        assert (conv.stride[0], conv.padding[0], conv.dilation[0]) == (
            layer["stride"], layer["pad"], layer["dilation"]), (key, ref.layers[0])


def caffe_side(proto: dict[str, dict], n: int) -> int:
    """The scale-1 score map's side for an n-pixel input, walking the prototxt's layers with Caffe's formulas:
    Convolution (n + 2p - (d(k-1) + 1)) / s + 1 (integer division); Pooling ceil((n + 2p - k) / s) + 1, less 1
    when (pooled - 1) s >= n + p. Shortcuts (res*_branch1, parallel to branch2a) and MSC copies are skipped."""
    for name, layer in proto.items():
        if caffe._is_copy(name) or name.endswith("_branch1"):
            continue
        k, s, p, d = layer["kernel"], layer["stride"], layer["pad"], layer["dilation"]
        if layer["type"] == "convolution":
            n = (n + 2 * p - (d * (k - 1) + 1)) // s + 1
        elif layer["type"] == "pooling":
            pooled = -(-(n + 2 * p - k) // s) + 1
            n = pooled - 1 if (pooled - 1) * s >= n + p else pooled
    return n


@pytest.mark.parametrize("name,prototxt", CASES)
def test_caffe_layout_score_maps_have_the_prototxts_sizes(name, prototxt):
    if not (PROTOTXT / prototxt).is_file():
        pytest.skip("DeepLab's prototxts (../shared/reference/deeplab_prototxt) are absent")
    proto = parse_prototxt(PROTOTXT / prototxt)
    sizes = [(65, 65), (321, 321), (100, 75), (64, 64), (66, 97), (41, 50)]
    want = [(caffe_side(proto, h), caffe_side(proto, w)) for h, w in sizes]
    with torch.device("meta"):  # shapes only
        net = models.build(name, **caffe.layout_kwargs(name)).eval()
        got = [tuple(net(torch.empty(1, 3, h, w)).shape[-2:]) for h, w in sizes]
    assert got == want
    # by hand: VGG 100 -> pool1-3 51, 26, 14 and 75 -> 38, 20, 11; ResNet 64 -> conv1 32, pool1 17, res3a 9
    # (the torchvision layout: 13x10 and 8x8, test_backbones)
    if "resnet" in name:
        assert want[3] == (9, 9)
    else:
        assert want[2] == (14, 11)


@pytest.mark.parametrize("name,prototxt", CASES)
def test_the_mapping_lists_the_weight_layers_in_the_prototxts_order(name, prototxt):
    if not (PROTOTXT / prototxt).is_file():
        pytest.skip("DeepLab's prototxts (../shared/reference/deeplab_prototxt) are absent")
    with torch.device("meta"):
        model = models.build(name, **caffe.layout_kwargs(name))
    proto = [n for n, v in parse_prototxt(PROTOTXT / prototxt).items()
             if not caffe._is_copy(n) and v["type"] in ("convolution", "batchnorm", "scale")]
    assert [group[0] for group in caffe.layer_order(caffe.caffe_names(model))] == proto


def test_a_truncated_caffemodel_is_one_line_naming_the_file_from_the_command_line(tmp_path, capsys):
    from dlib.tools.cli import main

    rng = np.random.default_rng(7)
    whole = write_net(tmp_path / "w.caffemodel", [("conv1_1", "Convolution", [rand(rng, 64, 3, 3, 3)])]).read_bytes()
    (path := tmp_path / "train_iter_6000.caffemodel").write_bytes(whole[:-10])
    code = main(["evaluate", "--profile", "smoke", "--no-progress", "--caffemodel", str(path),
                 "--set", "model.name=deeplab_v1_largefov"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: {path} is truncated (ends inside layer conv1_1's blob 0; expected 10 bytes "
                                 "more): download it again")


def test_caffe_layout_only_moves_strides_and_dilations():
    plain, caffe_net = ResNet101Dense(), ResNet101Dense(caffe_layout=True)
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert shapes == {k: v.shape for k, v in caffe_net.state_dict().items()}
    differs = sorted(n for (n, a), (_, b) in zip(plain.named_modules(), caffe_net.named_modules())
                     if isinstance(a, torch.nn.Conv2d)
                     and (a.stride, a.dilation, a.padding) != (b.stride, b.dilation, b.padding))
    assert differs == ["layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]
    with torch.no_grad():  # output stride 8 kept: 17 -> ceil(17/8) = 3
        assert caffe_net.eval()(torch.zeros(1, 3, 17, 17)).shape == (1, 2048, 3, 3)


def test_small_models_have_no_caffe_names():
    with pytest.raises(caffe.CaffeModelError, match="no released Caffe model"):
        caffe.caffe_names(models.build("small_resnet_aspp"))
    with pytest.raises(ValueError, match="caffe_layout"):
        caffe.layout_kwargs("small_vgg_largefov")


# ------------------------------------------------------------------------------------------------
# Input convention, config and command line
# ------------------------------------------------------------------------------------------------

def test_caffe_input_convention_is_bgr_minus_the_mean():
    cfg = config.resolve("gpu", overrides={"data.input_convention": "caffe"})
    mean, std, bgr = transforms.normalisation(cfg.data)
    image = np.array([[[10, 20, 30]]], np.uint8)  # R, G, B
    x, _ = transforms.to_tensor(image, None, mean, std, bgr=bgr)
    assert torch.allclose(x.view(-1), torch.tensor([30 - 104.008, 20 - 116.669, 10 - 122.675]), atol=1e-4)
    padded, _ = transforms.pad_to(image, np.zeros((1, 1), np.uint8), 3, tuple(255 * m for m in mean))
    fill = transforms.to_tensor(padded, None, mean, std, bgr=bgr)
    # Padding with the mean colour (rounded to uint8) reads as 0 within half a grey level.
    assert torch.allclose(fill[0][:, 2, 2], torch.zeros(3), atol=0.5)
    plain = transforms.normalisation(config.resolve("gpu").data)
    assert plain == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False)  # default unchanged


def test_caffemodel_needs_the_caffe_layout_and_input():
    with pytest.raises(config.ConfigError, match="model.caffe_layout=true and data.input_convention=caffe"):
        config.resolve("gpu", overrides={"model.caffemodel": "x.caffemodel"})
    with pytest.raises(config.ConfigError, match="input_convention"):
        config.resolve("gpu", overrides={"data.input_convention": "rgb"})


def test_evaluate_a_released_largefov_caffemodel_from_the_command_line(tmp_path, monkeypatch, capsys):
    """The whole path: a V1-format LargeFOV caffemodel (legacy 4-d shapes), loaded by evaluate --caffemodel."""
    from dlib.nets.network import build as build_model
    from dlib.tools.cli import main

    torch.manual_seed(0)
    donor = models.build("deeplab_v1_largefov", avg_pool5=True)
    layers: dict[str, list] = {}
    for key, ref in caffe.caffe_names(donor).items():
        layers.setdefault(ref.layers[0], {})[ref.index] = donor.state_dict()[key].numpy()
    path = write_net(tmp_path / "train_iter_6000.caffemodel",
                     [(n, "Convolution", [b[i] for i in sorted(b)]) for n, b in layers.items()], legacy=True)
    cfg = config.resolve("smoke", overrides={"model.name": "deeplab_v1_largefov", "model.caffemodel": str(path),
                                             "model.caffe_layout": True, "data.input_convention": "caffe",
                                             "model.pretrained": None})
    model = build_model(cfg)
    assert model.backbone.layer_names.get(len(model.backbone.features) - 1) == "pool5a"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in donor.state_dict().items())
    assert not model.load_report.missing and not model.load_report.unexpected

    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path / "results"))
    code = main(["evaluate", "--profile", "smoke", "--no-progress", "--caffemodel", str(path), "--max-images", "1",
                 "--set", "model.name=deeplab_v1_largefov"])
    out = capsys.readouterr()
    assert code == 0, out.err
    line = json.loads(out.out.strip().splitlines()[-1])
    assert line["num_images"] == 1 and "blobs loaded" in out.err
    assert line["precision"] == "float32" and "evaluated in float32 (TF32 off)" in out.err
    assert main(["evaluate", "--profile", "smoke", "--no-progress"]) == 2  # neither --run nor --caffemodel
    assert "exactly one model" in capsys.readouterr().err


def test_coco_rows_from_a_released_init_caffemodel_use_the_caffe_settings():
    from dlib.experiments.ablation_tables import Training, training_config

    cfg = config.resolve("gpu", overrides={"model.coco_checkpoint": "/models/init.caffemodel"})
    coco = training_config(cfg, Training("resnet", "aspp_l", msc=True, coco=True), seed=0)
    plain = training_config(cfg, Training("resnet", "aspp_l", msc=True), seed=0)
    assert (coco.model.caffe_layout, coco.data.input_convention) == (True, "caffe")
    assert (plain.model.caffe_layout, plain.data.input_convention, plain.model.coco_checkpoint) == (
        False, "imagenet", None)
