"""dlib.nets.msc: per-scale shapes, max fusion against an elementwise max computed here, train/eval
outputs and label subsampling (the summed loss: test_loss; the `model` fixture: conftest)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlib.nets.msc import MSC, MSCOutput, labels_at_logits, scaled_size
from dlib.training import schedule


def test_scaled_sizes_follow_caffe_interp():
    # DeepLab v2's 321 crops at 0.75 and 0.5: (321 - 1) * s + 1.
    assert [scaled_size(321, s) for s in (1.0, 0.75, 0.5)] == [321, 241, 161]


def test_training_output_shapes_per_scale(model):
    msc = MSC(model).train()
    x = torch.randn(2, 3, 112, 100)
    with torch.no_grad():
        out = msc(x)
    assert isinstance(out, MSCOutput)
    sizes = [(int(111 * s) + 1, int(99 * s) + 1) for s in (1.0, 0.75, 0.5)]
    assert out.input_sizes == sizes
    assert [tuple(o.shape) for o in out.per_scale] == [(2, 3, math.ceil(h / 8), math.ceil(w / 8)) for h, w in sizes]
    assert out.fused.shape == (2, 3, 14, 13)
    assert len(out.all()) == 4
    msc.eval()


def test_eval_returns_the_max_fusion_of_independently_computed_scales(model):
    msc = MSC(model, scales=(1.0, 0.75, 0.5)).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 65, 65)  # 8k+1: every scale's grid aligns with the scale-1 grid
    with torch.no_grad():
        fused = msc(x)
        expected = None
        for s in (1.0, 0.75, 0.5):
            n = int(64 * s) + 1  # 65, 49, 33
            logits = model(F.interpolate(x, size=(n, n), mode="bilinear", align_corners=True))
            logits = F.interpolate(logits, size=(9, 9), mode="bilinear", align_corners=True)
            expected = logits if expected is None else torch.maximum(expected, logits)
    assert fused.shape == (1, 3, 9, 9)
    assert torch.allclose(fused, expected, atol=1e-5)


def test_single_scale_msc_is_the_model(model):
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.allclose(MSC(model, scales=(1.0,)).eval()(x), model(x))


def test_labels_are_subsampled_on_the_logit_centres():
    labels = torch.randint(0, 5, (2, 65, 65))
    # scale 1: logit i sits on pixel 8i; scale 0.5 (33 px): on pixel 16i of the original.
    assert torch.equal(labels_at_logits(labels, (65, 65), (65, 65), (9, 9)), labels[:, ::8, ::8])
    assert torch.equal(labels_at_logits(labels, (65, 65), (33, 33), (5, 5)), labels[:, ::16, ::16])


def test_msc_exposes_the_models_parameter_groups(model):
    groups = schedule.parameter_roles(MSC(model))
    assert [id(p) for p in groups["head_weight"]] == [id(b.conv.weight) for b in model.head.branches]


def test_bad_scales_are_rejected(model):
    with pytest.raises(ValueError, match="scales"):
        MSC(model, scales=())
    with pytest.raises(ValueError, match="scales"):
        MSC(model, scales=(1.0, -0.5))


def test_msc_finds_with_a_smaller_scale_what_a_fixed_scale_detector_misses():
    from dlib.crf.scenes import disc_scene
    from dlib.nets.msc import CentreSurroundDetector

    image, label = disc_scene(97, [(24, 24, 6), (64, 64, 12)])
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    detector = CentreSurroundDetector(6)
    single = detector(x)[0, 1]  # object score, scale 1
    assert single[3, 3] > 0  # the 6 px disc: found
    assert single[8, 8] < 0  # the 12 px disc: too large for this field of view
    fused = MSC(detector, scales=(1.0, 0.5)).eval()(x)[0, 1]
    assert fused[3, 3] > 0 and fused[8, 8] > 0  # at scale 0.5 the 12 px disc looks like a 6 px one
    ys, xs = torch.nonzero(fused > 0, as_tuple=True)
    assert (label[8 * ys.numpy(), 8 * xs.numpy()] > 0).all()  # nothing outside the discs is "object"


# ------------------------------------------------------------------------------------------------
# Caffe's Interp (model.caffe_layout): sizes from the prototxt's interp_param, values from caffe_cpu_interp2
# ------------------------------------------------------------------------------------------------

def interp_side(n: int, *, shrink: int = 1, zoom: int = 1) -> int:
    """DeepLab's interp_layer.cpp output side: shrink first, (n-1)/shrink + 1 (integer division), then zoom,
    n + (n-1)(zoom-1)."""
    m = (n - 1) // shrink + 1
    return m + (m - 1) * (zoom - 1)


def caffe_interp(a, out_h: int, out_w: int):
    """caffe_cpu_interp2 by hand on (C, h, w): out[i] = bilinear at i*(h-1)/(out_h-1), corners aligned."""
    a = a.double()
    h, w = a.shape[-2:]
    rh = (h - 1) / (out_h - 1) if out_h > 1 else 0.0
    rw = (w - 1) / (out_w - 1) if out_w > 1 else 0.0
    out = torch.empty(a.shape[0], out_h, out_w, dtype=torch.float64)
    for i in range(out_h):
        y0 = int(rh * i)
        y1, ly = y0 + (1 if y0 < h - 1 else 0), rh * i - y0
        for j in range(out_w):
            x0 = int(rw * j)
            x1, lx = x0 + (1 if x0 < w - 1 else 0), rw * j - x0
            out[:, i, j] = ((1 - ly) * ((1 - lx) * a[:, y0, x0] + lx * a[:, y0, x1])
                            + ly * ((1 - lx) * a[:, y1, x0] + lx * a[:, y1, x1]))
    return out


# data_res075 (shrink 4, zoom 3) and data_res05 (shrink 2) of DeepLab v2's ResNet-101 test.prototxt
PROTOTXT_SHRINK = {0.75: {"shrink": 4, "zoom": 3}, 0.5: {"shrink": 2}}


@pytest.mark.parametrize("n", [65, 66, 75, 97, 100, 513])
def test_caffe_scaled_sizes_follow_the_prototxts_interp_params(n):
    from dlib.nets.msc import caffe_scaled_size

    for s, params in PROTOTXT_SHRINK.items():
        assert caffe_scaled_size(n, s) == interp_side(n, **params)
    assert caffe_scaled_size(n, 1.0) == n
    assert (caffe_scaled_size(100, 0.75), scaled_size(100, 0.75)) == (73, 75)  # the two rules differ off 4k+1


def test_caffe_interp_fusion_matches_caffes_interp_by_hand():
    torch.manual_seed(2)
    net = torch.nn.Conv2d(3, 4, 3, stride=8, padding=1).eval()  # n -> ceil(n/8), unit i on pixel 8i
    x = torch.randn(1, 3, 66, 97)
    with torch.no_grad():
        fused = MSC(net, interp="caffe").eval()(x)[0].double()
        pixel = MSC(net).eval()(x)[0].double()
        want = None
        for s in (1.0, 0.75, 0.5):
            size = (66, 97) if s == 1 else tuple(interp_side(n, **PROTOTXT_SHRINK[s]) for n in (66, 97))
            xs = caffe_interp(x[0], *size).float()[None]  # data_res075 / data_res05
            scores = caffe_interp(net(xs)[0], 9, 13)  # fc1_*_interp onto the scale-1 map, 9x13
            want = scores if want is None else torch.maximum(want, scores)
    assert fused.shape == want.shape == (4, 9, 13)
    assert torch.allclose(fused, want, atol=1e-5)
    assert (pixel - want).abs().max() > 1e-3  # the pixel-aligned fusion is another resampling at 66x97


def test_the_two_alignments_agree_where_every_scale_is_8k_plus_1(model):
    x = torch.randn(1, 3, 65, 97)  # 32k+1: 65 -> 49 -> 33, 97 -> 73 -> 49, all 8k+1
    with torch.no_grad():
        assert torch.allclose(MSC(model, interp="caffe").eval()(x), MSC(model).eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="interp"):
        MSC(model, interp="nearest")


def test_caffe_interp_training_outputs_use_the_prototxts_sizes(model):
    msc = MSC(model, interp="caffe").train()
    with torch.no_grad():
        out = msc(torch.randn(1, 3, 100, 75))
    msc.eval()
    assert out.input_sizes == [(100, 75)] + [tuple(interp_side(n, **PROTOTXT_SHRINK[s]) for n in (100, 75))
                                             for s in (0.75, 0.5)] == [(100, 75), (73, 55), (50, 38)]
    assert out.fused.shape[-2:] == out.per_scale[0].shape[-2:]  # fused on the scale-1 map


@pytest.mark.parametrize("interp", ["pixel", "caffe"])
def test_forward_is_the_max_over_its_pieces_d_s_f_and_r_s(model, interp):
    msc = MSC(model, interp=interp).train()
    torch.manual_seed(2)
    x = torch.randn(1, 3, 75, 60)  # not 32k+1: the two alignments differ here
    with torch.no_grad():
        out = msc(x)
        sizes = [msc.input_size((75, 60), s) for s in msc.scales]
        per_scale = [model(F.interpolate(x, size=sz, mode="bilinear", align_corners=True) if sz != (75, 60) else x)
                     for sz in sizes]
        aligned = msc.to_scale1_grid(per_scale, sizes, (75, 60))
    assert out.input_sizes == sizes and all(torch.equal(a, b) for a, b in zip(out.per_scale, per_scale))
    assert len({tuple(a.shape) for a in aligned}) == 1
    expected = aligned[0]
    for a in aligned[1:]:
        expected = torch.maximum(expected, a)
    assert torch.equal(out.fused, expected)
    if interp == "pixel":
        assert sizes == [(75, 60), (scaled_size(75, 0.75), scaled_size(60, 0.75)), (38, 30)]
