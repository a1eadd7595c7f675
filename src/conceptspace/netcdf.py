"""The pipeline's netCDF files: their variables and attributes, the writer and the readers.

Every xarray dataset the pipeline stores (evaluations, trajectories, studies and the
sample files of the sample sheets) is a netCDF file (engine netcdf4), written atomically
(``io.atomic_path``) by :func:`save_dataset_nc` and read whole into memory by
:func:`open_netcdf`, which turns a missing, truncated or foreign file into an error that
names the file and the fix. The three levels of the scores:

- one evaluation per checkpoint (``evaluate.write_evaluation``, read by
  :func:`open_evaluation`): ``p_target`` (method, prompt, concept, sample), the probe's
  probability that each sample shows the prompt's target value of each concept, and
  ``valid`` (method, prompt, sample), the verdict of ``conceptspace.validity`` on whether
  the sample holds one object at all, and ``valid_frame_off``, the verdict with its frame
  rule off (:data:`FRAME_OFF`); NaN where a method does not prompt the class;
- one trajectory per run (``trajectories.gather_run``, read by
  :func:`open_trajectory`): the evaluations stacked over ``step``, with the sample
  summaries of :data:`SUMMARIES`;
- one study (``trajectories.gather_study``, read by :func:`open_study`): all runs on the
  study's grid, the summaries without the sample dimension, plus the learning times.

Every coordinate carries the units and long name of :data:`COORD_ATTRS` and
:data:`METHOD_ATTRS`; the ``method`` dimension has the non-dimension coordinates
``method_kind`` and ``method_setting`` (:func:`method_coords`). Records (config
sections, provenance) become attributes through :func:`netcdf_attrs`, as JSON where
netCDF cannot hold them. docs/contracts.md lists every file's variables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from conceptspace.concepts import layout_from_attrs
from conceptspace.io import ConceptspaceError, atomic_path, json_default

# What an evaluation computes, versioned: raise it with any change to what an evaluation
# file holds or how its numbers are made. It is part of every kept evaluation's inputs
# (evaluate.RunEvaluation.inputs_hash), so evaluations kept from an earlier job are made
# again, and a param of rule evaluate_pack, so Snakemake plans the job again.
EVALUATION_VERSION = 3  # 2: every sample gets a validity verdict; 3: also with the frame rule off

STEP_UNITS = "optimizer steps"
SPEED_UNITS = "1/optimizer steps"

COORD_ATTRS = {
    "step": {"units": STEP_UNITS, "long_name": "training step of the checkpoint"},
    "prompt": {
        "units": "1",
        "long_name": "prompted class (digits: color 0 red / 1 blue, size 0 large / 1 small)",
    },
    "concept": {"units": "1", "long_name": "concept scored by the probe"},
    "sample": {"units": "1", "long_name": "sample index within a prompt"},
    "seed": {"units": "1", "long_name": "training seed of the run"},
    "color_gap": {"units": "RGB units", "long_name": "color gap dc between red and blue means"},
    "size_gap": {"units": "grid units", "long_name": "size gap ds between large and small radii"},
    "mask_ratio": {
        "units": "1",
        "long_name": "masking ratio p: fraction of the masked class's training images whose "
        "masked concept is hidden in h",
    },
    "background_gap": {"units": "grey level", "long_name": "background gap db between greys"},
    "unseen": {"units": "1", "long_name": "unseen class"},
}
P_TARGET_ATTRS = {
    "units": "1",
    "long_name": "probe probability that a sample shows the prompt's target value of the concept",
}
VALID_ATTRS = {
    "units": "1",
    "long_name": "validity verdict: 1 if the sample holds exactly one object of plausible size "
    "inside the image (conceptspace.validity), 0 if not",
}
# The verdict with the frame rule off (``validity.Measured.valid``) and what it gives, kept
# beside the verdict's own so that a reader sees whether the rule matters: a per-sample
# ``valid_frame_off`` in evaluations and trajectories, and each summary's twin
# ``<summary>_frame_off`` in trajectories and studies (absent: gathered before it was
# recorded).
FRAME_OFF = "_frame_off"
VALID_FRAME_OFF = "valid" + FRAME_OFF


def frame_off_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` of a verdict or summary, said of its twin with the frame rule off."""
    return {**attrs, "long_name": f"{attrs['long_name']}; frame rule of the verdict off"}


VALID_FRAME_OFF_ATTRS = frame_off_attrs(VALID_ATTRS)
CONCEPT_PROB_ATTRS = {
    "units": "1",
    "long_name": "concept-space coordinate: mean over the valid samples of the probability of "
    "the prompt's target value of the concept (NaN: no valid sample)",
}
METHOD_ATTRS = {
    "method": {"units": "1", "long_name": "prompting method (variant)"},
    "method_kind": {
        "units": "1",
        "long_name": "kind of prompting method: naive, overprompt, intervention or patched",
    },
    "method_setting": {"units": "1", "long_name": "setting of the prompting method"},
}
METHOD_COORDS = tuple(METHOD_ATTRS)
# What ``trajectories.gather_run`` summarises over the samples of each (step, method, prompt): name ->
# (whether it keeps the concept dim, attributes). ``accuracy`` is the default score.
SUMMARIES = {
    "accuracy": (
        False,
        {
            "units": "1",
            "long_name": "accuracy: mean over samples of valid x the product over concepts of "
            "the probability of the target value (a sample with no object scores 0)",
        },
    ),
    "concept_accuracy": (
        True,
        {
            "units": "1",
            "long_name": "accuracy of one concept: mean over samples of valid x the probability "
            "of the concept's target value",
        },
    ),
    "hard_accuracy": (
        False,
        {
            "units": "1",
            "long_name": "hard accuracy: fraction of samples that are valid and whose most "
            "probable value of every concept is the target",
        },
    ),
    "hard_concept_accuracy": (
        True,
        {
            "units": "1",
            "long_name": "hard accuracy of one concept as the authors' code scores it: fraction "
            "of samples whose most probable value is the target, validity not checked",
        },
    ),
    "valid_fraction": (
        False,
        {"units": "1", "long_name": "fraction of samples holding exactly one plausible object"},
    ),
    "product_of_means": (
        False,
        {
            "units": "1",
            "long_name": "the paper's accuracy: product over concepts of the mean over all "
            "samples (valid or not) of the probability of the target value",
        },
    ),
    "concept_prob": (True, CONCEPT_PROB_ATTRS),
}


def netcdf_attrs(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``record`` as netCDF attributes, which must be strings or numbers.

    Strings and numbers stay as they are (numpy scalars become Python ones, bools 0/1);
    anything else (dicts, lists, None) becomes a JSON string. ``prefix`` is put before
    every key.
    """
    attrs: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (str, int, float)):
            value = json.dumps(value, sort_keys=True, default=json_default)
        attrs[f"{prefix}{key}"] = value
    return attrs


def method_coords(
    names: Sequence[str], kinds: Sequence[str], settings: Sequence[str]
) -> dict[str, xr.Variable]:
    """The ``method`` dimension coordinate with its ``method_kind`` and ``method_setting``."""
    return {
        name: xr.Variable(
            "method", np.array([str(v) for v in values], dtype=object), dict(METHOD_ATTRS[name])
        )
        for name, values in (
            ("method", names),
            ("method_kind", kinds),
            ("method_setting", settings),
        )
    }


def save_dataset_nc(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` to ``path`` (netCDF4, floats compressed) atomically."""
    encoding = {
        name: {"zlib": True, "complevel": 4}
        for name, variable in ds.data_vars.items()
        if np.issubdtype(variable.dtype, np.floating)
    }
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def open_netcdf(path: str | os.PathLike, kind: str, required: Iterable[str]) -> xr.Dataset:
    """Read a whole netCDF file into memory (the file is closed again); a missing,
    corrupt or foreign file raises ConceptspaceError naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise ConceptspaceError(f"{kind} {path} does not exist; run `snakemake` to build it")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as err:  # any reader failure means a damaged file
        raise ConceptspaceError(
            f"{kind} {path} could not be read ({type(err).__name__}: {err}); it is truncated "
            "or corrupt: delete it and rerun `snakemake` to rebuild it"
        ) from err
    missing = [name for name in required if name not in ds.variables]
    if missing:
        raise ConceptspaceError(
            f"{path} is not a {kind} (it lacks {', '.join(missing)}); delete it and rerun "
            "`snakemake` to rebuild it"
        )
    return ds


def missing_run_attrs(attrs: Mapping[str, Any]) -> list[str]:
    """The attributes an evaluation must carry that ``attrs`` lacks: step and seed, and
    the gaps unless its layout has no signal level (a one-hot layout: CelebA's), the
    criterion ``evaluate._run_attrs`` writes them by."""
    gaps = () if layout_from_attrs(attrs).one_hot else ("color_gap", "size_gap")
    return [key for key in ("step", "seed") + gaps if key not in attrs]


def open_evaluation(path: str | os.PathLike) -> xr.Dataset:
    """One checkpoint's evaluation, as written by ``evaluate.write_evaluation``."""
    ds = open_netcdf(path, "evaluation", ("p_target", "valid"))
    missing = missing_run_attrs(ds.attrs)
    if missing:
        raise ConceptspaceError(
            f"evaluation {path} lacks the attributes {', '.join(missing)}; it was not written "
            "by `conceptspace evaluate-pack`: delete it and rerun `snakemake`"
        )
    return ds


def open_trajectory(path: str | os.PathLike) -> xr.Dataset:
    """One run's trajectory, as written by ``trajectories.gather_run``."""
    # a run's coordinates: its seed, and its gaps unless its layout has none (CelebA)
    return open_netcdf(path, "run trajectory", (*SUMMARIES, "seed"))


def open_samples(path: str | os.PathLike) -> xr.Dataset:
    """A samples file written by ``conceptspace sample``, loaded into memory."""
    return open_netcdf(path, "samples file", ("images", "applied"))


def open_study(path: str | os.PathLike) -> xr.Dataset:
    """The study dataset written by ``trajectories.gather_study``, loaded into memory."""
    return open_netcdf(
        path, "study dataset", ("concept_prob", "accuracy", "learning_time", "learning_speed")
    )


def set_coord_attrs(ds: xr.Dataset) -> None:
    """The attributes of COORD_ATTRS and METHOD_ATTRS on the coordinates ``ds`` has."""
    for name, attrs in {**COORD_ATTRS, **METHOD_ATTRS}.items():
        if name in ds.coords:
            ds[name].attrs = dict(attrs)
