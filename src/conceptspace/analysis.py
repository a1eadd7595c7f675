"""Reading a study dataset: what the claims and the figures both need, without drawing.

The claims (``conceptspace.claims``) judge and the figures (``conceptspace.figures``)
draw from the same readings of a study (the dataset of ``trajectories.gather_study``):
one signal level and its seeds that were run, the learning-time threshold and
smoothing, the summary over seeds, the concept-space frame shared by all prompts, the
turn from memorization and the convergence of the training classes. They live here so
that judging a claim never imports plotting code; this module imports no matplotlib.

The concept-space frame (docs/study.md): x = P(color = blue), y = P(size = small), so
each class's own images score at its corner of the unit square.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from conceptspace.concepts import COLOR_NAMES, CONCEPTS, SIZE_NAMES, TRAINING_CLASSES, class_digits
from conceptspace.io import ConceptspaceError
from conceptspace.runs import same_gap
from conceptspace.trajectories import learning_time

# Each class's corner in the concept-space frame x = P(color = blue), y = P(size = small).
CORNERS = {"00": (0.0, 0.0), "01": (0.0, 1.0), "10": (1.0, 0.0), "11": (1.0, 1.0)}
# Memorization pulls the unseen class toward 01 or 10, the training classes one concept
# away from it.
PULL_CORNERS = {name: CORNERS[name] for name in ("01", "10")}
# Memorization is seen only where the generations read as the training class more
# likely than not: the product of the probabilities of its color and its size.
MEMORIZATION_MIN = 0.5


def class_label(name: str) -> str:
    """'11 blue small' for class '11'."""
    color, size = class_digits(name)
    return f"{name} {COLOR_NAMES[color]} {SIZE_NAMES[size]}"


def gap_index(study: xr.Dataset, dim: str, value: float) -> int | None:
    """Index of ``value`` on the gap coordinate ``dim`` (``runs.same_gap``); None if it is
    not there."""
    matches = np.flatnonzero(same_gap(study[dim].values, float(value)))
    return int(matches[0]) if len(matches) else None


def select_level(study: xr.Dataset, color_gap: float, size_gap: float) -> xr.Dataset | None:
    """The study at one signal level (dims seed, step, method, prompt[, concept]); None
    if that level is not on the grid or none of its runs has data."""
    indices = {"color_gap": gap_index(study, "color_gap", color_gap)}
    indices["size_gap"] = gap_index(study, "size_gap", size_gap)
    if None in indices.values():
        return None
    level = study.isel(indices)
    ran = level["accuracy"].notnull().any([dim for dim in level["accuracy"].dims if dim != "seed"])
    if not ran.any():
        return None
    return level.isel(seed=np.flatnonzero(ran.values))  # the seeds that were run


def threshold_of(study: xr.Dataset) -> float:
    """The accuracy threshold of the learning times."""
    try:
        return float(study["learning_time"].attrs["threshold"])
    except KeyError:
        raise ConceptspaceError(
            "the study's learning_time carries no 'threshold' attribute; delete "
            "results/signal/study.nc and rerun `snakemake` (rule gather_study)"
        ) from None


def sigma_of(study: xr.Dataset) -> float:
    """The Gaussian smoothing over checkpoints (sigma, in checkpoints) of the accuracies
    behind the learning times; 0 for a study gathered without it."""
    return float(study["learning_time"].attrs.get("sigma_checkpoints", 0.0))


def seed_summary(values: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, minimum and maximum over 'seed' (NaN-skipping; NaN where no seed has data)."""
    finite = values.notnull().any("seed")
    mean = values.mean("seed", skipna=True).where(finite)
    low = values.min("seed", skipna=True).where(finite)
    high = values.max("seed", skipna=True).where(finite)
    return mean.values, low.values, high.values


def blue_small(concept_prob: xr.DataArray) -> xr.DataArray:
    """Concept-space points (prompt, concept, ...) in the frame shared by all prompts:
    P(color = blue) and P(size = small) instead of the prompt's target values.

    The study stores the probability of each prompt's target value; the probe is binary
    per concept, so for a red or large target the blue or small probability is 1 minus
    it."""
    prompts, concepts = concept_prob["prompt"].values, concept_prob["concept"].values
    # Digit 0 of a concept (red, large) is the value whose probability must be flipped.
    flips = xr.DataArray(
        [[class_digits(str(p))[CONCEPTS.index(str(c))] == 0 for c in concepts] for p in prompts],
        dims=("prompt", "concept"),
        coords={"prompt": prompts, "concept": concepts},
    )
    return xr.where(flips, 1.0 - concept_prob, concept_prob).transpose(*concept_prob.dims)


def memorization_turn(path: xr.DataArray) -> tuple[float, str | None]:
    """(step, training class) of the turn from memorization of a concept-space path.

    ``path`` (step, concept) holds the unseen class's coordinates ('color', 'size').
    Memorization pulls the unseen class's generations toward a training class that
    differs from it in one concept (the paper's "Concept Signal Governs Generalization
    Dynamics"; docs/study.md). The class is the one
    of those, 01 at (0, 1) or 10 at (1, 0), whose corner the path comes nearest to; the
    step is that nearest approach (the last on ties), from which the path leaves.
    Memorization counts only if there the generations read as that class more likely
    than not: P(its color) x P(its size) >= MEMORIZATION_MIN. (NaN, None) if it does
    not, or if the path has no finite point.
    """
    x = path.sel(concept="color").values.astype(float)
    y = path.sel(concept="size").values.astype(float)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return np.nan, None
    best: tuple[float, int, str] | None = None  # (distance, index, class)
    for name, (cx, cy) in PULL_CORNERS.items():
        distance = np.where(finite, np.hypot(x - cx, y - cy), np.inf)
        nearest = int(np.flatnonzero(distance == distance.min())[-1])
        if best is None or distance[nearest] < best[0]:
            best = (float(distance[nearest]), nearest, name)
    _, index, name = best
    cx, cy = PULL_CORNERS[name]
    # The probability of the class's own color and size: 1 - the distance along each axis.
    reads_as_class = (1 - abs(x[index] - cx)) * (1 - abs(y[index] - cy))
    if reads_as_class < MEMORIZATION_MIN:
        return np.nan, None
    return float(path["step"].values[index]), name


def convergence_step(accuracy: xr.DataArray, threshold: float, sigma: float = 0.0) -> float:
    """The first step at which every training class's accuracy (Gaussian-smoothed over
    checkpoints with ``sigma``, as the learning times) is >= ``threshold``.

    ``accuracy`` (prompt, step) holds at least the training classes; NaN if never (a
    missing value never counts as reached).
    """
    training = accuracy.sel(prompt=list(TRAINING_CLASSES))
    return float(learning_time(training.min("prompt", skipna=False), threshold, sigma))
