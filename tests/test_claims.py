"""The claims table: each claim's statistic and bootstrap interval on hand-made study
datasets (to the contract of gather_study) where it passes, fails, is inconclusive (a
wide interval, one seed per level) and cannot be evaluated, with exact expected values;
censored runs; the written claims.json is the same for the same input."""

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from conceptspace import cli
from conceptspace.claims import (
    FAIL,
    INCONCLUSIVE,
    FRAME_OFF_KEPT,
    NOT_EVALUATED,
    NOT_RECORDED,
    OUTCOME_COLORS,
    PASS,
    Resampling,
    evaluate_claims,
    judge_hidden,
    judge_memorization,
    judge_patching,
    judge_speed,
    judge_underspecification,
    outcome_text,
    table_rows,
    TABLE_COLUMNS,
    write_claims,
)
from conceptspace.concepts import CLASSES, CONCEPTS
from conceptspace.config import load_config
from conceptspace.info import PROVENANCE_KEYS
from conceptspace.io import ConceptspaceError
from conceptspace.statistics import sign_test, spearman
from conceptspace.netcdf import SUMMARIES, save_dataset_nc
from conceptspace.trajectories import (
    accuracy_among_valid,
    concept_accuracy_among_valid,
    learning_time,
)
from conftest import REPO, SMOKE, snakemake

STEPS = [100, 200, 400, 800]
NEVER = 801  # one step past the last checkpoint
THRESHOLD = 0.8
MIN_VALID_FRACTION = 0.25
SIZE_GAP = 0.4
COLOR_GAPS = [0.1, 0.2, 0.4]
STUDY_CONFIG = {
    "studies": {
        "signal": {
            "sweeps": [
                {"name": "color_gap", "color_gap": COLOR_GAPS, "size_gap": [SIZE_GAP]},
                {"name": "size_gap", "color_gap": [0.4], "size_gap": [0.2, 0.4]},
            ]
        }
    },
    "figures": {"signal": {"color_sweep": "color_gap", "size_sweep": "size_gap"}},
}
CLAIMS_CFG = load_config(REPO / "config.yaml")["claims"]
ALL_METHODS = ("naive", "overprompt", "intervention", "patched_final")


def reaching(step):
    """The unseen class's accuracy at STEPS when it first reaches the threshold at
    ``step`` (None: never)."""
    return [0.9 if step is not None and s >= step else 0.1 for s in STEPS]


def unseen_points(values):
    """Concept-space points of the unseen class: (x, y) pairs as given; accuracies a as
    (sqrt a, sqrt a), so that the accuracy (their product) is a; None: no sample held
    an object at that checkpoint (no point)."""
    return [
        (np.nan, np.nan) if v is None else v if isinstance(v, tuple) else (np.sqrt(v),) * 2
        for v in values
    ]


def grid_study(runs, grid, methods, config):
    """A study dataset to the contract of gather_study on the grid {dim: values}
    (first dim 'seed'). ``runs``: {(grid values..., method): per-step values of the
    unseen class 11 (unseen_points)}; everything else is NaN (not run, or a method that
    does not prompt a class); the training classes of a run are at 0.9. Every sample
    is taken to score alike, so concept_accuracy = valid_fraction x concept_prob,
    accuracy = valid_fraction x the product of the concept_prob, and the hard accuracies
    and the product of means are the accuracies."""
    dims = tuple(grid)
    shape = tuple(len(v) for v in grid.values()) + (len(STEPS), len(methods), len(CLASSES))
    prob = np.full(shape + (len(CONCEPTS),), np.nan)
    valid = np.full(shape, np.nan)
    unseen = CLASSES.index("11")
    for *at, method in runs:
        index = tuple(list(grid[d]).index(v) for d, v in zip(dims, at))
        index += (slice(None), methods.index(method))
        points = np.array(unseen_points(runs[(*at, method)]), dtype=float)
        prob[index + (unseen,)] = points
        prob[index + ([CLASSES.index(c) for c in ("00", "01", "10")],)] = np.sqrt(0.9)
        valid[index] = 1.0
        valid[index + (unseen,)] = np.isfinite(points).all(axis=-1)
    coords = {**grid, "step": STEPS, "method": list(methods), "prompt": list(CLASSES)}
    run_dims = dims + ("step", "method", "prompt")
    study = xr.Dataset(
        {"concept_prob": (run_dims + ("concept",), prob), "valid_fraction": (run_dims, valid)},
        coords=coords | {"concept": list(CONCEPTS)},
    )
    study.attrs["config"] = json.dumps(config)
    authors = {"threshold": THRESHOLD, "sigma": 0.0, "consecutive": 1}
    evaluation_cfg = {"threshold": THRESHOLD, "sigma": 0.0, "authors": authors}
    evaluation_cfg |= {"min_valid_fraction": MIN_VALID_FRACTION}  # as the learning times read
    study.attrs["evaluation_cfg"] = json.dumps(evaluation_cfg)
    return scored(study)


def scored(study):
    """``study`` (concept_prob, valid_fraction) with the accuracies and learning times
    derived from them as gather_study derives them."""
    dims = tuple(d for d in study["valid_fraction"].dims if d not in ("step", "method", "prompt"))
    valid_fraction = study["valid_fraction"]
    probability = study["concept_prob"].fillna(0.0)
    study["concept_accuracy"] = (valid_fraction * probability).where(valid_fraction.notnull())
    study["accuracy"] = (valid_fraction * probability.prod("concept")).where(
        valid_fraction.notnull()
    )
    study["hard_accuracy"] = study["product_of_means"] = study["accuracy"]
    study["hard_concept_accuracy"] = study["concept_accuracy"]
    study["accuracy_among_valid"] = accuracy_among_valid(study, MIN_VALID_FRACTION)
    study["accuracy_among_valid"].attrs["min_valid_fraction"] = MIN_VALID_FRACTION
    unseen_class = study.sel(prompt="11")
    times = learning_time(unseen_class["accuracy_among_valid"], THRESHOLD)
    study["learning_time"] = times.transpose(*dims, "method")
    times = learning_time(unseen_class["accuracy"], THRESHOLD)
    study["learning_time_all_samples"] = times.transpose(*dims, "method")
    among_valid = concept_accuracy_among_valid(unseen_class, MIN_VALID_FRACTION)
    times = learning_time(among_valid, THRESHOLD)
    study["learning_time_concept"] = times.transpose(*dims, "method", "concept")
    study["learning_speed"] = 1.0 / study["learning_time"]
    return study


def with_frame_off(study, frame_off):
    """``study`` with the summaries of ``frame_off`` (a study on the same grid) as their
    twins with the verdict's frame rule off, as gather_study keeps them."""
    return study.assign({name + "_frame_off": frame_off[name] for name in SUMMARIES})


def signal_study(runs, methods=ALL_METHODS, config=STUDY_CONFIG):
    """``runs``: {(seed, color gap, method): unseen class values}, all at SIZE_GAP."""
    seeds = sorted({seed for seed, _, _ in runs})
    runs = {(seed, gap, SIZE_GAP, method): v for (seed, gap, method), v in runs.items()}
    grid = {"seed": seeds, "color_gap": COLOR_GAPS, "size_gap": [SIZE_GAP]}
    return grid_study(runs, grid, list(methods), config)


def underspecification_study(times):
    """``times``: {(seed, masking ratio): first step at the threshold or None}."""
    grid = {"seed": sorted({s for s, _ in times}), "mask_ratio": sorted({r for _, r in times})}
    runs = {(seed, ratio, "naive"): reaching(step) for (seed, ratio), step in times.items()}
    return grid_study(runs, grid, ["naive"], {})


def by_seed(times):
    """{level: [first step of seed 0, seed 1, ...]} -> {(seed, level): first step}."""
    return {
        (seed, level): step for level, steps in times.items() for seed, step in enumerate(steps)
    }


def naive_times(times):
    """{color gap: first step per seed} -> naive runs of the signal study."""
    return {(seed, gap, "naive"): reaching(step) for (seed, gap), step in by_seed(times).items()}


# ----------------------------------------------------------------------------- claim 1
# First step at the threshold of each seed (0, 1, 2) per color gap; None: never.
RISING = {0.1: [None, 800, 800], 0.2: [400, 400, 200], 0.4: [100, 100, 200]}
FALLING = {0.1: RISING[0.4], 0.2: RISING[0.2], 0.4: RISING[0.1]}
MIXED = {0.1: [800, 100, None], 0.2: [400, 800, 200], 0.4: [100, 200, 400]}


def test_same_seed_same_interval_and_the_settings_come_from_the_config():
    assert Resampling.from_config(CLAIMS_CFG) == Resampling(0.95, 2000, 0)
    settings = Resampling.from_config({"confidence": 0.9, "bootstrap_resamples": 500, "seed": 7})
    assert settings == Resampling(0.9, 500, 7)
    study = signal_study(naive_times(RISING))
    first = judge_speed(study, CLAIMS_CFG["speed"], settings)
    assert first["interval"] == judge_speed(study, CLAIMS_CFG["speed"], settings)["interval"]
    assert (first["confidence"], first["resamples"]) == (0.9, 500)


def speed_keys(times):
    """(gap, rank key) per run: the speed 1/T, 0 for a run that never learned."""
    pairs = [(gap, 0.0 if t is None else 1 / t) for gap, ts in times.items() for t in ts]
    return [gap for gap, _ in pairs], [key for _, key in pairs]


def test_speed_passes_when_the_speed_of_learning_color_rises_with_the_color_gap():
    claim = judge_speed(signal_study(naive_times(RISING)), CLAIMS_CFG["speed"])
    # the censored run (seed 0 at gap 0.1) ranks slowest, below the two at step 800
    assert claim["value"] == pytest.approx(spearman(*speed_keys(RISING)))
    assert claim["value"] == pytest.approx(0.938, abs=1e-3)
    assert claim["outcome"] == PASS and 0 < claim["interval"][0] <= claim["value"]
    assert claim["interval"][1] == 1.0 and claim["null"] == 0
    # 1,680 dealings of 9 runs to 3 gaps of 3; two give rho >= 0.938: swapping the tied
    # runs at step 800 between gaps 0.1 and 0.2, and the observed one
    assert claim["p_value"] == pytest.approx(2 / 1680)
    assert claim["test"] == {
        "name": "permutation test of rho",
        "alpha": pytest.approx(0.05),
        "smallest_p": pytest.approx(1 / 1680),
        "runs_per_level": [3, 3, 3],
    }
    assert claim["detail"].startswith("permutation test of rho: p = 0.00119 <= 0.05")
    data = claim["data"]
    assert data["runs"] == [3, 3, 3] and data["runs_reached"] == [2, 3, 3]
    assert data["mean_learning_time_reached"] == pytest.approx([800, 1000 / 3, 400 / 3])
    assert data["learning_time"][0] == [None, 800, 800] and data["concept"] == "color"


def fewer_valid(study, gaps, fraction):
    """``study`` with the unseen class's valid fraction at ``gaps`` scaled to
    ``fraction`` of its value (its valid samples as they were), scores derived again."""
    valid = study["valid_fraction"].copy()
    at = {"prompt": "11", "color_gap": gaps}
    valid.loc[at] = valid.loc[at] * fraction
    return scored(study.assign(valid_fraction=valid))


def test_speed_times_color_among_the_valid_samples():
    # Half the samples at the two stronger gaps hold no object: among the valid ones the
    # color is learned as before (claim 1 as RISING), while timed on all samples
    # (invalid = 0) those gaps never reach the threshold and the order reverses.
    study = fewer_valid(signal_study(naive_times(RISING)), [0.2, 0.4], 0.5)
    claim = judge_speed(study, CLAIMS_CFG["speed"])
    assert claim["outcome"] == PASS and claim["value"] == pytest.approx(0.938, abs=1e-3)
    assert claim["data"]["spearman_all_samples"] < 0
    assert claim["data"]["learning_time_all_samples"][2] == [None, None, None]
    assert "timed on all samples (invalid ones 0), Spearman -" in claim["detail"]


def test_speed_does_not_time_color_on_a_few_lucky_objects():
    # Negative control: at the stronger gaps only 20% of the samples are valid (below
    # evaluation.min_valid_fraction), all of them the right color: not learned there.
    study = fewer_valid(signal_study(naive_times(RISING)), [0.2, 0.4], 0.2)
    claim = judge_speed(study, CLAIMS_CFG["speed"])
    assert claim["data"]["runs_reached"] == [2, 0, 0]
    assert claim["outcome"] != PASS and claim["value"] < 0


def test_speed_fails_when_the_interval_lies_below_no_effect():
    claim = judge_speed(signal_study(naive_times(FALLING)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == FAIL and claim["value"] == pytest.approx(-0.938, abs=1e-3)
    assert claim["interval"][1] < 0 and "lies at or below no effect (0)" in claim["detail"]


def test_speed_is_inconclusive_when_the_interval_includes_no_effect():
    claim = judge_speed(signal_study(naive_times(MIXED)), CLAIMS_CFG["speed"])
    assert claim["value"] == pytest.approx(spearman(*speed_keys(MIXED)))
    lo, hi = claim["interval"]
    assert claim["outcome"] == INCONCLUSIVE and lo < 0 < CLAIMS_CFG["speed"]["min_spearman"] < hi
    assert f"interval [{lo:.3g}, {hi:.3g}] includes no effect (0)" in claim["detail"]
    assert "is below the threshold 0.8" in claim["detail"] and claim["p_value"] > 0.05


def test_speed_is_inconclusive_when_only_the_estimate_misses_the_threshold():
    claim = judge_speed(
        signal_study(naive_times(RISING)), CLAIMS_CFG["speed"] | {"min_spearman": 1.0}
    )
    assert claim["interval"][0] > 0 and claim["interval"][1] == 1.0  # it reaches 1
    assert claim["outcome"] == INCONCLUSIVE
    assert claim["detail"].startswith("the estimate, 0.938, is below the threshold 1;")


def test_speed_fails_when_the_interval_lies_below_the_threshold():
    # the correlation is positive, but not as strong as asked for
    times = {0.1: [800, 200, None], 0.2: [400, 100, 800], 0.4: [100, 200, 100]}
    claim = judge_speed(
        signal_study(naive_times(times)), CLAIMS_CFG["speed"] | {"min_spearman": 0.99}
    )
    assert claim["interval"][0] > 0 and claim["interval"][1] < 0.99
    assert claim["outcome"] == FAIL and "below the threshold 0.99" in claim["detail"]


def test_speed_with_one_seed_per_level_is_inconclusive():
    times = {gap: steps[1:2] for gap, steps in RISING.items()}
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == INCONCLUSIVE and claim["value"] == pytest.approx(1.0)
    assert claim["interval"] is None
    assert claim["detail"].startswith("one seed per level: no interval over seeds")
    assert "studies.signal.seeds" in claim["detail"]


def test_speed_reads_the_time_of_learning_color_not_the_joint_one():
    # color learned at the given step, size never: no run reaches the joint threshold
    runs = {
        (seed, gap, "naive"): [
            (0.95 if step is not None and s >= step else 0.3, 0.3) for s in STEPS
        ]
        for (seed, gap), step in by_seed(RISING).items()
    }
    study = signal_study(runs)
    assert study["learning_time"].isnull().all()
    claim = judge_speed(study, CLAIMS_CFG["speed"])
    assert claim["outcome"] == PASS and claim["value"] == pytest.approx(0.938, abs=1e-3)


def test_speed_is_inconclusive_when_nothing_is_ever_learned():
    # every run censored: all tied as slowest, no order (0); but "more than the last
    # step" everywhere says nothing about which gap is faster, so no fail either
    times = {gap: [None] * 3 for gap in COLOR_GAPS}
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == INCONCLUSIVE and claim["value"] == 0
    assert "no run reached the threshold" in claim["detail"]
    assert "never (0/3 reached)" in claim["detail"]


def test_hidden_and_underspecification_are_inconclusive_when_nothing_is_ever_learned():
    never = {(seed, gap): (None, None, None) for seed in (0, 1) for gap in COLOR_GAPS}
    claim = judge_hidden(methods_study(never), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == INCONCLUSIVE and "no run reached the threshold" in claim["detail"]
    times = {0.0: [None, None], 1.0: [None, None]}
    claim = judge_underspecification(
        underspecification_study(by_seed(times)), CLAIMS_CFG["underspecification"]
    )
    assert claim["outcome"] == INCONCLUSIVE and "no run reached the threshold" in claim["detail"]


def test_speed_is_not_evaluated_with_fewer_levels_than_asked_or_without_concept_times():
    times = {gap: steps for gap, steps in RISING.items() if gap != 0.4}  # 0.4 not run
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == NOT_EVALUATED and claim["value"] is None
    assert "2 level(s)" in claim["detail"] and "claims.speed.min_levels" in claim["detail"]
    study = signal_study(naive_times(RISING)).drop_vars("learning_time_concept")
    claim = judge_speed(study, CLAIMS_CFG["speed"])
    assert claim["outcome"] == NOT_EVALUATED and "learning_time_concept" in claim["detail"]


# ----------------------------------------------------------------------------- claim 2
# All reach the threshold at step 800; before it, the weak gap's nearest approach is to
# 01 at step 200 (0.05, 0.9), the strong gap's to 10 at step 200 (0.9, 0.1).
TO_RED_SMALL = [(0.2, 0.8), (0.05, 0.9), (0.5, 0.95), (0.9, 0.95)]
TO_BLUE_LARGE = [(0.8, 0.2), (0.9, 0.1), (0.95, 0.5), (0.95, 0.9)]
STRAIGHT = [(0.5, 0.5), (0.7, 0.7), (0.85, 0.85), (0.95, 0.95)]
RED_SMALL_MARGIN = np.hypot(0.95, 0.9) - np.hypot(0.05, 0.1)
BLUE_LARGE_MARGIN = np.hypot(0.9, 0.9) - np.hypot(0.1, 0.1)


def paths_study(weak, strong):
    """One path per seed at the weakest and the strongest color gap."""
    runs = {}
    for seed, (weak_path, strong_path) in enumerate(zip(weak, strong)):
        runs |= {(seed, 0.1, "naive"): weak_path, (seed, 0.4, "naive"): strong_path}
        runs[(seed, 0.2, "naive")] = reaching(400)
    return signal_study(runs)


def test_memorization_passes_when_weak_and_strong_gaps_pull_to_their_corners():
    # five seeds per gap: the smallest p of a sign-flip test on five margins is 1/32
    study = paths_study([TO_RED_SMALL] * 5, [TO_BLUE_LARGE] * 5)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == PASS and claim["p_value"] == pytest.approx(1 / 32)
    assert claim["value"] == pytest.approx(min(RED_SMALL_MARGIN, BLUE_LARGE_MARGIN))
    assert claim["interval"] == pytest.approx([claim["value"]] * 2)  # the same every seed
    weakest, strongest = claim["data"]["weakest"], claim["data"]["strongest"]
    assert (weakest["color_gap"], weakest["expected"], strongest["expected"]) == (0.1, "01", "10")
    seed = weakest["seeds"][0]
    assert {key: seed[key] for key in ("seed", "pulled_to", "turn_step", "reached_at")} == {
        "seed": 0,
        "pulled_to": "01",
        "turn_step": 200,
        "reached_at": 800,
    }
    assert seed["margin"] == pytest.approx(RED_SMALL_MARGIN)
    assert strongest["mean_margin"] == pytest.approx(BLUE_LARGE_MARGIN)


def test_memorization_fails_when_the_strong_gap_is_pulled_to_red_small():
    study = paths_study([TO_RED_SMALL] * 3, [TO_RED_SMALL] * 3)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == FAIL and claim["value"] == pytest.approx(-RED_SMALL_MARGIN)
    assert claim["interval"][1] < 0


def test_memorization_is_inconclusive_when_one_seed_in_three_goes_the_other_way():
    # weak gap: mean margin (2 m - m') / 3 > 0, but a resample can draw the odd seed thrice
    study = paths_study([TO_RED_SMALL, TO_RED_SMALL, TO_BLUE_LARGE], [TO_BLUE_LARGE] * 3)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["value"] == pytest.approx((2 * RED_SMALL_MARGIN - BLUE_LARGE_MARGIN) / 3)
    assert claim["outcome"] == INCONCLUSIVE and claim["interval"][0] < 0 < claim["value"]
    assert "includes no effect (0)" in claim["detail"]


def test_memorization_with_three_seeds_cannot_pass_and_says_so():
    # every seed pulled to its corner, but three margins give sign-flip p >= 1/8
    study = paths_study([TO_RED_SMALL] * 3, [TO_BLUE_LARGE] * 3)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == INCONCLUSIVE and claim["p_value"] == pytest.approx(1 / 8)
    assert claim["interval"][0] > 0  # the bootstrap alone would have passed it
    assert "its smallest possible p is 0.125, so no outcome could pass" in claim["detail"]
    assert "run more seeds (studies.signal.seeds)" in claim["detail"]


def test_memorization_without_an_approach_is_no_evidence():
    study = paths_study([STRAIGHT] * 3, [TO_BLUE_LARGE] * 3)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["data"]["weakest"]["seeds"][0]["pulled_to"] is None
    assert claim["value"] == 0 and claim["outcome"] == FAIL  # margin 0 is not > 0
    assert "to neither in 3 before the threshold" in claim["detail"]


def test_memorization_only_looks_before_each_seeds_threshold():
    # seed 2 reaches the threshold at step 200: only step 100, at (0.5, 0.5), is before
    # it, so its later pass by 01 is no memorization: margin 0
    early = [(0.5, 0.5), (0.9, 0.95), (0.05, 0.9), (0.9, 0.95)]
    study = paths_study([TO_RED_SMALL, TO_RED_SMALL, early], [TO_BLUE_LARGE] * 3)
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    seed = claim["data"]["weakest"]["seeds"][2]
    assert (seed["reached_at"], seed["pulled_to"], seed["margin"]) == (200, None, 0.0)
    assert claim["value"] == pytest.approx(2 * RED_SMALL_MARGIN / 3)


def test_memorization_skips_checkpoints_without_a_valid_sample():
    # no sample held an object at step 100: no point there, the path goes on
    path = [None] + TO_RED_SMALL[1:]
    study = paths_study([path] * 5, [TO_BLUE_LARGE] * 5)
    valid = study["valid_fraction"].sel({"prompt": "11", "step": 100, "method": "naive"})
    assert valid.sel(color_gap=0.1).max() == 0 and valid.sel(color_gap=0.4).min() == 1
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["data"]["weakest"]["seeds"][0]["turn_step"] == 200 and claim["outcome"] == PASS


def test_memorization_reads_no_point_where_too_few_samples_are_valid():
    # the weak gap's approach to 01 at step 200 is read from few objects: below the floor
    # (claim 1's, evaluation.min_valid_fraction) it is no point, at the floor it counts
    def with_valid_at_turn(fraction):
        study = paths_study([TO_RED_SMALL] * 5, [TO_BLUE_LARGE] * 5)
        at_turn = {"prompt": "11", "step": 200, "method": "naive", "color_gap": 0.1}
        study["valid_fraction"].loc[at_turn] = fraction
        return scored(study)

    few = judge_memorization(
        with_valid_at_turn(0.8 * MIN_VALID_FRACTION), CLAIMS_CFG["memorization"]
    )
    seed = few["data"]["weakest"]["seeds"][0]
    assert seed["turn_step"] != 200 and seed["margin"] < RED_SMALL_MARGIN
    enough = judge_memorization(with_valid_at_turn(MIN_VALID_FRACTION), CLAIMS_CFG["memorization"])
    seed = enough["data"]["weakest"]["seeds"][0]
    assert seed["turn_step"] == 200 and seed["margin"] == pytest.approx(RED_SMALL_MARGIN)
    older = paths_study([TO_RED_SMALL] * 5, [TO_BLUE_LARGE] * 5).drop_vars("accuracy_among_valid")
    claim = judge_memorization(older, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == NOT_EVALUATED and "gathered by an older version" in claim["detail"]


def test_memorization_with_one_seed_is_inconclusive_and_with_one_level_not_evaluated():
    claim = judge_memorization(
        paths_study([TO_RED_SMALL], [TO_BLUE_LARGE]), CLAIMS_CFG["memorization"]
    )
    assert claim["outcome"] == INCONCLUSIVE and claim["interval"] is None
    assert claim["value"] == pytest.approx(min(RED_SMALL_MARGIN, BLUE_LARGE_MARGIN))
    study = signal_study({(0, 0.1, "naive"): TO_RED_SMALL, (1, 0.1, "naive"): TO_RED_SMALL})
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == NOT_EVALUATED and "1 level(s)" in claim["detail"]


# ----------------------------------------------------------------------------- claim 3
# (seed, color gap): first step at the threshold of naive, overprompt, intervention
LEADS = {
    (0, 0.1): (800, 200, 400),  # d = 600
    (1, 0.1): (None, None, 400),  # never = 801: d = 401
    (2, 0.1): (400, 400, 100),  # d = 300
    (0, 0.2): (400, 200, None),  # d = 200
    (1, 0.2): (800, 800, 400),  # d = 400
    (2, 0.2): (200, 200, 200),  # d = 0
}
HIDDEN_METHODS = ("naive", "overprompt", "intervention")


def methods_study(times, methods=HIDDEN_METHODS):
    runs = {
        (seed, gap, method): reaching(step)
        for (seed, gap), steps in times.items()
        for method, step in zip(methods, steps)
    }
    return signal_study(runs, methods=methods)


def test_hidden_passes_when_eliciting_methods_lead_in_most_runs():
    claim = judge_hidden(methods_study(LEADS), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == PASS and claim["value"] == np.median([600, 401, 300, 200, 400, 0])
    assert claim["interval"][0] > 0
    # the tie (both at step 200) is dropped: 5 of 5 positive
    assert claim["p_value"] == pytest.approx(1 / 32)
    data = claim["data"]
    assert (data["runs"], data["runs_earlier"], data["runs_later"]) == (6, 5, 0)
    assert data["fraction_earlier"] == pytest.approx(5 / 6)


def test_hidden_counts_a_run_that_never_learns_as_one_step_past_the_last():
    # both never: d = 0, no lead; naive never, elicited at 400: d = NEVER - 400
    times = {(0, 0.1): (None, None, None), (1, 0.1): (None, 400, None)}
    claim = judge_hidden(methods_study(times), CLAIMS_CFG["hidden"])
    assert claim["value"] == (NEVER - 400) / 2 and claim["data"]["runs_earlier"] == 1
    assert claim["p_value"] == 0.5


def test_hidden_fails_when_naive_prompting_is_first():
    times = {(0, 0.1): (100, 400, 800), (1, 0.1): (200, 400, 400), (0, 0.2): (100, 200, 200)}
    times |= {(1, 0.2): (200, None, 800)}
    claim = judge_hidden(methods_study(times), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == FAIL and claim["interval"][1] < 0
    assert claim["p_value"] == 1.0 and claim["data"]["runs_later"] == 4


def test_hidden_is_inconclusive_when_the_lead_is_not_clear():
    # three leads, three lags per level mix: the median's interval straddles 0
    times = {(0, 0.1): (800, 200, 200), (1, 0.1): (100, 800, 800), (2, 0.1): (400, 200, 200)}
    times |= {(0, 0.2): (200, 400, 400), (1, 0.2): (800, 100, 100), (2, 0.2): (100, 200, 200)}
    claim = judge_hidden(methods_study(times), CLAIMS_CFG["hidden"])
    lo, hi = claim["interval"]
    assert claim["outcome"] == INCONCLUSIVE and lo < 0 < hi
    assert claim["data"]["fraction_earlier"] == 0.5 and claim["p_value"] == pytest.approx(0.65625)
    assert "includes no effect (0)" in claim["detail"]


def test_hidden_with_one_seed_per_level_is_inconclusive():
    times = {key: steps for key, steps in LEADS.items() if key[0] == 0}
    claim = judge_hidden(methods_study(times), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == INCONCLUSIVE and claim["interval"] is None
    assert claim["value"] == 400 and "one seed per level" in claim["detail"]


def test_hidden_uses_the_eliciting_methods_the_study_holds():
    times = {key: steps[:2] for key, steps in LEADS.items()}  # overprompting alone
    claim = judge_hidden(methods_study(times, ("naive", "overprompt")), CLAIMS_CFG["hidden"])
    assert claim["data"]["methods"] == ["overprompt"]
    assert claim["data"]["runs_earlier"] == 2  # d = 600, 0, 0, 200, 0, 0


def test_hidden_times_each_method_among_its_valid_samples_above_the_floor():
    # The eliciting methods draw the class in every valid sample, but only some samples
    # hold an object: 60% (above the floor) leads as before, and on all samples (invalid
    # ones 0, accuracy <= 0.6) never reaches the threshold; 20% (below it) never leads.
    def with_eliciting_valid(fraction):
        study = methods_study(LEADS)
        eliciting = {"method": ["overprompt", "intervention"], "prompt": "11"}
        study["valid_fraction"].loc[eliciting] = study["valid_fraction"].loc[eliciting] * fraction
        return scored(study)

    claim = judge_hidden(with_eliciting_valid(0.6), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == PASS and claim["data"]["runs_earlier"] == 5
    data = claim["data"]  # on all samples naive is first wherever it learns
    assert (data["runs_earlier_all_samples"], data["runs_later_all_samples"]) == (0, 5)
    assert "timed on all samples (invalid ones 0): 0 earlier, 5 later" in claim["detail"]
    claim = judge_hidden(with_eliciting_valid(0.2), CLAIMS_CFG["hidden"])
    assert claim["outcome"] == FAIL and claim["data"]["runs_earlier"] == 0


def test_hidden_is_not_evaluated_without_an_eliciting_method():
    study = methods_study({(0, 0.1): (800, 800)}, ("naive", "patched_final"))
    claim = judge_hidden(study, CLAIMS_CFG["hidden"])
    assert claim["outcome"] == NOT_EVALUATED and "intervention" in claim["detail"]


# ----------------------------------------------------------------------------- claim 4
RESCUED = {"naive": reaching(800), "patched_final": reaching(200)}  # rescued at 200, 400
LATE = {"naive": reaching(None), "patched_final": reaching(800)}  # at the last: no rescue


def patching_study(runs):
    """``runs``: {(seed, color gap): {method: unseen class values}}."""
    flat = {(*key, method): v for key, methods in runs.items() for method, v in methods.items()}
    return signal_study(flat, methods=("naive", "patched_final"))


def test_patching_passes_when_every_run_is_rescued_before_the_last_checkpoint():
    runs = {(seed, gap): RESCUED for seed in (0, 1, 2) for gap in (0.1, 0.2)}
    claim = judge_patching(patching_study(runs), CLAIMS_CFG["patching"])
    assert claim["outcome"] == PASS and claim["value"] == 1.0 and claim["interval"] == [1, 1]
    assert claim["data"] == {
        "runs": 6,
        "rescued_checkpoints": 12,
        "reversed_checkpoints": 0,
        "donors_reaching_threshold": 6,
    }
    assert claim["p_value"] == pytest.approx(1 / 64)  # six runs, each more rescues


def test_patching_is_inconclusive_when_reversals_match_the_rescues():
    # patching breaks naive prompting as often as it rescues it: no effect
    broken = {"naive": reaching(200), "patched_final": reaching(800)}  # reversed at 200, 400
    runs = {(seed, 0.1): RESCUED for seed in (0, 1, 2)} | {
        (seed, 0.2): broken for seed in (0, 1, 2)
    }
    claim = judge_patching(patching_study(runs), CLAIMS_CFG["patching"])
    assert claim["value"] == 0.5 and claim["data"]["reversed_checkpoints"] == 6
    assert claim["p_value"] == pytest.approx(42 / 64)  # 3 of 6 runs: P(at least 3 of 6)
    assert claim["outcome"] != PASS


def test_patching_is_inconclusive_when_half_the_runs_are_rescued():
    # one of two runs per level: a resample can draw the unrescued run at both levels
    runs = {(0, 0.1): RESCUED, (1, 0.1): LATE, (0, 0.2): LATE, (1, 0.2): RESCUED}
    claim = judge_patching(patching_study(runs), CLAIMS_CFG["patching"])
    assert claim["value"] == 0.5 and claim["interval"] == [0, 1]
    assert claim["outcome"] == INCONCLUSIVE and "includes no effect (0)" in claim["detail"]
    # two runs differ (rescued), two tie (nothing either way): the sign test sees two
    assert "its smallest possible p is 0.25" in claim["detail"]


def test_patching_fails_when_no_run_is_rescued_and_ignores_missing_values():
    missing = {"naive": reaching(None), "patched_final": [np.nan, np.nan, np.nan, 0.9]}
    runs = {(0, 0.1): LATE, (1, 0.1): missing, (0, 0.2): LATE, (1, 0.2): LATE}
    claim = judge_patching(patching_study(runs), CLAIMS_CFG["patching"])
    assert claim["outcome"] == FAIL and claim["value"] == 0 and claim["interval"] == [0, 0]
    # no last checkpoint draws the class naively (the missing run's patched one does)
    assert claim["data"]["donors_reaching_threshold"] == 0
    assert "draws the class under naive prompting in 0 of 4 runs" in claim["detail"]


def test_patching_fails_when_the_interval_lies_below_the_fraction_asked_for():
    runs = {(seed, 0.1): RESCUED for seed in (0, 1)} | {(seed, 0.2): LATE for seed in (0, 1)}
    claim = judge_patching(patching_study(runs), CLAIMS_CFG["patching"] | {"min_fraction": 0.75})
    # each level is all or nothing: every resample gives 0.5
    assert claim["value"] == 0.5 and claim["interval"] == [0.5, 0.5]
    assert claim["outcome"] == FAIL and "below the threshold 0.75" in claim["detail"]


def test_patching_compares_the_smoothed_accuracies():
    # One checkpoint where patching beats naive by sampling noise alone: a rescue as
    # measured, none once both curves are smoothed as the learning times are.
    noise = {"naive": [0.1, 0.1, 0.1, 0.1], "patched_final": [0.1, 0.85, 0.1, 0.1]}
    study = patching_study({(0, 0.1): noise})
    assert judge_patching(study, CLAIMS_CFG["patching"])["value"] == 1.0
    study["learning_time"].attrs["sigma_checkpoints"] = 1.0
    claim = judge_patching(study, CLAIMS_CFG["patching"])
    assert claim["value"] == 0.0 and claim["outcome"] == INCONCLUSIVE  # one seed


def test_patching_is_not_evaluated_without_the_patched_method():
    study = methods_study({(0, 0.1): (800, 800)}, ("naive", "overprompt"))
    claim = judge_patching(study, CLAIMS_CFG["patching"])
    assert claim["outcome"] == NOT_EVALUATED and "patching.donors" in claim["detail"]


# ----------------------------------------------------------------------------- claim 5
DELAYED = {0.0: [100, 200, 100], 0.5: [200, 400, 200], 1.0: [None, 800, 800]}


def test_underspecification_passes_when_masking_delays_learning():
    study = underspecification_study(by_seed(DELAYED))
    claim = judge_underspecification(study, CLAIMS_CFG["underspecification"])
    means = [400 / 3, 800 / 3, (NEVER + 1600) / 3]  # never = one step past the last
    assert claim["outcome"] == PASS and claim["value"] == pytest.approx(means[2] - means[0])
    # of the 20 dealings of six runs to two ratios, only the observed one is as extreme
    assert claim["p_value"] == pytest.approx(1 / 20) and claim["interval"][0] > 0
    assert claim["detail"].startswith("permutation test of the delay: p = 0.05 <= 0.05")
    assert claim["data"]["mean_learning_time"] == pytest.approx(means)
    assert claim["data"]["mask_ratio"] == [0.0, 0.5, 1.0]
    assert claim["data"]["runs_reached"] == [3, 3, 2]
    ratios = [0.0] * 3 + [0.5] * 3 + [1.0] * 3
    times = [100, 200, 100, 200, 400, 200, NEVER, 800, 800]
    assert claim["data"]["spearman"] == pytest.approx(spearman(ratios, times))


def test_underspecification_fails_when_masking_speeds_learning():
    times = {0.0: [800, 400, 800], 0.5: [400, 400, 200], 1.0: [100, 200, 100]}
    claim = judge_underspecification(
        underspecification_study(by_seed(times)), CLAIMS_CFG["underspecification"]
    )
    assert claim["outcome"] == FAIL and claim["value"] == pytest.approx(-1600 / 3)
    assert claim["interval"][1] < 0 and claim["data"]["spearman"] < 0


def test_underspecification_is_inconclusive_with_a_wide_interval_or_one_seed():
    times = {0.0: [100, 800], 1.0: [200, 400]}
    claim = judge_underspecification(
        underspecification_study(by_seed(times)), CLAIMS_CFG["underspecification"]
    )
    assert claim["value"] == -150 and claim["interval"] == [-600, 300]
    assert claim["outcome"] == INCONCLUSIVE and "spearman" not in claim["data"]  # 2 ratios
    times = {0.0: [100], 1.0: [400]}
    claim = judge_underspecification(
        underspecification_study(by_seed(times)), CLAIMS_CFG["underspecification"]
    )
    assert claim["outcome"] == INCONCLUSIVE and claim["value"] == 300
    assert "studies.underspecification.seeds" in claim["detail"]


def test_underspecification_is_inconclusive_when_the_smallest_ratio_is_censored():
    # Seed 3 at ratio 0 never learns: counted one step past the last checkpoint, its
    # true T is unknown and may be later still, so the delay has no lower bound.
    times = {0.0: [100, 100, 100, 100, None], 1.0: [None] * 5}
    claim = judge_underspecification(
        underspecification_study(by_seed(times)), CLAIMS_CFG["underspecification"]
    )
    assert claim["value"] > 0 and claim["interval"][0] > 0
    assert claim["p_value"] == pytest.approx(6 / 252)  # the test alone would pass
    assert claim["outcome"] == INCONCLUSIVE and "not bounded below" in claim["detail"]


def test_underspecification_is_not_evaluated_without_the_study_or_with_one_ratio():
    claim = judge_underspecification(None, CLAIMS_CFG["underspecification"], "not configured")
    assert claim["outcome"] == NOT_EVALUATED and claim["detail"] == "not configured"
    study = underspecification_study({(0, 0.5): 100, (1, 0.5): 200})
    claim = judge_underspecification(study, CLAIMS_CFG["underspecification"])
    assert claim["outcome"] == NOT_EVALUATED and "1 masking ratio(s)" in claim["detail"]


# ----------------------------------------------------------------------------- the files


def full_study():
    runs = {}
    for (seed, gap), step in by_seed(RISING).items():
        runs[(seed, gap, "naive")] = reaching(step)
        for method in ALL_METHODS[1:]:
            runs[(seed, gap, method)] = reaching(100)
    return signal_study(runs)


FIELDS = {"number", "statement", "statistic", "pass_if", "threshold", "null", "value"}
FIELDS |= {"interval", "confidence", "resamples", "p_value", "outcome", "detail", "data"}
FIELDS |= {"test", "false_pass_rate", "frame_off"}


def test_every_claim_is_judged_with_its_fields():
    claims = evaluate_claims(full_study(), CLAIMS_CFG)
    assert [c["number"] for c in claims.values()] == [1, 2, 3, 4, 5]
    for claim in claims.values():
        assert set(claim) == FIELDS and claim["detail"]
        assert (claim["confidence"], claim["resamples"], claim["null"]) == (0.95, 2000, 0)
        # a study gathered before the verdict with the frame rule off was recorded
        assert set(claim["frame_off"]) == set(FRAME_OFF_KEPT)
        assert claim["frame_off"]["outcome"] == NOT_RECORDED and claim["frame_off"]["detail"]
    outcomes = {name: claim["outcome"] for name, claim in claims.items()}
    # memorization: the straight paths never come near 01 or 10 (margin 0 every seed)
    assert outcomes == {
        "speed": PASS,
        "memorization": FAIL,
        "hidden": PASS,
        "patching": PASS,
        "underspecification": NOT_EVALUATED,
    }
    # d = T(naive) - 100: 701, 700, 700 | 300, 300, 100 | 0, 0, 100 by color gap
    assert claims["hidden"]["value"] == 300 and claims["hidden"]["p_value"] == 1 / 2**7


def test_the_table_shows_each_value_with_its_interval_and_p_value():
    claims = evaluate_claims(full_study(), CLAIMS_CFG)
    rows = {int(row[0]): row for row in table_rows({"claims": claims})}
    value, (lo, hi) = claims["speed"]["value"], claims["speed"]["interval"]
    assert rows[1][3] == f"{value:.3g} [{lo:.3g}, {hi:.3g}]" and rows[1][4] == "0.00119"
    rate = claims["speed"]["false_pass_rate"]
    assert (
        0 <= rate <= 0.05
        and rows[1][5] == f"3 seed(s) x 3 level(s); passes chance {100 * rate:.1f}%"
    )
    # the median of 9 is the middle level's median, 300 or (drawing 100 twice) 100
    assert rows[3][3] == "300 [100, 300]"
    assert rows[3][4] == f"{claims['hidden']['p_value']:.3g}"
    assert rows[5][3] == "\u2014" and rows[5][5] == "\u2014" and rows[5][7] == NOT_EVALUATED
    frame_off = TABLE_COLUMNS.index("frame rule off")
    assert rows[1][frame_off] == NOT_RECORDED  # the study records no frame-off verdict
    del claims["speed"]["frame_off"]  # claims.json written before it was recorded
    assert table_rows({"claims": claims})[0][frame_off] == NOT_RECORDED


def test_each_claim_is_judged_with_the_frame_rule_off_too():
    """The same judges on the study's frame-off twins: the speed of learning rises with the
    color gap with the frame rule on and falls with it off."""
    rising, falling = signal_study(naive_times(RISING)), signal_study(naive_times(FALLING))
    claims = evaluate_claims(with_frame_off(rising, falling), CLAIMS_CFG)
    judged_off = judge_speed(falling, CLAIMS_CFG["speed"])
    assert claims["speed"]["outcome"] == PASS and judged_off["outcome"] == FAIL
    assert claims["speed"]["frame_off"] == {key: judged_off[key] for key in FRAME_OFF_KEPT}
    row = table_rows({"claims": claims})[0]
    assert row[TABLE_COLUMNS.index("frame rule off")] == outcome_text(judged_off)
    # twins equal to the summaries: every claim as with the rule on
    same = evaluate_claims(with_frame_off(full_study(), full_study()), CLAIMS_CFG)
    for claim in same.values():
        assert claim["frame_off"] == {key: claim[key] for key in FRAME_OFF_KEPT}


def test_claims_json_is_the_same_for_the_same_input_and_carries_no_clock(tmp_path):
    study_path, under_path = tmp_path / "study.nc", tmp_path / "under.nc"
    save_dataset_nc(full_study(), study_path)
    save_dataset_nc(underspecification_study({(0, 0.0): 100, (0, 1.0): 400}), under_path)
    config = load_config(REPO / "config.yaml")
    texts = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        write_claims(out, tmp_path / f"{name}.html", config, study_path, under_path)
        texts.append(out.read_text())
    assert texts[0] == texts[1]
    record = json.loads(texts[0])
    assert set(record["provenance"]) == set(PROVENANCE_KEYS)  # no time stamp among them
    assert record["inputs"] == {"signal": str(study_path), "underspecification": str(under_path)}
    assert record["claims"]["underspecification"]["outcome"] == INCONCLUSIVE  # one seed
    table = (tmp_path / "a.html").read_text()
    assert table.count("<tr>") == 6 and "95% percentile bootstrap" in table
    for outcome in (PASS, FAIL, INCONCLUSIVE):
        assert f'<b style="color:{OUTCOME_COLORS[outcome]}">{outcome}</b>' in table


def test_claims_command_reads_both_studies_and_prints_the_table(tmp_path, capsys):
    save_dataset_nc(full_study(), tmp_path / "signal.nc")
    times = {(0, 0.0): 100, (1, 0.0): 200, (2, 0.0): 150, (0, 1.0): 400, (1, 1.0): 800}
    times[(2, 1.0)] = 600
    save_dataset_nc(underspecification_study(times), tmp_path / "under.nc")
    settings = json.dumps(load_config(REPO / "config.yaml"))
    out = tmp_path / "claims.json"
    args = ["claims", "--settings", settings, "--study", str(tmp_path / "signal.nc")]
    args += ["--underspecification", str(tmp_path / "under.nc")]
    assert cli.main(args + ["--out", str(out), "--table", str(tmp_path / "claims.html")]) == 0
    claim = json.loads(out.read_text())["claims"]["underspecification"]
    # T at the checkpoints (150 -> 200, 600 -> 800): delay 2000 / 3 - 500 / 3; no other
    # dealing of the six runs to the two ratios is as large
    assert claim["outcome"] == PASS and claim["value"] == 500 and claim["p_value"] == 1 / 20
    capsys.readouterr()
    assert cli.main(["claims-table", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 5
    header = "| # | claim | statistic | value [interval] | p | judged on | threshold |"
    assert lines[0].startswith(header)
    cells = [cell.strip() for cell in lines[-1].strip("|").split(" | ")]
    lo, hi = claim["interval"]
    assert cells[0] == "5" and cells[3] == f"500 [{lo:.0f}, {hi:.0f}]" and cells[7] == PASS
    assert cells[5].startswith("3 seed(s) x 2 level(s); passes chance")


def test_a_study_that_does_not_name_its_color_sweep_is_refused():
    study = signal_study(naive_times(RISING), config={"figures": {}})
    with pytest.raises(ConceptspaceError, match="rerun `snakemake`"):
        judge_speed(study, CLAIMS_CFG["speed"])


@pytest.mark.workflow
def test_smoke_run_judges_every_claim_and_reports_the_table(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    record = json.loads((results / "claims.json").read_text())
    assert sorted(c["number"] for c in record["claims"].values()) == [1, 2, 3, 4, 5]
    outcomes = (PASS, FAIL, INCONCLUSIVE, NOT_EVALUATED)
    assert all(c["outcome"] in outcomes for c in record["claims"].values())
    assert record["inputs"]["signal"] == "results/signal/study.nc"
    report = workdir / "claims_report.html"
    snakemake(workdir, "--report", str(report), configs=(REPO / "config.yaml", SMOKE))
    html = report.read_text()
    assert "Claims table: the paper's five claims" in html  # the caption
    # the table itself is embedded as a data URI, byte for byte
    embedded = re.search(r'"results/claims.html": \{.*?"data_uri": "[^,]+,([^"]+)"', html, re.S)
    assert base64.b64decode(embedded[1]) == (results / "claims.html").read_bytes()


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    # `conceptspace claims-table ... | head -1`: far more than a pipe buffer of output
    # (64 KiB) after head has gone; the command must end quietly, as Unix tools do.
    save_dataset_nc(full_study(), tmp_path / "study.nc")
    config = load_config(REPO / "config.yaml")
    write_claims(tmp_path / "claims.json", tmp_path / "claims.html", config, tmp_path / "study.nc")
    copies = " ".join([str(tmp_path / "claims.json")] * 200)
    result = subprocess.run(
        f"{sys.executable} -m conceptspace info {copies} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(tmp_path / "claims.json")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
