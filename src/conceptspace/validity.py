"""Is a generated sample an image of the study at all? A pixel-level verdict per sample.

Why. The probe (``probe.py``) is a classifier trained only on images that hold one
object. Shown an image with no object at all (a flat background anywhere in the training
range, the test grey, white, with the renderer's noise) it answers P(blue) = P(small) =
1.000, so every blank generation would score as a perfect sample of the unseen class 11.
This check is pixel-level on purpose: it is transparent (each rule is a count of pixels
with a stated bound), it needs no training, and it cannot be fooled the way a
classifier is, because it measures the object instead of extrapolating from examples.
A sample is valid when it holds exactly one object of the layout's kind, of a size the
renderer can draw, inside the image.

Synthetic layouts (``render.py``: one blurred disc or triangle on a flat background):

    noise       the image's pixel noise, from the differences of neighbouring border
                pixels (their median ignores the few an object's edge crosses). Above
                MAX_PIXEL_NOISE the sample is invalid: the threshold below (4 x 0.04)
                would pass half the weakest object contrast (0.3), and objects could not
                be told from noise.
    threshold   OBJECT_THRESHOLD, or NOISE_SIGMAS x the noise where larger, so a noisy
                generation's background does not break into specks.
    background  the densest cluster (pixels within half the threshold of one another,
                largest channel) of the border pixels that look like the layout's
                background: every channel within ``data.background_train`` +-
                BACKGROUND_TOLERANCE, or for color_size_background grey (channels within
                BACKGROUND_TOLERANCE of one another); its median colour. Not a plain
                border median: a triangle of the largest size is wider than the frame
                and covers up to two thirds of the border, and the blurred edges along
                the border are not the background either. When under
                MIN_BACKGROUND_SHARE of the border looks like background, all of it is
                used.
    object      pixels whose largest channel difference from the background exceeds the
                threshold; 8-connected components smaller than the smallest object
                the renderer draws (``size`` below) are noise and ignored: generated
                backgrounds are mottled, and counting their 3-8 px specks as objects
                refused a quarter of the generations that hold one whole object
                (tests/data/generated_samples.npz, labelled by eye). Exactly one
                component must remain.
    size        its pixel count and its peak difference at least (1 - MARGIN) x those of
                the smallest object the renderer draws (radius SIZE_FLOOR, disc or
                triangle, at the layout's weakest contrast, at its worst sub-pixel
                position; ``object_bounds``), rendered with the config's image size and
                blur; the equal-area triangle, which lies inside the authors' (both
                ``data.triangle``s: render.py), so the bound holds for either. The
                bound holds at every signal level the config allows: one rule for every
                run. There is no upper bound: the largest objects the config
                allows (radius 0.45 + 7/8 x 0.6 = 0.975; triangles of that area are wider
                than the frame) cover up to 90% of the frame and two thirds of its border with
                their blurred edges, so any ceiling would refuse nothing.
    frame       an object that touches the border is cut by the frame; its visible part
                must still be centred within the position range (+- ``data.position_range``
                plus POSITION_MARGIN_PX): cutting only moves a real object's visible
                centroid inwards, while one shifted past the border keeps its visible part
                out there. The authors' triangle's centroid lies 0.12 size past its
                position towards the apex; cut, at the sizes it is drawn at (the large
                size, at least 0.45), its visible centroid stays within 0.505 of a position
                at 0.5 (0.534 at worst, for sizes near 0.3 that color_shape never draws).
                Evaluation records the verdict without this rule too (``valid_frame_off``,
                ``Measured.valid``), and the claims are judged both ways.

Weakest contrast. Colors are 0.5 +- dc/2 per channel (spread +- dc/8), so every color
has a channel <= 0.5; the nuisance backgrounds have every channel >= 0.8
(``data.background_train``; test grey 0.9), so a covered pixel differs by at least 0.3 at
every signal level. OBJECT_THRESHOLD 0.03 is a tenth of that and 30 times the renderer's
pixel noise (0.001; uint8 storage adds ~0.001): a blurred object counts where its mask
exceeds 0.1. In color_size_background the background is a grey 0.5 +- db/2 (+- db/8), so
the weakest difference is 3 (dc + db) / 8 (0.3 at the study's gaps 0.4, 0.4): it depends
on the run, and that layout needs the run's ``Signal``.

Limits (measured with the renderer; tests/test_validity.py counts the rates). The
smallest object drawn (radius 0.1: 0.75 px at 16 px, 1.55 px at 32 px) is about as wide
as the blur (sigma 1 px), so small blurred dots pass as one: at 16 px a 2 x 2 speck, at
32 px a dot of half that radius (97% pass); specks of one or two pixels do not. Blobs
larger than any object, short of covering the whole frame, pass (see size). Two objects
that touch are one component. A triangle of the largest size (size gap 0.6) with its
centre less than a quarter radius past the border can pass as one cut by the frame (10%
at 16 px). The authors' triangle (``data.triangle``) centred a quarter to a whole radius
left of the frame points its apex in (1.916 radii): the visible tip, centred inside the
position range, passes as a triangle cut by the frame in 18% of such images at 16 px and
7% at 32 px (from the other borders, 1% or less). In color_size_background at gaps so
weak that 3 (dc + db) / 8 nears the threshold (dc = db = 0.2: 0.15), the smallest
objects at 16 px vanish into the background (10% of real images invalid).

CelebA (``layout.one_hot``): faces fill the frame, so there is no object to count and
no flat background; the failure to catch is a collapsed, near-constant generation. A
sample is valid when the spatial standard deviation of its most varied channel is at
least CELEBA_MIN_STD (a face photo's is ~0.2; a flat image with noise ~0.001 to 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from conceptspace.concepts import COLOR_CENTER, SIZE_FLOOR, Layout, Signal
from conceptspace.render import render_images

OBJECT_THRESHOLD = 0.03  # a tenth of the weakest object contrast (0.3); 30 x the pixel noise
NOISE_SIGMAS = 4  # a threshold 4 std above the noise: ~1 pixel in 5000 crosses it by chance
MAX_PIXEL_NOISE = 0.04  # 4 x 0.04 = 0.16, about half the weakest object contrast
BACKGROUND_TOLERANCE = 0.05  # generated backgrounds stray a little from the training range
MIN_BACKGROUND_SHARE = 0.1  # of the border; the largest objects leave a third of it
SPECK_PIXELS = 3  # smaller components are noise (real objects measured 5 px and up)
MARGIN = 0.25  # below the smallest object's pixel count and peak, for what rendering misses
POSITION_MARGIN_PX = 0.5  # pixelisation: cut objects' centroids measured up to 0.25 px out
CELEBA_MIN_STD = 0.03  # 30 x the synthetic pixel noise, a sixth of a face's contrast

_CHUNK = 128  # images per pairwise-distance block: (128, 252, 252) float32 at 64 px
_OFFSETS8 = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a batch of masks (B, S, S) bool: each masked pixel gets
    the index (within its image, i * S + j) of its component's first pixel, others -1."""
    mask = np.asarray(mask, bool)
    b, h, w = mask.shape
    none = h * w  # larger than every index: the neighbour minimum skips unmasked pixels
    labels = np.where(mask, np.arange(h * w, dtype=np.int32).reshape(h, w), none).astype(np.int32)
    active = np.arange(b)  # images whose labels still change
    while len(active):
        current = labels[active]
        padded = np.pad(current, ((0, 0), (1, 1), (1, 1)), constant_values=none)
        smallest = current.copy()
        for di, dj in _OFFSETS8:
            np.minimum(smallest, padded[:, 1 + di : 1 + di + h, 1 + dj : 1 + dj + w], out=smallest)
        smallest[~mask[active]] = none
        # Pointer jumping: a label is a pixel of the same component whose own label is no
        # larger, so following labels stays in the component and shortens long chains.
        flat = smallest.reshape(len(active), -1)
        rows = np.arange(len(active))[:, None]
        while True:
            jumped = np.where(flat < none, flat[rows, np.minimum(flat, none - 1)], none)
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        smallest = flat.reshape(current.shape)
        changed = np.any(smallest != current, axis=(1, 2))
        labels[active] = smallest
        active = active[changed]
    return np.where(mask, labels, -1)


@dataclass(frozen=True)
class Bounds:
    """What a real object of the layout reaches at the config's image size: at least
    ``min_area`` pixels and a peak difference from the background of ``min_peak``; a
    centroid within ``max_centroid`` (grid units, each axis) when it touches the border."""

    min_area: int
    min_peak: float
    max_centroid: float


def weakest_contrast(layout: Layout, data_cfg: Mapping[str, Any], signal: Signal | None) -> float:
    """The smallest largest-channel difference between a fully covered object pixel and
    the background that the renderer can draw (see the module notes)."""
    if "background" in layout.concepts:
        if signal is None:
            raise ValueError(
                f"layout {layout.name} needs the run's signal for its validity check: its "
                "object/background contrast 3 (dc + db) / 8 depends on the gaps; pass "
                "signal=concepts.Signal(color_gap, size_gap, background_gap)"
            )
        return 3 * (signal.color_gap + signal.background_gap) / 8
    low = min(float(data_cfg["background_train"][0]), float(data_cfg["background_test"]))
    return low - COLOR_CENTER


def object_bounds(
    layout: Layout, data_cfg: Mapping[str, Any], signal: Signal | None = None
) -> Bounds:
    """The size and frame bounds of ``sample_validity``, the size from rendering the
    smallest object (module notes). ``signal`` is used only for color_size_background's
    contrast."""
    keys = ("image_size", "blur_sigma_px", "position_range")
    return _bounds(*(float(data_cfg[k]) for k in keys), weakest_contrast(layout, data_cfg, signal))


@lru_cache(maxsize=64)
def _bounds(image_size, blur_sigma_px, position_range, contrast) -> Bounds:
    size = int(image_size)
    # The equal-area triangle lies inside the authors' (the same base, a lower apex), so
    # its bounds hold for either data.triangle.
    cfg = {"image_size": size, "blur_sigma_px": blur_sigma_px, "noise_std": 0.0}
    cfg["triangle"] = "equal_area"
    pixel = 2.0 / (size - 1)
    # The smallest object: floor radius, disc and triangle, weakest contrast, on a white
    # background, its centre at every quarter-pixel offset.
    quarters = np.arange(4) * pixel / 4
    centres = np.array([(x, y) for x in quarters for y in quarters for _ in range(2)])
    n = len(centres)
    white, radii, shapes = np.ones((n, 3)), np.full(n, SIZE_FLOOR), np.arange(n) % 2
    rng = np.random.default_rng(0)  # draws no noise (noise_std 0)
    images = render_images(white - contrast, radii, centres, white, cfg, rng, shapes)
    difference = 1.0 - images.min(1)  # from the white background
    area = (difference > OBJECT_THRESHOLD).sum((1, 2)).min()
    return Bounds(
        min_area=max(SPECK_PIXELS, int(np.floor((1 - MARGIN) * area))),
        min_peak=float((1 - MARGIN) * difference.max((1, 2)).min()),
        max_centroid=position_range + POSITION_MARGIN_PX * pixel,
    )


def _border(images: np.ndarray) -> np.ndarray:
    """The frame's pixels of (B, C, S, S): (B, C, 4S - 4)."""
    return np.concatenate(
        [images[:, :, 0, :], images[:, :, -1, :], images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]],
        axis=2,
    )


def _as_images(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):  # a torch tensor, on any device
        images = images.detach().cpu().numpy()
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(
            f"images must be (B, 3, S, S) with values in [0, 1]; got shape {images.shape}"
        )
    return images


def background(
    images: np.ndarray, layout: Layout, data_cfg: Mapping[str, Any], threshold: np.ndarray
) -> np.ndarray:
    """Each image's background colour (B, 3): the median of the densest cluster (within
    half its ``threshold``) of its background-like border pixels (module notes)."""
    border = _border(images)
    if "background" in layout.concepts:  # a grey level
        like = border.max(1) - border.min(1) <= BACKGROUND_TOLERANCE
    else:
        low, high = (float(v) for v in data_cfg["background_train"])
        inside = (border >= low - BACKGROUND_TOLERANCE) & (border <= high + BACKGROUND_TOLERANCE)
        like = inside.all(1)
    like[like.mean(1) < MIN_BACKGROUND_SHARE] = True  # no background to trust: all of it
    colours = np.empty((len(border), 3), np.float32)
    for start in range(0, len(border), _CHUNK):
        part = slice(start, start + _CHUNK)
        pixels, candidates, radius = border[part], like[part], threshold[part, None, None] / 2
        # Pairwise largest-channel distances between the chunk's border pixels (B, P, P).
        distance = np.zeros(pixels.shape[:1] + pixels.shape[2:] * 2, np.float32)
        for channel in pixels.transpose(1, 0, 2):
            np.maximum(distance, np.abs(channel[:, :, None] - channel[:, None, :]), out=distance)
        near = (distance <= radius) & candidates[:, None, :] & candidates[:, :, None]
        densest = np.argmax(near.sum(2), axis=1)  # the candidate with most candidates near it
        cluster = near[np.arange(len(near)), densest]
        chosen = np.where(cluster[:, None, :], pixels, np.nan)
        colours[part] = np.nanmedian(chosen, axis=2)
    return colours


def pixel_noise(images: np.ndarray) -> np.ndarray:
    """Each image's pixel noise std (B,), from the differences of neighbouring border
    pixels: their median is robust to the few where an object's edge crosses the border
    (for independent Gaussian noise, median |difference| = 0.954 std)."""
    steps = [
        np.diff(images[:, :, [0, -1], :], axis=3).reshape(len(images), -1),
        np.diff(images[:, :, :, [0, -1]], axis=2).reshape(len(images), -1),
    ]
    return np.median(np.abs(np.concatenate(steps, axis=1)), axis=1) / 0.954


def _per_component(labels: np.ndarray, weights: Any = None) -> np.ndarray:
    """Sums (B, S * S) of ``weights`` (default 1) over each component of ``labels``
    (``label_components``), indexed by image and component root."""
    b, s, _ = labels.shape
    inside = labels >= 0
    bins = (np.arange(b)[:, None, None] * (s * s) + labels)[inside]
    if weights is not None:
        weights = np.broadcast_to(weights, labels.shape)[inside]
    return np.bincount(bins, weights, minlength=b * s * s).reshape(b, s * s)


def diagnostics(
    images: Any, layout: Layout, data_cfg: Mapping[str, Any], min_pixels: int = SPECK_PIXELS
) -> dict[str, np.ndarray]:
    """Per-sample measurements of a synthetic layout's images (B, 3, S, S), for logs and
    tests, each (B,): background (B, 3) its colour; objects: components of at least
    ``min_pixels`` pixels; area: pixels of the largest component (0: none);
    touches_border: whether it does; centroid (B, 2): its centre (x, y) in grid units;
    peak: its largest difference from the background; noise: the pixel noise std.
    """
    images = _as_images(images)
    b, _, s, _ = images.shape
    noise = pixel_noise(images)
    threshold = np.maximum(OBJECT_THRESHOLD, NOISE_SIGMAS * noise)
    colour = background(images, layout, data_cfg, threshold)
    difference = np.abs(images - colour[:, :, None, None]).max(1)
    mask = difference > threshold[:, None, None]
    labels = label_components(mask)
    grid = np.linspace(-1.0, 1.0, s)
    edge = np.zeros((s, s), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    rows = np.arange(b)

    count = _per_component(labels)
    largest = np.argmax(count, axis=1)
    area = count[rows, largest]
    centre = [_per_component(labels, g)[rows, largest] for g in (grid[None, :], grid[:, None])]
    return {
        "background": colour,
        "objects": (count >= min_pixels).sum(1),
        "area": area,
        "touches_border": _per_component(labels, edge)[rows, largest] > 0,
        "centroid": np.stack(centre, axis=1) / np.maximum(area, 1)[:, None],
        "peak": np.where(labels == largest[:, None, None], difference, 0.0).max((1, 2)),
        "noise": noise,
    }


@dataclass(frozen=True)
class Measured:
    """What the verdict reads of a batch, measured once so that it can be given with and
    without the frame rule (the evaluation records both, to show whether the rule
    matters): the synthetic layouts' ``diagnostics`` and the ``Bounds`` they are held to,
    or CelebA's per-image spread."""

    found: Mapping[str, np.ndarray] | None = None
    bounds: Bounds | None = None
    spread: np.ndarray | None = None

    def valid(self, frame_rule: bool = True) -> np.ndarray:
        """The verdict, bool (B,); ``frame_rule`` False drops the frame rule (module
        notes: an object touching the border must be centred within the position range).
        CelebA has no frame rule."""
        if self.spread is not None:
            return self.spread >= CELEBA_MIN_STD
        found, bounds = self.found, self.bounds
        centred = np.abs(found["centroid"]).max(1) <= bounds.max_centroid
        framed = ~found["touches_border"] | centred if frame_rule else True
        return (
            (found["noise"] <= MAX_PIXEL_NOISE)
            & (found["objects"] == 1)
            & (found["area"] >= bounds.min_area)
            & (found["peak"] >= bounds.min_peak)
            & framed
        )


def measure(
    images: Any, layout: Layout, data_cfg: Mapping[str, Any], signal: Signal | None = None
) -> Measured:
    """What ``sample_validity`` judges ``images`` (B, 3, S, S) in [0, 1] (numpy or torch)
    by; ``Measured.valid`` gives the verdict."""
    images = _as_images(images)
    if layout.one_hot:
        # Spatial spread per channel: a flat colour is as empty as a flat grey.
        return Measured(spread=images.std((2, 3)).max(1))
    if images.shape[2] != int(data_cfg["image_size"]):
        raise ValueError(
            f"images are {images.shape[2]} px but data.image_size is {data_cfg['image_size']}; "
            "pass the data section of the config the images were generated with"
        )
    bounds = object_bounds(layout, data_cfg, signal)
    # Only a component as large as the smallest object the renderer draws counts as a
    # second object: generated backgrounds are mottled, and their 3-8 px specks above
    # the threshold refused 29 of 122 samples that hold one whole object (the labelled
    # generations, tests/data/generated_samples.npz; docs/scoring.md).
    found = diagnostics(images, layout, data_cfg, min_pixels=bounds.min_area)
    return Measured(found=found, bounds=bounds)


def sample_validity(
    images: Any,
    layout: Layout,
    data_cfg: Mapping[str, Any],
    signal: Signal | None = None,
    frame_rule: bool = True,
) -> np.ndarray:
    """Whether each image (B, 3, S, S) in [0, 1] (numpy or torch) is a valid sample of
    ``layout``: bool (B,). Synthetic layouts: exactly one object of plausible size inside
    the frame (module notes; ``frame_rule`` False: without the frame rule); CelebA
    (one-hot layouts): not near-constant. ``signal`` is the run's; only
    color_size_background needs it."""
    return measure(images, layout, data_cfg, signal).valid(frame_rule)
