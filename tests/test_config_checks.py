"""Every check between config keys lives in conceptspace.config_checks and is reached from
the one entry point, ``config.validate_config``: one bad config per check, each named with
its message; and the patching donors are checked against each study's own checkpoints."""

import copy
import inspect

import pytest
import yaml

from conceptspace import config_checks
from conceptspace.config import ConfigError, load_config, validate_config
from conceptspace.io import ConceptspaceError
from conceptspace.runs import checkpoint_steps
from conceptspace.studies import FIGURE_INPUTS
from conftest import REPO, SCHEMA


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "config.yaml")


def changed(config: dict, changes: dict) -> dict:
    """``config`` with each dotted key of ``changes`` set to its value."""
    config = copy.deepcopy(config)
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = config
        for part in parents:
            target = target[int(part) if isinstance(target, list) else part]
        target[int(last) if isinstance(target, list) else last] = value
    return config


def problems(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    return str(caught.value)


# (the check, a change to the paper's config, a part of the message it gives). The gap
# limits of gap_problems are also the schema's maxima, so a built-in study's gap over its
# limit is refused by the schema first; tests/test_studies.py's toy study reaches them.
BAD = [
    ("_training_problems", {"training.checkpoints.count": 30000},
     "'training.checkpoints.count' (30000) asks for more checkpoints than there are steps"),
    ("_training_problems", {"training.log_every": 30000},
     "'training.log_every' (30000) is above 'training.steps' (20000)"),
    ("_batch_problems", {"training.batch_size": 20000},
     "'training.batch_size' (20000) is larger than the signal study's training set of a run"),
    ("_model_problems", {"model.gamma_min": 100},
     "'model.gamma_min' must be below 'model.gamma_max'"),
    ("_model_problems", {"model.groups": 5},
     "64 channels cannot be split into 'model.groups' = 5 GroupNorm groups"),
    ("_image_size_problems", {"data.image_size": 34},
     "'data.image_size' (34) must be divisible by 2^2 for the 3 levels of 'model.channels'"),
    ("_h_init_problems", {"model.h_init_fan_in": 2},
     "'model.h_init_fan_in' (2) is below the slots of h"),
    ("_donor_problems", {"evaluation.methods.patching.donors": [594]},
     "594 is not a checkpoint step; use \"final\" or one of the steps training.checkpoints "
     "makes: 500, 644, 806, "),  # the background study's own, to 40000
    ("method_problems", {"evaluation.methods.patching.donors": [7]},
     "'evaluation.methods.patching.donors': 7 is not a checkpoint step; use \"final\" or "
     "one of the steps training.checkpoints makes: 500, 594, 697"),
    ("method_problems", {"evaluation.methods.patching.donors": ["final", 20000]},
     "'evaluation.methods.patching.donors' names a donor twice (\"final\" is step 20000)"),
    ("_sample_count_problems", {"figures.sample_sheet.samples": 33},
     "'figures.sample_sheet.samples' (33) is above 'evaluation.samples_per_prompt' (32)"),
    ("gap_problems", {"studies.signal.sweeps.2.color_gap": [0.2, 0.2501]},
     "'studies.signal.sweeps.2.color_gap': 0.2501 has more than 3 decimals"),
    ("_decimals_problems", {"studies.underspecification.mask_ratios": [0.0, 0.2501]},
     "'studies.underspecification.mask_ratios.1': 0.2501 has more than 3 decimals"),
    ("signal_problems", {"studies.signal.sweeps.1.name": "color_gap"},
     "'studies.signal.sweeps': the name 'color_gap' is used twice"),
    ("figure_sweep_problems", {"figures.signal.size_sweep": "sizes"},
     "'figures.signal.size_sweep': no sweep is named 'sizes'; sweeps are: color_gap, size_gap, "
     "grid"),
    ("figure_sweep_problems", {"figures.signal.color_sweep": "grid"},
     "'figures.signal.color_sweep': sweep 'grid' has size_gap [0.2, 0.3, 0.4], and "
     "fig_signal plots it at one size_gap; name a sweep that holds size_gap fixed"),
    ("sample_sheet_problems", {"figures.sample_sheet.seed": 7},
     "'figures.sample_sheet.seed': 7 is not a seed of the study at that level"),
    ("sample_sheet_problems", {"figures.sample_sheet.steps": [501]},
     "'figures.sample_sheet.steps': 501 is not a checkpoint step"),
    ("figure_level_problems", {"figures.levels.0.color_gap": 0.175},
     "'figures.levels.0': (color_gap 0.175, size_gap 0.4) is not a signal level"),
    ("underspecification_problems", {"studies.underspecification.mask_ratios": [0.0, 1.5]},
     "'studies.underspecification.mask_ratios.1': 1.5 is outside [0, 1]"),
    ("background_problems", {"studies.background.background_gap": 0.4001},
     "'studies.background.background_gap': 0.4001 has more than 3 decimals"),
    ("celeba_problems", {"studies.celeba.root": "no-such-folder"},
     "config key 'studies.celeba.root' (no-such-folder): "),
    ("celeba_problems", {"studies.celeba.root": "no-such-folder", "studies.celeba.image_size": 34},
     "'studies.celeba.image_size' (34) must be divisible by 2^2 for the 3 levels of"),
]  # fmt: skip


@pytest.mark.parametrize(
    "check, change, message", BAD, ids=[f"{i}-{row[0]}" for i, row in enumerate(BAD)]
)
def test_each_check_between_keys_is_reached_from_validate_config(paper, check, change, message):
    assert message in problems(changed(paper, change))


def test_the_table_has_a_bad_config_for_every_check():
    checks = {
        name
        for name, function in inspect.getmembers(config_checks, inspect.isfunction)
        if function.__module__ == config_checks.__name__ and name.endswith("_problems")
    }
    assert checks - {"relation_problems"} == {row[0] for row in BAD}


def studies_with_a_training_overlay() -> list[str]:
    """The studies whose schema section takes a ``training`` overlay."""
    schema = yaml.safe_load(SCHEMA.read_text())
    sections = schema["properties"]["studies"]["properties"]
    return [name for name, section in sections.items() if "training" in section["properties"]]


SHORT = {"steps": 1000, "checkpoints": {"count": 3, "first": 100, "last": 1000}}


@pytest.mark.parametrize("study", studies_with_a_training_overlay())
def test_patching_donors_are_checkpoints_of_each_studys_own_training(paper, study):
    """A donor that is a checkpoint of ``training`` (594) but not of the study's own
    overlay (100, 433, 1000) is refused for that study, and not for the signal study,
    which trains on ``training`` (the other studies with an overlay off)."""
    assert 594 in checkpoint_steps(paper["training"])
    assert checkpoint_steps(SHORT) == [100, 433, 1000]
    config = changed(paper, {"evaluation.methods.patching.donors": [594]})
    for other in set(studies_with_a_training_overlay()) - {study}:
        config["studies"][other] = None
    config["studies"][study]["training"] = SHORT
    if study == "celeba":
        config["studies"]["celeba"]["root"] = "no-such-folder"  # on: its root is set
    message = problems(config)
    refused = [line for line in message.splitlines() if "594 is not a checkpoint step" in line]
    assert refused == [
        "  - config key 'evaluation.methods.patching.donors': 594 is not a checkpoint step; "
        'use "final" or one of the steps training.checkpoints makes: 100, 433, 1000 '
        f"(of the {study} study's runs, studies.{study}.training)"
    ]


def test_a_donor_of_an_overlay_alone_is_accepted_when_only_that_study_is_on(paper):
    """The background study alone, patched at its step 40000: no run trains on
    ``training`` (20000 steps), so its checkpoints do not bound the donors."""
    config = changed(paper, {"evaluation.methods.patching.donors": [40000]})
    config["studies"] |= {"signal": None, "underspecification": None}
    validate_config(config, SCHEMA)
    config["studies"]["underspecification"] = paper["studies"]["underspecification"]
    assert "40000 is not a checkpoint step" in problems(config)  # it trains on `training`


def test_a_figure_repeats_the_checks_of_its_settings(paper):
    """`conceptspace figure` may be given --settings by hand, past the config check."""
    bad = changed(paper, {"figures.signal.color_sweep": "grid", "figures.levels.0.size_gap": 0.5})
    with pytest.raises(ConceptspaceError, match="sweep 'grid' has size_gap"):
        FIGURE_INPUTS["sweeps"].build(bad, None)
    with pytest.raises(ConceptspaceError, match="'figures.levels.0': .* is not a signal level"):
        FIGURE_INPUTS["levels"].build(bad, None)
    assert FIGURE_INPUTS["sweeps"].build(paper, None) == {
        "color_sweep_size_gap": 0.4,
        "size_sweep_color_gap": 0.4,
    }
