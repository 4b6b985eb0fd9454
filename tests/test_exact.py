"""The exact (all pairs) CRF against loops over pixel pairs written from DeepLab v2, Eq. 2-3."""

import math

import numpy as np
import pytest

from dlib.crf import scenes
from dlib.crf.exact import crf_energy, dense_crf_exact, energy_terms, exact_kernels, kernel_maps


@pytest.mark.parametrize("normalization", ["none", "symmetric"])
def test_energy_matches_a_loop_over_pairs(normalization):
    rng = np.random.default_rng(3)
    h, w, c = 3, 4, 3
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(c), size=(h, w)).transpose(2, 0, 1)
    labels = rng.integers(0, c, (h, w))
    w1, ta, tb, w2, tg = 4.0, 2.0, 60.0, 3.0, 1.5
    pix = [(y, x) for y in range(h) for x in range(w)]

    def k1(a, b):
        dp = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
        di = float(((image[a].astype(float) - image[b].astype(float)) ** 2).sum())
        return math.exp(-dp / (2 * ta ** 2) - di / (2 * tb ** 2))

    def k2(a, b):
        return math.exp(-((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / (2 * tg ** 2))

    if normalization == "symmetric":  # k_ij / sqrt(d_i d_j), d_i = sum_j k_ij including j = i
        d1 = {a: sum(k1(a, b) for b in pix) for a in pix}
        d2 = {a: sum(k2(a, b) for b in pix) for a in pix}
        n1 = lambda a, b: k1(a, b) / math.sqrt(d1[a] * d1[b])  # noqa: E731
        n2 = lambda a, b: k2(a, b) / math.sqrt(d2[a] * d2[b])  # noqa: E731
    else:
        n1, n2 = k1, k2
    energy = sum(-math.log(max(probs[labels[a]][a], 1e-5)) for a in pix)
    for i, a in enumerate(pix):
        for b in pix[i + 1:]:
            if labels[a] != labels[b]:
                energy += w1 * n1(a, b) + w2 * n2(a, b)
    ours = crf_energy(labels, image, probs, w1=w1, theta_alpha=ta, theta_beta=tb, w2=w2, theta_gamma=tg,
                          normalization=normalization)
    assert ours == pytest.approx(energy, rel=1e-6)  # the unary is float32, as pydensecrf stores it


def test_kernels_match_the_gaussians_of_eq_3_pair_by_pair():
    rng = np.random.default_rng(0)
    h, w = 3, 5
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ta, tb, tg = 2.5, 40.0, 1.5
    k1, k2 = exact_kernels(image, theta_alpha=ta, theta_beta=tb, theta_gamma=tg, normalization="none")
    pix = [(y, x) for y in range(h) for x in range(w)]  # row-major, the flattening of (H, W)
    for i, a in enumerate(pix):
        for j, b in enumerate(pix):
            dp = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
            di = float(((image[a].astype(float) - image[b].astype(float)) ** 2).sum())
            assert k1[i, j] == pytest.approx(math.exp(-dp / (2 * ta ** 2) - di / (2 * tb ** 2)), rel=1e-9)
            assert k2[i, j] == pytest.approx(math.exp(-dp / (2 * tg ** 2)), rel=1e-9)
    # Per pixel ("deeplab"): each row divided by its sum; symmetric: k_ij / sqrt(d_i d_j).
    row, _ = exact_kernels(image, theta_alpha=ta, theta_beta=tb, theta_gamma=tg, normalization="deeplab")
    np.testing.assert_allclose(row, k1 / k1.sum(1, keepdims=True), rtol=1e-12)
    sym, _ = exact_kernels(image, theta_alpha=ta, theta_beta=tb, theta_gamma=tg, normalization="symmetric")
    d = k1.sum(1)
    np.testing.assert_allclose(sym, k1 / np.sqrt(d[:, None] * d[None, :]), rtol=1e-12)
    # kernel_maps: row i of the unnormalised kernels, as an (H, W) map around pixel i.
    app, smooth = kernel_maps(image, (1, 3), theta_alpha=ta, theta_beta=tb, theta_gamma=tg)
    np.testing.assert_allclose(app.ravel(), k1[pix.index((1, 3))], rtol=1e-12)
    np.testing.assert_allclose(smooth.ravel(), k2[pix.index((1, 3))], rtol=1e-12)


def test_one_mean_field_step_by_hand():
    """Q_i(l) = softmax_l(log P_i(l) + sum_{j != i} [w1 k1_ij + w2 k2_ij] Q0_j(l)), the paper's energy."""
    image, label = scenes.synthetic_scene(4, 5, num_objects=1, num_classes=3, seed=2)
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 5)).transpose(2, 0, 1).astype(np.float32)
    w1, ta, tb, w2, tg = 3.0, 2.0, 30.0, 1.0, 1.0
    q = dense_crf_exact(image, probs, w1=w1, theta_alpha=ta, theta_beta=tb, w2=w2, theta_gamma=tg, iterations=1,
                        normalization="none", include_self=False)
    pix = [(y, x) for y in range(4) for x in range(5)]
    log_p = {a: np.log(np.clip(probs[:, a[0], a[1]].astype(float), 1e-5, 1)) for a in pix}
    q0 = {a: np.exp(log_p[a]) / np.exp(log_p[a]).sum() for a in pix}
    for a in pix:
        s = log_p[a].copy()
        for b in pix:
            if b != a:
                dp = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
                di = float(((image[a].astype(float) - image[b].astype(float)) ** 2).sum())
                s += (w1 * math.exp(-dp / (2 * ta ** 2) - di / (2 * tb ** 2))
                      + w2 * math.exp(-dp / (2 * tg ** 2))) * q0[b]
        np.testing.assert_allclose(q[:, a[0], a[1]], np.exp(s) / np.exp(s).sum(), rtol=1e-6)


def test_energy_needs_a_symmetric_kernel():
    image, label = scenes.synthetic_scene(6, 7, num_objects=3, num_classes=5, seed=0)
    probs = scenes.simulate_unaries(label, 5, stride=2, seed=0)
    with pytest.raises(ValueError, match="symmetric kernel"):
        energy_terms(probs.argmax(0), image, probs, normalization="deeplab")


def test_too_large_an_image_is_refused():
    with pytest.raises(ValueError, match="too many"):
        dense_crf_exact(np.zeros((70, 70, 3), np.uint8), np.full((2, 70, 70), 0.5))
