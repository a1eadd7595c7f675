"""Where the jobs of a Snakemake run go, and what a Slurm cluster must offer them.

``runs_on_cluster`` tells the Snakefile whether this run's jobs go to a cluster (the
study in config.yaml at the paper's scale) or run on this machine (the smoke preset,
unless a preset is named): ``config`` key ``preset``, README "Quickstart".

``slurm_preflight`` runs once before the first submission of a ``--executor slurm`` run
(the Snakefile's ``onstart``): every partition, account, QoS and GPU type that the
planned jobs ask for is looked up on the cluster (``sinfo``, ``sacctmgr`` where present),
and anything missing stops the run with one message that names it and the fix, instead
of one failed ``sbatch`` per job and attempt. So does a Slurm MinJobAge too short for the
job status command of profiles/default (squeue: ``status_command_problem``).
"""

from __future__ import annotations

import getpass
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from conceptspace.io import ConceptspaceError

# Executors that run jobs on this machine (or not at all).
LOCAL_EXECUTORS = {None, "local", "dryrun", "touch"}


def launched_executor() -> str | None:
    """The executor named on Snakemake's command line or in a profile (``--executor``),
    or None when Snakemake was not started from its command line.

    The Snakefile is read before Snakemake hands the executor to the workflow, so the
    executor is read from the parsed arguments of ``snakemake.cli.args_to_api``, which
    is on the stack while the Snakefile is read (Snakemake 8 and 9)."""
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "args_to_api" and frame.f_globals.get("__name__") == "snakemake.cli":
            executor = getattr(frame.f_locals.get("args"), "executor", None)
            # Some Snakemake 9 releases replace the executor by "dryrun" under -n before
            # the Snakefile is read; the command line still names the one asked for.
            if executor == "dryrun":
                executor = _executor_in_argv(sys.argv) or executor
            return executor
        frame = frame.f_back
    return None


def _executor_in_argv(argv: list[str]) -> str | None:
    """The value of ``--executor`` / ``-e`` on a command line, if it names one."""
    for index, word in enumerate(argv):
        if word in ("--executor", "-e") and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--executor="):
            return word.split("=", 1)[1]
    return None


def runs_on_cluster(workflow: Any) -> bool:
    """True when this Snakemake process plans jobs for a cluster executor (its dry runs
    included), or is itself such a job (``--mode remote``, what every cluster executor
    starts inside a job): both must read the same config."""
    from snakemake_interface_executor_plugins.settings import ExecMode

    if workflow.exec_mode == ExecMode.REMOTE:
        return True
    return launched_executor() not in LOCAL_EXECUTORS


def run_workflow_code(src: Path) -> None:
    """Put the workflow's ``src`` first on PYTHONPATH, which every job inherits (on Slurm
    through sbatch --export=ALL): jobs then run the workflow's own code whatever is
    installed where they run, a conda environment of dependencies included."""
    paths = [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


# ----------------------------------------------------------------------------- Slurm


@dataclass
class SlurmRequest:
    """What the planned jobs of the run ask Slurm for, with the rules that ask."""

    partitions: dict[str | None, set[str]] = field(default_factory=dict)  # None: default
    gpu_partitions: dict[str | None, set[str]] = field(default_factory=dict)
    gpu_types: dict[tuple[str | None, str], set[str]] = field(default_factory=dict)
    accounts: dict[str, set[str]] = field(default_factory=dict)
    qos: dict[str, set[str]] = field(default_factory=dict)
    runtimes: dict[tuple[str | None, int], set[str]] = field(default_factory=dict)
    both_gpu_keys: set[str] = field(default_factory=set)

    def add(self, rule: str, resources: Mapping[str, Any], qos: str | None = None) -> None:
        partition = str(resources["slurm_partition"]) if resources.get("slurm_partition") else None
        self.partitions.setdefault(partition, set()).add(rule)
        gres = str(resources.get("gres") or "")
        gpu, gpu_model = resources.get("gpu"), resources.get("gpu_model")
        gpu_type = _gres_gpu_type(gres) or (str(gpu_model) if gpu_model else None)
        if gpu or gpu_model or gres.startswith("gpu"):
            self.gpu_partitions.setdefault(partition, set()).add(rule)
            if gpu_type:
                self.gpu_types.setdefault((partition, gpu_type), set()).add(rule)
        if gres.startswith("gpu") and (gpu or gpu_model):
            self.both_gpu_keys.add(rule)
        account = resources.get("slurm_account")
        for name in re.split(r"[,\s]+", str(account or "")):
            if name:
                self.accounts.setdefault(name, set()).add(rule)
        for name in (resources.get("qos"), qos):
            if name:
                self.qos.setdefault(str(name), set()).add(rule)
        runtime = resources.get("runtime")
        if isinstance(runtime, (int, float)) and runtime > 0:
            self.runtimes.setdefault((partition, int(runtime)), set()).add(rule)


def _gres_gpu_type(gres: str) -> str | None:
    """'gpu:a100:1' -> 'a100'; 'gpu:1', 'gpu' -> None."""
    parts = gres.split(":")
    if parts[0] != "gpu" or len(parts) < 3:
        return None
    return parts[1]


@dataclass
class SlurmCluster:
    """What ``sinfo`` and ``sacctmgr`` say about the cluster."""

    partitions: dict[str, dict[str, Any]]  # name -> {"gres": set of gres, "max_minutes"}
    default_partition: str | None
    accounts: set[str] | None  # None: sacctmgr absent or silent (not checked)
    qos: set[str] | None

    @classmethod
    def from_sinfo(
        cls, sinfo: str, accounts: str | None = None, qos: str | None = None
    ) -> "SlurmCluster":
        """From ``sinfo -h -o '%P|%G|%l'`` and ``sacctmgr -n -P`` listings (one name per
        line; None where sacctmgr could not be asked)."""
        partitions: dict[str, dict[str, Any]] = {}
        default = None
        for line in sinfo.splitlines():
            if not line.strip():
                continue
            name, gres, limit = (line.split("|") + ["", ""])[:3]
            name = name.strip()
            if name.endswith("*"):
                name = name[:-1]
                default = name
            entry = partitions.setdefault(name, {"gres": set(), "max_minutes": None})
            entry["gres"] |= {g for g in re.split(r",(?![^()]*\))", gres.strip()) if g}
            entry["max_minutes"] = _max_minutes(limit.strip(), entry["max_minutes"])

        def names(listing: str | None) -> set[str] | None:
            found = {line.strip().lower() for line in (listing or "").splitlines()}
            found.discard("")
            return found or None

        return cls(partitions, default, names(accounts), names(qos))


def _max_minutes(limit: str, before: int | None) -> int | None:
    """Slurm's time limit as minutes, the larger of it and ``before``; None: unlimited.
    sinfo prints [D-]HH:MM:SS, MM:SS or MM, or "infinite"."""
    if not limit or limit.lower() in ("infinite", "unlimited", "n/a"):
        return before
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    hours, mins, secs = [0] * (3 - len(parts)) + parts if len(parts) > 1 else (0, parts[0], 0)
    minutes = (int(days) if days else 0) * 1440 + hours * 60 + mins + math.ceil(secs / 60)
    return max(minutes, before or 0)


def _gpu_gres(gres: Iterable[str]) -> list[str]:
    """The GPU entries of a partition's gres ('gpu:a100:4(S:0-1)' -> 'gpu:a100:4')."""
    return [re.sub(r"\(.*\)$", "", g) for g in gres if g.startswith("gpu")]


def _rules(rules: set[str]) -> str:
    return ", ".join(sorted(rules))


def preflight_problems(request: SlurmRequest, cluster: SlurmCluster) -> list[str]:
    """Every request of the run that the cluster cannot meet, each with its fix."""
    problems = []
    known = ", ".join(
        f"{name}{'*' if name == cluster.default_partition else ''}"
        for name in sorted(cluster.partitions)
    )
    for partition, rules in sorted(request.partitions.items(), key=lambda kv: str(kv[0])):
        if partition is None and cluster.default_partition is None:
            problems.append(
                f"jobs of {_rules(rules)} name no partition and the cluster has no default "
                f"partition; set one: default-resources: slurm_partition: <name> in your site "
                f"profile (partitions here: {known})"
            )
        elif partition is not None and partition not in cluster.partitions:
            problems.append(
                f"partition '{partition}' (asked by {_rules(rules)}) does not exist on this "
                f"cluster; partitions here: {known}. Set slurm_partition in your site profile "
                f"(default-resources for CPU jobs, set-resources for GPU rules) or on the "
                f"command line (--set-resources <rule>:slurm_partition=<name>)"
            )
    for partition, rules in sorted(request.gpu_partitions.items(), key=lambda kv: str(kv[0])):
        name = partition or cluster.default_partition
        if name not in cluster.partitions:
            continue  # reported above
        if not _gpu_gres(cluster.partitions[name]["gres"]):
            with_gpus = [p for p, e in sorted(cluster.partitions.items()) if _gpu_gres(e["gres"])]
            where = (
                f"partitions with GPUs: {', '.join(with_gpus)}"
                if with_gpus
                else "no partition lists GPUs (sinfo %G)"
            )
            problems.append(
                f"{_rules(rules)} ask for a GPU, but partition '{name}'"
                f"{' (the default)' if partition is None else ''} has none; {where}. Set "
                f"slurm_partition of these rules in your site profile (set-resources)"
            )
    for (partition, gpu_type), rules in sorted(request.gpu_types.items(), key=str):
        name = partition or cluster.default_partition
        if name not in cluster.partitions:
            continue
        offered = _gpu_gres(cluster.partitions[name]["gres"])
        types = sorted({g.split(":")[1] for g in offered if len(g.split(":")) > 2})
        if offered and gpu_type not in types:
            problems.append(
                f"{_rules(rules)} ask for GPU type '{gpu_type}', which partition '{name}' does "
                f"not have (its GPUs: {', '.join(offered)}); set gres: \"gpu:<type>:1\" to one "
                f"of {', '.join(types) or 'its types'}, or \"gpu:1\" for any GPU"
            )
    for rule in sorted(request.both_gpu_keys):
        problems.append(
            f"{rule} asks for GPUs twice (gres and gpu/gpu_model); the rules ask with gres: "
            f'set the GPU type as gres: "gpu:<type>:1" and drop gpu/gpu_model'
        )
    if cluster.accounts is not None:
        for account, rules in sorted(request.accounts.items()):
            if account.lower() not in cluster.accounts:
                problems.append(
                    f"account '{account}' (asked by {_rules(rules)}) is not one of yours "
                    f"(sacctmgr: {', '.join(sorted(cluster.accounts))}); set slurm_account "
                    f"in default-resources of your site profile"
                )
    if cluster.qos is not None:
        for qos, rules in sorted(request.qos.items()):
            if qos.lower() not in cluster.qos:
                problems.append(
                    f"QoS '{qos}' (asked by {_rules(rules)}) does not exist (sacctmgr: "
                    f"{', '.join(sorted(cluster.qos))}); fix slurm-qos in your site profile"
                )
    for (partition, minutes), rules in sorted(request.runtimes.items(), key=str):
        name = partition or cluster.default_partition
        limit = cluster.partitions.get(name, {}).get("max_minutes")
        if limit is not None and minutes > limit:
            problems.append(
                f"{_rules(rules)} ask for {minutes} min, above partition '{name}''s time "
                f"limit of {limit} min; choose a partition with a longer limit, or lower "
                f"runtime (--set-resources <rule>:runtime=<minutes>): training resumes from "
                f"its checkpoints when retried"
            )
    return problems


def _ask(command: list[str]) -> str | None:
    """stdout of a Slurm client command; None where it is absent or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def query_cluster() -> SlurmCluster:
    sinfo = _ask(["sinfo", "-h", "-o", "%P|%G|%l"])
    if sinfo is None:
        raise ConceptspaceError(
            "Slurm preflight: `sinfo -h -o '%P|%G|%l'` failed or is not installed, so the "
            "run cannot be checked against the cluster; run Snakemake where the Slurm "
            "commands work (a login node), or check the cluster with `sinfo`"
        )
    user = getpass.getuser()
    accounts = _ask(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account"])
    qos = _ask(["sacctmgr", "-n", "-P", "show", "qos", "format=name"])
    return SlurmCluster.from_sinfo(sinfo, accounts, qos)


# Plugin 2.8.0 looks at its jobs' states as rarely as every 180 s (its check_active_jobs'
# max_sleep_time, not a setting), so squeue must remember an ended job at least that long.
PLUGIN_LONGEST_STATUS_INTERVAL_S = 180


def min_job_age(scontrol_config: str | None) -> int | None:
    """Slurm's MinJobAge in seconds, from ``scontrol show config`` ("MinJobAge = 300 sec");
    None where it is not there."""
    match = re.search(r"^MinJobAge\s*=\s*(\d+)\s*(\w*)", scontrol_config or "", re.M)
    if match is None:
        return None
    return int(match[1]) * (3600 if match[2].lower() in ("h", "hour", "hours") else 1)


def status_command_problem(
    status_command: str | None, init_seconds: int, job_age: int | None
) -> str | None:
    """Why the plugin's job status command would miss an ended job, with the fix; None
    where it would not. Under squeue (profiles/default) a job squeue has forgotten reads
    as still queued, forever; the plugin itself falls back to sacct where MinJobAge is
    below 3 x ``init_seconds``, so only the range above that up to the plugin's longest
    interval is a problem."""
    if status_command != "squeue" or job_age is None:
        return None
    if job_age < 3 * init_seconds or job_age >= PLUGIN_LONGEST_STATUS_INTERVAL_S:
        return None
    return (
        f"the job status command is squeue (profiles/default), but this cluster's MinJobAge "
        f"is {job_age} s: squeue forgets a job that long after it ends, and the Slurm plugin "
        f"looks at its jobs as rarely as every {PLUGIN_LONGEST_STATUS_INTERVAL_S} s, so a "
        "finished job could go unseen and the run wait for it forever; run with "
        "--slurm-status-command sacct (a scancelled job then goes unseen: requeue jobs "
        "instead, docs/slurm.md), or ask the cluster's admins for MinJobAge >= "
        f"{PLUGIN_LONGEST_STATUS_INTERVAL_S}"
    )


def slurm_preflight(
    jobs: Iterable[Any],
    qos: str | None = None,
    status_command: str | None = None,
    init_seconds: int = 40,
) -> None:
    """Check the planned ``jobs`` (Snakemake jobs) against the cluster, and the plugin's
    job status command (with its ``init_seconds``) against Slurm's MinJobAge; raise one
    ConceptspaceError listing every problem."""
    request = SlurmRequest()
    for job in jobs:
        if not job.is_local:
            request.add(job.rule.name, dict(job.resources.items()), qos)
    problems = preflight_problems(request, query_cluster())
    job_age = min_job_age(_ask(["scontrol", "show", "config"])) if status_command else None
    problems += filter(None, [status_command_problem(status_command, init_seconds, job_age)])
    if problems:
        raise ConceptspaceError(
            "Slurm preflight: the run asks for what this cluster does not offer; nothing "
            "was submitted:\n" + "\n".join(f"  - {p}" for p in problems)
        )
