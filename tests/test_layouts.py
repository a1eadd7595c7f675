"""Concept layouts beyond 2x2: shape with prompt masking (underspecification) and the
background concept (2x2x2). The 2x2 layout is the signal study's constants."""

import json
import re

import numpy as np
import pytest
from conftest import REPO, SMOKE, every_sample_valid, snakemake

from conceptspace.concepts import (
    COLOR_SHAPE_ONE_HOT,
    CLASSES,
    COLOR_SHAPE,
    COLOR_SIZE,
    COLOR_SIZE_BACKGROUND,
    H_LAYOUT,
    MASK_VALUE,
    TRAINING_CLASSES,
    UNSEEN_CLASS,
    Signal,
    layout_named,
)
from conceptspace.config import load_config
from conceptspace.evaluate import write_evaluation
from conceptspace.figures.underspec import plot_underspec
from conceptspace.io import ConceptspaceError
from conceptspace.methods import build_methods
from conceptspace.render import (
    TRIANGLE_INRADIUS,
    TRIANGLE_SIDE,
    TRIANGLES,
    concept_labels,
    render_images,
    render_probe_set,
    render_training_set,
)
from conceptspace.netcdf import save_dataset_nc
from conceptspace.probe import train_probe
from conceptspace.trajectories import gather_run, gather_study

SIGNAL = Signal(color_gap=0.4, size_gap=0.4, background_gap=0.4)
# The data settings of config.yaml, small.
DATA = {**load_config(REPO / "config.yaml")["data"], "image_size": 16, "images_per_class": 40}


def test_the_2x2_layout_is_the_signal_studys_constants():
    assert COLOR_SIZE.classes == CLASSES
    assert COLOR_SIZE.training_classes == TRAINING_CLASSES
    assert COLOR_SIZE.unseen_classes == (UNSEEN_CLASS,)
    assert COLOR_SIZE.h_layout == H_LAYOUT
    for name in CLASSES:
        np.testing.assert_array_equal(COLOR_SIZE.class_h(name, SIGNAL), SIGNAL.class_h(name))
    assert layout_named(None) is COLOR_SIZE  # files from before layouts existed


def test_layouts_name_their_classes_and_h():
    assert COLOR_SHAPE.unseen_classes == ("11",)
    assert COLOR_SHAPE.label("11") == "blue triangle"
    assert COLOR_SHAPE.label("01") == "red triangle"
    np.testing.assert_allclose(COLOR_SHAPE.class_h("11", SIGNAL), [0.3, 0.3, 0.7, 1.0])
    assert COLOR_SIZE_BACKGROUND.training_classes == ("000", "001", "010", "100")
    assert COLOR_SIZE_BACKGROUND.unseen_classes == ("011", "101", "110", "111")
    # background 1 = dark grey 0.5 - db/2, the last slot of h
    np.testing.assert_allclose(
        COLOR_SIZE_BACKGROUND.class_h("001", SIGNAL), [0.7, 0.3, 0.3, 0.65, 0.3], rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown class"):
        COLOR_SHAPE.digits("111")


def sharp_masks(triangle, size=0.5, image_size=128):
    """Unblurred, noiseless masks (2, S, S) of a disc and a ``triangle`` of radius ``size``
    at the centre, and the pixel grid."""
    cfg = {**DATA, "image_size": image_size, "blur_sigma_px": 0.0, "noise_std": 0.0}
    black, white = np.zeros((2, 3)), np.ones((2, 3))
    images = render_images(
        black, [size] * 2, np.zeros((2, 2)), white, {**cfg, "triangle": triangle},
        np.random.default_rng(0), [0, 1],
    )  # fmt: skip
    return 1 - images[:, 0], np.linspace(-1, 1, image_size)


def test_the_equal_area_triangle_has_the_discs_area_and_points_up():
    masks, grid = sharp_masks("equal_area", image_size=201)
    pixel_area = (grid[1] - grid[0]) ** 2
    disc, triangle = masks.sum(axis=(1, 2)) * pixel_area
    assert disc == pytest.approx(np.pi * 0.25, rel=0.01)
    assert triangle == pytest.approx(disc, rel=0.01)
    rows = np.flatnonzero(masks[1].any(axis=1))
    inradius = TRIANGLE_INRADIUS * 0.5
    # apex up (row 0 is y = -1): 2 in-radii above the centre, the base 1 in-radius below
    assert grid[rows[0]] == pytest.approx(-2 * inradius, abs=0.02)
    assert grid[rows[-1]] == pytest.approx(inradius, abs=0.02)


def test_the_authors_triangle_has_base_equal_height_and_sides_of_slope_2():
    """The authors' code's triangle (docs/study.md "The images"), measured on a 128 px
    mask: base = height = the equal-area triangle's side, the base behind the centre by
    its in-radius, the apex pointing right, the sides of slope +-2."""
    size = 0.5
    masks, grid = sharp_masks("authors", size)
    triangle = masks[1] > 0.5
    pixel = grid[1] - grid[0]
    rows, columns = np.flatnonzero(triangle.any(axis=1)), np.flatnonzero(triangle.any(axis=0))
    base = (rows[-1] - rows[0] + 1) * pixel  # along y: the base is vertical
    height = (columns[-1] - columns[0] + 1) * pixel  # along x, base to apex
    side = TRIANGLE_SIDE * size
    assert base == pytest.approx(side, abs=2 * pixel)
    assert height == pytest.approx(side, abs=2 * pixel)
    assert grid[columns[0]] == pytest.approx(-TRIANGLE_INRADIUS * size, abs=pixel)
    # the apex narrows below a pixel's width in its last two pixels
    assert grid[columns[-1]] == pytest.approx(side - TRIANGLE_INRADIUS * size, abs=2 * pixel)
    assert grid[rows[0]] == pytest.approx(-grid[rows[-1]], abs=pixel)  # symmetric about y0
    # The apex side of each row ends at x = apex - 2 |y|: slope -2 above the centre, +2 below.
    ends = np.array([grid[np.flatnonzero(row)[-1]] for row in triangle[rows]])
    above = grid[rows] < -2 * pixel
    below = grid[rows] > 2 * pixel
    assert np.polyfit(grid[rows][above], ends[above], 1)[0] == pytest.approx(2.0, abs=0.05)
    assert np.polyfit(grid[rows][below], ends[below], 1)[0] == pytest.approx(-2.0, abs=0.05)


@pytest.mark.parametrize("triangle, ratio", [("authors", 2 / np.sqrt(3)), ("equal_area", 1.0)])
def test_the_triangles_area_against_the_discs(triangle, ratio):
    """authors: 2 pi / sqrt 3 size^2, 1.155 x the disc of the same size; equal_area: 1."""
    masks, _ = sharp_masks(triangle)
    disc, shape = masks.sum(axis=(1, 2))
    assert shape / disc == pytest.approx(ratio, rel=0.02)


def test_data_triangle_reaches_the_training_and_probe_sets():
    """The triangles change with data.triangle; the discs, concept values and positions
    do not; each set records its choice."""
    for render in (
        lambda data: render_training_set(data, SIGNAL, 3, COLOR_SHAPE, 0.5),
        lambda data: render_probe_set(data, [SIGNAL], 10, seed=1, layout=COLOR_SHAPE),
    ):
        drawn = {kind: render({**DATA, "triangle": kind}) for kind in TRIANGLES}
        authors, equal_area = drawn["authors"], drawn["equal_area"]
        triangles = authors["shape"] == 1
        assert triangles.any() and not triangles.all()
        for name in ("h", "label", "size", "position"):
            np.testing.assert_array_equal(authors[name], equal_area[name])
        np.testing.assert_array_equal(
            authors["images"][~triangles], equal_area["images"][~triangles]
        )
        differs = np.abs(authors["images"] - equal_area["images"]).max(axis=(1, 2, 3)) > 0.1
        assert differs[triangles].all()
        for kind, rendered in drawn.items():
            assert rendered.metadata["data"]["triangle"] == kind


@pytest.mark.parametrize("triangle", [None, "circle"])
def test_a_missing_or_unknown_triangle_is_named(triangle):
    data = {key: value for key, value in DATA.items() if key != "triangle"}
    if triangle:
        data["triangle"] = triangle
    with pytest.raises(ConceptspaceError, match="data.triangle.*'authors'.*'equal_area'"):
        render_probe_set(data, [SIGNAL], 4, seed=1, layout=COLOR_SHAPE)
    render_probe_set(data, [SIGNAL], 4, seed=1)  # discs only: no triangle to choose


def test_masking_hides_the_color_of_a_fraction_of_red_triangles_only():
    sets = {p: render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE, p) for p in (0.0, 0.5, 1.0)}
    labels = sets[0.0]["label"]
    assert sorted(set(labels)) == [COLOR_SHAPE.class_index(c) for c in ("00", "01", "10")]
    red_triangles = labels == COLOR_SHAPE.class_index("01")
    for p, rendered in sets.items():
        masked = rendered["masked"]
        assert masked.sum() == round(p * red_triangles.sum())
        assert not masked[~red_triangles].any()
        np.testing.assert_array_equal(rendered["h"][masked, :3], MASK_VALUE)
        assert (rendered["h"][~masked, :3] >= 0).all()
        # the images, and every h slot but the masked color, do not depend on p
        np.testing.assert_array_equal(rendered["images"], sets[0.0]["images"])
        np.testing.assert_array_equal(rendered["h"][:, 3], rendered["shape"])
        assert rendered.metadata["mask_ratio"] == p
        assert rendered.metadata["layout"] == "color_shape"
    # nested: what is masked at 0.5 is masked at 1.0
    assert (sets[1.0]["masked"] | ~sets[0.5]["masked"]).all()


def test_the_mask_value_is_what_the_masked_slots_hold_and_nothing_else_changes():
    # 0 (the authors' guidance null) instead of -1: the same images and the same masked
    # images, only the masked color slots differ
    minus_one = render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE, 0.5)
    zero = render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE, 0.5, mask_value=0.0)
    masked = zero["masked"]
    np.testing.assert_array_equal(masked, minus_one["masked"])
    np.testing.assert_array_equal(zero["h"][masked, :3], 0.0)
    np.testing.assert_array_equal(zero["h"][~masked], minus_one["h"][~masked])
    np.testing.assert_array_equal(zero["images"], minus_one["images"])
    assert zero.metadata["mask_value"] == 0.0 and minus_one.metadata["mask_value"] == MASK_VALUE


def test_the_mask_value_reaches_the_render_rule(tmp_path):
    # the study's key, through the workflow's settings, into the rendered set
    from conceptspace import cli
    from conceptspace.render import load_dataset

    settings = json.dumps({"data": DATA, "mask_value": 0.0})
    out = tmp_path / "set.npz"
    args = ["render", "--settings", settings, "--color-gap", "0.4", "--size-gap", "0.4"]
    args += ["--seed", "3", "--mask-ratio", "1.0", "--layout", "color_shape", "--out", str(out)]
    assert cli.main(args) == 0
    arrays, metadata = load_dataset(out)
    np.testing.assert_array_equal(arrays["h"][arrays["masked"], :3], 0.0)
    assert metadata["mask_value"] == 0.0 and "is 0 in h" in metadata["masking"]


def test_shape_one_hot_writes_the_shape_in_two_slots_and_nothing_else_changes():
    # the authors' encoding (shape_encoding: one_hot): h = (r, g, b, not triangle, triangle)
    assert COLOR_SHAPE_ONE_HOT.h_layout == ("red", "green", "blue", "not_shape", "shape")
    np.testing.assert_allclose(COLOR_SHAPE_ONE_HOT.class_h("11", SIGNAL), [0.3, 0.3, 0.7, 0, 1])
    np.testing.assert_allclose(COLOR_SHAPE_ONE_HOT.class_h("00", SIGNAL), [0.7, 0.3, 0.3, 1, 0])
    one_slot = render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE, 0.5)
    one_hot = render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE_ONE_HOT, 0.5)
    np.testing.assert_array_equal(one_hot["images"], one_slot["images"])
    np.testing.assert_array_equal(one_hot["masked"], one_slot["masked"])
    np.testing.assert_array_equal(one_hot["h"][:, :3], one_slot["h"][:, :3])  # masks too
    np.testing.assert_array_equal(one_hot["h"][:, 4], one_slot["h"][:, 3])
    np.testing.assert_array_equal(one_hot["h"][:, 3], 1 - one_slot["h"][:, 3])
    assert one_hot.metadata["layout"] == "color_shape_one_hot"


def test_the_shape_encoding_key_picks_the_layout_every_rule_is_given(tmp_path):
    overlay = tmp_path / "one_hot.yaml"
    overlay.write_text("studies:\n  underspecification:\n    shape_encoding: one_hot\n")
    target = "results/underspecification/study.nc"
    result = snakemake(tmp_path, target, "-n", "-p", configs=(REPO / "config.yaml", SMOKE, overlay))
    layouts = set(re.findall(r"--layout (\S+)", result.stdout))
    assert layouts == {"color_shape_one_hot"}, layouts  # render, probe and sample commands
    plain = snakemake(tmp_path, target, "-n", "-p", configs=(REPO / "config.yaml", SMOKE))
    assert set(re.findall(r"--layout (\S+)", plain.stdout)) == {"color_shape"}


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_masking_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ConceptspaceError, match=r"outside \[0, 1\].*mask_ratios"):
        render_training_set(DATA, SIGNAL, 3, COLOR_SHAPE, ratio)


def test_masking_a_layout_without_masking_is_refused():
    with pytest.raises(ConceptspaceError, match="color_shape layout or a ratio of 0"):
        render_training_set(DATA, SIGNAL, 3, COLOR_SIZE, 0.5)


def test_background_is_a_third_concept():
    rendered = render_training_set(DATA, SIGNAL, 3, COLOR_SIZE_BACKGROUND)
    digits = concept_labels(rendered["label"], COLOR_SIZE_BACKGROUND)
    grey = rendered["h"][:, 4]
    means = np.where(digits[:, 2] == 0, 0.7, 0.3)
    assert np.all(np.abs(grey - means) <= SIGNAL.background_halfwidth + 1e-6)
    # every channel of the pixel background is the grey level of h
    np.testing.assert_array_equal(rendered["background"], np.repeat(grey[:, None], 3, 1))
    corner = rendered["images"][:, :, 0, 0]  # far from most objects: mostly background
    assert np.median(np.abs(corner - grey[:, None])) < 0.01
    assert rendered.metadata["unseen_classes"] == ["011", "101", "110", "111"]


def test_probe_sets_hold_every_class_of_the_layout():
    probe_set = render_probe_set(DATA, [SIGNAL], 10, seed=1, layout=COLOR_SHAPE)
    digits = concept_labels(probe_set["label"], COLOR_SHAPE)
    assert len(np.unique(digits, axis=0)) == 4
    np.testing.assert_array_equal(probe_set["shape"], digits[:, 1])
    assert (probe_set["h"][:, :3] >= 0).all()  # the probe's set is never masked


def test_a_brief_probe_tells_the_authors_triangle_from_the_disc(tmp_path):
    """The probe trains on the data.triangle it is given: a small one separates discs from
    the authors' triangles at 16 px (held-out images)."""
    probe_cfg = {
        "channels": [8, 8, 8], "groups": 4, "attention_heads": 2, "images_per_class": 64,
        "steps": 150, "batch_size": 32, "lr": 0.002, "weight_decay": 0.01,
        "validation_fraction": 0.15, "min_accuracy": 0.9,
    }  # fmt: skip
    data = {**DATA, "triangle": "authors"}
    metrics = train_probe(
        data, probe_cfg, [SIGNAL], 0, tmp_path / "p.pt", tmp_path / "m.json", layout=COLOR_SHAPE
    )
    assert metrics["accuracy"]["shape"] >= 0.95 and metrics["accuracy"]["color"] >= 0.95


# ----------------------------------------------------------------------------- gathering

STEPS = [100, 400, 900, 1600]
EVALUATION = {
    "threshold": 0.8,
    "sigma": 0.0,
    "min_valid_fraction": 0.25,
    "authors": {"threshold": 0.9, "sigma": 1.0, "consecutive": 2},
}
METHODS_CFG = {
    "overprompt": {"colors": [[0.1, 0.1, 0.9]]},
    "intervention": {
        "alphas": [1.0],
        "beta": 0.1,
        "color_direction": [0.05, 0.05, 0.95],
        "size_direction": 0.6,
    },
    "patching": {"donors": []},
}


def write_layout_run(folder, layout, seed, crossing, **run):
    """A fabricated run of ``layout``: every prompt at 0.3 per concept, the unseen
    classes' naive prompts at 1 from step index ``crossing`` on (None: never)."""
    methods = build_methods(METHODS_CFG, STEPS[-1], layout)
    paths = []
    for index, step in enumerate(STEPS):
        p_target = np.full((len(methods), len(layout.classes), len(layout.concepts), 3), 0.3)
        for u in layout.unseen_classes:
            if crossing is not None and index >= crossing:
                p_target[0, layout.class_index(u)] = 1.0
        tag = "_".join(f"{k}{v}" for k, v in run.items())
        path = folder / f"{layout.name}_s{seed}_{tag}_{step}.nc"
        attrs = {"step": step, "seed": seed, "color_gap": 0.4, "size_gap": 0.4, **run}
        attrs["layout"] = layout.name
        write_evaluation(
            path,
            p_target,
            methods,
            layout.classes,
            layout.concepts,
            attrs,
            every_sample_valid(p_target),
        )
        paths.append(path)
    out = folder / f"{layout.name}_s{seed}_{tag}.nc"
    save_dataset_nc(gather_run(paths), out)
    return out, methods


def test_the_underspecification_study_has_the_claims_contract(tmp_path):
    crossings = {(0, 0.0): 1, (0, 1.0): None, (1, 0.0): 2, (1, 1.0): 3}
    runs = [
        write_layout_run(tmp_path, COLOR_SHAPE, seed, crossing, mask_ratio=ratio)
        for (seed, ratio), crossing in crossings.items()
    ]
    methods = runs[0][1]
    # color_shape has no latent intervention; its overprompt pushes the blue triangle
    assert [m.name for m in methods] == ["naive", "overprompt_0"]
    assert methods[1].prompts == ("11",)
    study = gather_study([path for path, _ in runs], {}, EVALUATION, grid=("seed", "mask_ratio"))
    assert study["concept_prob"].dims == (
        "seed",
        "mask_ratio",
        "step",
        "method",
        "prompt",
        "concept",
    )
    assert list(study["prompt"].values) == ["00", "01", "10", "11"]
    assert list(study["concept"].values) == ["color", "shape"]
    assert study["accuracy"].dims[:2] == ("seed", "mask_ratio")
    times = study["learning_time"]
    assert times.dims == ("seed", "mask_ratio", "method")
    naive = times.sel({"method": "naive"})
    np.testing.assert_array_equal(naive.values, [[400, np.nan], [900, 1600]])
    assert float(study["color_gap"]) == 0.4  # the same in every run: a scalar coordinate
    assert study.attrs["layout"] == "color_shape"
    assert study["mask_ratio"].attrs["long_name"].startswith("masking ratio")


def test_runs_of_two_studies_are_not_gathered_together(tmp_path):
    first, _ = write_layout_run(tmp_path, COLOR_SHAPE, 0, 1, mask_ratio=0.0)
    other = tmp_path / "other"
    other.mkdir()
    second, _ = write_layout_run(other, COLOR_SHAPE, 0, 1, mask_ratio=0.5)
    with pytest.raises(ConceptspaceError, match="differ outside the study's grid"):
        gather_study([first, second], {}, EVALUATION, grid=("seed",))


def test_several_unseen_classes_get_an_unseen_dimension(tmp_path):
    path, methods = write_layout_run(tmp_path, COLOR_SIZE_BACKGROUND, 0, 2, background_gap=0.4)
    # overprompts (blue) reach the unseen classes whose color is blue
    assert methods[1].prompts == ("101", "110", "111")
    study = gather_study([path], {}, EVALUATION)
    assert study["learning_time"].dims == ("seed", "color_gap", "size_gap", "method", "unseen")
    assert list(study["unseen"].values) == ["011", "101", "110", "111"]
    np.testing.assert_array_equal(
        study["learning_time"].sel({"method": "naive"}).values.ravel(), [900] * 4
    )


def test_fig_underspec_draws_never_reached_seeds(tmp_path):
    crossings = {(0, 0.0): 1, (0, 1.0): None, (1, 0.0): 2, (1, 1.0): None}
    runs = [
        write_layout_run(tmp_path, COLOR_SHAPE, seed, crossing, mask_ratio=ratio)[0]
        for (seed, ratio), crossing in crossings.items()
    ]
    study = gather_study(runs, {}, EVALUATION, grid=("seed", "mask_ratio"))
    pdf, png = plot_underspec(study, tmp_path / "fig_underspec.pdf", [])
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0
    with pytest.raises(ConceptspaceError, match="underspecification study"):
        plot_underspec(study.isel(mask_ratio=0), [], tmp_path / "bad.pdf")
