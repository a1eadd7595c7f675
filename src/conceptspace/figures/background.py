"""fig_background: learning dynamics in the three-concept space of the 2x2x2 study.

The color_size_background layout (``concepts.COLOR_SIZE_BACKGROUND``) trains 000 001 010
100 and holds out 011 101 110 111. A class's point in concept space is, for each concept,
the probe's mean probability that the samples show value 1 of it (blue, small, dark
background): P(value 1) = P(target) when the class's digit is 1, else 1 - P(target). So
every class has its corner of the unit cube, and a path that reaches its corner has
learned all three concepts.

(a)-(c) The cube seen along each axis: color x size, color x background, size x
background; one path per class under naive prompting, mean over seeds at each
checkpoint (open circle: first checkpoint, filled: last); the unseen classes in color,
the training classes in grey, the target corners marked with a star. (d) The unseen
classes' accuracy (product over the three concepts) against step: mean over seeds, band
min to max, dashed at the mean learning time of the seeds that reached the threshold.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from conceptspace.analysis import sigma_of, threshold_of
from conceptspace.concepts import CONCEPT_VALUES, COLOR_SIZE_BACKGROUND, Layout
from conceptspace.figures import (
    accuracy_axes,
    draw_accuracy,
    figure_title,
    new_figure,
    require,
    require_methods,
    save_figure,
)
from conceptspace.io import ConceptspaceError

LAYOUT = COLOR_SIZE_BACKGROUND
NAIVE = "naive"
# The three 2-d views of the cube: (x concept, y concept).
PROJECTIONS = (("color", "size"), ("color", "background"), ("size", "background"))
UNSEEN_COLORS = ("C0", "C1", "C2", "C3")


def value_one_probability(concept_prob: xr.DataArray, layout: Layout = LAYOUT) -> xr.DataArray:
    """P(concept = value 1) from P(concept = the prompt's target value), per prompt:
    the class's digit of that concept picks p or 1 - p. Dims as ``concept_prob``; any
    layout (fig_celeba uses it for CelebA's attributes)."""
    digits = xr.DataArray(
        np.array([layout.digits(str(p)) for p in concept_prob["prompt"].values], dtype=float),
        dims=("prompt", "concept"),
        coords={"prompt": concept_prob["prompt"], "concept": list(layout.concepts)},
    )
    return digits * concept_prob + (1 - digits) * (1 - concept_prob)


def axis_label(concept: str) -> str:
    return f"P({concept} = {CONCEPT_VALUES[concept][1]}), mean over valid samples (probability)"


def _projection_panel(ax: Axes, position: xr.DataArray, x: str, y: str) -> None:
    """Every class's mean path (prompt, step, concept) in the (x, y) face of the cube."""
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.1, 1.1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_title(f"{x} x {y}", fontsize=11)
    unseen = list(LAYOUT.unseen_classes)
    for prompt in LAYOUT.classes:  # training classes first, underneath
        path = position.sel(prompt=prompt)
        xs, ys = path.sel(concept=x).values, path.sel(concept=y).values
        keep = np.isfinite(xs) & np.isfinite(ys)
        if not keep.any():
            continue
        xs, ys = xs[keep], ys[keep]
        is_unseen = prompt in unseen
        color = UNSEEN_COLORS[unseen.index(prompt)] if is_unseen else "0.6"
        label = f"{prompt} {LAYOUT.label(prompt)}" + (" (unseen)" if is_unseen else "")
        ax.plot(xs, ys, "-", color=color, lw=1.6 if is_unseen else 0.9, label=label)
        ax.plot(xs[0], ys[0], "o", mfc="none", color=color, ms=5)
        ax.plot(xs[-1], ys[-1], "o", color=color, ms=5)
        digits = dict(zip(LAYOUT.concepts, LAYOUT.digits(prompt)))
        if is_unseen:
            ax.plot(digits[x], digits[y], "*", color=color, ms=12, mec="k", mew=0.5)


def plot_background(
    study: xr.Dataset, out_pdf: str | os.PathLike, record: Mapping[str, Any] | None = None
):
    """Draw fig_background from the background study dataset (dims seed, step, method,
    prompt, concept; ``trajectories.gather_study`` with grid seed). Writes PDF and PNG."""
    require(study, ("concept_prob", "accuracy_among_valid", "learning_time"), "fig_background")
    require_methods(study, [NAIVE], "fig_background")
    prompts = [str(p) for p in study["prompt"].values]
    concepts = [str(c) for c in study["concept"].values]
    if sorted(prompts) != list(LAYOUT.classes) or concepts != list(LAYOUT.concepts):
        raise ConceptspaceError(
            f"fig_background needs the background study (prompts {', '.join(LAYOUT.classes)}; "
            f"concepts {', '.join(LAYOUT.concepts)}), but the dataset has prompts "
            f"{', '.join(prompts)} and concepts {', '.join(concepts)}; draw it from "
            "results/background/study.nc"
        )
    naive = study.sel({"method": NAIVE})
    position = value_one_probability(naive["concept_prob"]).mean("seed", skipna=True)
    position = position.transpose("prompt", "step", "concept")
    threshold, sigma = threshold_of(study), sigma_of(study)

    figure = new_figure(17, 5.4)
    axes = figure.subplots(1, 4)
    for ax, (x, y) in zip(axes[:3], PROJECTIONS):
        _projection_panel(ax, position, x, y)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)

    ax = axes[3]
    accuracy_axes(ax, "unseen classes, naive prompting", threshold, sigma)
    ax.set_ylabel("accuracy among valid samples: product of the 3 target probabilities")
    times = naive["learning_time"]
    for color, unseen in zip(UNSEEN_COLORS, LAYOUT.unseen_classes):
        accuracy = naive["accuracy_among_valid"].sel(prompt=unseen)
        learning = times.sel(unseen=unseen) if "unseen" in times.dims else times
        label = f"{unseen} {LAYOUT.label(unseen)}"
        draw_accuracy(
            ax,
            accuracy,
            color,
            label,
            learning_times=learning.values,
            threshold=threshold,
            sigma=sigma,
        )
    ax.legend(fontsize=7, loc="upper left")
    gaps = ", ".join(
        f"{name} {float(study[name]):g}"
        for name in ("color_gap", "size_gap", "background_gap")
        if name in study.coords
    )
    n_seeds = study.sizes.get("seed", 1)
    figure_title(
        figure,
        f"2x2x2 concept space ({gaps}): naive prompting, mean over {n_seeds} seed(s)",
        fontsize=12,
    )
    return save_figure(figure, out_pdf, record=record)
