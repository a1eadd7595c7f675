"""The 2x2x2 background study: its runs and config, the concept-space position of its
classes, and the study run on its own through Snakemake (signal and underspecification
off) into results/background/study.nc and fig_background."""

import numpy as np
import pytest
import xarray as xr

from conceptspace.concepts import COLOR_SIZE_BACKGROUND
from conceptspace.config import (
    ConfigError,
    background_runs,
    checkpoint_steps,
    load_config,
    merge,
    study_training,
    validate_config,
)
from conceptspace.figures.background import value_one_probability
from conftest import REPO, SCHEMA, SMOKE, snakemake

# The background study alone, as small as the smoke preset, with its own shorter training.
TINY = {
    "studies": {
        "signal": None,
        "underspecification": None,
        "background": {
            "seeds": [0],
            "color_gap": 0.4,
            "size_gap": 0.4,
            "background_gap": 0.4,
            "training": {"steps": 40, "checkpoints": {"count": 2, "first": 20, "last": 40}},
        },
    }
}


def test_paper_background_study_trains_40k_steps():
    config = load_config(REPO / "config.yaml")
    runs = background_runs(config)
    assert [run.seed for run in runs] == [0, 100, 200, 300, 400]
    assert runs[0].id == "dc0.400_ds0.400_db0.400_seed0"
    assert study_training(config, "background")["steps"] == 40000
    assert checkpoint_steps(study_training(config, "background"))[-1] == 40000
    assert study_training(config, "signal")["steps"] == 20000  # the others keep theirs


def test_background_training_overlay_is_checked_like_training():
    config = merge(load_config(REPO / "config.yaml"), TINY)
    config["studies"]["background"]["training"]["checkpoints"]["last"] = 50
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    assert "studies.background.training.checkpoints.last' (50) is past the end" in str(err.value)


def test_concept_space_position_puts_each_class_at_its_corner():
    # probabilities of each prompt's target values: 0.9 color, 0.8 size, 0.7 background
    classes = list(COLOR_SIZE_BACKGROUND.classes)
    target = xr.DataArray(
        np.tile([0.9, 0.8, 0.7], (len(classes), 1)),
        dims=("prompt", "concept"),
        coords={"prompt": classes, "concept": ["color", "size", "background"]},
    )
    position = value_one_probability(target)
    # 011 = red (digit 0: P(blue) = 1 - 0.9), small (0.8), dark (0.7)
    np.testing.assert_allclose(position.sel(prompt="011").values, [0.1, 0.8, 0.7])
    np.testing.assert_allclose(position.sel(prompt="100").values, [0.9, 0.2, 0.3])
    perfect = value_one_probability(xr.ones_like(target))
    for name in classes:
        corner = [float(d) for d in COLOR_SIZE_BACKGROUND.digits(name)]
        np.testing.assert_allclose(perfect.sel(prompt=name).values, corner)


@pytest.mark.workflow
def test_background_study_runs_alone_through_snakemake(tmp_path):
    import yaml

    overlay = tmp_path / "background.yaml"
    overlay.write_text(yaml.safe_dump(TINY))
    configs = (REPO / "config.yaml", SMOKE, overlay)
    snakemake(tmp_path, "--cores", "2", configs=configs)
    results = tmp_path / "results"
    assert not (results / "signal").exists() and not (results / "claims.json").exists()
    with xr.open_dataset(results / "background" / "study.nc") as study:
        assert dict(study.sizes) == {
            "seed": 1, "step": 2, "method": study.sizes["method"], "prompt": 8, "concept": 3,
            "unseen": 4,
        }  # fmt: skip
        assert list(study["step"].values) == [20, 40]  # the study's own training
        assert list(study["unseen"].values) == ["011", "101", "110", "111"]
        assert float(study["background_gap"]) == pytest.approx(0.4)
        assert study["learning_time"].dims == ("seed", "method", "unseen")
        prob = study["concept_prob"].sel({"method": "naive"}).values
        assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    figure = results / "figures" / "fig_background.pdf"
    assert figure.read_bytes()[:5] == b"%PDF-"
    assert figure.with_suffix(".png").stat().st_size > 10_000
