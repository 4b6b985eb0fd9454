"""Thinning against a per-pixel transcription of Zhang & Suen (1984); skeleton lengths by hand; ribbon widths
against closed forms (discs, long rectangles, rotated strips, an annulus)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from dlib.evaluation import thinness

# ----------------------------------------------------------------------------------------------
# Thinning
# ----------------------------------------------------------------------------------------------

def zhang_suen_by_the_paper(mask):
    """Zhang & Suen (CACM 27(3), 1984) pixel by pixel: each sub-iteration marks from a snapshot, then deletes."""
    m = np.pad(mask.astype(int), 1)
    while True:
        changed = False
        for step in (1, 2):
            marked = []
            for y in range(1, m.shape[0] - 1):
                for x in range(1, m.shape[1] - 1):
                    if not m[y, x]:
                        continue
                    p2, p3, p4, p5 = m[y - 1, x], m[y - 1, x + 1], m[y, x + 1], m[y + 1, x + 1]
                    p6, p7, p8, p9 = m[y + 1, x], m[y + 1, x - 1], m[y, x - 1], m[y - 1, x - 1]
                    seq = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
                    b = sum(seq[:8])
                    a = sum(1 for u, v in zip(seq, seq[1:]) if u == 0 and v == 1)
                    if step == 1:
                        ok = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
                    else:
                        ok = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
                    if 2 <= b <= 6 and a == 1 and ok:
                        marked.append((y, x))
            for y, x in marked:
                m[y, x] = 0
            changed |= bool(marked)
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def random_blobs(seed, size=24):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0)
    return field > np.quantile(field, 0.55)


@pytest.mark.parametrize("seed", range(4))
def test_zhang_suen_matches_the_paper_pixel_by_pixel(seed):
    mask = random_blobs(seed)
    mask[3:6, 2:20] = True  # a bar touching other shapes
    np.testing.assert_array_equal(thinness.zhang_suen(mask), zhang_suen_by_the_paper(mask))


def test_zhang_suen_on_a_filled_rectangle_keeps_a_centre_line():
    mask = np.zeros((15, 40), bool)
    mask[4:11, 3:37] = True  # 7 rows: the centre row is row 7
    thin = thinness.zhang_suen(mask)
    np.testing.assert_array_equal(thin, zhang_suen_by_the_paper(mask))
    rows = np.nonzero(thin.any(axis=1))[0]
    assert thin.sum() > 34 - 7 - 2
    assert set(rows) <= {6, 7, 8}


def test_skeleton_is_thin_connected_and_inside_the_shape():
    yy, xx = np.mgrid[0:48, 0:48]
    d2 = (yy - 24) ** 2 + (xx - 24) ** 2
    ring = (d2 <= 18 ** 2) & (d2 > 12 ** 2)
    plus = ((np.abs(yy - 24) <= 3) | (np.abs(xx - 24) <= 3)) & (d2 <= 20 ** 2)
    for mask in (ring, plus, random_blobs(7, 40)):
        skel = thinness.skeleton(mask)
        assert not (skel & ~mask).any()
        # No 4-connected staircase corner is left: two perpendicular 4-neighbours set, the pixel
        # diagonally opposite them empty, and not all four 4-neighbours set (a crossing stays).
        p = np.pad(skel, 1)
        c, n, s, e, w = p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, 2:], p[1:-1, :-2]
        ne, nw, se, sw = p[:-2, 2:], p[:-2, :-2], p[2:, 2:], p[2:, :-2]
        stair = (n & e & ~sw) | (e & s & ~nw) | (s & w & ~ne) | (w & n & ~se)
        assert not (c & stair & ~(n & e & s & w)).any()
    # Topology: the ring's skeleton is one closed curve (one 8-component, one hole); the plus is one tree.
    eight = np.ones((3, 3), bool)
    skel = thinness.skeleton(ring)
    assert ndimage.label(skel, structure=eight)[1] == 1
    assert ndimage.label(~skel)[1] == 2  # background (4-connected): outside and the hole
    skel = thinness.skeleton(plus)
    assert ndimage.label(skel, structure=eight)[1] == 1
    assert ndimage.label(~skel)[1] == 1


def test_thin_lines_are_their_own_skeleton():
    line = np.zeros((9, 30), bool)
    line[4, 2:28] = True
    diag = np.eye(20, dtype=bool)
    for mask in (line, diag):
        np.testing.assert_array_equal(thinness.skeleton(mask), mask)


# ----------------------------------------------------------------------------------------------
# Lengths and widths
# ----------------------------------------------------------------------------------------------

def test_skeleton_length_by_hand():
    line = np.zeros((5, 12), bool)
    line[2, 1:11] = True  # 10 pixels, 9 unit steps
    assert thinness.skeleton_length(line) == pytest.approx(9)
    diag = np.eye(8, dtype=bool)  # 7 diagonal steps
    assert thinness.skeleton_length(diag) == pytest.approx(7 * math.sqrt(2))
    corner = np.array([[1, 1, 0],
                       [0, 1, 1]], bool)  # two axial links; the diagonal shortcut is not counted twice
    assert thinness.skeleton_length(corner) == pytest.approx(3)
    both = np.zeros((20, 20), bool)
    both[2, 2:12] = True  # 9
    both[8:13, 3:8] = np.eye(5, dtype=bool)  # 4 sqrt(2)
    comp, n = ndimage.label(both, structure=np.ones((3, 3)))
    lengths = thinness.skeleton_length(both, comp)
    assert sorted(lengths[1:].round(6)) == sorted([9.0, round(4 * math.sqrt(2), 6)])


def test_ribbon_width_solves_the_area_equation():
    rng = np.random.default_rng(0)
    w, length = rng.uniform(0.5, 30, 50), rng.uniform(0, 200, 50)
    area = w * length + math.pi * w ** 2 / 4  # round-capped ribbon
    np.testing.assert_allclose(thinness.ribbon_width(area, length), w, rtol=1e-10)
    assert thinness.ribbon_width(math.pi * 25, 0) == pytest.approx(10)  # a disc: its diameter
    assert thinness.ribbon_width(0, 0) == 0
    with pytest.raises(ValueError):
        thinness.ribbon_width(-1, 3)


@pytest.mark.parametrize("r", [4, 9, 17])
def test_a_disc_is_as_wide_as_its_diameter(r):
    yy, xx = np.mgrid[-r - 2:r + 3, -r - 2:r + 3]
    assert thinness.mean_width(xx ** 2 + yy ** 2 <= r * r) == pytest.approx(2 * r, rel=0.04)


@pytest.mark.parametrize("w", [1, 2, 3, 5, 8])
def test_a_long_rectangle_is_as_wide_as_it_is(w):
    mask = np.zeros((w + 4, 104), bool)
    mask[2:2 + w, 2:102] = True  # w x 100
    assert thinness.mean_width(mask) == pytest.approx(w, rel=0.06, abs=0.02)


def test_rotated_shapes_measure_their_perpendicular_width():
    yy, xx = np.mgrid[0:100, 0:100]
    diag_strip = (np.abs(xx - yy) <= 3) & (xx > 10) & (xx < 90)  # 7 pixel diagonals: 7 / sqrt(2) wide
    assert thinness.mean_width(diag_strip) == pytest.approx(7 / math.sqrt(2), rel=0.08)
    assert thinness.mean_width(np.eye(40, dtype=bool)) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    d2 = (yy - 50) ** 2 + (xx - 50) ** 2
    ring = (d2 <= 30 ** 2) & (d2 > 25 ** 2)  # annulus 5 px wide
    assert thinness.mean_width(ring) == pytest.approx(5, rel=0.08)
