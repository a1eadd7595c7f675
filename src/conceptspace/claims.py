"""The paper's claims, judged from the gathered study datasets alone, with their uncertainty.

Each claim is a statistic computed from ``results/signal/study.nc`` (claims 1-4) or
``results/underspecification/study.nc`` (claim 5), decided by an exact one-sided test
over the runs at level alpha = 1 - ``claims.confidence`` (``conceptspace.judges``, which
says why: at a few seeds per level a bootstrap bound passes chance far more often than
its nominal rate), with a bootstrap interval over seeds beside it and a threshold from
the config's ``claims`` section. No outcome is written by hand; each claim ends as one
of:

- "pass": the test's p <= alpha and the estimate meets the threshold;
- "fail": the interval lies entirely on the wrong side (upper bound below the
  threshold, or at or below no effect);
- "inconclusive", with the reason: p > alpha (and, when the runs are too few for any
  outcome to reach alpha, which key adds seeds), a level has one seed (no interval over
  seeds can be drawn), or no run reached the threshold at all (claims 1, 3 and 5:
  learning times all censored at the last step cannot be ordered);
- "not evaluated", with the reason: the study lacks what the claim needs.

Every judged claim records its test (name, alpha, the smallest p its runs allow, the
runs per level) and its false-pass rate: the share of simulated studies with no effect
and the same runs per level that its judge passes (``judges.pass_rate``). And it is
judged a second time, by the same judge, on the study as if the validity verdict had no
frame rule (``trajectories.frame_off_study``; its outcome, value, interval, p and detail
in ``frame_off``), so that a reader sees whether the rule matters; "not recorded" for a
study gathered before evaluation recorded that verdict.

Conventions shared by the claims:

- Only runs that were run count: a run is a (seed, signal level) whose unseen-class
  accuracy under naive prompting has a value at some checkpoint (the study's grid holds
  NaN where a sweep did not run a level).
- A learning time T is the study's ``learning_time`` (joint: the unseen class 11's
  accuracy among the valid samples, ``accuracy_among_valid``) or
  ``learning_time_concept`` (one concept's accuracy among the valid samples): the first
  checkpoint at which it, Gaussian-smoothed over checkpoints with ``evaluation.sigma``,
  reaches ``evaluation.threshold``; NaN if never. Claims that compare accuracies at
  checkpoints (4) read the same accuracy, smoothed alike. Claim 3 also reports, not
  judged, its counts with the joint time on all samples (``learning_time_all_samples``).
- Intervals: a seeded (``claims.seed``), stratified percentile bootstrap
  (``conceptspace.statistics.bootstrap_interval``, ``claims.bootstrap_resamples``
  resamples): the runs of each level (color gap, signal level or masking ratio) are
  resampled with replacement within that level, so the same study gives the same
  claims.json.

Censoring. A run that never reaches the threshold is censored at the last checkpoint:
its T is "more than the last step", never a speed of 0 or a dropped run.

- Claim 1 uses ranks only: a censored run ranks as slower than every run that learned,
  tied with the other censored runs. This is exact for a common censoring time (all runs
  of a study share their checkpoints).
- Claims 3 and 5 need numbers: a censored run counts as T = one step past the last
  checkpoint, the earliest it could still reach it. That understates T. In claim 3 it
  moves each difference toward 0 without changing its sign (a lead or a lag is shrunk,
  never invented; both censored gives 0, no lead), so it can weaken the claim, never
  make it. In claim 5 it understates the mean T of every ratio with censored runs: at the
  largest ratio that shrinks the delay (weakens the claim), at the smallest it inflates
  it. Censored runs at the smallest ratio mean training was too short to judge the
  claim, so a pass then becomes "inconclusive"; the detail lists the runs that reached
  the threshold per ratio.
- Claim 2 looks at a path before its run reaches the threshold; a censored run's whole
  path counts. Claim 4 compares smoothed accuracies per checkpoint and needs no T.

The claims (Park et al., section 4 and Figs. 3-6):

1. Speed of learning rises with the color gap (Fig. 3): along the color sweep
   (``figures.signal.color_sweep``, one size gap), Spearman's rank correlation over
   runs between each run's color gap and its speed of learning color, 1 /
   ``learning_time_concept`` of concept "color" under naive prompting (censored runs
   tied slowest); bootstrap over seeds within each color gap. The mean T per level and
   how many runs reached it are in the detail: monotonicity is shown, not required.
   Beside it, not judged: rho with color timed on all samples (an invalid one scoring
   0, ``concept_accuracy``), so a reader sees what the validity of the samples does.
2. Memorization first: per seed, at the weakest and the strongest color gap of that
   sweep, that seed's naive path of the unseen class before its accuracy reaches the
   threshold (``trajectories.concept_point``: its concepts among the valid samples, no
   point where fewer than ``evaluation.min_valid_fraction`` of them are valid, the
   floor of claim 1's concept times), and the path's nearest approach to a training class
   (``analysis.memorization_turn``). The margin there is the distance to the
   corner the claim does not expect minus the distance to the one it expects (weak gap:
   01 red small at (0, 1); strong gap: 10 blue large at (1, 0)), so positive means nearer
   the expected corner; a seed whose path never comes near either corner (no turn) has
   margin 0, no evidence either way. The statistic is the smaller over the two gaps of
   the mean margin over seeds; bootstrap over seeds within each gap.
3. Hidden capability: per run, d = T(naive) - min(T(intervention), T(overprompt)) over
   the best-of methods the study holds (joint T); the statistic is the median of d over
   runs, bootstrap over runs within each signal level, with a one-sided sign test of
   d > 0 as its p-value; the fraction of runs with d > 0 must reach the threshold.
4. Embedding patching: per run, whether a checkpoint before the last has smoothed naive
   accuracy of the unseen class < threshold <= its smoothed accuracy with the final
   embedding module patched in; the statistic is the fraction of runs with one,
   bootstrap over runs within each signal level.
5. Underspecification: the mean naive T (joint) over seeds at each masking ratio; the
   statistic is the delay T(largest ratio) - T(smallest), bootstrap over seeds within
   each ratio. With 3 or more ratios the Spearman correlation of ratio and T over runs
   is reported too.
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

from conceptspace.analysis import (
    PULL_CORNERS,
    class_label,
    memorization_turn,
    select_level,
    sigma_of,
    threshold_of,
)
from conceptspace.concepts import UNSEEN_CLASS
from conceptspace.config import ConfigError
from conceptspace.io import ConceptspaceError, atomic_path, json_default, provenance, write_json
from conceptspace.judges import TESTS, Test, pass_rate
from conceptspace.statistics import bootstrap_interval, spearman
from conceptspace.studies import sweep
from conceptspace.netcdf import open_netcdf, open_study
from conceptspace.runs import SIGNAL_GRID
from conceptspace.trajectories import (
    concept_point,
    frame_off_study,
    learning_time,
    smooth_accuracy,
)

log = logging.getLogger(__name__)

PASS, FAIL, INCONCLUSIVE, NOT_EVALUATED = "pass", "fail", "inconclusive", "not evaluated"
# A claim's outcome with the frame rule off, for a study gathered before it was recorded.
NOT_RECORDED = "not recorded"
# What claims.json keeps of each claim judged with the frame rule off (its 'frame_off').
FRAME_OFF_KEPT = ("outcome", "value", "interval", "p_value", "detail")
# The best-of methods that elicit a hidden capability (trajectories.gather_run).
ELICITING_METHODS = ("intervention", "overprompt")
PATCHED_METHOD = "patched_final"
# Claim 1 reads the learning time of the concept the sweep varies (Fig. 3).
SPEED_CONCEPT = "color"
# Claim 2: the corner a weak and a strong color gap pull the unseen class toward.
EXPECTED_PULL = {"weakest": "01", "strongest": "10"}
SIGNAL_SEEDS_KEY = "studies.signal.seeds"


@dataclass(frozen=True)
class Resampling:
    """How the intervals are drawn: config keys claims.confidence,
    claims.bootstrap_resamples and claims.seed."""

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    @classmethod
    def from_config(cls, claims_cfg: Mapping[str, Any]) -> "Resampling":
        return cls(
            confidence=float(claims_cfg.get("confidence", cls.confidence)),
            resamples=int(claims_cfg.get("bootstrap_resamples", cls.resamples)),
            seed=int(claims_cfg.get("seed", cls.seed)),
        )

    @property
    def alpha(self) -> float:
        """The level of each claim's one-sided exact test: at most this share of
        studies with no effect pass."""
        return 1.0 - self.confidence

    def interval(
        self, groups: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], float]
    ) -> tuple[float, float]:
        return bootstrap_interval(groups, statistic, self.confidence, self.resamples, self.seed)


@dataclass(frozen=True)
class ClaimText:
    """What a claim says, how it is measured, the config key of its threshold, and its
    no-effect value; the statement and the rule are formatted with the claim's config
    section."""

    statement: str
    statistic: str
    pass_if: str
    threshold_key: str
    null: float = 0.0


CLAIMS = {
    "speed": ClaimText(
        "Speed of learning the unseen class rises with the color gap (concept signal), over "
        "at least {min_levels} levels.",
        "Spearman rank correlation over the runs of the color sweep between color gap and "
        "naive speed of learning color, 1/T(color) (a run that never reaches the threshold "
        "ranks slowest, tied with the others that never do); interval: bootstrap over seeds "
        "within each color gap",
        "at least {min_levels} color gaps with runs, permutation test p <= alpha and value >= "
        "threshold",
        "min_spearman",
    ),
    "memorization": ClaimText(
        "Before it reaches the unseen corner, the unseen class's trajectory passes nearer 01 "
        "red small for a weak color gap and nearer 10 blue large for a strong one.",
        "per seed, the margin (distance to the unexpected corner minus distance to the "
        "expected one) at the unseen class's nearest approach to a training class before "
        "that seed reaches the threshold (no approach: 0); the smaller over the weakest and "
        "the strongest color gap of the mean margin over seeds; interval: bootstrap over "
        "seeds within each gap",
        "sign-flip test p <= alpha at both gaps and value > threshold",
        "min_margin",
    ),
    "hidden": ClaimText(
        "Latent intervention or overprompting reaches the threshold earlier than naive "
        "prompting (a hidden capability).",
        "median over runs of d = T(naive) - min(T(intervention), T(overprompt)) in steps "
        "(never reached: one step past the last checkpoint); interval: bootstrap over runs "
        "within each signal level; p: one-sided sign test of d > 0",
        "sign test p <= alpha and fraction of runs with d > 0 >= threshold",
        "min_fraction",
    ),
    "patching": ClaimText(
        "Patching in the final embedding module makes naive prompting succeed at "
        "intermediate checkpoints where it failed.",
        "fraction of runs with a checkpoint before the last where naive accuracy < "
        "evaluation threshold <= accuracy with the final embedding module patched in "
        "(accuracies smoothed as for T); interval: bootstrap over runs within each signal "
        "level",
        "sign test of rescues over reversals p <= alpha and value >= threshold",
        "min_fraction",
    ),
    "underspecification": ClaimText(
        "A higher masking ratio delays or prevents learning the unseen class.",
        "delay T(largest masking ratio) - T(smallest), each the mean naive T over seeds, in "
        "steps (never reached: one step past the last checkpoint); interval: bootstrap over "
        "seeds within each masking ratio",
        "permutation test p <= alpha and value > threshold",
        "min_delay",
    ),
}
NUMBERS = {name: number for number, name in enumerate(CLAIMS, start=1)}


def _judge(name: str, cfg: Mapping[str, Any], resampling: Resampling) -> Callable[..., dict]:
    """Claim ``name``'s fixed fields; the function returned adds its outcome, detail,
    value, interval, p-value and data."""
    text = CLAIMS[name]

    def result(outcome, detail, value=None, interval=None, p_value=None, data=None, test=None):
        return {
            "number": NUMBERS[name],
            "statement": text.statement.format(**cfg),
            "statistic": text.statistic,
            "pass_if": text.pass_if.format(**cfg),
            "threshold": float(cfg[text.threshold_key]),
            "null": text.null,
            "value": _number(value),
            "interval": None if interval is None else [_number(bound) for bound in interval],
            "confidence": resampling.confidence,
            "resamples": resampling.resamples,
            "p_value": _number(p_value if test is None else test.p_value),
            "test": None if test is None else _test_fields(test, resampling),
            "outcome": outcome,
            "detail": detail,
            "data": dict(data or {}),
        }

    return result


def _test_fields(test: Test, resampling: Resampling) -> dict[str, Any]:
    return {
        "name": test.name,
        "alpha": resampling.alpha,
        "smallest_p": test.smallest_p,
        "runs_per_level": list(test.runs_per_level),
    }


def _number(value: float | None) -> float | None:
    """A plain float for JSON; None for a value that does not exist (NaN)."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _numbers(values) -> list[float | None]:
    return [_number(value) for value in np.asarray(values, dtype=float)]


def _span(interval: tuple[float, float], resampling: Resampling) -> str:
    lo, hi = interval
    return f"{100 * resampling.confidence:g}% interval [{lo:.3g}, {hi:.3g}]"


@dataclass(frozen=True)
class Estimate:
    """What must meet a claim's threshold, when the threshold is not the interval's bound:
    its name, value and interval."""

    name: str
    value: float
    interval: tuple[float, float]
    threshold: float


def _decide(
    test: Test,
    interval: tuple[float, float],
    null: float,
    resampling: Resampling,
    lower: float | None = None,
    estimate: Estimate | None = None,
    seeds_key: str = SIGNAL_SEEDS_KEY,
) -> tuple[str, str]:
    """(outcome, reason): pass when the claim's exact test passes (p <= alpha and the
    estimate meets its threshold: ``judges``); fail when the bootstrap interval lies at
    or below ``lower`` (by default ``null``, no effect) or the estimate's interval below
    its threshold; else inconclusive, saying why (and when the runs are too few for any
    outcome to pass, which key adds them)."""
    lower = null if lower is None else lower
    lo, hi = interval
    span = _span(interval, resampling)
    side = f"no effect ({null:g})" if lower == null else f"the threshold {lower:g}"
    alpha = resampling.alpha
    tested = f"{test.name}: p = {test.p_value:.3g}"
    if test.passes:
        return PASS, f"{tested} <= {alpha:g}; {span}"
    if hi <= lower:
        return FAIL, f"{span} lies at or below {side}"
    if estimate is not None and estimate.interval[1] < estimate.threshold:
        return FAIL, (
            f"{estimate.name}, {estimate.value:.3g}, has its "
            f"{_span(estimate.interval, resampling)} below the threshold {estimate.threshold:g}"
        )
    reasons = []
    if test.p_value > alpha:
        reasons.append(f"{tested} > {alpha:g}")
        if test.smallest_p > alpha:
            reasons.append(
                f"with these runs ({_runs_text(test.runs_per_level)}) its smallest possible p "
                f"is {test.smallest_p:.3g}, so no outcome could pass: run more seeds ({seeds_key})"
            )
    if estimate is not None and estimate.value < estimate.threshold:
        reasons.append(
            f"{estimate.name}, {estimate.value:.3g}, is below the threshold {estimate.threshold:g}"
        )
    if not reasons:  # the test's own estimate missed its bound (e.g. a margin of 0)
        reasons.append(f"{tested}; the estimate {test.value:.3g} does not exceed {lower:g}")
    reasons.append(f"{span} includes {side}" if lo <= lower else span)
    return INCONCLUSIVE, "; ".join(reasons)


def _runs_text(runs_per_level: Sequence[int]) -> str:
    """'2 seeds x 3 levels', or '2, 3 seeds per level' when they differ."""
    sizes = sorted(set(runs_per_level))
    if len(sizes) == 1:
        return f"{sizes[0]} seed(s) x {len(runs_per_level)} level(s)"
    return ", ".join(str(n) for n in runs_per_level) + " seeds per level"


def _one_seed(groups: Sequence[np.ndarray], seeds_key: str) -> str | None:
    """The reason no interval over seeds can be drawn, if a group has fewer than 2 runs."""
    if min(len(group) for group in groups) >= 2:
        return None
    return f"one seed per level: no interval over seeds; run more seeds ({seeds_key})"


NOTHING_LEARNED = (
    "no run reached the threshold within training, so every learning time is censored at "
    "the last checkpoint and the data cannot order them; train longer (training.steps)"
)


def _ran(accuracy: xr.DataArray) -> xr.DataArray:
    """Which runs were run: a value at some checkpoint (``accuracy`` has a step dim)."""
    return accuracy.notnull().any("step")


def _censored_past_last(times: xr.DataArray, steps: np.ndarray) -> xr.DataArray:
    """Learning times with never reached (NaN) as one step past the last checkpoint."""
    return times.fillna(float(np.max(steps)) + 1.0)


def _missing_methods(study: xr.Dataset, methods: Sequence[str]) -> list[str]:
    present = {str(method) for method in study["method"].values}
    return [method for method in methods if method not in present]


def _mean(groups: list[np.ndarray]) -> float:
    """The mean over all members of all groups."""
    return float(np.mean(np.concatenate(groups)))


def _short(value: float) -> str:
    """A number for a reader: whole steps from 100 on, else 3 significant digits."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


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
    {color gap: that level of the study, its seeds that were run}."""
    name, color_gaps, size_gap = _color_sweep(study)
    naive = study.sel({"method": "naive"})
    levels = {gap: select_level(naive, gap, size_gap) for gap in color_gaps}
    return name, size_gap, {gap: level for gap, level in levels.items() if level is not None}


def _older_study(variable: str) -> str:
    return (
        f"the study lacks {variable}; it was gathered by an older version: delete "
        "results/signal/study.nc and rerun `snakemake` (rule gather_study)"
    )


def judge_speed(
    study: xr.Dataset, cfg: Mapping[str, Any], resampling: Resampling = Resampling()
) -> dict[str, Any]:
    """Claim 1: speed of learning color against the color gap (see the module docstring)."""
    result = _judge("speed", cfg, resampling)
    if _missing_methods(study, ["naive"]):
        return result(NOT_EVALUATED, "the study holds no naive prompting")
    if "learning_time_concept" not in study:
        return result(NOT_EVALUATED, _older_study("learning_time_concept (T per concept)"))
    sweep_name, size_gap, levels = _sweep_levels(study)
    gaps = sorted(levels)
    times = [levels[gap]["learning_time_concept"].sel(concept=SPEED_CONCEPT).values for gap in gaps]
    reached = [np.isfinite(t) for t in times]
    mean_times = [float(t[r].mean()) if r.any() else np.nan for t, r in zip(times, reached)]
    data = {
        "sweep": sweep_name,
        "size_gap": size_gap,
        "concept": SPEED_CONCEPT,
        "color_gap": gaps,
        "runs": [len(t) for t in times],
        "runs_reached": [int(r.sum()) for r in reached],
        "mean_learning_time_reached": _numbers(mean_times),
        "learning_time": [_numbers(t) for t in times],
    }
    if len(gaps) < int(cfg["min_levels"]):
        return result(
            NOT_EVALUATED,
            f"the color sweep '{sweep_name}' has {len(gaps)} level(s) with runs; the claim needs "
            f"at least {cfg['min_levels']} (claims.speed.min_levels): add color gaps to it",
            data=data,
        )
    groups = _speed_ranks(times)
    gap_of_run = np.repeat(gaps, [len(g) for g in groups])

    def rho(resampled: list[np.ndarray]) -> float:
        value = spearman(gap_of_run, np.concatenate(resampled))
        return 0.0 if np.isnan(value) else value  # every run equally fast: no order

    value = rho(groups)
    # Not judged, shown: color timed on all samples, an invalid one scoring 0.
    all_samples = [
        learning_time(
            levels[gap]["concept_accuracy"].sel(prompt=UNSEEN_CLASS, concept=SPEED_CONCEPT),
            threshold_of(study),
            sigma_of(study),
        ).values
        for gap in gaps
    ]
    rho_all_samples = rho(_speed_ranks(all_samples))
    data["learning_time_all_samples"] = [_numbers(t) for t in all_samples]
    data["spearman_all_samples"] = rho_all_samples
    per_level = ", ".join(
        f"\u0394c {gap:g}: "
        + (f"{_short(mean)}" if np.isfinite(mean) else "never")
        + f" ({int(r.sum())}/{len(r)} reached)"
        for gap, mean, r in zip(gaps, mean_times, reached)
    )
    detail = (
        f"Spearman {value:.3g} over {len(gap_of_run)} runs at \u0394s {size_gap:g}; mean "
        f"T({SPEED_CONCEPT}) of the runs that reached it: {per_level}; timed on all samples "
        f"(invalid ones 0), Spearman {rho_all_samples:.3g}"
    )
    few = _one_seed(groups, SIGNAL_SEEDS_KEY)
    if few:
        return result(INCONCLUSIVE, f"{few}; {detail}", value, data=data)
    if not any(r.any() for r in reached):
        return result(INCONCLUSIVE, f"{NOTHING_LEARNED}; {detail}", value, data=data)
    test = TESTS["speed"](groups, cfg, resampling.alpha)
    interval = resampling.interval(groups, rho)
    threshold = Estimate("the estimate", value, interval, float(cfg["min_spearman"]))
    outcome, reason = _decide(test, interval, CLAIMS["speed"].null, resampling, estimate=threshold)
    return result(outcome, f"{reason}; {detail}", value, interval, data=data, test=test)


def _speed_ranks(times: list[np.ndarray]) -> list[np.ndarray]:
    """Rank keys of learning times, per level: the speed 1/T, and 0 for a censored run
    (NaN), slower than any that learned."""
    reached = [np.isfinite(t) for t in times]
    return [np.where(r, 1.0 / np.where(r, t, 1.0), 0.0) for t, r in zip(times, reached)]


def _seed_margin(run: xr.Dataset, expected: str) -> dict[str, Any]:
    """Claim 2 for one seed's naive run of the unseen class: its path before it reaches
    the threshold (``concept_point``: no point where too few samples are valid), the
    nearest approach to a training class and the margin there."""
    reached_at = float(run["learning_time"])
    path = run["concept_point"]
    if np.isfinite(reached_at):
        path = path.isel(step=np.flatnonzero(path["step"].values < reached_at))
    turn_step, pulled_to = memorization_turn(path)
    entry = {"seed": int(run["seed"]), "reached_at": _number(reached_at), "turn_step": None}
    entry.update({"pulled_to": pulled_to, "margin": 0.0})  # no approach: no evidence
    if pulled_to is not None:
        point = path.sel(step=turn_step)
        distance = {
            name: float(np.hypot(point.sel(concept="color") - x, point.sel(concept="size") - y))
            for name, (x, y) in PULL_CORNERS.items()
        }
        (other,) = set(PULL_CORNERS) - {expected}
        entry.update({"turn_step": turn_step, "distance": distance})
        entry["margin"] = distance[other] - distance[expected]
    return entry


def judge_memorization(
    study: xr.Dataset, cfg: Mapping[str, Any], resampling: Resampling = Resampling()
) -> dict[str, Any]:
    """Claim 2: memorization of a training class first (see the module docstring)."""
    result = _judge("memorization", cfg, resampling)
    if _missing_methods(study, ["naive"]):
        return result(NOT_EVALUATED, "the study holds no naive prompting")
    if "accuracy_among_valid" not in study:
        return result(NOT_EVALUATED, _older_study("accuracy_among_valid (the valid floor)"))
    study = study.assign(concept_point=concept_point(study))
    sweep_name, size_gap, levels = _sweep_levels(study)
    if len(levels) < 2:
        return result(
            NOT_EVALUATED,
            f"the color sweep '{sweep_name}' has {len(levels)} level(s) with runs; the claim "
            "compares the weakest and the strongest color gap",
        )
    gaps = {"weakest": min(levels), "strongest": max(levels)}
    data: dict[str, Any] = {"sweep": sweep_name, "size_gap": size_gap}
    groups, notes = [], []
    for which, gap in gaps.items():
        expected = EXPECTED_PULL[which]
        unseen = levels[gap].sel(prompt=UNSEEN_CLASS)
        seeds = [_seed_margin(unseen.isel(seed=i), expected) for i in range(unseen.sizes["seed"])]
        margins = np.array([entry["margin"] for entry in seeds])
        groups.append(margins)
        pulled = [entry["pulled_to"] for entry in seeds]
        data[which] = {
            "color_gap": gap,
            "expected": expected,
            "mean_margin": float(margins.mean()),
            "seeds": seeds,
        }
        notes.append(
            f"\u0394c {gap:g} ({which}, expects {class_label(expected)}): mean margin "
            f"{margins.mean():+.3f} over {len(seeds)} seed(s); nearest approach to 01 in "
            f"{pulled.count('01')}, to 10 in {pulled.count('10')}, to neither in "
            f"{pulled.count(None)} before the threshold"
        )
    detail = "; ".join(notes)
    value = min(float(group.mean()) for group in groups)
    few = _one_seed(groups, SIGNAL_SEEDS_KEY)
    if few:
        return result(INCONCLUSIVE, f"{few}; {detail}", value, data=data)
    test = TESTS["memorization"](groups, cfg, resampling.alpha)
    interval = resampling.interval(groups, lambda g: min(float(m.mean()) for m in g))
    null, lower = CLAIMS["memorization"].null, float(cfg["min_margin"])
    outcome, reason = _decide(test, interval, null, resampling, lower)
    return result(outcome, f"{reason}; {detail}", value, interval, data=data, test=test)


# ----------------------------------------------------------------------------- claims 3 and 4


def _per_run(study: xr.Dataset, array: xr.DataArray) -> xr.DataArray:
    """``array`` with its (seed, color gap, size gap) stacked into one 'run' dim, keeping
    the runs that were run."""
    accuracy = study["accuracy"].sel({"method": "naive"}).sel(prompt=UNSEEN_CLASS)
    ran = _ran(accuracy).stack(run=SIGNAL_GRID).values
    return array.stack(run=SIGNAL_GRID).isel(run=np.flatnonzero(ran))


def _level_groups(per_run: xr.DataArray) -> list[np.ndarray]:
    """The values of ``per_run`` (dim 'run') grouped by signal level, levels in order."""
    levels = list(zip(per_run["color_gap"].values, per_run["size_gap"].values))
    values = per_run.values
    return [
        values[[i for i, at in enumerate(levels) if at == level]] for level in sorted(set(levels))
    ]


def _censored_per_run(study: xr.Dataset, learning_time: xr.DataArray) -> xr.DataArray:
    """``learning_time`` per run, censored one step past the last checkpoint."""
    return _per_run(study, _censored_past_last(learning_time, study["step"].values))


def _elicited_earlier_by(times: xr.DataArray, methods: Sequence[str]) -> xr.DataArray:
    """Per run (``times`` of ``_censored_per_run``): d = T(naive) - min over ``methods``."""
    return times.sel({"method": "naive"}) - times.sel({"method": list(methods)}).min("method")


def judge_hidden(
    study: xr.Dataset, cfg: Mapping[str, Any], resampling: Resampling = Resampling()
) -> dict[str, Any]:
    """Claim 3: eliciting methods reach the threshold before naive prompting."""
    result = _judge("hidden", cfg, resampling)
    methods = [m for m in ELICITING_METHODS if m not in _missing_methods(study, [m])]
    if _missing_methods(study, ["naive"]) or not methods:
        return result(
            NOT_EVALUATED,
            "the study holds no latent intervention or overprompting (switch on "
            "evaluation.methods.intervention.alphas or overprompt.colors)",
        )
    never = float(np.max(study["step"].values)) + 1.0
    times = _censored_per_run(study, study["learning_time"]).sel({"method": ["naive", *methods]})
    difference = _elicited_earlier_by(times, methods)
    if not difference.sizes["run"]:
        return result(NOT_EVALUATED, "the study holds no runs")
    groups = _level_groups(difference)
    d = np.concatenate(groups)

    def median(resampled: list[np.ndarray]) -> float:
        return float(np.median(np.concatenate(resampled)))

    def earlier(resampled: list[np.ndarray]) -> float:
        return float(np.mean(np.concatenate(resampled) > 0))

    test = TESTS["hidden"](groups, cfg, resampling.alpha)
    value, fraction, p_value = median(groups), earlier(groups), test.p_value
    detail = (
        f"{int(np.sum(d > 0))} of {len(d)} runs earlier with {' or '.join(methods)}, "
        f"{int(np.sum(d < 0))} later; median d = {_short(value)} steps; sign test "
        f"p = {p_value:.3g}"
    )
    data = {"methods": methods, "runs": len(d), "runs_earlier": int(np.sum(d > 0))}
    data |= {"runs_later": int(np.sum(d < 0)), "fraction_earlier": fraction}
    if "learning_time_all_samples" in study:
        on_all = _elicited_earlier_by(
            _censored_per_run(study, study["learning_time_all_samples"]), methods
        )
        data |= {"runs_earlier_all_samples": int(np.sum(on_all > 0))}
        data |= {"runs_later_all_samples": int(np.sum(on_all < 0))}
        detail += (
            f"; timed on all samples (invalid ones 0): {data['runs_earlier_all_samples']} "
            f"earlier, {data['runs_later_all_samples']} later"
        )
    few = _one_seed(groups, SIGNAL_SEEDS_KEY)
    if few:
        return result(INCONCLUSIVE, f"{few}; {detail}", value, p_value=p_value, data=data)
    if (times >= never).all():  # every method of every run censored: ties, no evidence
        return result(
            INCONCLUSIVE, f"{NOTHING_LEARNED}; {detail}", value, p_value=p_value, data=data
        )
    interval = resampling.interval(groups, median)
    fraction_interval = resampling.interval(groups, earlier)
    data["fraction_earlier_interval"] = list(fraction_interval)
    threshold = float(cfg["min_fraction"])
    earlier_runs = Estimate("the fraction of runs earlier", fraction, fraction_interval, threshold)
    outcome, reason = _decide(
        test, interval, CLAIMS["hidden"].null, resampling, estimate=earlier_runs
    )
    return result(outcome, f"{reason}; {detail}", value, interval, p_value, data, test)


def judge_patching(
    study: xr.Dataset, cfg: Mapping[str, Any], resampling: Resampling = Resampling()
) -> dict[str, Any]:
    """Claim 4: the final embedding module rescues naive prompting at earlier checkpoints."""
    result = _judge("patching", cfg, resampling)
    if _missing_methods(study, ["naive", PATCHED_METHOD]):
        return result(
            NOT_EVALUATED,
            f"the study holds no {PATCHED_METHOD} method (add 'final' to "
            "evaluation.methods.patching.donors)",
        )
    steps = study["step"].values
    if len(steps) < 2:
        return result(NOT_EVALUATED, "the study has one checkpoint; none is before the last")
    threshold = threshold_of(study)
    unseen = study["accuracy_among_valid"].sel(
        {"method": ["naive", PATCHED_METHOD], "prompt": UNSEEN_CLASS}
    )
    smoothed = _per_run(study, smooth_accuracy(unseen, sigma_of(study)))
    accuracy = smoothed.isel(step=slice(None, -1))
    # NaN compares False both ways: a missing value is neither failure nor success.
    naive, patched = accuracy.sel({"method": "naive"}), accuracy.sel({"method": PATCHED_METHOD})
    # A rescue needs a donor that draws the class itself: runs that end before their last
    # checkpoint does cannot be rescued, whatever the U-Net could do earlier.
    donors = int((smoothed.sel({"method": "naive"}).isel(step=-1) >= threshold).sum())
    # A reversal (patching breaks what naive prompting drew) is the rescue's mirror: with
    # no effect, accuracies jittering around the threshold give as many of each.
    rescued = ((naive < threshold) & (patched >= threshold)).sum("step")
    reversed_ = ((naive >= threshold) & (patched < threshold)).sum("step")
    if not rescued.sizes["run"]:
        return result(NOT_EVALUATED, "the study holds no runs")
    counts = _level_groups(xr.concat([rescued, reversed_], "count").transpose("run", "count"))
    groups = [(level[:, 0] > 0).astype(float) for level in counts]
    value = _mean(groups)
    detail = (
        f"{int(np.sum(rescued.values > 0))} of {rescued.sizes['run']} runs have such a "
        f"checkpoint; {int(rescued.sum())} (run, checkpoint) pairs in all, of "
        f"{rescued.sizes['run'] * (len(steps) - 1)}; {int(reversed_.sum())} the other way "
        "(naive at or above the threshold, patched below); the donor, the last checkpoint, "
        f"draws the class under naive prompting in {donors} of {rescued.sizes['run']} runs"
    )
    data = {"runs": rescued.sizes["run"], "rescued_checkpoints": int(rescued.sum())}
    data["reversed_checkpoints"] = int(reversed_.sum())
    data["donors_reaching_threshold"] = donors
    few = _one_seed(groups, SIGNAL_SEEDS_KEY)
    if few:
        return result(INCONCLUSIVE, f"{few}; {detail}", value, data=data)
    test = TESTS["patching"](counts, cfg, resampling.alpha)
    interval = resampling.interval(groups, _mean)
    threshold = Estimate("the estimate", value, interval, float(cfg["min_fraction"]))
    outcome, reason = _decide(
        test, interval, CLAIMS["patching"].null, resampling, estimate=threshold
    )
    return result(outcome, f"{reason}; {detail}", value, interval, data=data, test=test)


# ----------------------------------------------------------------------------- claim 5


def judge_underspecification(
    study: xr.Dataset | None,
    cfg: Mapping[str, Any],
    absent_reason: str = "",
    resampling: Resampling = Resampling(),
) -> dict[str, Any]:
    """Claim 5: the mean learning time against the masking ratio."""
    result = _judge("underspecification", cfg, resampling)
    if study is None:
        return result(NOT_EVALUATED, absent_reason)
    if _missing_methods(study, ["naive"]):
        return result(NOT_EVALUATED, "the underspecification study holds no naive prompting")
    naive = study.sel({"method": "naive"})
    ran = (
        naive["accuracy"]
        .notnull()
        .any([d for d in naive["accuracy"].dims if d not in ("seed", "mask_ratio")])
    )
    times = _censored_past_last(naive["learning_time"], study["step"].values).where(ran)
    never = float(np.max(study["step"].values)) + 1.0
    ratios, groups = [], []
    for ratio in sorted(float(r) for r in study["mask_ratio"].values):
        at = times.sel(mask_ratio=ratio).values
        if np.isfinite(at).any():
            ratios.append(ratio)
            groups.append(at[np.isfinite(at)])
    means = [float(group.mean()) for group in groups]
    data = {
        "mask_ratio": ratios,
        "mean_learning_time": means,
        "runs": [len(group) for group in groups],
        "runs_reached": [int(np.sum(group < never)) for group in groups],
    }
    if len(ratios) < 2:
        return result(
            NOT_EVALUATED,
            f"the underspecification study has {len(ratios)} masking ratio(s) with runs; the "
            "claim compares at least 2",
            data=data,
        )
    value = means[-1] - means[0]
    per_ratio = ", ".join(
        f"p {ratio:g}: {'never' if mean == never else _short(mean)} " f"({reached}/{runs} reached)"
        for ratio, mean, reached, runs in zip(ratios, means, data["runs_reached"], data["runs"])
    )
    detail = f"mean T over seeds (never: {never:.0f}): {per_ratio}"
    if len(ratios) >= 3:
        rho = spearman(np.repeat(ratios, data["runs"]), np.concatenate(groups))
        data["spearman"] = _number(rho)
        detail += f"; Spearman of ratio and T over runs {rho:.3g}"
    ends = [groups[0], groups[-1]]
    few = _one_seed(ends, "studies.underspecification.seeds")
    if few:
        return result(INCONCLUSIVE, f"{few}; {detail}", value, data=data)
    if all((group >= never).all() for group in ends):
        return result(INCONCLUSIVE, f"{NOTHING_LEARNED}; {detail}", value, data=data)
    test = TESTS["underspecification"](ends, cfg, resampling.alpha)
    interval = resampling.interval(ends, lambda g: float(g[1].mean() - g[0].mean()))
    null, lower = CLAIMS["underspecification"].null, float(cfg["min_delay"])
    seeds_key = "studies.underspecification.seeds"
    outcome, reason = _decide(test, interval, null, resampling, lower, seeds_key=seeds_key)
    if outcome == PASS and (groups[0] >= never).any():
        # A censored run at the smallest ratio counts at last step + 1, below its true T:
        # the delay is then no lower bound, and a pass would rest on that guess.
        outcome = INCONCLUSIVE
        reason = (
            f"{int(np.sum(groups[0] >= never))} run(s) at the smallest masking ratio "
            f"{ratios[0]:g} never reached the threshold, so the delay is not bounded below; "
            "train longer (training.steps)"
        )
    return result(outcome, f"{reason}; {detail}", value, interval, data=data, test=test)


# ----------------------------------------------------------------------------- all claims


def evaluate_claims(
    signal_study: xr.Dataset,
    claims_cfg: Mapping[str, Any],
    underspecification_study: xr.Dataset | None = None,
    underspecification_absent: str = "the underspecification study was not run",
) -> dict[str, dict[str, Any]]:
    """Every claim, by name: {statement, statistic, pass_if, threshold, null, value,
    interval, confidence, resamples, p_value, outcome, detail, data, test,
    false_pass_rate, frame_off}; ``frame_off`` holds the FRAME_OFF_KEPT fields of the
    claim judged with the validity verdict's frame rule off (:func:`judge_frame_off`).
    ``underspecification_absent`` is claim 5's reason when that study is None."""
    resampling = Resampling.from_config(claims_cfg)

    def judge_all(signal: xr.Dataset, underspecification: xr.Dataset | None) -> dict:
        return {
            "speed": judge_speed(signal, claims_cfg["speed"], resampling),
            "memorization": judge_memorization(signal, claims_cfg["memorization"], resampling),
            "hidden": judge_hidden(signal, claims_cfg["hidden"], resampling),
            "patching": judge_patching(signal, claims_cfg["patching"], resampling),
            "underspecification": judge_underspecification(
                underspecification,
                claims_cfg["underspecification"],
                underspecification_absent,
                resampling,
            ),
        }

    claims = judge_all(signal_study, underspecification_study)
    frame_off = judge_frame_off(signal_study, underspecification_study, judge_all)
    for name, claim in claims.items():
        claim["false_pass_rate"] = _false_pass_rate(name, claim, claims_cfg[name], resampling)
        claim["frame_off"] = frame_off[name]
        log.info(
            "claim %d (%s): %s; value %s, threshold %g; %s; frame rule off: %s",
            claim["number"],
            name,
            claim["outcome"],
            value_text(claim),
            claim["threshold"],
            claim["detail"],
            outcome_text(frame_off[name]),
        )
    return claims


def judge_frame_off(
    signal_study: xr.Dataset,
    underspecification_study: xr.Dataset | None,
    judge_all: Callable[[xr.Dataset, xr.Dataset | None], dict[str, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Every claim judged again by the same judges (``judge_all``: the claims by name, of
    the signal and underspecification studies) on the studies as if the validity verdict
    had no frame rule (``trajectories.frame_off_study``), so that a reader sees whether
    the rule matters: by name, its FRAME_OFF_KEPT fields. Outcome NOT_RECORDED for every
    claim when a study was gathered before evaluation recorded that verdict."""
    signal_off = frame_off_study(signal_study)
    under_off = (
        None if underspecification_study is None else frame_off_study(underspecification_study)
    )
    if signal_off is None or (underspecification_study is not None and under_off is None):
        detail = (
            "the study was gathered before evaluation recorded the verdict with the frame "
            "rule off (valid_frame_off); evaluate and gather it again to judge it that way"
        )
        unjudged = dict.fromkeys(FRAME_OFF_KEPT, None) | {"outcome": NOT_RECORDED}
        return {name: unjudged | {"detail": detail} for name in CLAIMS}
    judged = judge_all(signal_off, under_off)
    return {name: {key: claim[key] for key in FRAME_OFF_KEPT} for name, claim in judged.items()}


# Simulated null studies behind each claim's false-pass rate: its standard error is at
# most 0.005 near a rate of 0.05.
NULL_STUDIES = 2000


def _false_pass_rate(
    name: str, claim: Mapping[str, Any], cfg: Mapping[str, Any], resampling: Resampling
) -> float | None:
    """How often the claim's judge passes simulated studies with no effect and the same
    runs per level (``judges.pass_rate``); None when no test was run."""
    if claim.get("test") is None:
        return None
    sizes = claim["test"]["runs_per_level"]
    return pass_rate(name, sizes, cfg, resampling.alpha, "null", NULL_STUDIES, resampling.seed)


def open_underspecification(path: str | os.PathLike) -> xr.Dataset:
    """The underspecification study dataset (dims seed, mask_ratio, step, method, ...)."""
    return open_netcdf(
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


TABLE_COLUMNS = (
    "#",
    "claim",
    "statistic",
    "value [interval]",
    "p",
    "judged on",
    "threshold",
    "outcome",
    "frame rule off",
    "detail",
)
OUTCOME_COLORS = {
    PASS: "#1a7f37",
    FAIL: "#cf222e",
    INCONCLUSIVE: "#9a6700",  # amber
    NOT_EVALUATED: "#6e7781",
}


def value_text(claim: Mapping[str, Any]) -> str:
    """'0.833 [0.41, 1]': the value and its interval ('\u2014' when there is no value)."""
    if claim["value"] is None:
        return "\u2014"
    text = _short(claim["value"])
    if claim.get("interval") is not None:
        text += " [" + ", ".join(_short(bound) for bound in claim["interval"]) + "]"
    return text


def outcome_text(claim: Mapping[str, Any]) -> str:
    """'pass (0.833 [0.41, 1])': the outcome, and its value where there is one."""
    value = value_text(claim)
    return claim["outcome"] + ("" if value == "\u2014" else f" ({value})")


def judged_on_text(claim: Mapping[str, Any]) -> str:
    """'2 seed(s) x 3 level(s); passes chance 1.1%': the runs the claim's test saw and
    how often its judge passes studies with no effect at that design."""
    test = claim.get("test")
    if test is None:
        return "\u2014"
    text = _runs_text(test["runs_per_level"])
    rate = claim.get("false_pass_rate")
    if rate is not None:
        text += f"; passes chance {100 * rate:.1f}%"
    return text


def table_rows(record: Mapping[str, Any]) -> list[list[str]]:
    """The cells of the claims table (plain text, columns TABLE_COLUMNS), by claim number."""
    return [
        [
            str(claim["number"]),
            claim["statement"],
            claim["statistic"],
            value_text(claim),
            "\u2014" if claim.get("p_value") is None else f"{claim['p_value']:.3g}",
            judged_on_text(claim),
            f"{claim['threshold']:g} ({claim['pass_if']})",
            claim["outcome"],
            # claims.json written before the frame-off outcome was recorded has none
            outcome_text(claim.get("frame_off") or {"outcome": NOT_RECORDED, "value": None}),
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
    first = min(record["claims"].values(), key=lambda c: c["number"])
    intervals = (
        f"Intervals: {100 * first['confidence']:g}% percentile bootstrap over seeds within each "
        f"level, {first['resamples']} resamples. p: each claim's exact one-sided test (its "
        f"statistic); a claim passes only when p <= {1 - first['confidence']:g}. Judged on: "
        f"the runs the test saw, and the share of {NULL_STUDIES} simulated studies with no "
        "effect and those runs that the judge passes. Frame rule off: the outcome (value) "
        "of the same judge on the study whose validity verdict has no frame rule "
        "(docs/scoring.md); not recorded: the study was gathered before that verdict was."
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Claims</title>\n<style>'
        "table{border-collapse:collapse;font:13px sans-serif}"
        "td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}"
        "</style></head><body>\n"
        f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>\n"
        f'<p style="font:11px sans-serif;color:#555">{intervals} From {html.escape(source)}; config '
        f"{origin['config_hash']}, commit {html.escape(origin['git_commit'])}.</p>\n"
        "</body></html>\n"
    )


def claims_table_markdown(record: Mapping[str, Any]) -> str:
    """The claims table in Markdown (for a README): `python -m conceptspace claims-table`."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for cells in table_rows(record):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
