# The studies (conceptspace.studies) and the helpers every rule file uses. The config is
# checked here, before any job is planned: a wrong key, type or range stops the run with a
# message naming it.
import json
from pathlib import Path

from conceptspace.config import select, validate_config
from conceptspace.io import ConceptspaceError
from conceptspace.pack_plan import form_packs
from conceptspace.studies import STUDIES, on_studies, run_table

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConceptspaceError as err:
    raise WorkflowError(str(err))


RESULTS = Path(config["results"])
SIGNAL = RESULTS / "signal"
LOGS = RESULTS / "logs"
ENV = "../../envs/conceptspace.yaml"

# Studies run side by side, each under results/<study>/ with the same rules, each off when
# set to null in config `studies`. ON: the studies that are on; RUNS: their runs by id.
ON = {study.name: study for study in on_studies(config)}
RUNS = run_table(config)
STEPS = {name: study.steps(config) for name, study in ON.items()}
STUDY_DATASET = SIGNAL / "study.nc"
STUDY_DATASETS = [RESULTS / name / "study.nc" for name in ON]


wildcard_constraints:
    study="|".join(STUDIES),
    run=r"[^/]+",  # an id of RUNS (run_of says so when it is not)
    pack=r"[^/]+",  # an id of PACKS (pack_runs says so when it is not)


def study_on(study):
    """The study, when it is on; a named error for one switched off."""
    if study not in ON:
        raise WorkflowError(
            f"the {study} study is off (config studies.{study} is null); set it in config.yaml "
            "or a preset to build its outputs"
        )
    return ON[study]


def study_runs(study):
    """The runs of a study that is on, by id."""
    return RUNS[study_on(study).name]


def run_of(wildcards, study=None):
    """The {run} of the {study} (or of ``study``), looked up in the config's runs, never
    read from its id."""
    study = study or wildcards.study
    runs = study_runs(study)
    if wildcards.run not in runs:
        some = ", ".join(list(runs)[:4]) + (f" ... ({len(runs)} runs)" if len(runs) > 4 else "")
        raise WorkflowError(
            f"{wildcards.run} is not a run of the {study} study in this config (its runs: "
            f"{some}); ask for one of them, or add it to studies.{study}"
        )
    return runs[wildcards.run]


def run_args(wildcards):
    """The run's command-line options: gaps, seed, and its masking ratio or background
    gap if it has one."""
    return run_of(wildcards).args


def study_layout(wildcards):
    return STUDIES[wildcards.study].layout_name(config)


def settings(*keys, **extra):
    """The config keys a stage reads (sections, or keys inside one such as
    "figures.levels"), as one JSON string for --settings."""
    return json.dumps(select(config, keys) | extra, sort_keys=True)


# The evaluation keys that only gather_study reads (learning times). The sampling rules get
# the evaluation section without them, so that changing one regathers the studies instead
# of sampling every checkpoint again.
GATHER_ONLY_EVALUATION_KEYS = ("threshold", "sigma", "authors")


def sampling_settings(*sections):
    """settings() for the rules that sample: the evaluation section without the keys that
    only gathering reads, plus ``sections``."""
    evaluation = {
        key: value
        for key, value in config["evaluation"].items()
        if key not in GATHER_ONLY_EVALUATION_KEYS
    }
    return settings(*sections, evaluation=evaluation)


def threads_for(stage):
    return config["compute"]["threads"][stage]


# What each job asks a cluster for (the Slurm executor reads these; a local run only caps
# threads at --cores). Runtime (minutes) and memory grow with the attempt, so a job that ran
# out of either is retried with more (retries: profiles/default). GPU rules ask for one GPU
# as gres, a pack's training and evaluation jobs too: its runs share that GPU. Light rules
# (renders, gathering, figures, claims) are `localrule: True`: they run in the Snakemake
# process itself, not as cluster jobs of their own.
GPU = "gpu:1"


def per_attempt(amount):
    """``amount`` on the first attempt, twice that on the second, ..."""
    return lambda wildcards, attempt: amount * attempt


# Packs (conceptspace.pack): compute.pack runs of one study train in one job, one process,
# as one stacked model; formed in the order of the study's run table, so the same config
# always makes the same packs. PACKS: study -> pack id -> its run ids; PACK_OF: study ->
# run id -> pack id.
PACK = config["compute"].get("pack", 1)
PACKS = {name: form_packs(list(RUNS[name]), PACK) for name in ON}
PACK_OF = {
    name: {run: pack for pack, runs in packs.items() for run in runs}
    for name, packs in PACKS.items()
}


def pack_runs(wildcards):
    """The run ids of the {pack} of the {study}."""
    packs = PACKS[study_on(wildcards.study).name]
    if wildcards.pack not in packs:
        raise WorkflowError(
            f"{wildcards.pack} is not a pack of the {wildcards.study} study with compute.pack "
            f"= {PACK} (its packs: {', '.join(list(packs)[:4])} ...)"
        )
    return packs[wildcards.pack]


def pack_file_of(folder):
    """An input function: the file under <study>/<folder>/ of the pack that holds the {run}
    of the {study}: its training manifest (packs/) or its evaluations list (evaluated/)."""

    def of(wildcards):
        run_of(wildcards)  # a named error for a run the study does not have
        pack = PACK_OF[wildcards.study][wildcards.run]
        return RESULTS / wildcards.study / folder / f"{pack}.json"

    return of


def training_minutes(wildcards, attempt):
    """A training job's runtime: 4 h per 20k steps of the study (the paper's U-Net: 11-17
    min on an H200, so slower GPUs fit), at least 30 min, times the runs of its pack: as
    if they trained one after another, the bound until a GPU measures what a pack costs
    (benchmarks/gpu_pack.py)."""
    steps = STUDIES[wildcards.study].training(config)["steps"]
    return max(30, -(-240 * steps // 20000)) * len(pack_runs(wildcards)) * attempt


def pack_memory(wildcards, attempt):
    """A training or evaluation job's host memory (MB): 8 GB for its pack's first run, 1 GB
    for each other one (a paper-scale run holds 19 MB of images and 128 MB of weights and
    optimizer state)."""
    return (8000 + 1000 * (len(pack_runs(wildcards)) - 1)) * attempt


def evaluation_minutes(wildcards, attempt):
    """An evaluation job's runtime: 1 h per run of its pack (~1.5 s per paper-scale
    checkpoint on an H200), as if they were evaluated one after another."""
    return 60 * len(pack_runs(wildcards)) * attempt


def run_checkpoints(wildcards, steps):
    """The run's checkpoint files at ``steps`` (named as train.checkpoint_path names them)."""
    folder = RESULTS / wildcards.study / "runs" / wildcards.run / "checkpoints"
    return [folder / f"step_{step:06d}.pt" for step in steps]


def sampled_steps(wildcards):
    """figures.sample_sheet's steps in the signal study; the final one elsewhere."""
    from conceptspace.methods import sample_sheet_steps

    if wildcards.study == "signal":
        return sample_sheet_steps(config["figures"]["sample_sheet"], STEPS["signal"])
    return STEPS[wildcards.study][-1:]


# Before the first job of a run: the datasets, checkpoints, evaluations and samples the
# planned jobs write must fit where the results go (conceptspace.plan). Before the first
# submission of a Slurm run: every partition, account, QoS and GPU type the planned jobs
# ask for is looked up on the cluster (conceptspace.cluster); a wrong one stops the run
# with one message, instead of one failed sbatch per job and attempt. So does a MinJobAge
# too short for the squeue status command, under which a finished job could go unseen.
onstart:
    from conceptspace.plan import planned_writes, space_problem

    problem = space_problem(config, planned_writes(workflow.dag.needrun_jobs()))
    if problem:
        raise WorkflowError(problem)
    if workflow.executor_plugin is not None and workflow.executor_plugin.name.endswith("slurm"):
        from conceptspace.cluster import slurm_preflight

        settings = workflow.executor_settings
        try:
            slurm_preflight(
                workflow.dag.needrun_jobs(),
                getattr(settings, "qos", None),
                getattr(settings, "status_command", None),
                getattr(settings, "init_seconds_before_status_checks", None) or 40,  # plugin's
            )
        except ConceptspaceError as err:
            raise WorkflowError(str(err))
