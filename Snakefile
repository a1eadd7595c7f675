# conceptspace: how diffusion models learn concepts (Park et al., NeurIPS 2024).
#
#   snakemake --cores 4                       here: the smoke preset, every rule in minutes
#   snakemake results/figures/fig_signal.pdf  here: one figure and what it needs (smoke)
#   snakemake --executor slurm -j 64          on a Slurm cluster: config.yaml, the paper's scale
#   snakemake --cores 4 --config preset=cpu   here: the claims at laptop scale (~1 h)
#   snakemake --report results/report.html    the report, once the study has run
# Which scale runs where is config key `preset`; profiles/default/ (found by Snakemake)
# sets the cores, retries and requeueing (packs of runs: config key compute.pack),
# docs/slurm.md the cluster.


import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.27")  # the version the tests ran (pyproject.toml)


configfile: "config.yaml"


# The workflow reads its own code, as its jobs do (run_workflow_code below), whatever is
# installed: a conda environment or a plain one holds the dependencies only.
sys.path.insert(0, str(Path(workflow.basedir, "src")))

from conceptspace.cluster import run_workflow_code, runs_on_cluster
from conceptspace.config import ConfigError, preset_file, with_preset

# Jobs run this workflow's own code (`python -m conceptspace`), whatever is installed: a
# conda environment (envs/conceptspace.yaml) holds the dependencies only.
run_workflow_code(Path(workflow.basedir, "src"))

# `preset: auto` is the smoke preset when jobs run on this machine and config.yaml as it
# is when they go to a cluster; a named preset is laid over config.yaml (whether read here
# or given with --configfile), under the other config files and --config values given.
ON_CLUSTER = runs_on_cluster(workflow)
REQUESTED_PRESET = str(config.get("preset", "paper"))  # before it is resolved (plan block)
try:
    PRESET, PRESET_FILE = preset_file(
        config, Path(workflow.basedir, "workflow", "presets"), ON_CLUSTER
    )
except ConfigError as err:
    raise WorkflowError(str(err))
if PRESET_FILE:
    # config.yaml: the repository's, then the one the configfile directive reads (the
    # working directory's), wherever --configfile names them
    _base = [Path(workflow.basedir, "config.yaml").resolve(), Path("config.yaml").resolve()]
    _base = [path for path in dict.fromkeys(_base) if path.is_file()]
    _given = [Path(path).resolve() for path in workflow.config_settings.configfiles]
    _layered = with_preset(
        _base,
        PRESET_FILE,
        [path for path in _given if path not in _base],
        dict(workflow.config_settings.config),
    )
    config.clear()
    config.update(_layered)
config["preset"] = PRESET  # what ran, recorded in every dataset's config

if ON_CLUSTER and workflow.is_main_process:
    # The cores of profiles/default are for jobs on this machine. Snakemake would also cap
    # every cluster job's threads at them.
    workflow.global_resources["_cores"] = None


# snakemake --report results/report.html: the study, then every figure with its caption.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/gather.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


# What this run is about to do, once the config is checked: the preset and why, the
# studies, the jobs, the compute and the disk (conceptspace.plan; README "Quickstart").
if workflow.is_main_process:
    from conceptspace.cluster import launched_executor
    from conceptspace.plan import plan_block

    print(plan_block(config, REQUESTED_PRESET, launched_executor(), ON_CLUSTER), file=sys.stderr)


rule all:
    default_target: True
    input:
        STUDY_DATASETS,
        FIGURES,
        # the claims are judged from the signal study (claim 5 adds underspecification)
        CLAIMS_JSON if "signal" in ON else [],
    localrule: True
