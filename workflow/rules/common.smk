# The sweep and the helpers every rule file uses. The config is checked here, before
# any job is planned: a wrong key, type or range stops the run with a message naming it.
import json
import shlex
from pathlib import Path

import re

from conceptspace.config import (
    background_runs,
    celeba_runs,
    celeba_study,
    checkpoint_steps,
    signal_levels,
    signal_study,
    study_runs,
    study_section,
    study_training,
    underspecification,
    underspecification_runs,
    validate_config,
)
from conceptspace.io import ConceptspaceError

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConceptspaceError as err:
    raise WorkflowError(str(err))


RESULTS = Path(config["results"])
SIGNAL = RESULTS / "signal"
LOGS = RESULTS / "logs"
ENV = "../../envs/conceptspace.yaml"

RUNS = study_runs(config)
RUN_IDS = [run.id for run in RUNS]
STEPS = checkpoint_steps(config["training"])

STUDY_DATASET = SIGNAL / "study.nc"

# Studies run side by side, each under results/<study>/ with the same rules, each off when
# set to null in config `studies`: signal (2x2 color x size, runs dc<gap>_ds<gap>_seed<seed>),
# underspecification (color x shape with prompt masking, runs p<ratio>_seed<seed>) and
# background (2x2x2 color x size x background, runs dc<gap>_ds<gap>_db<gap>_seed<seed>).
SIGNAL_STUDY = signal_study(config)
UNDERSPECIFICATION = underspecification(config)
BACKGROUND = study_section(config, "background")
STUDY_RUN_IDS = {"signal": RUN_IDS} if SIGNAL_STUDY else {}
STUDY_SEEDS = {"signal": SIGNAL_STUDY["seeds"]} if SIGNAL_STUDY else {}
if UNDERSPECIFICATION:
    STUDY_SEEDS["underspecification"] = UNDERSPECIFICATION["seeds"]
    STUDY_RUN_IDS["underspecification"] = [run.id for run in underspecification_runs(config)]
if BACKGROUND:
    STUDY_SEEDS["background"] = BACKGROUND["seeds"]
    STUDY_RUN_IDS["background"] = [run.id for run in background_runs(config)]
# CelebA (studies.celeba, on when its root is set): runs seed<seed>, one prepared set each.
CELEBA = celeba_study(config)
if CELEBA:
    STUDY_SEEDS["celeba"] = CELEBA["seeds"]
    STUDY_RUN_IDS["celeba"] = [run.id for run in celeba_runs(config)]
STUDY_LAYOUT = {
    "signal": "color_size",
    "underspecification": "color_shape",
    "background": "color_size_background",
    "celeba": "celeba",  # built from the prepared sets' attributes (concepts.celeba_layout)
}
# The run coordinates that span each study's dataset (gather_study --grid).
STUDY_GRID = {
    "signal": "seed color_gap size_gap",
    "underspecification": "seed mask_ratio",
    "background": "seed",
    "celeba": "seed",
}
# Each study's training (a study may train longer: studies.<study>.training) and steps.
STUDY_TRAINING = {study: study_training(config, study) for study in STUDY_RUN_IDS}
STUDY_STEPS = {study: checkpoint_steps(STUDY_TRAINING[study]) for study in STUDY_RUN_IDS}
STUDY_DATASETS = [RESULTS / study / "study.nc" for study in STUDY_RUN_IDS]
# Claims 2-4: fig_hidden needs overprompting or latent intervention switched on, and
# fig_patching a patching donor; figures whose methods are off are not built. The sample
# sheet's PNG joins FIGURES in figures.smk, once evaluate.smk has named its run.
METHODS_CFG = config["evaluation"]["methods"]
HIDDEN_METHODS = ["naive"] + [
    kind
    for kind, variants in (
        ("overprompt", METHODS_CFG["overprompt"]["colors"]),
        ("intervention", METHODS_CFG["intervention"]["alphas"]),
    )
    if variants
]
FIGURE_NAMES = ["signal", "trajectories"] if SIGNAL_STUDY else []
FIGURE_NAMES += ["hidden"] if SIGNAL_STUDY and len(HIDDEN_METHODS) > 1 else []
FIGURE_NAMES += ["patching"] if SIGNAL_STUDY and METHODS_CFG["patching"]["donors"] else []
FIGURES = [RESULTS / "figures" / f"fig_{name}.pdf" for name in FIGURE_NAMES]


wildcard_constraints:
    study="signal|underspecification|background|celeba",
    run=r"dc\d+\.\d{3}_ds\d+\.\d{3}(_db\d+\.\d{3})?_seed\d+|p\d\.\d{3}_seed\d+|seed\d+",


def study_run_ids(study):
    """The runs of a study that is on; a named error for one switched off."""
    if study not in STUDY_RUN_IDS:
        raise WorkflowError(
            f"the {study} study is off (config studies.{study} is null); set it in config.yaml "
            "or a preset to build its outputs"
        )
    return STUDY_RUN_IDS[study]


def run_fields(wildcards):
    """Color gap, size gap, seed, and the masking ratio (underspecification) or the
    background gap (background) of the {run}."""
    gaps_run = re.fullmatch(r"dc([\d.]+)_ds([\d.]+)(?:_db([\d.]+))?_seed(\d+)", wildcards.run)
    if gaps_run:
        color_gap, size_gap, background_gap, seed = gaps_run.groups()
        fields = {"color_gap": float(color_gap), "size_gap": float(size_gap), "seed": int(seed)}
        if background_gap is not None:
            fields["background_gap"] = float(background_gap)
        return fields
    celeba_run = re.fullmatch(r"seed(\d+)", wildcards.run)
    if celeba_run:  # CelebA: a seed, no signal level
        return {"seed": int(celeba_run.group(1))}
    mask_ratio, seed = re.fullmatch(r"p([\d.]+)_seed(\d+)", wildcards.run).groups()
    return {
        "color_gap": UNDERSPECIFICATION["color_gap"],
        "size_gap": UNDERSPECIFICATION["size_gap"],
        "seed": int(seed),
        "mask_ratio": float(mask_ratio),
    }


def run_args(wildcards):
    """The run's command-line options: gaps, seed, and its masking ratio or background
    gap if it has one."""
    fields = run_fields(wildcards)
    args = ""
    if "color_gap" in fields:  # CelebA runs have none
        args += f"--color-gap {fields['color_gap']} --size-gap {fields['size_gap']} "
    args += f"--seed {fields['seed']}"
    if "mask_ratio" in fields:
        args += f" --mask-ratio {fields['mask_ratio']}"
    if "background_gap" in fields:
        args += f" --background-gap {fields['background_gap']}"
    return args


def study_signal_levels(study):
    """The signal levels of a study, (color gap, size gap[, background gap]): its probe
    pools them."""
    if study == "signal":
        return signal_levels(config)
    if study == "celeba":
        return []  # its probe trains on a prepared set
    if study == "background":
        return [[BACKGROUND[key] for key in ("color_gap", "size_gap", "background_gap")]]
    return [(UNDERSPECIFICATION["color_gap"], UNDERSPECIFICATION["size_gap"])]


def settings(*sections, **extra):
    """The config sections a stage needs, as one JSON string for --settings."""
    chosen = {section: config[section] for section in sections}
    chosen.update(extra)
    return json.dumps(chosen, sort_keys=True)


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
# as gres: a string, which Snakemake does not add up when it packs several jobs into one
# Slurm job (group-components: profiles/default), so a pack shares one GPU. Light rules
# (renders, gathering, figures, claims) are `localrule: True`: they run in the Snakemake
# process itself, not as cluster jobs of their own.
GPU = "gpu:1"


def per_attempt(amount):
    """``amount`` on the first attempt, twice that on the second, ..."""
    return lambda wildcards, attempt: amount * attempt


def training_minutes(wildcards, attempt):
    """A training's runtime: 4 h per 20k steps of the study (the paper's U-Net: 11-17 min
    on an H200, so slower GPUs and GPUs shared by a pack fit), at least 30 min."""
    steps = STUDY_TRAINING[wildcards.study]["steps"]
    return max(30, -(-240 * steps // 20000)) * attempt


def run_checkpoints(wildcards, steps):
    """The run's checkpoint files at ``steps`` (named as train.checkpoint_path names them)."""
    folder = RESULTS / wildcards.study / "runs" / wildcards.run / "checkpoints"
    return [folder / f"step_{step:06d}.pt" for step in steps]


def sampled_steps(wildcards):
    """figures.sample_sheet's steps in the signal study; the final one elsewhere."""
    from conceptspace.methods import sample_sheet_steps

    if wildcards.study == "signal":
        return sample_sheet_steps(config["figures"]["sample_sheet"], STEPS)
    return STUDY_STEPS[wildcards.study][-1:]


# CelebA's sets: `conceptspace celeba` options from studies.celeba, `per_class` images
# of each class.
def celeba_options(per_class):
    options = f"--root {shlex.quote(CELEBA['root'])} --attributes {' '.join(CELEBA['attributes'])}"
    options += f" --held-out {' '.join(map(str, CELEBA['held_out']))}"
    options += f" --image-size {CELEBA['image_size']} --per-class {per_class}"
    options += f" --split {CELEBA['split']}"
    options += f" --validation-fraction {config['data']['validation_fraction']}"
    options += f" --crop {CELEBA['crop']}" if CELEBA["crop"] else ""
    return options + ("" if CELEBA["verify_md5"] else " --no-verify-md5")


# Before the first submission of a Slurm run: every partition, account, QoS and GPU type
# the planned jobs ask for is looked up on the cluster (conceptspace.cluster); a wrong one
# stops the run with one message, instead of one failed sbatch per job and attempt.
onstart:
    if workflow.executor_plugin is not None and workflow.executor_plugin.name.endswith("slurm"):
        from conceptspace.cluster import slurm_preflight

        try:
            slurm_preflight(
                workflow.dag.needrun_jobs(), getattr(workflow.executor_settings, "qos", None)
            )
        except ConceptspaceError as err:
            raise WorkflowError(str(err))
