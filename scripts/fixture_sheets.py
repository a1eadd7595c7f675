"""Draw the labelled generated samples (tests/data/generated_samples.npz) as numbered
sheets of 60, the way they were labelled by eye (labels and verdicts hidden):
    python scripts/fixture_sheets.py docs/scoring
and print each sample's label beside its verdict."""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "generated_samples.npz"
PER_SHEET, COLUMNS = 60, 10


def main(out: Path) -> None:
    fixture = np.load(FIXTURE)
    images = fixture["images"]
    out.mkdir(parents=True, exist_ok=True)
    for sheet in range(int(np.ceil(len(images) / PER_SHEET))):
        fig, axes = plt.subplots(PER_SHEET // COLUMNS, COLUMNS, figsize=(12, 7.8))
        for k, ax in enumerate(axes.flat):
            index = sheet * PER_SHEET + k
            ax.set_xticks([])
            ax.set_yticks([])
            if index < len(images):
                ax.imshow(images[index], interpolation="nearest")
                ax.set_title(str(index), fontsize=8, pad=1)
        fig.subplots_adjust(wspace=0.08, hspace=0.25, left=0.01, right=0.99, top=0.97, bottom=0.01)
        fig.savefig(out / f"generated-samples-{sheet}.png", dpi=90)
        plt.close(fig)
    for index, (label, verdict) in enumerate(zip(fixture["label"], fixture["stored_verdict"])):
        print(index, label, "valid" if verdict else "invalid")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/scoring"))
