"""Evaluation of a checkpoint: a tiny trained VDM prompted for every class and read by a
tiny trained probe; the file it writes, its determinism (same noise whatever the
batching), and its refusals (a weak probe, a checkpoint of another run)."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from conceptspace.cli import main as cli_main
from conceptspace.concepts import CLASSES, CONCEPTS, Signal
from conceptspace.evaluate import evaluate_checkpoint, sample_seed, target_probabilities
from conceptspace.io import ConceptspaceError
from conceptspace.probe import train_probe
from conceptspace.render import render_training_set, save_dataset
from conceptspace.train import checkpoint_path, train_run

SIGNAL = Signal(0.4, 0.4)
SEED = 5
DATA = {
    "image_size": 8,
    "images_per_class": 8,
    "validation_fraction": 0.25,
    "blur_sigma_px": 1.0,
    "noise_std": 0.001,
    "position_range": 0.5,
    "background_train": [0.8, 1.0],
    "background_test": 0.9,
}
MODEL = {
    "channels": [8, 16],
    "blocks_per_level": 1,
    "groups": 4,
    "attention_heads": 2,
    "dropout": 0.1,
    "time_dim": 16,
    "gamma_min": -5.0,
    "gamma_max": 10.0,
    "reconstruction_sigma": 0.001,
}
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
EVALUATION = {
    "samples_per_prompt": 3,
    "sampler_steps": 4,
    "batch_size": 5,  # 12 samples in batches of 5: batches cut across prompts
    "threshold": 0.8,
    "smoothed": {"threshold": 0.9, "sigma": 2.0, "consecutive": 3},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VDM run (checkpoints at steps 2 and 4) and a tiny probe: (checkpoint, probe)."""
    root = tmp_path_factory.mktemp("evaluate")
    dataset = root / "train.npz"
    save_dataset(dataset, render_training_set(DATA, SIGNAL, seed=SEED), {})
    train_run(MODEL, TRAINING, dataset, SEED, root / "run", root / "manifest.json", device="cpu")
    train_probe(DATA, PROBE, [SIGNAL], 0, root / "probe.pt", root / "probe.json", device="cpu")
    return checkpoint_path(root / "run", 4), root / "probe.pt"


def evaluate(trained, out, evaluation=EVALUATION, signal=SIGNAL, seed=SEED, min_accuracy=0.0):
    checkpoint, probe = trained
    return evaluate_checkpoint(
        checkpoint, probe, evaluation, min_accuracy, signal, seed, out, device="cpu", threads=1
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


class FakeVDM:
    """Stands in for a VDM: each image carries its h and one uniform draw from its own
    generator, so the expected scores can be recomputed sample by sample."""

    def __init__(self):
        self.batch_sizes = []

    def sample(self, h, steps, generators, embeddings=None):
        assert len(generators) == len(h)
        self.batch_sizes.append(len(h))
        images = torch.zeros(len(h), 3, 8, 8)
        for row, generator in enumerate(generators):
            images[row, 0] = torch.rand(1, generator=generator)  # P(color = blue)
            images[row, 1] = h[row, 3]  # P(size = small) := the prompt's radius
        return images


def fake_predict_proba(probe, images):
    positive = images[:, :2, 0, 0]  # (B, concept): probability of value 1
    return torch.stack([1 - positive, positive], dim=-1)


def test_evaluation_scores_each_sample_against_its_own_prompt(monkeypatch, tmp_path):
    """With a fake model and probe: every score lands at its (prompt, concept, sample),
    is the probability of that prompt's own value, and uses the sample's own noise."""
    import conceptspace.probe
    import conceptspace.train

    vdm = FakeVDM()
    metadata = {
        "step": 7,
        "config": {
            "image_size": 8,
            "seed": SEED,
            "dataset": {"signal": {"color_gap": 0.4, "size_gap": 0.4}},
        },
    }
    probe = type("FakeProbe", (), {"image_size": 8, "accuracy": {"color": 1.0, "size": 1.0}})()
    monkeypatch.setattr(conceptspace.train, "load_checkpoint", lambda path, device: (vdm, metadata))
    monkeypatch.setattr(conceptspace.probe, "load_probe", lambda path, floor, device: probe)
    monkeypatch.setattr(conceptspace.probe, "predict_proba", fake_predict_proba)

    out = evaluate(("fake.pt", "fake_probe.pt"), tmp_path / "fake.nc")
    assert vdm.batch_sizes == [5, 5, 2]  # 12 samples, all prompts share the calls
    with xr.open_dataset(out) as ds:
        p_target = ds["p_target"].values
        assert ds.attrs["step"] == 7
    for p, prompt in enumerate(CLASSES):
        color, size = int(prompt[0]), int(prompt[1])
        radius = SIGNAL.size_mean(size)
        for i in range(EVALUATION["samples_per_prompt"]):
            noise = torch.Generator().manual_seed(sample_seed(SEED, prompt, i))
            blue = float(torch.rand(1, generator=noise))
            assert p_target[p, 0, i] == pytest.approx(blue if color else 1 - blue, abs=1e-6)
            assert p_target[p, 1, i] == pytest.approx(radius if size else 1 - radius, abs=1e-6)


def test_evaluation_writes_p_target(trained, tmp_path):
    out = tmp_path / "eval" / "step_000004.nc"
    assert evaluate(trained, out) == out
    with xr.open_dataset(out) as ds:
        p_target = ds["p_target"]
        assert p_target.dims == ("prompt", "concept", "sample")
        assert p_target.shape == (len(CLASSES), len(CONCEPTS), EVALUATION["samples_per_prompt"])
        assert list(ds["prompt"].values) == list(CLASSES)
        assert list(ds["concept"].values) == list(CONCEPTS)
        values = p_target.values
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
    # Again through the command line, with all 12 samples in one batch.
    checkpoint, probe = trained
    settings = {"evaluation": {**EVALUATION, "batch_size": 12}, "probe": PROBE}
    code = cli_main(
        ["evaluate", "--settings", json.dumps(settings), "--checkpoint", str(checkpoint)]
        + ["--probe", str(probe), "--color-gap", "0.4", "--size-gap", "0.4"]
        + ["--seed", str(SEED), "--out", str(second), "--device", "cpu", "--threads", "1"]
    )
    assert code == 0
    with xr.open_dataset(first) as a, xr.open_dataset(second) as b:
        np.testing.assert_allclose(a["p_target"].values, b["p_target"].values, atol=1e-5)
        # each sample has its own noise: samples of one prompt differ
        assert (a["p_target"].std("sample") > 0).any()


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
