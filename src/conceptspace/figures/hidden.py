"""Figure "hidden": a hidden capability appears before plain prompting shows it (claim 3).

One panel per chosen signal level (``figures.levels``): the accuracy of the unseen class
11 (the product of the probe's mean probabilities of blue and of small) against the
training step, for naive prompting, overprompting (best of its prompts at each
checkpoint) and linear latent intervention (best of its alphas at each checkpoint).
Lines are the mean over seeds, bands the range (minimum to maximum) over seeds; the
dotted line is the learning-time threshold (``evaluation.threshold``), and a dashed
vertical line in a method's color marks the mean over seeds of the first step at which
that method reaches it (``learning_time``), with how many seeds did in the legend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import xarray as xr

from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.analysis import class_label
from conceptspace.figures import plot_accuracy_levels
from conceptspace.io import ConceptspaceError

METHODS = ("naive", "overprompt", "intervention")


def plot_hidden(
    study: xr.Dataset,
    out_pdf: str | os.PathLike,
    levels: Sequence[tuple[float, float]],
    methods: Sequence[str] = METHODS,
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Draw the hidden-capability figure for ``methods`` (naive first); write
    ``out_pdf`` and its PNG."""
    if all(method == "naive" for method in methods):
        raise ConceptspaceError(
            "fig_hidden compares naive prompting with overprompting or latent intervention, "
            "but neither is switched on (evaluation.methods: overprompt.colors and "
            "intervention.alphas are empty); switch one on, or leave this figure out"
        )
    return plot_accuracy_levels(
        study,
        out_pdf,
        levels,
        methods,
        "fig_hidden",
        f"Hidden capability: class {class_label(UNSEEN_CLASS)} (unseen) under naive "
        "prompting, overprompting and latent intervention",
        record=record,
    )
