"""Evaluation of a checkpoint: a tiny trained VDM prompted for every class with every
method and read by a tiny trained probe; the file it writes, its determinism (same
noise whatever the batching and the method: identity settings of every method give
the naive samples), the sample command, and its refusals (a weak probe, a checkpoint of
another run, a missing donor) and the fix a lost donor's message gives, done literally."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from conceptspace.checkpoints import checkpoint_path
from conceptspace.cli import main as cli_main
from conceptspace.concepts import CLASSES, CONCEPTS, Signal
from conceptspace.evaluate import (
    conditions_of,
    evaluate_checkpoint,
    evaluate_run,
    generate_images,
    prepare_checkpoint,
    sample_checkpoints,
    sample_seed,
    score_samples,
    target_probabilities,
)
from conceptspace.io import ConceptspaceError
from conceptspace.probe import train_probe
from conceptspace.render import render_training_set, save_dataset
from conceptspace.train import train_run
from conceptspace.netcdf import open_trajectory
from conceptspace.trajectories import gather_run

from conftest import TINY_DATA, TINY_MODEL, do_what_it_says, rerun_snakemake, workflow_run

SIGNAL = Signal(0.4, 0.4)
SEED = 5
TRAINING = {
    "steps": 4,
    "batch_size": 4,
    "lr": 0.001,
    "weight_decay": 0.01,
    "grad_clip": 0.01,
    "checkpoints": {"count": 2, "first": 2, "last": 4},
    "precision": "fp32",
    "log_every": 2,
}
PROBE = {
    "channels": [8, 8],
    "groups": 4,
    "attention_heads": 2,
    "images_per_class": 16,
    "steps": 10,
    "batch_size": 16,
    "lr": 0.002,
    "weight_decay": 0.01,
    "validation_fraction": 0.25,
    "min_accuracy": 0.0,
}
BLUE = [float(c) for c in SIGNAL.color_mean(1)]  # the unseen class's own color
METHODS = {
    "overprompt": {"colors": [[0.2, 0.2, 0.8], BLUE]},
    "intervention": {
        "alphas": [2.0],
        "beta": 0.1,
        "color_direction": [0.05, 0.05, 0.95],
        "size_direction": 0.6,
    },
    "patching": {"donors": ["final", 2]},
}
# Every method at its identity setting: each must reproduce naive prompting.
IDENTITY_METHODS = {
    "overprompt": {"colors": [BLUE]},
    "intervention": {**METHODS["intervention"], "alphas": [0.0], "beta": 0.0},
    "patching": {"donors": ["final"]},
}
OFF = {
    "overprompt": {"colors": []},
    "intervention": {**METHODS["intervention"], "alphas": []},
    "patching": {"donors": []},
}
EVALUATION = {
    "samples_per_prompt": 3,
    "sampler_steps": 4,
    "batch_size": 5,  # batches cut across prompts and methods
    "threshold": 0.8,
    "sigma": 0.0,
    "min_valid_fraction": 0.25,
    "authors": {"threshold": 0.9, "sigma": 2.0, "consecutive": 3},
    "methods": METHODS,
}
# naive and 2 patched: 4 prompts each; 2 overprompts and 1 intervention: the unseen class
N_CONDITIONS = 3 * 4 + 3
METHOD_NAMES = [
    "naive",
    "overprompt_0",
    "overprompt_1",
    "intervention_0",
    "patched_final",
    "patched_step_000002",
]

# trainings compared bit for bit, and redone (conftest.rerun_snakemake), at one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VDM run (checkpoints at steps 2 and 4) and a tiny probe: (checkpoint, probe)."""
    root = tmp_path_factory.mktemp("evaluate")
    dataset = root / "train.npz"
    save_dataset(dataset, render_training_set(TINY_DATA, SIGNAL, seed=SEED), {})
    train_run(
        TINY_MODEL, TRAINING, dataset, SEED, root / "run", root / "manifest.json", device="cpu"
    )
    train_probe(TINY_DATA, PROBE, [SIGNAL], 0, root / "probe.pt", root / "probe.json", device="cpu")
    return checkpoint_path(root / "run", 4), root / "probe.pt"


def evaluate(trained, out, evaluation=EVALUATION, signal=SIGNAL, seed=SEED, min_accuracy=0.0):
    checkpoint, probe = trained
    return evaluate_checkpoint(
        checkpoint,
        probe,
        evaluation_cfg=evaluation,
        min_accuracy=min_accuracy,
        signal=signal,
        seed=seed,
        out_path=out,
        device="cpu",
        threads=1,
    )


def test_target_probabilities_pick_each_prompts_own_values():
    # (B=2, concept, value): prompt 01 wants color 0 and size 1; prompt 10 the opposite.
    probabilities = torch.tensor([[[0.7, 0.3], [0.2, 0.8]], [[0.6, 0.4], [0.9, 0.1]]])
    np.testing.assert_allclose(
        target_probabilities(probabilities, ["01", "10"]), [[0.7, 0.8], [0.4, 0.9]], rtol=1e-6
    )


def test_sample_seeds_are_distinct_and_independent_of_the_step():
    seeds = {sample_seed(SEED, prompt, i) for prompt in CLASSES for i in range(64)}
    assert len(seeds) == 4 * 64
    assert sample_seed(SEED, "11", 3) == sample_seed(SEED, "11", 3)
    assert sample_seed(SEED, "11", 3) != sample_seed(SEED + 1, "11", 3)
    assert all(0 <= seed < 2**63 for seed in seeds)


class FakeNet:
    """Embeds h as itself; an intervention would be unsupported (none is configured)."""

    image_size, image_channels = 8, 3

    def embed(self, h, intervention=None):
        assert intervention is None
        return [h]


class FakeVDM:
    """Stands in for a VDM: each image carries its h and one uniform draw from its own
    generator, so the expected scores can be recomputed sample by sample."""

    def __init__(self):
        self.batch_sizes = []
        self.net = FakeNet()

    def sample(self, h, steps, generators, embeddings=None):
        (h,) = embeddings
        assert len(generators) == len(h)
        self.batch_sizes.append(len(h))
        images = torch.zeros(len(h), 3, 8, 8)
        for row, generator in enumerate(generators):
            # P(color = blue) := one draw times the prompt's blue channel
            images[row, 0] = torch.rand(1, generator=generator) * h[row, 2]
            images[row, 1] = h[row, 3]  # P(size = small) := the prompt's radius
        return images


def fake_predict_proba(probe, images):
    positive = images[:, :2, 0, 0]  # (B, concept): probability of value 1
    return torch.stack([1 - positive, positive], dim=-1)


def test_evaluation_scores_each_sample_against_its_own_prompt(monkeypatch, tmp_path):
    """With a fake model and probe: every score lands at its (method, prompt, concept,
    sample), is the probability of that prompt's own value, uses the condition's h and
    the sample's own noise (the same for every method), and methods share batches."""
    import conceptspace.checkpoints
    import conceptspace.probe

    vdm = FakeVDM()
    metadata = {
        "path": "fake.pt",
        "step": 7,
        "config": {
            "image_size": 8,
            "seed": SEED,
            "dataset": {"signal": {"color_gap": 0.4, "size_gap": 0.4}, "data": TINY_DATA},
            "training": TRAINING,
        },
    }
    probe = type("FakeProbe", (), {"image_size": 8, "accuracy": {"color": 1.0, "size": 1.0}})()
    monkeypatch.setattr(
        conceptspace.checkpoints, "load_checkpoint", lambda path, device: (vdm, metadata)
    )
    monkeypatch.setattr(conceptspace.probe, "load_probe", lambda path, floor, device: probe)
    monkeypatch.setattr(conceptspace.probe, "predict_proba", fake_predict_proba)

    methods = {**OFF, "overprompt": METHODS["overprompt"]}
    out = evaluate(
        ("fake.pt", "fake_probe.pt"), tmp_path / "fake.nc", {**EVALUATION, "methods": methods}
    )
    assert vdm.batch_sizes == [5, 5, 5, 3]  # (4 naive + 2 overprompt) x 3 samples, shared
    with xr.open_dataset(out) as ds:
        p_target = ds["p_target"]
        assert list(ds["method"].values) == ["naive", "overprompt_0", "overprompt_1"]
        assert ds.attrs["step"] == 7
        p_target = p_target.values
    colors = {"naive": None, "overprompt_0": [0.2, 0.2, 0.8], "overprompt_1": BLUE}
    for m, (method, color) in enumerate(colors.items()):
        for p, prompt in enumerate(CLASSES):
            if method != "naive" and prompt != "11":
                assert np.isnan(p_target[m, p]).all()
                continue
            color_digit, size = int(prompt[0]), int(prompt[1])
            blue = SIGNAL.class_h(prompt)[2] if color is None else color[2]
            radius = SIGNAL.size_mean(size)
            for i in range(EVALUATION["samples_per_prompt"]):
                noise = torch.Generator().manual_seed(sample_seed(SEED, prompt, i))
                p_blue = float(torch.rand(1, generator=noise)) * blue
                expected_color = p_blue if color_digit else 1 - p_blue
                assert p_target[m, p, 0, i] == pytest.approx(expected_color, abs=1e-6)
                assert p_target[m, p, 1, i] == pytest.approx(
                    radius if size else 1 - radius, abs=1e-6
                )
    # the overprompt equal to the class means scores exactly like naive prompting
    np.testing.assert_array_equal(p_target[2, 3], p_target[0, 3])


def test_evaluation_writes_p_target(trained, tmp_path):
    out = tmp_path / "eval" / "step_000004.nc"
    assert evaluate(trained, out) == out
    with xr.open_dataset(out) as ds:
        p_target = ds["p_target"]
        assert p_target.dims == ("method", "prompt", "concept", "sample")
        samples = EVALUATION["samples_per_prompt"]
        assert p_target.shape == (len(METHOD_NAMES), len(CLASSES), len(CONCEPTS), samples)
        assert list(ds["method"].values) == METHOD_NAMES
        assert list(ds["method_kind"].values) == [
            "naive",
            "overprompt",
            "overprompt",
            "intervention",
            "patched",
            "patched",
        ]
        settings = list(ds["method_setting"].values)
        assert settings[1] == "rgb=(0.2, 0.2, 0.8)" and settings[3] == "alpha=2 beta=0.1"
        assert settings[4] == "donor=final (step 4)" and settings[5] == "donor=step 2"
        assert list(ds["prompt"].values) == list(CLASSES)
        assert list(ds["concept"].values) == list(CONCEPTS)
        applied = p_target.notnull().all(dim=["concept", "sample"])
        for method in METHOD_NAMES:
            expected = [
                method in ("naive", "patched_final", "patched_step_000002") or c == "11"
                for c in CLASSES
            ]
            assert list(applied.sel({"method": method}).values) == expected, method
        assert not (p_target.isnull() & applied).any()  # all or nothing per (method, prompt)
        for name in ("valid", "valid_frame_off"):  # the verdict, and with the frame rule off
            valid = ds[name].transpose("method", "prompt", "sample")
            assert valid.attrs["units"] == "1" and valid.attrs["long_name"]
            verdicts = valid.values[np.broadcast_to(applied.values[:, :, None], valid.shape)]
            assert set(np.unique(verdicts)) <= {0.0, 1.0}  # a verdict for every applied sample
            assert valid.where(~applied).isnull().all()  # NaN where the method is not applied
        assert "frame rule" in ds["valid_frame_off"].attrs["long_name"]
        # dropping a rule can only admit more samples
        assert (ds["valid_frame_off"] >= ds["valid"]).where(applied).fillna(True).all()
        values = p_target.values[np.broadcast_to(applied.values[:, :, None, None], p_target.shape)]
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
        assert values.std() > 0  # not a constant placeholder
        assert p_target.attrs["units"] == "1" and p_target.attrs["long_name"]
        attrs = ds.attrs
        assert attrs["step"] == 4 and attrs["seed"] == SEED
        assert attrs["color_gap"] == pytest.approx(0.4) and attrs["size_gap"] == pytest.approx(0.4)
        assert json.loads(attrs["evaluation_cfg"]) == EVALUATION
        assert attrs["checkpoint"].endswith("step_000004.pt")
        assert 0 <= attrs["probe_accuracy_color"] <= 1
        assert len(attrs["config_hash"]) == 16 and attrs["git_commit"]
        assert "torch" in json.loads(attrs["versions"])
    assert not list(out.parent.glob(".*")), "temporary files left behind"


def test_evaluation_is_deterministic_and_independent_of_batching(trained, tmp_path):
    first, second = tmp_path / "first.nc", tmp_path / "second.nc"
    evaluate(trained, first)
    evaluate(trained, second, {**EVALUATION, "batch_size": 3 * N_CONDITIONS})  # one batch
    with xr.open_dataset(first) as a, xr.open_dataset(second) as b:
        np.testing.assert_allclose(a["p_target"].values, b["p_target"].values, atol=1e-5)
        # each sample has its own noise: samples of one prompt differ
        assert (a["p_target"].std("sample") > 0).any()
        # the overprompt at the class means reproduces naive prompting (other batches)
        np.testing.assert_allclose(
            a["p_target"].sel({"method": "overprompt_1", "prompt": "11"}).values,
            a["p_target"].sel({"method": "naive", "prompt": "11"}).values,
            atol=1e-5,
        )


def test_evaluation_refuses_a_probe_below_its_floor(trained, tmp_path):
    out = tmp_path / "refused.nc"
    with pytest.raises(ConceptspaceError, match="min_accuracy"):
        evaluate(trained, out, min_accuracy=1.01)  # above any accuracy a probe can have
    assert not out.exists()


def test_evaluation_refuses_a_checkpoint_of_another_run(trained, tmp_path):
    out = tmp_path / "wrong.nc"
    with pytest.raises(ConceptspaceError, match="color_gap"):
        evaluate(trained, out, signal=Signal(0.6, 0.4))
    with pytest.raises(ConceptspaceError, match="seed"):
        evaluate(trained, out, seed=SEED + 1)
    assert not out.exists()


def condition_images(prepared, conditions, samples=2, batch_size=8):
    batches = generate_images(
        [prepared.sampled(SIGNAL, SEED)],
        conditions,
        samples,
        EVALUATION["sampler_steps"],
        batch_size,
        torch.device("cpu"),
    )
    return torch.cat([images for _, (images,) in batches])


def test_identity_settings_of_every_method_give_the_naive_samples(trained):
    """alpha = beta = 0, patching with the checkpoint's own embedding module (loaded again
    from its file) and an overprompt equal to the class means: bit-identical samples."""
    checkpoint, _ = trained
    prepared = prepare_checkpoint(checkpoint, IDENTITY_METHODS, SIGNAL, SEED, torch.device("cpu"))
    by_name = {c.method.name: c for c in prepared.conditions if c.prompt == "11"}
    assert set(by_name) == {"naive", "overprompt_0", "intervention_0", "patched_final"}
    assert prepared.donors[4] is not prepared.vdm.net  # a second copy, read from disk
    naive = condition_images(prepared, [by_name["naive"]])
    assert naive.std() > 0
    for name in ("overprompt_0", "intervention_0", "patched_final"):
        assert torch.equal(condition_images(prepared, [by_name[name]]), naive), name
    # patching every class with the own module: the naive samples of every class
    naive_all = [c for c in prepared.conditions if c.method.name == "naive"]
    patched_all = [c for c in prepared.conditions if c.method.name == "patched_final"]
    assert torch.equal(
        condition_images(prepared, patched_all), condition_images(prepared, naive_all)
    )


def test_a_sample_does_not_depend_on_the_methods_it_shares_a_batch_with(trained):
    checkpoint, _ = trained
    prepared = prepare_checkpoint(checkpoint, METHODS, SIGNAL, SEED, torch.device("cpu"))
    conditions = prepared.conditions
    assert len(conditions) == N_CONDITIONS
    together = condition_images(prepared, conditions, batch_size=2 * N_CONDITIONS)
    for c, condition in enumerate(conditions):
        alone = condition_images(prepared, [condition], batch_size=1)
        torch.testing.assert_close(together[2 * c : 2 * c + 2], alone, rtol=0, atol=1e-5)
    by_name = {c.method.name: k for k, c in enumerate(conditions) if c.prompt == "11"}
    # the methods act (a 4-step model barely conditions, so any change counts): a pushed
    # overprompt, the intervention and an early donor change the samples
    for name in ("overprompt_0", "intervention_0", "patched_step_000002"):
        k, naive = by_name[name], by_name["naive"]
        assert not torch.equal(together[2 * k : 2 * k + 2], together[2 * naive : 2 * naive + 2])


def test_sample_command_writes_the_evaluated_images(trained, tmp_path):
    checkpoint, _ = trained
    out = tmp_path / "samples.nc"
    early = checkpoint.parent / "step_000002.pt"
    settings = {"evaluation": EVALUATION}
    code = cli_main(
        ["sample", "--settings", json.dumps(settings), "--color-gap", "0.4", "--size-gap", "0.4"]
        + ["--seed", str(SEED), "--samples", "2", "--out", str(out), "--device", "cpu"]
        + ["--threads", "1", str(checkpoint), str(early)]
    )
    assert code == 0
    with xr.open_dataset(out) as ds:
        images = ds["images"]
        assert images.dims == ("step", "method", "prompt", "sample", "y", "x", "channel")
        assert images.dtype == np.uint8 and images.shape[-3:] == (8, 8, 3)
        assert list(ds["step"].values) == [2, 4]
        assert list(ds["method"].values) == METHOD_NAMES
        assert ds["method_kind"].values[4] == "patched"
        assert bool(ds["applied"].sel({"method": "overprompt_0", "prompt": "11"}))
        assert not bool(ds["applied"].sel({"method": "overprompt_0", "prompt": "00"}))
        assert (images.sel({"method": "overprompt_0", "prompt": "00"}) == 0).all()
        # the same images the evaluation draws
        prepared = prepare_checkpoint(checkpoint, METHODS, SIGNAL, SEED, torch.device("cpu"))
        naive = [c for c in prepared.conditions if c.method.name == "naive"]
        expected = condition_images(prepared, naive)  # (4 prompts x 2 samples, 3, 8, 8)
        expected = (expected * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        got = images.sel({"step": 4, "method": "naive"}).values.reshape(8, 8, 8, 3)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        assert ds.attrs["config_hash"]


def test_evaluation_with_methods_off_has_only_naive(trained, tmp_path):
    out = evaluate(trained, tmp_path / "off.nc", {**EVALUATION, "methods": OFF})
    with xr.open_dataset(out) as ds:
        assert list(ds["method"].values) == ["naive"]
        assert ds["p_target"].notnull().all()


def test_evaluation_refuses_a_missing_donor(trained, tmp_path):
    methods = {**OFF, "patching": {"donors": [3]}}  # not a checkpoint step of the run
    with pytest.raises(ConceptspaceError, match="not a checkpoint step"):
        evaluate(trained, tmp_path / "x.nc", {**EVALUATION, "methods": methods})


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_donors_fix_done_literally_completes_the_run_with_the_same_results(
    trained, tmp_path, damage
):
    # The final checkpoint, step 2's patching donor, deleted or `truncate -s 100`: the
    # message's one command, then `snakemake` (its training, then evaluate_run again).
    checkpoint, probe = trained
    manifest = json.loads((checkpoint.parent.parent.parent / "manifest.json").read_text())
    study, run_dir = workflow_run(checkpoint.parent.parent, manifest, tmp_path)
    checkpoints = [checkpoint_path(run_dir, step) for step in (2, 4)]

    def evaluate_the_run():
        evaluations = evaluate_run(
            checkpoints,
            probe,
            evaluation_cfg=EVALUATION,
            min_accuracy=0.0,
            signal=SIGNAL,
            seed=SEED,
            eval_dir=run_dir / "eval",
            device="cpu",
        )
        return gather_run(evaluations)["p_target"].values

    expected = evaluate_the_run()
    donor = checkpoints[-1]
    if damage == "deleted":
        donor.unlink()
    else:
        donor.write_bytes(donor.read_bytes()[:100])
    with pytest.raises(ConceptspaceError, match="patched_final needs") as caught:
        evaluate_the_run()
    message = str(caught.value)
    assert f"step-4 checkpoint as its donor: checkpoint {donor} " in message, message
    do_what_it_says(message)
    assert not (study / "packs" / "pack000.json").exists()
    rerun_snakemake(
        study, TINY_MODEL, TRAINING, checkpoint.parent.parent.parent / "train.npz", SEED
    )
    np.testing.assert_array_equal(evaluate_the_run(), expected)


def test_the_pack_commands_equal_evaluating_each_checkpoint_and_gathering(trained, tmp_path):
    """The pipeline's commands (evaluate-pack, one job per pack, here a pack of one; then
    gather-run) write the same evaluations as the per-checkpoint function, and the
    trajectory that gather_run makes of them."""
    checkpoint, probe = trained
    run_dir = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run_dir)  # its evaluations go to run/eval
    settings = {"evaluation": EVALUATION, "probe": PROBE}
    fields = json.dumps({"color_gap": 0.4, "size_gap": 0.4, "seed": SEED})
    evaluated, out = tmp_path / "evaluated.json", tmp_path / "trajectory.nc"
    code = cli_main(
        ["evaluate-pack", "--settings", json.dumps(settings), "--probe", str(probe)]
        + ["--run", "the_run", str(run_dir), fields, "--steps", "2", "4"]
        + ["--out", str(evaluated), "--device", "cpu", "--threads", "1"]
    )
    assert code == 0
    listed = json.loads(evaluated.read_text())["runs"]
    assert listed == {"the_run": [str(run_dir / "eval" / f"step_00000{s}.nc") for s in (2, 4)]}
    assert (
        cli_main(
            ["gather-run", "--evaluated", str(evaluated), "--run", "the_run"] + ["--out", str(out)]
        )
        == 0
    )
    wrong = ["gather-run", "--evaluated", str(evaluated), "--run", "other", "--out", "x.nc"]
    assert cli_main(wrong) == 1 and not (tmp_path / "x.nc").exists()  # names its runs
    single = [tmp_path / f"single_{step}.nc" for step in (2, 4)]
    for path, step in zip(single, (2, 4)):
        evaluate((checkpoint_path(checkpoint.parent.parent, step), probe), path)
    with (
        open_trajectory(out) as run,
        xr.open_dataset(run_dir / "eval" / "step_000004.nc") as e,
    ):
        expected = gather_run(single)
        assert list(run["step"].values) == [2, 4]
        np.testing.assert_array_equal(run["p_target"].values, expected["p_target"].values)
        np.testing.assert_array_equal(run["accuracy"].values, expected["accuracy"].values)
        assert len(e.attrs["inputs_hash"]) == 16


def test_evaluate_run_keeps_current_evaluations_and_redoes_stale_ones(trained, tmp_path, caplog):
    """A killed or repeated job resumes: an evaluation made from the same inputs is kept
    (not rewritten); a damaged one is made again, and all of them when the settings
    change or a checkpoint of the run is rewritten (any may be a patching donor)."""
    checkpoint, probe = trained
    run_dir = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run_dir)  # this test rewrites checkpoints
    checkpoints = [checkpoint_path(run_dir, step) for step in (2, 4)]
    eval_dir = tmp_path / "eval"

    def run(evaluation=EVALUATION):
        options = dict(signal=SIGNAL, seed=SEED, min_accuracy=0.0, device="cpu", threads=1)
        evaluate_run(
            checkpoints,
            probe,
            evaluation_cfg=evaluation,
            eval_dir=eval_dir,
            **options,
        )
        return {p.name: p.stat().st_mtime_ns for p in sorted(eval_dir.glob("step_*.nc"))}

    first = run()
    assert sorted(first) == ["step_000002.nc", "step_000004.nc"]
    # Nothing changed: both kept, untouched; a write killed midway leaves no trace.
    (eval_dir / ".step_000004.nc.x1y2.nc").write_bytes(b"half a file")
    assert run() == first
    assert sorted(p.name for p in eval_dir.iterdir()) == sorted(first)
    # A damaged working file is evaluated again, the other kept.
    (eval_dir / "step_000002.nc").write_bytes(b"not netCDF")
    with caplog.at_level("WARNING"):
        again = run()
    assert again["step_000004.nc"] == first["step_000004.nc"]
    assert again["step_000002.nc"] != first["step_000002.nc"]
    assert "step_000002.nc could not be read" in caplog.text
    # The final checkpoint rewritten (as retraining does): it is step 2's patching donor
    # too, so both are evaluated again.
    final = checkpoints[-1]
    os.utime(final, ns=(final.stat().st_atime_ns, final.stat().st_mtime_ns + 10**9))
    retrained = run()
    assert all(retrained[name] != again[name] for name in retrained)
    # Other settings: all evaluated again, with them.
    changed = run({**EVALUATION, "samples_per_prompt": 2})
    assert all(changed[name] != retrained[name] for name in changed)
    with xr.open_dataset(eval_dir / "step_000004.nc") as ds:
        assert ds.sizes["sample"] == 2
    assert gather_run(sorted(eval_dir.glob("step_*.nc"))).sizes["sample"] == 2


def test_blank_samples_halve_the_accuracy_instead_of_raising_it():
    """The measured failure: the probe reads an image with no object as a confident
    "blue small", the unseen class. Half of a set of real blue-small images replaced by
    blank backgrounds must halve the class's accuracy; scored by the probe alone it
    would rise."""
    from conceptspace.concepts import COLOR_SIZE
    from conceptspace.render import render_images, sample_objects
    from conceptspace.trajectories import summarise_samples

    data = {**TINY_DATA, "image_size": 16}
    rng = np.random.default_rng(0)
    n = 64
    objects = sample_objects(["11"] * n, SIGNAL, rng)
    positions = rng.uniform(-0.5, 0.5, size=(n, 2))
    backgrounds = np.repeat(rng.uniform(0.8, 1.0, size=(n, 1)), 3, axis=1)
    real = render_images(objects["color"], objects["size"], positions, backgrounds, data, rng)
    blanks = np.clip(backgrounds[:, :, None, None] + rng.normal(0, 0.001, real.shape), 0, 1)
    half = np.concatenate([real[: n // 2], blanks[: n // 2]]).astype(np.float32)

    class BlankReadsAsBlueSmall:
        """A stand-in for the probe: 0.9 for a real target, 1.0 for a blank."""

        image_size = 16

    def probe_answer(probe, images):
        blank = images.flatten(1).std(dim=1) < 0.01
        p_value_1 = torch.where(blank, 1.0, 0.9)[:, None].expand(-1, 2)
        return torch.stack([1 - p_value_1, p_value_1], dim=-1)

    import conceptspace.probe

    def accuracies(images):
        original = conceptspace.probe.predict_proba
        conceptspace.probe.predict_proba = probe_answer
        try:
            scores, valid, _ = score_samples(
                BlankReadsAsBlueSmall(), torch.from_numpy(images), ["11"] * n, COLOR_SIZE, data
            )
        finally:
            conceptspace.probe.predict_proba = original
        p_target = xr.DataArray(scores.T, dims=("concept", "sample"))
        return summarise_samples(p_target, xr.DataArray(valid.astype(float), dims="sample"))

    full, halved = accuracies(real), accuracies(half)
    assert float(full["valid_fraction"]) == 1.0
    assert float(halved["valid_fraction"]) == 0.5
    assert float(halved["accuracy"]) == pytest.approx(float(full["accuracy"]) / 2)
    # the paper's product of means, which takes the probe's word, rises instead
    assert float(halved["product_of_means"]) > float(full["product_of_means"])
