"""Trajectories: learning times on hand-made arrays, gathering evaluations (with their
method dimension and the best-of methods) into runs and runs into the study grid, the
netCDF round trip, and the refusals."""

import json

import numpy as np
import pytest
import xarray as xr

from conceptspace.concepts import CLASSES, CONCEPTS
from conceptspace.evaluate import write_evaluation
from conceptspace.io import ConceptspaceError
from conceptspace.methods import build_methods
from conceptspace.budget import budget_table_markdown, claims_by_budget
from conceptspace.claims import evaluate_claims
from conceptspace.config import load_config
from conceptspace.netcdf import open_study, save_dataset_nc
from conceptspace.trajectories import (
    accuracy_among_valid,
    concept_accuracy_among_valid,
    gather_run,
    gather_study,
    learning_time,
    frame_off_study,
    learning_time_authors,
    smooth_accuracy,
    smooth_over_steps,
    smooth_reflect,
    summarise_samples,
    truncated_study,
)
from conftest import REPO, every_sample_valid

STEPS = [10 * (i + 1) ** 2 for i in range(16)]  # quadratic, like the checkpoint schedule
EVALUATION = {
    "samples_per_prompt": 4,
    "sampler_steps": 5,
    "batch_size": 8,
    "threshold": 0.8,
    "sigma": 0.0,
    "min_valid_fraction": 0.25,
    "authors": {"threshold": 0.9, "sigma": 2.0, "consecutive": 3},
}
CONFIG = {
    "studies": {"signal": {"seeds": [0, 1]}},
    "evaluation": EVALUATION,
    "note": "a test config",
}
UNSEEN = CLASSES.index("11")
METHODS_CFG = {
    "overprompt": {"colors": [[0.3, 0.3, 0.7], [0.1, 0.1, 0.9]]},
    "intervention": {
        "alphas": [1.0],
        "beta": 0.1,
        "color_direction": [0.05, 0.05, 0.95],
        "size_direction": 0.6,
    },
    "patching": {"donors": ["final"]},
}
OFF_CFG = {
    "overprompt": {"colors": []},
    "intervention": {**METHODS_CFG["intervention"], "alphas": []},
    "patching": {"donors": []},
}
METHODS = build_methods(METHODS_CFG, STEPS[-1])
EVALUATED = ["naive", "overprompt_0", "overprompt_1", "intervention_0", "patched_final"]
GATHERED = EVALUATED + ["overprompt", "intervention"]  # best-of methods appended


def over_steps(values, steps=None):
    steps = steps if steps is not None else [100 * (i + 1) for i in range(len(values))]
    return xr.DataArray(np.asarray(values, dtype=float), dims="step", coords={"step": steps})


# ----------------------------------------------------------------------------- learning times


def test_learning_time_is_first_crossing_and_exact_threshold_counts():
    assert float(learning_time(over_steps([0.1, 0.5, 0.8, 0.9]), 0.8)) == 300
    # The first crossing counts even if accuracy dips again afterwards.
    assert float(learning_time(over_steps([0.2, 0.85, 0.3, 0.3]), 0.8)) == 200
    assert float(learning_time(over_steps([0.79999, 0.8]), 0.8)) == 200


def test_learning_time_never_reached_or_missing_is_nan():
    assert np.isnan(float(learning_time(over_steps([0.1, 0.5, 0.79]), 0.8)))
    assert np.isnan(float(learning_time(over_steps([np.nan, np.nan]), 0.8)))
    # NaN never counts as reaching the threshold
    assert float(learning_time(over_steps([np.nan, 0.9]), 0.8)) == 200


def test_learning_time_uses_step_coordinate_over_other_dims():
    accuracy = xr.DataArray(
        [[0.0, 0.9, 0.9], [0.0, 0.0, 0.0], [0.95, 0.0, 0.0]],
        dims=("seed", "step"),
        coords={"seed": [0, 1, 2], "step": [500, 1500, 4000]},
    )
    times = learning_time(accuracy, 0.8)
    assert times.dims == ("seed",)
    np.testing.assert_array_equal(times.values, [1500, np.nan, 500])
    assert times.attrs["units"] == "optimizer steps"


def test_learning_time_with_sigma_crosses_on_the_smoothed_accuracy():
    # One checkpoint's spike (sampling noise) no longer counts as learning...
    spike = over_steps([0.1, 0.1, 0.95, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    assert float(learning_time(spike, 0.8)) == 300
    assert float(learning_time(spike, 0.8, sigma=1.0)) == 700
    # ...and the crossing is that of smooth_over_steps, written out: at index 6 the
    # kernel exp(-d^2 / 2) over indices 2..8 (within 4 sigma, renormalised) gives
    weights = np.exp(-0.5 * np.arange(-4, 3) ** 2)
    at_6 = np.dot(weights, [0.95, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9]) / weights.sum()
    assert 0.8 <= at_6  # and index 5 stays below:
    weights_5 = np.exp(-0.5 * np.arange(-4, 4) ** 2)
    at_5 = np.dot(weights_5, [0.1, 0.95, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9]) / weights_5.sum()
    assert at_5 < 0.8
    times = learning_time(spike, 0.8, sigma=1.0)
    assert times.attrs["sigma_checkpoints"] == 1.0 and "sigma 1" in times.attrs["long_name"]


def test_smooth_accuracy_keeps_dims_and_coordinates():
    accuracy = xr.DataArray(
        [[0.5, 1.0, 0.5], [0.5, 0.5, 0.5]],
        dims=("step", "seed"),
        coords={"step": [10, 20], "seed": [0, 1, 2]},
    )
    smoothed = smooth_accuracy(accuracy, 1.0)
    assert smoothed.dims == ("step", "seed")  # step stays first
    np.testing.assert_array_equal(smoothed["step"], [10, 20])
    w = np.exp(-0.5)  # the neighbour's weight at sigma 1
    np.testing.assert_allclose(smoothed.sel(seed=1), [(1 + 0.5 * w) / (1 + w), (w + 0.5) / (1 + w)])
    np.testing.assert_allclose(smoothed.sel(seed=2), [0.5, 0.5])
    xr.testing.assert_identical(smooth_accuracy(accuracy, 0.0), accuracy)


def test_learning_time_authors_takes_the_middle_of_the_first_window():
    values = over_steps([0.0, 0.95, 0.95, 0.0, 0.95, 0.95, 0.95, 0.95])
    # Without smoothing (sigma 0): the first pair is too short; the window from index 4
    # counts and T is its middle checkpoint (index 5, step 600).
    assert float(learning_time_authors(values, 0.9, sigma=0.0, consecutive=3)) == 600
    assert float(learning_time_authors(values, 0.9, sigma=0.0, consecutive=2)) == 300
    assert float(learning_time_authors(values, 0.9, sigma=0.0, consecutive=1)) == 200
    # strictly above: exactly the threshold never counts
    assert float(learning_time_authors(over_steps([0.9] * 5), 0.9, 0.0, 1)) == 500


def test_learning_time_authors_counts_never_as_the_last_step():
    never = over_steps([0.0, 0.5, 0.8, 0.5])
    assert float(learning_time_authors(never, 0.9, sigma=1.5, consecutive=3)) == 400
    short = over_steps([0.95, 0.95])
    assert float(learning_time_authors(short, 0.9, sigma=0.0, consecutive=3)) == 200


def test_learning_time_authors_ignores_a_single_spike():
    spike = over_steps([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    # Unsmoothed, the spike alone would count...
    assert float(learning_time_authors(spike, 0.9, sigma=0.0, consecutive=1)) == 400
    # ...smoothed it is spread below the threshold: never, the last step.
    assert float(learning_time_authors(spike, 0.9, sigma=1.5, consecutive=1)) == 700


def test_reflect_smoothing_matches_its_definition():
    # SciPy's gaussian_filter1d(mode="reflect", truncate=4): the series mirrored about
    # each end (d c b a | a b c d | d c b a), a kernel of radius int(4 sigma + 0.5).
    values = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    sigma = 1.5
    radius = int(4 * sigma + 0.5)
    mirrored = np.concatenate([values[::-1], values, values[::-1]])
    mirrored = mirrored[len(values) - radius : 2 * len(values) + radius]
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    expected = np.convolve(mirrored, kernel, mode="valid")
    np.testing.assert_allclose(smooth_reflect(values, sigma), expected)
    np.testing.assert_allclose(smooth_reflect(np.full(5, 0.7), 1.5), 0.7)  # edges kept


def test_smoothing_keeps_constants_at_the_edges_and_skips_nan():
    np.testing.assert_allclose(smooth_over_steps(np.full(7, 0.7), 2.0), 0.7)
    with_gap = smooth_over_steps(np.array([0.5, np.nan, 0.5, 0.5]), 1.0)
    np.testing.assert_allclose(with_gap, 0.5)
    assert np.isnan(smooth_over_steps(np.array([np.nan, np.nan]), 1.0)).all()


def test_learning_time_authors_keeps_other_dims():
    probs = xr.DataArray(
        [[0.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]],
        dims=("concept", "step"),
        coords={"concept": ["color", "size"], "step": [1, 2, 3, 4, 5]},
    )
    times = learning_time_authors(probs, 0.9, sigma=0.0, consecutive=3)
    assert times.dims == ("concept",)
    np.testing.assert_array_equal(times.values, [3, 5])  # never: the last step


# ----------------------------------------------------------------------------- fabricated runs


def unseen_probability(step_index, crossing_index):
    """Per-concept probability of the unseen class: 1 from crossing_index on, else 0.3."""
    if crossing_index is not None and step_index >= crossing_index:
        return 1.0
    return 0.3


def write_run(
    folder,
    seed,
    color_gap,
    size_gap,
    crossing_index,
    steps=STEPS,
    samples=4,
    methods=METHODS,
    frame_refused=None,
):
    """Evaluation files of one fabricated run, written in a shuffled step order. The naive
    unseen class crosses at ``crossing_index``; other methods get random values on the
    prompts they apply to (NaN elsewhere). Every sample is valid but the first
    ``frame_refused`` of each prompt, which the frame rule refuses (valid_frame_off
    recorded); None: the verdict with the frame rule off is not recorded (older files)."""
    rng = np.random.default_rng(seed * 1000 + int(color_gap * 100) + int(size_gap * 10))
    paths = []
    for step_index in rng.permutation(len(steps)):
        p_target = rng.uniform(0, 1, size=(len(methods), len(CLASSES), len(CONCEPTS), samples))
        for m, method in enumerate(methods):
            for p, prompt in enumerate(CLASSES):
                if prompt not in method.prompts:
                    p_target[m, p] = np.nan
        p_target[0, UNSEEN] = unseen_probability(step_index, crossing_index)
        path = folder / f"s{seed}_dc{color_gap}_ds{size_gap}_step{steps[step_index]:06d}.nc"
        attrs = {
            "step": steps[step_index],
            "seed": seed,
            "color_gap": color_gap,
            "size_gap": size_gap,
            "checkpoint": f"step_{steps[step_index]:06d}.pt",
            "evaluation_cfg": EVALUATION,
            "probe_accuracy_color": 0.99,
            "provenance_like": {"nested": [1, 2]},
        }
        valid = valid_frame_off = every_sample_valid(p_target)
        if frame_refused is not None:
            valid = valid.copy()
            valid[..., :frame_refused] *= 0  # NaN (not applied) stays NaN
        else:
            valid_frame_off = None
        write_evaluation(path, p_target, methods, CLASSES, CONCEPTS, attrs, valid, valid_frame_off)
        paths.append(path)
    return paths


def write_trajectory(
    folder, seed, color_gap, size_gap, crossing_index, steps=STEPS, frame_refused=None
):
    paths = write_run(
        folder, seed, color_gap, size_gap, crossing_index, steps, 4, METHODS, frame_refused
    )
    out = folder / f"trajectory_s{seed}_dc{color_gap}_ds{size_gap}.nc"
    save_dataset_nc(gather_run(paths), out)
    return out


def assert_described(ds):
    for name in list(ds.data_vars) + list(ds.coords):
        assert ds[name].attrs.get("units"), f"{name} has no units"
        assert ds[name].attrs.get("long_name"), f"{name} has no long_name"


def test_gather_run_sorts_steps_and_averages(tmp_path):
    paths = write_run(tmp_path, 0, 0.3, 0.4, crossing_index=3)
    run = gather_run(paths)
    assert list(run["step"].values) == STEPS
    assert run["p_target"].dims == ("step", "method", "prompt", "concept", "sample")
    assert list(run["method"].values) == GATHERED
    assert list(run["prompt"].values) == list(CLASSES)
    assert list(run["concept"].values) == list(CONCEPTS)
    assert int(run["seed"]) == 0 and float(run["color_gap"]) == 0.3
    assert run["step"].attrs["units"] == "optimizer steps"
    assert_described(run)

    # Each step's values come from its own file, whatever order the files were given in.
    for path in paths:
        with xr.open_dataset(path) as single:
            np.testing.assert_allclose(
                run["p_target"].sel(step=single.attrs["step"]).isel(method=slice(0, 5)).values,
                single["p_target"].values,
                rtol=1e-6,
            )
    evaluated = run.isel(method=slice(0, len(EVALUATED)))
    expected_prob = evaluated["p_target"].values.mean(axis=-1)  # NaN stays NaN
    np.testing.assert_allclose(evaluated["concept_prob"].values, expected_prob)
    p = evaluated["p_target"].values  # every sample valid: the accuracy is the mean product
    np.testing.assert_allclose(evaluated["accuracy"].values, p.prod(axis=-2).mean(axis=-1))
    np.testing.assert_allclose(evaluated["product_of_means"].values, expected_prob.prod(axis=-1))
    np.testing.assert_allclose(evaluated["concept_accuracy"].values, expected_prob)
    np.testing.assert_allclose(
        evaluated["hard_accuracy"].values,
        (p > 0.5).all(axis=-2).mean(axis=-1) * (p[:, :, :, 0, 0] * 0 + 1),
    )
    np.testing.assert_allclose(evaluated["valid_fraction"].values, expected_prob[..., 0] * 0 + 1)
    naive = run["accuracy"].sel({"method": "naive", "prompt": "11"}).values
    np.testing.assert_allclose(naive[3:], 1.0)
    np.testing.assert_allclose(naive[:3], 0.09, rtol=1e-6)
    # a method not applied to a prompt is NaN, never a product of NaNs taken as 1
    assert run["accuracy"].sel({"method": "overprompt_0", "prompt": "00"}).isnull().all()
    assert json.loads(run.attrs["evaluation_cfg"]) == EVALUATION


def test_gather_run_carries_the_verdict_with_the_frame_rule_off(tmp_path):
    """Evaluations recording the verdict with the frame rule off give the run it per
    sample, and each summary's twin from it; older evaluations give neither."""
    run = gather_run(write_run(tmp_path, 0, 0.3, 0.4, crossing_index=3, frame_refused=2))
    assert run["valid_frame_off"].dims == run["valid"].dims
    assert_described(run)
    naive = {"method": "naive", "prompt": "11"}
    # two of four samples refused by the rule: half the accuracy, all of it without it
    np.testing.assert_allclose(run["valid_fraction"].sel(naive).values, 0.5)
    np.testing.assert_allclose(run["valid_fraction_frame_off"].sel(naive).values, 1.0)
    np.testing.assert_allclose(run["accuracy"].sel(naive).values[3:], 0.5)
    np.testing.assert_allclose(run["accuracy_frame_off"].sel(naive).values[3:], 1.0)
    assert "frame rule" in run["accuracy_frame_off"].attrs["long_name"]

    older = gather_run(write_run(tmp_path / "older", 0, 0.3, 0.4, crossing_index=3))
    assert not [name for name in older.data_vars if name.endswith("_frame_off")]


def test_invalid_samples_score_zero_and_are_left_out_of_the_concept_point():
    # One prompt, two concepts, four samples: half blue-large (1, 0), half red-small
    # (0, 1) for a blue-small target, then the same with two samples blank (invalid).
    p_target = xr.DataArray(
        [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dims=("concept", "sample")
    )
    valid = xr.DataArray([1.0, 1.0, 1.0, 1.0], dims="sample")
    mixed = summarise_samples(p_target, valid)
    # no sample is blue small: accuracy 0, while the product of means says 0.25
    assert float(mixed["accuracy"]) == 0.0
    assert float(mixed["product_of_means"]) == 0.25
    np.testing.assert_allclose(mixed["concept_accuracy"].values, [0.5, 0.5])

    target = xr.DataArray([[0.9] * 4, [0.9] * 4], dims=("concept", "sample"))
    all_valid = summarise_samples(target, valid)
    # Half of the samples replaced by blank images that the probe scores as perfect
    # targets (as a real probe does) and the validity check rejects:
    blanked = target.copy()
    blanked[..., 2:] = 1.0
    half_valid = valid.copy()
    half_valid[..., 2:] = 0.0
    half = summarise_samples(blanked, half_valid)
    assert float(half["accuracy"]) == pytest.approx(float(all_valid["accuracy"]) / 2)
    assert float(half["hard_accuracy"]) == pytest.approx(float(all_valid["hard_accuracy"]) / 2)
    assert float(half["valid_fraction"]) == 0.5
    np.testing.assert_allclose(half["concept_prob"].values, [0.9, 0.9])  # valid ones only
    # the paper's score and the authors' hard accuracy would rise instead
    assert float(half["product_of_means"]) > float(all_valid["product_of_means"])
    # no valid sample at all: no concept-space point, accuracy 0
    none = summarise_samples(blanked, valid * 0)
    assert none["concept_prob"].isnull().all() and float(none["accuracy"]) == 0.0


def test_a_concept_is_scored_among_the_valid_samples_above_a_floor():
    # Eight samples, all the target color and size where they hold an object; the valid
    # ones are the first k. Among the valid the concept is shown (1) from a quarter valid
    # on; below it scores 0; all samples (invalid = 0) would read k/8.
    target = xr.DataArray(np.ones((2, 8)), dims=("concept", "sample"))
    scores = []
    for k in (0, 1, 2, 4, 8):
        valid = xr.DataArray([1.0] * k + [0.0] * (8 - k), dims="sample")
        summaries = summarise_samples(target, valid)
        scores.append(concept_accuracy_among_valid(summaries, 0.25).values)
        np.testing.assert_allclose(summaries["concept_accuracy"].values, [k / 8] * 2)
    np.testing.assert_allclose(scores, [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]])
    # a valid sample of the wrong color counts against it: 2 of 4 valid ones are red
    wrong = target.copy()
    wrong[0, :2] = 0.0
    half = summarise_samples(wrong, xr.DataArray([1.0] * 4 + [0.0] * 4, dims="sample"))
    np.testing.assert_allclose(concept_accuracy_among_valid(half, 0.25).values, [0.5, 1.0])
    # not sampled (a method that does not prompt the class): NaN, not 0
    unsampled = summarise_samples(target * np.nan, xr.DataArray([np.nan] * 8, dims="sample"))
    assert concept_accuracy_among_valid(unsampled, 0.25).isnull().all()


def test_the_class_is_scored_among_the_valid_samples_above_a_floor():
    # As the concepts above, for the joint score that learning_time reads: the valid
    # samples are the first k of eight, each the target class with probability 0.9 x 0.9.
    target = xr.DataArray(np.full((2, 8), 0.9), dims=("concept", "sample"))
    scores = []
    for k in (0, 1, 2, 6, 8):
        valid = xr.DataArray([1.0] * k + [0.0] * (8 - k), dims="sample")
        summaries = summarise_samples(target, valid)
        scores.append(float(accuracy_among_valid(summaries, 0.25)))
        assert float(summaries["accuracy"]) == pytest.approx(0.81 * k / 8)  # all samples
    np.testing.assert_allclose(scores, [0, 0, 0.81, 0.81, 0.81])
    # negative control: valid samples of the wrong class lower it as on all samples
    wrong = target.copy()
    wrong[0, :3] = 0.1  # three of six valid samples red
    half = summarise_samples(wrong, xr.DataArray([1.0] * 6 + [0.0] * 2, dims="sample"))
    assert float(accuracy_among_valid(half, 0.25)) == pytest.approx((3 * 0.09 + 3 * 0.81) / 6)
    unsampled = summarise_samples(target * np.nan, xr.DataArray([np.nan] * 8, dims="sample"))
    assert accuracy_among_valid(unsampled, 0.25).isnull().all()


def test_gather_run_best_of_is_the_best_variant_at_each_step(tmp_path):
    run = gather_run(write_run(tmp_path, 0, 0.3, 0.4, crossing_index=3))
    assert list(run["method_kind"].values) == [
        "naive",
        "overprompt",
        "overprompt",
        "intervention",
        "patched",
        "overprompt",
        "intervention",
    ]
    assert list(run["method_setting"].values)[-2:] == ["best of 2", "best of 1"]
    assert run["method_setting"].values[1] == "rgb=(0.3, 0.3, 0.7)"
    variants = run.sel({"method": ["overprompt_0", "overprompt_1"], "prompt": "11"})
    accuracy = variants["accuracy"].values  # (step, variant)
    best = run.sel({"method": "overprompt", "prompt": "11"})
    np.testing.assert_array_equal(best["accuracy"].values, accuracy.max(axis=1))
    chosen = accuracy.argmax(axis=1)
    assert len(set(chosen)) == 2  # the random variants trade places: a real per-step choice
    np.testing.assert_array_equal(
        best["concept_prob"].values,
        variants["concept_prob"].values[np.arange(len(STEPS)), chosen],
    )
    # a single variant is its own best
    np.testing.assert_array_equal(
        run["accuracy"].sel({"method": "intervention"}).values,
        run["accuracy"].sel({"method": "intervention_0"}).values,
    )
    # best-of: NaN on prompts the method does not apply to, and no p_target
    assert run["accuracy"].sel({"method": "overprompt", "prompt": "00"}).isnull().all()
    assert run["p_target"].sel({"method": "overprompt"}).isnull().all()
    assert_described(run)


def test_gather_run_with_methods_off_has_naive_only(tmp_path):
    naive_only = build_methods(OFF_CFG, STEPS[-1])
    run = gather_run(write_run(tmp_path, 0, 0.3, 0.4, 3, methods=naive_only))
    assert list(run["method"].values) == ["naive"]
    assert run["accuracy"].notnull().all()


def test_gather_run_rejects_mixed_runs_and_duplicate_steps(tmp_path):
    first = write_run(tmp_path, 0, 0.3, 0.4, crossing_index=3)
    other_seed = write_run(tmp_path, 1, 0.3, 0.4, crossing_index=3)
    other_gap = write_run(tmp_path, 0, 0.6, 0.4, crossing_index=3)
    with pytest.raises(ConceptspaceError, match="another run"):
        gather_run(first[:4] + other_seed[:1])
    with pytest.raises(ConceptspaceError, match="another run"):
        gather_run(first[:4] + other_gap[:1])
    with pytest.raises(ConceptspaceError, match="both evaluate step"):
        gather_run(first + first[:1])
    with pytest.raises(ConceptspaceError, match="does not exist"):
        gather_run([tmp_path / "missing.nc"])


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory):
    """Two seeds; levels (0.3, 0.4), (0.6, 0.4), (0.6, 0.3); seed 1 never ran (0.6, 0.3),
    and seed 1 at (0.3, 0.4) never reaches the threshold."""
    crossings = {
        (0, 0.3, 0.4): 5,
        (1, 0.3, 0.4): None,
        (0, 0.6, 0.4): 2,
        (1, 0.6, 0.4): 3,
        (0, 0.6, 0.3): 4,
    }
    folder = tmp_path_factory.mktemp("runs")
    paths = [write_trajectory(folder, *run, crossing) for run, crossing in crossings.items()]
    return paths, crossings


def test_gather_study_builds_the_outer_grid(study_runs, tmp_path):
    paths, crossings = study_runs
    study = gather_study(paths, CONFIG, EVALUATION)
    assert study["concept_prob"].dims == (
        "seed",
        "color_gap",
        "size_gap",
        "step",
        "method",
        "prompt",
        "concept",
    )
    assert study["accuracy"].dims == ("seed", "color_gap", "size_gap", "step", "method", "prompt")
    assert list(study["method"].values) == GATHERED
    assert study["method_kind"].values[-1] == "intervention"
    assert "p_target" not in study and "sample" not in study.dims
    assert list(study["seed"].values) == [0, 1]
    np.testing.assert_allclose(study["color_gap"].values, [0.3, 0.6])
    np.testing.assert_allclose(study["size_gap"].values, [0.3, 0.4])
    assert_described(study)
    assert json.loads(study.attrs["config"]) == CONFIG
    assert "config_hash" in study.attrs and study.attrs["description"]

    # Grid points never run are NaN throughout.
    for seed, color_gap, size_gap in [(0, 0.3, 0.3), (1, 0.3, 0.3), (1, 0.6, 0.3)]:
        point = dict(seed=seed, color_gap=color_gap, size_gap=size_gap)
        assert study["accuracy"].sel(point).isnull().all()
        assert study["learning_time"].sel(point).isnull().all()

    # Learning times: the step of the known crossing, NaN when never reached.
    grid = ("seed", "color_gap", "size_gap")
    assert study["learning_time"].dims == grid + ("method",)
    assert study["learning_speed"].dims == grid + ("method",)
    for (seed, color_gap, size_gap), crossing in crossings.items():
        point = dict(seed=seed, color_gap=color_gap, size_gap=size_gap, method="naive")
        time = float(study["learning_time"].sel(point))
        speed = float(study["learning_speed"].sel(point))
        # best-of: its learning time is the earliest of its variants'
        times = study["learning_time"].sel({**point, "method": ["overprompt_0", "overprompt_1"]})
        best = float(study["learning_time"].sel({**point, "method": "overprompt"}))
        np.testing.assert_equal(best, np.nanmin(times.values) if times.notnull().any() else np.nan)
        if crossing is None:
            assert np.isnan(time) and np.isnan(speed)
            assert study["accuracy"].sel(point).notnull().all()  # it ran
        else:
            assert time == STEPS[crossing]
            assert speed == pytest.approx(1 / STEPS[crossing])
            per_concept = study["learning_time_concept"].sel(point)
            assert per_concept.dims == ("concept",)
            # each concept's probability jumps 0.3 -> 1 with the joint accuracy
            assert (per_concept.values <= time).all()
            authors = study["learning_time_authors"].sel(point)
            assert authors.dims == ("concept",)
            # a clean jump 0.3 -> 1: reflect smoothing and the window's middle delay it
            assert (authors.values > time).all()
            assert (authors.values <= STEPS[crossing + 4]).all()
    assert study["learning_time_authors"].dims == grid + ("method", "concept")
    assert study["learning_time_concept"].dims == grid + ("method", "concept")
    assert study["learning_speed"].attrs["units"] == "1/optimizer steps"
    # learning_time is read on the class accuracy among the valid samples, kept beside
    # accuracy; the time on all samples is kept too (every sample of these runs valid:
    # the same times)
    timed = study["accuracy_among_valid"]
    assert timed.dims == study["accuracy"].dims and timed.attrs["units"] == "1"
    np.testing.assert_allclose(
        timed.values, (study["accuracy"] / study["valid_fraction"]).values, equal_nan=True
    )
    np.testing.assert_equal(
        study["learning_time_all_samples"].values, study["learning_time"].values
    )


def test_the_frame_off_study_has_the_summaries_and_learning_times_without_the_rule(
    study_runs, tmp_path
):
    """gather_study keeps each summary's frame-off twin; frame_off_study swaps them in and
    computes the learning times again. Every sample refused by the frame rule leaves no
    valid sample, so the naive class is never learned (below the valid floor); without
    the rule each run learns at its crossing. A study of older evaluations (study_runs)
    has no frame-off study."""
    crossings = {(0, 0.3, 0.4): 2, (1, 0.3, 0.4): 3}
    paths = [
        write_trajectory(tmp_path, *run, crossing, frame_refused=4)
        for run, crossing in crossings.items()
    ]
    study = gather_study(paths, CONFIG, EVALUATION)
    assert_described(study)
    off = frame_off_study(study)
    assert off.attrs["frame_rule"] == "off" and "accuracy_frame_off" not in off
    xr.testing.assert_equal(off["accuracy"], study["accuracy_frame_off"])
    naive = {"method": "naive", "size_gap": 0.4, "color_gap": 0.3}
    assert study["learning_time"].sel(naive).isnull().all()
    expected = [STEPS[crossing] for crossing in crossings.values()]
    np.testing.assert_array_equal(off["learning_time"].sel(naive).values, expected)
    assert off["learning_time_authors"].sel(naive).notnull().all()

    older = gather_study(study_runs[0], CONFIG, EVALUATION)
    assert frame_off_study(older) is None


def test_study_round_trips_through_netcdf(study_runs, tmp_path):
    paths, _ = study_runs
    study = gather_study(paths, CONFIG, EVALUATION)
    out = tmp_path / "study" / "study.nc"
    save_dataset_nc(study, out)
    reread = open_study(out)
    xr.testing.assert_allclose(reread, study)
    assert reread.attrs["config"] == study.attrs["config"]
    for name in study.variables:
        assert reread[name].attrs == study[name].attrs, name
    assert list(reread["prompt"].values) == list(CLASSES)
    assert not list(out.parent.glob(".*")), "temporary files left behind"


def test_gather_study_rejects_runs_with_other_steps(tmp_path, study_runs):
    paths, _ = study_runs
    shifted = write_trajectory(tmp_path, 2, 0.3, 0.4, 3, steps=[s + 1 for s in STEPS])
    with pytest.raises(ConceptspaceError, match="steps"):
        gather_study(paths + [shifted], CONFIG, EVALUATION)
    with pytest.raises(ConceptspaceError, match="same run"):
        gather_study(paths + paths[:1], CONFIG, EVALUATION)


def test_open_study_refuses_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConceptspaceError, match="does not exist"):
        open_study(tmp_path / "absent.nc")
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"CDF\x01 this is not really netCDF")
    with pytest.raises(ConceptspaceError, match="corrupt"):
        open_study(corrupt)
    not_a_study = tmp_path / "other.nc"
    save_dataset_nc(xr.Dataset({"x": ("a", [1.0, 2.0])}), not_a_study)
    with pytest.raises(ConceptspaceError, match="not a study dataset"):
        open_study(not_a_study)


def test_a_truncated_study_is_the_study_of_the_shorter_runs(study_runs, tmp_path):
    """Truncating at a step gives what gathering runs that stopped there gives: the same
    checkpoints and every learning time computed again (one run learns after the cut)."""
    paths, crossings = study_runs
    cut = 4  # keeps STEPS[:4]: the runs crossing at index 5 and 4 have not learned yet
    study = gather_study(paths, CONFIG, EVALUATION)
    shorter = []
    for path in paths:  # each run's trajectory as if it had stopped at STEPS[cut - 1]
        with xr.open_dataset(path) as run:
            save_dataset_nc(run.isel(step=slice(0, cut)).load(), tmp_path / path.name)
        shorter.append(tmp_path / path.name)
    expected = gather_study(shorter, CONFIG, EVALUATION)
    truncated = truncated_study(study, STEPS[cut - 1])
    assert truncated.attrs["truncated_at_step"] == STEPS[cut - 1]
    for name in ("accuracy", "learning_time", "learning_time_concept", "learning_time_authors"):
        xr.testing.assert_allclose(truncated[name], expected[name])
    run = {"method": "naive", "seed": 0, "color_gap": 0.3, "size_gap": 0.4}
    assert np.isfinite(study["learning_time"].sel(run))
    assert np.isnan(truncated["learning_time"].sel(run))  # it crossed at index 5, after the cut
    # a cut between checkpoints keeps those before it
    between = truncated_study(study, STEPS[cut - 1] + 1)
    assert list(between["step"].values) == STEPS[:cut]


def test_a_study_gathered_before_the_valid_floor_says_to_gather_it_again(study_runs, tmp_path):
    paths, _ = study_runs
    study = gather_study(paths, CONFIG, EVALUATION)
    older = {k: v for k, v in EVALUATION.items() if k != "min_valid_fraction"}
    study.attrs["evaluation_cfg"] = json.dumps(older)
    with pytest.raises(ConceptspaceError, match="older version.*rule gather_study"):
        truncated_study(study, STEPS[-1])


def test_a_study_cannot_be_truncated_before_its_first_checkpoint(study_runs):
    paths, _ = study_runs
    with pytest.raises(ConceptspaceError, match="no checkpoint at or before step 9"):
        truncated_study(gather_study(paths, CONFIG, EVALUATION), STEPS[0] - 1)


def test_claims_by_budget_judges_each_cut_and_the_full_budget_as_the_claims_rule(study_runs):
    paths, _ = study_runs
    sweeps = [
        {"name": "color_gap", "color_gap": [0.3, 0.6], "size_gap": [0.4]},
        {"name": "size_gap", "color_gap": [0.6], "size_gap": [0.3, 0.4]},
    ]
    config = {
        **CONFIG,
        "studies": {"signal": {"seeds": [0, 1], "sweeps": sweeps}},
        "figures": {"signal": {"color_sweep": "color_gap", "size_sweep": "size_gap"}},
    }
    study = gather_study(paths, config, EVALUATION)
    claims_cfg = load_config(REPO / "config.yaml")["claims"]
    rows = claims_by_budget(study, claims_cfg, [STEPS[-1], STEPS[1]])
    assert [row["step"] for row in rows] == [STEPS[1], STEPS[-1]]
    full = evaluate_claims(study, claims_cfg)
    for name, claim in rows[-1]["claims"].items():
        assert (claim["outcome"], claim["value"]) == (full[name]["outcome"], full[name]["value"])
    # Before any naive crossing (index 2 at the earliest) no run is later with the other
    # methods; in full, the runs whose naive prompting learned are later with them (their
    # random scores never reach the threshold).
    assert "0 later" in rows[0]["claims"]["hidden"]["detail"]
    assert "4 later" in full["hidden"]["detail"]
    table = budget_table_markdown(rows).splitlines()
    assert len(table) == 4 and table[2].startswith(f"| {STEPS[1]:,} | ")
