"""The permutohedral lattice against its definitions: the embedding, the simplex, and the exact Gaussian filter."""

import math

import numpy as np
import pytest
import torch

from dlib.crf import lattice


@pytest.mark.parametrize("d", [1, 2, 5])
def test_embedding_lies_on_the_plane_and_scales_distances(d):
    f = torch.randn(50, d, dtype=torch.float64)
    x = lattice.embed(f)
    assert x.shape == (50, d + 1)
    torch.testing.assert_close(x.sum(1), torch.zeros(50, dtype=torch.float64), atol=1e-9, rtol=0)
    # sqrt(2/3) (d+1) times an isometry: every distance grows by the same factor.
    ratio = torch.cdist(x, x)[~torch.eye(50, dtype=torch.bool)] / torch.cdist(f, f)[~torch.eye(50, dtype=torch.bool)]
    torch.testing.assert_close(ratio, torch.full_like(ratio, math.sqrt(2 / 3) * (d + 1)))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_simplex_vertices_are_lattice_points_around_the_point(d):
    x = lattice.embed(torch.randn(200, d, dtype=torch.float64) * 3)
    keys, weights = lattice.enclosing_simplex(x)
    assert keys.shape == (200, d + 1, d + 1) and weights.shape == (200, d + 1)
    # Lattice points: coordinates sum to 0 and are all congruent modulo d+1; the vertices differ.
    assert (keys.sum(-1) == 0).all()
    assert ((keys - keys[..., :1]) % (d + 1) == 0).all()
    assert all(len({tuple(v) for v in k.tolist()}) == d + 1 for k in keys)
    # Barycentric weights: non-negative, sum to 1, and reproduce the point from the vertices.
    assert (weights >= -1e-9).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(200, dtype=torch.float64))
    torch.testing.assert_close((weights[:, :, None] * keys.double()).sum(1), x)


def _exact_gauss(f):
    return torch.exp(-torch.cdist(f, f) ** 2 / 2)


@pytest.mark.parametrize("d", [2, 5])
def test_filter_approximates_the_gaussian(d):
    """splat -> blur -> slice is close to sum_j exp(-|f_i - f_j|^2 / 2) v_j (the CRF's kernel), up to a gain.

    Measured here: after the best single gain s the relative error is 0.02 (d = 2) and 0.12 (d = 5),
    with s = 1.15 and 1.8: the lattice's kernel is a Gaussian-like bump whose overall level drifts
    with d (the same lattice as pydensecrf's; the CRF's normalisations divide the level out).
    """
    g = torch.Generator().manual_seed(d)
    f = torch.rand(400, d, generator=g, dtype=torch.float64) * 4  # a few standard deviations across
    v = torch.rand(400, 3, generator=g, dtype=torch.float64)
    exact = (_exact_gauss(f) @ v).float()
    approx = lattice.PermutohedralLattice(f).filter(v)
    gain = ((approx * exact).sum() / (approx * approx).sum()).item()
    rel = ((gain * approx - exact).norm() / exact.norm()).item()
    assert rel < {2: 0.05, 5: 0.15}[d], rel
    assert 0.8 < gain < 2.0, gain
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.97


def test_segments_never_interact():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(100, 3, generator=g, dtype=torch.float64) * 3
    v = torch.rand(100, 2, generator=g)
    alone = lattice.PermutohedralLattice(f).filter(v)
    both = lattice.PermutohedralLattice(torch.cat([f, f]), torch.cat([torch.zeros(100), torch.ones(100)]).long())
    out = both.filter(torch.cat([v, 10 * v]))
    torch.testing.assert_close(out[:100], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[100:], 10 * alone, rtol=1e-5, atol=1e-5)


def test_matrices_are_the_indices_and_weights():
    f = torch.rand(30, 2, dtype=torch.float64) * 2
    lat = lattice.PermutohedralLattice(f)
    dense = torch.zeros(30, lat.num_points)
    dense[torch.arange(30)[:, None], lat.index] = lat.weight
    torch.testing.assert_close(lat.slice_matrix.to_dense(), dense)
    torch.testing.assert_close(lat.splat_matrix.to_dense(), dense.T)
    for b in lat.blur_matrices:  # [1 2 1]/4: a half on the diagonal, a quarter at each neighbour present
        b = b.to_dense()
        torch.testing.assert_close(b.diagonal(), torch.full((lat.num_points,), 0.5))
        assert set(torch.unique(b).tolist()) <= {0.0, 0.25, 0.5}
        torch.testing.assert_close(b, b.T)
