"""Notebook 04's measurements (dlib.crf.explain) against loops over pixels, closed forms and hand counts."""

import numpy as np
import pytest
import torch

from dlib.crf import explain


def _two_colour_image(h=8, w=9, seed=0):
    """Left part red, right part blue, with a little noise: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.int64)
    image[:, : w // 2] = (200, 40, 40)
    image[:, w // 2:] = (40, 40, 200)
    return (image + rng.integers(0, 6, image.shape)).astype(np.uint8)


def test_boundary_window_is_centred_on_the_middle_boundary_pixel():
    label = np.zeros((12, 14), np.uint8)
    label[3:8, 4:10] = 1
    label[3, 4:10] = 255  # a void outline along the top: void pixels are never chosen
    # Boundary pixels by hand: not void, and a 4-neighbour has another label (void included).
    boundary = [(i, j) for i in range(12) for j in range(14) if label[i, j] != 255 and any(
        0 <= i + di < 12 and 0 <= j + dj < 14 and label[i + di, j + dj] != label[i, j]
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))]
    (r, c), (rows, cols) = explain.boundary_window(label, (4, 6))
    assert (r, c) == boundary[len(boundary) // 2]
    assert (rows.start, rows.stop, cols.start, cols.stop) == (r - 2, r + 2, c - 3, c + 3)  # room: centred
    # Near the border the window is moved inside the image.
    (r, c), (rows, cols) = explain.boundary_window(label, (12, 6))
    assert (rows.start, rows.stop) == (0, 12) and cols.stop - cols.start == 6 and cols.start <= c < cols.stop
    with pytest.raises(ValueError, match="no object boundary"):
        explain.boundary_window(np.zeros((5, 5), np.uint8), (2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        explain.boundary_window(label, (13, 2))


def test_largest_object_class_by_hand():
    label = np.zeros((6, 6), np.uint8)
    label[0, :5] = 2  # 5 pixels
    label[2:5, 2:5] = 7  # 9 pixels
    label[5, :] = 255  # void does not count, however large
    assert explain.largest_object_class(label) == 7
    assert explain.largest_object_class(np.zeros((3, 3), np.uint8)) == 0


def test_local_colour_variance_against_a_loop_over_windows():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    half = 3
    padded = np.pad(image.astype(float), ((half, half), (half, half), (0, 0)), mode="symmetric")  # mirrored border
    expected = np.array([[padded[i:i + 7, j:j + 7].reshape(-1, 3).var(axis=0).sum() for j in range(11)]
                         for i in range(9)])
    np.testing.assert_allclose(explain.local_colour_variance(image, 7), expected, rtol=1e-9, atol=1e-6)


def test_smoothest_interior_pixel_is_the_flattest_deep_pixel():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    image[8:17, 8:17] = 120  # a flat 9x9 patch: the 3x3 pixels at its centre see no variation in a 7x7 window
    mask = np.zeros((20, 20), bool)
    mask[2:19, 2:19] = True
    pixel = explain.smoothest_interior_pixel(image, mask, min_depth=6, window=7)
    assert 11 <= pixel[0] <= 13 and 11 <= pixel[1] <= 13
    # By brute force: the Euclidean depth of each mask pixel, and the least-variance pixel among the deep ones.
    outside = np.argwhere(~mask)
    variance = explain.local_colour_variance(image, 7)
    deep = [(variance[i, j], (i, j)) for i, j in np.argwhere(mask)
            if np.sqrt(((outside - (i, j)) ** 2).sum(1)).min() >= 6]
    assert tuple(int(v) for v in pixel) == min(deep)[1]
    assert explain.smoothest_interior_pixel(image, np.zeros((20, 20), bool) | (np.arange(20) < 5), min_depth=6) is None


def test_appearance_messages_exact_sums_and_the_lattice():
    image = _two_colour_image()
    rng = np.random.default_rng(3)
    q = rng.random((3, 8, 9)).astype(np.float32)
    q /= q.sum(0)
    lattice, exact = explain.appearance_messages(image, q, theta_alpha=3.0, theta_beta=10.0)
    # The exact message by a loop over pixel pairs, DeepLab v2 Eq. 3's appearance kernel.
    pos = [(x, y) for y in range(8) for x in range(9)]
    col = image.reshape(-1, 3).astype(float)
    flat_q = q.reshape(3, -1).T
    for i in range(0, 72, 7):
        k = np.array([np.exp(-((pos[i][0] - pos[j][0]) ** 2 + (pos[i][1] - pos[j][1]) ** 2) / (2 * 3.0 ** 2)
                             - ((col[i] - col[j]) ** 2).sum() / (2 * 10.0 ** 2)) for j in range(72)])
        np.testing.assert_allclose(exact[i], (k[:, None] * flat_q).sum(0) / k.sum(), rtol=1e-10)
    # The lattice approximates it: close on average, and each message a distribution (the kernel is normalised).
    assert np.abs(lattice - exact).mean() < 0.01
    np.testing.assert_allclose(lattice.sum(1), 1.0, atol=1e-5)
    # A constant Q is a fixed point of any normalised filter: both messages return it.
    const = np.broadcast_to(np.array([0.2, 0.3, 0.5], np.float32)[:, None, None], (3, 8, 9))
    lattice, exact = explain.appearance_messages(image, const, theta_alpha=3.0, theta_beta=10.0)
    np.testing.assert_allclose(lattice, np.tile([0.2, 0.3, 0.5], (72, 1)), atol=1e-6)
    np.testing.assert_allclose(exact, np.tile([0.2, 0.3, 0.5], (72, 1)), atol=1e-12)


def test_lattice_error_by_hand():
    image = _two_colour_image(2, 3)
    probs = np.full((2, 2, 3), 0.5, np.float32)
    q_exact = np.array([[[0.9, 0.6, 0.52], [0.2, 0.5, 0.7]]])  # class 0; class 1 is 1 - it
    q_exact = np.concatenate([q_exact, 1 - q_exact]).astype(np.float32)
    q_lattice = q_exact.copy()
    q_lattice[:, 0, 2] = (0.3, 0.7)  # error 0.22, the label flips (exact gap 0.04)
    q_lattice[:, 1, 0] = (0.25, 0.75)  # error 0.05, same label
    err = explain.lattice_error(image, probs, q_exact, q_lattice, theta_alpha=3.0, theta_beta=10.0)
    gaps = np.abs(2 * q_exact[0] - 1)  # two classes: largest minus second marginal = |q0 - q1|
    np.testing.assert_allclose(err.gap, gaps, atol=1e-6)
    assert err.summary["pixels"] == 6 and err.summary["pixels_with_marginal_error_over_0.1"] == 1
    assert err.summary["pixels_whose_label_differs"] == 1 and err.flipped[0, 2] and err.flipped.sum() == 1
    assert err.summary["exact_gap_at_worst_pixel"] == pytest.approx(0.04, abs=1e-6)
    assert err.summary["exact_gap_median_over_crop"] == pytest.approx(np.median([0.8, 0.2, 0.04, 0.6, 0.0, 0.4]))
    np.testing.assert_allclose(err.marginal_error, np.abs(q_exact - q_lattice).max(0))
    # A uniform unary is a fixed point of both filters: no message error.
    assert err.summary["message_error_mean"] < 1e-6 and err.message_error.shape == (2, 3)


def _grid_points(n=6, sigma=1.5):
    return torch.tensor(np.argwhere(np.ones((n, n))), dtype=torch.float64).flip(1) / sigma


def test_lattice_steps_against_closed_forms():
    pts = _grid_points()
    carrier = len(pts) // 2 + 3
    steps = explain.lattice_steps(pts, carrier)
    # Barycentric weights sum to 1 and rebuild each point from its simplex's corners; the splat keeps the mass.
    np.testing.assert_allclose(steps.weights.sum(1).numpy(), 1.0, atol=1e-12)
    rebuilt = (steps.weights.numpy()[..., None] * steps.simplex_xy).sum(1)
    np.testing.assert_allclose(rebuilt, steps.pixel_xy, atol=1e-6)
    assert float(steps.splatted.sum()) == pytest.approx(1.0)
    # The embedding scales feature distances by sqrt(2/3) (d + 1) = sqrt(6) for d = 2 (Adams et al. 2010), and
    # the plane's basis keeps distances.
    d_features = torch.cdist(pts, pts).numpy()
    d_plane = np.linalg.norm(steps.pixel_xy[:, None] - steps.pixel_xy[None], axis=-1)
    np.testing.assert_allclose(d_plane, np.sqrt(6) * d_features, atol=1e-5)
    # The lattice points are the simplex corners; the filtered value peaks at the carrier like the Gaussian.
    np.testing.assert_array_equal(np.unique(steps.corner_xy, axis=0), np.unique(steps.vertex_xy, axis=0))
    gauss = np.exp(-((pts - pts[carrier]) ** 2).sum(1).numpy() / 2)
    np.testing.assert_allclose(steps.exact, gauss)
    assert steps.sliced.argmax() == carrier and np.corrcoef(steps.sliced, gauss)[0, 1] > 0.98
    with pytest.raises(ValueError, match="2-D features"):
        explain.lattice_steps(torch.zeros(4, 3, dtype=torch.float64), 0)


def test_draw_lattice_steps_draws_the_steps_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _grid_points(4)
    steps = explain.lattice_steps(pts, 5)
    fig, axes = plt.subplots(1, 3)
    explain.draw_lattice_steps(steps, axes)
    lines = axes[0].get_lines()
    assert len(lines) == 3 * len(pts)  # one line per (point, corner)
    widths = np.array([line.get_linewidth() for line in lines]).reshape(len(pts), 3)
    np.testing.assert_allclose(widths.sum(1), 3.0, atol=1e-6)  # 3 x barycentric weights, which sum to 1
    np.testing.assert_allclose(lines[0].get_xydata(), [steps.pixel_xy[0], steps.simplex_xy[0, 0]])
    exact_circles = axes[2].collections[-1]
    gauss = np.exp(-((pts - pts[5]) ** 2).sum(1).numpy() / 2)
    np.testing.assert_allclose(exact_circles.get_sizes(), 400 * gauss, rtol=1e-12)
    assert axes[1].collections[1].get_sizes().max() == pytest.approx(400)  # the blurred values, largest 400
    plt.close(fig)


def test_label_changes_by_hand():
    def beliefs(labels):
        labels = np.array(labels).reshape(2, 2)
        return np.stack([labels == 0, labels == 1]).astype(float) * 0.8 + 0.1

    qs = [beliefs([0, 0, 0, 0]), beliefs([0, 1, 0, 0]), beliefs([1, 0, 1, 0]), beliefs([1, 0, 1, 0])]
    assert explain.label_changes(qs) == [{"iteration": 1, "pixels whose label changed": 0.25},
                                         {"iteration": 2, "pixels whose label changed": 0.75},
                                         {"iteration": 3, "pixels whose label changed": 0.0}]


def test_draw_cv_grid_shows_percent_with_one_colour_bar_and_frames_the_best():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from dlib.core import figures
    from dlib.crf.explain import draw_cv_grid

    rows = [{"stage": 1, "w1": a, "theta_alpha": b, "theta_beta": c, "mean_iou": 0.4 + 0.01 * a + 0.001 * b + 0.002 * c}
            for a in (3, 5) for b in (30, 60, 90) for c in (3, 6)]
    table = pd.DataFrame(rows)
    best = table.loc[table["mean_iou"].idxmax()].to_dict()
    fig = draw_cv_grid(table, best, caption="synthetic grid, smoke profile")
    try:
        assert figures.problems(figures.describe(fig), "smoke") == []
        panels = [ax for ax in fig.axes if ax.get_title().startswith("w1 =")]
        assert [ax.get_title() for ax in panels] == ["w1 = 3", "w1 = 5"]
        texts = [t.get_text() for t in panels[1].texts]
        assert f"{100 * best['mean_iou']:.1f}" in texts and len(texts) == 6
        bar = next(ax for ax in fig.axes if ax.get_ylabel() == "mIoU (%)")
        assert bar.get_ylim()[1] == pytest.approx(100 * table["mean_iou"].max(), abs=1e-6)
        assert len(panels[1].patches) == 1 and not panels[0].patches  # the red frame, on the best w1 only
    finally:
        plt.close(fig)
