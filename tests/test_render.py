"""Synthetic images: concept values and pixels land where the config says; datasets are
seeded exactly and survive a round trip through disk."""

import json

import numpy as np
import pytest

from conceptspace.concepts import CLASSES, TRAINING_CLASSES, Signal, class_digits, class_index
from conceptspace.io import ConceptspaceError
from conceptspace.render import (
    DATASET_ARRAYS,
    concept_labels,
    load_dataset,
    pixel_grid,
    render_images,
    render_probe_set,
    render_training_set,
    sample_concepts,
    save_dataset,
)

SIZE = 16
SIGNAL = Signal(color_gap=0.4, size_gap=0.4)
TOLERANCE = 1e-6  # float32 rounding of values sampled in float64


@pytest.fixture
def data_cfg():
    return {
        "image_size": SIZE,
        "images_per_class": 40,
        "validation_fraction": 0.15,
        "blur_sigma_px": 1.0,
        "noise_std": 0.001,
        "position_range": 0.5,
        "background_train": [0.8, 1.0],
        "background_test": 0.9,
    }


@pytest.fixture
def training_set(data_cfg):
    return render_training_set(data_cfg, SIGNAL, seed=3)


def radius_px(size):
    return size * (SIZE - 1) / 2


def assert_concepts_match_signal(colors, sizes, labels, signal):
    """Each sample's values lie in its class's range around the signal's means."""
    color_digit, size_digit = concept_labels(labels).T
    color_means = np.stack([signal.color_mean(c) for c in color_digit])
    size_means = np.array([signal.size_mean(s) for s in size_digit])
    assert np.all(np.abs(colors - color_means) <= signal.color_halfwidth + TOLERANCE)
    unfloored = size_means - signal.size_halfwidth > 0.1
    assert np.all(np.abs(sizes - size_means)[unfloored] <= signal.size_halfwidth + TOLERANCE)
    assert np.all(sizes >= 0.1)


def test_concept_values_spread_uniformly_around_the_class_means(training_set):
    labels = training_set["label"]
    assert_concepts_match_signal(training_set["color"], training_set["size"], labels, SIGNAL)
    # The values really spread (not all at the mean) over most of their range.
    for name in TRAINING_CLASSES:
        members = labels == class_index(name)
        color, size = class_digits(name)
        color_offsets = training_set["color"][members] - SIGNAL.color_mean(color)
        size_offsets = training_set["size"][members] - SIGNAL.size_mean(size)
        assert np.abs(color_offsets).max() > 0.8 * SIGNAL.color_halfwidth
        assert np.abs(size_offsets).max() > 0.8 * SIGNAL.size_halfwidth
        assert abs(color_offsets.mean()) < 0.3 * SIGNAL.color_halfwidth
    # h is the sample's own (r, g, b, size).
    expected_h = np.concatenate([training_set["color"], training_set["size"][:, None]], axis=1)
    np.testing.assert_array_equal(training_set["h"], expected_h)
    assert training_set["h"].dtype == np.float32


def test_sizes_have_a_floor_of_one_tenth():
    wide = Signal(color_gap=0.4, size_gap=0.8)  # small mean 0.05, spread +- 0.3
    colors, sizes = sample_concepts(["01"] * 500, wide, np.random.default_rng(0))
    assert sizes.min() == pytest.approx(0.1)
    assert np.mean(sizes == np.float32(0.1)) > 0.3
    assert sizes.max() <= wide.size_mean(1) + wide.size_halfwidth + TOLERANCE
    assert colors.shape == (500, 3)


def test_nuisances_stay_in_their_ranges(training_set, data_cfg):
    assert np.all(np.abs(training_set["position"]) <= data_cfg["position_range"])
    low, high = data_cfg["background_train"]
    assert training_set["background"].min() >= low and training_set["background"].max() <= high
    # Backgrounds vary per channel, not one grey per image.
    assert np.ptp(training_set["background"], axis=1).max() > 0.05


def measured_radius_px(image, color, background):
    """Radius of the area whose pixels are closer to the object color than the background."""
    pixels = image.reshape(3, -1).T
    to_color = np.linalg.norm(pixels - color, axis=1)
    to_background = np.linalg.norm(pixels - background, axis=1)
    return np.sqrt(np.sum(to_color < to_background) / np.pi)


def test_pixels_show_the_disc_with_its_color_size_and_background(data_cfg):
    sizes = np.array([0.3, 0.5, 0.6, 0.75, 0.55], np.float32)
    positions = np.array([[0, 0], [0.2, -0.3], [-0.1, 0.1], [0, 0], [-0.4, 0.4]], np.float32)
    colors = np.array([[0.7, 0.3, 0.3], [0.3, 0.3, 0.7]] * 2 + [[0.9, 0.1, 0.1]], np.float32)
    backgrounds = np.array([[0.9, 0.85, 0.95]] * 5, np.float32)
    images = render_images(
        colors, sizes, positions, backgrounds, data_cfg, np.random.default_rng(1)
    )
    assert images.shape == (5, 3, SIZE, SIZE) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    grid = pixel_grid(SIZE)
    for image, color, size, (x, y), background in zip(
        images, colors, sizes, positions, backgrounds
    ):
        centre = image[:, np.abs(grid - y).argmin(), np.abs(grid - x).argmin()]
        if radius_px(size) >= 3.5:  # the 1 px blur leaves the centre of a big disc pure
            np.testing.assert_allclose(centre, color, atol=0.02)
        else:  # a small disc's centre is mixed with background, but mostly color
            assert np.linalg.norm(centre - color) < 0.3 * np.linalg.norm(background - color)
        # The corner farthest from the object sees only background.
        row = 0 if y > 0 else SIZE - 1
        column = 0 if x > 0 else SIZE - 1
        np.testing.assert_allclose(image[:, row, column], background, atol=0.005)
        assert abs(measured_radius_px(image, color, background) - radius_px(size)) < 1.0


def test_blur_softens_the_edge_and_noise_has_the_configured_std(data_cfg):
    colors, backgrounds = np.zeros((1, 3)), np.ones((1, 3))
    args = (colors, np.array([0.5]), np.zeros((1, 2)), backgrounds)
    sharp = render_images(
        *args, {**data_cfg, "blur_sigma_px": 0, "noise_std": 0}, np.random.default_rng(0)
    )
    blurred = render_images(*args, {**data_cfg, "noise_std": 0}, np.random.default_rng(0))
    assert set(np.unique(sharp)) == {0.0, 1.0}
    intermediate = (blurred > 0.05) & (blurred < 0.95)
    assert intermediate.sum() > 3 * 4 * SIZE // 2  # a ring of soft pixels around the disc

    grey = np.full((1, 3), 0.5)
    noisy = render_images(
        grey,
        np.array([0.3]),
        np.zeros((1, 2)),
        grey,
        {**data_cfg, "noise_std": 0.05},
        np.random.default_rng(0),
    )
    assert np.std(noisy - 0.5) == pytest.approx(0.05, rel=0.15)


def test_training_pixels_match_their_own_concept_values(training_set):
    grid = pixel_grid(SIZE)
    large = training_set["size"] > 0.5  # discs of >= 3.75 px radius: blur leaves the centre
    assert large.sum() > 20
    for index in np.flatnonzero(large):
        image = training_set["images"][index]
        x, y = training_set["position"][index]
        centre = image[:, np.abs(grid - y).argmin(), np.abs(grid - x).argmin()]
        np.testing.assert_allclose(centre, training_set["color"][index], atol=0.02)
        corner = image[:, 0 if y > 0 else SIZE - 1, 0 if x > 0 else SIZE - 1]
        np.testing.assert_allclose(corner, training_set["background"][index], atol=0.005)


def test_training_set_holds_the_training_classes_only(training_set, data_cfg):
    per_class = data_cfg["images_per_class"]
    labels = training_set["label"]
    assert set(training_set) >= set(DATASET_ARRAYS)
    assert len(labels) == 3 * per_class and labels.dtype == np.int64
    assert class_index("11") not in labels
    for name in TRAINING_CLASSES:
        members = labels == class_index(name)
        assert members.sum() == per_class
        assert training_set["is_validation"][members].sum() == round(0.15 * per_class)
    for name in ("images", "h", "color", "size", "position", "background", "is_validation"):
        assert len(training_set[name]) == len(labels), name
    assert training_set["is_validation"].dtype == bool


def test_probe_set_holds_all_classes_pooled_over_signals(data_cfg):
    signals = [Signal(0.2, 0.3), Signal(0.6, 0.4), Signal(0.8, 0.2)]
    probe_set = render_probe_set(data_cfg, signals, images_per_class=60, seed=5)
    labels = probe_set["label"]
    assert len(labels) == 4 * 60
    for name in CLASSES:
        members = labels == class_index(name)
        assert members.sum() == 60
        assert probe_set["is_validation"][members].sum() == round(0.15 * 60)
    # Each image's signal level is one of the given ones, and all of them are used.
    levels = set(zip(probe_set["color_gap"].tolist(), probe_set["size_gap"].tolist()))
    assert levels == {(np.float32(s.color_gap), np.float32(s.size_gap)) for s in signals}
    for signal in signals:
        members = np.isclose(probe_set["color_gap"], signal.color_gap) & np.isclose(
            probe_set["size_gap"], signal.size_gap
        )
        assert members.sum() > 40
        assert_concepts_match_signal(
            probe_set["color"][members], probe_set["size"][members], labels[members], signal
        )


def test_a_seed_fixes_the_dataset_exactly(data_cfg, training_set):
    again = render_training_set(data_cfg, SIGNAL, seed=3)
    other = render_training_set(data_cfg, SIGNAL, seed=4)
    for name in training_set:
        assert training_set[name].tobytes() == again[name].tobytes(), name
    for name in ("images", "color", "size", "position", "background", "is_validation"):
        assert training_set[name].tobytes() != other[name].tobytes(), name


def test_save_and_load_round_trip(tmp_path, training_set):
    path = tmp_path / "dc0.400_ds0.400_seed3.npz"
    save_dataset(path, training_set, {"note": "extra"})
    with np.load(path, allow_pickle=False) as archive:  # stored without pickle, as uint8
        assert archive["images"].dtype == np.uint8
    arrays, metadata = load_dataset(path)
    assert arrays["images"].dtype == np.float32
    # uint8 quantisation: within half a step of the rendered values.
    assert np.abs(arrays["images"] - training_set["images"]).max() <= 0.5 / 255 + 1e-6
    for name in DATASET_ARRAYS[1:]:
        np.testing.assert_array_equal(arrays[name], training_set[name], err_msg=name)
        assert arrays[name].dtype == training_set[name].dtype, name
    assert metadata["note"] == "extra"
    assert metadata["seed"] == 3 and metadata["signal"] == {"color_gap": 0.4, "size_gap": 0.4}
    assert metadata["data"]["image_size"] == SIZE
    np.testing.assert_allclose(metadata["class_means"]["11"], SIGNAL.class_h("11"))
    assert metadata["provenance"]["seed"] == 3 and "config_hash" in metadata["provenance"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_missing_or_foreign_dataset_is_refused(tmp_path):
    with pytest.raises(ConceptspaceError, match="does not exist"):
        load_dataset(tmp_path / "absent.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, metadata=np.array(json.dumps({})), other=np.zeros(3))
    with pytest.raises(ConceptspaceError, match="missing"):
        load_dataset(foreign)
