"""Figure "patching": the final embedding module makes plain prompting work (claim 4).

One panel per chosen signal level (``figures.levels``): accuracy against training step
under naive prompting of each checkpoint as it is, and of each checkpoint with the
embedding module of a donor checkpoint patched in (``patched_final``: the final
checkpoint's; ``patched_step_XXXXXX``: that step's), then prompted naively. Solid: the
unseen class 11; dotted: the mean of the three training classes (patching should not
break them). Lines are the mean over seeds, bands the range (minimum to maximum) over
seeds; the dotted horizontal line is the learning-time threshold, and a dashed vertical
line marks the mean over seeds of each method's first step at that threshold for 11.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import xarray as xr

from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.analysis import class_label
from conceptspace.figures import plot_accuracy_levels, require
from conceptspace.io import ConceptspaceError

FIGURE = "fig_patching"


def patched_methods(study: xr.Dataset) -> list[str]:
    """The study's patched methods (method_kind 'patched'), in dataset order."""
    require(study, ("accuracy",), FIGURE)
    if "method_kind" not in study.coords:
        return [str(m) for m in study["method"].values if str(m).startswith("patched")]
    kinds = study["method_kind"].values
    return [str(m) for m, kind in zip(study["method"].values, kinds) if kind == "patched"]


def plot_patching(
    study: xr.Dataset,
    out_pdf: str | os.PathLike,
    levels: Sequence[tuple[float, float]],
    record: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Draw naive prompting against every patched method of the study; write ``out_pdf``
    and its PNG. ConceptspaceError if the study holds no patched method."""
    patched = patched_methods(study)
    if not patched:
        raise ConceptspaceError(
            f"{FIGURE} needs a patched method (patched_final or patched_step_XXXXXX), but the "
            f"study dataset holds only {', '.join(map(str, study['method'].values))}; switch "
            "embedding patching on in the evaluation section of the config and rerun "
            "`snakemake`, or leave this figure out"
        )
    return plot_accuracy_levels(
        study,
        out_pdf,
        levels,
        ["naive", *patched],
        FIGURE,
        f"Embedding patching: class {class_label(UNSEEN_CLASS)} (unseen) prompted naively, "
        "with and without a later checkpoint's embedding module",
        training_classes=True,
        record=record,
    )
