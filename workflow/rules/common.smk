# The sweep and the helpers every rule file uses. The config is checked here, before
# any job is planned: a wrong key, type or range stops the run with a message naming it.
import json
from pathlib import Path

from conceptspace.config import (
    checkpoint_steps,
    signal_levels,
    study_runs,
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
FIGURE_NAMES = ["signal", "trajectories"]
FIGURE_NAMES += ["hidden"] if len(HIDDEN_METHODS) > 1 else []
FIGURE_NAMES += ["patching"] if METHODS_CFG["patching"]["donors"] else []
FIGURES = [RESULTS / "figures" / f"fig_{name}.pdf" for name in FIGURE_NAMES]


wildcard_constraints:
    run=r"dc\d+\.\d{3}_ds\d+\.\d{3}_seed\d+",
    step=r"\d{6}",


def run_fields(wildcards):
    """Color gap, size gap and seed of the run named by the {run} wildcard."""
    color, size, seed = wildcards.run.split("_")
    return {
        "color_gap": float(color[2:]),
        "size_gap": float(size[2:]),
        "seed": int(seed[4:]),
    }


def settings(*sections, **extra):
    """The config sections a stage needs, as one JSON string for --settings."""
    chosen = {section: config[section] for section in sections}
    chosen.update(extra)
    return json.dumps(chosen, sort_keys=True)


def threads_for(stage):
    return config["compute"]["threads"][stage]
