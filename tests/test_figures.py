"""The figures: PDF and PNG from fabricated study datasets, including the awkward ones
(one seed, one level, nothing ever learned, a requested gap that was not run, a method
that was not evaluated); the events the claim figures mark, on hand-made trajectories;
sample sheets."""

import json

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from conceptspace import cli
from conceptspace.analysis import blue_small, convergence_step, memorization_turn
from conceptspace.concepts import CLASSES, CONCEPTS
from conceptspace.config import ConfigError, load_config, validate_config
from conceptspace.runs import run_id
from conceptspace.evaluate import write_evaluation
from conceptspace.figures import seeds_count, seeds_run
from conceptspace.figures.hidden import plot_hidden
from conceptspace.figures.patching import plot_patching
from conceptspace.figures.sheets import (
    plot_sample_sheet,
    row_labels,
    run_title,
    sheet_canvas,
    sheet_rows,
)
from conceptspace.figures.signal import plot_signal
from conceptspace.figures.trajectories import plot_trajectories
from conceptspace.io import ConceptspaceError, provenance
from conceptspace.methods import build_methods
from conceptspace.netcdf import save_dataset_nc
from conceptspace.trajectories import gather_run, gather_study, learning_time
from conftest import REPO, SCHEMA, SMOKE, every_sample_valid
from test_trajectories import METHODS_CFG as ALL_METHODS  # every kind of method
from test_trajectories import OFF_CFG as NO_METHODS  # naive prompting only

STEPS = [10, 40, 90, 160, 250, 360]
EVALUATION = {
    "samples_per_prompt": 3,
    "sampler_steps": 5,
    "batch_size": 8,
    "threshold": 0.8,
    "sigma": 0.0,
    "min_valid_fraction": 0.25,
    "authors": {"threshold": 0.9, "sigma": 2.0, "consecutive": 3},
}


def fabricate_study(folder, runs, methods_cfg=NO_METHODS):
    """runs: {(seed, color_gap, size_gap): crossing index or None}. Under naive prompting
    the unseen class walks from (color_gap / 2, 0.6) in concept space to (1, 1) at its
    crossing; every other method of ``methods_cfg`` crosses one checkpoint earlier. The
    files go through write_evaluation, gather_run and gather_study, as in the pipeline."""
    rng = np.random.default_rng(0)
    methods = build_methods(methods_cfg, final_step=STEPS[-1])
    trajectories = []
    for (seed, color_gap, size_gap), crossing in runs.items():
        paths = []
        for index, step in enumerate(STEPS):
            shape = (len(methods), len(CLASSES), len(CONCEPTS), 3)
            p_target = rng.uniform(0.6, 1.0, size=shape)
            for m, method in enumerate(methods):
                earlier = 0 if method.kind == "naive" else 1
                reached = crossing is not None and index >= crossing - earlier
                progress = 1.0 if reached else 0.5 * index / len(STEPS)
                start = (color_gap * 0.5, 0.6)  # each color gap takes its own path
                p_target[m, CLASSES.index("11")] = [
                    [start[0] + (1 - start[0]) * progress],
                    [start[1] + (1 - start[1]) * progress],
                ]
                for prompt in set(CLASSES) - set(method.prompts):
                    p_target[m, CLASSES.index(prompt)] = np.nan
            path = folder / f"eval_{seed}_{color_gap}_{size_gap}_{step}.nc"
            attrs = {"step": step, "seed": seed, "color_gap": color_gap, "size_gap": size_gap}
            write_evaluation(
                path, p_target, methods, CLASSES, CONCEPTS, attrs, every_sample_valid(p_target)
            )
            paths.append(path)
        trajectory = folder / f"trajectory_{seed}_{color_gap}_{size_gap}.nc"
        save_dataset_nc(gather_run(paths), trajectory)
        trajectories.append(trajectory)
    return gather_study(trajectories, {"evaluation": EVALUATION}, EVALUATION)


def assert_written(out_pdf):
    png = out_pdf.with_suffix(".png")
    assert out_pdf.read_bytes()[:5] == b"%PDF-"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out_pdf.stat().st_size > 5000 and png.stat().st_size > 20000
    assert not list(out_pdf.parent.glob(".*")), "temporary files left behind"


def test_plot_signal_writes_pdf_and_png(tmp_path):
    runs = {
        (seed, color_gap, size_gap): crossing
        for seed in (0, 1)
        for (color_gap, size_gap), crossing in {
            (0.3, 0.4): 4,
            (0.45, 0.4): 3,
            (0.6, 0.4): 2,
            (0.6, 0.3): 3,
        }.items()
    }
    runs[(1, 0.3, 0.4)] = None  # one run never learns: drawn, not dropped
    study = fabricate_study(tmp_path, runs, ALL_METHODS)
    out = tmp_path / "figures" / "fig_signal.pdf"
    pdf, png = plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.6)
    assert (pdf, png) == (out, out.with_suffix(".png"))
    assert_written(out)


def test_plot_signal_with_all_learning_times_nan(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.3, 0.4): None, (0, 0.6, 0.4): None})
    assert study["learning_time"].isnull().all()
    out = tmp_path / "never.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.6)
    assert_written(out)


def test_plot_signal_with_one_seed_one_level(tmp_path):
    study = fabricate_study(tmp_path, {(3, 0.4, 0.4): 2})
    assert study.sizes["seed"] == 1 and study.sizes["color_gap"] == 1
    out = tmp_path / "single.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.4)
    assert_written(out)


def test_plot_signal_with_gaps_that_were_not_run(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.4, 0.4): 2})
    out = tmp_path / "elsewhere.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.2, size_sweep_color_gap=0.8)
    assert_written(out)


def test_plot_signal_refuses_a_dataset_that_is_not_a_study(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.4, 0.4): 2}).drop_vars("learning_time_concept")
    with pytest.raises(ConceptspaceError, match="learning_time_concept"):
        plot_signal(study, tmp_path / "x.pdf", 0.4, 0.4)
    assert not (tmp_path / "x.pdf").exists()


# ----------------------------------------------------------------------------- claims 2-4
# Study datasets built directly to the contract of gather_study with a method dimension
# (docs/contracts.md): dims seed, color_gap, size_gap, step, method, prompt, concept.

CONTRACT_STEPS = [100, 400, 900, 1600, 2500, 3600]
# (P(blue), P(small)) of the unseen class 11 at each step: naive prompting memorizes
# 01 red small (nearest at step 900), then turns to 11; eliciting methods get there early.
NAIVE_PATH = [(0.5, 0.5), (0.2, 0.8), (0.05, 0.9), (0.4, 0.95), (0.85, 0.97), (0.95, 0.98)]
ELICITED_PATH = [(0.5, 0.5), (0.5, 0.85), (0.9, 0.95), (0.95, 0.97), (0.97, 0.98), (0.98, 0.99)]
METHOD_KINDS = {
    "naive": "naive",
    "overprompt_0": "overprompt",
    "overprompt": "overprompt",
    "intervention_0": "intervention",
    "intervention": "intervention",
    "patched_final": "patched",
}
LEVELS = [(0.3, 0.4), (0.6, 0.4)]


def contract_study(methods=tuple(METHOD_KINDS), seeds=(0, 1), levels=LEVELS, threshold=0.8):
    """A study dataset: every prompt's target probability rises with step; the unseen
    class follows NAIVE_PATH under naive prompting, ELICITED_PATH otherwise (plus a
    little noise per seed). Overprompt and intervention hold values on 11 only."""
    rng = np.random.default_rng(1)
    color_gaps = sorted({dc for dc, _ in levels})
    size_gaps = sorted({ds for _, ds in levels})
    shape = (len(seeds), len(color_gaps), len(size_gaps), len(CONTRACT_STEPS), len(methods))
    prob = np.full(shape + (len(CLASSES), len(CONCEPTS)), np.nan)
    rise = np.linspace(0.5, 0.99, len(CONTRACT_STEPS))[:, None]  # training classes
    for dc, ds in levels:
        at = (slice(None), color_gaps.index(dc), size_gaps.index(ds))
        for m, method in enumerate(methods):
            path = np.array(NAIVE_PATH if method == "naive" else ELICITED_PATH)
            noise = rng.uniform(-0.01, 0.01, (len(seeds),) + path.shape)
            prob[at + (slice(None), m, CLASSES.index("11"))] = np.clip(path + noise, 0, 1)
            if METHOD_KINDS[method] in ("naive", "patched"):
                for prompt in ("00", "01", "10"):
                    prob[at + (slice(None), m, CLASSES.index(prompt))] = rise
    study = xr.Dataset(
        {
            "concept_prob": (
                ("seed", "color_gap", "size_gap", "step", "method", "prompt", "concept"),
                prob,
            )
        },
        coords={
            "seed": list(seeds),
            "color_gap": color_gaps,
            "size_gap": size_gaps,
            "step": CONTRACT_STEPS,
            "method": list(methods),
            "method_kind": ("method", [METHOD_KINDS[m] for m in methods]),
            "method_setting": ("method", ["setting"] * len(methods)),
            "prompt": list(CLASSES),
            "concept": list(CONCEPTS),
        },
    )
    study["accuracy"] = study["concept_prob"].prod("concept", skipna=False)
    # every sample valid: the accuracy among the valid samples is the accuracy
    study["valid_fraction"] = (
        study["accuracy"].notnull().astype(float).where(study["accuracy"].notnull())
    )
    study["accuracy_among_valid"] = study["accuracy"].assign_attrs(min_valid_fraction=0.25)
    times = learning_time(study["accuracy_among_valid"].sel(prompt="11"), threshold)
    study["learning_time"] = times.transpose("seed", "color_gap", "size_gap", "method")
    study["learning_speed"] = 1.0 / study["learning_time"]
    study.attrs["config"] = json.dumps({"evaluation": {"threshold": threshold}})
    return study


def concept_path(points, steps=None):
    steps = steps or CONTRACT_STEPS[: len(points)]
    return xr.DataArray(
        np.array(points, dtype=float),
        dims=("step", "concept"),
        coords={"step": steps, "concept": ["color", "size"]},
    )


@pytest.mark.parametrize(
    "points, expected",
    [
        (NAIVE_PATH, (900, "01")),  # weak color gap: pulled to red small, then turns
        ([(0.5, 0.5), (0.9, 0.2), (0.95, 0.1), (0.97, 0.5), (0.98, 0.9)], (900, "10")),
        ([(0.5, 0.5), (0.1, 0.9), (0.1, 0.9), (0.6, 0.95)], (900, "01")),  # tie: the last
        ([(0.5, 0.5), (0.7, 0.7), (0.9, 0.9), (1.0, 1.0)], (np.nan, None)),  # no pull
        ([(0.3, 0.3), (0.4, 0.6), (0.35, 0.9), (0.9, 0.95)], (900, "01")),  # 0.65 x 0.9
        ([(0.3, 0.3), (0.4, 0.6), (0.45, 0.9), (0.9, 0.95)], (np.nan, None)),  # 0.55 x 0.9
        ([(0.5, 0.5), (0.62, 0.45), (0.45, 0.58), (0.5, 0.6)], (np.nan, None)),  # noise
    ],
)
def test_memorization_turn_on_hand_made_paths(points, expected):
    step, pulled_to = memorization_turn(concept_path(points))
    assert pulled_to == expected[1]
    np.testing.assert_equal(step, expected[0])


def test_memorization_turn_skips_missing_checkpoints_and_all_missing_paths():
    points = [(np.nan, np.nan), (0.2, 0.8), (0.05, 0.9), (np.nan, 0.2), (0.9, 0.9)]
    assert memorization_turn(concept_path(points)) == (900, "01")
    step, pulled_to = memorization_turn(concept_path([(np.nan, np.nan)] * 3))
    assert np.isnan(step) and pulled_to is None


def accuracy_table(rows, steps=CONTRACT_STEPS):
    return xr.DataArray(
        np.array(list(rows.values()), dtype=float),
        dims=("prompt", "step"),
        coords={"prompt": list(rows), "step": steps[: len(next(iter(rows.values())))]},
    )


def test_convergence_step_is_the_first_step_all_training_classes_reach_the_threshold():
    rows = {
        "00": [0.1, 0.85, 0.9, 0.9, 0.95],
        "01": [0.1, 0.2, 0.5, 0.81, 0.9],
        "10": [0.1, 0.3, 0.8, 0.85, 0.9],
        "11": [0.0, 0.0, 0.0, 0.0, 0.0],  # the unseen class does not count
    }
    assert convergence_step(accuracy_table(rows), 0.8) == 1600
    rows["00"][3] = 0.79  # one class dips back below: all three must hold at once
    assert convergence_step(accuracy_table(rows), 0.8) == 2500
    rows["10"][4] = np.nan  # a missing value never counts as reached
    assert np.isnan(convergence_step(accuracy_table(rows), 0.8))


def test_blue_small_turns_target_probabilities_into_one_frame():
    study = contract_study(methods=("naive",), seeds=(0,), levels=[(0.3, 0.4)])
    target = study["concept_prob"].isel(seed=0, color_gap=0, size_gap=0, method=0, step=-1)
    frame = blue_small(target)
    assert frame.sel(prompt="00").values == pytest.approx(1 - target.sel(prompt="00").values)
    assert frame.sel(prompt="11").values == pytest.approx(target.sel(prompt="11").values)
    assert frame.sel(prompt="01", concept="size") == pytest.approx(
        target.sel(prompt="01", concept="size")
    )
    assert frame.sel(prompt="01", concept="color") == pytest.approx(
        1 - target.sel(prompt="01", concept="color")
    )


@pytest.mark.parametrize("plot", [plot_trajectories, plot_hidden, plot_patching])
def test_claim_figures_write_pdf_and_png(tmp_path, plot):
    out = tmp_path / "figures" / f"{plot.__name__}.pdf"
    # The third level was not run: its panel says so instead of failing.
    pdf, png = plot(contract_study(), out, [*LEVELS, (0.9, 0.4)])
    assert (pdf, png) == (out, out.with_suffix(".png"))
    assert_written(out)


def test_claim_figures_from_a_study_gathered_by_the_pipeline(tmp_path):
    runs = {(seed, color_gap, 0.4): 4 for seed in (0, 1) for color_gap in (0.3, 0.6)}
    runs[(1, 0.3, 0.4)] = None
    study = fabricate_study(tmp_path, runs, ALL_METHODS)
    naive_time = study["learning_time"].sel({"method": "naive", "seed": 0}).values
    elicited_time = study["learning_time"].sel({"method": "intervention", "seed": 0}).values
    assert (elicited_time < naive_time).all()  # the figures have something to show
    for plot in (plot_trajectories, plot_hidden, plot_patching):
        out = tmp_path / "figures" / f"{plot.__name__}.pdf"
        plot(study, out, [(0.3, 0.4), (0.6, 0.4)])
        assert_written(out)


def test_claim_figures_with_one_seed_and_nothing_reached(tmp_path):
    study = contract_study(seeds=(5,), levels=[(0.3, 0.4)], threshold=0.999)
    assert study["learning_time"].isnull().all()
    for plot in (plot_trajectories, plot_hidden, plot_patching):
        out = tmp_path / f"{plot.__name__}.pdf"
        plot(study, out, [(0.3, 0.4)])
        assert_written(out)


def test_figures_carry_provenance(tmp_path):
    record = provenance({"figures": "test"}, seed=None)
    out = tmp_path / "fig_hidden.pdf"
    plot_hidden(contract_study(), out, LEVELS, record=record)
    with Image.open(out.with_suffix(".png")) as png:
        stored = json.loads(png.info["Description"])
    assert stored["config_hash"] == record["config_hash"]


@pytest.mark.parametrize(
    "plot, methods, missing",
    [
        (plot_hidden, ("naive", "overprompt", "patched_final"), "intervention"),
        (plot_patching, ("naive", "overprompt", "intervention"), "patched"),
        (plot_trajectories, ("overprompt", "intervention"), "naive"),
    ],
)
def test_a_figure_without_its_method_says_which_and_how_to_fix(tmp_path, plot, methods, missing):
    study = contract_study(methods=methods)
    out = tmp_path / "x.pdf"
    with pytest.raises(ConceptspaceError, match=f"{missing}.*switch"):
        plot(study, out, LEVELS)
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_a_study_without_the_method_dimension_is_refused(tmp_path):
    study = contract_study().sel({"method": "naive"}, drop=True)
    with pytest.raises(ConceptspaceError, match="method.*gather_study"):
        plot_hidden(study, tmp_path / "x.pdf", LEVELS)


def fake_samples(steps=(100, 900, 3600), methods=("naive", "overprompt_0", "patched_final")):
    """A samples file as `conceptspace sample` writes it: each image a flat color that
    encodes (step, method, prompt, sample), 0 where the method does not apply."""
    size, n_samples = 8, 3
    applied = np.array(
        [[True] * 4 if m != "overprompt_0" else [False] * 3 + [True] for m in methods]
    )
    images = np.zeros((len(steps), len(methods), 4, n_samples, size, size, 3), np.uint8)
    for index in np.ndindex(images.shape[:4]):
        if applied[index[1], index[2]]:
            images[index] = (10 * index[0] + 1, 10 * index[1] + index[2], 10 * index[3] + 2)
    return xr.Dataset(
        {
            "images": (("step", "method", "prompt", "sample", "y", "x", "channel"), images),
            "applied": (("method", "prompt"), applied),
        },
        coords={
            "step": list(steps),
            "method": list(methods),
            "method_kind": ("method", [METHOD_KINDS[m] for m in methods]),
            "method_setting": ("method", ["class means", "rgb=(0.1, 0.1, 0.9)", "donor=final"]),
            "prompt": list(CLASSES),
            "sample": np.arange(n_samples),
        },
    )


def test_sample_sheet_rows_are_the_sampled_pairs_unseen_first():
    assert sheet_rows(fake_samples()) == [
        ("naive", "11"),
        ("naive", "00"),
        ("naive", "01"),
        ("naive", "10"),
        ("overprompt_0", "11"),
        ("patched_final", "11"),
        ("patched_final", "00"),
        ("patched_final", "01"),
        ("patched_final", "10"),
    ]


def test_sample_sheet_rows_are_named_by_the_runs_own_layout():
    samples = fake_samples()
    rows = sheet_rows(samples)[:4]  # naive prompting of every class
    assert row_labels(samples, rows)[0] == "naive: 11 blue small"  # no layout: the 2x2
    samples.attrs["layout"] = "color_shape"  # an underspecification run's samples
    assert row_labels(samples, rows) == [
        "naive: 11 blue triangle",
        "naive: 00 red disc",
        "naive: 01 red triangle",
        "naive: 10 blue disc",
    ]


def test_sample_sheet_is_titled_by_the_run_its_samples_hold():
    samples = fake_samples()
    samples.attrs.update(seed=np.int64(1), color_gap=0.8, size_gap=0.6)
    assert run_title(samples) == "Generations of run seed 1, color gap 0.8, size gap 0.6"
    samples.attrs["mask_ratio"] = 0.0  # an underspecification run's samples
    assert run_title(samples).endswith("size gap 0.6, masking ratio 0")


def test_sample_sheet_canvas_puts_each_image_in_its_cell():
    samples = fake_samples()
    rows = sheet_rows(samples)
    canvas = sheet_canvas(samples, rows, per_cell=2)
    size, gap, cell_gap = 8, 1, 6
    cell_width = 2 * size + gap
    assert canvas.shape == (9 * size + 8 * cell_gap, 3 * cell_width + 2 * cell_gap, 3)
    # Row 4 is overprompt_0 on 11; column 2 is step 3600; the second sample.
    top, left = 4 * (size + cell_gap), 2 * (cell_width + cell_gap) + size + gap
    expected = (10 * 2 + 1, 10 * 1 + 3, 10 * 1 + 2)
    assert (canvas[top : top + size, left : left + size] == expected).all()
    assert (canvas[top : top + size, left - gap] == 255).all()  # the gap is background


def test_sample_sheet_writes_a_png(tmp_path):
    out = tmp_path / "figures" / "samples_dc0.300_ds0.400_seed0.png"
    assert plot_sample_sheet(fake_samples(), out, "samples of one run") == out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 300 and png.size[1] > 300
    assert not list(out.parent.glob(".*")), "temporary files left behind"


def cli_config(levels):
    """The config sections `figure` reads: the study's sweep and figures.levels."""
    return {
        "studies": {
            "signal": {
                "seeds": [0, 1],
                "sweeps": [{"name": "color_gap", "color_gap": [0.3, 0.6], "size_gap": [0.4]}],
            }
        },
        "figures": {"levels": [{"color_gap": dc, "size_gap": ds} for dc, ds in levels]},
    }


def test_figure_command_draws_the_claim_figures_from_a_study_file(tmp_path):
    study_path = tmp_path / "study.nc"
    save_dataset_nc(contract_study(), study_path)
    settings = json.dumps(cli_config(LEVELS))
    for name in ("trajectories", "hidden", "patching"):
        out = tmp_path / "figures" / f"fig_{name}.pdf"
        argv = ["figure", name, "--settings", settings, "--study", str(study_path)]
        assert cli.main([*argv, "--methods", "naive", "intervention", "--out", str(out)]) == 0
        assert_written(out)


def test_figure_command_refuses_a_level_the_study_did_not_run(tmp_path, caplog):
    study_path = tmp_path / "study.nc"
    save_dataset_nc(contract_study(), study_path)
    settings = json.dumps(cli_config([(0.3, 0.4), (0.9, 0.4)]))
    out = tmp_path / "fig_hidden.pdf"
    argv = ["figure", "hidden", "--settings", settings, "--study", str(study_path)]
    assert cli.main([*argv, "--out", str(out)]) == 1
    assert "figures.levels" in caplog.text and "0.9" in caplog.text
    assert not out.exists()


def test_config_check_refuses_a_figure_level_the_study_does_not_run(tmp_path):
    """Before planning, not when the figure is drawn: validate_config is what the
    workflow runs first."""
    config = load_config(REPO / "config.yaml", SMOKE)
    config["results"] = str(tmp_path / "results")
    validate_config(config, SCHEMA)  # the smoke preset's levels are levels of its study
    config["figures"]["levels"] = [
        {"color_gap": 0.3, "size_gap": 0.4},
        {"color_gap": 0.45, "size_gap": 0.4},
    ]
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    message = str(caught.value)
    assert "config key 'figures.levels.1': (color_gap 0.45, size_gap 0.4)" in message
    assert "choose from (0.3, 0.4), (0.6, 0.3), (0.6, 0.4)" in message
    assert "figures.levels.0" not in message


def test_hidden_figure_needs_an_eliciting_method(tmp_path):
    with pytest.raises(ConceptspaceError, match="overprompt.*intervention"):
        plot_hidden(contract_study(), tmp_path / "x.pdf", LEVELS, methods=["naive"])


@pytest.mark.workflow
def test_smoke_run_draws_the_claim_figures_and_the_sample_sheet(smoke_run):
    workdir, config = smoke_run
    figures = workdir / "results" / "figures"
    for name in ("trajectories", "hidden", "patching"):
        assert_written(figures / f"fig_{name}.pdf")
    sheet = config["figures"]["sample_sheet"]
    run = run_id(sheet["color_gap"], sheet["size_gap"], sheet["seed"])
    with Image.open(figures / f"samples_{run}.png") as png:
        assert png.format == "PNG"
        assert json.loads(png.info["Description"])["config_hash"]


def test_figure_command_draws_the_sample_sheet_from_a_samples_file(tmp_path):
    samples_path = tmp_path / "samples.nc"
    samples = fake_samples()
    samples.attrs.update(seed=2, color_gap=0.3, size_gap=0.4)  # another seed than configured
    save_dataset_nc(samples, samples_path)
    sheet = {"seed": 0, "color_gap": 0.3, "size_gap": 0.4, "samples": 2, "steps": "all"}
    settings = json.dumps({"figures": {"sample_sheet": sheet}})
    out = tmp_path / "samples_dc0.300_ds0.400_seed0.png"
    argv = ["figure", "sheet", "--settings", settings, "--out", str(out)]
    assert cli.main(argv) == 1  # no --samples: refused, nothing written
    assert not out.exists()
    assert cli.main([*argv, "--samples", str(samples_path)]) == 0
    with Image.open(out) as png:
        assert "seed 2, color gap 0.3, size gap 0.4" in png.info["Title"]


def test_accuracy_curves_are_smoothed_as_the_learning_times_were():
    # With the study's sigma the line is the smoothed seed mean (where the dashed learning
    # time crosses the threshold) and the measured means are dots beside it.
    from conceptspace.figures import accuracy_axes, draw_accuracy, new_figure
    from conceptspace.trajectories import smooth_accuracy

    accuracy = xr.DataArray(
        [[0.1, 0.1, 0.95, 0.1, 0.1, 0.9, 0.9]],
        dims=("seed", "step"),
        coords={"seed": [0], "step": [100, 200, 300, 400, 500, 600, 700]},
    )
    times = learning_time(accuracy, 0.8, 1.0).values
    ax = new_figure(4, 3).subplots()
    accuracy_axes(ax, "panel", 0.8, sigma=1.0)
    draw_accuracy(ax, accuracy, "C0", "naive", learning_times=times, threshold=0.8, sigma=1.0)
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("naive")]
    # the dots: markers with no line (the legend's smoothing note is an empty one)
    (dots,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None" and len(ln.get_xdata())]
    np.testing.assert_allclose(dots.get_ydata(), accuracy.values[0])
    smoothed = smooth_accuracy(accuracy, 1.0).values[0]
    np.testing.assert_allclose(line.get_ydata(), smoothed)
    assert line.get_label().endswith(f"at step {times[0]:.0f} (1/1 seeds)")
    assert smoothed[list(accuracy["step"].values).index(times[0])] >= 0.8
    assert any("sigma 1" in label for label in ax.get_legend_handles_labels()[1])


# ----------------------------------------------------------------------------- layout


def test_a_long_title_is_wrapped_inside_a_narrow_figure():
    from conceptspace.figures import balanced, figure_title, new_figure

    figure = new_figure(4.0, 3.0)
    figure.subplots()
    long = "Hidden capability: " + "a long subtitle that no one-panel figure holds " * 3
    figure_title(figure, f"{long}\nsecond line, short")
    figure.canvas.draw()
    title = figure.get_suptitle()
    extent = figure._suptitle.get_window_extent(figure.canvas.get_renderer())
    assert title.count("\n") >= 3 and title.endswith("\nsecond line, short")
    assert extent.x0 >= 0 and extent.x1 <= figure.bbox.x1, "the title runs off the canvas"
    # as few lines as the width allows, none left with a single word
    lines = balanced("one two three four five six seven eight nine ten", 40).split("\n")
    assert len(lines) == 2 and all(len(line.split()) > 2 for line in lines)


def test_corner_labels_sit_outside_the_square_clear_of_the_markers():
    from conceptspace.figures import concept_square, new_figure

    figure = new_figure(5.0, 5.0)
    ax = figure.subplots()
    concept_square(ax, "panel")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    labels = [text for text in ax.texts if "red" in text.get_text() or "blue" in text.get_text()]
    assert len(labels) == 4
    for label in labels:
        box = label.get_window_extent(renderer)
        (_, low), (_, high) = to_data.transform([(box.x0, box.y0), (box.x1, box.y1)])
        assert high < 0 or low > 1, f"{label.get_text()!r} lies inside the square"
        assert ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1, f"{label.get_text()!r} is cut"


def test_titles_count_the_seeds_each_level_was_run_with(tmp_path):
    # a sweep with its own seeds: five at gap 0.3, two at 0.6 (the grid has five)
    runs = {(seed, 0.3, 0.4): 2 for seed in range(5)} | {(seed, 0.6, 0.4): 1 for seed in (0, 1)}
    study = fabricate_study(tmp_path, runs)
    assert study.sizes["seed"] == 5 and sorted(seeds_run(study)) == [2, 5]
    assert seeds_count(seeds_run(study)) == "2 to 5 seeds"
    assert (seeds_count(1), seeds_count([3, 3]), seeds_count([])) == (
        "1 seed",
        "3 seeds",
        "0 seeds",
    )


def test_a_sweep_with_one_level_is_drawn_as_one_level(tmp_path):
    from conceptspace.figures import new_figure
    from conceptspace.figures.signal import _speed_panel

    study = fabricate_study(tmp_path, {(0, 0.6, 0.4): 2, (1, 0.6, 0.4): 3}).sel({"method": "naive"})
    ax = new_figure(5.0, 4.0).subplots()
    _speed_panel(ax, study, "size_gap", "color_gap", 0.6, "0.8", "(b)")
    assert not ax.collections[1:], "a band over one level"  # the seeds' points only
    assert all(len(line.get_xdata()) == 1 for line in ax.get_lines()), "a line over one level"
    assert any("one level" in text.get_text() for text in ax.texts)
    assert list(ax.get_xticks()) == [pytest.approx(0.4)]
