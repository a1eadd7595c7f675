"""The claims table: each claim's statistic on hand-made study datasets where it passes,
where it fails and where it cannot be evaluated, with exact expected values; the
written claims.json is the same for the same input."""

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from conceptspace import cli
from conceptspace.claims import (
    FAIL,
    NOT_EVALUATED,
    PASS,
    evaluate_claims,
    judge_hidden,
    judge_memorization,
    judge_patching,
    judge_speed,
    judge_underspecification,
    spearman,
    write_claims,
)
from conceptspace.concepts import CLASSES, CONCEPTS
from conceptspace.config import load_config
from conceptspace.info import PROVENANCE_KEYS
from conceptspace.io import ConceptspaceError
from conceptspace.trajectories import learning_time, save_dataset_nc
from conftest import REPO, SMOKE, snakemake

STEPS = [100, 200, 400, 800]
THRESHOLD = 0.8
SIZE_GAP = 0.4
COLOR_GAPS = [0.1, 0.2, 0.4]
STUDY_CONFIG = {
    "studies": {
        "signal": {
            "sweeps": [
                {"name": "color_gap", "color_gap": COLOR_GAPS, "size_gap": [SIZE_GAP]},
                {"name": "size_gap", "color_gap": [0.4], "size_gap": [0.2, 0.4]},
            ]
        }
    },
    "figures": {"signal": {"color_sweep": "color_gap", "size_sweep": "size_gap"}},
}
CLAIMS_CFG = load_config(REPO / "config.yaml")["claims"]
ALL_METHODS = ("naive", "overprompt", "intervention", "patched_final")


def reaching(step):
    """The unseen class's accuracy at STEPS when it first reaches the threshold at
    ``step`` (None: never)."""
    return [0.9 if step is not None and s >= step else 0.1 for s in STEPS]


def unseen_points(values):
    """Concept-space points of the unseen class: (x, y) pairs as given; accuracies a as
    (sqrt a, sqrt a), so that the accuracy (their product) is a."""
    return [v if isinstance(v, tuple) else (np.sqrt(v), np.sqrt(v)) for v in values]


def grid_study(runs, grid, methods, config):
    """A study dataset to the contract of gather_study on the grid {dim: values}
    (first dim 'seed'). ``runs``: {(grid values..., method): per-step accuracies or
    (x, y) points of the unseen class 11}; everything else is NaN (not run, or a method
    that does not prompt a class); the training classes of a run are at 0.9."""
    dims = tuple(grid)
    shape = tuple(len(v) for v in grid.values()) + (len(STEPS), len(methods))
    prob = np.full(shape + (len(CLASSES), len(CONCEPTS)), np.nan)
    for *at, method in runs:
        index = tuple(list(grid[d]).index(v) for d, v in zip(dims, at))
        cell = prob[index + (slice(None), methods.index(method))]
        cell[:, CLASSES.index("11")] = unseen_points(runs[(*at, method)])
        cell[:, [CLASSES.index(c) for c in ("00", "01", "10")]] = np.sqrt(0.9)
    study = xr.Dataset(
        {"concept_prob": (dims + ("step", "method", "prompt", "concept"), prob)},
        coords={**grid, "step": STEPS, "method": list(methods), "prompt": list(CLASSES)}
        | {"concept": list(CONCEPTS)},
    )
    study["accuracy"] = study["concept_prob"].prod("concept", skipna=False)
    times = learning_time(study["accuracy"].sel(prompt="11"), THRESHOLD)
    study["learning_time"] = times.transpose(*dims, "method")
    study["learning_speed"] = 1.0 / study["learning_time"]
    study.attrs["config"] = json.dumps(config)
    return study


def signal_study(runs, methods=ALL_METHODS, config=STUDY_CONFIG):
    """``runs``: {(seed, color gap, method): unseen class values}, all at SIZE_GAP."""
    seeds = sorted({seed for seed, _, _ in runs})
    runs = {(seed, gap, SIZE_GAP, method): v for (seed, gap, method), v in runs.items()}
    grid = {"seed": seeds, "color_gap": COLOR_GAPS, "size_gap": [SIZE_GAP]}
    return grid_study(runs, grid, list(methods), config)


def underspecification_study(times):
    """``times``: {(seed, masking ratio): first step at the threshold or None}."""
    grid = {"seed": sorted({s for s, _ in times}), "mask_ratio": sorted({r for _, r in times})}
    runs = {(seed, ratio, "naive"): reaching(step) for (seed, ratio), step in times.items()}
    return grid_study(runs, grid, ["naive"], {})


def naive_times(times):
    """{(seed, color gap): learning time} -> naive runs of the signal study."""
    return {(seed, gap, "naive"): reaching(step) for (seed, gap), step in times.items()}


# ----------------------------------------------------------------------------- claim 1


def test_spearman_ranks_ties_by_their_mean():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 3], [0, 0, 5]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(spearman([1, 2, 3], [4, 4, 4]))


# seed 0 / seed 1 learning times at color gaps 0.1, 0.2, 0.4
RISING = {(0, 0.1): None, (1, 0.1): 800, (0, 0.2): 400, (1, 0.2): 400, (0, 0.4): 100}
RISING[(1, 0.4)] = 200


def test_speed_passes_when_mean_speed_rises_with_the_color_gap():
    claim = judge_speed(signal_study(naive_times(RISING)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == PASS and claim["value"] == pytest.approx(1.0)
    # never reached counts as speed 0: (0 + 1/800) / 2 at the weakest gap
    assert claim["data"]["mean_speed"] == pytest.approx([1 / 1600, 1 / 400, 0.0075])
    assert claim["data"]["runs_reached"] == [1, 2, 2] and claim["data"]["strictly_increasing"]


def test_speed_fails_when_a_stronger_gap_is_slower():
    times = dict(RISING) | {(0, 0.2): 100, (1, 0.2): 200, (0, 0.4): 400, (1, 0.4): 400}
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == FAIL and claim["value"] == pytest.approx(0.5)
    assert not claim["data"]["strictly_increasing"]


def test_speed_with_tied_levels_fails_the_strict_check_but_not_the_rank_correlation():
    times = dict(RISING) | {(1, 0.1): None, (0, 0.2): None, (1, 0.2): None}
    study = signal_study(naive_times(times))
    strict = judge_speed(study, CLAIMS_CFG["speed"])
    assert strict["outcome"] == FAIL and strict["value"] == pytest.approx(np.sqrt(3) / 2)
    loose = judge_speed(study, CLAIMS_CFG["speed"] | {"strictly_increasing": False})
    assert loose["outcome"] == PASS and loose["value"] == pytest.approx(np.sqrt(3) / 2)


def test_speed_is_not_evaluated_with_fewer_levels_than_asked():
    times = {key: step for key, step in RISING.items() if key[1] != 0.4}  # 0.4 not run
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == NOT_EVALUATED and claim["value"] is None
    assert "2 level(s)" in claim["detail"] and "claims.speed.min_levels" in claim["detail"]


def test_speed_fails_when_nothing_is_ever_learned():
    times = {key: None for key in RISING}
    claim = judge_speed(signal_study(naive_times(times)), CLAIMS_CFG["speed"])
    assert claim["outcome"] == FAIL and claim["value"] is None
    assert "same at every level" in claim["detail"]


# ----------------------------------------------------------------------------- claim 2
# Both reach the threshold at step 800; before it, the weak gap's nearest approach is to
# 01 at step 200 (0.05, 0.9), the strong gap's to 10 at step 200 (0.9, 0.1).
TO_RED_SMALL = [(0.2, 0.8), (0.05, 0.9), (0.5, 0.95), (0.9, 0.95)]
TO_BLUE_LARGE = [(0.8, 0.2), (0.9, 0.1), (0.95, 0.5), (0.95, 0.9)]
STRAIGHT = [(0.5, 0.5), (0.7, 0.7), (0.85, 0.85), (0.95, 0.95)]


def paths_study(weak, strong):
    runs = {}
    for seed in (0, 1):
        runs |= {(seed, 0.1, "naive"): weak, (seed, 0.4, "naive"): strong}
        runs[(seed, 0.2, "naive")] = reaching(400)
    return signal_study(runs)


def test_memorization_passes_when_weak_and_strong_gaps_pull_to_their_corners():
    claim = judge_memorization(paths_study(TO_RED_SMALL, TO_BLUE_LARGE), CLAIMS_CFG["memorization"])
    weak_margin = np.hypot(0.95, 0.9) - np.hypot(0.05, 0.1)
    strong_margin = np.hypot(0.9, 0.9) - np.hypot(0.1, 0.1)
    assert claim["outcome"] == PASS
    assert claim["value"] == pytest.approx(min(weak_margin, strong_margin))
    weakest, strongest = claim["data"]["weakest"], claim["data"]["strongest"]
    assert (weakest["color_gap"], weakest["pulled_to"], weakest["turn_step"]) == (0.1, "01", 200)
    assert (strongest["color_gap"], strongest["pulled_to"]) == (0.4, "10")
    assert weakest["reached_at"] == 800 and weakest["margin"] == pytest.approx(weak_margin)


def test_memorization_fails_when_the_strong_gap_is_pulled_to_red_small():
    claim = judge_memorization(paths_study(TO_RED_SMALL, TO_RED_SMALL), CLAIMS_CFG["memorization"])
    assert claim["outcome"] == FAIL
    assert claim["value"] == pytest.approx(-(np.hypot(0.95, 0.9) - np.hypot(0.05, 0.1)))


def test_memorization_fails_without_a_pull_and_says_so():
    claim = judge_memorization(paths_study(STRAIGHT, TO_BLUE_LARGE), CLAIMS_CFG["memorization"])
    assert claim["outcome"] == FAIL and claim["value"] is None
    assert claim["data"]["weakest"]["pulled_to"] is None
    assert "never nearer 01 or 10 than 11" in claim["detail"]


def test_memorization_only_looks_before_the_threshold():
    # reached at step 200 already: only step 100, at (0.5, 0.5), is before it: no pull
    early = [(0.5, 0.5), (0.9, 0.95), (0.05, 0.9), (0.9, 0.95)]
    claim = judge_memorization(paths_study(early, TO_BLUE_LARGE), CLAIMS_CFG["memorization"])
    assert claim["data"]["weakest"]["reached_at"] == 200
    assert claim["data"]["weakest"]["pulled_to"] is None and claim["outcome"] == FAIL


def test_memorization_is_not_evaluated_with_one_level():
    study = signal_study({(0, 0.1, "naive"): TO_RED_SMALL})
    claim = judge_memorization(study, CLAIMS_CFG["memorization"])
    assert claim["outcome"] == NOT_EVALUATED and "1 level(s)" in claim["detail"]


# ----------------------------------------------------------------------------- claim 3
# (seed, color gap): first step at the threshold of naive, overprompt, intervention
LEADS = {
    (0, 0.1): (800, 200, 400),  # lead 600
    (1, 0.1): (None, None, 400),  # never = 801: lead 401
    (0, 0.2): (200, 200, None),  # lead 0
    (1, 0.2): (100, 200, 400),  # behind: -100
}


def methods_study(times, methods):
    runs = {
        (seed, gap, method): reaching(step)
        for (seed, gap), steps in times.items()
        for method, step in zip(methods, steps)
    }
    return signal_study(runs, methods=methods)


def test_hidden_passes_when_half_the_runs_are_earlier_and_the_median_lead_is_positive():
    study = methods_study(LEADS, ("naive", "overprompt", "intervention"))
    claim = judge_hidden(study, CLAIMS_CFG["hidden"])
    assert claim["outcome"] == PASS and claim["value"] == 0.5
    assert claim["data"]["median_difference"] == 200.5 and claim["data"]["runs"] == 4


def test_hidden_fails_when_fewer_runs_are_earlier():
    times = LEADS | {(1, 0.1): (None, None, None)}
    claim = judge_hidden(
        methods_study(times, ("naive", "overprompt", "intervention")), CLAIMS_CFG["hidden"]
    )
    assert claim["outcome"] == FAIL and claim["value"] == 0.25
    assert claim["data"]["median_difference"] == 0


def test_hidden_uses_the_eliciting_methods_the_study_holds():
    times = {key: steps[:2] for key, steps in LEADS.items()}  # overprompting alone
    claim = judge_hidden(methods_study(times, ("naive", "overprompt")), CLAIMS_CFG["hidden"])
    assert claim["data"]["methods"] == ["overprompt"] and claim["value"] == 0.25
    assert claim["outcome"] == FAIL


def test_hidden_is_not_evaluated_without_an_eliciting_method():
    study = methods_study({(0, 0.1): (800, 800)}, ("naive", "patched_final"))
    claim = judge_hidden(study, CLAIMS_CFG["hidden"])
    assert claim["outcome"] == NOT_EVALUATED and "intervention" in claim["detail"]


# ----------------------------------------------------------------------------- claim 4


def patching_study(patched_b):
    runs = {
        (0, 0.1, "naive"): reaching(800),
        (0, 0.1, "patched_final"): reaching(200),  # rescued at steps 200 and 400
        (1, 0.1, "naive"): reaching(None),
        (1, 0.1, "patched_final"): patched_b,
    }
    return signal_study(runs, methods=("naive", "patched_final"))


def test_patching_passes_when_half_the_runs_are_rescued_before_the_last_checkpoint():
    # run 2 is rescued only at the last checkpoint, which does not count
    claim = judge_patching(patching_study(reaching(800)), CLAIMS_CFG["patching"])
    assert claim["outcome"] == PASS and claim["value"] == 0.5
    assert claim["data"] == {"runs": 2, "rescued_checkpoints": 2}


def test_patching_fails_below_the_fraction_and_ignores_missing_values():
    study = patching_study([np.nan, np.nan, np.nan, 0.9])
    claim = judge_patching(study, CLAIMS_CFG["patching"] | {"min_fraction": 0.75})
    assert claim["outcome"] == FAIL and claim["value"] == 0.5


def test_patching_compares_the_smoothed_accuracies():
    # One checkpoint where patching beats naive by sampling noise alone: a rescue as
    # measured, none once both curves are smoothed as the learning times are.
    runs = {
        (0, 0.1, "naive"): [0.1, 0.1, 0.1, 0.1],
        (0, 0.1, "patched_final"): [0.1, 0.85, 0.1, 0.1],
    }
    study = signal_study(runs, methods=("naive", "patched_final"))
    assert judge_patching(study, CLAIMS_CFG["patching"])["value"] == 1.0
    study["learning_time"].attrs["sigma_checkpoints"] = 1.0
    claim = judge_patching(study, CLAIMS_CFG["patching"])
    assert claim["value"] == 0.0 and claim["outcome"] == FAIL


def test_patching_is_not_evaluated_without_the_patched_method():
    study = methods_study({(0, 0.1): (800, 800)}, ("naive", "overprompt"))
    claim = judge_patching(study, CLAIMS_CFG["patching"])
    assert claim["outcome"] == NOT_EVALUATED and "patching.donors" in claim["detail"]


# ----------------------------------------------------------------------------- claim 5


def test_underspecification_passes_when_masking_delays_learning():
    times = {(0, 0.0): 100, (1, 0.0): 200, (0, 0.5): 200, (1, 0.5): 400}
    times |= {(0, 1.0): None, (1, 1.0): 800}  # never = 801
    claim = judge_underspecification(
        underspecification_study(times), CLAIMS_CFG["underspecification"]
    )
    assert claim["outcome"] == PASS and claim["value"] == 800.5 - 150
    assert claim["data"]["mean_learning_time"] == [150, 300, 800.5]
    assert claim["data"]["mask_ratio"] == [0.0, 0.5, 1.0]


def test_underspecification_fails_when_the_mean_time_falls_with_masking():
    times = {(0, 0.0): 100, (1, 0.0): 200, (0, 0.5): 800, (1, 0.5): 800}
    times |= {(0, 1.0): 400, (1, 1.0): 400}
    claim = judge_underspecification(
        underspecification_study(times), CLAIMS_CFG["underspecification"]
    )
    assert claim["outcome"] == FAIL and claim["value"] == 250
    assert not claim["data"]["non_decreasing"]


def test_underspecification_is_not_evaluated_without_the_study_or_with_one_ratio():
    claim = judge_underspecification(None, CLAIMS_CFG["underspecification"], "not configured")
    assert claim["outcome"] == NOT_EVALUATED and claim["detail"] == "not configured"
    study = underspecification_study({(0, 0.5): 100, (1, 0.5): 200})
    claim = judge_underspecification(study, CLAIMS_CFG["underspecification"])
    assert claim["outcome"] == NOT_EVALUATED and "1 masking ratio(s)" in claim["detail"]


# ----------------------------------------------------------------------------- the files


def full_study():
    runs = {}
    for (seed, gap), step in RISING.items():
        runs[(seed, gap, "naive")] = reaching(step)
        for method in ALL_METHODS[1:]:
            runs[(seed, gap, method)] = reaching(100)
    return signal_study(runs)


def test_every_claim_is_judged_with_its_fields():
    claims = evaluate_claims(full_study(), CLAIMS_CFG)
    assert [c["number"] for c in claims.values()] == [1, 2, 3, 4, 5]
    for claim in claims.values():
        assert set(claim) == {
            "number",
            "statement",
            "statistic",
            "pass_if",
            "threshold",
            "value",
            "outcome",
            "detail",
            "data",
        }
        assert claim["outcome"] in (PASS, FAIL, NOT_EVALUATED) and claim["detail"]
    assert claims["underspecification"]["outcome"] == NOT_EVALUATED


def test_claims_json_is_the_same_for_the_same_input_and_carries_no_clock(tmp_path):
    study_path = tmp_path / "study.nc"
    save_dataset_nc(full_study(), study_path)
    config = load_config(REPO / "config.yaml")
    texts = []
    for name in ("a", "b"):
        write_claims(tmp_path / f"{name}.json", tmp_path / f"{name}.html", config, study_path)
        texts.append((tmp_path / f"{name}.json").read_text())
    assert texts[0] == texts[1]
    record = json.loads(texts[0])
    assert set(record["provenance"]) == set(PROVENANCE_KEYS)  # no time stamp among them
    assert record["inputs"] == {"signal": str(study_path), "underspecification": None}
    table = (tmp_path / "a.html").read_text()
    assert table.count("<tr>") == 6 and "not evaluated" in table and "pass" in table


def test_claims_command_reads_both_studies_and_prints_the_table(tmp_path, capsys):
    save_dataset_nc(full_study(), tmp_path / "signal.nc")
    times = {(0, 0.0): 100, (0, 1.0): 400}
    save_dataset_nc(underspecification_study(times), tmp_path / "under.nc")
    settings = json.dumps(load_config(REPO / "config.yaml"))
    out = tmp_path / "claims.json"
    args = ["claims", "--settings", settings, "--study", str(tmp_path / "signal.nc")]
    args += ["--underspecification", str(tmp_path / "under.nc")]
    assert cli.main(args + ["--out", str(out), "--table", str(tmp_path / "claims.html")]) == 0
    claim = json.loads(out.read_text())["claims"]["underspecification"]
    assert claim["outcome"] == PASS and claim["value"] == 300
    capsys.readouterr()
    assert cli.main(["claims-table", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 5 and lines[0].startswith("| # | claim | statistic | value |")
    cells = [cell.strip() for cell in lines[-1].strip("|").split(" | ")]
    assert cells[0] == "5" and cells[3] == "300" and cells[5] == PASS


def test_a_study_that_does_not_name_its_color_sweep_is_refused():
    study = signal_study(naive_times(RISING), config={"figures": {}})
    with pytest.raises(ConceptspaceError, match="rerun `snakemake`"):
        judge_speed(study, CLAIMS_CFG["speed"])


@pytest.mark.workflow
def test_smoke_run_judges_every_claim_and_reports_the_table(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    record = json.loads((results / "claims.json").read_text())
    assert sorted(c["number"] for c in record["claims"].values()) == [1, 2, 3, 4, 5]
    assert all(c["outcome"] in (PASS, FAIL, NOT_EVALUATED) for c in record["claims"].values())
    assert record["inputs"]["signal"] == "results/signal/study.nc"
    report = workdir / "claims_report.html"
    snakemake(workdir, "--report", str(report), configs=(REPO / "config.yaml", SMOKE))
    html = report.read_text()
    assert "Claims table: the paper's five claims" in html  # the caption
    # the table itself is embedded as a data URI, byte for byte
    embedded = re.search(r'"results/claims.html": \{.*?"data_uri": "[^,]+,([^"]+)"', html, re.S)
    assert base64.b64decode(embedded[1]) == (results / "claims.html").read_bytes()


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    # `conceptspace claims-table ... | head -1`: far more than a pipe buffer of output
    # (64 KiB) after head has gone; the command must end quietly, as Unix tools do.
    save_dataset_nc(full_study(), tmp_path / "study.nc")
    config = load_config(REPO / "config.yaml")
    write_claims(tmp_path / "claims.json", tmp_path / "claims.html", config, tmp_path / "study.nc")
    copies = " ".join([str(tmp_path / "claims.json")] * 200)
    result = subprocess.run(
        f"{sys.executable} -m conceptspace info {copies} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(tmp_path / "claims.json")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
