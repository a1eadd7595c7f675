"""The plan block every run prints before it starts (conceptspace.plan): the preset and
why, the studies, the jobs (as many as Snakemake plans), the compute from the measured
speeds of benchmarks/results, the disk (as much as training writes); and the free-space
check before the first job."""

import json
import re

import pytest
import torch

from conceptspace import plan, unet
from conceptspace.concepts import Signal
from conceptspace.config import load_config
from conceptspace.render import render_training_set, save_dataset
from conceptspace.studies import STUDIES
from conceptspace.train import train_run
from conftest import REPO, SMOKE, TINY_DATA, TINY_MODEL, planned_jobs, snakemake
from test_disk_space import tiny_tmpfs  # noqa: F401
from test_train import TRAINING

PRESETS = REPO / "workflow" / "presets"

# torch at one thread for the whole module (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "channels, blocks, h_dim, size",
    [([64, 128, 256], 2, 4, 32), ([32, 64, 64], 1, 5, 32), ([16, 32], 1, 4, 16), ([8], 3, 4, 8)],
)
def test_the_counted_parameters_are_the_unets(channels, blocks, h_dim, size):
    model = {**TINY_MODEL, "channels": channels, "blocks_per_level": blocks, "groups": 4}
    with torch.device("meta"):
        net = unet.UNet.from_config(model, h_dim, size)
    params, _, tensors = plan.unet_size(model, h_dim, size)
    assert params == sum(p.numel() for p in net.parameters()) + 2  # + the VDM's gamma
    assert tensors == len(list(net.parameters())) + 2
    assert plan.SINUSOIDAL_DIM == unet.SINUSOIDAL_DIM


def test_the_checkpoints_take_the_disk_the_estimate_says(tmp_path):
    """A run's checkpoints: the model in each, its optimizer state in the latest two."""
    data = {**TINY_DATA, "image_size": 16}
    dataset = tmp_path / "train.npz"
    save_dataset(dataset, render_training_set(data, Signal(0.4, 0.4), seed=0), {})
    model = {**TINY_MODEL, "channels": [32, 64]}
    training = {**TRAINING, "checkpoints": {"count": 4, "first": 3, "last": 12}}
    train_run(model, training, dataset, 0, tmp_path / "run", tmp_path / "manifest.json")
    written = sum(p.stat().st_size for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    config = load_config(REPO / "config.yaml", SMOKE)
    config["model"] = {**config["model"], **model}
    config["data"]["image_size"] = 16
    config["training"] = {**config["training"], **training}
    estimate = plan.disk_per_job(config)[("train_vdm", "signal")]
    assert estimate == pytest.approx(written, rel=0.02), (estimate, written)


def record(images_per_s, threads, model, name="train/paper/cpu/conceptspace/default"):
    return {"name": name, "images_per_s": images_per_s, "threads": threads, "model": model}


def test_training_hours_come_from_the_measured_images_per_second(tmp_path, monkeypatch):
    config = load_config(REPO / "config.yaml", SMOKE)
    config["studies"]["underspecification"] = None
    paper = load_config(REPO / "config.yaml")["model"]
    config["model"] = paper  # the measured model itself: no scaling
    config["data"]["image_size"] = 32
    monkeypatch.setitem(
        plan.REFERENCES,
        ("train", "cpu"),
        (plan.Reference("fake.json", "train/paper/cpu/conceptspace/default", 32),),
    )
    (tmp_path / "fake.json").write_text(json.dumps({"training": [record(20.0, 2, paper)]}))
    hours, sources = plan.compute_hours(config, "cpu", tmp_path)
    runs = len(STUDIES["signal"].runs(config))
    training = config["training"]
    expected = runs * training["steps"] * training["batch_size"] * 2 / 20.0 / 3600
    assert hours["training"] == pytest.approx(expected)
    assert sources == ["fake.json (train/paper/cpu/conceptspace/default)"]
    assert hours["evaluation"] == 0  # no evaluation measured in that folder: left out
    # twice the convolution work, twice the time; on a GPU a smaller model is no faster
    small = {**paper, "channels": [32, 64, 128]}
    speed = plan.measured_speed("train", "cpu", 1, tmp_path)
    big = plan.unet_size(paper, 4, 32)[1]
    assert speed.seconds(2 * big, gpu=False) == pytest.approx(2 * 2 / 20.0)
    assert speed.seconds(plan.unet_size(small, 4, 32)[1], gpu=True) == pytest.approx(2 / 20.0)


def test_not_enough_space_stops_with_the_filesystem_and_the_need(monkeypatch):
    config = load_config(REPO / "config.yaml", SMOKE)
    writes = plan.all_jobs(config)
    needed = plan.disk_bytes(config, writes)
    monkeypatch.setattr(plan, "free_bytes", lambda path: needed - 1)
    message = plan.space_problem(config, writes)
    assert message.startswith(f"no space left on {plan.filesystem_of('results')}: results needs")
    assert f"about {plan.megabytes(needed)} MB for the {len(writes)} jobs" in message
    assert "set config key 'results' to a folder on a larger filesystem" in message
    monkeypatch.setattr(plan, "free_bytes", lambda path: needed)
    assert plan.space_problem(config, writes) is None


def test_the_planned_writes_count_a_packs_runs_and_name_no_study_for_a_figure():
    from types import SimpleNamespace as job

    def planned(rule, inputs, **wildcards):
        return job(rule=job(name=rule), input=inputs, wildcards=job(**wildcards))

    jobs = [
        planned("train_vdm", ["a.npz", "b.npz", "c.npz"], study="signal", pack="pack000"),
        planned("train_vdm", ["d.npz"], study="signal", run="d"),
        planned(
            "evaluate_pack",
            job(manifests=["a.json", "b.json", "c.json"], probe="probe.pt"),
            study="signal",
            pack="pack000",
        ),
        planned("fig_signal", ["study.nc"]),
    ]
    writes = plan.planned_writes(jobs)
    assert writes == (
        [("train_vdm", "signal")] * 4 + [("evaluate_pack", "signal")] * 3 + [("fig_signal", "")]
    )
    config = load_config(REPO / "config.yaml", SMOKE)
    sizes = plan.disk_per_job(config)
    expected = (
        4 * sizes[("train_vdm", "signal")]
        + 3 * sizes[("evaluate_pack", "signal")]
        + sizes[("fig_signal", "")]
    )
    assert plan.disk_bytes(config, writes) == pytest.approx(expected)


def block_of(output: str) -> str:
    found = re.findall(r"-+ conceptspace plan -+\n(.*?)\n-{20,}", output, re.S)
    assert len(found) == 1, output  # one block, printed once
    return found[0]


@pytest.mark.workflow
def test_a_dry_run_prints_the_plan_with_as_many_jobs_as_snakemake_plans(tmp_path):
    result = snakemake(tmp_path, "-n", "--quiet", "rules")  # here: preset auto is smoke
    block = block_of(result.stderr)
    total = planned_jobs(result.stdout)["total"]
    assert "preset    smoke: preset auto, and jobs run on this machine" in block
    assert "studies   signal (6 runs), underspecification (2 runs); off: background" in block
    assert f"jobs      {total} for everything from scratch (train_vdm 8," in block
    assert re.search(r"compute   about [\d.]+ core-hours: training [\d.]+, evaluation", block)
    assert "benchmarks/results/: cpu-epyc-2core" in block
    assert re.search(r"disk      about [\d.,]+ MB under results/ \(checkpoints", block)

    cluster = snakemake(tmp_path, "-n", "--quiet", "rules", "--executor", "slurm", "-j", "64")
    block = block_of(cluster.stderr)
    assert "preset    paper: preset auto, and jobs go to a cluster (executor slurm)" in block
    assert f"jobs      {planned_jobs(cluster.stdout)['total']} for everything" in block
    assert re.search(r"compute   about [\d.,]+ GPU-hours \(an H200\)", block)
    assert "gpu-h200-training.json" in block

    named = snakemake(tmp_path, "-n", "--config", "preset=cpu-16px")
    block = block_of(named.stderr)
    assert "preset    cpu-16px: named by config key 'preset' (cpu-16px)" in block


def jobs_line(block: str) -> str:
    return next(line for line in block.splitlines() if line.startswith("jobs"))


@pytest.mark.parametrize("pack, train_vdm, total", [(1, 8, 55), (4, 3, 45)])
def test_the_plan_counts_one_training_job_a_pack(pack, train_vdm, total):
    # smoke: 6 signal runs (packs of 4: 4 + 2) and 2 underspecification runs (one pack);
    # every run has its run_manifest and gather_run jobs whatever the packs, and each pack
    # one train_vdm and one evaluate_pack job
    config = load_config(REPO / "config.yaml", SMOKE)
    config["compute"]["pack"] = pack
    assert plan.job_counts(config)["train_vdm"] == train_vdm
    assert plan.job_counts(config)["run_manifest"] == plan.job_counts(config)["gather_run"] == 8
    assert plan.job_counts(config)["evaluate_pack"] == train_vdm
    line = jobs_line(plan.plan_block(config, "smoke", None, False))
    assert line.startswith(f"jobs      {total} for everything from scratch (train_vdm {train_vdm},")


@pytest.mark.workflow
def test_a_dry_run_with_packs_plans_as_many_jobs_as_the_plan_says(tmp_path):
    overlay = tmp_path / "pack.yaml"
    overlay.write_text("compute:\n  pack: 4\n")
    configs = (REPO / "config.yaml", SMOKE, overlay)
    result = snakemake(tmp_path, "-n", "--quiet", "rules", configs=configs)
    planned = planned_jobs(result.stdout)
    assert planned["train_vdm"] == 3 and planned["run_manifest"] == 8
    assert jobs_line(block_of(result.stderr)).startswith(
        f"jobs      {planned['total']} for everything from scratch (train_vdm 3,"
    )


@pytest.mark.workflow
def test_a_run_whose_outputs_do_not_fit_stops_before_its_first_job(tiny_tmpfs, tmp_path):
    """The results folder on a 1 MiB tmpfs (where mounting is allowed): the smoke preset
    needs about 27 MB; the run stops before any job, naming the filesystem."""
    overlay = tmp_path / "results.yaml"
    overlay.write_text(f"results: {tiny_tmpfs / 'results'}\n")
    result = snakemake(
        tmp_path, "--cores", "1", configs=(REPO / "config.yaml", SMOKE, overlay), check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"no space left on {tiny_tmpfs} (tmpfs): {tiny_tmpfs / 'results'} needs about" in output
    assert "Finished jobid" not in output and not (tiny_tmpfs / "results" / "signal").exists()


def test_a_plan_that_cannot_be_made_says_so_and_does_not_stop_the_run():
    config = load_config(REPO / "config.yaml", SMOKE)
    del config["model"]["channels"]
    block = plan.plan_block(config, "smoke", None, False)
    assert block == "conceptspace plan: not made (KeyError: 'channels')"
    assert plan.space_problem(config, [("train_vdm", "signal")]) is None
