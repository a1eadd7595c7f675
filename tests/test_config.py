"""The config schema and the checks between keys: every bad value is named."""

import pytest
import yaml

from conceptspace.config import ConfigError, load_config, merge, validate_config
from conceptspace.runs import MAX_BACKGROUND_GAP, MAX_COLOR_GAP, MAX_SIZE_GAP, checkpoint_steps
from conceptspace.studies import STUDIES
from conftest import REPO, SCHEMA, SMOKE, planned_jobs, snakemake


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "config.yaml")


def test_paper_and_smoke_configs_are_valid(paper):
    validate_config(paper, SCHEMA)
    validate_config(load_config(REPO / "config.yaml", SMOKE), SCHEMA)


def test_paper_study_has_the_papers_sweeps_seeds_and_checkpoints(paper):
    assert paper["studies"]["signal"]["seeds"] == [0, 100, 200, 300, 400]
    sweeps = {s["name"]: s for s in paper["studies"]["signal"]["sweeps"]}
    assert len(sweeps["color_gap"]["color_gap"]) == 20 and sweeps["color_gap"]["size_gap"] == [0.4]
    assert min(sweeps["color_gap"]["color_gap"]) == 0.1
    assert max(sweeps["color_gap"]["color_gap"]) == 0.8
    assert len(sweeps["size_gap"]["size_gap"]) == 20 and sweeps["size_gap"]["color_gap"] == [0.4]
    steps = checkpoint_steps(paper["training"])
    assert len(steps) == 60 and steps[0] == 500 and steps[-1] == 20000
    # 58 distinct levels: the grid shares (0.4, 0.2) and (0.4, 0.4) with the size sweep.
    assert len(STUDIES["signal"].levels(paper)) == 58
    assert len(STUDIES["signal"].runs(paper)) == 58 * 5


def test_overlay_merges_dicts_and_replaces_lists(paper):
    smoke = yaml.safe_load(SMOKE.read_text())
    merged = merge(paper, smoke)
    assert merged["model"]["channels"] == smoke["model"]["channels"]
    assert merged["model"]["dropout"] == paper["model"]["dropout"]  # kept from the base
    assert (
        merged["studies"]["signal"]["sweeps"] == smoke["studies"]["signal"]["sweeps"]
    )  # replaced whole


PRESETS = REPO / "workflow" / "presets"


def test_a_preset_that_extends_another_is_laid_over_it():
    cpu = load_config(REPO / "config.yaml", PRESETS / "cpu.yaml")
    long = load_config(REPO / "config.yaml", PRESETS / "cpu-long.yaml")
    validate_config(long, SCHEMA)
    assert "extends" not in long
    # cpu-long adds seeds, embedding patching and the underspecification study; the rest
    # is cpu's
    assert long["preset"] == "cpu-long" and long["studies"]["underspecification"]["mask_ratios"]
    assert long["studies"]["signal"]["seeds"] == cpu["studies"]["signal"]["seeds"]
    assert cpu["evaluation"]["methods"]["patching"]["donors"] == []
    assert long["evaluation"]["methods"]["patching"]["donors"] == ["final"]
    for key in ("studies", "preset"):
        del cpu[key], long[key]
    del cpu["evaluation"]["methods"]["patching"], long["evaluation"]["methods"]["patching"]
    assert long == cpu

    # every cpu run is a cpu-long run, with the same id and options
    def signal_runs(preset):
        config = load_config(REPO / "config.yaml", PRESETS / preset)
        return {run.id: run.args for run in STUDIES["signal"].runs(config)}

    assert signal_runs("cpu.yaml").items() <= signal_runs("cpu-long.yaml").items()


def test_extends_names_a_preset_beside_it_and_no_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\nmodel: {groups: 4}\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="'extends' makes a cycle \\(a -> b -> a\\)"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match="names nowhere, but .*nowhere.yaml does not exist"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "b.yaml").write_text("model: {groups: 8, channels: [8]}\n")
    assert load_config(tmp_path / "a.yaml") == {"model": {"groups": 4, "channels": [8]}}


def test_checkpoint_steps_are_quadratically_spaced(paper):
    steps = checkpoint_steps(paper["training"])
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert all(g > 0 for g in gaps)
    assert gaps[-1] > 5 * gaps[0]  # later checkpoints are sparser
    roots = [s**0.5 for s in steps]
    root_gaps = [b - a for a, b in zip(roots, roots[1:])]
    assert max(root_gaps) - min(root_gaps) < 0.05  # evenly spaced in sqrt(step)


def test_runs_are_seeds_times_the_union_of_sweeps():
    config = load_config(REPO / "config.yaml", SMOKE)
    runs = STUDIES["signal"].runs(config)
    assert {(r.color_gap, r.size_gap) for r in runs} == {(0.3, 0.4), (0.6, 0.4), (0.6, 0.3)}
    assert len(runs) == 6
    assert runs[0].id == "dc0.300_ds0.400_seed0"


def test_a_sweep_may_name_its_own_seeds(paper):
    # more seeds at the ends of the color sweep (a claim's test needs them there)
    config = load_config(REPO / "config.yaml", SMOKE)
    sweeps = config["studies"]["signal"]["sweeps"]
    sweeps.append({"name": "ends", "color_gap": [0.3, 0.6], "size_gap": [0.4], "seeds": [2, 3]})
    validate_config(config, SCHEMA)
    runs = {(r.color_gap, r.size_gap, r.seed) for r in STUDIES["signal"].runs(config)}
    study = {(dc, ds, s) for dc, ds in [(0.3, 0.4), (0.6, 0.4), (0.6, 0.3)] for s in (0, 1)}
    assert runs == study | {(dc, 0.4, s) for dc in (0.3, 0.6) for s in (2, 3)}
    # the sample sheet must name a run: seed 2 exists at (0.3, 0.4) only through 'ends'
    config["figures"]["sample_sheet"] |= {"color_gap": 0.3, "size_gap": 0.4, "seed": 2}
    validate_config(config, SCHEMA)
    config["figures"]["sample_sheet"] |= {"color_gap": 0.6, "size_gap": 0.3}
    with pytest.raises(ConfigError, match="seed': 2 is not a seed of the study at that level"):
        validate_config(config, SCHEMA)


def test_signal_study_switched_off_has_no_runs_and_no_figure_checks(paper):
    """studies.signal: null is a valid config (another study runs alone): no runs, no
    levels, and figures.levels naming signal levels no longer have to match any."""
    config = merge(paper, {"studies": {"signal": None}})
    config["figures"]["levels"] = [{"color_gap": 0.111, "size_gap": 0.111}]
    validate_config(config, SCHEMA)
    assert STUDIES["signal"].runs(config) == [] and STUDIES["signal"].levels(config) == []


def test_studies_must_name_the_signal_study(paper):
    config = merge(paper, {})
    del config["studies"]["signal"]
    with pytest.raises(ConfigError, match="'signal' is a required property"):
        validate_config(config, SCHEMA)


def test_data_triangle_names_one_of_the_two_triangles(paper):
    for triangle in ("authors", "equal_area"):
        validate_config(merge(paper, {"data": {"triangle": triangle}}), SCHEMA)
    with pytest.raises(ConfigError, match=r"data.triangle.*'authors', 'equal_area'"):
        validate_config(merge(paper, {"data": {"triangle": "equilateral"}}), SCHEMA)
    config = merge(paper, {})
    del config["data"]["triangle"]
    with pytest.raises(ConfigError, match="'triangle' is a required property"):
        validate_config(config, SCHEMA)


@pytest.mark.parametrize(
    "text, what",
    [
        ("- steps\n- 100\n", "holds a YAML list, not keys"),
        ("3\n", "holds a YAML int"),
        ("", "is empty"),
    ],
)
def test_a_config_file_without_keys_is_refused_naming_the_file(tmp_path, text, what):
    """An overlay or preset that is a YAML list, a scalar or empty: named with the fix,
    read directly or as the preset another extends."""
    bad = tmp_path / "overlay.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config.yaml", bad)
    message = str(caught.value)
    assert f"config file {bad} {what}" in message
    assert "a mapping of config keys at its top level" in message and "--configfile" in message
    (tmp_path / "child.yaml").write_text("extends: overlay\n")
    with pytest.raises(ConfigError, match=f"config file {bad} {what}"):
        load_config(tmp_path / "child.yaml")


def test_a_config_with_every_eliciting_method_off_is_valid_and_plans_naive_prompting(tmp_path):
    """Every prompting method but naive switched off is legitimate: the config passes, the
    evaluations still run (naive prompting), fig_hidden and fig_patching are not built, and
    the claims they serve are judged "not evaluated" (tests/test_claims.py)."""
    overlay = tmp_path / "naive.yaml"
    overlay.write_text(
        "evaluation:\n  methods:\n    overprompt: {colors: []}\n"
        "    intervention: {alphas: []}\n    patching: {donors: []}\n"
    )
    validate_config(load_config(REPO / "config.yaml", SMOKE, overlay), SCHEMA)
    result = snakemake(
        tmp_path, "-n", "--quiet", "rules", configs=(REPO / "config.yaml", SMOKE, overlay)
    )
    jobs = planned_jobs(result.stdout)
    assert jobs["evaluate_pack"] > 0 and jobs["claims"] == 1 and jobs["fig_trajectories"] == 1
    assert "fig_hidden" not in jobs and "fig_patching" not in jobs


@pytest.mark.parametrize(
    "key",
    [
        "$defs.checkpoints",
        "properties.training.properties.log_every",
        "properties.model.properties.h_init_fan_in",
        "properties.evaluation.properties.samples_per_prompt",
        "properties.figures.properties.sample_sheet.properties.samples",
    ],
)
def test_the_schema_states_each_limit_the_config_checks_hold(key):
    """The schema and the checks agree: a limit conceptspace.config checks between keys is
    stated in the key's description, and one the schema holds is its own."""
    node = yaml.safe_load(SCHEMA.read_text())
    for part in key.split("."):
        node = node[part]
    description = " ".join(node["description"].split())
    assert "checked with the config" in description or "maximum" in node, description


def test_the_schema_caps_each_gap_where_the_run_identity_does():
    defs = yaml.safe_load(SCHEMA.read_text())["$defs"]
    limits = {"color_gap": MAX_COLOR_GAP, "size_gap": MAX_SIZE_GAP}
    limits["background_gap"] = MAX_BACKGROUND_GAP
    assert {name: defs[name]["maximum"] for name in limits} == limits
