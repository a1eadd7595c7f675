"""Gathering evaluations into trajectories in concept space, and learning times.

Two steps, each reading and writing the files of ``conceptspace.netcdf``:

- :func:`gather_run`: one run's evaluations (one per checkpoint) stacked over ``step``,
  with the sample summaries of ``netcdf.SUMMARIES`` (:func:`summarise_samples`);
- :func:`gather_study`: all runs on the outer grid seed x color gap x size gap (or the
  study's own grid, e.g. seed x mask_ratio for underspecification), the summaries
  without the sample dimension, plus the learning times of the unseen class for every
  method.

Scoring (why a sample must be valid). The probe answers for any image, and for an
image with no object it answers with confidence: a blank background reads as "blue
small", the unseen class of the 2x2. So ``accuracy``, the default score, is the mean
over samples of valid x P(concept 1 = target) x P(concept 2 = target) (x the third
concept's where there is one): the probability that a sample *is* the target. The
paper's product of the means over samples (``product_of_means``) scores a set that is
half blue-large and half red-small at 0.25, though no sample is blue small, and a set
of blanks at 1; it is kept for comparison, with ``hard_accuracy`` (argmax per concept),
``concept_accuracy`` (one concept at a time) and ``valid_fraction``. The concept-space
coordinate ``concept_prob`` is the mean over the *valid* samples (NaN when none is).

Layouts (``concepts.Layout``): prompts are the run's layout's classes (its name is the
``layout`` attribute, absent = the 2x2). A run is identified by its ``RUN_FIELDS``
(seed, color and size gap, and mask_ratio / background_gap where its study has them).
With one unseen class (2x2, color_shape) the learning times have dims (grid..., method);
with several (color_size_background) an extra dim ``unseen`` names the class.

Methods (``conceptspace.methods``): the ``method`` dimension holds the evaluated variants
(naive, overprompt_i, intervention_i, patched_*) with non-dimension coordinates
``method_kind`` and ``method_setting``. :func:`gather_run` appends one best-of method per
kind with several variants (``overprompt``, ``intervention``; setting "best of k"): at
each step and prompt, every summary of the variant with the highest accuracy there
(the paper scores overprompting and intervention by their best prompt / alpha, Sec. 4).
The choice is made per step, so a best-of trajectory is an upper envelope of its
variants, and its learning time is the earliest of theirs; its p_target is NaN.

Learning time (Sec. 3, Fig. 3):

- :func:`learning_time` [paper, the default]: the first checkpoint at which the unseen
  class's accuracy, Gaussian-smoothed over checkpoints with ``evaluation.sigma``
  (checkpoint indices; 0 = as measured), reaches ``evaluation.threshold`` (0.8); NaN if
  it never does. The paper reads T off its plotted accuracies, which are smoothed;
  smoothing also keeps one checkpoint's sampling noise (32 samples: a standard error up
  to 0.09) from faking a crossing. ``learning_time`` is the joint time (the class);
  ``learning_time_concept`` the time of each concept, the one the paper's learning-speed
  figure reads (color against the color gap, size against the size gap): at a large
  color gap the joint time is bounded by the size's. Both are read on accuracies *among
  the valid samples* (:func:`accuracy_among_valid`, :func:`concept_accuracy_among_valid`):
  whether the model draws the target class or concept when it draws an object at all.
  The paper's probe reads every generation and has no verdict; scoring an invalid
  sample 0 (as ``accuracy`` and ``concept_accuracy`` do) would time when the model draws
  single whole objects, a separate competence, as well as the concept, and caps the
  accuracy at the valid fraction (0.5-0.97 at the cpu preset's last checkpoints), below
  the threshold in many runs. A checkpoint where fewer than
  ``evaluation.min_valid_fraction`` of the samples are valid scores 0 there, so that two
  lucky objects out of 32 do not time a concept. ``learning_time_all_samples`` keeps the
  joint time on all samples, for comparison.
- :func:`learning_time_authors` [the authors' analysis code, a variant]: per concept, the
  hard accuracy over all samples, smoothed in reflect mode (``evaluation.authors.sigma``
  1.5), strictly above 0.9 at three checkpoints in a row, T the middle one; a run that
  never gets there counts as its last step.

The speed of learning is 1 / learning time, in 1/optimizer steps.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from conceptspace.concepts import Layout, layout_attrs, layout_from_attrs
from conceptspace.io import ConceptspaceError, json_default, provenance
from conceptspace.methods import BEST_OF_KINDS
from conceptspace.netcdf import (
    FRAME_OFF,
    METHOD_COORDS,
    P_TARGET_ATTRS,
    STEP_UNITS,
    SPEED_UNITS,
    SUMMARIES,
    VALID_ATTRS,
    VALID_FRAME_OFF,
    VALID_FRAME_OFF_ATTRS,
    frame_off_attrs,
    method_coords,
    netcdf_attrs,
    open_evaluation,
    open_trajectory,
    set_coord_attrs,
)

# The command line reads the writer and the study reader from here too.
from conceptspace.netcdf import open_study, save_dataset_nc  # noqa: F401
from conceptspace.runs import GAP_DECIMALS, RUN_FIELDS, SIGNAL_GRID

log = logging.getLogger(__name__)

# The Gaussian kernel is cut at this many sigmas on each side.
KERNEL_TRUNCATE = 4.0


# ----------------------------------------------------------------------------- learning times


def _first_step(reached: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Along the last axis: the step of the first True, NaN where there is none."""
    steps = np.asarray(steps, dtype=float)
    if reached.shape[-1] == 0:
        return np.full(reached.shape[:-1], np.nan)
    first = np.argmax(reached, axis=-1)
    return np.where(reached.any(axis=-1), steps[first], np.nan)


def _check_step_dim(array: xr.DataArray, name: str) -> None:
    if "step" not in array.dims:
        raise ValueError(f"{name} needs a 'step' dimension; it has {array.dims}")


def smooth_accuracy(accuracy_over_step: xr.DataArray, sigma: float) -> xr.DataArray:
    """``accuracy_over_step`` Gaussian-smoothed along dim 'step' (sigma in checkpoint
    indices; :func:`smooth_over_steps`), dims and coordinates kept; sigma 0: unchanged."""
    _check_step_dim(accuracy_over_step, "smooth_accuracy")
    smoothed = xr.apply_ufunc(
        smooth_over_steps,
        accuracy_over_step,
        kwargs={"sigma": float(sigma)},
        input_core_dims=[["step"]],
        output_core_dims=[["step"]],
        keep_attrs=True,
    )
    return smoothed.transpose(*accuracy_over_step.dims)


def learning_time(
    accuracy_over_step: xr.DataArray, threshold: float, sigma: float = 0.0
) -> xr.DataArray:
    """The first step at which ``accuracy_over_step``, Gaussian-smoothed over checkpoints
    with ``sigma`` (checkpoint indices; 0: as it is), is >= ``threshold``; NaN if never.

    Works along dim 'step' (its coordinate gives the steps), over any other dims. A
    missing value (NaN) never counts as reaching the threshold.
    """
    _check_step_dim(accuracy_over_step, "learning_time")
    steps = accuracy_over_step["step"].values

    def first_crossing(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return _first_step(smooth_over_steps(values, sigma) >= threshold, steps)

    result = xr.apply_ufunc(
        first_crossing, accuracy_over_step, input_core_dims=[["step"]], keep_attrs=False
    )
    smoothing = f" (Gaussian-smoothed, sigma {sigma:g} checkpoints)" if sigma else ""
    result.attrs = {
        "units": STEP_UNITS,
        "long_name": f"first step with accuracy{smoothing} >= {threshold}",
        "threshold": float(threshold),
        "sigma_checkpoints": float(sigma),
    }
    return result


def smooth_over_steps(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the last axis, sigma in samples (checkpoint indices).

    The kernel is cut at 4 sigma and renormalised over the points that exist, so the
    ends of a trajectory and missing (NaN) points do not pull values toward zero; a
    point with no finite neighbour within the kernel stays NaN. sigma 0: unchanged.
    """
    values = np.asarray(values, dtype=float)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    if sigma == 0 or values.shape[-1] == 0:
        return values.copy()
    radius = int(np.ceil(KERNEL_TRUNCATE * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    n = values.shape[-1]
    weighted = np.zeros_like(filled)
    weights = np.zeros_like(filled)
    for offset, weight in zip(offsets, kernel):
        # out[i] += weight * x[i + offset] where 0 <= i + offset < n
        lo, hi = max(0, -offset), min(n, n - offset)
        if lo >= hi:
            continue
        weighted[..., lo:hi] += weight * filled[..., lo + offset : hi + offset]
        weights[..., lo:hi] += weight * finite[..., lo + offset : hi + offset]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, weighted / weights, np.nan)


def smooth_reflect(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the last axis as the authors' analysis smooths (SciPy's
    ``gaussian_filter1d`` in its default "reflect" mode: the trajectory mirrored about
    each end, kernel cut at 4 sigma). NaN spreads to its neighbours. sigma 0: unchanged."""
    values = np.asarray(values, dtype=float)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    n = values.shape[-1]
    if sigma == 0 or n == 0:
        return values.copy()
    radius = int(KERNEL_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    # "reflect" (d c b a | a b c d | d c b a): indices folded back into 0..n-1
    period = 2 * n
    out = np.zeros_like(values)
    for offset, weight in zip(offsets, kernel):
        index = np.mod(np.arange(n) + offset, period)
        index = np.where(index >= n, period - 1 - index, index)
        out += weight * values[..., index]
    return out


def learning_time_authors(
    hard_accuracy_over_step: xr.DataArray, threshold: float, sigma: float, consecutive: int
) -> xr.DataArray:
    """The learning time as the authors' analysis code computes it, per concept: the hard
    (argmax) accuracy of each concept, Gaussian-smoothed over checkpoints in reflect mode
    (:func:`smooth_reflect`, ``sigma`` in checkpoint indices), must be strictly above
    ``threshold`` at ``consecutive`` checkpoints in a row; T is the middle one of the
    first such window. A run that never gets there has T = its last checkpoint's step
    (the authors count it so; compare ``learning_time``, where it is NaN).

    Works along dim 'step' over any other dims. A missing value (a method that does not
    prompt a class) stays NaN.
    """
    _check_step_dim(hard_accuracy_over_step, "learning_time_authors")
    consecutive = int(consecutive)
    if consecutive < 1:
        raise ValueError(f"consecutive must be >= 1; got {consecutive}")
    steps = np.asarray(hard_accuracy_over_step["step"].values, dtype=float)

    def middle_of_first_window(values: np.ndarray) -> np.ndarray:
        missing = ~np.isfinite(values).any(axis=-1)
        with np.errstate(invalid="ignore"):
            above = smooth_reflect(values, sigma) > threshold
        if above.shape[-1] < consecutive:
            times = np.full(above.shape[:-1], steps[-1] if len(steps) else np.nan)
        else:
            windows = np.lib.stride_tricks.sliding_window_view(above, consecutive, axis=-1)
            middle = steps[consecutive // 2 :][: windows.shape[-2]]
            times = _first_step(windows.all(axis=-1), middle)
            times = np.where(np.isfinite(times), times, steps[-1])
        return np.where(missing, np.nan, times)

    result = xr.apply_ufunc(
        middle_of_first_window,
        hard_accuracy_over_step,
        input_core_dims=[["step"]],
        keep_attrs=False,
    )
    result.attrs = {
        "units": STEP_UNITS,
        "long_name": (
            f"authors' learning time: middle of the first {consecutive} checkpoints in a row "
            f"where the hard accuracy, Gaussian-smoothed (sigma {sigma:g} checkpoints, reflect "
            f"mode), is > {threshold}; never: the last checkpoint's step"
        ),
        "threshold": float(threshold),
        "sigma_checkpoints": float(sigma),
        "consecutive": consecutive,
    }
    return result


# ----------------------------------------------------------------------------- one run


def _run_key(attrs: Mapping[str, Any]) -> dict[str, float]:
    """The run an evaluation belongs to: its RUN_FIELDS present in ``attrs``, rounded."""
    return {
        name: int(attrs[name]) if name == "seed" else round(float(attrs[name]), GAP_DECIMALS)
        for name in RUN_FIELDS
        if name in attrs
    }


def _describe_run(run: Mapping[str, float]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in run.items())


def gather_run(eval_paths: Sequence[str | os.PathLike]) -> xr.Dataset:
    """One run's evaluations stacked over 'step' (sorted), with its concept-space path.

    Variables: ``p_target`` (step, method, prompt, concept, sample), ``valid`` (step,
    method, prompt, sample) and the ``netcdf.SUMMARIES`` over samples
    (:func:`summarise_samples`): ``accuracy`` (step, method, prompt) and the others, with
    ``concept_prob`` (step, method, prompt, concept) the concept-space point of each
    method and prompt. Where every evaluation records the verdict with the frame rule off,
    ``valid_frame_off`` and each summary's twin from it, ``<summary>_frame_off``. NaN
    where a method does not prompt a class. The method dim ends with the best-of methods
    (see the module docstring). Scalar coords seed, color_gap, size_gap. All files must
    come from one run (same seed and gaps), hold distinct steps, and share methods,
    prompts, concepts and samples; otherwise ConceptspaceError.
    """
    if not eval_paths:
        raise ConceptspaceError("gather_run needs at least one evaluation file")
    evaluations = [(Path(path), open_evaluation(path)) for path in eval_paths]
    first_path, first = evaluations[0]
    run = _run_key(first.attrs)
    seen_steps: dict[int, Path] = {}
    for path, ds in evaluations:
        attrs = ds.attrs
        if _run_key(attrs) != run:
            raise ConceptspaceError(
                f"{path} belongs to another run ({_describe_run(_run_key(attrs))}) than "
                f"{first_path} ({_describe_run(run)}); gather one run's evaluations at a time"
            )
        step = int(attrs["step"])
        if step in seen_steps:
            raise ConceptspaceError(
                f"{path} and {seen_steps[step]} both evaluate step {step}; pass each "
                "checkpoint's evaluation once"
            )
        seen_steps[step] = path
        for coord in ("method", "method_setting", "prompt", "concept", "sample"):
            if not np.array_equal(ds[coord].values, first[coord].values):
                raise ConceptspaceError(
                    f"{path} has {coord}s {list(ds[coord].values)}, {first_path} has "
                    f"{list(first[coord].values)}; evaluate all checkpoints with the same "
                    "settings (delete the stale files and rerun `snakemake`)"
                )

    steps = [int(ds.attrs["step"]) for _, ds in evaluations]

    def stacked(name: str) -> xr.DataArray:
        return xr.concat(
            [ds[name].astype(float) for _, ds in evaluations],
            dim=xr.DataArray(steps, dims="step"),
            coords="minimal",
            join="exact",
        ).sortby("step")

    p_target, valid = stacked("p_target"), stacked("valid")
    summaries = with_best_of(summarise_samples(p_target, valid))
    samples = [("p_target", p_target, P_TARGET_ATTRS), ("valid", valid, VALID_ATTRS)]
    # Evaluations made before the verdict with the frame rule off was recorded lack it;
    # then so does the run (and its study's claims say "not recorded").
    if all(VALID_FRAME_OFF in ds for _, ds in evaluations):
        valid_frame_off = stacked(VALID_FRAME_OFF)
        samples.append((VALID_FRAME_OFF, valid_frame_off, VALID_FRAME_OFF_ATTRS))
        for name, array in with_best_of(summarise_samples(p_target, valid_frame_off)).items():
            summaries[name + FRAME_OFF] = array.assign_attrs(frame_off_attrs(array.attrs))
    # best-of rows of p_target and the verdicts: NaN (no single set of samples)
    per_sample = {}
    for name, array, attrs in samples:
        array = (
            array.drop_vars(METHOD_COORDS[1:])
            .reindex({"method": summaries["accuracy"]["method"].values})
            .assign_coords({c: summaries["accuracy"][c] for c in METHOD_COORDS})
        )
        array.attrs = dict(attrs)
        per_sample[name] = array

    ds = xr.Dataset(
        {**per_sample, **summaries},
        coords={name: int(v) if name == "seed" else float(v) for name, v in run.items()},
    )
    set_coord_attrs(ds)
    ordered_paths = [str(path) for _, path in sorted(seen_steps.items())]
    record = provenance({"evaluations": ordered_paths}, int(run["seed"]))
    ds.attrs = {
        "description": (
            "One training run in concept space: for each checkpoint (step), prompting "
            "method and prompted class, the probe's probability that each sample shows the "
            "prompt's target value of each concept, whether the sample holds one object "
            "(valid), and their summaries over samples: accuracy (mean of valid x the "
            "product over concepts), each concept's accuracy, the hard accuracy, the valid "
            "fraction, the paper's product of means, and the concept-space point (mean over "
            "valid samples). Best-of methods (kind "
            "overprompt / intervention, setting 'best of k') take, at each step and prompt, "
            "the variant with the highest accuracy: an upper envelope; their p_target is NaN."
        ),
        **_carried_attrs(first.attrs),
        "evaluations": json.dumps(ordered_paths),
        **netcdf_attrs(record),
    }
    log.info(
        "gathered run %s: %d checkpoints (steps %d..%d)",
        _describe_run(run),
        len(steps),
        min(steps),
        max(steps),
    )
    return ds


def summarise_samples(p_target: xr.DataArray, valid: xr.DataArray) -> dict[str, xr.DataArray]:
    """The ``netcdf.SUMMARIES`` of ``p_target`` (..., concept, sample) and ``valid`` (...,
    sample; 1 valid, 0 not, NaN not applied), each a mean over 'sample'. A sample that
    holds no object (valid 0) scores 0 in every accuracy but the authors' hard concept
    accuracy and the paper's product of means, which score whatever the probe says;
    NaN where a method does not prompt a class."""
    applied = p_target.notnull().all("concept")
    ok = valid.where(applied)
    hit = (p_target > 0.5).where(p_target.notnull())  # binary concepts: argmax = target

    def mean(array: xr.DataArray) -> xr.DataArray:
        return array.mean("sample", skipna=False)

    summaries = {
        "accuracy": mean(ok * p_target.prod("concept", skipna=False)),
        "concept_accuracy": mean(ok * p_target),
        "hard_accuracy": mean(ok * hit.prod("concept", skipna=False)),
        "hard_concept_accuracy": mean(hit),
        "valid_fraction": mean(ok),
        "product_of_means": mean(p_target).prod("concept", skipna=False),
        "concept_prob": p_target.where(ok == 1).mean("sample", skipna=True),
    }
    for name, array in summaries.items():
        array.attrs = dict(SUMMARIES[name][1])
    return summaries


def with_best_of(summaries: Mapping[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Append a best-of method for each kind of ``methods.BEST_OF_KINDS`` present: at each
    (step, prompt) the variant with the highest ``accuracy`` (NaN where none is applied),
    every summary taken from that variant."""
    accuracy = summaries["accuracy"]
    kinds = accuracy["method_kind"].values
    best: dict[str, list[xr.DataArray]] = {name: [] for name in summaries}
    names, settings = [], []
    for kind in BEST_OF_KINDS:
        variants = [str(m) for m, k in zip(accuracy["method"].values, kinds) if k == kind]
        if not variants:
            continue
        variant_accuracy = accuracy.sel({"method": variants})
        applied = variant_accuracy.notnull().any("method")
        choice = variant_accuracy.fillna(-np.inf).argmax("method")
        for name, array in summaries.items():
            best[name].append(
                array.sel({"method": variants})
                .isel(method=choice)
                .where(applied)
                .drop_vars(METHOD_COORDS, errors="ignore")
            )
        names.append(kind)
        settings.append(f"best of {len(variants)}")
    if not names:
        return dict(summaries)
    coords = method_coords(names, names, settings)
    result = {}
    for name, array in summaries.items():
        rows = xr.concat(best[name], dim="method").assign_coords(coords)
        result[name] = xr.concat([array, rows], dim="method")
        result[name].attrs = dict(array.attrs)
    return result


# Evaluation attributes that hold for the whole run (the per-checkpoint ones, step and
# checkpoint path, become the step coordinate and the 'evaluations' list).
_RUN_LEVEL_ATTRS = (
    "evaluation_cfg",
    "methods_cfg",
    "min_accuracy",
    "probe",
    "sampling",
    "layout",
    "layout_record",
)


def _carried_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in attrs.items()
        if key in _RUN_LEVEL_ATTRS or key.startswith("probe_accuracy_")
    }


# ----------------------------------------------------------------------------- the study


def gather_study(
    run_paths: Sequence[str | os.PathLike],
    config: Mapping[str, Any],
    evaluation_cfg: Mapping[str, Any],
    grid: Sequence[str] = SIGNAL_GRID,
) -> xr.Dataset:
    """All runs on the outer grid (``grid``: seed, color_gap, size_gap for the signal
    study; e.g. seed, mask_ratio for underspecification), then step, method, prompt,
    concept.

    Keeps the run's ``netcdf.SUMMARIES`` (no sample dim), and their frame-off twins where
    every run has them (:func:`frame_off_study` swaps them in); NaN where a grid point was
    not run or a method does not prompt a class. Adds the unseen class's learning times
    for every method: ``learning_time`` (grid..., method), the first step with the class
    accuracy among the valid samples (``accuracy_among_valid``, kept for every class;
    smoothed over checkpoints with ``evaluation_cfg['sigma']``) >=
    ``evaluation_cfg['threshold']``; ``learning_time_all_samples``, the same on
    ``accuracy``; ``learning_time_concept`` (..., method, concept), the same on each
    concept's accuracy among the valid samples (:func:`concept_accuracy_among_valid`); ``learning_time_authors`` (..., method,
    concept), the authors' variant (``evaluation_cfg['authors']``); and
    ``learning_speed`` = 1 / learning_time. A layout with several unseen classes adds a
    dim ``unseen`` after method. Run coordinates not on the grid must be the same for
    every run and stay scalar coordinates. Runs must share steps, methods, prompts and
    concepts, and each grid point may appear once; otherwise ConceptspaceError.
    """
    if not run_paths:
        raise ConceptspaceError("gather_study needs at least one run trajectory")
    grid = tuple(grid)
    runs = [(Path(path), open_trajectory(path)) for path in run_paths]
    _check_same_axes(runs)
    first = runs[0][1]
    layout = layout_from_attrs(first.attrs)
    _check_unseen_prompted(layout, first)

    placement = _GridPlacement.of(runs, grid)
    study = placement.stack(runs)
    for name, times in _learning_times(study, layout, evaluation_cfg, grid).items():
        study[name] = times
    set_coord_attrs(study)
    study.attrs = _study_attrs(placement, layout, config, evaluation_cfg)
    _log_study(study, placement, layout, evaluation_cfg)
    return study


def truncated_study(study: xr.Dataset, last_step: int) -> xr.Dataset:
    """``study`` as if training had stopped at ``last_step``: its checkpoints up to that
    step, with every learning time computed again from them (the gathered settings,
    attribute ``evaluation_cfg``). A shorter run of the same seed is this truncation:
    training's learning rate is constant and nothing before a step depends on the total
    number of steps. It equals the study gathered from the runs' trajectories cut at that
    step; a run trained for fewer steps would only place its checkpoints differently (the
    schedule spaces them up to its own last step)."""
    steps = study["step"].values
    kept = study.isel(step=np.flatnonzero(steps <= last_step))
    if kept.sizes["step"] == 0:
        raise ConceptspaceError(
            f"no checkpoint at or before step {last_step} (the first is {int(steps[0])}); "
            "choose a budget of at least the first checkpoint's step"
        )
    kept.attrs = {**study.attrs, "truncated_at_step": int(last_step)}
    return _with_learning_times(kept)


def frame_off_study(study: xr.Dataset) -> xr.Dataset | None:
    """``study`` as if the validity verdict had no frame rule: each summary replaced by
    its twin ``<summary>_frame_off``, and every learning time computed again from them (the
    gathered settings); None when it has no twins (gathered before evaluation recorded the
    verdict with the rule off)."""
    twins = {name: name + FRAME_OFF for name in SUMMARIES}
    if not all(twin in study for twin in twins.values()):
        return None
    off = study.drop_vars(list(twins.values()))
    for name, twin in twins.items():
        off[name] = study[twin].assign_attrs(study[name].attrs)
    off.attrs = {**study.attrs, "frame_rule": "off"}
    return _with_learning_times(off)


def _with_learning_times(study: xr.Dataset) -> xr.Dataset:
    """``study`` (changed in place) with every learning time computed again from its
    summaries, with the settings it was gathered with (attribute ``evaluation_cfg``)."""
    grid = tuple(dim for dim in study["learning_time"].dims if dim not in ("method", "unseen"))
    layout = layout_from_attrs(study.attrs)
    evaluation_cfg = json.loads(study.attrs["evaluation_cfg"])
    for name, times in _learning_times(study, layout, evaluation_cfg, grid).items():
        study[name] = times
    return study


def _check_same_axes(runs: Sequence[tuple[Path, xr.Dataset]]) -> None:
    first_path, first = runs[0]
    for path, ds in runs[1:]:
        for coord in ("step", "method", "method_setting", "prompt", "concept"):
            if not np.array_equal(ds[coord].values, first[coord].values):
                raise ConceptspaceError(
                    f"{path} has {coord}s {list(ds[coord].values)} but {first_path} has "
                    f"{list(first[coord].values)}; all runs of a study must be evaluated at "
                    "the same checkpoints with the same methods and prompts (same "
                    "training.checkpoints and evaluation settings): delete the stale "
                    "trajectories and rerun `snakemake`"
                )


def _check_unseen_prompted(layout: Layout, run: xr.Dataset) -> None:
    missing = [c for c in layout.unseen_classes if c not in run["prompt"].values]
    if missing:
        raise ConceptspaceError(
            f"the trajectories hold no prompt {', '.join(map(repr, missing))} (the unseen "
            "class); learning times cannot be computed"
        )


@dataclass
class _GridPlacement:
    """Where each run sits on the study's grid: ``placed`` maps a grid point (values in
    ``grid`` order) to its run's path; ``axes`` are each grid dim's sorted values;
    ``fixed`` the run coordinates off the grid, the same for every run."""

    grid: tuple[str, ...]
    placed: dict[tuple, Path]
    axes: list[list[float]]
    fixed: dict[str, float]

    @classmethod
    def of(cls, runs: Sequence[tuple[Path, xr.Dataset]], grid: tuple[str, ...]) -> _GridPlacement:
        first_path, first = runs[0]
        placed: dict[tuple, Path] = {}
        fixed = {k: v for k, v in _grid_run(first_path, first, grid).items() if k not in grid}
        for path, ds in runs:
            run = _grid_run(path, ds, grid)
            key = tuple(run[name] for name in grid)
            others = {k: v for k, v in run.items() if k not in grid}
            if others != fixed:
                raise ConceptspaceError(
                    f"{path} ({_describe_run(others)}) and {first_path} "
                    f"({_describe_run(fixed)}) differ outside the study's grid "
                    f"({', '.join(grid)}); gather one study at a time"
                )
            if key in placed:
                raise ConceptspaceError(
                    f"{path} and {placed[key]} are the same run ({_describe_run(run)}); pass "
                    "each run's trajectory once"
                )
            placed[key] = path
        axes = [sorted({key[i] for key in placed}) for i in range(len(grid))]
        return cls(grid, placed, axes, fixed)

    def stack(self, runs: Sequence[tuple[Path, xr.Dataset]]) -> xr.Dataset:
        """The runs' summaries on the grid (NaN where a grid point was not run), with
        their frame-off twins where every run has them (``gather_run``)."""
        first, by_path = runs[0][1], dict(runs)
        shape = tuple(len(axis) for axis in self.axes)
        summaries = dict(SUMMARIES)
        if all("accuracy" + FRAME_OFF in ds for _, ds in runs):
            for name, (per_concept, attrs) in SUMMARIES.items():
                summaries[name + FRAME_OFF] = (per_concept, frame_off_attrs(attrs))
        variables = {}
        for name, (per_concept, attrs) in summaries.items():
            dims = ("step", "method", "prompt") + (("concept",) if per_concept else ())
            values = np.full(shape + first[name].transpose(*dims).shape, np.nan)
            for key, path in self.placed.items():
                index = tuple(axis.index(value) for axis, value in zip(self.axes, key))
                values[index] = by_path[path][name].transpose(*dims).values
            variables[name] = (self.grid + dims, values, dict(attrs))
        return xr.Dataset(
            variables,
            coords={
                **{
                    name: np.array(axis, dtype=np.int64 if name == "seed" else float)
                    for name, axis in zip(self.grid, self.axes)
                },
                **self.fixed,
                "step": first["step"].values,
                **{name: first[name].variable for name in METHOD_COORDS},
                "prompt": first["prompt"].values,
                "concept": first["concept"].values,
            },
        )

    def run_paths(self) -> list[str]:
        """The runs' paths in grid order."""
        return [str(self.placed[k]) for k in sorted(self.placed)]


def _grid_run(path: Path, ds: xr.Dataset, grid: tuple[str, ...]) -> dict[str, float]:
    """The run a trajectory belongs to (``_run_key``), which must have every grid dim."""
    present = {name: ds[name].item() for name in RUN_FIELDS if name in ds.coords}
    lacking = [name for name in grid if name not in present]
    if lacking:
        raise ConceptspaceError(
            f"{path} has no {', '.join(lacking)} coordinate, which the study's grid "
            f"({', '.join(grid)}) needs; it belongs to another study: rerun `snakemake`"
        )
    return _run_key(present)


def _learning_times(
    study: xr.Dataset, layout: Layout, evaluation_cfg: Mapping[str, Any], grid: tuple[str, ...]
) -> dict[str, xr.DataArray]:
    """The unseen class's learning times for every method, and the speed: joint (among
    the valid samples, and on all of them), per concept, the authors' variant (see the
    module docstring); with the accuracy the joint time is read on, every class's."""
    unseen_classes = list(layout.unseen_classes)
    threshold = float(evaluation_cfg["threshold"])
    sigma = float(evaluation_cfg["sigma"])
    if "min_valid_fraction" not in evaluation_cfg:
        raise ConceptspaceError(
            "the study was gathered by an older version (its evaluation settings lack "
            "min_valid_fraction, which the learning times need): delete its study.nc "
            "and rerun `snakemake` (rule gather_study)"
        )
    min_valid = float(evaluation_cfg["min_valid_fraction"])
    timed_accuracy = accuracy_among_valid(study, min_valid).transpose(*study["accuracy"].dims)
    timed_accuracy.attrs = {
        "units": "1",
        "long_name": "class accuracy among the valid samples (mean over them of the product "
        f"over concepts of the probability of the target value; 0 where fewer than "
        f"{min_valid:g} of the samples are valid): what learning_time is read on",
        "min_valid_fraction": min_valid,
    }
    # the unseen classes' summaries, the accuracy among the valid samples with them
    scored = study.assign(accuracy_among_valid=timed_accuracy)
    if len(unseen_classes) == 1:
        unseen = scored.sel(prompt=unseen_classes[0])
        extra: tuple[str, ...] = ()
    else:
        unseen = scored.sel(prompt=unseen_classes).rename(prompt="unseen")
        extra = ("unseen",)
    named = "/".join(unseen_classes)
    smoothing = f", Gaussian-smoothed over checkpoints (sigma {sigma:g}), is" if sigma else ""
    floor = f"(0 where fewer than {min_valid:g} of them are valid)"

    def timed_on(accuracy: xr.DataArray, reads: str) -> xr.DataArray:
        times = learning_time(accuracy, threshold, sigma)
        times.attrs["long_name"] = (
            f"{reads}{smoothing} >= {threshold} (NaN: never reached, or not run)"
        )
        times.attrs["min_valid_fraction"] = min_valid
        return times

    times = timed_on(
        unseen["accuracy_among_valid"],
        f"learning time: first step at which the unseen class {named}'s accuracy among its "
        f"valid samples {floor}",
    )
    all_samples_times = timed_on(
        unseen["accuracy"],
        f"learning time on all samples: first step at which the unseen class {named}'s "
        "accuracy (an invalid sample scoring 0)",
    )
    concept_times = timed_on(
        concept_accuracy_among_valid(unseen, min_valid),
        f"learning time of each concept: first step at which the unseen class {named}'s "
        f"accuracy on that concept among its valid samples {floor}",
    )
    authors_cfg = evaluation_cfg["authors"]
    authors_times = learning_time_authors(
        unseen["hard_concept_accuracy"],
        float(authors_cfg["threshold"]),
        float(authors_cfg["sigma"]),
        int(authors_cfg["consecutive"]),
    )
    authors_times.attrs["long_name"] = (
        f"unseen class {named}, each concept: " + authors_times.attrs["long_name"]
    )
    speed = 1.0 / times
    speed.attrs = {
        "units": SPEED_UNITS,
        "long_name": f"speed of learning the unseen class {named}: 1 / learning_time",
        "threshold": threshold,
    }
    return {
        "accuracy_among_valid": timed_accuracy,
        "learning_time": times.transpose(*grid, "method", *extra),
        "learning_time_all_samples": all_samples_times.transpose(*grid, "method", *extra),
        "learning_time_concept": concept_times.transpose(*grid, "method", *extra, "concept"),
        "learning_time_authors": authors_times.transpose(*grid, "method", *extra, "concept"),
        "learning_speed": speed.transpose(*grid, "method", *extra),
    }


def _among_valid(
    mean_over_valid: xr.DataArray, valid_fraction: xr.DataArray, min_valid_fraction: float
) -> xr.DataArray:
    """``mean_over_valid`` where at least ``min_valid_fraction`` of the samples are valid, 0
    where fewer are (no object drawn is no concept shown), NaN where nothing was sampled
    (not run, or a method that does not prompt the class)."""
    enough = valid_fraction >= min_valid_fraction
    return xr.where(enough, mean_over_valid, 0.0).where(valid_fraction.notnull())


def concept_accuracy_among_valid(
    summaries: xr.Dataset | Mapping[str, xr.DataArray], min_valid_fraction: float
) -> xr.DataArray:
    """Each concept's accuracy over the valid samples (``concept_prob``), floored as
    :func:`_among_valid`: what ``learning_time_concept`` is read on."""
    valid_fraction = summaries["valid_fraction"]
    return _among_valid(summaries["concept_prob"], valid_fraction, min_valid_fraction)


def accuracy_among_valid(
    summaries: xr.Dataset | Mapping[str, xr.DataArray], min_valid_fraction: float
) -> xr.DataArray:
    """The class accuracy over the valid samples, floored as :func:`_among_valid`: what
    ``learning_time`` is read on. ``accuracy`` scores an invalid sample 0 and averages over
    all samples, so its mean over the valid ones is accuracy / valid_fraction."""
    valid_fraction = summaries["valid_fraction"]
    over_valid = summaries["accuracy"] / valid_fraction.where(valid_fraction > 0)
    return _among_valid(over_valid, valid_fraction, min_valid_fraction)


def concept_point(study: xr.Dataset) -> xr.DataArray:
    """Where the generations lie in concept space: ``concept_prob`` (the mean over the valid
    samples) where at least the study's ``min_valid_fraction`` of the samples are valid,
    NaN where fewer are. The floor is the concept learning time's: a point read from one
    or two objects out of 32 is no position (claim 2's path, the concept-space figures)."""
    if "accuracy_among_valid" not in study:
        raise ConceptspaceError(
            "the study was gathered by an older version (it lacks accuracy_among_valid and "
            "its valid floor): delete its study.nc and rerun `snakemake` (rule gather_study)"
        )
    min_valid = float(study["accuracy_among_valid"].attrs["min_valid_fraction"])
    return study["concept_prob"].where(study["valid_fraction"] >= min_valid)


def _study_attrs(
    placement: _GridPlacement,
    layout: Layout,
    config: Mapping[str, Any],
    evaluation_cfg: Mapping[str, Any],
) -> dict[str, Any]:
    run_list = placement.run_paths()
    named = "/".join(layout.unseen_classes)
    return {
        "description": (
            f"Concept-space study: for each run ({' x '.join(placement.grid)}; NaN where "
            "not run), checkpoint, prompting method and prompted class, the summaries over "
            "samples (accuracy = mean of valid x the product over concepts of the target "
            "probabilities; each concept's accuracy; hard accuracy; valid fraction; the "
            "paper's product of means; the concept-space point over valid samples); and per "
            f"method the learning times (joint, per concept, the authors' variant) and speed "
            f"of the unseen class {named}. Best-of methods are upper envelopes over their "
            "variants."
        ),
        **netcdf_attrs(layout_attrs(layout)),
        "config": json.dumps(config, sort_keys=True, default=json_default),
        "evaluation_cfg": json.dumps(evaluation_cfg, sort_keys=True, default=json_default),
        "runs": json.dumps(run_list),
        "n_runs": len(run_list),
        **netcdf_attrs(provenance(dict(config))),
    }


def _log_study(
    study: xr.Dataset,
    placement: _GridPlacement,
    layout: Layout,
    evaluation_cfg: Mapping[str, Any],
) -> None:
    reached = np.isfinite(study["learning_time"].sel({"method": "naive"}).values)
    log.info(
        "study: %d runs (%s grid %s), %d steps; %d of %d (run, unseen class) pairs reached "
        "accuracy %.2f on %s with naive prompting",
        len(placement.placed),
        " x ".join(placement.grid),
        " x ".join(str(len(axis)) for axis in placement.axes),
        study.sizes["step"],
        int(reached.sum()),
        reached.size,
        float(evaluation_cfg["threshold"]),
        "/".join(layout.unseen_classes),
    )
