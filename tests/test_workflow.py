"""The pipeline through Snakemake: lint, formatting, planning, and the smoke preset end
to end, with its outputs checked (not only its exit code)."""

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from conceptspace.config import load_config
from conceptspace.netcdf import EVALUATION_VERSION
from conceptspace.runs import checkpoint_steps
from conceptspace.studies import STUDIES
from conftest import REPO, SMOKE, planned_jobs, snakemake, venv_tool

pytestmark = pytest.mark.workflow


def test_lint_has_no_findings():
    result = subprocess.run(
        [venv_tool("snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_rules_and_code_are_formatted():
    snakefmt = subprocess.run(
        [venv_tool("snakefmt"), "--check", "Snakefile", "workflow"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert snakefmt.returncode == 0, snakefmt.stderr
    black = subprocess.run(
        [venv_tool("black"), "--check", "src", "tests"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert black.returncode == 0, black.stderr


def test_dry_run_plans_the_paper_scale_study(tmp_path):
    config = load_config(REPO / "config.yaml")
    result = snakemake(tmp_path, "-n", "--quiet", "rules", "--config", "preset=paper")
    jobs = planned_jobs(result.stdout)
    # the signal study's 290 runs, underspecification's 5 seeds x 5 masking ratios and the
    # background study's 5 seeds (which train 40k steps, so have their own checkpoints)
    names = ("signal", "underspecification", "background", "celeba")
    signal, masked, background, celeba = (len(STUDIES[name].runs(config)) for name in names)
    assert celeba == 0  # off: no root
    assert (signal, masked, background) == (290, 25, 5)
    runs = signal + masked + background
    assert jobs["render_training_set"] == runs
    assert jobs["train_vdm"] == runs
    assert jobs["train_probe"] == 3  # one per study: each its own concepts
    # one evaluation job per pack (of one run by default), over all of its checkpoints
    # (far fewer jobs to plan), and its runs' trajectories gathered one job each
    assert jobs["evaluate_pack"] == jobs["gather_run"] == runs and "evaluate_checkpoint" not in jobs
    assert jobs["gather_study"] == 3 and jobs["fig_signal"] == 1
    assert jobs["fig_underspec"] == 1 and jobs["fig_background"] == 1


GPU_RULES = ("train_vdm", "train_probe", "evaluate_pack", "sample_images")


def planned_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job of a dry run's output."""
    jobs, rule = [], None
    for line in output.splitlines():
        if line.strip().startswith("rule ") and line.rstrip().endswith(":"):
            rule = line.strip()[5:-1]
        elif line.strip().startswith("resources:") and rule:
            pairs = line.strip().removeprefix("resources:").split(", ")
            jobs.append((rule, dict(pair.strip().split("=", 1) for pair in pairs)))
            rule = None
    return jobs


def slurm_dry_run(tmp_path, *args) -> list[tuple[str, dict[str, str]]]:
    result = snakemake(tmp_path, "--executor", "slurm", "-j", "64", "-n", *args)
    return planned_resources(result.stdout)


def test_slurm_dry_run_asks_every_gpu_job_for_a_gpu_runtime_and_memory(tmp_path):
    # As a new cluster user types it: no site profile (profiles/default/ is Snakemake's own
    # find), the paper's scale (preset auto on a cluster).
    jobs = slurm_dry_run(tmp_path)
    counts = {rule: sum(1 for name, _ in jobs if name == rule) for rule in GPU_RULES}
    assert counts == {"train_vdm": 320, "train_probe": 3, "evaluate_pack": 320, "sample_images": 6}
    for rule, resources in jobs:
        if rule in GPU_RULES:
            assert resources.get("gres") == "gpu:1", (rule, resources)
            assert int(resources["runtime"]) >= 30 and int(resources["mem_mb"]) >= 8000
    trainings = {r["runtime"] for rule, r in jobs if rule == "train_vdm"}
    assert trainings == {"240", "480"}  # 20k steps, and the background study's 40k


def test_command_line_resources_add_to_the_gpu_request(tmp_path):
    jobs = slurm_dry_run(
        tmp_path,
        *("--set-resources", "train_vdm:slurm_partition=a100", "evaluate_pack:runtime=90"),
        *("--default-resources", "slurm_account=myproj"),
    )
    for rule, resources in jobs:
        if rule in GPU_RULES:
            assert resources["gres"] == "gpu:1" and "mem_mb" in resources, (rule, resources)
            assert resources["slurm_account"] == "myproj"
        if rule == "train_vdm":
            assert resources["slurm_partition"] == "a100" and resources["runtime"] in ("240", "480")
        if rule == "evaluate_pack":
            assert resources["runtime"] == "90"


def test_runs_on_this_machine_default_to_the_smoke_preset(tmp_path):
    here = planned_jobs(snakemake(tmp_path, "-n", "--quiet", "rules").stdout)
    smoke = planned_jobs(
        snakemake(tmp_path, "-n", "--quiet", "rules", configs=(REPO / "config.yaml", SMOKE)).stdout
    )
    assert here == smoke and here["train_vdm"] == 8
    cluster = snakemake(tmp_path, "-n", "--quiet", "rules", "--executor", "slurm", "-j", "64")
    assert planned_jobs(cluster.stdout)["train_vdm"] == 320


def test_bad_config_stops_before_planning_and_names_the_key(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("training:\n  stepz: 10\nevaluation:\n  threshold: 2\n")
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", overlay), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "stepz" in message and "evaluation.threshold" in message


def test_smoke_run_leaves_the_study_dataset(smoke_run):
    workdir, config = smoke_run
    steps = checkpoint_steps(config["training"])
    with xr.open_dataset(workdir / "results" / "signal" / "study.nc") as study:
        # smoke: 2 overprompts, 2 intervention alphas, the final donor, and the two best-ofs
        methods = ["naive", "overprompt_0", "overprompt_1", "intervention_0", "intervention_1"]
        methods += ["patched_final", "overprompt", "intervention"]
        assert dict(study.sizes) == {
            "seed": 2, "color_gap": 2, "size_gap": 2, "step": len(steps), "method": len(methods),
            "prompt": 4, "concept": 2,
        }  # fmt: skip
        assert sorted(study["method"].values) == sorted(methods)
        assert list(study["step"].values) == steps
        assert list(study["prompt"].values) == ["00", "01", "10", "11"]
        # Individual overprompts and alphas act on the unseen class only: NaN elsewhere.
        lone = study["accuracy"].sel({"method": "overprompt_0"})
        assert bool(lone.sel(prompt=["00", "01", "10"]).isnull().all())
        accuracy = study["accuracy"].sel({"method": "naive"})
        # Three signal levels of the 2x2 grid were run, for both seeds: 6 of 8 cells.
        ran = accuracy.notnull().all(["step", "prompt"])
        assert int(ran.sum()) == 6
        assert not bool(ran.sel(color_gap=0.3, size_gap=0.3).any())
        valid = study["valid_fraction"].sel({"method": "naive"})
        np.testing.assert_array_equal(valid.notnull().values, accuracy.notnull().values)
        for name in ("accuracy", "valid_fraction", "hard_accuracy", "product_of_means"):
            values = study[name].values[np.isfinite(study[name].values)]
            assert values.min() >= 0 and values.max() <= 1, name
        # accuracy counts a sample only when it is valid: never above the valid fraction
        assert bool((accuracy <= valid + 1e-9).where(ran).all())
        prob = study["concept_prob"].values  # over valid samples: NaN where none is valid
        assert np.nanmin(prob, initial=0) >= 0 and np.nanmax(prob, initial=1) <= 1
        assert study["learning_time_concept"].dims == (
            "seed", "color_gap", "size_gap", "method", "concept"
        )  # fmt: skip
        assert study["learning_time"].dims == ("seed", "color_gap", "size_gap", "method")
        assert "units" in study["step"].attrs
        assert json.loads(study.attrs["config"])["training"]["steps"] == 60


def test_smoke_run_keeps_checkpoints_manifests_and_logs(smoke_run):
    workdir, config = smoke_run
    results = workdir / "results"
    steps = checkpoint_steps(config["training"])
    for run in STUDIES["signal"].runs(config):
        manifest = json.loads((results / "signal" / "runs" / run.id / "manifest.json").read_text())
        listed = [entry["step"] for entry in manifest["checkpoints"]]
        assert listed == steps
        for step in steps:
            assert (
                results / "signal" / "runs" / run.id / "checkpoints" / f"step_{step:06d}.pt"
            ).exists()
        assert (results / "logs" / "train_vdm" / "signal" / f"{run.id}.log").stat().st_size > 0
    metrics = json.loads((results / "signal" / "probe" / "metrics.json").read_text())
    assert min(metrics["accuracy"].values()) >= config["probe"]["min_accuracy"]
    for rule in ("render_training_set", "train_probe", "evaluate_pack", "gather_study",
                 "figures"):  # fmt: skip
        assert (results / "logs" / rule).exists(), f"no log folder for {rule}"


def test_smoke_run_draws_fig_signal(smoke_run):
    workdir, _ = smoke_run
    figures = workdir / "results" / "figures"
    assert (figures / "fig_signal.pdf").read_bytes()[:5] == b"%PDF-"
    assert (figures / "fig_signal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_run_is_complete_and_one_figure_rebuilds_alone(smoke_run):
    workdir, _ = smoke_run
    configs = (REPO / "config.yaml", SMOKE)
    nothing = snakemake(workdir, "-n", configs=configs)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    (workdir / "results" / "figures" / "fig_signal.pdf").unlink()
    plan = snakemake(workdir, "results/figures/fig_signal.pdf", "-n", "--quiet", "rules",
                     configs=configs)  # fmt: skip
    assert planned_jobs(plan.stdout) == {"fig_signal": 1, "total": 1}


def test_a_trajectory_evaluated_by_an_older_evaluation_version_is_planned_again(
    smoke_run, tmp_path
):
    # Snakemake's record of the job that wrote one trajectory says an older evaluation
    # version made it, as after `git pull` of a change to what evaluations compute.
    workdir, _ = smoke_run
    copy = tmp_path / "smoke"
    shutil.copytree(workdir, copy, symlinks=True)  # copy2 keeps the files' times
    records = {
        base64.urlsafe_b64decode(path.name).decode(): path
        for path in (copy / ".snakemake" / "metadata").iterdir()
        if path.is_file()  # Snakemake splits names too long for one file into folders
    }
    evaluated = next(name for name in sorted(records) if "/evaluated/" in name)
    record = records[evaluated]
    current = f"evaluation version {EVALUATION_VERSION}"
    assert current in record.read_text(), "rule evaluate_pack records its evaluation version"

    def planned_evaluations() -> int:
        plan = snakemake(copy, "-n", "--quiet", "rules", configs=(REPO / "config.yaml", SMOKE))
        return planned_jobs(plan.stdout).get("evaluate_pack", 0)

    assert planned_evaluations() == 0  # the same version: kept
    record.write_text(
        record.read_text().replace(current, f"evaluation version {EVALUATION_VERSION - 1}")
    )
    assert planned_evaluations() == 1


@pytest.mark.parametrize(
    "preset, runs, probes",
    # cpu: 2 seeds at 3 color gaps; cpu-long: 5 seeds at color gap 0.2, 8 at 0.8, 2 at
    # 0.4, + 2 masking ratios x 3 seeds
    [("cpu", 6, 1), ("cpu-long", 21, 2)],
)
def test_cpu_presets_plan_their_runs(preset, runs, probes, tmp_path):
    # The laptop-scale presets, two to eight seeds per level (the claims' tests are over
    # runs), each run evaluated at every checkpoint by one job; cpu-long extends cpu.
    result = snakemake(tmp_path, "-n", "--quiet", "rules", "--config", f"preset={preset}")
    jobs = planned_jobs(result.stdout)
    assert jobs["train_vdm"] == jobs["evaluate_pack"] == runs and jobs["train_probe"] == probes
    assert jobs["claims"] == 1 and ("fig_underspec" in jobs) == (preset == "cpu-long")
