"""Figure "signal": concept signal dictates the speed and the path of concept learning.

(a) Speed of learning the color of the unseen class, 1/T(color), against the color gap,
    at the color sweep's size gap; (b) speed of learning its size, 1/T(size), against
    the size gap, at the size sweep's color gap: each concept's own learning time
    (``learning_time_concept``, on its accuracy among the valid samples), as the paper's
    Fig. 3 reads it (the joint time is
    bounded by the slower concept, so it cannot show one concept's signal). Each seed
    is a point; a run that never reached the threshold is censored at the last
    checkpoint: a hollow marker at 1/last step (its speed is at most that). The line is
    1 / (mean T over seeds), censored runs counted at the last step (the authors'
    aggregation; an upper bound where a seed is censored), the band the range of the
    seeds' speeds. A sweep with one level has no line: its mean is a point and the
    panel says "one level".
(c) Concept-space trajectories of the unseen class (x = P(color = blue), y =
    P(size = small), over its valid samples; no point where fewer than
    ``evaluation.min_valid_fraction`` are valid), mean over seeds, one line per color gap at
    the color sweep's size gap, colored by the color gap; hollow circle = first
    checkpoint with a point, filled = last.

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

from conceptspace.analysis import CORNERS, gap_index
from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.figures import (
    concept_square,
    figure_title,
    new_figure,
    note,
    save_figure,
    seeds_count,
    seeds_run,
)
from conceptspace.io import ConceptspaceError
from conceptspace.runs import same_gap
from conceptspace.trajectories import concept_point

# Speeds are plotted per 1000 steps: 1/8000 steps reads as 0.125.
SPEED_SCALE = 1000.0
GAP_LABELS = {
    "color_gap": ("color gap", "\u0394c", "RGB units"),
    "size_gap": ("size gap", "\u0394s", "grid units"),
}
REQUIRED = ("concept_prob", "accuracy", "learning_time_concept")
# The concept whose learning time each sweep reads.
SWEPT_CONCEPT = {"color_gap": "color", "size_gap": "size"}


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
    study = study.assign(concept_point=concept_point(study))
    if "method" in study.dims:  # this figure is about naive prompting
        study = study.sel({"method": "naive"})
    threshold = study["learning_time"].attrs.get("threshold")
    threshold_text = "the threshold" if threshold is None else f"{float(threshold):g}"
    n_seeds = seeds_run(study)

    figure = new_figure(17.0, 5.4)
    speed_color, speed_size, trajectories = figure.subplots(1, 3)
    _speed_panel(
        speed_color, study, "color_gap", "size_gap", color_sweep_size_gap, threshold_text, "(a)"
    )
    _speed_panel(
        speed_size, study, "size_gap", "color_gap", size_sweep_color_gap, threshold_text, "(b)"
    )
    _trajectory_panel(trajectories, figure, study, color_sweep_size_gap)
    figure_title(
        figure,
        f"Concept signal dictates the speed of learning. Unseen class {UNSEEN_CLASS} "
        f"(blue small), naive prompting; T(concept) = first checkpoint with that concept's "
        f"accuracy \u2265 {threshold_text}; {seeds_count(n_seeds)}",
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
    concept = SWEPT_CONCEPT[sweep_dim]
    ax.set_title(
        f"{letter} speed of learning {concept} vs {sweep_name}, at {fixed_symbol} = "
        f"{fixed_value:g}",
        fontsize=11,
    )
    ax.set_xlabel(_gap_label(sweep_dim))
    ax.set_ylabel(f"speed 1/T({concept}) (per {SPEED_SCALE:g} optimizer steps)")
    index = gap_index(study, fixed_dim, fixed_value)
    if index is None or concept not in study["concept"].values:
        note(ax, f"no runs at {fixed_symbol} = {fixed_value:g}")
        return
    sub = study.isel({fixed_dim: index})
    was_run = sub["accuracy"].notnull().any(("step", "prompt")).transpose("seed", sweep_dim).values
    times = sub["learning_time_concept"].sel(concept=concept).transpose("seed", sweep_dim).values
    last_step = float(study["step"].values[-1])
    reached = was_run & np.isfinite(times)
    censored = was_run & ~np.isfinite(times)
    gaps = sub[sweep_dim].values
    if not was_run.any():
        note(ax, f"no runs at {fixed_symbol} = {fixed_value:g}")
        return

    # Censored runs count at the last step: speeds are then upper bounds.
    bounded = np.where(censored, last_step, times)
    speed = SPEED_SCALE / bounded
    rows, columns = np.nonzero(reached)
    ax.scatter(
        gaps[columns],
        speed[rows, columns],
        s=16,
        color="C0",
        alpha=0.5,
        linewidths=0,
        label="single seeds",
    )
    n_censored, n_run = int(censored.sum()), int(was_run.sum())
    if n_censored:
        rows, columns = np.nonzero(censored)
        ax.scatter(
            gaps[columns],
            speed[rows, columns],
            s=40,
            marker="v",
            facecolors="none",
            edgecolors="C3",
            linewidths=1.2,
            zorder=3,
            label=f"never reached {threshold_text}: at most 1/last step ({n_censored} of "
            f"{n_run} runs)",
        )
    ran = was_run.any(axis=0)
    with np.errstate(invalid="ignore"):
        kept = np.where(was_run, speed, np.nan)[:, ran]
        mean_time = np.nanmean(np.where(was_run, bounded, np.nan)[:, ran], axis=0)
    x = gaps[ran]
    mean_label = "1 / mean T over seeds (censored at the last step)"
    if len(x) == 1:  # one level is no sweep: no line, no band, and the panel says so
        ax.plot(x, SPEED_SCALE / mean_time, "o", color="C0", ms=6, label=mean_label)
        ax.set_xticks(x)
        ax.text(
            0.5,
            0.03,
            f"one level ({GAP_LABELS[sweep_dim][1]} = {x[0]:g}): no sweep",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=10,
            color="0.35",
        )
    else:
        ax.fill_between(
            x,
            np.nanmin(kept, axis=0),
            np.nanmax(kept, axis=0),
            color="C0",
            alpha=0.15,
            linewidth=0,
            label="range over seeds",
        )
        ax.plot(x, SPEED_SCALE / mean_time, "o-", color="C0", ms=4, label=mean_label)
    if not reached.any():
        note(ax, f"no run reached {concept} accuracy \u2265 {threshold_text}\nwithin training")
    top = float(np.nanmax(kept))
    ax.set_ylim(-0.06 * top, 1.2 * top)
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
    unseen = study["concept_point"].isel(size_gap=index).sel(prompt=UNSEEN_CLASS)
    mean = unseen.mean("seed", skipna=True)  # (color_gap, step, concept); NaN if not run
    color_gaps = [
        float(gap) for gap in mean["color_gap"].values if mean.sel(color_gap=gap).notnull().any()
    ]
    if not color_gaps:
        note(ax, f"no runs at \u0394s = {size_gap:g}")
        return

    low, high = min(color_gaps), max(color_gaps)
    if same_gap(high, low):  # one level: any color; keep the colorbar sensible
        low, high = low - 0.05, high + 0.05
    norm, cmap = Normalize(low, high), colormaps["viridis"]
    for gap in color_gaps:
        path = mean.sel(color_gap=gap)
        x = path.sel(concept="color").values
        y = path.sel(concept="size").values
        finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        if not len(finite):  # no valid sample at any checkpoint: no point to draw
            continue
        color = cmap(norm(gap))
        ax.plot(x, y, "-", color=color, lw=1.4, alpha=0.9)
        ax.plot(x[finite[0]], y[finite[0]], "o", mfc="white", mec=color, ms=6, zorder=3)
        ax.plot(x[finite[-1]], y[finite[-1]], "o", color=color, ms=5, zorder=3)
    # the floor of valid samples can leave the first (or last) checkpoints without a point
    ax.legend(
        handles=[
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc="white",
                mec="k",
                label="first checkpoint with a point",
            ),
            Line2D([], [], ls="", marker="o", color="k", label="last checkpoint with a point"),
        ],
        fontsize=8,
        loc="lower center",  # between the bottom corners' labels, clear of the top ones
    )
    n_seeds = seeds_run(study)
    figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        label=f"{_gap_label('color_gap')}; lines: mean of {seeds_count(n_seeds)}",
        shrink=0.85,
    )
