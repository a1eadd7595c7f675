"""The pack trainer: K runs trained in one process as one stacked model. A pack of one
trains exactly what the plain training loop trains; a run in a pack of four matches the
same run trained alone; a run that diverges stops alone; a killed pack resumes exactly."""

import json
import logging
import textwrap

import pytest
import torch

import conceptspace.train
from conceptspace.checkpoints import checkpoint_path, load_checkpoint
from conceptspace.concepts import Signal
from conceptspace.io import ConceptspaceError
from conceptspace.render import render_training_set, save_dataset
from conceptspace.train import PackRun, train_pack, train_run

# The tests' tiny model (dropout on: its masks come from each run's generator).
from conftest import TINY_DATA, TINY_MODEL
from test_train import (  # noqa: F401
    TRAINING,
    assert_same_weights,
    kill_once_written,
    start_process,
)

# Over 50 steps: six checkpoints, reports every 10 steps.
STEPS = 60
PACKED = {
    **TRAINING,
    "steps": STEPS,
    "log_every": 10,
    "checkpoints": {"count": 6, "first": 5, "last": STEPS},
}
SEEDS = [11, 12, 13, 14]
# What a run in a pack may differ by from the same run alone: the stacked model's
# grouped convolutions and batched matmuls sum in another order (float32 rounding).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5

# one torch thread, so that in-process runs match each other
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def vmapped_packs():
    """Packs here run vmapped, as on a GPU (the CPU's default runs a pack's runs one after
    another: test_on_the_cpu_a_pack_of_four_trains_each_run_exactly_as_alone)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conceptspace.train, "vmap_runs", lambda device: True)
        yield


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Four runs' own training sets: other color gaps, other images."""
    root = tmp_path_factory.mktemp("pack-data")
    paths = []
    for index, seed in enumerate(SEEDS):
        path = root / f"run{index}.npz"
        # the third run's set is larger: the divergence test knows its batches by it
        data = {**TINY_DATA, "images_per_class": 12} if index == 2 else TINY_DATA
        save_dataset(path, render_training_set(data, Signal(0.2 + 0.2 * index, 0.4), seed), {})
        paths.append(path)
    return paths


def pack_runs(datasets, root, manifests=True):
    return [
        PackRun(path, seed, root / f"run{i}", root / f"run{i}.json" if manifests else None)
        for i, (path, seed) in enumerate(zip(datasets, SEEDS))
    ]


@pytest.fixture(scope="module")
def alone(datasets, tmp_path_factory):
    """Each run trained by itself: its run folder and manifest."""
    root = tmp_path_factory.mktemp("alone")
    return [
        (run.run_dir, train_run(TINY_MODEL, PACKED, run.dataset_path, run.seed, run.run_dir,
                                run.manifest_path))
        for run in pack_runs(datasets, root)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def packed(datasets, tmp_path_factory):
    """The four runs trained as one pack: their run folders and manifests."""
    root = tmp_path_factory.mktemp("packed")
    runs = pack_runs(datasets, root)
    manifests = train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    return [(run.run_dir, manifest) for run, manifest in zip(runs, manifests)]


def weights(run_dir, step=STEPS):
    return torch.load(checkpoint_path(run_dir, step), weights_only=True)["model"]


def assert_close_weights(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=WEIGHT_ATOL)


def plain_loop(dataset, seed, steps):
    """Today's training step written out: the global RNG seeded once, the VDM's own loss
    (its draws and nn.Dropout's from the global RNG), clip_grad_norm_, AdamW."""
    from conceptspace.render import load_dataset
    from conceptspace.checkpoints import build_vdm

    arrays, _ = load_dataset(dataset)
    train = ~torch.from_numpy(arrays["is_validation"])
    images = torch.from_numpy(arrays["images"]).float()[train]
    h = torch.from_numpy(arrays["h"])[train]
    torch.manual_seed(seed)
    vdm = build_vdm(TINY_MODEL, h.shape[1], images.shape[-1]).to(memory_format=torch.channels_last)
    vdm.train()
    params = list(vdm.parameters())
    optimizer = torch.optim.AdamW(params, lr=PACKED["lr"], weight_decay=PACKED["weight_decay"])
    for _ in range(steps):
        index = torch.randint(len(images), (PACKED["batch_size"],))
        x = images[index].contiguous(memory_format=torch.channels_last)
        loss = vdm.loss(x, h[index])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, PACKED["grad_clip"])
        optimizer.step()
    return vdm.state_dict()


# ------------------------------------------------------------------- equivalence


def test_a_pack_of_one_trains_what_the_plain_loop_trains(alone, datasets):
    # The same weights to the bit: K = 1 is today's trainer, dropout and all.
    run_dir, _ = alone[0]
    assert_same_weights(weights(run_dir), plain_loop(datasets[0], SEEDS[0], STEPS))


def test_a_run_in_a_pack_of_four_matches_the_run_alone(packed, alone):
    for (pack_dir, pack_manifest), (alone_dir, alone_manifest) in zip(packed, alone):
        pairs = list(zip(pack_manifest["checkpoints"], alone_manifest["checkpoints"]))
        assert [p["step"] for p, _ in pairs] == [a["step"] for _, a in pairs]
        for in_pack, by_itself in pairs:  # six checkpoints over the 60 steps
            for key in ("train_loss", "validation_bpd"):
                assert in_pack[key] == pytest.approx(by_itself[key], rel=LOSS_RTOL), key
        assert_close_weights(weights(pack_dir), weights(alone_dir))
        # the checkpoint of a packed run is a lone run's: same keys, same layout of state
        stored = torch.load(checkpoint_path(pack_dir, STEPS), weights_only=True)
        reference = torch.load(checkpoint_path(alone_dir, STEPS), weights_only=True)
        assert stored.keys() == reference.keys()
        assert stored["optimizer"]["param_groups"] == reference["optimizer"]["param_groups"]
        assert stored["rng"].keys() == reference["rng"].keys()
        assert torch.equal(stored["rng"]["torch"], reference["rng"]["torch"])  # same draws
        assert stored["config"] == {**reference["config"], "dataset": stored["config"]["dataset"]}
    # and the runs are four different runs, not one run four times
    finals = [weights(run_dir)["net.conv_in.weight"] for run_dir, _ in packed]
    assert all(not torch.allclose(a, b) for i, a in enumerate(finals) for b in finals[i + 1 :])


def test_on_the_cpu_a_pack_of_four_trains_each_run_exactly_as_alone(
    datasets, alone, tmp_path, monkeypatch
):
    monkeypatch.setattr(conceptspace.train, "vmap_runs", lambda device: device.type == "cuda")
    runs = pack_runs(datasets, tmp_path)
    train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    for run, (run_dir, _) in zip(runs, alone):
        assert_same_weights(weights(run.run_dir), weights(run_dir))


def test_a_packed_runs_checkpoint_samples_as_the_run_alone(packed, alone):
    # Its checkpoints evaluate as today's: load_checkpoint rebuilds it; the sampler, with
    # the same noise, draws the same images (to float tolerance).
    images = []
    for run_dir in (packed[1][0], alone[1][0]):
        vdm, metadata = load_checkpoint(checkpoint_path(run_dir, STEPS))
        assert metadata["step"] == STEPS
        generators = [torch.Generator().manual_seed(i) for i in range(4)]
        images.append(vdm.sample(torch.eye(4), steps=5, generators=generators))
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=1e-4)


# ------------------------------------------------------------------- divergence


def test_one_run_of_a_pack_made_to_diverge_stops_alone(datasets, alone, tmp_path, monkeypatch):
    from conceptspace.render import load_dataset

    original = conceptspace.train.draw_batch
    drawn = {"steps": 0}
    third_run_images = int((~load_dataset(datasets[2])[0]["is_validation"]).sum())

    def poison_third_run(images, h, batch_size, generator, masks, channels_last):
        batch = original(images, h, batch_size, generator, masks, channels_last)
        if len(images) == third_run_images:  # its draws made as usual, then poisoned
            drawn["steps"] += 1
            if drawn["steps"] >= 23:  # step 23: after the checkpoint at 20, before 30's report
                batch.x = batch.x * float("nan")
        return batch

    monkeypatch.setattr(conceptspace.train, "draw_batch", poison_third_run)
    runs = pack_runs(datasets, tmp_path)
    with pytest.raises(ConceptspaceError) as caught:
        train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    message = str(caught.value)
    assert "1 of the pack's 4 runs diverged" in message
    assert f"became NaN/inf between steps 21 and 30 of {runs[2].run_dir}" in message
    stored = sorted(p.name for p in (runs[2].run_dir / "checkpoints").glob("*.pt"))
    assert stored[-1] == "step_000020.pt" and not runs[2].manifest_path.exists()
    assert all(torch.isfinite(t).all() for t in weights(runs[2].run_dir, 20).values())
    # its pack-mates trained to the end, wrote their manifests and match their lone runs
    for index in (0, 1, 3):
        assert json.loads(runs[index].manifest_path.read_text())["final_step"] == STEPS
        assert_close_weights(weights(runs[index].run_dir), weights(alone[index][0]))


# ------------------------------------------------------------------- resuming


class Killed(Exception):
    """Stands for a SIGKILL at a chosen point of a pack's checkpointing."""


def kill_while_saving(monkeypatch, datasets, root, step, before_run):
    """Train the pack in ``root`` and stop it as it starts writing the checkpoint of
    ``step`` of run ``before_run`` (the runs before it have written theirs)."""
    original = conceptspace.train.save_checkpoint

    def save(run_dir, at, *args, **kwargs):
        if at == step and run_dir.name == f"run{before_run}":
            raise Killed
        return original(run_dir, at, *args, **kwargs)

    runs = pack_runs(datasets, root)
    with monkeypatch.context() as patch:
        patch.setattr(conceptspace.train, "save_checkpoint", save)
        with pytest.raises(Killed):
            train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    return runs


def stored_steps(run_dir):
    return sorted(int(p.stem[5:]) for p in (run_dir / "checkpoints").glob("step_*.pt"))


def test_a_pack_killed_between_its_runs_checkpoints_resumes_together(
    packed, datasets, tmp_path, monkeypatch, caplog
):
    # Killed while writing step 20's checkpoints: runs 0 and 1 have written theirs, runs 2
    # and 3 stand at step 11. Runs 0 and 1 go back to step 11 (which holds their optimizer
    # state), so the four train on as the same pack, to the uninterrupted pack's weights.
    runs = kill_while_saving(monkeypatch, datasets, tmp_path, step=20, before_run=2)
    assert [stored_steps(run.run_dir) for run in runs] == [[5, 11, 20]] * 2 + [[5, 11]] * 2
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    assert caplog.text.count("goes back to step 11, where its pack-mates resume") == 2
    assert caplog.text.count("resuming from step 11") == 4
    for run, (run_dir, _) in zip(runs, packed):
        assert_same_weights(weights(run.run_dir), weights(run_dir))


def test_runs_that_cannot_meet_at_one_step_train_as_packs_of_their_own(
    packed, datasets, tmp_path, monkeypatch, caplog
):
    # As above, but run 0's checkpoint of step 11 is damaged: it cannot go back, so it
    # trains on from step 20 by itself after the other three (a pack of three from 11).
    runs = kill_while_saving(monkeypatch, datasets, tmp_path, step=20, before_run=2)
    damaged = checkpoint_path(runs[0].run_dir, 11)
    damaged.write_bytes(damaged.read_bytes()[:100])
    with caplog.at_level(logging.INFO, logger="conceptspace.train"):
        train_pack(TINY_MODEL, PACKED, runs, device="cpu")
    assert "run0: resuming from step 20" in caplog.text
    assert caplog.text.count("resuming from step 11") == 3
    assert "training a pack of 3 runs" in caplog.text
    for run, (run_dir, _) in zip(runs, packed):  # float rounding: other packs, other sums
        assert_close_weights(weights(run.run_dir), weights(run_dir))


def test_a_pack_killed_with_sigkill_resumes_to_the_uninterrupted_packs_weights(datasets, tmp_path):
    training = {**PACKED, "steps": 120, "checkpoints": {"count": 3, "first": 10, "last": 120}}
    script = textwrap.dedent("""
        import json, logging, sys
        import torch
        torch.set_num_threads(1)
        import conceptspace.train
        from conceptspace.train import PackRun, train_pack
        conceptspace.train.vmap_runs = lambda device: True  # as on a GPU
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        a = json.loads(sys.argv[1])
        runs = [PackRun(*run) for run in a["runs"]]
        train_pack(a["model"], a["training"], runs, device="cpu", threads=1)
        """)

    def start(name):
        runs = [
            [str(path), seed, str(tmp_path / name / f"run{i}"), str(tmp_path / name / f"{i}.json")]
            for i, (path, seed) in enumerate(zip(datasets, SEEDS))
        ]
        args = {"model": TINY_MODEL, "training": training, "runs": runs}
        return start_process(script, args)

    clean, killed = start("clean"), start("killed")
    # the pack's last checkpoint of step 10: killed after it, in the steps that follow
    kill_once_written(killed, checkpoint_path(tmp_path / "killed" / "run3", 10))
    assert not (tmp_path / "killed" / "0.json").exists(), "the pack finished before it was killed"

    resumed = start("killed")
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output
    assert output.count("resuming from step") == 4, output
    output = clean.communicate(timeout=120)[0]
    assert clean.returncode == 0, output
    for index in range(4):
        assert_same_weights(
            weights(tmp_path / "killed" / f"run{index}", 120),
            weights(tmp_path / "clean" / f"run{index}", 120),
        )


# ------------------------------------------------------------------- the GPU benchmark


def test_the_pack_benchmark_writes_a_complete_report_on_the_cpu(tmp_path):
    # benchmarks/gpu_pack.py with tiny settings: every case measured, none judged here
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "pack.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_pack.py"), "--tiny", "--device"]
    command += ["cpu", "--packs", "1", "2", "--steps", "2", "--warmup", "1", "--threads", "1"]
    subprocess.run([*command, "--out", str(out)], check=True, timeout=300)
    report = json.loads(out.read_text())
    cases = {(c["precision"], c["runs"]): c for c in report["cases"]}
    assert set(cases) == {("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)}  # no TF32 on CPU
    for case in cases.values():
        assert case["run_steps_per_s"] > 0 and case["ms_per_image"] > 0
        assert case["run_steps_per_s"] == pytest.approx(case["runs"] / case["step_ms"] * 1000)
    assert cases["fp32", 1]["x_one_run"] == 1.0
    assert report["machine"]["device"] == "cpu" and "graph_capture" in report


def test_the_sampler_benchmark_splits_a_calls_rows_as_evaluate_pack_does(tmp_path):
    # --stage sample: a vmapped pack's runs share --sample-rows (evaluation.batch_size), no
    # run draws more than a checkpoint's samples (tiny: 8), and a call already measured at
    # fewer rows is not measured again
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "sample.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_pack.py"), "--tiny", "--device"]
    command += ["cpu", "--stage", "sample", "--packs", "1", "2", "--sample-rows", "8", "16"]
    command += ["--precisions", "fp32", "--steps", "1", "--warmup", "1", "--threads", "1"]
    subprocess.run([*command, "--out", str(out)], check=True, timeout=300)
    report = json.loads(out.read_text())
    rows = {(c["runs"], c["sample_rows"]): c["rows_per_run"] for c in report["cases"]}
    assert rows == {(1, 8): 8, (2, 8): 4, (2, 16): 8}
    for case in report["cases"]:
        per_s = case["runs"] * case["rows_per_run"] / case["sampler_step_ms"] * 1000
        assert case["sample_steps_per_s"] == pytest.approx(per_s)
