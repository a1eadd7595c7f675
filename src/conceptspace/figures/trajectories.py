"""Figure "trajectories": concept memorization first, then a sharp turn (claim 2).

One panel per chosen signal level (``figures.levels``): the concept-space paths of the
unseen class 11 and of the three training classes under naive prompting, mean over
seeds, in one frame for all prompts: x = P(color = blue), y = P(size = small), so each
class's own images score at its corner (00 red large at (0, 0), 01 red small at (0, 1),
10 blue large at (1, 0), 11 blue small at (1, 1)). The study stores the probability of
each prompt's target value; the probe is binary per concept, so for a red or large
target the blue or small probability is 1 minus it. A checkpoint where fewer than the
study's ``evaluation.min_valid_fraction`` of a prompt's samples hold one object has no
point (``trajectories.concept_point``). Points are colored by training step; faint
lines are the single seeds of class 11.

Two events are marked, each defined from the data (``conceptspace.analysis``, which
claim 2 reads too):

- The turn from memorization (``analysis.memorization_turn``). Memorization pulls the
  unseen class's generations toward a training class that differs from it in one
  concept: 01 red small at (0, 1) or 10 blue large at (1, 0). The class it
  is pulled to is the one of those two corners its mean path comes nearest to; the turn
  is the step of that nearest approach (on ties the last, from which it leaves). It
  counts only if there the generations read as that class more likely than not (the
  product of the probabilities of its color and its size >= 0.5); otherwise no
  memorization is seen and no turn is marked.
- The convergence of the training classes (``analysis.convergence_step``): the first step
  at which the mean accuracy over seeds of all three training classes is at least the
  learning-time threshold (``evaluation.threshold``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from conceptspace.analysis import (
    blue_small,
    class_label,
    convergence_step,
    memorization_turn,
    select_level,
    sigma_of,
    threshold_of,
)
from conceptspace.concepts import CLASSES, UNSEEN_CLASS
from conceptspace.figures import (
    concept_square,
    figure_title,
    level_title,
    new_figure,
    note,
    require,
    require_methods,
    save_figure,
    seeds_count,
)
from conceptspace.io import ConceptspaceError
from conceptspace.trajectories import concept_point

MARKERS = {"00": "s", "01": "^", "10": "v", "11": "o"}
FIGURE = "fig_trajectories"


def plot_trajectories(
    study: xr.Dataset,
    out_pdf: str | os.PathLike,
    levels: Sequence[tuple[float, float]],
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Draw the trajectories figure, one panel per (color gap, size gap) in ``levels``;
    write ``out_pdf`` and its PNG. Levels without runs are drawn empty with a note."""
    require(study, ("concept_prob", "accuracy_among_valid", "learning_time"), FIGURE)
    require_methods(study, ["naive"], FIGURE)
    if not levels:
        raise ConceptspaceError(f"{FIGURE} needs signal levels; list them in figures.levels")
    threshold = threshold_of(study)
    naive = study.assign(concept_point=concept_point(study)).sel({"method": "naive"})
    steps = study["step"].values
    norm, cmap = Normalize(float(steps.min()), float(steps.max())), colormaps["viridis"]

    figure = new_figure(5.6 * len(levels) + 1.2, 6.2)
    axes = np.atleast_1d(figure.subplots(1, len(levels)))
    n_seeds = []
    for ax, (color_gap, size_gap) in zip(axes, levels):
        level = select_level(naive, color_gap, size_gap)
        concept_square(ax, level_title(color_gap, size_gap))
        if level is None:
            note(ax, "not run")
            continue
        n_seeds.append(level.sizes["seed"])
        _level_panel(ax, level, threshold, sigma_of(study), norm, cmap)
    figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="training step", shrink=0.8
    )
    seeds_text = f"mean over {seeds_count(n_seeds)}" if n_seeds else "no runs"
    figure_title(
        figure,
        f"Concept memorization, then a turn: class {class_label(UNSEEN_CLASS)} (unseen) and "
        f"the training classes in concept space, naive prompting; {seeds_text}",
        fontsize=12,
    )
    return save_figure(figure, out_pdf, record=record)


def _level_panel(ax: Axes, level: xr.Dataset, threshold: float, sigma: float, norm, cmap) -> None:
    points = blue_small(level["concept_point"])
    mean = points.mean("seed", skipna=True)  # (step, prompt, concept)
    for seed_path in points.sel(prompt=UNSEEN_CLASS).transpose("seed", "step", "concept"):
        ax.plot(seed_path.sel(concept="color"), seed_path.sel(concept="size"), color="0.7", lw=0.6)
    for prompt in CLASSES:
        path = mean.sel(prompt=prompt)
        x, y = path.sel(concept="color").values, path.sel(concept="size").values
        unseen = prompt == UNSEEN_CLASS
        ax.plot(x, y, color="0.25" if unseen else "0.55", lw=1.4 if unseen else 0.8, zorder=2)
        ax.scatter(
            x,
            y,
            c=cmap(norm(level["step"].values)),
            marker=MARKERS[prompt],
            s=36 if unseen else 18,
            edgecolors="k" if unseen else "none",
            linewidths=0.4,
            zorder=3,
        )
    handles = [
        Line2D([], [], ls="", marker=MARKERS[p], color="0.4", label=f"prompt {class_label(p)}")
        for p in CLASSES
    ]
    handles.append(Line2D([], [], color="0.7", lw=0.6, label=f"single seeds, {UNSEEN_CLASS}"))

    turn_step, pulled_to = memorization_turn(mean.sel(prompt=UNSEEN_CLASS))
    if pulled_to is not None:
        _ring(ax, mean.sel(prompt=UNSEEN_CLASS, step=turn_step), "*", 260, "C3")
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="*",
                ms=13,
                mfc="none",
                mec="C3",
                label=f"turn from memorization of {class_label(pulled_to)}: step {turn_step:.0f}",
            )
        )
    else:
        handles.append(Line2D([], [], ls="", label="no memorization seen (no turn)"))

    converged = convergence_step(
        level["accuracy_among_valid"].mean("seed", skipna=True), threshold, sigma
    )
    if np.isfinite(converged):
        _ring(ax, mean.sel(step=int(converged)), "D", 120, "C1")
        label = f"training classes all \u2265 {threshold:g}: step {converged:.0f}"
    else:
        label = f"training classes never all \u2265 {threshold:g}"
    handles.append(Line2D([], [], ls="", marker="D", mfc="none", mec="C1", label=label))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def _ring(ax: Axes, points: xr.DataArray, marker: str, size: float, color: str) -> None:
    """Hollow ``marker`` around concept-space ``points`` (..., concept)."""
    ax.scatter(
        points.sel(concept="color"),
        points.sel(concept="size"),
        s=size,
        marker=marker,
        c="none",
        edgecolors=color,
        linewidths=1.5,
        zorder=4,
    )
