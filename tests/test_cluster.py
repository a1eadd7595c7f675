"""Cluster-facing checks without a cluster: the Slurm preflight against sinfo/sacctmgr
listings, the preset a run uses, a config that cannot train, and a Slurm job given a GPU
that torch cannot see."""

import re
import tomllib

import pytest
import torch
import yaml

from conceptspace import device as device_module
from conceptspace.cluster import (
    SlurmCluster,
    SlurmRequest,
    _executor_in_argv,
    min_job_age,
    preflight_problems,
    status_command_problem,
)
from conceptspace.config import ConfigError, load_config, preset_file, validate_config
from conceptspace.io import ConceptspaceError
from conftest import REPO, SCHEMA, SMOKE

PRESETS = REPO / "workflow" / "presets"
SINFO = """\
cpu*|(null)|1-00:00:00
gpu|gpu:h200:4(S:0-1),tmpdisk:100|2-00:00:00
gpu|gpu:a100:8|infinite
"""


def cluster(accounts="myproj\n", qos="normal\nlong\n"):
    return SlurmCluster.from_sinfo(SINFO, accounts, qos)


def request(*jobs):
    req = SlurmRequest()
    for rule, resources in jobs:
        req.add(rule, resources)
    return req


GPU_JOB = {"slurm_partition": "gpu", "gres": "gpu:1", "runtime": 240, "mem_mb": 8000}
CPU_JOB = {"runtime": 60, "mem_mb": 8000}


def test_sinfo_is_read_with_its_default_partition_gpus_and_time_limits():
    found = cluster()
    assert found.default_partition == "cpu"
    assert sorted(found.partitions) == ["cpu", "gpu"]
    assert found.partitions["gpu"]["gres"] == {"gpu:h200:4(S:0-1)", "tmpdisk:100", "gpu:a100:8"}
    assert found.partitions["cpu"]["max_minutes"] == 1440
    assert found.partitions["gpu"]["max_minutes"] == 2880  # infinite lines do not lower it
    assert found.accounts == {"myproj"} and found.qos == {"normal", "long"}
    assert SlurmCluster.from_sinfo("a*|(null)|30:00\n").partitions["a"]["max_minutes"] == 30
    assert SlurmCluster.from_sinfo("a*|(null)|2:30:00\n").partitions["a"]["max_minutes"] == 150


def test_min_job_age_is_read_from_scontrol_show_config():
    config = "MaxTasksPerNode         = 512\nMinJobAge               = 300 sec\nMpiDefault = none\n"
    assert min_job_age(config) == 300
    assert min_job_age("MinJobAge = 1h\n") == 3600
    assert min_job_age("MpiDefault = none\n") is None and min_job_age(None) is None


@pytest.mark.parametrize(
    "command, init_seconds, job_age, problem",
    [
        ("squeue", 20, 300, False),  # Slurm's default: squeue remembers longer than 180 s
        ("squeue", 20, 120, True),  # ended jobs could vanish between two looks
        ("squeue", 20, 45, False),  # below 3 x 20 s the plugin uses sacct by itself
        ("sacct", 20, 120, False),
        ("squeue", 20, None, False),  # scontrol did not say: not checked
    ],
)
def test_squeue_as_status_command_needs_slurm_to_remember_ended_jobs(
    command, init_seconds, job_age, problem
):
    found = status_command_problem(command, init_seconds, job_age)
    assert (found is not None) == problem, found
    if problem:
        assert f"MinJobAge is {job_age} s" in found
        assert "run with --slurm-status-command sacct" in found and ">= 180" in found


def test_a_run_the_cluster_can_take_has_no_problems():
    jobs = [("train_vdm", GPU_JOB), ("prepare_celeba", CPU_JOB)]
    jobs += [("train_probe", {**GPU_JOB, "gres": "gpu:h200:1", "slurm_account": "MyProj"})]
    assert preflight_problems(request(*jobs), cluster()) == []


def test_a_wrong_partition_is_named_with_the_partitions_there_and_the_fix():
    problems = preflight_problems(
        request(("train_vdm", {**GPU_JOB, "slurm_partition": "a100"})), cluster()
    )
    assert len(problems) == 1
    assert "partition 'a100'" in problems[0] and "train_vdm" in problems[0]
    assert "cpu*, gpu" in problems[0] and "slurm_partition" in problems[0]


def test_a_gpu_job_on_a_partition_without_gpus_is_refused():
    no_partition = {key: value for key, value in GPU_JOB.items() if key != "slurm_partition"}
    problems = preflight_problems(request(("evaluate_pack", no_partition)), cluster())
    assert len(problems) == 1
    assert "'cpu' (the default) has none" in problems[0] and "gpu" in problems[0]


def test_a_gpu_type_the_partition_lacks_is_refused():
    problems = preflight_problems(
        request(("train_vdm", {**GPU_JOB, "gres": "gpu:v100:1"})), cluster()
    )
    assert len(problems) == 1 and "'v100'" in problems[0] and "a100, h200" in problems[0]


def test_accounts_qos_runtimes_and_double_gpu_requests_are_checked():
    jobs = [("train_vdm", {**GPU_JOB, "slurm_account": "other", "qos": "fast", "gpu": 1})]
    jobs += [("prepare_celeba", {**CPU_JOB, "runtime": 2000})]
    problems = preflight_problems(request(*jobs), cluster())
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "account 'other'" in text and "myproj" in text
    assert "QoS 'fast'" in text
    assert "2000 min" in text and "1440 min" in text
    assert "asks for GPUs twice" in text


def test_accounts_and_qos_are_not_checked_where_sacctmgr_says_nothing():
    silent = SlurmCluster.from_sinfo(SINFO, None, None)
    jobs = [("train_vdm", {**GPU_JOB, "slurm_account": "any", "qos": "any"})]
    assert preflight_problems(request(*jobs), silent) == []


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    "preset, on_cluster, expected",
    [
        ("auto", False, "smoke"),
        ("auto", True, "paper"),
        ("paper", False, "paper"),
        ("cpu", True, "cpu"),
    ],
)
def test_preset_auto_is_smoke_here_and_paper_on_a_cluster(preset, on_cluster, expected):
    name, path = preset_file({"preset": preset}, PRESETS, on_cluster)
    assert name == expected
    assert path == (None if expected == "paper" else PRESETS / f"{expected}.yaml")


def test_an_unknown_preset_names_the_ones_there_are():
    with pytest.raises(ConfigError, match="preset.*'tiny'.*cpu, cpu-16px, cpu-long, smoke"):
        preset_file({"preset": "tiny"}, PRESETS, False)


def test_every_preset_names_itself():
    for path in PRESETS.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["preset"] == path.stem


# ----------------------------------------------------------------------------- config


def problems_of(overlay: str, tmp_path) -> str:
    path = tmp_path / "overlay.yaml"
    path.write_text(overlay)
    config = load_config(REPO / "config.yaml", SMOKE, path)
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    return str(caught.value)


def test_nan_or_infinite_numbers_anywhere_are_refused_by_key(tmp_path):
    message = problems_of("training:\n  lr: .nan\nevaluation:\n  sigma: .inf\n", tmp_path)
    assert "'training.lr' is nan" in message and "'evaluation.sigma' is inf" in message


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    # smoke: 64 images per class, 15% held out: 3 classes x 54 = 162 images per run
    message = problems_of("training:\n  batch_size: 200\n", tmp_path)
    assert "'training.batch_size' (200)" in message and "= 162" in message
    assert "data.images_per_class" in message
    message = problems_of("probe:\n  batch_size: 1000\n", tmp_path)
    assert "'probe.batch_size' (1000)" in message and "probe.images_per_class" in message


def test_the_shipped_configs_pass_the_batch_checks():
    for preset in (None, *sorted(PRESETS.glob("*.yaml"))):
        validate_config(load_config(REPO / "config.yaml", *([preset] if preset else [])), SCHEMA)


# ----------------------------------------------------------------------------- device


def test_a_slurm_job_given_a_gpu_that_torch_cannot_see_stops(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with pytest.raises(ConceptspaceError, match=r"42.*SLURM_JOB_GPUS=0.*compute.device: cpu"):
        device_module.resolve_device("auto")
    assert device_module.resolve_device("cpu") == torch.device("cpu")  # asked for: runs


def test_without_a_gpu_allocation_auto_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("SLURM_JOB_ID", *device_module.SLURM_GPU_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert device_module.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # a Slurm job without GPUs
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "0")
    assert device_module.resolve_device(None) == torch.device("cpu")


# ----------------------------------------------------------------------------- conda


def test_the_conda_env_names_no_path_and_every_dependency():
    # Snakemake builds the env from a copy under .snakemake/conda/: a relative path (the
    # old `--editable ..`) would point elsewhere there.
    env = yaml.safe_load((REPO / "envs" / "conceptspace.yaml").read_text())
    entries = [e for e in env["dependencies"] if isinstance(e, str)]
    entries += [e for e in env["dependencies"] if isinstance(e, dict) for e in e["pip"]]
    assert not [e for e in entries if e.startswith("-") or "/" in e or e.startswith(".")]
    names = {re.split(r"[<>=!\s]", e, maxsplit=1)[0].lower() for e in entries}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert re.split(r"[<>=!\s]", requirement, maxsplit=1)[0].lower() in names, requirement
    plugin = "snakemake-executor-plugin-slurm>=2.8.0,<2.9"
    assert plugin in entries and any(r.startswith(plugin) for r in project["dependencies"])


def test_the_executor_is_read_back_from_the_command_line_under_a_dry_run():
    # Snakemake 9 releases that replace the executor by "dryrun" under -n: the command
    # line still says which executor the run is planned for.
    assert _executor_in_argv(["snakemake", "-n", "--executor", "slurm", "-j", "64"]) == "slurm"
    assert _executor_in_argv(["snakemake", "-e", "slurm"]) == "slurm"
    assert _executor_in_argv(["snakemake", "--executor=slurm"]) == "slurm"
    assert _executor_in_argv(["snakemake", "--cores", "4"]) is None
