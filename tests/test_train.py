"""Training: the checkpoint schedule, checkpoints and manifest, exact resumes (in process
and after a real SIGKILL), refusals (changed config, NaN loss) and checkpoint loading."""

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import do_what_it_says, rerun_snakemake, workflow_run
from conceptspace.concepts import Signal
from conceptspace.io import ConceptspaceError
from conceptspace.render import render_training_set, save_dataset
from conceptspace.checkpoints import checkpoint_path, load_checkpoint
from conceptspace.train import checkpoint_steps, train_run

from conftest import TINY_DATA, TINY_MODEL

TRAINING = {
    "steps": 12,
    "batch_size": 4,
    "lr": 0.001,
    "weight_decay": 0.01,
    "grad_clip": 0.01,
    "checkpoints": {"count": 3, "first": 4, "last": 12},
    "precision": "fp32",
    "log_every": 4,
}
SEED = 3

# trainings compared bit for bit, and redone (conftest.rerun_snakemake), at one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_training(**changes):
    return {**TRAINING, **changes}


def final_state(run_dir, steps=TRAINING["steps"]):
    return torch.load(checkpoint_path(run_dir, steps), weights_only=True)["model"]


def assert_same_weights(actual, expected):
    assert actual.keys() == expected.keys()
    different = [name for name in expected if not torch.equal(actual[name], expected[name])]
    assert not different, f"tensors differ: {different}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.npz"
    save_dataset(path, render_training_set(TINY_DATA, Signal(0.4, 0.4), seed=0), {})
    return path


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted run, in this process: (run_dir, manifest)."""
    root = tmp_path_factory.mktemp("reference")
    manifest = train_run(TINY_MODEL, TRAINING, dataset, SEED, root / "run", root / "manifest.json")
    return root / "run", manifest


def start_process(script: str, args: dict) -> subprocess.Popen:
    """``python -c script`` with ``args`` as JSON in argv[1]; stdout and stderr together."""
    return subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_once_written(process: subprocess.Popen, path, timeout: float = 60) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists (it must not finish first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def copy_run(run_dir, tmp_path, keep_steps):
    """A copy of a finished run holding only the checkpoints of ``keep_steps``."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for path in (copy / "checkpoints").glob("step_*.pt"):
        if int(path.stem[5:]) not in keep_steps:
            path.unlink()
    return copy


# ------------------------------------------------------------------- the schedule


def test_checkpoint_steps_are_spaced_quadratically():
    steps = checkpoint_steps({"checkpoints": {"count": 60, "first": 500, "last": 20000}})
    assert len(steps) == 60 and steps[0] == 500 and steps[-1] == 20000
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert all(gap > 0 for gap in gaps)
    # Evenly spaced in sqrt(step): gaps grow steadily, late ones far wider than early ones.
    assert all(later >= earlier for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[-1] > 5 * gaps[0]
    roots = [math.sqrt(s) for s in steps]
    root_gaps = [b - a for a, b in zip(roots, roots[1:])]
    assert max(root_gaps) - min(root_gaps) < 0.05

    small = checkpoint_steps(TRAINING)
    assert small == [4, 7, 12]


# ------------------------------------------------------------------- a run's files


def test_run_writes_checkpoints_sidecars_and_manifest(reference, dataset):
    run_dir, manifest = reference
    scheduled = checkpoint_steps(TRAINING)
    assert [entry["step"] for entry in manifest["checkpoints"]] == scheduled
    assert json.loads((run_dir.parent / "manifest.json").read_text())["final_step"] == 12
    for entry in manifest["checkpoints"]:
        path = checkpoint_path(run_dir, entry["step"])
        assert entry["path"] == str(path)
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["step"] == entry["step"]
        assert {"model", "rng", "config", "provenance"} <= checkpoint.keys()
        # the optimizer state, which only a resume reads, in the two latest only
        assert ("optimizer" in checkpoint) == (entry["step"] in scheduled[-2:])
        assert isinstance(checkpoint["rng"]["torch"], torch.Tensor)
        assert checkpoint["config"]["seed"] == SEED
        assert checkpoint["config"]["training"] == TRAINING
        assert checkpoint["config"]["dataset"]["path"] == str(dataset)
        assert checkpoint["config"]["h_dim"] == 4 and checkpoint["config"]["image_size"] == 8
        assert len(checkpoint["provenance"]["config_hash"]) == 16
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["step"] == entry["step"]
        assert sidecar["metrics"]["train_loss"] == entry["train_loss"]
        assert math.isfinite(entry["train_loss"]) and entry["train_loss"] > 0
        assert math.isfinite(entry["validation_bpd"]) and entry["validation_bpd"] > 0
    assert manifest["final_train_loss"] == manifest["checkpoints"][-1]["train_loss"]
    assert manifest["config"]["model"] == TINY_MODEL
    assert manifest["provenance"]["seed"] == SEED
    # Training moved the weights away from their initialisation.
    first, last = (torch.load(checkpoint_path(run_dir, s))["model"] for s in (4, 12))
    assert any(not torch.equal(first[name], last[name]) for name in last)


def test_validation_elbo_has_fixed_noise_and_leaves_training_rng_alone(reference, dataset):
    from conceptspace.render import load_dataset
    from conceptspace.train import VALIDATION_IMAGES, _validation_elbo

    run_dir, manifest = reference
    vdm, _ = load_checkpoint(checkpoint_path(run_dir, 12))
    arrays, _ = load_dataset(dataset)
    held_out = torch.from_numpy(arrays["is_validation"])
    images = torch.from_numpy(arrays["images"])[held_out][:VALIDATION_IMAGES]
    h = torch.from_numpy(arrays["h"])[held_out][:VALIDATION_IMAGES]
    rng = torch.get_rng_state()
    first = _validation_elbo(vdm, images, h, 4, SEED)
    second = _validation_elbo(vdm, images, h, 4, SEED)
    assert torch.equal(torch.get_rng_state(), rng)
    assert first == second
    assert first["loss"] == pytest.approx(manifest["final_validation_bpd"], rel=1e-4)
    assert _validation_elbo(vdm, images, h, 4, SEED + 1)["loss"] != first["loss"]


# ------------------------------------------------------------------- resuming


def test_resume_in_process_matches_an_uninterrupted_run(reference, dataset, tmp_path, caplog):
    run_dir, _ = reference
    # killed after step 7 (step 4 no longer holds the optimizer state a resume needs)
    copy = copy_run(run_dir, tmp_path, keep_steps={4, 7})
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_run(TINY_MODEL, TRAINING, dataset, SEED, copy, tmp_path / "manifest.json")
    assert f"resuming from step 7 ({checkpoint_path(copy, 7)})" in caplog.text
    assert_same_weights(final_state(copy, 12), final_state(run_dir, 12))


def test_corrupt_latest_checkpoint_is_skipped_with_a_warning(reference, dataset, tmp_path, caplog):
    run_dir, _ = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4, 7, 12})
    latest = checkpoint_path(copy, 12)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_run(TINY_MODEL, TRAINING, dataset, SEED, copy, tmp_path / "manifest.json")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(latest) in r.getMessage() for r in warnings)
    assert "resuming from step 7" in caplog.text
    assert_same_weights(final_state(copy), final_state(run_dir))


def test_finished_run_only_rewrites_its_manifest(reference, dataset, tmp_path, caplog):
    run_dir, manifest = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4, 7, 12})
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "checkpoints").iterdir()}
    # log_every and the divergence check do not change the weights, so a finished run
    # accepts new values (explode_factor: the check's key in runs written before
    # training.divergence).
    divergence = {"mad_factor": 5, "min_rise": 0.5, "window": 10}
    cosmetic = with_training(log_every=5, divergence=divergence, explode_factor=10)
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        rewritten = train_run(TINY_MODEL, cosmetic, dataset, SEED, copy, tmp_path / "m.json")
    assert "resuming" not in caplog.text
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "checkpoints").iterdir()}
    assert after == before
    assert (tmp_path / "m.json").exists()
    assert [e["train_loss"] for e in rewritten["checkpoints"]] == [
        e["train_loss"] for e in manifest["checkpoints"]
    ]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"training": with_training(lr=0.002)}, "training.lr"),
        ({"model": {**TINY_MODEL, "dropout": 0.0}}, "model.dropout"),
        ({"model": {**TINY_MODEL, "data_range": [0, 1]}}, "model.data_range"),
        ({"model": {**TINY_MODEL, "h_init_fan_in": 11}}, "model.h_init_fan_in"),
        ({"seed": SEED + 1}, "seed"),
    ],
)
def test_resume_with_a_changed_config_is_refused(reference, dataset, tmp_path, change, key):
    run_dir, _ = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4})
    args = {"model": TINY_MODEL, "training": TRAINING, "seed": SEED, **change}
    with pytest.raises(ConceptspaceError) as caught:
        train_run(args["model"], args["training"], dataset, args["seed"], copy, tmp_path / "m.json")
    message = str(caught.value)
    assert key in message and "delete" in message
    assert not (tmp_path / "m.json").exists()
    assert not checkpoint_path(copy, 7).exists()


def test_a_run_older_than_the_model_keys_resumes_under_their_legacy_values(
    reference, dataset, tmp_path, caplog
):
    # TINY_MODEL has neither model.data_range nor model.h_init_fan_in: it stands for runs
    # trained before they existed, on [-1, 1] with PyTorch's default init
    run_dir, _ = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4, 7})
    legacy = {**TINY_MODEL, "data_range": [-1, 1], "h_init_fan_in": None}
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_run(legacy, TRAINING, dataset, SEED, copy, tmp_path / "manifest.json")
    assert "resuming from step 7" in caplog.text
    assert_same_weights(final_state(copy), final_state(run_dir))
    vdm, _ = load_checkpoint(checkpoint_path(run_dir, 12))
    assert (vdm.data_low, vdm.data_high) == (-1.0, 1.0)


def test_a_run_on_the_authors_scale_loads_on_it(dataset, tmp_path):
    model = {**TINY_MODEL, "data_range": [0, 1], "h_init_fan_in": 11}
    train_run(model, TRAINING, dataset, SEED, tmp_path / "run", tmp_path / "manifest.json")
    vdm, metadata = load_checkpoint(checkpoint_path(tmp_path / "run", 12))
    assert (vdm.data_low, vdm.data_high) == (0.0, 1.0)
    assert metadata["config"]["model"] == model


def test_resume_on_another_dataset_is_refused(reference, tmp_path):
    run_dir, _ = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4})
    other = tmp_path / "other.npz"
    save_dataset(other, render_training_set(TINY_DATA, Signal(0.4, 0.4), seed=1), {})
    with pytest.raises(ConceptspaceError, match="dataset.fingerprint"):
        train_run(TINY_MODEL, TRAINING, other, SEED, copy, tmp_path / "m.json")


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(dataset, tmp_path):
    """SIGKILL a real training process mid-run, rerun it, compare with a clean run."""
    training = with_training(
        steps=120, checkpoints={"count": 3, "first": 10, "last": 120}, log_every=40
    )
    script = textwrap.dedent("""
        import json, logging, sys
        import torch
        torch.set_num_threads(1)
        from conceptspace.train import train_run
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        a = json.loads(sys.argv[1])
        train_run(a["model"], a["training"], a["data"], a["seed"], a["run_dir"], a["manifest"],
                  device="cpu", threads=1)
        """)

    def start(name):
        args = {
            "model": TINY_MODEL,
            "training": training,
            "data": str(dataset),
            "seed": SEED,
            "run_dir": str(tmp_path / name),
            "manifest": str(tmp_path / f"{name}.json"),
        }
        return start_process(script, args)

    clean, killed = start("clean"), start("killed")
    kill_once_written(killed, checkpoint_path(tmp_path / "killed", 10))
    assert not (tmp_path / "killed.json").exists(), "the run finished before it was killed"
    assert not checkpoint_path(tmp_path / "killed", 120).exists()

    resumed = start("killed")
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output
    assert "resuming from step" in output
    output = clean.communicate(timeout=120)[0]
    assert clean.returncode == 0, output
    assert_same_weights(final_state(tmp_path / "killed", 120), final_state(tmp_path / "clean", 120))


# ------------------------------------------------------------------- failures and loading


def test_load_checkpoint_round_trips(reference):
    run_dir, _ = reference
    path = checkpoint_path(run_dir, 12)
    vdm, metadata = load_checkpoint(path)
    assert not vdm.training
    assert metadata["step"] == 12 and metadata["config"]["model"] == TINY_MODEL
    assert_same_weights(vdm.state_dict(), torch.load(path, weights_only=True)["model"])
    torch.manual_seed(0)
    terms = vdm.loss(torch.rand(2, 3, 8, 8), torch.rand(2, 4))
    assert torch.isfinite(terms["loss"])


def test_bf16_runs_the_network_in_bfloat16_and_keeps_float32_weights(reference, dataset, tmp_path):
    manifest = train_run(
        TINY_MODEL,
        with_training(precision="bf16"),
        dataset,
        SEED,
        tmp_path / "run",
        tmp_path / "m.json",
    )
    assert math.isfinite(manifest["final_train_loss"])
    weights = final_state(tmp_path / "run")
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    # Autocast really ran: bf16 arithmetic leads to other weights than the fp32 run's.
    fp32 = final_state(reference[0])
    assert any(not torch.equal(weights[name], fp32[name]) for name in fp32)


def test_a_checkpoint_without_optimizer_state_trains_the_run_again(
    reference, dataset, tmp_path, caplog
):
    # Only a run's two latest checkpoints keep the optimizer state; an earlier one left
    # alone (the later ones deleted by hand) cannot be resumed from: the run starts over.
    run_dir, _ = reference
    copy = copy_run(run_dir, tmp_path, keep_steps={4})
    assert "optimizer" not in torch.load(checkpoint_path(copy, 4), weights_only=True)
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_run(TINY_MODEL, TRAINING, dataset, SEED, copy, tmp_path / "manifest.json")
    assert "holds no optimizer state" in caplog.text and "resuming" not in caplog.text
    assert_same_weights(final_state(copy, 12), final_state(run_dir, 12))


# ------------------------------------------------------------------- recovery, done literally


@pytest.mark.parametrize("step, resumed_from", [(12, 7), (7, None), (4, None)])
def test_a_corrupt_checkpoints_fix_done_literally_writes_it_again(
    reference, dataset, tmp_path, caplog, step, resumed_from
):
    # `truncate -s 100` on one checkpoint; evaluation (load_checkpoint) names it and the fix
    run_dir, _ = reference
    study, copy = workflow_run(*reference, tmp_path)
    damaged = checkpoint_path(copy, step)
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(ConceptspaceError, match="truncated or corrupt") as caught:
        load_checkpoint(damaged)
    message = str(caught.value)
    do_what_it_says(message)
    assert not damaged.exists() and not (study / "packs" / "pack000.json").exists()
    assert (study / "packs" / "pack001.json").exists()  # a pack-mate's is left alone
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        rerun_snakemake(study, TINY_MODEL, TRAINING, dataset, SEED)
    if resumed_from is None:  # no earlier checkpoint holds optimizer state: from step 0
        assert "resuming" not in caplog.text and "steps 0 -> 12" in caplog.text
    else:  # and the start line says so (it said "steps 0 -> 12")
        assert f"resuming from step {resumed_from}" in caplog.text
        assert f"steps {resumed_from} -> 12" in caplog.text
    for written in (4, 7, 12):  # every checkpoint the run's, bit for bit
        assert_same_weights(final_state(copy, written), final_state(run_dir, written))
    load_checkpoint(damaged)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["final_step"] == 12 and manifest["checkpoints"][0]["step"] == 4


def test_a_deleted_checkpoints_message_names_the_manifests_whose_deletion_retrains(
    reference, dataset, tmp_path
):
    # the user deleted the checkpoint alone (as the old message said): evaluation now
    # finds it missing, and its fix must not be "rerun training", which plans nothing
    run_dir, _ = reference
    study, copy = workflow_run(*reference, tmp_path)
    checkpoint_path(copy, 12).unlink()
    with pytest.raises(ConceptspaceError, match="does not exist") as caught:
        load_checkpoint(checkpoint_path(copy, 12))
    do_what_it_says(str(caught.value))
    assert not (copy / "manifest.json").exists()
    rerun_snakemake(study, TINY_MODEL, TRAINING, dataset, SEED)
    assert_same_weights(final_state(copy, 12), final_state(run_dir, 12))


def test_another_versions_checkpoint_fix_done_literally_trains_the_run_again(
    reference, dataset, tmp_path, caplog
):
    # a checkpoint whose model no longer matches the code (a renamed layer): the message's
    # command deletes the run and its pack's manifest; snakemake then trains it from step 0
    run_dir, _ = reference
    study, copy = workflow_run(*reference, tmp_path)
    older = checkpoint_path(copy, 12)
    payload = torch.load(older, weights_only=True)
    payload["model"] = {f"old.{name}": value for name, value in payload["model"].items()}
    torch.save(payload, older)
    with pytest.raises(ConceptspaceError, match="another version of conceptspace") as caught:
        load_checkpoint(older)
    do_what_it_says(str(caught.value))
    assert not copy.exists() and not (study / "packs" / "pack000.json").exists()
    assert (study / "packs" / "pack001.json").exists()  # a pack-mate's is left alone
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        rerun_snakemake(study, TINY_MODEL, TRAINING, dataset, SEED)
    assert "resuming" not in caplog.text and "steps 0 -> 12" in caplog.text
    assert_same_weights(final_state(copy, 12), final_state(run_dir, 12))
    load_checkpoint(older)


def test_resume_goes_back_past_checkpoints_without_optimizer_state(
    dataset, tmp_path, caplog, monkeypatch
):
    # A run whose every checkpoint keeps its optimizer state; then 12 is gone and 7 lost
    # its optimizer state: 4 is the newest readable checkpoint an exact resume starts from.
    import conceptspace.checkpoints as checkpoints

    drop = checkpoints._drop_optimizer_before
    monkeypatch.setattr(checkpoints, "_drop_optimizer_before", lambda run_dir, step, keep: None)
    train_run(TINY_MODEL, TRAINING, dataset, SEED, tmp_path / "run", tmp_path / "manifest.json")
    monkeypatch.setattr(checkpoints, "_drop_optimizer_before", drop)
    kept = train_run(TINY_MODEL, TRAINING, dataset, SEED, tmp_path / "all", tmp_path / "all.json")
    assert "optimizer" in torch.load(checkpoint_path(tmp_path / "run", 4), weights_only=True)
    checkpoint_path(tmp_path / "run", 12).unlink()
    stripped = torch.load(checkpoint_path(tmp_path / "run", 7), weights_only=True)
    del stripped["optimizer"]
    torch.save(stripped, checkpoint_path(tmp_path / "run", 7))
    with caplog.at_level(logging.INFO, logger="conceptspace"):  # training and checkpoints
        train_run(TINY_MODEL, TRAINING, dataset, SEED, tmp_path / "run", tmp_path / "manifest.json")
    assert "holds no optimizer state; looking further back" in caplog.text
    assert "resuming from step 4" in caplog.text
    assert kept["final_step"] == 12
    for step in (7, 12):
        assert_same_weights(
            final_state(tmp_path / "run", step), final_state(tmp_path / "all", step)
        )
