"""fig_celeba: concept learning on CelebA faces (docs/study.md; the paper's Male x
Wearing_Hat, female with hat held out).

The layout is the study's own (``concepts.celeba_layout``, from the dataset's
``layout_record``): two attributes, h one-hot per attribute. A class's point in concept
space is, per attribute, the probe's mean probability that the samples show it (present
= digit 1), so each class has its corner of the unit square.

(a) Every class's path under naive prompting, mean over seeds at each checkpoint (open
circle: first checkpoint, filled: last); the held-out class in color, training classes in
grey; the held-out class's path also under the latent intervention (best of the alphas)
and with the final embedding module patched in, where the study has them; a star at its
corner. (b) The held-out class's accuracy (product of its two attributes' target
probabilities) against step for the same methods: mean over seeds, band min to max,
dashed at the mean learning time of the seeds that reached the threshold.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import xarray as xr

from conceptspace.analysis import sigma_of, threshold_of
from conceptspace.concepts import layout_from_attrs
from conceptspace.figures import (
    METHOD_COLORS,
    accuracy_axes,
    draw_accuracy,
    figure_title,
    method_label,
    new_figure,
    require,
    require_methods,
    save_figure,
)
from conceptspace.figures.background import value_one_probability
from conceptspace.io import ConceptspaceError

NAIVE = "naive"
# Methods drawn beside naive prompting when the study has them, with their kind's color.
COMPARED = (("intervention", "intervention"), ("patched_final", "patched"))


def plot_celeba(
    study: xr.Dataset, out_pdf: str | os.PathLike, record: Mapping[str, Any] | None = None
):
    """Draw fig_celeba from the CelebA study dataset (dims seed, step, method, prompt,
    concept = the two attributes). Writes PDF and PNG."""
    require(study, ("concept_prob", "accuracy_among_valid", "learning_time"), "fig_celeba")
    require_methods(study, [NAIVE], "fig_celeba")
    layout = layout_from_attrs(study.attrs)
    if not layout.one_hot:
        raise ConceptspaceError(
            f"fig_celeba needs the CelebA study, but this dataset's layout is {layout.name}; "
            "draw it from results/celeba/study.nc"
        )
    first, second = layout.concepts
    (unseen,) = layout.unseen_classes
    present = [str(m) for m in study["method"].values]
    methods = [(NAIVE, "naive")] + [(m, kind) for m, kind in COMPARED if m in present]
    position = value_one_probability(study["concept_prob"], layout).mean("seed", skipna=True)
    threshold, sigma = threshold_of(study), sigma_of(study)

    figure = new_figure(13, 6.2)
    square, curves = figure.subplots(1, 2)
    square.set_xlabel(f"P({first} present), mean over valid samples (probability)")
    square.set_ylabel(f"P({second} present), mean over valid samples (probability)")
    square.set_xlim(-0.1, 1.1)
    square.set_ylim(-0.1, 1.1)
    square.set_aspect("equal")
    square.grid(alpha=0.3)
    square.set_title(
        "concept space: every class naive; the held-out one also elicited", fontsize=11
    )
    for prompt in layout.classes:
        is_unseen = prompt == unseen
        for method, kind in methods if is_unseen else methods[:1]:
            path = position.sel({"method": method, "prompt": prompt})
            xs, ys = path.sel(concept=first).values, path.sel(concept=second).values
            keep = np.isfinite(xs) & np.isfinite(ys)
            if not keep.any():
                continue
            xs, ys = xs[keep], ys[keep]
            color = METHOD_COLORS[kind] if is_unseen else "0.6"
            label = f"{prompt} {layout.label(prompt)}"
            label += f" (held out), {method_label(method)}" if is_unseen else ""
            style = "-" if method == NAIVE else "--"
            square.plot(xs, ys, style, color=color, lw=1.6 if is_unseen else 0.9, label=label)
            square.plot(xs[0], ys[0], "o", mfc="none", color=color, ms=5)
            square.plot(xs[-1], ys[-1], "o", color=color, ms=5)
    digits = layout.digits(unseen)
    square.plot(*digits, "*", color=METHOD_COLORS["naive"], ms=14, mec="k", mew=0.5)
    for name in layout.classes:  # each class named at its corner, inside the square
        x, y = layout.digits(name)
        text = f"{name}: {layout.label(name)}" + (" (held out)" if name == unseen else "")
        square.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(6 if x == 0 else -6, 8 if y == 0 else -12),
            ha="left" if x == 0 else "right",
            fontsize=7,
            color="0.3",
            fontweight="bold" if name == unseen else "normal",
        )
    handles, labels = square.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)

    accuracy_axes(curves, f"held-out class {unseen} ({layout.label(unseen)})", threshold, sigma)
    curves.set_ylabel(f"accuracy: P({first}) \u00d7 P({second}) of the target (probability)")
    for method, kind in methods:
        selected = study.sel({"method": method})
        draw_accuracy(
            curves,
            selected["accuracy_among_valid"].sel(prompt=unseen),
            METHOD_COLORS[kind],
            method_label(method),
            learning_times=selected["learning_time"].values,
            threshold=threshold,
            sigma=sigma,
        )
    curves.legend(fontsize=7, loc="upper left")
    n_seeds = study.sizes.get("seed", 1)
    figure_title(
        figure,
        f"CelebA, {first} x {second}: learning dynamics, mean over {n_seeds} seed(s)",
        fontsize=12,
    )
    return save_figure(figure, out_pdf, record=record)
