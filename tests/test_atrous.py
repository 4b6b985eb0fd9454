"""Atrous convolution (DeepLab v2, Eq. 1) against independent computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlib.nets import atrous
from dlib.nets.atrous import Layer, receptive_field


def brute_force(x, w, r):
    """An independent reading of y[i] = sum_k x[i + r k] w[k]: slide a zero-inserted window."""
    span = r * (len(w) - 1) + 1
    out = []
    for start in range(len(x) - span + 1):
        window = x[start:start + span]
        out.append(sum(window[j] * w[j // r] for j in range(span) if j % r == 0))
    return np.array(out)


def test_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        K = int(rng.integers(1, 6))
        r = int(rng.integers(1, 7))
        n = int(rng.integers(r * (K - 1) + 1, r * (K - 1) + 30))
        x, w = rng.normal(size=n), rng.normal(size=K)
        y = atrous.atrous_conv1d(x, w, r)
        assert y.shape == (n - r * (K - 1),)
        np.testing.assert_allclose(y, brute_force(x, w, r), rtol=1e-12, atol=1e-12)


def test_rate_one_is_standard_correlation():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=20), rng.normal(size=3)
    np.testing.assert_allclose(atrous.atrous_conv1d(x, w, 1), np.correlate(x, w, mode="valid"))


def test_hand_computed_example():
    # x = 0..9, w = (1, 10, 100), rate 3: y[0] = x0 + 10 x3 + 100 x6 = 0 + 30 + 600
    y = atrous.atrous_conv1d(np.arange(10.0), [1.0, 10.0, 100.0], 3)
    np.testing.assert_array_equal(y, [630.0, 741.0, 852.0, 963.0])


@pytest.mark.parametrize("rate", [1, 2, 3, 5])
def test_torch_dilation_agrees(rate):
    rng = np.random.default_rng(rate)
    x, w = rng.normal(size=40), rng.normal(size=3)
    np.testing.assert_allclose(atrous.atrous_conv1d_torch(x, w, rate), atrous.atrous_conv1d(x, w, rate), atol=1e-12)


@pytest.mark.parametrize("rate", [1, 2, 4])
def test_kernel_with_holes_equals_atrous_1d(rate):
    rng = np.random.default_rng(10 + rate)
    x, w = rng.normal(size=30), rng.normal(size=3)
    dense = atrous.dilate_kernel(w, rate)
    assert dense.shape == (rate * 2 + 1,)
    assert np.count_nonzero(dense) == 3
    np.testing.assert_allclose(atrous.atrous_conv1d(x, dense, 1), atrous.atrous_conv1d(x, w, rate), atol=1e-12)


@pytest.mark.parametrize("rate", [1, 2, 3])
def test_kernel_with_holes_equals_atrous_2d(rate):
    rng = np.random.default_rng(20 + rate)
    x, w = rng.normal(size=(17, 19)), rng.normal(size=(3, 3))
    dense = atrous.dilate_kernel(w, rate)
    assert dense.shape == (2 * rate + 1, 2 * rate + 1)
    via_holes = F.conv2d(torch.as_tensor(x)[None, None], torch.as_tensor(dense)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(atrous.atrous_conv2d_torch(x, w, rate), via_holes, atol=1e-12)
    # and the 2-D sum written out for one output pixel
    i, j = 2, 5
    expected = sum(x[i + rate * k, j + rate * m] * w[k, m] for k in range(3) for m in range(3))
    assert atrous.atrous_conv2d_torch(x, w, rate)[i, j] == pytest.approx(expected)


def test_dilate_kernel_on_conv_weight_shape():
    w = np.ones((4, 2, 3, 3))
    assert atrous.dilate_kernel(w, 12).shape == (4, 2, 25, 25)


@pytest.mark.parametrize("x,w,rate,match", [
    (np.ones(10), np.ones(3), 0, "rate"),
    (np.ones(10), np.ones(3), 1.5, "rate"),
    (np.ones(10), np.ones(0), 1, "empty"),
    (np.ones(4), np.ones(3), 2, "shorter"),
    (np.ones((2, 5)), np.ones(3), 1, "1-D"),
])
def test_errors(x, w, rate, match):
    with pytest.raises(ValueError, match=match):
        atrous.atrous_conv1d(x, w, rate)


def test_field_of_view_of_one_filter():
    assert atrous.kernel_span(3, 2) == 5  # 3 taps at rate 2 see 5 inputs
    assert atrous.kernel_span(3, 12) == 25


def test_receptive_field_known_stacks():
    # Two 3x3 convs: 5; three: 7 (VGG's argument for stacking 3x3 filters).
    assert receptive_field([(3, 1, 1)] * 2).size == 5
    assert receptive_field([(3, 1, 1)] * 3).size == 7
    # conv3 -> pool2/2 -> conv3: 1 + 2 + 1*1 + 2*2 = 8, stride 2
    fov = receptive_field([(3, 1, 1), (2, 2, 1), (3, 1, 1)])
    assert (fov.size, fov.stride) == (8, 2)
    # dilated 3x3 at rates 1, 2, 4 (Yu & Koltun's context module): 3, 7, 15
    assert [receptive_field([(3, 1, d) for d in (1, 2, 4)[:n]]).size for n in (1, 2, 3)] == [3, 7, 15]


def test_receptive_field_of_vgg16():
    # VGG-16 up to pool5 (2x2 pools): the widely quoted 212 pixels, stride 32.
    layers = atrous.vgg16_layers(output_stride=32)
    upto_pool5 = receptive_field(layers[:-2])
    assert (upto_pool5.size, upto_pool5.stride) == (212, 32)
    deeplab = receptive_field(atrous.vgg16_layers(output_stride=8))
    assert deeplab.stride == 8


def test_receptive_field_accepts_layers_and_rejects_bad_ones():
    assert receptive_field([Layer(3, 2, 1, "a")]).stride == 2
    with pytest.raises(ValueError):
        receptive_field([(0, 1, 1)])


def test_dense_extraction_contains_the_sparse_one():
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=41), rng.normal(size=3)
    sparse, dense = atrous.sparse_vs_dense(x, w, rate=2)
    np.testing.assert_allclose(dense[::2], sparse)
    assert len(dense) > len(sparse)


def test_effective_receptive_field_support_is_the_theoretical_one():
    # For one linear atrous conv the gradient of the centre unit is the kernel with holes:
    # non-zero exactly on a (2r+1)x(2r+1) lattice of 9 pixels.
    for rate in (1, 2, 3):
        net = atrous.atrous_stack(depth=1, rate=rate)
        erf = atrous.effective_receptive_field(net, 15)
        rows, cols = np.nonzero(erf)
        assert len(rows) == 9
        assert rows.max() - rows.min() + 1 == 2 * rate + 1  # a 3-tap kernel at rate r spans 2r + 1 pixels
    # Two stacked rate-2 convs reach 1 + 2*4 = 9 pixels across.
    erf = atrous.effective_receptive_field(atrous.atrous_stack(depth=2, rate=2), 21)
    rows, _ = np.nonzero(erf > 1e-12)
    assert rows.max() - rows.min() + 1 == 9


def test_label_at_output_stride_exact_when_boundary_on_the_grid():
    label = np.zeros((32, 64), dtype=np.uint8)
    label[:, 16:] = 3
    np.testing.assert_array_equal(atrous.label_at_output_stride(label, 8), label)
    np.testing.assert_array_equal(atrous.label_at_output_stride(label, 1), label)


def test_label_at_output_stride_error_grows_with_stride():
    # A vertical bar 10 px wide, off the grid: at stride 32 it vanishes, at stride 8 most of it survives.
    label = np.zeros((64, 64), dtype=np.uint8)
    label[:, 27:37] = 5
    errors = {s: int((atrous.label_at_output_stride(label, s) != label).sum()) for s in (1, 8, 32)}
    assert errors[1] == 0
    assert errors[8] < errors[32] == 10 * 64  # at stride 32 the whole bar is lost


def test_label_at_output_stride_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..20"):
        atrous.label_at_output_stride(np.full((8, 8), 30), 8)


class _Stack(torch.nn.Module):
    """Three convolutions whose parameters are counted by hand: 3x3 rate 2 (1 -> 1000), 1x1 (1000 -> 1000), 3x3
    stride 2 (1000 -> 1): weights 9,000 + 1,000,000 + 9,000, biases 1,000 + 1,000 + 1."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 1000, 3, padding=2, dilation=2),
                                       torch.nn.Conv2d(1000, 1000, 1), torch.nn.Conv2d(1000, 1, 3, stride=2, padding=1))

    def forward(self, x):
        return self.net(x)

    def layers(self):
        return [Layer(3, 1, 2), Layer(1, 1, 1), Layer(3, 2, 1)]


def test_table2_row_counts_parameters_and_the_field_of_view():
    torch.manual_seed(0)
    stack = _Stack().double()
    row = atrous.table2_row("deeplab_v1_largefov", stack, kernel_size=3, rate=12, hidden=1024, formula_rf=224)
    assert row["params (M)"] == round(1_020_001 / 1e6, 3) and row["weights only (M)"] == round(1_018_000 / 1e6, 3)
    # The receptive field by hand, 1 + (5 - 1) + 0 + (3 - 1) = 7, and by brute force: the input pixels that move
    # the centre output unit.
    assert row["full theoretical RF"] == 7
    support = np.flatnonzero(atrous.effective_receptive_field(stack, 31).sum(0) > 0)
    assert support[-1] - support[0] + 1 == 7
    assert (row["model"], row["paper name"], row["fc6 kernel"], row["paper RF"]) == (
        "deeplab_v1_largefov", "DeepLab-CRF-LargeFOV", "3x3", 224)


def test_table2_row_on_vgg16_largefov_is_the_hand_count():
    from dlib.nets import models

    with torch.device("meta"):
        model = models.build("deeplab_v1_largefov", num_classes=21)
    # VGG-16's 13 convolutions (14,714,688 parameters, weights and biases), fc6 3x3 512 -> 1024, fc7 1024 -> 1024,
    # fc8 1024 -> 21.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
             (512, 512), (512, 512), (512, 512), (512, 512)]
    weights = sum(9 * a * b for a, b in convs) + 9 * 512 * 1024 + 1024 * 1024 + 1024 * 21
    biases = sum(b for _, b in convs) + 1024 + 1024 + 21
    assert weights + biases == 14_714_688 + 9 * 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 21 + 21
    row = atrous.table2_row("deeplab_v1_largefov", model, kernel_size=3, rate=12, hidden=1024, formula_rf=224)
    assert row["params (M)"] == round((weights + biases) / 1e6, 3) == 20.505  # the paper: 20.5M
    assert row["weights only (M)"] == round(weights / 1e6, 3)


def test_the_paper_table_agrees_with_its_formula_and_the_model_table():
    from dlib.nets import models

    for name, paper in atrous.DEEPLAB_V1_TABLE2.items():
        info = models.info(name)
        # The paper's receptive-field column is 8 r (k - 1) + 32 for fc6's k and r (DeepLab v1, Table 2).
        assert paper.receptive_field == 8 * info.rates[0] * (info.kernel_size - 1) + 32
        assert paper.params_m == info.paper_params_m


def test_mean_gradient_maps_by_hand():
    draws = [[np.array([[1.0, 3.0]]), np.array([[0.0, 2.0]])],
             [np.array([[2.0, 2.0]]), np.array([[5.0, 5.0]])]]
    maps = atrous.mean_gradient_maps(draws)
    np.testing.assert_allclose(maps[0], [[(0.25 + 0.5) / 2, (0.75 + 0.5) / 2]])
    np.testing.assert_allclose(maps[1], [[(0.0 + 0.5) / 2, (1.0 + 0.5) / 2]])
    assert all(m.sum() == pytest.approx(1.0) for m in maps)
    with pytest.raises(ValueError, match="at least one draw"):
        atrous.mean_gradient_maps([])


def test_erf_row_against_a_delta_a_uniform_map_and_a_tap_count():
    size, centre = 21, 10
    delta = np.zeros((size, size))
    delta[centre + 3, centre + 4] = 1.0  # 5 px from the centre
    row = atrous.erf_row(delta, 3, output_stride=2, far=4.5)
    assert row["mean distance from centre (px)"] == 5.0 and row["gradient share beyond 4.5 px"] == 1.0
    assert atrous.erf_row(delta, 3, output_stride=2)["gradient share beyond 100 px"] == 0.0
    uniform = np.full((size, size), 1.0 / size ** 2)
    by_loop = sum(np.hypot(i - centre, j - centre) for i in range(size) for j in range(size)) / size ** 2
    assert atrous.erf_row(uniform, 1, output_stride=2)["mean distance from centre (px)"] == round(by_loop, 1)
    for rate in (1, 3, 5, 6):  # taps centre + 2 * rate * (i, j), i, j in {-1, 0, 1}, inside the 21 x 21 input
        inside = sum(0 <= centre + 2 * rate * i < size and 0 <= centre + 2 * rate * j < size
                     for i in (-1, 0, 1) for j in (-1, 0, 1))
        assert atrous.erf_row(delta, rate, output_stride=2)["taps inside the input"] == inside
    with pytest.raises(ValueError, match="odd size"):
        atrous.erf_row(np.ones((4, 4)) / 16, 1, output_stride=8)


def brute_force_2d(x, w, r):
    """y[i, j] = sum_{k,l} x[i + r k, j + r l] w[k, l], one output at a time."""
    K, L = w.shape
    H, W = x.shape[0] - r * (K - 1), x.shape[1] - r * (L - 1)
    return np.array([[sum(x[i + r * k, j + r * m] * w[k, m] for k in range(K) for m in range(L)) for j in range(W)]
                     for i in range(H)])


@pytest.mark.parametrize("rate, kernel", [(1, (3, 3)), (2, (3, 3)), (3, (2, 4)), (4, (1, 3))])
def test_atrous_conv2d_is_eq1_in_two_dimensions(rate, kernel):
    rng = np.random.default_rng(30 + rate)
    x, w = rng.normal(size=(17, 19)), rng.normal(size=kernel)
    y = atrous.atrous_conv2d(x, w, rate)
    assert y.shape == (17 - rate * (kernel[0] - 1), 19 - rate * (kernel[1] - 1))
    np.testing.assert_allclose(y, brute_force_2d(x, w, rate), atol=1e-12)
    np.testing.assert_allclose(y, atrous.atrous_conv2d_torch(x, w, rate), atol=1e-12)


def test_atrous_conv2d_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        atrous.atrous_conv2d(np.zeros(5), np.ones((3, 3)))
    with pytest.raises(ValueError, match="smaller than the kernel's span 5x5"):
        atrous.atrous_conv2d(np.zeros((4, 9)), np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="rate"):
        atrous.atrous_conv2d(np.zeros((9, 9)), np.ones((3, 3)), 0)


@pytest.mark.parametrize("layers", [
    [(3, 1, 1)] * 2 + [(2, 2, 1)] + [(3, 1, 2)],  # 1 + 2 + 2 + 1 + 2 * 4 = 14 px
    [(3, 2, 1), (3, 1, 3), (5, 1, 1)],
    atrous.vgg16_layers(output_stride=32)[:-2],  # VGG-16 to pool5: 212 px, the published value
])
def test_ones_stack_gradients_measure_the_recurrences_receptive_field(layers):
    theory = receptive_field(layers)
    grad = atrous.effective_receptive_field(atrous.ones_stack(layers), 257)
    rows, cols = np.nonzero(grad.sum(1) > 0)[0], np.nonzero(grad.sum(0) > 0)[0]
    assert rows.max() - rows.min() + 1 == cols.max() - cols.min() + 1 == theory.size
    assert (grad[rows.min():rows.max() + 1, cols.min():cols.max() + 1] > 0).any()
    if len(layers) > 10:
        assert theory.size == 212


def test_ones_stack_has_one_unit_weight_per_tap():
    net = atrous.ones_stack([Layer(3, 1, 2), (2, 2, 1)])
    assert [tuple(m.weight.shape) for m in net] == [(1, 1, 3, 3), (1, 1, 2, 2)]
    assert all(bool((m.weight.detach() == 1.0).all()) for m in net)
    assert [m.dilation for m in net] == [(2, 2), (1, 1)] and [m.padding for m in net] == [(2, 2), (0, 0)]
