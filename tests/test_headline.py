"""Paper beside measured (dlib.tools.headline): the headline table and the increments figure."""

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from results_helpers import PROFILE, TABLE4_HEADER, make_tree  # noqa: E402  (the fake results tree)

from dlib.tools import headline


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def test_headline_frame(tree):
    frame = headline.headline_frame(PROFILE)
    assert len(frame) == 2 + 6  # our two Table-4 rows; Table 3 not run: the paper's 6 rows (DeepLab v2, Table 3)
    base = frame[frame["row"] == "baseline"].iloc[0]
    assert base["paper mIoU %"] == "68.72" and base["measured mIoU % (mean ± std)"].startswith(f"{tree['mean']:.2f}")


def _table4(root, rows):
    """Write ``root/06_ablation/table4.csv`` with the increment interval columns; returns the folder."""
    folder = root / "06_ablation"
    folder.mkdir()
    with open(folder / "table4.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE4_HEADER + ["increment_ci_low", "increment_ci_high"])
        writer.writerows(["table4", *row] for row in rows)
    return folder


def test_increments_figure_plots_the_increments_on_their_own_scale(tmp_path):
    folder = _table4(tmp_path, [["baseline", "", "", 68.72, 40.0, 1.0, 3, "ok", "", "", "", "", ""],
                                ["+MSC", "", "", 71.27, 42.0, 1.0, 3, "ok", "", 2.55, 2.0, 0.5, 3.5],
                                ["+COCO", "", "", 73.28, "", "", 0, "not run: no time", "", 2.01, "", "", ""]])
    (folder / "table3_comparisons.csv").write_text("comparison,paper_difference,measured_difference,ci_low,ci_high\n"
                                                    "ASPP-S - LargeFOV,1.22,-1.0,-3.0,1.0\n")
    items = headline.increments(tmp_path)
    assert [(i["row"], i["paper"], i["measured"]) for i in items] == [("+MSC", 2.55, 2.0), ("+COCO", 2.01, None),
                                                                      ("ASPP-S - LargeFOV", 1.22, -1.0)]
    fig = headline.plot_increments(PROFILE, tmp_path)
    ax = fig.axes[0]
    diamonds, = [c for c in ax.collections if c.get_offsets().shape == (3, 2)]  # the paper's, bottom to top
    assert diamonds.get_offsets()[:, 0].tolist() == pytest.approx([1.22, 2.01, 2.55])
    measured = ax.lines[0].get_xdata()  # the errorbar's points: the two measured rows
    assert list(measured) == pytest.approx([-1.0, 2.0])
    low, high = ax.get_xlim()
    assert low < -3.0 and high > 3.5 and high - low < 10  # spans -3 .. 3.5 and 0, not a 0-100 mIoU axis
    assert [t.get_text().strip() for t in ax.texts] == ["not run"]
    plt.close(fig)


def test_without_tables_the_paper_increments_are_shown_alone(tmp_path):
    items = headline.increments(tmp_path)
    # DeepLab v2, Table 4: 68.72 -> 71.27 -> 73.28 -> 74.87 -> 75.54 -> 76.35 -> 77.69
    assert [round(i["paper"], 2) for i in items] == [2.55, 2.01, 1.59, 0.67, 0.81, 1.34]
    assert all(i["measured"] is None for i in items)


def test_increments_figure_shows_each_seeds_paired_difference_and_names_profile_and_split(tmp_path):
    from dlib.core import figures

    _table4(tmp_path, [["baseline", "", "", 68.72, 41.0, 1.0, 3, "ok", "40.00;41.00;42.00", "", "", "", ""],
                       ["+MSC", "", "", 71.27, 43.0, 1.0, 3, "ok", "41.50;43.50;44.00", 2.55, 2.0, 0.5, 3.5],
                       ["+COCO", "", "", 73.28, 44.0, 1.0, 2, "ok", "43.00;45.00", 2.01, 1.0, -9.0, 9.0]])
    items = headline.increments(tmp_path)
    assert items[0]["per_seed"] == pytest.approx([1.5, 2.5, 2.0])  # +MSC minus baseline, seed by seed
    assert items[1]["per_seed"] == []  # +COCO ran on 2 of 3 seeds: which ones the CSV does not say, so no pairing
    fig = headline.plot_increments(PROFILE, tmp_path)
    info = figures.check(fig, PROFILE)  # raises when the title misses the profile or the split
    assert "smoke profile" in info["axes"][0]["title"] and "split" in info["axes"][0]["title"]
    seeds, = [c for c in fig.axes[0].collections if c.get_label().startswith("measured, one point per seed")]
    assert sorted(seeds.get_offsets()[:, 0]) == pytest.approx([1.5, 2.0, 2.5])
    plt.close(fig)
