"""A fake results tree for profile smoke (notebooks 01 ran, 06 with its ablation table, 07 not run), which the
report and headline tests read."""

import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402

from dlib.core import config  # noqa: E402
from dlib.experiments import results  # noqa: E402

PROFILE = "smoke"
TABLE4_HEADER = ["table", "row", "components", "model", "paper_miou", "measured_mean", "measured_std", "seeds",
                 "status", "per_seed", "paper_increment", "measured_increment"]


def write_notebook(path: Path, title: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"Some words first.\n\n# {title}\n\nMore."),
                nbformat.v4.new_code_cell('PROFILE = "cpu"\nSEED = 0', metadata={"tags": ["parameters"]})]
    nbformat.write(nb, path)
    return path


def _per_seed(values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return mean, std


def make_tree(tmp_path):
    """A fake results tree for profile smoke: notebooks 01 (ran), 06 (ablation tables), 07 (not run)."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    write_notebook(nbs / "01_alpha.ipynb", "01 · Alpha things")
    write_notebook(nbs / "06_ablation.ipynb", "Ablations")
    write_notebook(nbs / "07_gamma.ipynb", "07 · Gamma, never run")
    root = Path(os.environ["DLIB_RESULTS_DIR"]) / PROFILE  # conftest points this at tmp_path/results

    out = results.Results(config.resolve(PROFILE, seed=0), "01_alpha")
    out.json("summary", {"mean_iou": 0.123456, "nested": {"k": 2}})
    out.csv("short", [{"name": "a", "value": 0.333333}, {"name": "b", "value": 1234.5678}])
    out.csv("long", [{"i": i, "square": i * i} for i in range(40)])
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    ax.set(title=f"a synthetic curve, {PROFILE} profile", xlabel="x (px)", ylabel="y (px)")  # passes the check
    out.figure("curve", fig)
    fig.savefig(out.path("curve.svg"))  # the vector copy beside the PNG
    plt.close(fig)
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_alpha.ipynb").write_text("{}")

    seeds = [60.10, 60.55, 59.75]
    mean, std = _per_seed(seeds)
    rows = [["table4", "baseline", "baseline head", "small_resnet_baseline", 68.72, mean, std, 3, "ok",
             ";".join(f"{v:.2f}" for v in seeds), "", ""],
            ["table4", "+MSC", "MSC + baseline head", "", 71.27, "", "", 0, "not run: no time on this machine",
             "", 2.55, ""]]
    folder = root / "06_ablation"
    folder.mkdir(parents=True)
    with open(folder / "table4.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE4_HEADER)
        writer.writerows(rows)
    return {"root": root, "notebooks": nbs, "mean": mean, "std": std}
