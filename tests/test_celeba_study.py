"""The CelebA study through Snakemake on a tiny CelebA-format folder (tests/test_celeba.py
builds it): prepare (torchvision's loader), a tiny VDM, the probe trained on the prepared
set with every class, evaluation with the one-hot class prompts (naive, the one-hot
intervention, patching), gathering and fig_celeba; and the one-hot layout itself."""

import json
import re

import numpy as np
import pytest
import xarray as xr
import yaml

from conceptspace.config import load_config
from conceptspace.concepts import celeba_layout, layout_attrs, layout_from_attrs
from conceptspace.methods import build_methods
from conceptspace.studies import STUDIES
from conftest import REPO, SMOKE, planned_jobs, snakemake
from test_celeba import build_celeba

METHODS_CFG = yaml.safe_load((REPO / "config.yaml").read_text())["evaluation"]["methods"]


def test_celeba_layout_prompts_one_hot_and_is_rebuilt_from_file_attrs():
    layout = celeba_layout(("Male", "Wearing_Hat"), "01")
    assert layout.unseen_classes == ("01",) and layout.training_classes == ("00", "10", "11")
    assert layout.h_layout == ("not_Male", "Male", "not_Wearing_Hat", "Wearing_Hat")
    np.testing.assert_array_equal(layout.class_h("01", None), [1, 0, 0, 1])  # female, hat
    assert layout.label("01") == "not Male, Wearing_Hat"
    # the intervention: amplify female (against male with hat), remove no-hat
    amplified, removed = layout.intervention_h()
    np.testing.assert_array_equal(amplified, [1, 0, 0, 0])
    np.testing.assert_array_equal(removed, [0, 0, 1, 0])
    # as netCDF stores it: the record as a JSON string
    attrs = {key: value if isinstance(value, str) else json.dumps(value)
             for key, value in layout_attrs(layout).items()}  # fmt: skip
    assert layout_from_attrs(attrs) == layout


def test_celeba_methods_are_naive_intervention_and_patching():
    layout = celeba_layout(("Male", "Wearing_Hat"), "01")
    methods = build_methods(METHODS_CFG, 100, layout)
    kinds = {m.kind for m in methods}
    assert kinds == {"naive", "intervention", "patched"}  # no color: no overprompting
    assert all(m.prompts == ("01",) for m in methods if m.kind == "intervention")


@pytest.mark.workflow
def test_celeba_default_training_plans_checkpoints_past_a_million_steps(tmp_path):
    # 2M steps: the later checkpoints have 7-digit names (step_1333368.pt); the run's one
    # evaluation job must be handed every checkpoint, those included.
    root = tmp_path / "faces"
    build_celeba(root)
    overlay = {"studies": {"signal": None, "underspecification": None}}
    overlay["studies"]["celeba"] = {"root": str(root), "seeds": [0], "verify_md5": False}
    path = tmp_path / "celeba.yaml"
    path.write_text(yaml.safe_dump(overlay))
    result = snakemake(
        tmp_path, "results/celeba/study.nc", "-n", "-p", configs=(REPO / "config.yaml", path)
    )
    config = load_config(REPO / "config.yaml", path)
    steps = STUDIES["celeba"].steps(config)
    assert max(steps) >= 1_000_000
    assert planned_jobs(result.stdout)["evaluate_pack"] == 1
    command = next(line for line in result.stdout.splitlines() if "evaluate-pack" in line)
    (named,) = re.findall(r"--steps ([\d ]+)", command)
    assert [int(step) for step in named.split()] == steps


@pytest.mark.workflow
def test_celeba_study_runs_through_snakemake(tmp_path):
    root = tmp_path / "faces"
    build_celeba(root)
    overlay = {
        "studies": {
            "signal": None,
            "underspecification": None,
            "celeba": {
                "root": str(root),
                "seeds": [0],
                "image_size": 16,
                "per_class": 6,
                "probe_per_class": 8,
                "verify_md5": False,  # a tiny, edited copy: its format is checked instead
                "training": {"steps": 20, "checkpoints": {"count": 2, "first": 10, "last": 20}},
            },
        },
        "training": {"batch_size": 8},  # within the 15 training images of a run
        "probe": {"validation_fraction": 0.25, "batch_size": 8},
    }
    path = tmp_path / "celeba.yaml"
    path.write_text(yaml.safe_dump(overlay))
    snakemake(tmp_path, "--cores", "2", configs=(REPO / "config.yaml", SMOKE, path))
    results = tmp_path / "results"
    assert sorted(p.name for p in (results / "celeba" / "data").iterdir()) == ["seed0.npz"]
    assert (results / "celeba" / "probe" / "probe_set.npz").exists()
    with xr.open_dataset(results / "celeba" / "study.nc") as study:
        assert list(study["prompt"].values) == ["00", "01", "10", "11"]
        assert list(study["concept"].values) == ["Male", "Wearing_Hat"]
        assert list(study["step"].values) == [10, 20]
        kinds = set(study["method_kind"].values)
        assert kinds == {"naive", "intervention", "patched"}
        assert study["learning_time"].dims == ("seed", "method")
        assert "color_gap" not in study.coords  # CelebA has no signal level
        prob = study["concept_prob"].sel({"method": "naive"}).values
        assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
        # the intervention prompts the held-out class only
        intervened = study["accuracy"].sel({"method": "intervention_0"})
        assert intervened.sel(prompt="01").notnull().all()
        assert intervened.sel(prompt="00").isnull().all()
    figure = results / "figures" / "fig_celeba.pdf"
    assert figure.read_bytes()[:5] == b"%PDF-"
    assert figure.with_suffix(".png").stat().st_size > 10_000
