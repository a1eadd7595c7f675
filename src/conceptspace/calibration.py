"""Calibration records: one training run of a candidate setting, summarised for docs/calibration/.

A candidate is an overlay ``workflow/presets/calibration/<name>.yaml`` laid over the cpu
preset and ``calibration/baseline.yaml``, which narrows the study to one run (the signal
study at color gap 0.8, size gap 0.4, seed 0; the other studies off), so that a candidate
costs one training and one evaluation. A candidate that switches the signal study off and
the underspecification study on trains that study's few runs instead; overlays stack
(``scripts/calibrate.sh NAME [NAME ...]``, each laid over the ones before it).
``scripts/calibrate.sh`` runs them through the pipeline into ``results/calibration/<name>/``
and then :func:`write_record`, which writes ``docs/calibration/<name>-<date>/``: the
overlay, the wall time and peak memory, the claims table, the sample sheet (the
underspecification figure), and the unseen class's scores at every checkpoint of every
run (README.md).

A whole preset's signal runs can be recorded the same way (configs without baseline.yaml,
e.g. config.yaml and workflow/presets/cpu.yaml): the calibration of the preset's gaps at
every seed it runs, one table per run and every sample sheet it drew.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from conceptspace.config import load_config
from conceptspace.io import ConceptspaceError, read_json
from conceptspace.studies import STUDIES

# Columns of the per-checkpoint table: (heading, variable, method, concept); a variable the
# trajectory lacks (written before it existed) leaves its column out.
COLUMNS = (
    ("naive accuracy", "accuracy", "naive", None),
    ("valid fraction", "valid_fraction", "naive", None),
    ("color accuracy", "concept_accuracy", "naive", "color"),
    ("size accuracy", "concept_accuracy", "naive", "size"),
    ("shape accuracy", "concept_accuracy", "naive", "shape"),
    ("product of means", "product_of_means", "naive", None),
    ("intervention (best)", "accuracy", "intervention", None),
    ("overprompt (best)", "accuracy", "overprompt", None),
)
TAUGHT_PLACEHOLDER = "_(to write after reading the table and looking at the sample sheet)_"


def single_run(config: dict) -> Any:
    """The one run of a calibration config; a named error when there are more or none."""
    runs = STUDIES["signal"].runs(config)
    if len(runs) != 1:
        raise ConceptspaceError(
            f"a calibration trains one run, this config plans {len(runs)} "
            f"({', '.join(run.id for run in runs)}); lay calibration/baseline.yaml under the "
            "candidate's overlay"
        )
    return runs[0]


def preset_runs(config: dict) -> tuple[str, list[Any]]:
    """The signal runs of a whole preset (a record without calibration/baseline.yaml)."""
    runs = STUDIES["signal"].runs(config)
    if not runs:
        raise ConceptspaceError(
            "a preset's record reads its signal runs, and this config has the signal study off; "
            "lay calibration/baseline.yaml under a candidate's overlays to record another study"
        )
    return "signal", runs


def calibration_runs(config: dict) -> tuple[str, list[Any]]:
    """The study a calibration config trains and its runs: the signal study's one run or,
    with the signal study off, the underspecification study's runs."""
    if STUDIES["signal"].section(config) is not None:
        return "signal", [single_run(config)]
    runs = STUDIES["underspecification"].runs(config)
    if not runs:
        raise ConceptspaceError(
            "a calibration trains the signal study's one run or, with the signal study off "
            "(studies.signal: null), the underspecification study's runs; this config trains "
            "neither: lay calibration/baseline.yaml under the candidate's overlays"
        )
    return "underspecification", runs


def _column(trajectory: xr.Dataset, variable: str, method: str, concept: str | None, prompt: str):
    if variable not in trajectory or method not in trajectory["method"].values:
        return None
    values = trajectory[variable].sel({"method": method, "prompt": prompt})
    if concept is not None:
        if "concept" not in values.dims or concept not in values["concept"].values:
            return None
        values = values.sel(concept=concept)
    return values


def _number(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.2f}"


def checkpoint_table(trajectory: xr.Dataset, prompt: str, sigma: float) -> str:
    """Markdown: the scores of ``prompt`` at every checkpoint, naive accuracy smoothed too,
    and the training classes' lowest naive accuracy (are they learned?)."""
    from conceptspace.trajectories import smooth_accuracy

    columns = [(heading, _column(trajectory, *spec, prompt)) for heading, *spec in COLUMNS]
    columns = [(heading, values) for heading, values in columns if values is not None]
    naive = trajectory["accuracy"].sel({"method": "naive"})
    smoothed = smooth_accuracy(naive.sel(prompt=prompt), sigma)
    training = [p for p in trajectory["prompt"].values if p != prompt]
    training_min = naive.sel(prompt=training).min("prompt")
    headings = ["step", columns[0][0], f"smoothed (sigma {sigma:g})"]
    headings += [heading for heading, _ in columns[1:]] + ["training classes (min)"]
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    for i, step in enumerate(trajectory["step"].values):
        cells = [str(int(step)), _number(float(columns[0][1][i])), _number(float(smoothed[i]))]
        cells += [_number(float(values[i])) for _, values in columns[1:]]
        cells.append(_number(float(training_min[i])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(
    trajectory: xr.Dataset,
    prompt: str,
    threshold: float,
    sigma: float,
    min_valid_fraction: float | None = None,
) -> str:
    """One sentence: when (if) each method's smoothed accuracy of ``prompt`` reaches the
    threshold, the naive peak, and the naive valid fraction at the last checkpoint. With
    ``min_valid_fraction`` (and valid fractions in the trajectory) the times are read on the
    accuracy among the valid samples, as the study's learning_time is; the naive time on
    all samples follows."""
    from conceptspace.trajectories import accuracy_among_valid, learning_time, smooth_accuracy

    among_valid = min_valid_fraction is not None and "valid_fraction" in trajectory

    def time_of(method: str, all_samples: bool = False) -> str:
        at = trajectory.sel({"method": method, "prompt": prompt})
        accuracy = (
            at["accuracy"]
            if all_samples or not among_valid
            else accuracy_among_valid(at, min_valid_fraction)
        )
        reached = float(learning_time(accuracy, threshold, sigma))
        return "never" if math.isnan(reached) else f"at step {reached:.0f}"

    parts = [
        f"{method} {time_of(method)}"
        for method in ("naive", "intervention", "overprompt")
        if method in trajectory["method"].values
    ]
    naive = smooth_accuracy(
        trajectory["accuracy"].sel({"method": "naive", "prompt": prompt}), sigma
    )
    peak = int(np.nanargmax(naive.values))
    which = " among the valid samples" if among_valid else ""
    text = f"Class {prompt}'s smoothed accuracy{which} reaches {threshold:g}: {', '.join(parts)}."
    if among_valid:
        text += f" On all samples naive {time_of('naive', all_samples=True)}."
    peak_of = " (all samples)" if among_valid else ""
    text += f" Naive peak{peak_of} {float(naive[peak]):.2f} at step {int(trajectory['step'][peak])}"
    if "valid_fraction" in trajectory:
        last = float(trajectory["valid_fraction"].sel({"method": "naive", "prompt": prompt})[-1])
        text += f"; naive valid fraction at the last checkpoint {last:.2f}"
    return text + "."


def write_record(
    name: str,
    configs: Sequence[str | Path],
    results: str | Path,
    out: str | Path,
    wall_seconds: float,
    peak_rss_kib: int | None = None,
    command: str | None = None,
) -> Path:
    """Write ``out`` (README.md, overlay.yaml, claims.json, the sample sheet PNG) from the
    run of the calibration config ``configs`` (config.yaml first, the candidate's overlay
    last) whose results are in ``results``. Returns ``out``."""
    configs = [Path(path) for path in configs]
    config = load_config(*configs)
    stems = [path.stem for path in configs]
    candidate = "baseline" in stems  # else a whole preset's runs
    study, runs = calibration_runs(config) if candidate else preset_runs(config)
    results = Path(results)
    paths = {run.id: results / study / "runs" / run.id / "trajectory.nc" for run in runs}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise ConceptspaceError(
            f"{', '.join(missing)} does not exist: the calibration run has not finished; run "
            f"scripts/calibrate.sh {name.replace('+', ' ')} first"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(configs[-1], out / "overlay.yaml")
    # the candidate's overlays: those after baseline.yaml, laid over it in this order
    overlays = configs[stems.index("baseline") + 1 :] if candidate else configs[-1:]
    evaluation = config["evaluation"]
    trajectories = {}
    for run_id, path in paths.items():
        with xr.open_dataset(path) as trajectory:
            trajectories[run_id] = trajectory.load()
    from conceptspace.concepts import layout_from_attrs

    first = next(iter(trajectories.values()))
    prompt = layout_from_attrs(first.attrs).unseen_classes[0]
    sections = [f"# Calibration: {name} ({', '.join(paths)})\n"]
    memory = "" if peak_rss_kib is None else f", peak RSS of any job {peak_rss_kib / 1024:.0f} MiB"
    base = config.get("preset", "cpu-16px")  # the preset the overlays lie on (calibrate.sh BASE)
    if not candidate:
        what = f"the {base} preset whole, its {len(runs)} {study} runs ({configs[-1].name} "
        what += "copied here as overlay.yaml)"
    else:
        narrowed = "to one run" if study == "signal" else f"to {len(runs)} {study} runs"
        what = f"the {base} preset narrowed {narrowed} by "
        what += "`workflow/presets/calibration/baseline.yaml`"
    if candidate and stems[-1] != "baseline":
        over = ", ".join(f"`{path.name}`" for path in overlays)
        what += f", with {over} over it" + (", in this order" if len(overlays) > 1 else "")
        what += " (the last " if len(overlays) > 1 else " ("
        what += "copied here as overlay.yaml)"
    sections.append(
        f"What: {what}, at commit {first.attrs.get('git_commit')}"
        + f" (the trajectory's provenance), results in `{results}`:\n\n"
        + f"    {command or 'scripts/calibrate.sh ' + name}\n\n"
        + f"Wall time {wall_seconds / 60:.1f} min{memory} (2-core machine, the whole pipeline:"
        + " render, probe, training, evaluation, figures, claims).\n"
    )
    threshold, sigma = evaluation["threshold"], evaluation["sigma"]
    taught = [
        (f"{run_id}: " if len(runs) > 1 else "")
        + headline(trajectory, prompt, threshold, sigma, evaluation.get("min_valid_fraction"))
        for run_id, trajectory in trajectories.items()
    ]
    sections.append("## What it taught\n\n" + "\n\n".join(taught) + f"\n\n{TAUGHT_PLACEHOLDER}\n")
    for run_id, trajectory in trajectories.items():
        sections.append(
            f"## Class {prompt} at every checkpoint"
            + (f" of {run_id}" if len(runs) > 1 else "")
            + "\n\nNaive prompting unless named; the best-of methods are the best variant at "
            "each checkpoint; accuracies as in trajectory.nc.\n\n"
            + checkpoint_table(trajectory, prompt, sigma)
        )
    claims = results / "claims.json"
    if claims.exists():
        from conceptspace.claims import claims_table_markdown

        shutil.copyfile(claims, out / "claims.json")
        heading = "## Claims (one run: claim 1 needs 3 levels)" if candidate else "## Claims"
        sections.append(f"{heading}\n\n" + claims_table_markdown(read_json(claims)))
    # the signal runs' sample sheets; the underspecification figure holds its runs' samples
    wanted = (
        [f"samples_{run.id}.png" for run in runs] if study == "signal" else ["fig_underspec.png"]
    )
    sheets = [results / "figures" / name for name in wanted]
    sheets = [sheet for sheet in sheets if sheet.exists()]
    for sheet in sheets:
        shutil.copyfile(sheet, out / sheet.name)
        sections.append(f"## Sample sheet\n\n![samples]({sheet.name})\n")
    (out / "README.md").write_text("\n".join(sections))
    return out
