"""fig_underspec: underspecified prompts delay or block generalization (claim 5; docs/study.md).

(a) Steps until naive prompting of the unseen blue triangle (class 11 of the color_shape
layout) reaches the accuracy threshold, against the percentage of red-triangle training
images whose color was masked: each seed a dot, the mean over the seeds that reached it
a line; seeds that never reached it are drawn on a "never" row above the axis, with
their count, not dropped. (b) The blue triangle's accuracy against step, one line per
masking ratio (mean over seeds, band min to max). (c) Samples of the "blue triangle"
prompt at the final checkpoint, one row per masking ratio (the first seed's runs).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps

from conceptspace.analysis import sigma_of, threshold_of
from conceptspace.concepts import COLOR_SHAPE
from conceptspace.figures import (
    STEP_LABEL,
    accuracy_axes,
    draw_accuracy,
    figure_title,
    new_figure,
    note,
    require,
    save_figure,
)
from conceptspace.io import ConceptspaceError
from conceptspace.figures.sheets import framed

UNSEEN = COLOR_SHAPE.unseen_classes[0]  # "11", the blue triangle
NAIVE = "naive"


def ratio_colors(ratios: Sequence[float]) -> list:
    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(len(ratios) - 1, 1)) for i in range(len(ratios))]


def plot_underspec(
    study: xr.Dataset,
    out_path: str | os.PathLike,
    samples: Sequence[xr.Dataset],
    record: Mapping[str, Any] | None = None,
):
    """Draw fig_underspec from the underspecification study dataset (dims seed,
    mask_ratio, ...) and the samples files of one seed's runs (one per ratio, any
    order; their ``mask_ratio`` attribute places them). Writes PDF and PNG."""
    require(study, ("learning_time", "accuracy_among_valid"), "fig_underspec")
    if "mask_ratio" not in study.dims or NAIVE not in study["method"].values:
        raise ConceptspaceError(
            "fig_underspec needs the underspecification study (dims seed, mask_ratio) with "
            "naive prompting; rebuild results/underspecification/study.nc with `snakemake`"
        )
    ratios = [float(r) for r in study["mask_ratio"].values]
    colors = ratio_colors(ratios)
    threshold, sigma = threshold_of(study), sigma_of(study)
    figure = new_figure(15, 4.8)
    ax_time, ax_accuracy, ax_samples = figure.subplots(1, 3)

    # (a) learning time against masked percentage; never reached on its own row
    times = study["learning_time"].sel({"method": NAIVE}).transpose("seed", "mask_ratio")
    percent = 100 * np.array(ratios)
    values = times.values
    finite = np.isfinite(values)
    top = float(study["step"].max())
    never_row = 1.08 * top
    for i, seed in enumerate(study["seed"].values):
        ax_time.plot(percent[finite[i]], values[i][finite[i]], "o", color="C0", alpha=0.5, ms=5)
        ax_time.plot(percent[~finite[i]], [never_row] * int((~finite[i]).sum()), "x", color="C3")
    reached = finite.sum(axis=0)
    mean = np.where(finite, values, 0).sum(axis=0) / np.where(reached, reached, np.nan)
    ax_time.plot(percent, mean, "-", color="C0", lw=1.5, label="mean over seeds that reached it")
    for x, n_never in zip(percent, (~finite).sum(axis=0)):
        if n_never:
            ax_time.annotate(
                f"{n_never}/{len(values)}", (x, never_row), textcoords="offset points",
                xytext=(0, 6), ha="center", fontsize=8, color="C3",
            )  # fmt: skip
    ax_time.axhline(top, color="0.6", lw=0.8, ls=":")
    ax_time.plot([], [], "x", color="C3", label="never reached (seeds, count)")
    ax_time.set_ylim(0, 1.18 * top)
    ax_time.set_xlabel("red triangles with masked color (%)")
    ax_time.set_ylabel(f"steps until accuracy \u2265 {threshold:g} (optimizer steps)")
    ax_time.set_title(f"(a) learning time of {COLOR_SHAPE.label(UNSEEN)}", fontsize=11)
    ax_time.grid(alpha=0.3)
    ax_time.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # off the data

    # (b) accuracy against step, one line per ratio
    accuracy = study["accuracy_among_valid"].sel({"method": NAIVE, "prompt": UNSEEN})
    for ratio, color in zip(ratios, colors):
        draw_accuracy(
            ax_accuracy,
            accuracy.sel(mask_ratio=ratio),
            color,
            f"{100 * ratio:g}% masked",
            learning_times=times.sel(mask_ratio=ratio).values,
            threshold=threshold,
            sigma=sigma,
        )
    accuracy_axes(
        ax_accuracy, f"(b) naive prompting of {COLOR_SHAPE.label(UNSEEN)}", threshold, sigma
    )
    ax_accuracy.set_ylabel("accuracy: mean over valid samples of P(blue) \u00d7 P(triangle)")
    ax_accuracy.set_xlabel(STEP_LABEL)
    ax_accuracy.legend(fontsize=7, loc="upper left")

    # (c) sample sheet of the blue-triangle prompt across ratios
    _draw_samples(ax_samples, samples, ratios)
    figure_title(
        figure,
        "Underspecification: masking the color of red triangles delays or blocks the blue "
        "triangle",
        fontsize=12,
    )
    return save_figure(figure, out_path, record=record)


def _draw_samples(ax, samples: Sequence[xr.Dataset], ratios: Sequence[float]) -> None:
    ax.set_title(f'(c) "{COLOR_SHAPE.label(UNSEEN)}" prompts, final checkpoint', fontsize=11)
    ax.axis("off")
    by_ratio = {round(float(s.attrs.get("mask_ratio", np.nan)), 6): s for s in samples}
    rows, labels = [], []
    for ratio in ratios:
        sheet = by_ratio.get(round(ratio, 6))
        if sheet is None:
            continue
        at = {"method": NAIVE, "prompt": UNSEEN}
        images = sheet["images"].sel(at).isel(step=-1).values
        valid = sheet["valid"].sel(at).isel(step=-1).values if "valid" in sheet else None
        images = [framed(image, valid is None or bool(valid[i])) for i, image in enumerate(images)]
        rows.append(np.concatenate(images, axis=1))  # samples side by side
        labels.append(f"{100 * ratio:g}%")
    if not rows:
        note(ax, "no samples files")
        return
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    height = rows[0].shape[0]
    ax.imshow(np.concatenate(rows, axis=0), interpolation="nearest")
    ax.axis("on")
    ax.set_xticks([])
    ax.set_yticks([height * (i + 0.5) for i in range(len(rows))], labels)
    ax.set_ylabel("masked red triangles (red frame: no valid object)")
