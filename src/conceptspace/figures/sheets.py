"""Sample sheets: the generated images of one run, as a labelled PNG grid.

Reads the samples file of ``evaluate.sample_checkpoints`` (``images`` uint8 (step,
method, prompt, sample, y, x, channel); ``applied`` (method, prompt)). Rows are the
(method, prompt) pairs a method applies to (naive and patched: every class; overprompt
and intervention variants: the unseen class 11), columns the checkpoint steps; each cell
shows the first samples side by side. These are the images the evaluation scored (same
per-sample noise), so a sheet shows what a point of the other figures looks like. A
sample the validity check rejects (no object, two, or one of implausible size: scored 0)
is framed in red.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from conceptspace.concepts import UNSEEN_CLASS, layout_from_attrs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conceptspace.figures import file_metadata
from conceptspace.io import ConceptspaceError, atomic_path

# Pixels between samples in a cell, and between cells; the gaps show the background.
SAMPLE_GAP, CELL_GAP = 1, 6
GAP_GREY = 255
INVALID_FRAME = (220, 30, 30)  # the outline drawn over a sample that holds no valid object
# Each image pixel is drawn up to this many PNG pixels wide, fewer if the sheet would
# be wider than MAX_WIDTH pixels (paper scale: 60 steps).
UPSCALE, MAX_WIDTH = 3, 6000


def sheet_rows(samples: xr.Dataset) -> list[tuple[str, str]]:
    """The (method, prompt) pairs that were sampled, methods in file order, the unseen
    class first within a method."""
    applied = samples["applied"].transpose("method", "prompt")
    rows = []
    for method in samples["method"].values:
        prompts = [
            str(p) for p in samples["prompt"].values if applied.sel({"method": method, "prompt": p})
        ]
        prompts.sort(key=lambda p: p != UNSEEN_CLASS)
        rows.extend((str(method), prompt) for prompt in prompts)
    return rows


def framed(image: np.ndarray, valid: bool) -> np.ndarray:
    """``image`` (y, x, channel) uint8, outlined in INVALID_FRAME if it is not ``valid``
    (real objects never touch the border, so the outline hides none of one)."""
    if valid:
        return image
    image = image.copy()
    image[[0, -1], :] = INVALID_FRAME
    image[:, [0, -1]] = INVALID_FRAME
    return image


def sheet_canvas(samples: xr.Dataset, rows: list[tuple[str, str]], per_cell: int) -> np.ndarray:
    """One uint8 RGB image: ``rows`` x steps cells of ``per_cell`` samples each."""
    images = samples["images"].transpose("step", "method", "prompt", "sample", "y", "x", "channel")
    size_y, size_x = images.sizes["y"], images.sizes["x"]
    n_steps = images.sizes["step"]
    cell_w = per_cell * size_x + (per_cell - 1) * SAMPLE_GAP
    height = len(rows) * size_y + (len(rows) - 1) * CELL_GAP
    width = n_steps * cell_w + (n_steps - 1) * CELL_GAP
    canvas = np.full((height, width, images.sizes["channel"]), GAP_GREY, dtype=np.uint8)
    for r, (method, prompt) in enumerate(rows):
        top = r * (size_y + CELL_GAP)
        cells = images.sel({"method": method, "prompt": prompt}).values  # (step, sample, y, x, c)
        valid = (
            samples["valid"].sel({"method": method, "prompt": prompt}).transpose("step", "sample")
            if "valid" in samples
            else None
        )
        for s in range(n_steps):
            for i in range(per_cell):
                left = s * (cell_w + CELL_GAP) + i * (size_x + SAMPLE_GAP)
                ok = True if valid is None else bool(valid.values[s, i])
                canvas[top : top + size_y, left : left + size_x] = framed(cells[s, i], ok)
    return canvas


def plot_sample_sheet(
    samples: xr.Dataset,
    out_png: str | os.PathLike,
    title: str,
    per_cell: int = 4,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Draw the sheet of ``samples`` (at most ``per_cell`` samples a cell) to ``out_png``."""
    missing = [name for name in ("images", "applied") if name not in samples]
    if missing:
        raise ConceptspaceError(
            f"the samples file lacks {', '.join(missing)}; delete it and rerun `snakemake`"
        )
    rows = sheet_rows(samples)
    if not rows:
        raise ConceptspaceError("the samples file holds no sampled (method, prompt) pair")
    per_cell = min(int(per_cell), samples.sizes["sample"])
    if per_cell < 1:
        raise ConceptspaceError("a sample sheet needs at least one sample per cell")
    canvas = sheet_canvas(samples, rows, per_cell)

    dpi = 100
    upscale = max(1, min(UPSCALE, MAX_WIDTH // canvas.shape[1]))
    width, height = canvas.shape[1] * upscale / dpi, canvas.shape[0] * upscale / dpi
    figure = Figure(figsize=(width, height))  # no layout engine: the image fills it
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    size_y, size_x = samples.sizes["y"], samples.sizes["x"]
    cell_w = per_cell * size_x + (per_cell - 1) * SAMPLE_GAP
    ax.set_yticks(
        [r * (size_y + CELL_GAP) + size_y / 2 for r in range(len(rows))],
        row_labels(samples, rows),
        fontsize=8,
    )
    steps = samples["step"].values
    ax.set_xticks(
        [s * (cell_w + CELL_GAP) + cell_w / 2 for s in range(len(steps))],
        [f"step {step}" for step in steps],
        fontsize=8,
    )
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(
        f"{title}\nrows: prompting method and prompted class; columns: training step; the "
        f"first {per_cell} samples of each; red frame: no valid object (scored 0)",
        fontsize=9,
        pad=18,  # above the step labels
    )
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        metadata = file_metadata(title, record, "png")
        # "tight" grows the page to the row labels, whatever their length.
        figure.savefig(tmp, format="png", dpi=dpi, metadata=metadata, bbox_inches="tight")
    return out_png


# The run attributes a samples file may carry (evaluate.sample_checkpoints), as titled.
RUN_ATTRS = (
    ("seed", "seed {:d}"),
    ("color_gap", "color gap {:g}"),
    ("size_gap", "size gap {:g}"),
    ("background_gap", "background gap {:g}"),
    ("mask_ratio", "masking ratio {:g}"),
)


def run_title(samples: xr.Dataset) -> str:
    """'Generations of run seed 1, color gap 0.8, size gap 0.6, masking ratio 0': the run
    the samples file says it holds, so a sheet of any run is titled as that run."""
    attrs = samples.attrs
    named = [
        text.format(int(attrs[key]) if key == "seed" else float(attrs[key]))
        for key, text in RUN_ATTRS
        if key in attrs
    ]
    return "Generations of run " + (", ".join(named) or "(unnamed in the samples file)")


def row_labels(samples: xr.Dataset, rows: list[tuple[str, str]]) -> list[str]:
    """'naive: 11 blue triangle': each row's method and class, named by the run's own
    layout (the samples file's ``layout`` attribute; none: the 2x2)."""
    layout = layout_from_attrs(samples.attrs)
    return [
        f"{_method_text(samples, method)}: {prompt} {layout.label(prompt)}"
        for method, prompt in rows
    ]


def _method_text(samples: xr.Dataset, method: str) -> str:
    """'overprompt 0 (rgb=(0.35, 0.35, 0.65))': the name with its setting, if any."""
    text = method.replace("_", " ")
    if method != "naive" and "method_setting" in samples.coords:
        text += f" ({samples['method_setting'].sel({'method': method}).item()})"
    return text
