"""The concept probe: learns both concepts, saves what it measured, and evaluation can
refuse a weak one."""

import json
import logging
import re

import numpy as np
import pytest
import torch

from conceptspace.concepts import CLASSES, Signal
from conceptspace.io import ConceptspaceError
from conceptspace.probe import ProbeNet, load_probe, predict_proba, train_probe
from conceptspace.render import concept_labels, render_probe_set
from conftest import TINY_DATA

SIGNALS = [Signal(0.4, 0.4), Signal(0.3, 0.3)]
# The tests' tiny renderer settings (conftest), at 16 px and with more images.
DATA_CFG = TINY_DATA | {"image_size": 16, "images_per_class": 32, "validation_fraction": 0.15}
PROBE_CFG = {
    "channels": [8, 8, 8],
    "groups": 4,
    "attention_heads": 2,
    "images_per_class": 160,
    "steps": 250,
    "batch_size": 32,
    "lr": 0.002,
    "weight_decay": 0.01,
    "validation_fraction": 0.15,
    "min_accuracy": 0.9,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One briefly trained probe, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("probe")
    metrics = train_probe(
        DATA_CFG, PROBE_CFG, SIGNALS, 0, folder / "probe.pt", folder / "metrics.json"
    )
    return folder, metrics


def test_probe_net_gives_logits_per_concept_for_any_depth():
    images = torch.rand(5, 3, 16, 16)
    for channels in ([8], [8, 16], [8, 8, 8]):
        probe = ProbeNet(16, channels=channels, groups=4, attention_heads=2)
        assert probe(images).shape == (5, 2, 2)
        probabilities = predict_proba(probe, images)
        assert torch.all((probabilities >= 0) & (probabilities <= 1))
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(5, 2))
    with pytest.raises(ConceptspaceError, match="groups"):
        ProbeNet(16, channels=[6, 8], groups=4)
    with pytest.raises(ValueError, match="takes images"):
        predict_proba(ProbeNet(16, channels=[8], groups=4, attention_heads=2), images[:, :, :8])


def test_a_brief_probe_reads_both_concepts(trained):
    folder, metrics = trained
    assert metrics["accuracy"]["color"] >= 0.9
    assert metrics["accuracy"]["size"] >= 0.9
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["accuracy"] == metrics["accuracy"]
    assert stored["n_train"] + stored["n_validation"] == 4 * PROBE_CFG["images_per_class"]
    assert stored["n_validation"] == 4 * round(0.15 * PROBE_CFG["images_per_class"])
    assert stored["steps"] == PROBE_CFG["steps"] and stored["min_accuracy"] == 0.9
    assert stored["provenance"]["seed"] == 0


def test_a_loaded_probe_classifies_fresh_images_of_every_class(trained):
    folder, _ = trained
    checkpoint = torch.load(folder / "probe.pt", weights_only=True)
    assert checkpoint["config"] == {
        "image_size": 16,
        "channels": [8, 8, 8],
        "groups": 4,
        "attention_heads": 2,
        "n_concepts": 2,
    }
    probe = load_probe(folder / "probe.pt", min_accuracy=0.9)
    assert not probe.training
    # Images the probe never saw (another seed), the unseen class 11 included.
    fresh = render_probe_set(DATA_CFG, SIGNALS, images_per_class=50, seed=99)
    probabilities = predict_proba(probe, torch.from_numpy(fresh["images"]))
    assert probabilities.shape == (4 * 50, 2, 2)
    correct = probabilities.argmax(-1).numpy() == concept_labels(fresh["label"])
    for index, name in enumerate(CLASSES):
        members = fresh["label"] == index
        assert correct[members].all(axis=1).mean() >= 0.85, name


def test_the_same_seed_gives_the_same_probe(tmp_path, caplog):
    tiny = {**PROBE_CFG, "images_per_class": 16, "steps": 20}

    def weights(seed, name):
        train_probe(DATA_CFG, tiny, SIGNALS, seed, tmp_path / f"{name}.pt", tmp_path / "m.json")
        return torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"]

    with caplog.at_level(logging.INFO, logger="conceptspace.probe"):
        first = weights(7, "a")
    again, other = weights(7, "b"), weights(8, "c")
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    # Progress: about one line per 10% of the steps, never a carriage return.
    progress = [r.getMessage() for r in caplog.records if "probe step" in r.getMessage()]
    assert len(progress) == 10 and progress[-1].startswith("probe step 20/20")
    assert all(re.search(r"steps/s, ETA \d+:\d\d:\d\d\)$", line) for line in progress)
    assert not any("\r" in line for line in progress)
    assert np.isfinite(float(progress[-1].split("loss ")[1].split()[0]))
