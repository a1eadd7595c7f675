"""The paper's claims, judged from the gathered study datasets alone.

Each claim is a statistic computed from ``results/signal/study.nc`` (claims 1-4) or
``results/underspecification/study.nc`` (claim 5), compared with a threshold from the
config's ``claims`` section. No outcome is written by hand: every claim ends as "pass",
"fail", or "not evaluated" with the reason (the study lacks what the claim needs).

Conventions shared by the claims:

- Only runs that were run count: a run is a (seed, signal level) whose unseen-class
  accuracy under naive prompting has a value at some checkpoint (the study's grid holds
  NaN where a sweep did not run a level).
- A learning time T is the study's ``learning_time``: the first checkpoint at which the
  unseen class's accuracy, Gaussian-smoothed over checkpoints with ``evaluation.sigma``
  (the paper reads T off smoothed curves), reaches ``evaluation.threshold``, NaN if
  never. Claims that compare accuracies at checkpoints (2 and 4) smooth them alike.
- Claim 1 averages speeds, 1/T, and a run that never reached the threshold has speed 0
  (its speed is below 1/last step; dropping it would make a slow level look fast).
- Claims 3 and 5 average or subtract times, and a run that never reached the threshold
  counts as T = one step past the last checkpoint: the earliest it could still reach it.
  This understates how late it is, so it can only weaken a delay, never invent one.

The claims (SPEC "Ideas"; issue 6):

1. Speed of learning rises with the color gap: along the color sweep
   (``figures.signal.color_sweep``, one size gap), the mean naive speed over seeds at
   each color gap; Spearman's rank correlation between gap and mean speed, and whether
   the mean speed strictly increases from level to level.
2. Memorization first: at the weakest and the strongest color gap of that sweep, the
   mean naive path of the unseen class over seeds, cut before the mean accuracy over
   seeds reaches the threshold, and its nearest approach to a training class
   (``figures.trajectories.memorization_turn``). The margin at that point is the
   distance to the corner the claim does not expect minus the distance to the one it
   expects (weak gap: 01 red small at (0, 1); strong gap: 10 blue large at (1, 0)), so
   a positive margin means nearer the expected corner; the statistic is the smaller of
   the two margins.
3. Hidden capability: per run, T(naive) - min(T(intervention), T(overprompt)) over the
   best-of methods the study holds; the fraction of runs where it is > 0, and its median.
4. Embedding patching: per run, the checkpoints before the last where naive prompting of
   the unseen class is below the threshold but naive prompting with the final embedding
   module patched in reaches it (both accuracies smoothed as for T); the fraction of runs
   with at least one such checkpoint.
5. Underspecification: the mean T over seeds at each masking ratio; the delay T(largest
   ratio) - T(smallest ratio), and whether the mean T never decreases as the ratio grows.
"""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.config import ConfigError, sweep
from conceptspace.figures import class_label, select_level, sigma_of, threshold_of
from conceptspace.figures.trajectories import PULL_CORNERS, memorization_turn
from conceptspace.io import ConceptspaceError, atomic_path, json_default, provenance, write_json
from conceptspace.trajectories import _open_netcdf, learning_time, smooth_accuracy

log = logging.getLogger(__name__)

PASS, FAIL, NOT_EVALUATED = "pass", "fail", "not evaluated"
# The best-of methods that elicit a hidden capability (trajectories.gather_run).
ELICITING_METHODS = ("intervention", "overprompt")
PATCHED_METHOD = "patched_final"
RUN_DIMS = ("seed", "color_gap", "size_gap")
# Claim 2: the corner a weak and a strong color gap pull the unseen class toward.
EXPECTED_PULL = {"weakest": "01", "strongest": "10"}


@dataclass(frozen=True)
class ClaimText:
    """What a claim says, how it is measured, and the config key of its threshold; the
    statement and the rule are formatted with the claim's config section."""

    statement: str
    statistic: str
    pass_if: str
    threshold_key: str


CLAIMS = {
    "speed": ClaimText(
        "Speed of learning the unseen class rises with the color gap (concept signal), "
        "monotonically over at least {min_levels} levels.",
        "Spearman rank correlation of color gap and mean naive speed 1/T (never reached: 0)",
        "value >= threshold and at least {min_levels} levels; mean speed strictly increasing "
        "required: {strictly_increasing}",
        "min_spearman",
    ),
    "memorization": ClaimText(
        "Before it reaches the unseen corner, the unseen class's trajectory passes nearer 01 "
        "red small for a weak color gap and nearer 10 blue large for a strong one.",
        "smaller of the two margins (distance to the unexpected corner minus distance to the "
        "expected one) at the unseen class's nearest approach to a training class, before it "
        "reaches the threshold",
        "value > threshold",
        "min_margin",
    ),
    "hidden": ClaimText(
        "Latent intervention or overprompting reaches the threshold earlier than naive "
        "prompting (a hidden capability).",
        "fraction of runs with T(naive) - min(T(intervention), T(overprompt)) > 0 (never "
        "reached: one step past the last checkpoint)",
        "value >= threshold and median difference > 0",
        "min_fraction",
    ),
    "patching": ClaimText(
        "Patching in the final embedding module makes naive prompting succeed at "
        "intermediate checkpoints where it failed.",
        "fraction of runs with a checkpoint before the last where naive accuracy < "
        "evaluation threshold <= accuracy with the final embedding module patched in "
        "(accuracies smoothed as for T)",
        "value >= threshold",
        "min_fraction",
    ),
    "underspecification": ClaimText(
        "A higher masking ratio delays or prevents learning the unseen class.",
        "delay of the mean naive T over seeds, T(largest masking ratio) - T(smallest), in "
        "steps (never reached: one step past the last checkpoint)",
        "value > threshold and mean T non-decreasing in the masking ratio",
        "min_delay",
    ),
}
NUMBERS = {name: number for number, name in enumerate(CLAIMS, start=1)}


def _judge(name: str, cfg: Mapping[str, Any]) -> Callable[..., dict[str, Any]]:
    """Claim ``name``'s fixed fields; the function returned adds its value, outcome
    ("pass", "fail", "not evaluated"), detail and data."""
    text = CLAIMS[name]

    def result(value, outcome, detail, data=None):
        return {
            "number": NUMBERS[name],
            "statement": text.statement.format(**cfg),
            "statistic": text.statistic,
            "pass_if": text.pass_if.format(**cfg),
            "threshold": float(cfg[text.threshold_key]),
            "value": _number(value),
            "outcome": outcome,
            "detail": detail,
            "data": dict(data or {}),
        }

    return result


def _number(value: float | None) -> float | None:
    """A plain float for JSON; None for a value that does not exist (NaN)."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _ran(accuracy: xr.DataArray) -> xr.DataArray:
    """Which runs were run: a value at some checkpoint (``accuracy`` has a step dim)."""
    return accuracy.notnull().any("step")


def _never_past_last(times: xr.DataArray, steps: np.ndarray) -> xr.DataArray:
    """Learning times with never reached (NaN) as one step past the last checkpoint."""
    return times.fillna(float(np.max(steps)) + 1.0)


def _missing_methods(study: xr.Dataset, methods: Sequence[str]) -> list[str]:
    present = {str(method) for method in study["method"].values}
    return [method for method in methods if method not in present]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); NaN if either is constant."""
    ranks = [_mean_ranks(np.asarray(values, dtype=float)) for values in (x, y)]
    if any(np.ptp(r) == 0 for r in ranks):
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


# ----------------------------------------------------------------------------- claims 1 and 2


def _color_sweep(study: xr.Dataset) -> tuple[str, list[float], float]:
    """(name, color gaps, size gap) of the color sweep, from the config the study was
    gathered with (its ``config`` attribute)."""
    try:
        config = json.loads(study.attrs["config"])
        name = config["figures"]["signal"]["color_sweep"]
        color_sweep = sweep(config, name)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        raise ConceptspaceError(
            f"the study dataset does not say which sweep is the color sweep ({err}); it was "
            "gathered by an older version: delete results/signal/study.nc and rerun `snakemake`"
        ) from None
    if len(color_sweep["size_gap"]) != 1:
        raise ConceptspaceError(
            f"config key 'figures.signal.color_sweep' names sweep '{name}', which has size gaps "
            f"{color_sweep['size_gap']}; the color sweep needs exactly one size gap"
        )
    return (
        name,
        sorted(float(gap) for gap in color_sweep["color_gap"]),
        float(color_sweep["size_gap"][0]),
    )


def _sweep_levels(study: xr.Dataset) -> tuple[str, float, dict]:
    """The color sweep's name, size gap and levels that were run, under naive prompting:
    {color gap: that level of the study}."""
    name, color_gaps, size_gap = _color_sweep(study)
    naive = study.sel({"method": "naive"})
    levels = {gap: select_level(naive, gap, size_gap) for gap in color_gaps}
    return name, size_gap, {gap: level for gap, level in levels.items() if level is not None}


def judge_speed(study: xr.Dataset, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 1: speed of learning against the color gap (see the module docstring)."""
    strict = bool(cfg["strictly_increasing"])
    result = _judge("speed", cfg)
    if _missing_methods(study, ["naive"]):
        return result(None, NOT_EVALUATED, "the study holds no naive prompting")
    sweep_name, size_gap, levels = _sweep_levels(study)
    gaps = sorted(levels)
    speeds, reached, runs = [], [], []
    for gap in gaps:
        times = levels[gap]["learning_time"].values
        speeds.append(float(np.where(np.isfinite(times), 1.0 / times, 0.0).mean()))
        reached.append(int(np.isfinite(times).sum()))
        runs.append(len(times))
    data = {
        "sweep": sweep_name,
        "size_gap": size_gap,
        "color_gap": gaps,
        "mean_speed": speeds,
        "runs": runs,
        "runs_reached": reached,
    }
    if len(gaps) < int(cfg["min_levels"]):
        return result(
            None,
            NOT_EVALUATED,
            f"the color sweep '{sweep_name}' has {len(gaps)} level(s) with runs; the claim needs "
            f"at least {cfg['min_levels']} (claims.speed.min_levels): add color gaps to it",
            data,
        )
    rho = spearman(gaps, speeds)
    increasing = bool(np.all(np.diff(speeds) > 0))
    data["strictly_increasing"] = increasing
    steps = ", ".join(
        f"\u0394c {gap:g}: {1000 * speed:.3g} ({n_reached}/{n} reached)"
        for gap, speed, n_reached, n in zip(gaps, speeds, reached, runs)
    )
    detail = f"mean speed per 1000 steps at \u0394s {size_gap:g}: {steps}; " + (
        "strictly increasing" if increasing else "not strictly increasing"
    )
    if not np.isfinite(rho):
        return result(None, FAIL, detail + "; the mean speed is the same at every level", data)
    passed = rho >= float(cfg["min_spearman"]) and (increasing or not strict)
    return result(rho, PASS if passed else FAIL, detail, data)


def judge_memorization(study: xr.Dataset, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 2: memorization of a training class first (see the module docstring)."""
    result = _judge("memorization", cfg)
    if _missing_methods(study, ["naive"]):
        return result(None, NOT_EVALUATED, "the study holds no naive prompting")
    sweep_name, size_gap, levels = _sweep_levels(study)
    if len(levels) < 2:
        return result(
            None,
            NOT_EVALUATED,
            f"the color sweep '{sweep_name}' has {len(levels)} level(s) with runs; the claim "
            "compares the weakest and the strongest color gap",
        )
    threshold, sigma = threshold_of(study), sigma_of(study)
    gaps = {"weakest": min(levels), "strongest": max(levels)}
    data: dict[str, Any] = {"sweep": sweep_name, "size_gap": size_gap}
    margins, notes = [], []
    for which, gap in gaps.items():
        unseen = levels[gap].sel(prompt=UNSEEN_CLASS)
        reached_at = float(learning_time(unseen["accuracy"].mean("seed"), threshold, sigma))
        path = unseen["concept_prob"].mean("seed")
        if np.isfinite(reached_at):
            path = path.isel(step=np.flatnonzero(path["step"].values < reached_at))
        turn_step, pulled_to = memorization_turn(path)
        entry = {"color_gap": gap, "reached_at": _number(reached_at), "turn_step": None}
        entry.update({"pulled_to": pulled_to, "margin": None})
        if pulled_to is None:
            notes.append(
                f"\u0394c {gap:g} ({which}): never nearer 01 or 10 than 11 before the threshold"
                + (f" (reached at step {reached_at:.0f})" if np.isfinite(reached_at) else "")
            )
        else:
            point = path.sel(step=turn_step)
            distance = {
                name: float(np.hypot(point.sel(concept="color") - x, point.sel(concept="size") - y))
                for name, (x, y) in PULL_CORNERS.items()
            }
            expected = EXPECTED_PULL[which]
            (other,) = set(PULL_CORNERS) - {expected}
            margin = distance[other] - distance[expected]
            margins.append(margin)
            entry.update({"turn_step": turn_step, "margin": margin, "distance": distance})
            notes.append(
                f"\u0394c {gap:g} ({which}): nearest {class_label(pulled_to)} at step "
                f"{turn_step:.0f} (distance {distance['01']:.3f} to 01, {distance['10']:.3f} to "
                f"10; expected {expected}, margin {margin:+.3f})"
            )
        data[which] = entry
    detail = "; ".join(notes) + "; mean over seeds"
    if len(margins) < len(gaps):
        return result(None, FAIL, detail, data)
    value = min(margins)
    return result(value, PASS if value > float(cfg["min_margin"]) else FAIL, detail, data)


# ----------------------------------------------------------------------------- claims 3 and 4


def _per_run(study: xr.Dataset, array: xr.DataArray) -> xr.DataArray:
    """``array`` with its (seed, color gap, size gap) stacked into one 'run' dim, keeping
    the runs that were run."""
    accuracy = study["accuracy"].sel({"method": "naive"}).sel(prompt=UNSEEN_CLASS)
    ran = _ran(accuracy).stack(run=RUN_DIMS).values
    return array.stack(run=RUN_DIMS).isel(run=np.flatnonzero(ran))


def judge_hidden(study: xr.Dataset, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 3: eliciting methods reach the threshold before naive prompting."""
    result = _judge("hidden", cfg)
    methods = [m for m in ELICITING_METHODS if m not in _missing_methods(study, [m])]
    if _missing_methods(study, ["naive"]) or not methods:
        return result(
            None,
            NOT_EVALUATED,
            "the study holds no latent intervention or overprompting (switch on "
            "evaluation.methods.intervention.alphas or overprompt.colors)",
        )
    times = _per_run(study, _never_past_last(study["learning_time"], study["step"].values))
    elicited = times.sel({"method": methods}).min("method")
    difference = (times.sel({"method": "naive"}) - elicited).values
    if not len(difference):
        return result(None, NOT_EVALUATED, "the study holds no runs")
    fraction = float(np.mean(difference > 0))
    median = float(np.median(difference))
    detail = (
        f"{int(np.sum(difference > 0))} of {len(difference)} runs earlier with "
        f"{' or '.join(methods)}; median T(naive) - T(elicited) = {median:g} steps"
    )
    data = {"methods": methods, "runs": len(difference), "median_difference": median}
    passed = fraction >= float(cfg["min_fraction"]) and median > 0
    return result(fraction, PASS if passed else FAIL, detail, data)


def judge_patching(study: xr.Dataset, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 4: the final embedding module rescues naive prompting at earlier checkpoints."""
    result = _judge("patching", cfg)
    if _missing_methods(study, ["naive", PATCHED_METHOD]):
        return result(
            None,
            NOT_EVALUATED,
            f"the study holds no {PATCHED_METHOD} method (add 'final' to "
            "evaluation.methods.patching.donors)",
        )
    steps = study["step"].values
    if len(steps) < 2:
        return result(None, NOT_EVALUATED, "the study has one checkpoint; none is before the last")
    threshold = threshold_of(study)
    unseen = study["accuracy"].sel({"method": ["naive", PATCHED_METHOD], "prompt": UNSEEN_CLASS})
    accuracy = _per_run(study, smooth_accuracy(unseen, sigma_of(study))).isel(step=slice(None, -1))
    # NaN compares False both ways: a missing value is neither failure nor success.
    rescued = (accuracy.sel({"method": "naive"}) < threshold) & (
        accuracy.sel({"method": PATCHED_METHOD}) >= threshold
    )
    per_run = rescued.sum("step").values
    if not len(per_run):
        return result(None, NOT_EVALUATED, "the study holds no runs")
    fraction = float(np.mean(per_run > 0))
    detail = (
        f"{int(np.sum(per_run > 0))} of {len(per_run)} runs have such a checkpoint; "
        f"{int(per_run.sum())} (run, checkpoint) pairs in all, of {per_run.size * (len(steps) - 1)}"
    )
    data = {"runs": len(per_run), "rescued_checkpoints": int(per_run.sum())}
    return result(fraction, PASS if fraction >= float(cfg["min_fraction"]) else FAIL, detail, data)


# ----------------------------------------------------------------------------- claim 5


def judge_underspecification(
    study: xr.Dataset | None, cfg: Mapping[str, Any], absent_reason: str = ""
) -> dict[str, Any]:
    """Claim 5: the mean learning time against the masking ratio."""
    result = _judge("underspecification", cfg)
    if study is None:
        return result(None, NOT_EVALUATED, absent_reason)
    if _missing_methods(study, ["naive"]):
        return result(None, NOT_EVALUATED, "the underspecification study holds no naive prompting")
    naive = study.sel({"method": "naive"})
    ran = (
        naive["accuracy"]
        .notnull()
        .any([d for d in naive["accuracy"].dims if d not in ("seed", "mask_ratio")])
    )
    times = _never_past_last(naive["learning_time"], study["step"].values).where(ran)
    ratios, means, runs = [], [], []
    for ratio in sorted(float(r) for r in study["mask_ratio"].values):
        at = times.sel(mask_ratio=ratio).values
        if np.isfinite(at).any():
            ratios.append(ratio)
            means.append(float(np.nanmean(at)))
            runs.append(int(np.isfinite(at).sum()))
    data = {"mask_ratio": ratios, "mean_learning_time": means, "runs": runs}
    if len(ratios) < 2:
        return result(
            None,
            NOT_EVALUATED,
            f"the underspecification study has {len(ratios)} masking ratio(s) with runs; the "
            "claim compares at least 2",
            data,
        )
    never = float(np.max(study["step"].values)) + 1.0
    non_decreasing = bool(np.all(np.diff(means) >= 0))
    data["non_decreasing"] = non_decreasing
    delay = means[-1] - means[0]
    steps = ", ".join(
        f"p {ratio:g}: {'never' if mean == never else f'{mean:.6g}'}"
        for ratio, mean in zip(ratios, means)
    )
    detail = f"mean T over seeds: {steps}; " + (
        "non-decreasing" if non_decreasing else "decreases somewhere"
    )
    passed = non_decreasing and delay > float(cfg["min_delay"])
    return result(delay, PASS if passed else FAIL, detail, data)


# ----------------------------------------------------------------------------- all claims


def evaluate_claims(
    signal_study: xr.Dataset,
    claims_cfg: Mapping[str, Any],
    underspecification_study: xr.Dataset | None = None,
    underspecification_absent: str = "the underspecification study was not run",
) -> dict[str, dict[str, Any]]:
    """Every claim, by name: {statement, statistic, pass_if, threshold, value, outcome,
    detail, data}. ``underspecification_absent`` is claim 5's reason when that study is
    None."""
    claims = {
        "speed": judge_speed(signal_study, claims_cfg["speed"]),
        "memorization": judge_memorization(signal_study, claims_cfg["memorization"]),
        "hidden": judge_hidden(signal_study, claims_cfg["hidden"]),
        "patching": judge_patching(signal_study, claims_cfg["patching"]),
        "underspecification": judge_underspecification(
            underspecification_study, claims_cfg["underspecification"], underspecification_absent
        ),
    }
    for name, claim in claims.items():
        log.info(
            "claim %d (%s): %s; value %s, threshold %g; %s",
            claim["number"],
            name,
            claim["outcome"],
            "none" if claim["value"] is None else f"{claim['value']:.6g}",
            claim["threshold"],
            claim["detail"],
        )
    return claims


def open_underspecification(path: str | os.PathLike) -> xr.Dataset:
    """The underspecification study dataset (dims seed, mask_ratio, step, method, ...)."""
    return _open_netcdf(
        path, "underspecification study", ("accuracy", "learning_time", "mask_ratio")
    )


def write_claims(
    out_json: str | os.PathLike,
    out_table: str | os.PathLike,
    config: Mapping[str, Any],
    signal_path: str | os.PathLike,
    underspecification_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Judge every claim and write ``out_json`` (sorted keys) and the HTML table
    ``out_table``. The claims depend only on the datasets and ``config['claims']``."""
    from conceptspace.trajectories import open_study

    study = open_study(signal_path)
    underspec = None
    absent = (
        "the underspecification study is not configured, so the masking ratio was never varied; "
        "configure it to judge this claim"
    )
    if underspecification_path is not None:
        underspec = open_underspecification(underspecification_path)
    claims = evaluate_claims(study, config["claims"], underspec, absent)
    record = {
        "claims": claims,
        "inputs": {
            "signal": str(signal_path),
            "underspecification": (
                None if underspecification_path is None else str(underspecification_path)
            ),
        },
        "provenance": provenance(dict(config)),
    }
    write_json(out_json, record)
    with atomic_path(out_table) as tmp:
        tmp.write_text(claims_table_html(record))
    return record


TABLE_COLUMNS = ("#", "claim", "statistic", "value", "threshold", "outcome", "detail")
OUTCOME_COLORS = {PASS: "#1a7f37", FAIL: "#cf222e", NOT_EVALUATED: "#6e7781"}


def table_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """The cells of the claims table (plain text, columns TABLE_COLUMNS), by claim number."""
    return [
        [
            str(claim["number"]),
            claim["statement"],
            claim["statistic"],
            "\u2014" if claim["value"] is None else f"{claim['value']:.4g}",
            f"{claim['threshold']:g} ({claim['pass_if']})",
            claim["outcome"],
            claim["detail"],
        ]
        for claim in sorted(record["claims"].values(), key=lambda c: c["number"])
    ]


def claims_table_html(record: Mapping[str, Any]) -> str:
    """The claims as a standalone HTML table (the report's Claims category)."""
    outcome = TABLE_COLUMNS.index("outcome")
    rows = []
    for cells in table_rows(record):
        cells = [html.escape(cell) for cell in cells]
        color = OUTCOME_COLORS[cells[outcome]]
        cells[outcome] = f'<b style="color:{color}">{cells[outcome]}</b>'
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{column}</th>" for column in TABLE_COLUMNS)
    source = json.dumps(record["inputs"], sort_keys=True, default=json_default)
    origin = record["provenance"]
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Claims</title>\n<style>'
        "table{border-collapse:collapse;font:13px sans-serif}"
        "td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}"
        "</style></head><body>\n"
        f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n"
        f'<p style="font:11px sans-serif;color:#555">From {html.escape(source)}; config '
        f"{origin['config_hash']}, commit {html.escape(origin['git_commit'])}.</p>\n"
        "</body></html>\n"
    )


def claims_table_markdown(record: Mapping[str, Any]) -> str:
    """The claims table in Markdown (for a README): `python -m conceptspace claims-table`."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for cells in table_rows(record):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
