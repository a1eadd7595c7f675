"""Calibration candidates: each overlay is a valid config that plans exactly one run, and
the record of a run says what its trajectory holds."""

import subprocess

import numpy as np
import pytest
import xarray as xr

from conceptspace.calibration import (
    COLUMNS,
    TAUGHT_PLACEHOLDER,
    calibration_runs,
    checkpoint_table,
    headline,
    preset_runs,
    single_run,
    write_record,
)
from conceptspace.config import load_config, validate_config
from conceptspace.io import ConceptspaceError
from conftest import REPO, SCHEMA, planned_jobs, snakemake

PRESETS = REPO / "workflow" / "presets"
CANDIDATES = sorted((PRESETS / "calibration").glob("*.yaml"))
BASE = (REPO / "config.yaml", PRESETS / "cpu-16px.yaml", PRESETS / "calibration" / "baseline.yaml")
# Candidates laid over another preset than cpu-16px (BASE=NAME scripts/calibrate.sh ...);
# a stacked candidate lies on the preset of the one under it.
BASE_PRESET = {"masking-32px-long": "cpu", "donor-3000": "cpu-long"}


# Candidates laid over another candidate (scripts/calibrate.sh FIRST SECOND).
STACKED_ON = {
    "triangle-authors": "masking-three-ratios",
    "masking-ratios-0.5-1": "masking-32px-long",
    "mask-value-0": "masking-ratios-0.5-1",
    "masking-ratio-1": "masking-32px-long",
    # run over masking-ratio-1 (one run); over masking-ratios-0.5-1 here, also valid
    "shape-one-hot": "mask-value-0",
}


def base_preset(stem):
    """The preset a candidate's overlays lie on (calibrate.sh's BASE)."""
    under = STACKED_ON.get(stem)
    return base_preset(under) if under else BASE_PRESET.get(stem, "cpu-16px")


def configs_of(candidate):
    if candidate.stem == "baseline":
        return BASE
    under = STACKED_ON.get(candidate.stem)
    base = (BASE[0], PRESETS / f"{base_preset(candidate.stem)}.yaml", BASE[2])
    return (*(configs_of(candidate.with_name(f"{under}.yaml")) if under else base), candidate)


def test_the_candidates_are_there():
    names = {path.stem for path in CANDIDATES}
    assert {"baseline", "data-range-01", "h-init-fan-in-11"} <= names


def flat(config, prefix=""):
    """{"a.b": value} for every leaf of a nested config (lists are leaves)."""
    if not isinstance(config, dict):
        return {prefix: config}
    return {
        k: v for key, value in config.items() for k, v in flat(value, f"{prefix}{key}.").items()
    }


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda path: path.stem)
def test_candidate_is_valid_and_changes_only_what_it_names(candidate):
    config = load_config(*configs_of(candidate))
    validate_config(config, SCHEMA)
    study, runs = calibration_runs(config)
    if study == "signal":
        # the baseline's level, unless the overlay's purpose is another color gap
        gap = 0.6 if candidate.stem == "color-gap-0.6" else 0.8
        assert single_run(config).color_gap == gap and single_run(config).size_gap == 0.4
    else:  # a few runs of the underspecification study, one seed
        assert len(runs) <= 3 and len({run.seed for run in runs}) == 1
    if candidate.stem == "baseline":
        assert single_run(config).id == "dc0.800_ds0.400_seed0"
        return
    # the overlay's keys differ from those it is laid over, every other key is theirs
    changed, config = flat(load_config(candidate)), flat(config)
    under = flat(load_config(*configs_of(candidate)[:-1]))

    def touched(key):  # a changed key, in a changed section, or a section holding one
        return any(key.startswith(c) or c.startswith(key) for c in changed)  # keys end in "."

    for key, value in changed.items():
        assert config[key] == value and (key not in under or under[key] != value), key
    assert {k: v for k, v in config.items() if not touched(k)} == {
        k: v for k, v in under.items() if not touched(k)
    }


@pytest.mark.workflow
@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda path: path.stem)
def test_candidate_plans_one_training_and_one_evaluation_per_run(candidate, tmp_path):
    # as scripts/calibrate.sh runs it: the base preset by name, the overlays as files
    overlays = configs_of(candidate)[2:]
    study, runs = calibration_runs(load_config(*configs_of(candidate)))
    args = ("-n", "--quiet", "rules", "--config", f"preset={base_preset(candidate.stem)}")
    result = snakemake(tmp_path, *args, configs=(REPO / "config.yaml", *overlays))
    jobs = planned_jobs(result.stdout)
    assert jobs["render_training_set"] == jobs["train_vdm"] == jobs["evaluate_pack"] == len(runs)
    assert jobs["train_probe"] == 1 and "fig_background" not in jobs
    if study == "signal":
        assert jobs["sample_sheet"] == 1 and "fig_underspec" not in jobs
    else:
        assert jobs["fig_underspec"] == 1 and "sample_sheet" not in jobs


def test_a_config_of_several_runs_is_refused():
    with pytest.raises(ConceptspaceError, match="plans 6 .*baseline.yaml"):
        single_run(load_config(REPO / "config.yaml", PRESETS / "cpu-16px.yaml"))


# ------------------------------------------------------------------- the record


def trajectory():
    """A run of 4 checkpoints whose class 11 is learned at the third (naive) and second
    (intervention); half the naive samples are blank at the first."""
    steps, methods, prompts = (
        [100, 200, 300, 400],
        ["naive", "intervention"],
        ["00", "01", "10", "11"],
    )
    accuracy = np.full((4, 2, 4), 0.9)
    accuracy[:, 0, 3] = [0.0, 0.1, 0.95, 0.95]
    accuracy[:, 1, 3] = [0.1, 0.9, 0.95, 0.95]
    valid = np.ones((4, 2, 4))
    valid[0, 0, 3] = 0.5
    concept = np.stack([accuracy**0.5, accuracy**0.5], axis=-1)
    dims = ("step", "method", "prompt")
    return xr.Dataset(
        {
            "accuracy": (dims, accuracy),
            "valid_fraction": (dims, valid),
            "concept_accuracy": ((*dims, "concept"), concept),
        },
        coords={"step": steps, "method": methods, "prompt": prompts, "concept": ["color", "size"]},
        attrs={"layout": "color_size", "git_commit": "abc123"},
    )


def test_checkpoint_table_has_a_row_per_checkpoint_and_leaves_out_absent_scores():
    table = checkpoint_table(trajectory(), "11", sigma=0.0)
    lines = table.splitlines()
    assert lines[0].startswith("| step | naive accuracy | smoothed (sigma 0) | valid fraction")
    assert "product of means" not in lines[0] and "overprompt" not in lines[0]
    assert len(lines) == 2 + 4
    # step 100: naive 0, smoothed 0, valid 0.5, color and size sqrt(0), intervention 0.1,
    # training classes 0.9
    assert lines[2] == "| 100 | 0.00 | 0.00 | 0.50 | 0.00 | 0.00 | 0.10 | 0.90 |"


@pytest.mark.parametrize("valid, expected", [(0.5, "naive at step 200"), (0.2, "naive never")])
def test_headline_times_the_class_among_the_valid_samples_above_the_floor(valid, expected):
    """Half the samples valid and 90% of those right: learned among the valid samples (the
    study's learning_time) at step 200, never on all samples (0.45). With a fifth valid,
    below the floor 0.25, the same right fraction counts as nothing learned."""
    run = trajectory()
    run["accuracy"].loc[{"method": "naive", "prompt": "11"}] = [
        0.0,
        0.9 * valid,
        0.9 * valid,
        0.9 * valid,
    ]
    run["valid_fraction"].loc[{"method": "naive", "prompt": "11"}] = [0.0, valid, valid, valid]
    text = headline(run, "11", threshold=0.8, sigma=0.0, min_valid_fraction=0.25)
    assert f"among the valid samples reaches 0.8: {expected}," in text, text
    assert "On all samples naive never." in text
    assert "among the valid" not in headline(run, "11", threshold=0.8, sigma=0.0)


def test_record_holds_overlay_headline_table_and_sheet(tmp_path):
    candidate = PRESETS / "calibration" / "data-range-01.yaml"
    results = tmp_path / "results"
    run = results / "signal" / "runs" / "dc0.800_ds0.400_seed0"
    run.mkdir(parents=True)
    trajectory().to_netcdf(run / "trajectory.nc")
    (results / "figures").mkdir()
    (results / "figures" / "samples_dc0.800_ds0.400_seed0.png").write_bytes(b"png")
    out = write_record(
        "data-range-01", configs_of(candidate), results, tmp_path / "record", 905.0, 2048
    )
    assert (out / "overlay.yaml").read_text() == candidate.read_text()
    assert (out / "samples_dc0.800_ds0.400_seed0.png").read_bytes() == b"png"
    readme = (out / "README.md").read_text()
    assert "15.1 min, peak RSS of any job 2 MiB" in readme and "commit abc123" in readme
    # cpu-16px preset: threshold 0.8, sigma 1; the smoothed naive accuracy first passes at 400
    assert "naive at step 400, intervention at step 300" in readme
    assert "naive valid fraction at the last checkpoint 1.00" in readme
    assert (
        TAUGHT_PLACEHOLDER in readme and "![samples](samples_dc0.800_ds0.400_seed0.png)" in readme
    )
    assert not (out / "claims.json").exists()  # no claims in these results


def test_record_of_stacked_underspecification_candidates_holds_every_run(tmp_path):
    """The signal study off: a headline and a table per masking ratio, the figure of the
    study as the sheet, every overlay named."""
    candidate = PRESETS / "calibration" / "triangle-authors.yaml"
    config = load_config(*configs_of(candidate))
    study, runs = calibration_runs(config)
    assert study == "underspecification"
    results = tmp_path / "results"
    shape = trajectory().assign_coords(concept=["color", "shape"])
    shape.attrs["layout"] = "color_shape"
    for run in runs:
        (results / study / "runs" / run.id).mkdir(parents=True)
        shape.to_netcdf(results / study / "runs" / run.id / "trajectory.nc")
    (results / "figures").mkdir()
    (results / "figures" / "fig_underspec.png").write_bytes(b"png")
    name = "masking-three-ratios+triangle-authors"
    out = write_record(name, configs_of(candidate), results, tmp_path / "record", 60.0)
    readme = (out / "README.md").read_text()
    assert "with `masking-three-ratios.yaml`, `triangle-authors.yaml` over it" in readme
    assert (out / "overlay.yaml").read_text() == candidate.read_text()
    for run in runs:
        assert f"{run.id}: Class 11's smoothed accuracy" in readme
        assert f"## Class 11 at every checkpoint of {run.id}" in readme
    assert "| shape accuracy |" in readme and "| size accuracy |" not in readme
    assert "![samples](fig_underspec.png)" in readme
    with pytest.raises(ConceptspaceError, match="calibrate.sh masking-three-ratios triangle"):
        write_record(name, configs_of(candidate), tmp_path / "none", tmp_path / "r", 1.0)


def test_record_of_a_whole_preset_holds_each_signal_run_and_its_sheets(tmp_path):
    """Without baseline.yaml the record is the preset's: every signal run (the cpu preset's
    3 gaps x 2 seeds) with its headline and table, and each sample sheet drawn."""
    configs = (REPO / "config.yaml", PRESETS / "cpu.yaml")
    results = tmp_path / "results"
    study, runs = preset_runs(load_config(*configs))
    assert study == "signal" and len(runs) == 6
    for run in runs:
        (results / "signal" / "runs" / run.id).mkdir(parents=True)
        trajectory().to_netcdf(results / "signal" / "runs" / run.id / "trajectory.nc")
    (results / "figures").mkdir()
    drawn = f"samples_{runs[0].id}.png"
    (results / "figures" / drawn).write_bytes(b"png")
    out = write_record("cpu", configs, results, tmp_path / "record", 3600.0, command="run.sh")
    readme = (out / "README.md").read_text()
    assert "the cpu preset whole, its 6 signal runs (cpu.yaml copied here" in readme
    assert "baseline.yaml" not in readme
    assert (out / "overlay.yaml").read_text() == (PRESETS / "cpu.yaml").read_text()
    for run in runs:
        assert f"{run.id}: Class 11's smoothed accuracy" in readme
        assert f"## Class 11 at every checkpoint of {run.id}" in readme
    assert f"![samples]({drawn})" in readme and readme.count("## Sample sheet") == 1
    assert "Wall time 60.0 min" in readme and "    run.sh\n" in readme


def test_a_preset_record_without_the_signal_study_is_refused():
    config = load_config(REPO / "config.yaml", PRESETS / "cpu.yaml")
    config["studies"]["signal"] = None
    with pytest.raises(ConceptspaceError, match="signal study off"):
        preset_runs(config)


def test_record_of_an_unfinished_run_names_the_fix(tmp_path):
    with pytest.raises(ConceptspaceError, match="scripts/calibrate.sh baseline first"):
        write_record("baseline", BASE, tmp_path / "results", tmp_path / "record", 1.0)


def test_calibrate_script_names_the_candidates_for_an_unknown_one():
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "calibrate.sh"), "no-such-candidate"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no candidate workflow/presets/calibration/no-such-candidate.yaml" in result.stderr
    assert "baseline" in result.stderr and "data-range-01" in result.stderr


def test_checkpoint_table_reads_a_gathered_trajectory(tmp_path):
    from test_trajectories import STEPS, write_trajectory

    with xr.open_dataset(write_trajectory(tmp_path, 0, 0.8, 0.4, crossing_index=5)) as gathered:
        lines = checkpoint_table(gathered.load(), "11", sigma=0.0).splitlines()
    headings = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert headings == ["step", "naive accuracy", "smoothed (sigma 0)"] + [
        heading for heading, *_, concept in COLUMNS[1:] if concept != "shape"  # color x size
    ] + ["training classes (min)"]
    assert len(lines) == 2 + len(STEPS)
    # naive class 11: every concept 0.3 before the crossing, 1 from it; every sample valid
    assert lines[2].split("|")[2:5] == [" 0.09 ", " 0.09 ", " 1.00 "]
    assert lines[2 + 5].split("|")[2:6] == [" 1.00 ", " 1.00 ", " 1.00 ", " 1.00 "]
