"""Figures, drawn only from gathered datasets (never from models), as PDF + PNG.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas attached
explicitly: no pyplot, no global state, no GUI backend, whatever backend the caller
has chosen. :func:`save_figure` writes the PDF and a PNG beside it atomically.

Select methods with a dict, ``ds.sel({"method": name})``: ``method`` is also a keyword
of ``sel`` itself (inexact matching), so ``ds.sel(method=name)`` silently selects nothing.

The helpers below are shared by the figures of the study dataset (the contract of
``trajectories.gather_study``): checking that the methods a figure needs were evaluated,
drawing a concept-space panel and an accuracy curve. What the figures read from a study
(one signal level, the threshold, the summary over seeds) is ``conceptspace.analysis``,
which the claims read too.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conceptspace.analysis import (
    CORNERS,
    class_label,
    seed_summary,
    select_level,
    sigma_of,
    threshold_of,
)
from conceptspace.concepts import TRAINING_CLASSES, UNSEEN_CLASS
from conceptspace.io import ConceptspaceError, atomic_path, json_default
from conceptspace.trajectories import smooth_accuracy

PNG_DPI = 150
# Width of an average character of the default font (DejaVu Sans), in em, rounded up:
# titles are wrapped to the figure's width with it.
CHAR_WIDTH_EM = 0.6
STEP_LABEL = "training step (optimizer steps)"
# Concept-space panels: class labels sit this many points outside their corner, clear of
# the largest marker drawn at a corner (the trajectories' star, 16 points across), in a
# margin of the square wide enough to hold them.
LABEL_OFFSET = 10
SQUARE_MARGIN = 0.15
# One color per prompting method kind, the same in every figure.
METHOD_COLORS = {"naive": "C0", "overprompt": "C1", "intervention": "C2", "patched": "C3"}
METHOD_NAMES = {
    "naive": "naive prompting",
    "overprompt": "overprompting (best of the prompts)",
    "intervention": "latent intervention (best of the alphas)",
    "patched_final": "naive, final embedding module patched in",
}


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) on the Agg canvas, with constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_title(figure: Figure, text: str, fontsize: float = 11) -> None:
    """The figure's title, each line of ``text`` wrapped to the figure's width so that no
    line runs off the canvas, whatever the number of panels."""
    chars = max(20, int(figure.get_figwidth() * 72 / (CHAR_WIDTH_EM * fontsize)))
    figure.suptitle(
        "\n".join(balanced(line, chars) for line in text.split("\n")), fontsize=fontsize
    )


def balanced(line: str, chars: int) -> str:
    """``line`` wrapped to at most ``chars`` characters a line, in as few lines as that
    takes, each about as long as the others (no last word alone on its line)."""
    fewest = len(textwrap.wrap(line, chars)) or 1
    for width in range(math.ceil(len(line) / fewest), chars):
        if len(textwrap.wrap(line, width)) == fewest:
            return textwrap.fill(line, width)
    return textwrap.fill(line, chars)


def file_metadata(title: str, record: Mapping[str, Any] | None, fmt: str) -> dict[str, str]:
    """Title and provenance record (JSON) in the metadata fields of a PDF or PNG."""
    metadata = {"Title": title}
    if record is not None:
        field = "Subject" if fmt == "pdf" else "Description"
        metadata[field] = json.dumps(record, sort_keys=True, default=json_default)
    return metadata


def save_figure(
    figure: Figure,
    out_pdf: str | os.PathLike,
    dpi: int = PNG_DPI,
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``out_pdf`` and the PNG with the same stem beside it, each atomically.

    ``record`` (``io.provenance(...)``) goes into the PDF's Subject and the PNG's
    Description field."""
    out_pdf = Path(out_pdf)
    out_png = out_pdf.with_suffix(".png")
    for path, fmt in ((out_pdf, "pdf"), (out_png, "png")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            metadata = file_metadata(out_pdf.stem, record, fmt)
            figure.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
    return out_pdf, out_png


def method_label(method: str) -> str:
    """A reader's name for a method coordinate value ('patched_step_002000' as it is)."""
    return METHOD_NAMES.get(method, method.replace("_", " "))


def seeds_count(counts: int | Sequence[int]) -> str:
    """'1 seed', '2 seeds', or '2 to 5 seeds' for levels run with different numbers of
    seeds (a sweep may name its own seeds)."""
    counts = [counts] if isinstance(counts, (int, np.integer)) else list(counts)
    if not counts:
        return "0 seeds"
    low, high = min(counts), max(counts)
    return f"{high} seed{'' if high == 1 else 's'}" if low == high else f"{low} to {high} seeds"


def seeds_run(study: xr.Dataset) -> list[int]:
    """The number of seeds run at each signal level of a study on the seed x color gap x
    size gap grid (levels with none left out)."""
    ran = (
        study["accuracy"]
        .notnull()
        .any([d for d in study["accuracy"].dims if d not in ("seed", "color_gap", "size_gap")])
    )
    counts = ran.sum("seed").values.ravel()
    return [int(n) for n in counts if n > 0]


def level_title(color_gap: float, size_gap: float) -> str:
    return f"color gap \u0394c = {color_gap:g}, size gap \u0394s = {size_gap:g}"


def note(ax: Axes, text: str) -> None:
    """Grey text in the middle of a panel that has nothing else to show."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=10,
        color="0.35",
        wrap=True,
    )


def label_corners(ax: Axes, corners: Mapping[str, tuple[float, float]]) -> None:
    """Label each class just outside its corner of the unit square, above the top corners
    and below the bottom ones, where no probability can put a marker (the largest
    marker reaches LABEL_OFFSET points from its point); the unseen class in bold."""
    for name, (x, y) in corners.items():
        unseen = name == UNSEEN_CLASS
        ax.annotate(
            class_label(name) + (" (unseen)" if unseen else ""),
            (x, y),
            textcoords="offset points",
            xytext=(0, -LABEL_OFFSET if y == 0 else LABEL_OFFSET),
            ha="left" if x == 0 else "right",
            va="top" if y == 0 else "bottom",
            fontsize=8,
            color="0.3",
            fontweight="bold" if unseen else "normal",
        )


def concept_square(ax: Axes, title: str) -> None:
    """Axes of a concept-space panel: x = P(color = blue), y = P(size = small), each
    class labelled at its corner."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("P(color = blue), mean over valid samples (probability)")
    ax.set_ylabel("P(size = small), mean over valid samples (probability)")
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-SQUARE_MARGIN, 1 + SQUARE_MARGIN)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    label_corners(ax, CORNERS)


def require(study: xr.Dataset, variables: Iterable[str], figure: str) -> None:
    """ConceptspaceError unless ``study`` holds ``variables`` and a 'method' dimension."""
    missing = [name for name in variables if name not in study]
    if missing or "method" not in study.dims:
        lacking = ", ".join(missing) if missing else "the 'method' dimension"
        raise ConceptspaceError(
            f"the study dataset lacks {lacking}, which {figure} needs; it was gathered by an "
            "older version: delete results/signal/study.nc and rerun `snakemake` (rule "
            "gather_study)"
        )


def require_methods(study: xr.Dataset, methods: Sequence[str], figure: str) -> None:
    """ConceptspaceError naming each of ``methods`` the study was not evaluated with."""
    present = [str(method) for method in study["method"].values]
    missing = [method for method in methods if method not in present]
    if missing:
        raise ConceptspaceError(
            f"{figure} needs the prompting method(s) {', '.join(missing)}, but the study "
            f"dataset holds only {', '.join(present)}; switch them on in the evaluation "
            "section of the config and rerun `snakemake` (the checkpoints are evaluated "
            "again), or leave this figure out"
        )


def draw_accuracy(
    ax: Axes,
    accuracy: xr.DataArray,
    color: str,
    label: str,
    linestyle: str = "-",
    learning_times: np.ndarray | None = None,
    threshold: float | None = None,
    sigma: float = 0.0,
) -> None:
    """An accuracy (seed, step) against step: the mean over seeds as a line, the range
    (min to max) over seeds as a band. With ``learning_times`` (one per seed, NaN: never
    reached), a vertical dashed line at the mean of those that reached ``threshold``,
    and in the legend how many seeds reached it. With ``sigma`` > 0 the line and band
    are Gaussian-smoothed over checkpoints, as the learning times were, and the measured
    seed means are drawn as dots."""
    accuracy = accuracy.transpose("seed", "step")
    steps = accuracy["step"].values
    if sigma:
        measured, _, _ = seed_summary(accuracy)
        ax.plot(steps, measured, ".", ms=3, color=color, alpha=0.5)
        accuracy = smooth_accuracy(accuracy, sigma)
    mean, low, high = seed_summary(accuracy)
    if learning_times is not None:
        reached = learning_times[np.isfinite(learning_times)]
        n_seeds = len(learning_times)
        if len(reached):
            first = float(reached.mean())
            ax.axvline(first, color=color, ls="--", lw=1.0, alpha=0.9)
            label += f"; \u2265 {threshold:g} at step {first:.0f} ({len(reached)}/{n_seeds} seeds)"
        else:
            label += f"; never \u2265 {threshold:g} (0/{n_seeds} seeds)"
    ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
    marker = "" if sigma else "."
    ax.plot(steps, mean, linestyle, marker=marker, ms=4, color=color, lw=1.5, label=label)


def accuracy_axes(ax: Axes, title: str, threshold: float, sigma: float = 0.0) -> None:
    """Labels, limits and the threshold line of an accuracy-against-step panel; with
    ``sigma`` > 0 a legend note that its lines are smoothed as the learning times were (its
    curves drawn by ``draw_accuracy`` with the same sigma)."""
    ax.set_title(title, fontsize=11)
    if sigma:  # a legend entry with no line, not a note inside the axes over the curves
        note = f"lines: Gaussian-smoothed over checkpoints (sigma {sigma:g}); dots: as measured"
        ax.plot([], [], " ", label=note)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("accuracy: mean over valid samples of P(color) \u00d7 P(size) of the target")
    ax.set_ylim(-0.03, 1.03)
    ax.axhline(threshold, color="0.4", ls=":", lw=1.0, label=f"threshold {threshold:g}")
    ax.grid(alpha=0.3)


def plot_accuracy_levels(
    study: xr.Dataset,
    out_pdf: str | os.PathLike,
    levels: Sequence[tuple[float, float]],
    methods: Sequence[str],
    figure_name: str,
    title: str,
    training_classes: bool = False,
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """The unseen class's accuracy against step under each of ``methods`` (colored by
    method kind), one panel per (color gap, size gap) in ``levels``, with each method's
    first step at the threshold; with ``training_classes`` also the mean accuracy of
    the training classes, dotted. Levels without runs are drawn empty with a note.
    Shared by the hidden-capability and the patching figures; writes ``out_pdf`` and
    its PNG."""
    require(study, ("accuracy_among_valid", "learning_time"), figure_name)
    require_methods(study, methods, figure_name)
    if not levels:
        raise ConceptspaceError(f"{figure_name} needs signal levels; list them in figures.levels")
    threshold, sigma = threshold_of(study), sigma_of(study)
    kinds = study["method_kind"].to_series() if "method_kind" in study.coords else {}
    training = list(TRAINING_CLASSES)

    figure = new_figure(5.6 * len(levels), 6.6 if training_classes else 6.0)
    axes = np.atleast_1d(figure.subplots(1, len(levels), sharey=True))
    n_seeds = []
    for ax, (color_gap, size_gap) in zip(axes, levels):
        accuracy_axes(ax, level_title(color_gap, size_gap), threshold, sigma)
        if ax is not axes[0]:
            ax.set_ylabel("")  # the panels share the y axis: its label once, at the left
        level = select_level(study.sel({"method": list(methods)}), color_gap, size_gap)
        if level is None:
            note(ax, "not run")
            continue
        n_seeds.append(level.sizes["seed"])
        for index, method in enumerate(methods):
            color = METHOD_COLORS.get(kinds.get(method, method), f"C{index + 4}")
            accuracy = level["accuracy_among_valid"].sel({"method": method})
            draw_accuracy(
                ax,
                accuracy.sel(prompt=UNSEEN_CLASS),
                color,
                f"{method_label(method)}, class {UNSEEN_CLASS}",
                learning_times=level["learning_time"].sel({"method": method}).values,
                threshold=threshold,
                sigma=sigma,
            )
            if "valid_fraction" in level:
                valid = level["valid_fraction"].sel({"method": method, "prompt": UNSEEN_CLASS})
                mean_valid, _, _ = seed_summary(valid.transpose("seed", "step"))
                ax.plot(
                    valid["step"].values,
                    mean_valid,
                    "-.",
                    color=color,
                    lw=0.9,
                    alpha=0.8,
                    label=f"{method_label(method)}, class {UNSEEN_CLASS}: fraction of samples "
                    "holding one object",
                )
            on_training = accuracy.sel(prompt=training).mean("prompt", skipna=False)
            if training_classes and on_training.notnull().any():
                label = f"{method_label(method)}, training classes (mean of {', '.join(training)})"
                draw_accuracy(ax, on_training, color, label, linestyle=":", sigma=sigma)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    seeds_text = seeds_count(n_seeds) if n_seeds else "seeds"
    figure_title(
        figure,
        f"{title}\nline: mean over {seeds_text}; band: range (min to max) over seeds; dashed "
        "vertical: mean over seeds of the first step at the threshold",
    )
    return save_figure(figure, out_pdf, record=record)
