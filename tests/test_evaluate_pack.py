"""The pack evaluator: the runs of a pack evaluated together, their prompts drawn in one
batched sampler call per step. Each run keeps its own noise, so a run's evaluations do
not depend on its pack: bit for bit when the runs' networks go one after another (a
CPU's way), to float tolerance when they go as one vmapped call (a GPU's way)."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from conceptspace.checkpoints import checkpoint_path
from conceptspace.concepts import Signal
from conceptspace.evaluate import (
    PackMember,
    RunEvaluation,
    evaluate_pack,
    evaluate_run,
    rows_per_run,
)
from conceptspace.io import ConceptspaceError
from conceptspace.stacked import StackedNetworks
from conceptspace.probe import train_probe
from conceptspace.render import render_training_set, save_dataset
from conceptspace.train import train_run
from conceptspace.vdm import sample_runs

from conftest import TINY_DATA, TINY_MODEL
from test_evaluate import EVALUATION, PROBE, TRAINING

# three runs of one study: two seeds at one signal level, a third at another
RUNS = [(Signal(0.4, 0.4), 5), (Signal(0.4, 0.4), 6), (Signal(0.6, 0.4), 7)]
STEPS = (2, 4)
# What a run's scores may differ by in a vmapped pack: grouped convolutions and batched
# matmuls sum in another order (float32 rounding, ~1e-6 on an image), and the probe's
# probabilities move with the pixels.
P_TARGET_ATOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """Three tiny trained runs (checkpoints at steps 2 and 4) and a probe of both levels."""
    root = tmp_path_factory.mktemp("evaluate-pack")
    run_dirs = []
    for index, (signal, seed) in enumerate(RUNS):
        dataset = root / f"train{index}.npz"
        save_dataset(dataset, render_training_set(TINY_DATA, signal, seed=seed), {})
        run_dir = root / f"run{index}"
        train_run(
            TINY_MODEL, TRAINING, dataset, seed, run_dir, root / f"m{index}.json", device="cpu"
        )
        run_dirs.append(run_dir)
    signals = list({signal for signal, _ in RUNS})
    train_probe(TINY_DATA, PROBE, signals, 0, root / "probe.pt", root / "probe.json", device="cpu")
    return run_dirs, root / "probe.pt"


def members(pack, folder, evaluation=EVALUATION, runs=None):
    run_dirs, probe = pack
    chosen = range(len(RUNS)) if runs is None else runs
    return [
        PackMember(
            RunEvaluation.on(probe, evaluation, 0.0, *RUNS[k], "cpu", 1, None),
            [checkpoint_path(run_dirs[k], step) for step in STEPS],
            folder / f"eval{k}",
        )
        for k in chosen
    ]


def alone(pack, k, folder):
    run_dirs, probe = pack
    signal, seed = RUNS[k]
    return evaluate_run(
        [checkpoint_path(run_dirs[k], step) for step in STEPS],
        probe,
        evaluation_cfg=EVALUATION,
        min_accuracy=0.0,
        signal=signal,
        seed=seed,
        eval_dir=folder / f"alone{k}",
        device="cpu",
        threads=1,
    )


def read(path):
    with xr.open_dataset(path) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def evaluated_alone(pack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("alone")
    return [alone(pack, k, folder) for k in range(len(RUNS))]


def test_the_stacked_networks_sample_each_run_as_it_samples_alone(pack):
    run_dirs, _ = pack
    from conceptspace.checkpoints import load_checkpoint

    vdms = [load_checkpoint(checkpoint_path(d, 4))[0] for d in run_dirs]
    h = torch.rand(3, vdms[0].net.h_dim)

    def generators(k):
        return [torch.Generator().manual_seed(10 * k + i) for i in range(3)]

    embeddings = [vdm.net.embed(h) for vdm in vdms]
    lone = [vdm.sample(None, 4, generators(k), embeddings[k]) for k, vdm in enumerate(vdms)]
    stacked = sample_runs(
        vdms,
        4,
        [generators(k) for k in range(3)],
        embeddings,
        StackedNetworks([vdm.net for vdm in vdms]),
    )
    for one, together in zip(lone, stacked):
        torch.testing.assert_close(together, one, rtol=0, atol=1e-5)
    # the premise: the runs' networks differ, so stacking them in the wrong order would show
    first, second = (dict(vdm.net.named_parameters()) for vdm in vdms[:2])
    assert any(not torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("vmapped", [False, True])
def test_each_run_of_a_pack_is_evaluated_as_alone(pack, evaluated_alone, tmp_path, vmapped):
    together = evaluate_pack(members(pack, tmp_path), vmapped=vmapped)
    for k, (packed, lone) in enumerate(zip(together, evaluated_alone)):
        assert [p.name for p in packed] == ["step_000002.nc", "step_000004.nc"]
        for packed_file, lone_file in zip(packed, lone):
            a, b = read(packed_file), read(lone_file)
            assert a.attrs["seed"] == RUNS[k][1] and a.attrs["color_gap"] == RUNS[k][0].color_gap
            if vmapped:
                np.testing.assert_allclose(
                    a["p_target"].values, b["p_target"].values, rtol=0, atol=P_TARGET_ATOL
                )
            else:  # one after another: the lone run's computation, bit for bit
                np.testing.assert_array_equal(a["p_target"].values, b["p_target"].values)
            np.testing.assert_array_equal(a["valid"].values, b["valid"].values)
    # the runs' evaluations differ from each other: a mix-up of runs would show
    first, second = read(together[0][1]), read(together[1][1])
    assert not np.allclose(first["p_target"].values, second["p_target"].values)


def test_a_run_with_fewer_checkpoints_is_evaluated_at_those_it_has(pack, tmp_path):
    # a run stopped early (diverged) has only its first checkpoints
    chosen = members(pack, tmp_path)
    short = PackMember(chosen[1].run, chosen[1].checkpoints[:1], chosen[1].eval_dir)
    files = evaluate_pack([chosen[0], short, chosen[2]])
    assert [len(f) for f in files] == [2, 1, 2]
    assert sorted(p.name for p in chosen[1].eval_dir.iterdir()) == ["step_000002.nc"]


def test_a_killed_pack_evaluation_resumes_where_it_stopped(pack, tmp_path):
    first = evaluate_pack(members(pack, tmp_path))
    stamps = {p: p.stat().st_mtime_ns for files in first for p in files}
    lost = first[2][1]
    lost.unlink()  # the job was killed before this run's last file
    again = evaluate_pack(members(pack, tmp_path))
    assert again == first
    for path, stamp in stamps.items():
        if path != lost:
            assert path.stat().st_mtime_ns == stamp, f"{path} was evaluated again"
    assert lost.exists()


def test_runs_of_other_evaluation_settings_are_refused_as_one_pack(pack, tmp_path):
    other = {**EVALUATION, "samples_per_prompt": EVALUATION["samples_per_prompt"] + 1}
    mixed = members(pack, tmp_path, runs=[0]) + members(pack, tmp_path, other, runs=[1])
    with pytest.raises(ConceptspaceError, match="packs of their own"):
        evaluate_pack(mixed)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_runs_fields_that_are_not_json_or_lack_a_seed_are_named(pack, tmp_path, caplog):
    from conceptspace.cli import main

    run_dirs, probe = pack
    settings = json.dumps({"evaluation": EVALUATION, "probe": PROBE})
    for fields, named in (("{seed: 5", "not valid JSON"), ('{"color_gap": 0.4}', "name no seed")):
        caplog.clear()
        code = main(
            ["evaluate-pack", "--settings", settings, "--probe", str(probe)]
            + ["--run", "run0", str(run_dirs[0]), fields, "--steps", "2"]
            + ["--out", str(tmp_path / "evaluated.json"), "--device", "cpu"]
        )
        assert code == 1 and "--run run0: its fields" in caplog.text and named in caplog.text
    assert not (tmp_path / "evaluated.json").exists()


@pytest.mark.parametrize(
    "batch_size, runs, vmapped, rows",
    [
        (512, 4, True, 128),  # a vmapped pack shares the call's rows
        (512, 4, False, 512),  # in a loop each run's call has them all
        (512, 1, True, 512),
        (3, 4, True, 1),  # never fewer than one row a run
    ],
)
def test_a_vmapped_packs_runs_share_a_sampler_calls_rows(batch_size, runs, vmapped, rows):
    assert rows_per_run(batch_size, runs, vmapped) == rows
