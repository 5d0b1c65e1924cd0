"""Draw docs/stage-shifts.png: what the stages of the forgetting scenarios look like.

Top: the four tissue architectures of ``stage-shift = tissue`` (tiles and masks, one
stain). Bottom: one tile's training masks under ``stage-shift = classes`` (3 stages).
Usage: ``python docs/figures/stage_shifts.py`` (a few seconds, no network).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from fedcl.configure import load_config  # noqa: E402
from fedcl.data.synthetic import CLASS_NAMES  # noqa: E402
from fedcl.data.tissue import TISSUES  # noqa: E402
from fedcl.scenarios.tiles import annotate, hospital_dataset, stage_classes  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "stage-shifts.png"
COLOURS = ["#f2f2f2", "#d62728", "#ff9ec4", "#1f3b99", "#8c6d31"]  # by class index
TILES = 3


def main() -> None:
    """Render the figure."""
    cmap = ListedColormap(COLOURS)
    tissue = load_config(
        {"scenario": "catastrophic-forgetting", "stages": 4, "image-size": 128, "test-tiles": 8}
    )
    classes = tissue.with_keys({"stage-shift": "classes", "stages": 3, "rounds": 15})
    fig, axes = plt.subplots(5, 2 * TILES, figsize=(2 * TILES * 1.6, 5 * 1.75))
    for stage, arch in enumerate(TISSUES):
        data = hospital_dataset(tissue, 0, "test", stage=stage)
        for i in range(TILES):
            axes[stage, 2 * i].imshow(data.images[i])
            axes[stage, 2 * i + 1].imshow(data.masks[i], cmap=cmap, vmin=0, vmax=4)
        axes[stage, 0].set_ylabel(f"stage {stage + 1}\n{arch.name}", fontsize=9)
    full = hospital_dataset(tissue.with_keys({"stage-shift": "stain"}), 0, "test", stage=0)
    row = axes[4]
    row[0].imshow(full.images[1])
    row[1].imshow(full.masks[1], cmap=cmap, vmin=0, vmax=4)
    row[1].set_title("every class", fontsize=8)
    for stage in range(3):
        # one tile as each stage's annotators hand it over (fedcl.scenarios.annotate)
        mask = annotate(full.masks[1], stage_classes(classes, stage), "train")
        row[2 + stage].imshow(mask, cmap=cmap, vmin=0, vmax=4)
        named = ", ".join(CLASS_NAMES[c] for c in stage_classes(classes, stage))
        row[2 + stage].set_title(f"stage {stage + 1}: {named}", fontsize=7)
    row[0].set_ylabel("classes\n(training masks)", fontsize=9)
    row[5].axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=c, label=n) for c, n in zip(COLOURS, CLASS_NAMES, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("stage-shift = tissue (rows 1-4: tile, mask) and classes (row 5)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(OUT, dpi=110)
    print(OUT)


if __name__ == "__main__":
    main()
