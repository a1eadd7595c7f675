"""Figure "signal": concept signal dictates the speed and the path of concept learning.

(a) Speed of learning 1/T of the unseen class against the color gap, at the color
    sweep's size gap; (b) the same against the size gap, at the size sweep's color gap.
    Each seed is a faint point; the line is the mean over the seeds that reached the
    threshold, the band their range (min to max). Runs that never reached the threshold
    within training are hollow markers at speed 0 (their speed is below 1/last step),
    counted in the legend, never dropped.
(c) Concept-space trajectories of the unseen class (x = P(color = blue), y =
    P(size = small)), mean over seeds, one line per color gap at the color sweep's size
    gap, colored by the color gap; hollow circle = first checkpoint, filled = last.

Everything is read from the study dataset of ``trajectories.gather_study``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.figures import (
    CORNERS,
    GAP_TOLERANCE,
    concept_square,
    gap_index,
    new_figure,
    note,
    save_figure,
)
from conceptspace.io import ConceptspaceError

# Speeds are plotted per 1000 steps: 1/8000 steps reads as 0.125.
SPEED_SCALE = 1000.0
GAP_LABELS = {
    "color_gap": ("color gap", "\u0394c", "RGB units"),
    "size_gap": ("size gap", "\u0394s", "grid units"),
}
REQUIRED = ("concept_prob", "accuracy", "learning_speed")


def plot_signal(
    study: xr.Dataset,
    out_pdf: str | os.PathLike,
    color_sweep_size_gap: float,
    size_sweep_color_gap: float,
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Draw the signal figure from a study dataset; write ``out_pdf`` and its PNG.

    Returns (pdf path, png path). Panels without data (no runs at the requested gap, or
    no run reaching the threshold) are drawn empty with a note rather than failing.
    """
    missing = [name for name in REQUIRED if name not in study]
    if missing:
        raise ConceptspaceError(
            f"the study dataset lacks {', '.join(missing)}; rebuild it with `snakemake` "
            "(rule gather_study)"
        )
    if "method" in study.dims:  # this figure is about naive prompting
        study = study.sel({"method": "naive"})
    threshold = study["learning_speed"].attrs.get("threshold")
    threshold_text = "the threshold" if threshold is None else f"{float(threshold):g}"
    n_seeds = study.sizes.get("seed", 1)

    figure = new_figure(17.0, 5.4)
    speed_color, speed_size, trajectories = figure.subplots(1, 3)
    _speed_panel(
        speed_color, study, "color_gap", "size_gap", color_sweep_size_gap, threshold_text, "(a)"
    )
    _speed_panel(
        speed_size, study, "size_gap", "color_gap", size_sweep_color_gap, threshold_text, "(b)"
    )
    _trajectory_panel(trajectories, figure, study, color_sweep_size_gap)
    figure.suptitle(
        f"Concept signal dictates the speed of learning. Unseen class {UNSEEN_CLASS} "
        f"(blue small), naive prompting; T = first checkpoint with accuracy "
        f"\u2265 {threshold_text}; {n_seeds} seed{'s' if n_seeds != 1 else ''}",
        fontsize=12,
    )
    return save_figure(figure, out_pdf, record=record)


def _gap_label(dim: str) -> str:
    name, symbol, units = GAP_LABELS[dim]
    return f"{name} {symbol} ({units})"


def _speed_panel(
    ax: Axes,
    study: xr.Dataset,
    sweep_dim: str,
    fixed_dim: str,
    fixed_value: float,
    threshold_text: str,
    letter: str,
) -> None:
    _, fixed_symbol, _ = GAP_LABELS[fixed_dim]
    sweep_name = GAP_LABELS[sweep_dim][0]
    ax.set_title(
        f"{letter} speed of learning vs {sweep_name}, at {fixed_symbol} = {fixed_value:g}",
        fontsize=11,
    )
    ax.set_xlabel(_gap_label(sweep_dim))
    ax.set_ylabel(f"speed of learning 1/T (per {SPEED_SCALE:g} optimizer steps)")
    index = gap_index(study, fixed_dim, fixed_value)
    if index is None:
        note(ax, f"no runs at {fixed_symbol} = {fixed_value:g}")
        return
    sub = study.isel({fixed_dim: index})
    was_run = sub["accuracy"].notnull().any(("step", "prompt")).transpose("seed", sweep_dim).values
    speed = (sub["learning_speed"] * SPEED_SCALE).transpose("seed", sweep_dim).values
    reached = was_run & np.isfinite(speed)
    never = was_run & ~np.isfinite(speed)
    gaps = sub[sweep_dim].values
    if not was_run.any():
        note(ax, f"no runs at {fixed_symbol} = {fixed_value:g}")
        return

    # Individual seeds, faint; then mean and range over the seeds that reached.
    has_speed = reached.any(axis=0)
    if has_speed.any():
        seed_rows, gap_columns = np.nonzero(reached)
        ax.scatter(
            gaps[gap_columns],
            speed[seed_rows, gap_columns],
            s=14,
            color="C0",
            alpha=0.35,
            linewidths=0,
            label="single seeds",
        )
        masked = np.where(reached, speed, np.nan)[:, has_speed]
        x = gaps[has_speed]
        ax.fill_between(
            x,
            np.nanmin(masked, axis=0),
            np.nanmax(masked, axis=0),
            color="C0",
            alpha=0.15,
            linewidth=0,
            label="range over seeds",
        )
        ax.plot(
            x,
            np.nanmean(masked, axis=0),
            "o-",
            color="C0",
            ms=4,
            label=f"mean over seeds that reached {threshold_text}",
        )
    # Runs that never reached the threshold: hollow markers at speed 0, counted.
    never_per_gap = never.sum(axis=0)
    n_never, n_run = int(never.sum()), int(was_run.sum())
    if never_per_gap.any():
        at = never_per_gap > 0
        ax.scatter(
            gaps[at],
            np.zeros(at.sum()),
            s=40,
            marker="v",
            facecolors="none",
            edgecolors="C3",
            linewidths=1.2,
            zorder=3,
            label=f"never reached {threshold_text} ({n_never} of {n_run} runs)",
        )
        for gap, count in zip(gaps[at], never_per_gap[at]):
            if count > 1:
                ax.annotate(
                    f"\u00d7{count}",
                    (gap, 0),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color="C3",
                )
    if not has_speed.any():
        note(ax, f"no run reached accuracy \u2265 {threshold_text}\nwithin training")
    top = np.nanmax(np.where(reached, speed, np.nan)) if has_speed.any() else 1.0
    ax.set_ylim(-0.06 * top, 1.15 * top)
    ax.margins(x=0.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _trajectory_panel(ax: Axes, figure, study: xr.Dataset, size_gap: float) -> None:
    concept_square(
        ax, f"(c) concept-space trajectories of class {UNSEEN_CLASS}, at \u0394s = {size_gap:g}"
    )
    for x, y in CORNERS.values():
        ax.plot([x], [y], "s", color="0.6", ms=5, zorder=1)

    index = gap_index(study, "size_gap", size_gap)
    concepts = list(study["concept"].values)
    if index is None or not {"color", "size"} <= set(concepts):
        note(ax, f"no runs at \u0394s = {size_gap:g}")
        return
    unseen = study["concept_prob"].isel(size_gap=index).sel(prompt=UNSEEN_CLASS)
    mean = unseen.mean("seed", skipna=True)  # (color_gap, step, concept); NaN if not run
    color_gaps = [
        float(gap) for gap in mean["color_gap"].values if mean.sel(color_gap=gap).notnull().any()
    ]
    if not color_gaps:
        note(ax, f"no runs at \u0394s = {size_gap:g}")
        return

    low, high = min(color_gaps), max(color_gaps)
    if high - low < GAP_TOLERANCE:  # one level: any color; keep the colorbar sensible
        low, high = low - 0.05, high + 0.05
    norm, cmap = Normalize(low, high), colormaps["viridis"]
    for gap in color_gaps:
        path = mean.sel(color_gap=gap)
        x = path.sel(concept="color").values
        y = path.sel(concept="size").values
        finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        color = cmap(norm(gap))
        ax.plot(x, y, "-", color=color, lw=1.4, alpha=0.9)
        ax.plot(x[finite[0]], y[finite[0]], "o", mfc="white", mec=color, ms=6, zorder=3)
        ax.plot(x[finite[-1]], y[finite[-1]], "o", color=color, ms=5, zorder=3)
    steps = study["step"].values
    ax.legend(
        handles=[
            Line2D(
                [], [], ls="", marker="o", mfc="white", mec="k", label=f"start (step {steps[0]})"
            ),
            Line2D([], [], ls="", marker="o", color="k", label=f"end (step {steps[-1]})"),
        ],
        fontsize=8,
        loc="upper center",
    )
    n_seeds = study.sizes.get("seed", 1)
    figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        label=f"{_gap_label('color_gap')}; lines: mean of {n_seeds} seed(s)",
        shrink=0.85,
    )
