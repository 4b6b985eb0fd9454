"""The dense CRF wrapper against a direct pydensecrf call and the brute-force mean field (dlib.crf.exact).

Both backends (pydensecrf, the torch lattice) run the same tests against the exact mean field; the
pydensecrf ones skip cleanly when the optional extra is not installed.
"""

import itertools
import math

import numpy as np
import pytest
from crf_helpers import PARAMS, scene

from dlib import crf
from dlib.core import config
from dlib.crf.exact import crf_energy, dense_crf_exact

BACKENDS = ["pydensecrf", "torch"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn; pydensecrf's tests skip when the optional extra [crf] is absent."""
    if request.param == "pydensecrf":
        pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (optional extra [crf]) is not installed")
    return request.param




def _direct_pydensecrf(image, probs, *, w1, theta_alpha, theta_beta, w2, theta_gamma, iterations):
    """The documented mapping, written out against pydensecrf's own API."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=theta_gamma, compat=w2)
    d.addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, rgbim=np.ascontiguousarray(image), compat=w1)
    return np.array(d.inference(iterations)).reshape(probs.shape)


def test_wrapper_is_exactly_the_documented_pydensecrf_call():
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (optional extra [crf]) is not installed")
    image, _, probs = scene()
    for params in (PARAMS, crf.DenseCRF().params):
        ours = crf.DenseCRF(**params, backend="pydensecrf")(image, probs)
        np.testing.assert_array_equal(ours, _direct_pydensecrf(image, probs, **params))
    # The comparison can tell a wrong mapping apart: swapping theta_alpha and theta_beta changes Q.
    swapped = dict(PARAMS, theta_alpha=PARAMS["theta_beta"], theta_beta=PARAMS["theta_alpha"])
    assert np.abs(crf.DenseCRF(**PARAMS, backend="pydensecrf")(image, probs)
                  - _direct_pydensecrf(image, probs, **swapped)).max() > 1e-3
    q = crf.DenseCRF(**PARAMS, backend="pydensecrf")(image, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_lattice_agrees_with_brute_force_mean_field(backend):
    """The permutohedral lattice approximates the Gaussians; this pins how well (both backends, one tolerance).

    Measured on these 32x40 scenes (5 classes): label agreement >= 0.993 and mean |Q_lattice - Q_exact|
    <= 0.0033 against the exact symmetric-normalised mean field that includes j = i; single pixels
    differ by up to 0.55 where two labels are nearly tied. The paper's
    unnormalised energy (no j = i) fits clearly worse, which is the documented deviation.
    """
    for seed, params in itertools.product(range(3), (PARAMS, crf.DenseCRF().params)):
        image, _, probs = scene(seed)
        lattice = crf.DenseCRF(**params, backend=backend)(image, probs)
        exact = dense_crf_exact(image, probs, **params)
        agreement = (lattice.argmax(0) == exact.argmax(0)).mean()
        error = np.abs(lattice - exact).mean()
        assert agreement >= 0.98, (seed, params, agreement)
        assert error <= 0.01, (seed, params, error)
        literal = dense_crf_exact(image, probs, **params, normalization="none", include_self=False)
        assert np.abs(lattice - literal).mean() > 2 * error


@pytest.mark.parametrize("name, params, factor", [
    ("theta_gamma", dict(w1=0.0, w2=5.0, theta_gamma=3.0, iterations=5), math.sqrt(2)),
    ("theta_alpha", dict(w1=5.0, w2=0.0, theta_alpha=6.0, theta_beta=20.0, iterations=5), math.sqrt(2)),
    ("theta_beta", dict(w1=5.0, w2=0.0, theta_alpha=6.0, theta_beta=20.0, iterations=5), 2.0),
])
def test_sxy_and_srgb_are_the_papers_thetas(name, params, factor, backend):
    """pydensecrf's kernel is exp(-|p/sxy|^2 / 2 ...): sxy = theta exactly, not theta * sqrt(2) or / sqrt(2)."""
    image, _, probs = scene()
    lattice = crf.DenseCRF(**params, backend=backend)(image, probs)

    def error(scale):
        exact = dense_crf_exact(image, probs, **dict(params, **{name: params[name] * scale}))
        return np.abs(lattice - exact).mean()

    assert error(1.0) < error(factor) and error(1.0) < error(1 / factor)


@pytest.mark.parametrize("method, normalization", [("pydensecrf", "symmetric"), ("torch", "symmetric"),
                                                   ("exact", "symmetric"), ("exact_literal", "none")])
def test_mean_field_lowers_the_energy_where_pairwise_terms_must_win(method, normalization, two_halves):
    if method == "pydensecrf":
        pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (optional extra [crf]) is not installed")
    image, probs, truth = two_halves
    params = dict(w1=4.0, theta_alpha=5.0, theta_beta=10.0, w2=3.0, theta_gamma=3.0)
    if method in ("pydensecrf", "torch"):
        q = crf.DenseCRF(**params, backend=method)(image, probs)
    elif method == "exact":
        q = dense_crf_exact(image, probs, **params)
    else:
        q = dense_crf_exact(image, probs, **params, normalization="none", include_self=False)
    unary_argmax = probs.argmax(0)
    assert (unary_argmax != truth).sum() == 4
    refined = q.argmax(0)
    np.testing.assert_array_equal(refined, truth)  # the salt pixels flip to their region's label
    before = crf_energy(unary_argmax, image, probs, **params, normalization=normalization)
    after = crf_energy(refined, image, probs, **params, normalization=normalization)
    assert after < before
    # With no pairwise weight, the CRF keeps the unary's argmax.
    free = crf.DenseCRF(**dict(params, w1=0.0, w2=0.0))(image, probs)
    np.testing.assert_array_equal(free.argmax(0), unary_argmax)


def test_steps_end_at_the_inference_result(backend):
    image, _, probs = scene(1)
    model = crf.DenseCRF(**PARAMS, backend=backend)
    steps = list(model.steps(image, probs))
    assert [s[0] for s in steps] == list(range(PARAMS["iterations"] + 1))
    np.testing.assert_array_equal(steps[-1][2], model(image, probs))
    # Iteration 0 is the unary alone; every belief map is the softmax of its score map.
    np.testing.assert_allclose(steps[0][2], np.clip(probs, 1e-5, 1) / np.clip(probs, 1e-5, 1).sum(0), atol=1e-6)
    for _, score, belief in steps:
        e = np.exp(score - score.max(0))
        np.testing.assert_allclose(belief, e / e.sum(0), atol=1e-5)


def _bad_inputs():
    image = np.zeros((6, 8, 3), np.uint8)
    probs = np.full((3, 6, 8), 1 / 3, np.float32)
    nan = probs.copy()
    nan[0, 1, 1] = np.nan
    inf = probs.copy()
    inf[1, 2, 2] = np.inf
    return [
        (image.astype(np.float32), probs, TypeError, "uint8"),
        (image, probs.astype(np.int64), TypeError, "float"),
        (image[..., 0], probs, ValueError, r"\(H, W, 3\)"),
        (image, probs[0], ValueError, r"\(C, H, W\)"),
        (image, probs[:, :5], ValueError, "upsample"),
        (image, probs * 2, ValueError, "sum to 1"),
        (image, nan, ValueError, "NaN or infinity"),
        (image, inf, ValueError, "NaN or infinity"),
        (image, probs[:1] / probs[:1], ValueError, "at least 2 classes"),
        (image, np.where(np.arange(3)[:, None, None] == 0, -0.5, 0.75).astype(np.float32) * np.ones((3, 6, 8)),
         ValueError, "negative"),
    ]


@pytest.mark.parametrize("image, probs, error, message", _bad_inputs())
def test_bad_inputs_are_named(image, probs, error, message):
    with pytest.raises(error, match=message):
        crf.DenseCRF()(image, probs)
    with pytest.raises(error, match=message):
        crf.DenseCRF(backend="torch").batch([image], [probs])


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        crf.DenseCRF(iterations=0)
    with pytest.raises(TypeError, match="iterations must be an int"):
        crf.DenseCRF(iterations=2.5)
    with pytest.raises(ValueError, match="theta_alpha"):
        crf.DenseCRF(theta_alpha=0)
    with pytest.raises(ValueError, match="w1"):
        crf.DenseCRF(w1=float("nan"))
    with pytest.raises(ValueError, match="backend must be one of"):
        crf.DenseCRF(backend="cuda")
    with pytest.raises(ValueError, match="normalization must be one of"):
        crf.DenseCRF(normalization="mean")


def test_defaults_come_from_the_config():
    defaults = config.CRFConfig()
    model = crf.DenseCRF()
    assert (model.w1, model.theta_alpha, model.theta_beta) == (defaults.w1, defaults.theta_alpha, defaults.theta_beta)
    assert (model.w2, model.theta_gamma, model.iterations) == (3.0, 3.0, 10)  # DeepLab v2, Sec. 4.1
    smoke = crf.DenseCRF.from_config(config.resolve("smoke"))
    assert smoke.iterations == config.resolve("smoke").crf.iterations
    tuned = crf.DenseCRF.from_config(config.resolve("cpu", overrides={"crf.w1": 6.0}).crf)
    assert tuned.w1 == 6.0
    # Cross-validated values replace single settings; the rest (normalisation, backend, ...) stays the config's.
    cfg = config.resolve("smoke", overrides={"crf.normalization": "deeplab", "crf.backend": "torch"})
    chosen = crf.DenseCRF.from_config(cfg, w1=5.0, theta_alpha=30.0, theta_beta=4.0)
    assert (chosen.w1, chosen.theta_alpha, chosen.theta_beta) == (5.0, 30.0, 4.0)
    assert (chosen.normalization, chosen.backend, chosen.iterations) == ("deeplab", "torch", cfg.crf.iterations)
    with pytest.raises(TypeError, match="unknown settings"):
        crf.DenseCRF.from_config(cfg, sigma=3.0)


# ----------------------------------------------------------------------------------------------
# Backend choice and its record (the torch backend itself: test_meanfield)
# ----------------------------------------------------------------------------------------------

def test_auto_backend_prefers_pydensecrf_and_falls_back_to_torch(monkeypatch):
    assert crf.resolve_backend("torch") == "torch"
    monkeypatch.setattr("dlib.crf.dense.pydensecrf_available", lambda: False)
    assert crf.resolve_backend("auto") == "torch" and crf.DenseCRF().backend == "torch"
    with pytest.raises(ImportError, match=r"\[crf\]"):
        crf.DenseCRF(backend="pydensecrf")
    assert crf.backend_version("auto")["backend"] == "torch"
    monkeypatch.setattr("dlib.crf.dense.pydensecrf_available", lambda: True)
    assert crf.resolve_backend("auto") == "pydensecrf"


def test_a_new_backend_is_one_class_and_one_registry_entry(monkeypatch):
    """A toy backend whose Q is the unary's own softmax (no pairwise term): registered, it is resolved, recorded,
    run by DenseCRF, kept on the CPU, and listed among the accepted values, with no other code changed."""

    class UnaryOnly:
        name, uses_device, missing = "unary_only", False, "never missing"

        def available(self):
            return True

        def version(self):
            return "toy 1"

        def batch(self, model, images, probs):
            return [np.exp(-crf.unary_energy(p)).reshape(p.shape) for p in probs]

        def steps(self, model, image, probs):
            yield 0, -crf.unary_energy(probs).reshape(probs.shape), self.batch(model, [image], [probs])[0]

    monkeypatch.setitem(crf.BACKEND_REGISTRY, "unary_only", UnaryOnly())
    image, _, probs = scene()
    model = crf.DenseCRF(backend="unary_only")
    clipped = np.clip(probs, crf.PROB_CLIP, 1.0)  # exp(-unary) computed here from its definition: clip, then log
    assert "unary_only" in crf.backends() and model.backend == "unary_only"
    assert np.allclose(model(image, probs), clipped, atol=1e-6)
    assert (model.predict(image, probs) == probs.argmax(0)).all()
    assert crf.backend_version("unary_only") == {"backend": "unary_only", "version": "toy 1"}
    assert [it for it, _, _ in model.steps(image, probs)] == [0]
    with pytest.raises(ValueError, match="CPU only"):
        crf.DenseCRF(backend="unary_only", device="cuda")
    with pytest.raises(ValueError, match="must be one of"):
        crf.DenseCRF(backend="unregistered")


def test_provenance_records_the_crf_backend_and_version():
    from dlib.experiments import results

    cfg = config.resolve("smoke", overrides={"crf.backend": "torch"})
    assert crf.DenseCRF.from_config(cfg).backend == "torch"
    record = results.provenance(cfg)["crf_backend"]
    assert record["backend"] == "torch" and "torch" in record["version"]
    auto = results.provenance(config.resolve("smoke"))["crf_backend"]
    assert auto["backend"] == ("pydensecrf" if crf.pydensecrf_available() else "torch")


def test_pydensecrf_version_comes_from_its_distribution():
    """The module pydensecrf has no __version__; the distribution pydensecrf2 that installs it records one."""
    from importlib import metadata

    from dlib.experiments import results

    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (optional extra [crf]) is not installed")
    version = metadata.version("pydensecrf2")
    assert results.library_versions()["pydensecrf2"] == version  # the name pip knows it by
    assert crf.backend_version("pydensecrf") == {"backend": "pydensecrf", "version": f"pydensecrf2 {version}"}


# ----------------------------------------------------------------------------------------------
# The CRF as DeepLab ran it: per-pixel normalisation, and the published parameter sets
# ----------------------------------------------------------------------------------------------

def _densecrf_2011_mean_field(image, probs, *, w1, theta_alpha, theta_beta, w2, theta_gamma, iterations):
    """Kraehenbuehl's 2011 code as DeepLab ran it, with exact Gaussians: PottsPotential with per-pixel
    normalisation, norm_i = 1 / sum_j k_ij (j = i included), message w * norm_i * sum_j k_ij Q_j."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    rgb = image.reshape(-1, 3).astype(float)
    d_pos = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d_rgb = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    k1 = np.exp(-d_pos / (2 * theta_alpha ** 2) - d_rgb / (2 * theta_beta ** 2))
    k2 = np.exp(-d_pos / (2 * theta_gamma ** 2))
    norm1, norm2 = 1 / k1.sum(1), 1 / k2.sum(1)
    log_p = np.log(np.clip(probs.reshape(probs.shape[0], -1).astype(float), 1e-5, 1)).T  # (N, C)
    q = np.exp(log_p) / np.exp(log_p).sum(1, keepdims=True)
    for _ in range(iterations):
        s = log_p + w1 * norm1[:, None] * (k1 @ q) + w2 * norm2[:, None] * (k2 @ q)
        q = np.exp(s - s.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.T.reshape(probs.shape)


def test_deeplab_normalisation_is_densecrf_2011_per_pixel(backend):
    """DeepLab's densecrf (2011 code, per_pixel_normalization=true) = pydensecrf's NORMALIZE_AFTER: both
    backends' "deeplab" approximate the 2011 mean field as closely as the lattice approximates Gaussians."""
    for seed, params in itertools.product(range(2), (PARAMS, crf.DenseCRF().params)):
        image, _, probs = scene(seed)
        reference = _densecrf_2011_mean_field(image, probs, **params)
        exact = dense_crf_exact(image, probs, **params, normalization="deeplab")
        np.testing.assert_allclose(exact, reference, atol=1e-6)  # the brute force is that formula
        q = crf.DenseCRF(**params, backend=backend, normalization="deeplab")(image, probs)
        np.testing.assert_array_equal(q, crf.DenseCRF(**params, backend=backend, normalization="after")(image, probs))
        error = np.abs(q - reference).mean()
        assert (q.argmax(0) == reference.argmax(0)).mean() >= 0.98 and error <= 0.01, (seed, params, error)
    # Where the normalisations differ: a flat image, the same unary everywhere, the smoothness kernel only.
    # Per pixel, each message is w2 times an average of Q, so every pixel follows the same scalar recursion
    # q <- softmax(log P + w2 q), corners included; symmetric weights a corner's message less than the centre's.
    image = np.full((6, 6, 3), 100, np.uint8)
    probs = np.stack([np.full((6, 6), 0.6), np.full((6, 6), 0.4)]).astype(np.float32)
    params = dict(w1=0.0, theta_alpha=10.0, theta_beta=5.0, w2=2.0, theta_gamma=1.5, iterations=3)
    p, q_hand = np.array([0.6, 0.4]), np.array([0.6, 0.4])
    for _ in range(3):
        e = np.exp(np.log(p) + 2.0 * q_hand)
        q_hand = e / e.sum()
    deeplab = crf.DenseCRF(**params, backend=backend, normalization="deeplab")(image, probs)
    np.testing.assert_allclose(deeplab.reshape(2, -1).T, np.broadcast_to(q_hand, (36, 2)), atol=1e-5)
    symmetric = crf.DenseCRF(**params, backend=backend, normalization="symmetric")(image, probs)
    assert abs(symmetric[0, 0, 0] - symmetric[0, 3, 3]) > 1e-3  # corner and centre differ


def test_the_published_crf_settings_and_our_defaults_sources():
    # DeepLab v2, Sec. 4.1: w2 = 3, sigma_gamma = 3. Released ResNet-101 VOC: bi_w 4, bi_xy_std 67, bi_rgb_std 3,
    # pos_w 3, pos_xy_std 1. Released VGG-16: 4, 65, 3, 2, 2.
    def values(s):
        return (s.w1, s.theta_alpha, s.theta_beta, s.w2, s.theta_gamma)

    assert values(config.PAPER_TEXT) == (None, None, None, 3, 3)
    assert values(config.RELEASED_RESNET101) == (4, 67, 3, 3, 1)
    assert values(config.RELEASED_VGG16) == (4, 65, 3, 2, 2)
    assert set(config.CRF_SETTINGS) == {"paper_text", "released_resnet101", "released_vgg16"}
    assert all(s.source for s in config.CRF_SETTINGS.values())
    d = config.CRFConfig()  # appearance kernel from the release, smoothness kernel from the paper's text
    assert (d.w1, d.theta_alpha, d.theta_beta, d.w2, d.theta_gamma) == (4, 67, 3, 3, 3)
    assert d.normalization == "symmetric"
