"""The study registry: each study's runs, ids, command-line options and signal levels come
from its entry, and a study added as an entry, a figure and a schema section is checked,
planned and drawn like the others (a toy study, planned by Snakemake)."""

import json
import subprocess
import sys

import pytest
import yaml

from conceptspace import cli
from conceptspace.config import ConfigError, load_config, merge, select, validate_config
from conceptspace.config_checks import gap_problems
from conceptspace.runs import MAX_COLOR_GAP
from conceptspace.studies import (
    FIGURE_INPUTS,
    STUDIES,
    Figure,
    Run,
    Study,
    figures_of,
    on_studies,
    register,
    run_table,
)
from conftest import REPO, SCHEMA, SMOKE, planned_jobs

TOY_SIZE_GAP = 0.4


def toy_runs(section):
    """Seeds x color gaps at one size gap."""
    for dc in sorted(section["color_gaps"]):
        for seed in sorted(section["seeds"]):
            yield Run("toy", f"toy{dc:.3f}_seed{seed}", seed, color_gap=dc, size_gap=TOY_SIZE_GAP)


# A study of the 2x2 layout along the color gap alone: the entry a new study adds.
TOY = Study(
    "toy",
    layout="color_size",
    grid=("seed", "color_gap"),
    classes=(3, 4),
    runs_of=toy_runs,
    levels_of=lambda section: [(dc, TOY_SIZE_GAP) for dc in sorted(section["color_gaps"])],
    problems_of=lambda config, study: gap_problems(
        study.section(config), "studies.toy", [("color_gaps", MAX_COLOR_GAP)]
    ),
    figures=(Figure("toy", "conceptspace.figures.background:plot_background"),),
)
# ... and the section it adds to the schema's `studies` (its gaps plain numbers, so that
# the test sees its entry's own check of their limit).
TOY_SCHEMA = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["seeds", "color_gaps"],
    "properties": {
        "seeds": {"$ref": "#/$defs/seeds"},
        "color_gaps": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
    },
}
TOY_CONFIG = {
    "studies": {
        "signal": None,
        "underspecification": None,
        "toy": {"seeds": [0, 1], "color_gaps": [0.6, 0.3]},
    }
}


def toy_schema(path):
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["properties"]["studies"]["properties"]["toy"] = TOY_SCHEMA
    path.write_text(yaml.safe_dump(schema))
    return path


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    del STUDIES["toy"]


@pytest.fixture(scope="module")
def smoke():
    return load_config(REPO / "config.yaml", SMOKE)


def test_each_study_lists_its_runs_with_ids_and_options(smoke):
    table = run_table(smoke)
    assert list(table) == ["signal", "underspecification"]  # the smoke preset's studies
    signal = table["signal"]["dc0.300_ds0.400_seed1"]
    assert signal.args == "--color-gap 0.3 --size-gap 0.4 --seed 1"
    assert signal.fields == {"color_gap": 0.3, "size_gap": 0.4, "seed": 1}
    masked = table["underspecification"]["p1.000_seed0"]
    assert masked.args == "--color-gap 0.4 --size-gap 0.4 --seed 0 --mask-ratio 1.0"
    assert masked.fields == {"color_gap": 0.4, "size_gap": 0.4, "seed": 0, "mask_ratio": 1.0}
    paper = load_config(REPO / "config.yaml")
    celeba = merge(paper, {"studies": {"celeba": {"root": "faces", "seeds": [3, 1]}}})
    assert [run.id for run in STUDIES["celeba"].runs(celeba)] == ["seed1", "seed3"]
    assert STUDIES["celeba"].runs(celeba)[0].args == "--seed 1"
    assert STUDIES["celeba"].runs(paper) == []  # off while its root is null
    assert [study.name for study in on_studies(paper)] == [
        "signal",
        "underspecification",
        "background",
    ]


def test_each_study_names_the_levels_its_probe_pools(smoke):
    paper = load_config(REPO / "config.yaml")
    assert STUDIES["signal"].levels(smoke) == [(0.3, 0.4), (0.6, 0.3), (0.6, 0.4)]
    assert STUDIES["underspecification"].levels(smoke) == [(0.4, 0.4)]
    assert STUDIES["background"].levels(paper) == [[0.4, 0.4, 0.4]]
    assert STUDIES["celeba"].levels(paper) == []


def test_the_figures_built_follow_the_studies_and_methods_on(smoke):
    assert [figure.name for _, figure in figures_of(smoke)] == [
        "signal",
        "trajectories",
        "hidden",
        "patching",
        "underspec",
    ]
    naive_only = merge(smoke, {"evaluation": {"methods": {"patching": {"donors": []}}}})
    naive_only["evaluation"]["methods"]["overprompt"]["colors"] = []
    naive_only["evaluation"]["methods"]["intervention"]["alphas"] = []
    names = [figure.name for _, figure in figures_of(naive_only)]
    assert "hidden" not in names and "patching" not in names


def test_a_figure_rule_gets_only_the_keys_its_figure_reads(smoke):
    hidden = next(figure for _, figure in figures_of(smoke) if figure.name == "hidden")
    settings = select(smoke, hidden.settings_keys)
    assert sorted(settings) == ["evaluation", "figures", "studies"]
    assert list(settings["figures"]) == ["levels"] and list(settings["studies"]) == ["signal"]
    assert list(settings["evaluation"]) == ["methods"]


def test_every_figure_is_declared_once_with_its_caption_and_inputs():
    figures = [figure for study in STUDIES.values() for figure in study.figures]
    captions = REPO / "workflow" / "report"
    assert sorted(figure.caption for figure in figures) == sorted(
        path.name for path in captions.glob("fig_*.rst")
    )  # every caption is a declared figure's, every declared figure has one
    assert {name for figure in figures for name in figure.inputs} <= set(FIGURE_INPUTS)
    figure_help = cli.build_parser()._subparsers._group_actions[0].choices["figure"].format_help()
    for declared in FIGURE_INPUTS.values():
        assert declared.option is None or declared.option in figure_help


def test_a_toy_study_is_checked_by_its_entry_and_its_schema_section(toy, tmp_path):
    config = merge(load_config(REPO / "config.yaml", SMOKE), TOY_CONFIG)
    config["results"] = str(tmp_path / "results")
    with pytest.raises(ConfigError, match="'toy' was unexpected"):
        validate_config(config, SCHEMA)  # a study needs its schema section
    schema = toy_schema(tmp_path / "schema.yaml")
    validate_config(config, schema)
    assert [run.id for run in toy.runs(config)] == [
        "toy0.300_seed0",
        "toy0.300_seed1",
        "toy0.600_seed0",
        "toy0.600_seed1",
    ]
    assert toy.runs(config)[3].args == "--color-gap 0.6 --size-gap 0.4 --seed 1"
    assert toy.levels(config) == [(0.3, 0.4), (0.6, 0.4)]
    assert [figure.name for _, figure in figures_of(config)] == ["toy"]
    config["studies"]["toy"]["color_gaps"] = [0.3, 0.9]
    with pytest.raises(ConfigError, match=r"studies.toy.color_gaps': 0.9 is above 0.8"):
        validate_config(config, schema)


# Snakemake with the toy study registered and its schema section added, as a new study's
# module and schema would.
PLAN_TOY = """
import sys
sys.path[:0] = [{src!r}, {tests!r}]
import conceptspace.config as config_module
from conceptspace.studies import register
from snakemake.cli import main
from test_studies import TOY

register(TOY)
check = config_module.validate_config
config_module.validate_config = lambda config, schema: check(config, {schema!r})
main({argv!r})
"""


def plan_toy(tmp_path, *targets):
    overlay = tmp_path / "toy.yaml"
    overlay.write_text(yaml.safe_dump(TOY_CONFIG))
    argv = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "-p"]
    argv += [*targets, "--configfile", str(REPO / "config.yaml"), str(SMOKE), str(overlay)]
    script = PLAN_TOY.format(
        src=str(REPO / "src"),
        tests=str(REPO / "tests"),
        schema=str(toy_schema(tmp_path / "schema.yaml")),
        argv=argv,
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )


@pytest.mark.workflow
def test_snakemake_plans_a_toy_study_from_its_entry(tmp_path):
    result = plan_toy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout)
    assert jobs["render_training_set"] == jobs["train_vdm"] == jobs["evaluate_pack"] == 4
    assert jobs["train_probe"] == jobs["gather_study"] == jobs["fig_toy"] == 1
    assert "claims" not in jobs  # the claims are judged from the signal study, off here
    commands = [line for line in result.stdout.splitlines() if "python -m conceptspace" in line]
    render = next(c for c in commands if "render" in c and "toy0.600_seed1" in c)
    assert "--color-gap 0.6 --size-gap 0.4 --seed 1 --layout color_size" in render
    probe = next(c for c in commands if " probe " in c)
    assert json.loads(probe.split("'")[1])["signals"] == [[0.3, 0.4], [0.6, 0.4]]
    gather = next(c for c in commands if "gather-study" in c)
    assert "--grid seed color_gap --out results/toy/study.nc" in gather
    assert any("figure toy --settings '{}' --study results/toy/study.nc" in c for c in commands)


@pytest.mark.workflow
def test_a_run_the_config_does_not_list_is_refused_by_name(tmp_path):
    result = plan_toy(tmp_path, "results/toy/data/toy0.900_seed0.npz")
    assert result.returncode != 0
    assert (
        "toy0.900_seed0 is not a run of the toy study in this config (its runs: toy0.300_seed0"
        in result.stdout
    )
