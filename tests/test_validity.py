"""The pixel-level validity check: real images of every study's classes and signal levels
pass, and what the probe mistakes for a perfect sample (blank images), two objects, an
object mostly outside the frame, noise and specks do not, each counted as a rate."""

import functools
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch

from conceptspace.concepts import (
    COLOR_SHAPE,
    COLOR_SIZE,
    COLOR_SIZE_BACKGROUND,
    LAYOUTS,
    Signal,
    celeba_layout,
)
from conceptspace.config import load_config
from conceptspace.runs import MAX_COLOR_GAP, MAX_SIZE_GAP
from conceptspace.studies import STUDIES
from conceptspace.render import TRIANGLE_INRADIUS, TRIANGLES, render_images, render_probe_set
from conceptspace import validity
from conceptspace.validity import diagnostics, label_components, sample_validity

REPO = Path(__file__).resolve().parents[1]
PRESETS = (
    (REPO / "config.yaml",),
    (REPO / "config.yaml", REPO / "workflow" / "presets" / "cpu-long.yaml"),  # extends cpu
    (REPO / "config.yaml", REPO / "workflow" / "presets" / "cpu-16px.yaml"),
    (REPO / "config.yaml", REPO / "workflow" / "presets" / "smoke.yaml"),
)
SIZES = (16, 32)
MIN_RATE = 0.99  # of real images judged valid, and of each kind of failure judged invalid
IMAGES = 600  # per layout, image size and kind


def study_signals() -> dict[str, list[Signal]]:
    """Every signal level of each synthetic study in config.yaml and the cpu, cpu-16px
    and smoke presets, by layout."""
    found = {name: set() for name in LAYOUTS}
    for paths in PRESETS:
        config = load_config(*paths)
        for study in STUDIES.values():
            if study.renders:
                found[study.layout].update(run.signal for run in study.runs(config))
    return {name: sorted(levels, key=astuple) for name, levels in found.items() if levels}


SIGNALS = study_signals()


def data_cfg(size: int, triangle: str | None = None) -> dict:
    """config.yaml's data section at ``size`` px (and ``triangle``: data.triangle)."""
    data = dict(load_config(REPO / "config.yaml")["data"], image_size=size)
    return data if triangle is None else dict(data, triangle=triangle)


# The layouts whose real images are checked, color_shape with each triangle.
DRAWN = [(LAYOUTS[name], None) for name in SIGNALS if name != COLOR_SHAPE.name]
DRAWN += [(COLOR_SHAPE, triangle) for triangle in TRIANGLES]


def case_id(value):
    """A test id for a layout, a signal level or a triangle (None: config.yaml's)."""
    if isinstance(value, Signal):
        return "-".join(f"{gap:g}" for gap in astuple(value))
    return getattr(value, "name", None) or value or "default"


@functools.lru_cache(maxsize=None)
def real_set(layout, size, images=IMAGES, triangle=None):
    """Probe-set images of every class of ``layout`` pooled over its studies' levels
    (shared: callers must not change it); triangles as ``triangle`` (None: config.yaml's)."""
    per_class = images // len(layout.classes)
    data = data_cfg(size, triangle)
    return render_probe_set(data, SIGNALS[layout.name], per_class, size, layout=layout)


def validity_by_level(images, real, layout, size):
    """``sample_validity`` called as evaluation does, with each image's run signal."""
    valid = np.zeros(len(images), bool)
    for signal in SIGNALS[layout.name]:
        members = np.isclose(real["color_gap"], signal.color_gap) & np.isclose(
            real["size_gap"], signal.size_gap
        )
        valid[members] = sample_validity(images[members], layout, data_cfg(size), signal)
    return valid


def rerender(real, positions, size, rng, backgrounds=None):
    """The real set's objects drawn again at other positions (and backgrounds)."""
    backgrounds = real["background"] if backgrounds is None else backgrounds
    data = real.metadata["data"]  # the real set's, its triangle included
    return render_images(
        real["color"], real["size"], positions, backgrounds, data, rng, real.get("shape")
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("layout, triangle", DRAWN, ids=case_id)
def test_real_images_of_every_class_and_level_are_valid(layout, triangle, size):
    real = real_set(layout, size, triangle=triangle)
    drawn = set(zip(real["color_gap"].tolist(), real["size_gap"].tolist()))  # float32 values
    levels = {
        (np.float32(s.color_gap).item(), np.float32(s.size_gap).item())
        for s in SIGNALS[layout.name]
    }
    assert drawn == levels, "a level has no images"
    valid = validity_by_level(real["images"], real, layout, size)
    assert valid.mean() >= MIN_RATE, f"{valid.mean():.3f} of real {layout.name} images valid"
    for label in range(len(layout.classes)):
        assert valid[real["label"] == label].mean() >= MIN_RATE, layout.classes[label]


def blank_images(layout, size, rng):
    """No object, on every kind of background: the training range's nuisance (each channel
    drawn), greys across it, the test grey, white, and the layout's own backgrounds; with
    the renderer's pixel noise."""
    data = data_cfg(size)
    low, high = data["background_train"]
    n = IMAGES // 4
    real = real_set(layout, size)
    backgrounds = np.concatenate(
        [
            rng.uniform(low, high, (n, 3)),
            np.repeat(np.linspace(low, high, n)[:, None], 3, axis=1),
            np.full((n // 2, 3), data["background_test"]),
            np.ones((n // 2, 3)),
            real["background"][:n],
        ]
    )
    nothing = np.zeros(len(backgrounds))
    return render_images(backgrounds, nothing, np.zeros((len(nothing), 2)), backgrounds, data, rng)


def two_objects(layout, size, rng):
    """Two real objects apart inside the frame, composited on the first one's background."""
    real = real_set(layout, size, images=2 * IMAGES)  # not every pair fits apart
    half = len(real["images"]) // 2
    first, second = np.arange(half), np.arange(half, 2 * half)
    extent = real["size"] * np.where(real.get("shape", 0) == 1, 2 * TRIANGLE_INRADIUS, 1.0)
    # Blurred edges reach ~2 px out at OBJECT_THRESHOLD; apart means 6 px between edges.
    gap = extent[first] + extent[second] + 6 * 2 / (size - 1)
    # 64 tries of 2 positions per pair, each object inside the frame
    room = np.maximum(1 - np.stack([extent[first], extent[second]], 1), 0)
    tries = rng.uniform(-1, 1, (half, 64, 2, 2)) * room[:, None, :, None]
    apart = np.linalg.norm(tries[:, :, 0] - tries[:, :, 1], axis=-1) > gap[:, None]
    kept = apart.any(1)
    chosen = tries[np.arange(half), np.argmax(apart, axis=1)][kept]
    first, second = first[kept], second[kept]
    positions = np.zeros((len(real["images"]), 2))
    positions[first], positions[second] = chosen[:, 0], chosen[:, 1]
    backgrounds = real["background"].copy()
    backgrounds[second] = backgrounds[first]
    images = rerender(real, positions, size, rng, backgrounds)
    composite = images[first] + images[second] - backgrounds[first][:, :, None, None]
    return np.clip(composite, 0.0, 1.0)


def outside_positions(real, size, rng):
    """Centres beyond a border by a quarter to a whole radius (in grid units) of the real
    set's objects: at least 60% of each object is outside (a disc 66%, an equal-area
    triangle 60%, the authors' 62%)."""
    n = len(real["images"])
    reach = data_cfg(size)["position_range"]
    beyond = 1 + rng.uniform(0.25, 1.0, n) * real["size"]
    along = rng.uniform(-reach, reach, n)
    axis = rng.integers(0, 2, n)
    sign = rng.choice([-1.0, 1.0], n)
    positions = np.where(axis[:, None] == 0, np.stack([sign * beyond, along], 1), 0.0)
    positions += np.where(axis[:, None] == 1, np.stack([along, sign * beyond], 1), 0.0)
    return positions


def outside_frame(layout, size, rng):
    """Real objects mostly outside the frame (``outside_positions``)."""
    real = real_set(layout, size)
    return rerender(real, outside_positions(real, size, rng), size, rng)


def pure_noise(layout, size, rng):
    """Uniform noise, and blank backgrounds with Gaussian noise of std 0.02 to 0.1 (20 to
    100 times the renderer's)."""
    real = real_set(layout, size)
    third = IMAGES // 3
    uniform = rng.uniform(0, 1, (third, 3, size, size))
    std = rng.uniform(0.02, 0.1, (2 * third, 1, 1, 1))
    grainy = real["background"][: 2 * third, :, None, None] + std * rng.standard_normal(
        (2 * third, 3, size, size)
    )
    return np.clip(np.concatenate([uniform, grainy]), 0.0, 1.0).astype(np.float32)


def specks(layout, size, rng):
    """One or two pixels of an object's colour on its blank background."""
    real = real_set(layout, size)
    n = len(real["images"])
    nothing = np.zeros(n)
    images = render_images(
        real["background"], nothing, np.zeros((n, 2)), real["background"], data_cfg(size), rng
    )
    row, column = rng.integers(1, size - 2, (2, n))
    wide = rng.integers(0, 2, n)  # half the specks are two pixels side by side
    for index, color in enumerate(real["color"]):
        images[index, :, row[index], column[index] : column[index] + 1 + wide[index]] = color[
            :, None
        ]
    return images


FAILURES = {
    "blank": blank_images,
    "two objects": two_objects,
    "outside the frame": outside_frame,
    "noise": pure_noise,
    "speck": specks,
}
# Two objects of color_shape (large sizes only) cannot both fit the frame apart; its
# objects outside the frame are checked per triangle below.
FAILURE_LAYOUTS = {
    "two objects": (COLOR_SIZE, COLOR_SIZE_BACKGROUND),
    "outside the frame": (COLOR_SIZE, COLOR_SIZE_BACKGROUND),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_failures_are_invalid(kind, size):
    for layout in FAILURE_LAYOUTS.get(kind, (COLOR_SIZE, COLOR_SHAPE, COLOR_SIZE_BACKGROUND)):
        signal = SIGNALS[layout.name][0]  # bounds hold at every level: any run's signal
        images = FAILURES[kind](layout, size, np.random.default_rng(size))
        assert len(images) >= IMAGES // 4, f"too few {kind} images to count a rate"
        invalid = ~sample_validity(images, layout, data_cfg(size), signal)
        assert invalid.mean() >= MIN_RATE, f"{kind} ({layout.name}): {invalid.mean():.3f} invalid"


# Measured over 2,400 images: 82% (16 px) and 93% (32 px) invalid.
APEX_IN_MIN_RATE = {16: 0.7, 32: 0.85}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("triangle", TRIANGLES)
def test_shapes_mostly_outside_the_frame_are_invalid(triangle, size):
    """As the other failures, but for the authors' triangle left of the frame: its apex
    points in and its visible tip can pass as a triangle cut by the frame (validity.py,
    Limits), at a rate of its own."""
    rng = np.random.default_rng(size)
    real = real_set(COLOR_SHAPE, size, triangle=triangle)
    positions = outside_positions(real, size, rng)
    images = rerender(real, positions, size, rng)
    signal = SIGNALS[COLOR_SHAPE.name][0]
    invalid = ~sample_validity(images, COLOR_SHAPE, data_cfg(size), signal)
    apex_in = (real["shape"] == 1) & (positions[:, 0] < -1) & (triangle == "authors")
    assert invalid[~apex_in].mean() >= MIN_RATE, f"{invalid[~apex_in].mean():.3f} invalid"
    if apex_in.any():
        rate = invalid[apex_in].mean()
        assert rate >= APEX_IN_MIN_RATE[size], f"apex in: {rate:.3f} of {apex_in.sum()} invalid"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "layout, signal, triangle",
    [
        (COLOR_SIZE, Signal(MAX_COLOR_GAP, MAX_SIZE_GAP), None),  # largest, smallest objects
        (COLOR_SIZE, Signal(0.05, MAX_SIZE_GAP), None),  # ... nearly grey
        # triangles wider than the frame
        *((COLOR_SHAPE, Signal(MAX_COLOR_GAP, MAX_SIZE_GAP), kind) for kind in TRIANGLES),
        (COLOR_SIZE_BACKGROUND, Signal(MAX_COLOR_GAP, MAX_SIZE_GAP, MAX_COLOR_GAP), None),
    ],
    ids=case_id,
)
def test_bounds_hold_at_the_limits_the_config_allows(layout, signal, triangle, size):
    per_class = IMAGES // len(layout.classes)
    real = render_probe_set(data_cfg(size, triangle), [signal], per_class, 7, 0, layout)
    valid = sample_validity(real["images"], layout, data_cfg(size), signal)
    assert valid.mean() >= MIN_RATE, f"{valid.mean():.3f} valid"


def test_the_background_layout_needs_the_runs_signal():
    real = real_set(COLOR_SIZE_BACKGROUND, 16)
    with pytest.raises(ValueError, match="pass signal=concepts.Signal"):
        sample_validity(real["images"], COLOR_SIZE_BACKGROUND, data_cfg(16))


def test_images_of_another_size_or_shape_are_refused():
    real = real_set(COLOR_SIZE, 16)
    with pytest.raises(ValueError, match="data.image_size is 32"):
        sample_validity(real["images"], COLOR_SIZE, data_cfg(32))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        sample_validity(real["images"][:, :2], COLOR_SIZE, data_cfg(16))


def test_torch_tensors_get_the_same_verdict_as_arrays():
    images = np.concatenate(
        [
            real_set(COLOR_SIZE, 16)["images"][:50],
            blank_images(COLOR_SIZE, 16, np.random.default_rng(0))[:50],
        ]
    )
    verdict = sample_validity(images, COLOR_SIZE, data_cfg(16))
    assert verdict[:50].all() and not verdict[50:].any()
    np.testing.assert_array_equal(
        sample_validity(torch.from_numpy(images), COLOR_SIZE, data_cfg(16)), verdict
    )


def test_diagnostics_measure_the_object():
    """A disc of known radius away from the border: one object of about its area, centred
    where it was drawn, not touching the border, and the background it was drawn on."""
    data = data_cfg(32)
    radius_px = 6
    n = 20
    rng = np.random.default_rng(0)
    positions = rng.uniform(-0.3, 0.3, (n, 2))
    backgrounds = rng.uniform(0.8, 1.0, (n, 3))
    colors = np.tile([0.7, 0.3, 0.3], (n, 1))
    sizes = np.full(n, radius_px * 2 / (32 - 1))
    images = render_images(colors, sizes, positions, backgrounds, data, rng)
    found = diagnostics(images, COLOR_SIZE, data)
    np.testing.assert_allclose(found["background"], backgrounds, atol=0.005)
    assert (found["objects"] == 1).all() and not found["touches_border"].any()
    # The blurred edge counts where it exceeds the threshold: a ring about 1 px wide.
    assert np.all(np.abs(found["area"] - np.pi * (radius_px + 1) ** 2) < 2 * np.pi * radius_px)
    np.testing.assert_allclose(found["centroid"], positions, atol=0.02)
    assert (found["noise"] < 0.005).all()
    noisy = 0.5 + 0.02 * rng.standard_normal(images.shape)  # unclipped
    np.testing.assert_allclose(diagnostics(noisy, COLOR_SIZE, data)["noise"], 0.02, rtol=0.2)


def test_the_frame_rule_refuses_an_object_centred_past_the_position_range():
    """The frame rule's switch: a disc centred past the position range and cut by the
    frame is valid only with the rule off. The negative control: real images (some cut by
    the frame, all centred within the range) and blanks get the same verdict either way."""
    data = data_cfg(32)
    n = 20
    rng = np.random.default_rng(0)
    reach = data["position_range"]
    # Radius 0.3 from x in [0.8, 0.9]: past the range (0.5) and across the border (1).
    positions = np.stack([rng.uniform(0.8, 0.9, n), rng.uniform(-reach, reach, n)], 1)
    colors = np.tile([0.7, 0.3, 0.3], (n, 1))
    beyond = render_images(colors, np.full(n, 0.3), positions, np.ones((n, 3)), data, rng)
    assert diagnostics(beyond, COLOR_SIZE, data)["touches_border"].all()
    assert not sample_validity(beyond, COLOR_SIZE, data).any()
    assert sample_validity(beyond, COLOR_SIZE, data, frame_rule=False).all()

    real = real_set(COLOR_SIZE, 32)["images"]
    blank = blank_images(COLOR_SIZE, 32, rng)
    assert diagnostics(real, COLOR_SIZE, data)["touches_border"].any()
    for images in (real, blank):
        measured = validity.measure(images, COLOR_SIZE, data)
        np.testing.assert_array_equal(measured.valid(), measured.valid(frame_rule=False))


def flood_fill_components(mask):
    """Reference labels of one 2-d mask: 8-connected, each component named by the raster
    index of its first pixel."""
    height, width = mask.shape
    labels = -np.ones(mask.shape, int)
    for start in zip(*np.nonzero(mask)):
        if labels[start] >= 0:
            continue
        name = start[0] * width + start[1]
        labels[start], stack = name, [start]
        while stack:
            i, j = stack.pop()
            for ni in range(max(i - 1, 0), min(i + 2, height)):
                for nj in range(max(j - 1, 0), min(j + 2, width)):
                    if mask[ni, nj] and labels[ni, nj] < 0:
                        labels[ni, nj] = name
                        stack.append((ni, nj))
    return labels


def test_components_match_a_flood_fill():
    rng = np.random.default_rng(0)
    masks = np.concatenate([rng.random((30, 16, 16)) < density for density in (0.2, 0.45, 0.6)])
    spiral = np.zeros((1, 16, 16), bool)  # one long winding component: many rounds
    spiral[0, ::2, :] = True
    spiral[0, 1::4, -1] = spiral[0, 3::4, 0] = True
    masks = np.concatenate([masks, spiral])
    labels = label_components(masks)
    for mask, found in zip(masks, labels):
        np.testing.assert_array_equal(found, flood_fill_components(mask))
    assert len(np.unique(labels[-1][labels[-1] >= 0])) == 1


def test_celeba_images_are_judged_by_their_contrast():
    """Faces fill the frame: only a near-constant generation (flat, with noise) is
    invalid. Stand-ins for faces: smooth random fields of a photo's contrast."""
    layout = celeba_layout(("Male", "Wearing_Hat"), "01")
    rng = np.random.default_rng(0)
    n = 200
    coarse = torch.from_numpy(rng.uniform(0, 1, (n, 3, 8, 8)).astype(np.float32))
    faces = torch.nn.functional.interpolate(coarse, size=64, mode="bilinear").numpy()
    flat = rng.uniform(0, 1, (n, 3, 1, 1)) + rng.uniform(
        0, 0.01, (n, 1, 1, 1)
    ) * rng.standard_normal((n, 3, 64, 64))
    flat = np.clip(flat, 0, 1)
    assert sample_validity(faces, layout, data_cfg(16)).mean() >= MIN_RATE
    assert (~sample_validity(flat, layout, data_cfg(16))).mean() >= MIN_RATE


# ----------------------------------------------------------------------------- generations
# 240 generated samples of the cpu preset's model (color gaps 0.2 seed 0 and 0.8 seed 1;
# checkpoints 90 to 1,500; naive prompting of every class, overprompting and the latent
# intervention of class 11; 32 px), shuffled and labelled by eye before their verdicts
# were looked at: V one whole object, E one object cut by or touching the frame (both
# should be valid); N no object, M two or more, S a speck of 1-3 px, X fragments in a
# noisy field (all should be invalid). docs/scoring.md has the sheets and the table.
GENERATED = REPO / "tests" / "data" / "generated_samples.npz"


def generated_confusion(verdict_of):
    fixture = np.load(GENERATED)
    images = fixture["images"].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    should = np.isin(fixture["label"], ["V", "E"])
    verdict = verdict_of(images)
    return {
        "false valid": float(np.mean(verdict[~should])),
        "false invalid": float(np.mean(~verdict[should])),
        "n": (int(should.sum()), int((~should).sum())),
    }


def test_the_verdict_on_labelled_generations(monkeypatch):
    data = load_config(REPO / "config.yaml", REPO / "workflow" / "presets" / "cpu.yaml")["data"]

    def verdict(images):
        return sample_validity(images, COLOR_SIZE, data)

    rates = generated_confusion(verdict)
    assert rates["n"] == (139, 101)
    # measured: 13 of 139 false invalid (9.4%), 14 of 101 false valid (13.9%)
    assert rates["false invalid"] <= 0.10 and rates["false valid"] <= 0.15

    # The negative control: counting every component of SPECK_PIXELS or more as an
    # object, as the verdict did before, refuses a quarter of the whole single objects
    # for the specks of a mottled generated background.
    every_component = validity.diagnostics
    monkeypatch.setattr(
        validity,
        "diagnostics",
        lambda images, layout, data_cfg, min_pixels: every_component(images, layout, data_cfg),
    )
    assert generated_confusion(verdict)["false invalid"] >= 0.25
