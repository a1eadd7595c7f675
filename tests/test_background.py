"""The 2x2x2 background study: its runs and config, the concept-space position of its
classes, and the study run on its own through Snakemake (signal and underspecification
off) into results/background/study.nc and fig_background."""

import numpy as np
import pytest
import xarray as xr

from conceptspace.concepts import COLOR_SIZE_BACKGROUND
from conceptspace.config import ConfigError, load_config, merge, validate_config
from conceptspace.runs import checkpoint_steps
from conceptspace.figures.background import value_one_probability
from conceptspace.studies import STUDIES
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
    background = STUDIES["background"]
    runs = background.runs(config)
    assert [run.seed for run in runs] == [0, 100, 200, 300, 400]
    assert runs[0].id == "dc0.400_ds0.400_db0.400_seed0"
    assert runs[0].args == "--color-gap 0.4 --size-gap 0.4 --seed 0 --background-gap 0.4"
    assert background.training(config)["steps"] == 40000
    assert checkpoint_steps(background.training(config))[-1] == 40000
    assert STUDIES["signal"].training(config)["steps"] == 20000  # the others keep theirs


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
        naive = study.sel({"method": "naive"})
        for name in ("accuracy", "valid_fraction"):  # every prompt was sampled and scored
            values = naive[name].values
            assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        assert (naive["accuracy"] <= naive["valid_fraction"] + 1e-9).all()
        # the concept-space point averages the valid samples: NaN only where none is
        prob = naive["concept_prob"]
        np.testing.assert_array_equal(prob.isnull().all("concept"), naive["valid_fraction"] == 0)
        assert float(prob.min()) >= 0 and float(prob.max()) <= 1 or prob.isnull().all()
    figure = results / "figures" / "fig_background.pdf"
    assert figure.read_bytes()[:5] == b"%PDF-"
    assert figure.with_suffix(".png").stat().st_size > 10_000
