"""Packs in the workflow (config compute.pack): formed from each study's run table, one
job each, visible in a dry run, resources scaled with their size; and the smoke preset's
study and claims the same with packs of four as with one run per job."""

import json
import re

import numpy as np
import pytest
import xarray as xr

from conceptspace.config import load_config
from conceptspace.pack_plan import form_packs, write_run_manifest
from conceptspace.studies import run_table
from conftest import REPO, SMOKE, planned_jobs, snakemake

PACK_SIZE = 4


@pytest.fixture(scope="module")
def pack_overlay(tmp_path_factory):
    path = tmp_path_factory.mktemp("pack") / "pack.yaml"
    path.write_text(f"compute:\n  pack: {PACK_SIZE}\n")
    return path


def smoke_tables():
    return run_table(load_config(REPO / "config.yaml", SMOKE))


# ------------------------------------------------------------------- forming packs


def test_packs_cut_the_run_table_in_order():
    runs = [f"run{i}" for i in range(10)]
    assert form_packs(runs, 4) == {
        "pack000": runs[0:4], "pack001": runs[4:8], "pack002": runs[8:10]
    }  # fmt: skip
    assert form_packs(runs, 1) == {run: [run] for run in runs}  # a pack of one is its run
    assert form_packs(runs, 64) == {"pack000": runs}
    with pytest.raises(ValueError):
        form_packs(runs, 0)


def test_a_runs_manifest_comes_out_of_its_packs(tmp_path):
    from conceptspace.io import ConceptspaceError

    pack = tmp_path / "pack000.json"
    pack.write_text(json.dumps({"runs": {"a": {"final_step": 60}, "b": {"final_step": 60}}}))
    write_run_manifest(pack, "b", tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text()) == {"final_step": 60}
    with pytest.raises(ConceptspaceError, match="holds no run c .*compute.pack"):
        write_run_manifest(pack, "c", tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


# ------------------------------------------------------------------- planning


def train_jobs(output: str) -> list[dict]:
    """Each planned train_vdm job of a dry run: its inputs, pack and resources."""
    jobs = []
    for block in output.split("rule train_vdm:")[1:]:
        fields = dict(re.findall(r"^\s+(input|wildcards|resources): (.*)$", block, re.M)[:3])
        jobs.append(
            {
                "inputs": fields["input"].split(", "),
                "wildcards": dict(w.split("=") for w in fields["wildcards"].split(", ")),
                "resources": dict(r.split("=", 1) for r in fields["resources"].split(", ")),
            }
        )
    return jobs


@pytest.mark.workflow
def test_a_dry_run_shows_which_runs_share_a_pack(tmp_path, pack_overlay):
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", SMOKE, pack_overlay))
    tables = smoke_tables()
    expected = {
        (study, pack): runs
        for study, table in tables.items()
        for pack, runs in form_packs(list(table), PACK_SIZE).items()
    }
    jobs = train_jobs(result.stdout)
    planned = {}
    for job in jobs:
        study, pack = job["wildcards"]["study"], job["wildcards"]["pack"]
        # the pack's runs are its inputs, their training sets
        planned[study, pack] = [re.fullmatch(r".*/data/(.+)\.npz", i)[1] for i in job["inputs"]]
        size = len(planned[study, pack])
        assert int(job["resources"]["mem_mb"]) == 8000 + 1000 * (size - 1)
        assert job["resources"]["gres"] == "gpu:1"  # one GPU per pack, whatever its size
    assert planned == expected
    assert any(len(runs) == PACK_SIZE for runs in planned.values())
    # runtime: the smoke preset's 30 min per run, times the runs of the pack
    runtimes = {len(planned[j["wildcards"]["study"], j["wildcards"]["pack"]]): j for j in jobs}
    for size, job in runtimes.items():
        assert int(job["resources"]["runtime"]) == 30 * size
    # every run is evaluated from its own manifest, handed out from its pack's
    counts = planned_jobs(
        snakemake(
            tmp_path, "-n", "--quiet", "rules", configs=(REPO / "config.yaml", SMOKE, pack_overlay)
        ).stdout
    )
    runs = sum(len(table) for table in tables.values())
    assert counts["run_manifest"] == counts["gather_run"] == runs
    assert counts["train_vdm"] == counts["evaluate_pack"] == len(expected) < runs


@pytest.mark.workflow
def test_asking_for_one_runs_manifest_trains_only_its_pack(tmp_path, pack_overlay):
    table = list(smoke_tables()["signal"])
    run = table[-1]  # in the study's last pack
    target = f"results/signal/runs/{run}/manifest.json"
    result = snakemake(tmp_path, target, "-n", configs=(REPO / "config.yaml", SMOKE, pack_overlay))
    (job,) = train_jobs(result.stdout)
    packs = form_packs(table, PACK_SIZE)
    (pack,) = [name for name, runs in packs.items() if run in runs]
    assert job["wildcards"]["pack"] == pack
    assert len(job["inputs"]) == len(packs[pack])


# ------------------------------------------------------------------- the smoke study

# What packing may change in the smoke preset's results. A run's weights in a pack of four
# differ from its weights alone by float32 rounding (tests/test_pack.py: within 1e-5), and
# so do the probe's probabilities of its samples (measured: at most 1.2e-5). A sample whose
# validity or probe verdict sits on an edge could flip, moving a summary over samples by
# one sample's weight (1 / samples_per_prompt). (At the smoke preset's 60 steps no sample
# is valid, so its accuracies are all 0: the per-sample probabilities carry the check.)
CLOSE = 1e-4


def assert_same_results(alone, packed, one_sample):
    """The results folders of the smoke preset without and with packs agree."""
    for study in ("signal", "underspecification"):
        with (
            xr.open_dataset(alone / study / "study.nc") as a,
            xr.open_dataset(packed / study / "study.nc") as p,
        ):
            for name in ("accuracy", "valid_fraction", "concept_prob", "learning_time"):
                x, y = a[name].values, p[name].values
                np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
                gap = np.abs(x - y)[~np.isnan(x)]
                assert np.all(gap <= one_sample + 1e-6), (study, name)
                assert np.mean(gap <= CLOSE) >= 0.9 if gap.size else True, (study, name)
        for run in (alone / study / "runs").iterdir():
            with (
                xr.open_dataset(run / "trajectory.nc") as a,
                xr.open_dataset(packed / study / "runs" / run.name / "trajectory.nc") as p,
            ):
                x, y = a["p_target"].values, p["p_target"].values
                np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
                np.testing.assert_allclose(y, x, rtol=0, atol=CLOSE, err_msg=run.name)
            manifests = [
                json.loads((r / "manifest.json").read_text())
                for r in (run, packed / study / "runs" / run.name)
            ]
            for x, y in zip(*(m["checkpoints"] for m in manifests)):
                assert y["validation_bpd"] == pytest.approx(x["validation_bpd"], rel=1e-5)
    claims = [
        json.loads((folder / "claims.json").read_text())["claims"] for folder in (alone, packed)
    ]
    assert claims[0].keys() == claims[1].keys()
    for key, claim in claims[0].items():
        assert claims[1][key]["outcome"] == claim["outcome"], key


@pytest.mark.workflow
def test_the_smoke_study_and_claims_are_the_same_with_packs_of_four(
    smoke_run, tmp_path, pack_overlay
):
    alone_dir, config = smoke_run
    snakemake(tmp_path, "--cores", "2", configs=(REPO / "config.yaml", SMOKE, pack_overlay))
    packs = list((tmp_path / "results" / "signal" / "packs").glob("*.json"))
    assert {p.name for p in packs} == {"pack000.json", "pack001.json"}  # 6 runs in packs of 4
    one_sample = 1 / config["evaluation"]["samples_per_prompt"]
    assert_same_results(alone_dir / "results", tmp_path / "results", one_sample)
