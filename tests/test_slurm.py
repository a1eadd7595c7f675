"""The Slurm path on a real Slurm: a single-node cluster brought up on this machine
(tests/slurm/cluster_up.sh: munge, MariaDB, slurmdbd, slurmctld, slurmd, two fake GPUs)
runs the smoke preset through `snakemake --executor slurm -j 64` with the shipped default
profile (profiles/default, found by Snakemake) and the site overlay profiles/slurm-site
(its partitions are the test cluster's). Checked: the heavy rules went through Slurm
(sacct) and the light ones ran in Snakemake's own process, GPU jobs ran on the gpu
partition with one GPU, each pack (compute.pack 1, then 3) trained and evaluated in one
Slurm job with one GPU, a pack's runs progressing step by step together, the study dataset equals that of a local run although one training
job was requeued midway (scontrol requeue, what a preempting scheduler does) and resumed
from its checkpoint, a training job cancelled midway (scancel) is resubmitted with a
larger runtime and resumes, a job that fails once succeeds on its retry with a larger
runtime, a wrong partition is stopped by the preflight before any submission, and a job
given a GPU that torch cannot see stops under compute.device auto.

The fake GPUs are files: torch sees none, so the runs that compute set compute.device:
cpu (the local run too, so that the configs match).

Every run uses the default profile's job status command, squeue: plugin 2.8.0 reads
sacct's state of a cancelled job, "CANCELLED by <uid>", as still running and would wait for
it forever (docs/slurm.md). A training cancelled with no retries left ends the run within
a bound, and the same command again resumes it.

Needs root and Debian's Slurm packages (tests/slurm/install.sh, which this module runs
when they are missing); skipped otherwise, unless CONCEPTSPACE_REQUIRE_SLURM=1 (CI), which
turns every reason to skip into a failure. CONCEPTSPACE_SLURM_KEEP=1 keeps the cluster's
scratch folder (configuration and daemon logs) after the tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conceptspace.config import load_config
from conceptspace.pack_plan import form_packs
from conceptspace.runs import checkpoint_steps
from conceptspace.studies import run_table
from conftest import REPO, SMOKE, venv_tool

pytestmark = pytest.mark.slurm

HARNESS = REPO / "tests" / "slurm"
SITE = REPO / "profiles" / "slurm-site"
REQUIRED = os.environ.get("CONCEPTSPACE_REQUIRE_SLURM") == "1"
KEEP = os.environ.get("CONCEPTSPACE_SLURM_KEEP") == "1"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sbatch")
GPU_RULES = ("train_vdm", "train_probe", "evaluate_pack", "sample_images")
LOCAL_RULES = ("render_training_set", "run_manifest", "gather_run", "gather_study",
               "sample_sheet", "claims", "fig_signal", "fig_trajectories", "fig_hidden",
               "fig_patching", "fig_underspec", "all")  # fmt: skip
# Runs are packed by the workflow (config compute.pack, 1 by default): one training and
# one evaluation job per pack, a pack of one named by its run. The packed run: packs of 3.
PACK_OVERLAY = "compute:\n  pack: 3\n"
PACK_SIZE = 3
TRAIN_MINUTES = 30  # a training's runtime at the smoke scale (training_minutes, common.smk)
RULES = ("render_training_set", "train_vdm", "train_probe", "evaluate_pack", "gather_study",
         "sample_images", "sample_sheet", "claims", "fig_signal",
         "fig_trajectories", "fig_hidden", "fig_patching", "fig_underspec")  # fmt: skip
SNAKEMAKE_LIMIT_S = 600  # a hung snakemake ignores SIGTERM: timeout -k kills it
RUN = r"dc\d+\.\d{3}_ds\d+\.\d{3}_seed\d+|p\d\.\d{3}_seed\d+"  # signal | underspecification
SMOKE_CONFIG = load_config(REPO / "config.yaml", SMOKE)
# every study's runs: the signal study's and underspecification's
STUDY_OF_RUN = {run: study for study, runs in run_table(SMOKE_CONFIG).items() for run in runs}
SMOKE_RUNS = list(STUDY_OF_RUN)
STEPS = checkpoint_steps(SMOKE_CONFIG["training"])


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (CONCEPTSPACE_REQUIRE_SLURM=1)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- cluster


@dataclass
class Cluster:
    scratch: Path
    env: dict  # the environment jobs inherit: the virtual environment, SLURM_CONF
    timings: dict = field(default_factory=dict)

    def run(self, *command, check=True) -> str | None:
        """stdout of a Slurm command; None if it failed and check is False."""
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            if check:
                raise AssertionError(f"{' '.join(command)} failed: {result.stderr}")
            return None
        return result.stdout

    def sacct(self, name: str) -> list[dict]:
        """Every Slurm job (and every requeued instance of one, -D) named ``name``."""
        columns = ["JobIDRaw", "State", "Partition", "Timelimit", "AllocTRES", "Comment"]
        out = self.run("sacct", "-X", "-D", "--parsable2", "--noheader", "--name", name,
                       "--starttime", "now-1days", "--format", ",".join(columns))  # fmt: skip
        return [dict(zip(columns, line.split("|"))) for line in out.splitlines() if line]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        unavailable("the Slurm tests start daemons and need root on Linux")
    etc_conf = Path("/etc/slurm/slurm.conf")
    if etc_conf.exists() and not etc_conf.is_symlink():
        unavailable(f"{etc_conf} exists: this machine runs its own Slurm")
    if not all(shutil.which(c) or Path("/usr/sbin", c).exists() for c in DAEMONS):
        install = subprocess.run(["bash", str(HARNESS / "install.sh")], capture_output=True,
                                 text=True, timeout=900)  # fmt: skip
        if install.returncode != 0:
            unavailable(f"could not install Slurm's Debian packages:\n{install.stderr[-3000:]}")
    # Daemons run as munge and mysql: the scratch folder must be readable by them, which
    # pytest's own tmp folder (0700) is not.
    scratch = Path(tempfile.mkdtemp(prefix="conceptspace-slurm-"))
    scratch.chmod(0o755)
    ports = {
        f"SLURM_TEST_{name}_PORT": str(free_port()) for name in ("CTLD", "SLURMD", "DBD", "DB")
    }
    env = {**os.environ, **ports}
    started = time.monotonic()
    up = subprocess.run(
        ["timeout", "-k", "10", "180", "bash", str(HARNESS / "cluster_up.sh"), str(scratch)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    bring_up = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise AssertionError(f"cluster_up.sh failed ({up.returncode}):\n{up.stderr}")
        venv_bin = str(Path(sys.executable).parent)
        job_env = {
            **env,
            "SLURM_CONF": str(scratch / "etc" / "slurm.conf"),
            "PATH": f"{venv_bin}:{env.get('PATH', '')}:/usr/sbin:/sbin",
            "VIRTUAL_ENV": str(Path(venv_bin).parent),
        }
        yield Cluster(scratch, job_env, {"bring_up_s": round(bring_up, 1)})
    finally:
        subprocess.run(["timeout", "-k", "10", "120", "bash", str(HARNESS / "cluster_down.sh"),
                        str(scratch)], env=env, capture_output=True)  # fmt: skip
        if not KEEP:
            shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------- runs


def snakemake_command(workdir: Path, *args, snakefile=REPO / "Snakefile", configs=()):
    configfiles = ["--configfile", *map(str, configs)] if configs else []
    return [
        "timeout", "-k", "30", str(SNAKEMAKE_LIMIT_S), venv_tool("snakemake"),
        "--snakefile", str(snakefile), "--directory", str(workdir), *configfiles, *args,
    ]  # fmt: skip


def slurm_args() -> list[str]:
    return ["--executor", "slurm", "-j", "64", "--profile", str(SITE),
            "--slurm-init-seconds-before-status-checks", "2"]  # fmt: skip


def start(command, workdir: Path, env: dict) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    out = open(workdir / "snakemake.out", "w")
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)


def finish(process: subprocess.Popen, workdir: Path) -> tuple[int, str]:
    process.wait()
    return process.returncode, (workdir / "snakemake.out").read_text()


def slurm_run_id(output_file: Path) -> str | None:
    if not output_file.exists():
        return None
    match = re.search(r"SLURM run ID: (\S+)", output_file.read_text())
    return match[1] if match else None


class Interrupter(threading.Thread):
    """Interrupts one running train_vdm job of the Snakemake run in ``workdir`` as soon as
    its first checkpoint exists: "cancel" (scancel, what a user does; Snakemake resubmits
    the job) or "requeue" (scontrol requeue, what a preempting scheduler does; Slurm runs
    the same job again)."""

    def __init__(self, cluster: Cluster, workdir: Path, training: dict, action: str):
        super().__init__(daemon=True)
        self.cluster, self.workdir, self.action = cluster, workdir, action
        # Between the first checkpoint and the last one, the job is midway.
        self.first_step = checkpoint_steps(training)[0]
        self.last_step = int(training["steps"])
        self.done: tuple[str, str] | None = None  # (run, Slurm job id)
        self.at: float | None = None  # time.monotonic() of the interruption
        self.error: str | None = None
        self.stop = threading.Event()

    def running_train_job(self, name: str, run: str) -> str | None:
        out = self.cluster.run(
            "squeue", "-h", "--name", name, "-t", "RUNNING", "-o", "%i|%k", check=False
        )
        for line in (out or "").splitlines():
            jobid, _, comment = line.partition("|")
            if comment.startswith("rule_") and rule_of(comment)[0] == "train_vdm":
                if run in packed_runs(self.cluster, jobid):
                    return jobid
        return None

    def interrupt(self, jobid: str) -> bool:
        """True if the job was interrupted (it may have ended just before)."""
        if self.action == "cancel":
            return self.cluster.run("scancel", jobid, check=False) is not None
        if self.cluster.run("scontrol", "requeue", jobid, check=False) is None:
            return False
        # Slurm holds a requeued job back for about two minutes (BeginTime); release it.
        for _ in range(50):
            time.sleep(0.2)
            state = self.cluster.run("squeue", "-h", "-j", jobid, "-o", "%T|%r", check=False)
            if state and "BeginTime" in state:
                self.cluster.run("scontrol", "update", f"jobid={jobid}", "StartTime=now")
                break
        return True

    def run(self):
        runs = self.workdir / "results" / "signal" / "runs"
        pattern = f"*/checkpoints/step_{self.first_step:06d}.pt"
        tried = set()
        try:
            while self.done is None and not self.stop.wait(0.2):
                name = slurm_run_id(self.workdir / "snakemake.out")
                if name is None:
                    continue
                for checkpoint in sorted(runs.glob(pattern)):
                    run_dir = checkpoint.parents[1]
                    last = run_dir / "checkpoints" / f"step_{self.last_step:06d}.pt"
                    if run_dir.name in tried or last.exists():
                        continue
                    jobid = self.running_train_job(name, run_dir.name)
                    if jobid is None:
                        continue
                    tried.add(run_dir.name)
                    if self.interrupt(jobid):
                        self.at = time.monotonic()
                        self.done = (run_dir.name, jobid)
                        break
        except Exception as err:  # reported by the test that needs the interruption
            self.error = repr(err)


def packed_runs(cluster: Cluster, jobid: str) -> list[str]:
    """The runs a Slurm job of the workflow computes, from its batch script (the plugin
    names them as the --target-jobs of the Snakemake it starts)."""
    script = cluster.run("scontrol", "write", "batch_script", jobid, "-", check=False) or ""
    return re.findall(rf"(?:run|pack)=({RUN})", script)  # a pack of one is named by its run


# The fake GPUs are files: jobs compute on the CPU.
CPU_OVERLAY = "compute:\n  device: cpu\n"
# A run long enough to be caught between its first checkpoint and its end.
CANCEL_OVERLAY = """\
studies:
  signal:
    seeds: [0]
    sweeps:
      - {name: color_gap, color_gap: [0.6], size_gap: [0.4]}
      - {name: size_gap, color_gap: [0.6], size_gap: [0.4]}
training:
  steps: 150
  checkpoints: {count: 3, first: 20, last: 150}
figures:
  levels: [{color_gap: 0.6, size_gap: 0.4}]
"""
CANCEL_RUN = "dc0.600_ds0.400_seed0"
FLAKY_MINUTES = 10  # the runtime of retry.smk's rule, per attempt


@dataclass
class Run:
    workdir: Path
    returncode: int
    output: str
    name: str | None  # the Slurm job name (the plugin's run id)
    interrupted: tuple[str, str] | None = None
    interrupt_error: str | None = None

    def succeeded(self) -> "Run":
        if self.returncode != 0:
            raise AssertionError(
                f"snakemake in {self.workdir} exited {self.returncode}:\n{self.output[-6000:]}"
            )
        return self


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> dict[str, Run]:
    """At once: the smoke preset through Slurm (one training job requeued midway), and
    again in packs of three; the same preset locally on 2 cores; one longer training
    through Slurm, cancelled midway; and the fail-once workflow through Slurm."""
    base = tmp_path_factory.mktemp("slurm-runs")
    on_cpu = base / "cpu.yaml"
    on_cpu.write_text(CPU_OVERLAY)
    smoke = (REPO / "config.yaml", SMOKE, on_cpu)
    overlay = base / "cancel.yaml"
    overlay.write_text(CANCEL_OVERLAY)
    packs = base / "pack.yaml"
    packs.write_text(PACK_OVERLAY)
    target = f"results/signal/runs/{CANCEL_RUN}/manifest.json"
    commands = {
        "slurm": snakemake_command(base / "slurm", *slurm_args(), configs=smoke),
        "local": snakemake_command(base / "local", "--cores", "2", configs=smoke),
        "packed": snakemake_command(base / "packed", *slurm_args(), configs=(*smoke, packs)),
        # a partition the cluster does not have: the preflight stops the run
        "wrong_partition": snakemake_command(
            base / "wrong_partition",
            *(*slurm_args(), target),  # --set-resources takes every word after it
            *("--set-resources", "train_vdm:slurm_partition=a100"),
            configs=smoke,
        ),
        # compute.device auto on the fake GPUs: the job stops, naming the fix
        "no_gpu": snakemake_command(
            base / "no_gpu",
            *(*slurm_args(), "--retries", "0", target),
            configs=(REPO / "config.yaml", SMOKE),
        ),
        # the status command is the default profile's (squeue)
        "cancel": snakemake_command(
            base / "cancel", *slurm_args(), target, configs=(*smoke, overlay)
        ),
        # retries as profiles/default sets them (it is not found beside retry.smk)
        "flaky": snakemake_command(
            base / "flaky", *slurm_args(), "--retries", "1", snakefile=HARNESS / "retry.smk"
        ),
    }
    started = time.monotonic()
    processes = {key: start(command, base / key, cluster.env) for key, command in commands.items()}
    interrupters = {
        "slurm": Interrupter(cluster, base / "slurm", SMOKE_CONFIG["training"], "requeue"),
        "cancel": Interrupter(
            cluster, base / "cancel", load_config(*smoke, overlay)["training"], "cancel"
        ),
    }
    for interrupter in interrupters.values():
        interrupter.start()
    results = {}
    try:
        while len(results) < len(processes):
            for key, process in processes.items():
                if key not in results and process.poll() is not None:
                    cluster.timings[f"{key}_run_s"] = round(time.monotonic() - started, 1)
                    returncode, output = finish(process, base / key)
                    name = slurm_run_id(base / key / "snakemake.out")
                    results[key] = Run(base / key, returncode, output, name)
            time.sleep(0.5)
    finally:
        for interrupter in interrupters.values():
            interrupter.stop.set()
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for key, interrupter in interrupters.items():
        interrupter.join(timeout=10)
        results[key].interrupted = interrupter.done
        results[key].interrupt_error = interrupter.error
    print(f"\nSlurm test timings (s): {json.dumps(cluster.timings)}", file=sys.stderr)
    return results


def minutes(timelimit: str) -> int:
    """Slurm's [D-]HH:MM:SS as minutes."""
    days, _, clock = timelimit.rpartition("-")
    hours, mins, _ = (int(part) for part in clock.split(":"))
    return (int(days) if days else 0) * 1440 + hours * 60 + mins


def rule_of(comment: str) -> tuple[str, str | None]:
    """(rule, run) of a Slurm job from the comment the plugin gives it; a pack of several
    runs: (rule, "<study>_<pack>")."""
    for rule in RULES:
        if comment == f"rule_{rule}":
            return rule, None
        if comment.startswith(f"rule_{rule}_wildcards_"):
            # The wildcards joined by "_": the study, then the run id (if the rule has one).
            wildcards = comment.removeprefix(f"rule_{rule}_wildcards_")
            run = re.search(RUN, wildcards)
            return rule, run[0] if run else wildcards
    raise AssertionError(f"a Slurm job with an unexpected comment: {comment!r}")


def slurm_jobs(cluster: Cluster, name: str) -> dict[str, list[dict]]:
    """Rule -> the distinct Slurm jobs of that rule (requeued instances folded)."""
    jobs: dict[str, dict[str, dict]] = {}
    for row in cluster.sacct(name):
        rule, run = rule_of(row["Comment"])
        row = {**row, "rule": rule, "run": run}
        jobs.setdefault(rule, {}).setdefault(row["JobIDRaw"], row)
        if row["State"] not in ("REQUEUED",):  # keep the final instance's fields
            jobs[rule][row["JobIDRaw"]] = row
    return {rule: list(by_id.values()) for rule, by_id in jobs.items()}


# ----------------------------------------------------------------------------- tests


def test_heavy_rules_ran_as_slurm_jobs_and_light_ones_in_snakemake(cluster, runs):
    slurm = runs["slurm"].succeeded()
    ran_locally = re.findall(r"^localrule (\w+):", slurm.output, flags=re.M)
    assert set(ran_locally) == set(LOCAL_RULES)
    assert ran_locally.count("render_training_set") == len(SMOKE_RUNS)
    jobs = slurm_jobs(cluster, slurm.name)
    # a training and an evaluation per run (packs of one); the probe of each study; the
    # sample sheet's run and the blue-triangle samples
    expected = {"train_vdm": len(SMOKE_RUNS), "evaluate_pack": len(SMOKE_RUNS),
                "train_probe": 2, "sample_images": 3}  # fmt: skip
    assert {rule: len(rows) for rule, rows in jobs.items()} == expected
    for rule, rows in jobs.items():
        for row in rows:
            assert row["State"] == "COMPLETED", f"{rule}: {row}"


def test_gpu_jobs_ran_on_the_gpu_partition_with_one_gpu(cluster, runs):
    for rule, rows in slurm_jobs(cluster, runs["slurm"].succeeded().name).items():
        assert rule in GPU_RULES
        for row in rows:
            assert row["Partition"] == "gpu" and "gres/gpu=1" in row["AllocTRES"], row


def test_each_run_trains_and_is_evaluated_in_a_slurm_job_of_its_own(cluster, runs):
    slurm = runs["slurm"].succeeded()
    jobs = slurm_jobs(cluster, slurm.name)
    for rule in ("train_vdm", "evaluate_pack"):
        packed = {row["JobIDRaw"]: packed_runs(cluster, row["JobIDRaw"]) for row in jobs[rule]}
        assert sorted(sum(packed.values(), [])) == sorted(SMOKE_RUNS), packed
        assert all(len(runs_of_job) == 1 for runs_of_job in packed.values())  # compute.pack 1
        for row in jobs[rule]:  # one GPU, 1 thread (the smoke preset's compute.threads)
            assert re.search(r"\bcpu=1,.*gres/gpu=1\b", row["AllocTRES"]), row
    assert minutes(jobs["train_vdm"][0]["Timelimit"]) == TRAIN_MINUTES
    for run in SMOKE_RUNS:  # each evaluation job scored every checkpoint of its run
        evaluated = slurm.workdir / "results" / STUDY_OF_RUN[run] / "runs" / run / "eval"
        assert len(list(evaluated.glob("step_*.nc"))) == len(STEPS)


def in_order_of_steps(log: Path, pattern: str) -> list[tuple[int, str]]:
    """(step, run) of each progress line of a pack's log, in the log's order; ``pattern``
    captures the run and the step."""
    return [(int(step), run) for run, step in re.findall(pattern, log.read_text())]


def test_a_packs_runs_train_and_are_evaluated_together_in_one_slurm_job(cluster, runs):
    """compute.pack 3: the smoke preset's 6 signal runs in 2 packs and its 2 masking runs in
    one; each pack one training and one evaluation Slurm job with one GPU, whose log shows
    every run of the pack at each step before any goes on (one process, the runs side by
    side), not one run after another as the job groups of separate processes went."""
    packed = runs["packed"].succeeded()
    jobs = slurm_jobs(cluster, packed.name)
    tables = run_table(SMOKE_CONFIG)
    packs = {study: form_packs(list(table), PACK_SIZE) for study, table in tables.items()}
    expected = sorted(f"{study}_{pack}" for study in packs for pack in packs[study])
    for rule in ("train_vdm", "evaluate_pack"):
        assert sorted(row["run"] for row in jobs[rule]) == expected
        for row in jobs[rule]:
            assert row["State"] == "COMPLETED" and "gres/gpu=1" in row["AllocTRES"], row
    logs = packed.workdir / "results" / "logs"
    for study, study_packs in packs.items():
        for pack, members in study_packs.items():
            trained = in_order_of_steps(
                logs / "train_vdm" / study / f"{pack}.log", rf"({RUN}): step (\d+)/\d+ loss"
            )
            evaluated = in_order_of_steps(
                logs / "evaluate_pack" / study / f"{pack}.log",
                rf"evaluating \S+/runs/({RUN})/checkpoints/step_\d+\.pt \(step (\d+)\)",
            )
            for progress, steps in ((trained, None), (evaluated, STEPS)):
                reported = sorted({step for step, _ in progress})
                assert len(reported) > 1 and (steps is None or reported == list(steps))
                # every run at every reported step, and the steps in order: side by side
                assert sorted(progress) == sorted((s, r) for s in reported for r in members)
                assert [step for step, _ in progress] == sorted(step for step, _ in progress)


def test_a_wrong_partition_stops_the_run_before_any_submission(cluster, runs):
    wrong = runs["wrong_partition"]
    assert wrong.returncode != 0
    assert wrong.output.count("Slurm preflight") == 1, wrong.output[-3000:]
    assert "partition 'a100' (asked by train_vdm) does not exist" in wrong.output
    assert "cpu*, gpu" in wrong.output  # the partitions the cluster has
    assert "Submitted" not in wrong.output and "SLURM jobid" not in wrong.output
    assert wrong.name is not None and cluster.sacct(wrong.name) == []


def test_a_job_given_a_gpu_torch_cannot_see_stops_under_device_auto(runs):
    no_gpu = runs["no_gpu"]
    assert no_gpu.returncode != 0
    log = no_gpu.workdir / "results/logs/train_vdm/signal" / f"{CANCEL_RUN}.log"
    text = log.read_text()
    assert "was given a GPU" in text and "compute.device: cpu" in text, text[-2000:]
    assert not list((log.parents[3] / "signal/runs" / CANCEL_RUN).glob("checkpoints/*.pt"))


def test_study_equals_a_local_run(runs):
    with (
        xr.open_dataset(runs["slurm"].succeeded().workdir / "results/signal/study.nc") as on_slurm,
        xr.open_dataset(runs["local"].succeeded().workdir / "results/signal/study.nc") as local,
    ):
        assert dict(on_slurm.sizes) == dict(local.sizes)
        assert sorted(on_slurm.data_vars) == sorted(local.data_vars)
        for name in list(local.coords) + list(local.data_vars):
            np.testing.assert_array_equal(on_slurm[name].values, local[name].values, err_msg=name)
        assert on_slurm.attrs["config_hash"] == local.attrs["config_hash"]


def resumed_steps(workdir: Path, run: str) -> list[int]:
    log = (workdir / "results/logs/train_vdm/signal" / f"{run}.log").read_text()
    return [int(step) for step in re.findall(r"resuming from step (\d+)", log)]


def interrupted(run: Run, action: str) -> tuple[str, str]:
    assert run.interrupt_error is None, run.interrupt_error
    assert (
        run.interrupted
    ), f"no training job was caught running after its first checkpoint ({action})"
    return run.interrupted


def test_requeued_training_resumes_in_the_same_slurm_job(cluster, runs):
    slurm = runs["slurm"].succeeded()
    run, jobid = interrupted(slurm, "requeue")
    assert resumed_steps(slurm.workdir, run) and min(resumed_steps(slurm.workdir, run)) >= STEPS[0]
    instances = [row for row in cluster.sacct(slurm.name) if row["JobIDRaw"] == jobid]
    states = [row["State"] for row in instances]
    assert states == ["REQUEUED", "COMPLETED"], job_story(cluster, slurm, jobid, instances)
    train_jobs = [
        r["JobIDRaw"]
        for r in slurm_jobs(cluster, slurm.name)["train_vdm"]
        if run in packed_runs(cluster, r["JobIDRaw"])
    ]
    assert train_jobs == [jobid]  # Slurm reran it; no resubmission


def job_story(cluster: Cluster, run: Run, jobid: str, instances: list[dict]) -> str:
    """What Slurm and the job said about a job, for a failure message: its sacct rows,
    slurmctld's and slurmd's lines on it, and its Slurm logs (one CI run, 2026-11-30,
    saw the requeued instance of a training job end FAILED; not reproduced since)."""
    lines = [f"sacct: {row}" for row in instances]
    for daemon in ("slurmctld", "slurmd"):
        log = cluster.scratch / "log" / f"{daemon}.log"
        if log.exists():
            lines += [
                line for line in log.read_text().splitlines() if re.search(rf"\b{jobid}\b", line)
            ]
    for path in sorted((run.workdir / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log")):
        lines += [f"--- {path}", path.read_text()[-4000:]]
    return "\n".join(lines)


def test_cancelled_training_is_resubmitted_with_more_time_and_resumes(cluster, runs):
    cancel = runs["cancel"].succeeded()
    run, jobid = interrupted(cancel, "cancel")
    assert run == CANCEL_RUN
    assert resumed_steps(cancel.workdir, run) and min(resumed_steps(cancel.workdir, run)) >= 20
    train_jobs = slurm_jobs(cluster, cancel.name)["train_vdm"]
    assert [r["JobIDRaw"] == jobid for r in train_jobs] == [True, False]
    cancelled, again = train_jobs
    assert cancelled["State"].startswith("CANCELLED") and again["State"] == "COMPLETED"
    assert minutes(cancelled["Timelimit"]) == TRAIN_MINUTES  # attempt 1
    assert minutes(again["Timelimit"]) == 2 * TRAIN_MINUTES  # attempt 2
    manifest = cancel.workdir / "results/signal/runs" / run / "manifest.json"
    assert json.loads(manifest.read_text())["final_step"] == 150


def test_a_job_that_fails_once_succeeds_on_retry_with_a_larger_runtime(cluster, runs):
    flaky = runs["flaky"].succeeded()
    rows = cluster.sacct(flaky.name)
    assert [row["State"] for row in rows] == ["FAILED", "COMPLETED"], rows
    runtimes = [FLAKY_MINUTES * attempt for attempt in (1, 2)]  # tests/slurm/retry.smk
    assert [minutes(row["Timelimit"]) for row in rows] == runtimes
    assert (flaky.workdir / "flaky.txt").read_text().split() == [
        "attempt=2",
        f"runtime={runtimes[1]}",
    ]


# Plugin 2.8.0 looks at its jobs' states 20 s after a job ends (the profile's first
# check), then 10 s later each time none has ended, up to every 180 s (not a setting): a
# cancel is seen at its next look, and a run that then stops waits out its last interval
# before it exits. Without a status command that sees the cancel the run never ends
# (SNAKEMAKE_LIMIT_S kills it): each bound is the plugin's longest wait and half a minute.
PLUGIN_LONGEST_WAIT_S = 180
NOTICE_BOUND_S = PLUGIN_LONGEST_WAIT_S + 30
CANCELLED = "SLURM status is: 'CANCELLED'"


def test_a_cancelled_job_ends_the_run_and_the_same_command_resumes_it(cluster, tmp_path):
    # With the default profile as a user has it (its status command and its first check),
    # but no retries: the run must end, failed, soon after the scancel.
    on_cpu, overlay = tmp_path / "cpu.yaml", tmp_path / "cancel.yaml"
    on_cpu.write_text(CPU_OVERLAY)
    overlay.write_text(CANCEL_OVERLAY)
    configs = (REPO / "config.yaml", SMOKE, on_cpu, overlay)
    target = f"results/signal/runs/{CANCEL_RUN}/manifest.json"
    workdir = tmp_path / "run"
    command = snakemake_command(
        workdir, "--executor", "slurm", "-j", "64", "--profile", str(SITE), "--retries", "0",
        target, configs=configs,
    )  # fmt: skip
    training = load_config(*configs)["training"]
    process = start(command, workdir, cluster.env)
    interrupter = Interrupter(cluster, workdir, training, "cancel")
    interrupter.start()
    noticed = None  # when Snakemake said the job failed
    try:
        while process.poll() is None:
            if noticed is None and CANCELLED in (workdir / "snakemake.out").read_text():
                noticed = time.monotonic()
            time.sleep(0.5)
        ended = time.monotonic()
    finally:
        interrupter.stop.set()
        interrupter.join(timeout=10)
    returncode, output = finish(process, workdir)
    caught = Run(workdir, returncode, output, None, interrupter.done, interrupter.error)
    run, jobid = interrupted(caught, "cancel")
    assert returncode != 0, output[-3000:]
    assert f"SLURM-job '{jobid}' failed, {CANCELLED}" in output, output[-3000:]
    noticed = ended if noticed is None else noticed  # written as it exited
    timings = {
        "noticed_s": round(noticed - interrupter.at, 1),
        "exited_s": round(ended - interrupter.at, 1),
    }
    print(f"\nscancel {jobid}: {json.dumps(timings)}", file=sys.stderr)
    assert timings["noticed_s"] < NOTICE_BOUND_S, output[-3000:]
    assert ended - noticed < NOTICE_BOUND_S, output[-3000:]

    (workdir / "cancelled.out").write_text(output)  # start() writes snakemake.out anew
    Run(workdir, *finish(start(command, workdir, cluster.env), workdir), None).succeeded()
    resumed = resumed_steps(workdir, run)
    assert resumed and min(resumed) >= checkpoint_steps(training)[0]
    assert json.loads((workdir / target).read_text())["final_step"] == training["steps"]
