"""Synthetic images of the concept layouts (docs/study.md "The images"; ``concepts.Layout``).

An image is a blurred disc (or triangle) of one color on a flat background:

    grid     linspace(-1, 1, S) on both axes; pixel [i, j] sits at (x = grid[j], y = grid[i])
    mask     1 where sqrt((x - x0)^2 + (y - y0)^2) < size, else 0 (a disc); a triangle
             (shape 1) is ``data.triangle``'s, both built on the side
             s = sqrt(4 pi / sqrt 3) size of the equilateral triangle of the disc's area
             and its in-radius s sqrt(3) / 6 = 0.778 size:
               authors     the authors' code's: base = height = s (area 2 pi / sqrt 3
                           size^2, 1.155 x the disc's), sides of slope +-2; the base is the
                           line x = x0 - s sqrt(3) / 6 (from y0 - s/2 to y0 + s/2), the
                           apex at (x0 + s (1 - sqrt(3) / 6), y0) = x0 + 1.916 size,
                           pointing right (towards the last column)
               equal_area  equilateral with the disc's area, its in-circle centred on
                           (x0, y0), apex up (towards row 0)
    blur     Gaussian of ``blur_sigma_px`` pixels (separable; the mask is rendered on a
             grid padded beyond the image, so discs cut by the border blur correctly)
    image    m * color + (1 - m) * background + N(0, noise_std^2), clipped to [0, 1]

Concept values of a class spread uniformly around its means (``Signal``): each color
channel by +- dc/8, the radius by +- 3 ds/8 with a floor of 0.1, a background grey
level (color_size_background) by +- db/8. Training images are conditioned on their own
values, h = the layout's slots (2x2: (r, g, b, size)); layouts without a size concept
draw the 2x2's large size as a nuisance, layouts without a background concept the
nuisance background of ``data.background_train``. Prompt masking (color_shape): a
``mask_ratio`` of the masked class's images, chosen at random from their own stream and
nested across ratios (the images masked at p are masked at every larger p), get
``concepts.MASK_VALUE`` in the masked concept's slots of h; the images do not change.

Datasets are stored as .npz without pickle, images as uint8 = round(x * 255). The
quantisation error (uniform, std 1/255/sqrt(12) ~ 0.0011) is about the size of the pixel
noise (std 0.001), so storing bytes changes the data no more than the noise already does.

Random streams: one ``np.random.SeedSequence`` per dataset, split with ``spawn`` into
independent streams for concepts, positions, backgrounds, the validation split, pixel
noise, (probe set) signal levels and (masking) the masked images, so a seed fixes a
dataset exactly; the 2x2 draws are those of the 2x2-only renderer this one replaced.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from conceptspace.concepts import COLOR_SIZE, MASK_VALUE, SIZE_FLOOR, Layout, Signal
from conceptspace.io import ConceptspaceError, atomic_path, provenance

# Arrays every stored dataset holds (images uint8 on disk, float32 in memory).
DATASET_ARRAYS = (
    "images",
    "h",
    "label",
    "color",
    "size",
    "position",
    "background",
    "is_validation",
)
IMAGE_ENCODING = "uint8 = round(x * 255); quantisation error std 1/255/sqrt(12) ~ 0.0011"

# Separate purposes get separate entropy, so a probe set and a training set with the
# same seed do not share random numbers.
_TRAINING_SET, _PROBE_SET = 0, 1
# spawn() gives child i the same stream whatever the count: append, never reorder.
_STREAMS = ("concepts", "positions", "backgrounds", "split", "noise", "signals", "mask")

# Images rendered per chunk: bounds memory (float32 noise and padded masks) for big sets.
_CHUNK = 1024


class RenderedSet(dict):
    """A dict of arrays that also carries the metadata describing how it was made.

    ``save_dataset`` stores ``.metadata`` with the arrays, so callers that pass the
    result straight on (``save_dataset(path, rendered, {})``) keep the provenance.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]):
        super().__init__(arrays)
        self.metadata = metadata


def _streams(seed: int, purpose: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence([int(seed), purpose]).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def pixel_grid(image_size: int) -> np.ndarray:
    """Pixel centres in grid units, the same on both axes."""
    return np.linspace(-1.0, 1.0, image_size)


def _gaussian_kernel(sigma_px: float) -> np.ndarray:
    radius = int(np.ceil(4 * sigma_px))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


# The equilateral triangle of the disc's area: side sqrt(4 pi / sqrt 3) * size, in-radius
# side / (2 sqrt 3). Both triangles of data.triangle are built on them (module notes).
TRIANGLE_SIDE = float(np.sqrt(4 * np.pi / np.sqrt(3)))
TRIANGLE_INRADIUS = TRIANGLE_SIDE / (2 * np.sqrt(3))
TRIANGLES = ("authors", "equal_area")
# Outward normals of the equal-area triangle's sides in (x, y), y growing downwards (rows):
# the base faces down, so the apex points up.
_TRIANGLE_NORMALS = ((0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5))


def triangle_kind(data_cfg: Mapping[str, Any]) -> str:
    """``data.triangle``: which triangle shape 1 is; a named error when missing or unknown."""
    kind = data_cfg.get("triangle")
    if kind not in TRIANGLES:
        raise ConceptspaceError(
            f"data.triangle is {kind!r}; set it to 'authors' (the authors' code's triangle, "
            "base = height) or 'equal_area' (equilateral, the disc's area): config.yaml"
        )
    return kind


def _triangle_masks(dx: np.ndarray, dy: np.ndarray, sizes: np.ndarray, kind: str) -> np.ndarray:
    """Where (dx, dy) from the centre lies inside the ``kind`` triangle of radius ``sizes``."""
    inradius = TRIANGLE_INRADIUS * sizes
    if kind == "equal_area":
        return np.logical_and.reduce(
            [nx * dx + ny * dy <= inradius for nx, ny in _TRIANGLE_NORMALS]
        )
    # The authors' keeps the equal-area triangle's base and raises the apex to height =
    # base = side: right of the base, and within the sides of slope +-2 meeting at the apex.
    apex = TRIANGLE_SIDE * sizes - inradius
    return (dx > -inradius) & (2 * np.abs(dy) < apex - dx)


def _blurred_masks(
    sizes: np.ndarray,
    positions: np.ndarray,
    image_size: int,
    sigma_px: float,
    shapes: np.ndarray | None = None,
    triangle: str = "",
) -> np.ndarray:
    """Object masks (disc r < size; the ``triangle`` kind where ``shapes`` is 1), blurred
    by a Gaussian of sigma_px pixels: (N, S, S) float32."""
    kernel = _gaussian_kernel(sigma_px) if sigma_px > 0 else np.ones(1, np.float32)
    pad = len(kernel) // 2
    spacing = 2.0 / (image_size - 1)
    # The padded grid continues the image grid beyond the border; a 'valid' convolution
    # on it then returns exactly the S x S image.
    padded = -1.0 + spacing * np.arange(-pad, image_size + pad)
    dx = padded[None, None, :] - positions[:, 0, None, None]
    dy = padded[None, :, None] - positions[:, 1, None, None]
    masks = dx**2 + dy**2 < sizes[:, None, None] ** 2
    if shapes is not None and np.any(shapes == 1):
        triangles = _triangle_masks(dx, dy, sizes[:, None, None], triangle)
        masks = np.where((shapes == 1)[:, None, None], triangles, masks)
    masks = masks.astype(np.float32)
    # Separable 'valid' convolution: a sum of shifted slices, vectorised over the batch.
    rows = sum(w * masks[:, k : k + image_size, :] for k, w in enumerate(kernel))
    return sum(w * rows[:, :, k : k + image_size] for k, w in enumerate(kernel))


def render_images(
    colors: np.ndarray,
    sizes: np.ndarray,
    positions: np.ndarray,
    backgrounds: np.ndarray,
    data_cfg: Mapping[str, Any],
    rng: np.random.Generator,
    shapes: np.ndarray | None = None,
) -> np.ndarray:
    """Render objects: float32 (N, 3, S, S) in [0, 1].

    colors (N, 3) and backgrounds (N, 3) are RGB in [0, 1]; sizes (N,) are radii and
    positions (N, 2) centres (x, y), both in grid units; shapes (N,) 0 disc / 1 triangle
    (None: all discs), triangles as ``data_cfg['triangle']`` names (module notes; needed
    only when there are triangles). ``rng`` draws the pixel noise.
    """
    colors = np.asarray(colors, np.float32).reshape(-1, 3)
    backgrounds = np.asarray(backgrounds, np.float32).reshape(-1, 3)
    sizes = np.asarray(sizes, np.float32).reshape(-1)
    positions = np.asarray(positions, np.float32).reshape(-1, 2)
    n = len(colors)
    if shapes is not None:
        shapes = np.asarray(shapes, np.int64).reshape(-1)
    if not (len(backgrounds) == len(sizes) == len(positions) == n) or (
        shapes is not None and len(shapes) != n
    ):
        raise ValueError(
            f"render_images needs one value per image: {n} colors, {len(sizes)} sizes, "
            f"{len(positions)} positions, {len(backgrounds)} backgrounds"
        )
    image_size = int(data_cfg["image_size"])
    sigma_px = float(data_cfg["blur_sigma_px"])
    noise_std = float(data_cfg["noise_std"])
    triangle = triangle_kind(data_cfg) if shapes is not None and np.any(shapes == 1) else ""

    images = np.empty((n, 3, image_size, image_size), np.float32)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        shape = None if shapes is None else shapes[part]
        mask = _blurred_masks(sizes[part], positions[part], image_size, sigma_px, shape, triangle)
        mask = mask[:, None]
        color = colors[part, :, None, None]
        background = backgrounds[part, :, None, None]
        chunk = mask * color + (1 - mask) * background
        chunk += noise_std * rng.standard_normal(chunk.shape, dtype=np.float32)
        images[part] = np.clip(chunk, 0.0, 1.0)
    return images


def sample_objects(
    class_names: Sequence[str],
    signal: Signal,
    rng: np.random.Generator,
    layout: Layout = COLOR_SIZE,
) -> dict[str, np.ndarray]:
    """Per-sample concept values of the given classes of ``layout``.

    Returns "color" (N, 3) and "size" (N,) float32 (every object has both; a layout
    without size draws the large size), "shape" (N,) int64 and "background" (N,) float32
    grey levels where the layout has those concepts. Each color channel is
    Uniform(mean +- dc/8), the radius Uniform(mean +- 3 ds/8), at least 0.1, a grey level
    Uniform(mean +- db/8), around the class means of ``signal``; drawn in that order.
    """
    digits = np.array([layout.digits(name) for name in class_names], dtype=np.int64)
    digits = digits.reshape(-1, len(layout.concepts))
    value = {concept: digits[:, i] for i, concept in enumerate(layout.concepts)}
    n = len(digits)
    color_means = np.stack([signal.color_mean(0), signal.color_mean(1)])
    size_means = np.array([signal.size_mean(0), signal.size_mean(1)])
    color_spread = rng.uniform(-signal.color_halfwidth, signal.color_halfwidth, size=(n, 3))
    size_spread = rng.uniform(-signal.size_halfwidth, signal.size_halfwidth, size=n)
    colors = color_means[value["color"]] + color_spread
    size_digits = value.get("size", np.zeros(n, np.int64))
    objects = {
        "color": colors.astype(np.float32),
        "size": np.maximum(size_means[size_digits] + size_spread, SIZE_FLOOR).astype(np.float32),
    }
    if "shape" in value:
        objects["shape"] = value["shape"]
    if "background" in value:
        grey_means = np.array([signal.background_mean(0), signal.background_mean(1)])
        halfwidth = signal.background_halfwidth
        grey = grey_means[value["background"]] + rng.uniform(-halfwidth, halfwidth, size=n)
        objects["background"] = grey.astype(np.float32)
    return objects


def sample_concepts(
    class_names: Sequence[str], signal: Signal, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """2x2 classes' concept values: colors (N, 3), sizes (N,), float32 (``sample_objects``)."""
    objects = sample_objects(class_names, signal, rng)
    return objects["color"], objects["size"]


def _positions(n: int, data_cfg: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    reach = float(data_cfg["position_range"])
    return rng.uniform(-reach, reach, size=(n, 2)).astype(np.float32)


def _backgrounds(n: int, data_cfg: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    low, high = (float(v) for v in data_cfg["background_train"])
    return rng.uniform(low, high, size=(n, 3)).astype(np.float32)


def _validation_flags(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """round(fraction * n) images of each class, chosen at random, are held out."""
    flags = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_validation = int(round(fraction * len(members)))
        flags[rng.permutation(members)[:n_validation]] = True
    return flags


def _signal_record(signal: Signal, layout: Layout = COLOR_SIZE) -> dict[str, float]:
    record = {"color_gap": float(signal.color_gap), "size_gap": float(signal.size_gap)}
    if "background" in layout.concepts:
        record["background_gap"] = float(signal.background_gap)
    return record


def _layout_record(layout: Layout) -> dict[str, Any]:
    return {
        "layout": layout.name,
        "concepts": list(layout.concepts),
        "unseen_classes": list(layout.unseen_classes),
        "h_layout": list(layout.h_layout),
    }


def _render_objects(
    class_names: Sequence[str],
    signal: Signal,
    layout: Layout,
    data_cfg: Mapping[str, Any],
    streams: dict[str, np.random.Generator],
    validation_fraction: float,
) -> dict[str, np.ndarray]:
    """Render the classes' images and return the arrays every dataset file holds:
    images, h (the sample's own values in the layout's slots), label (index into the
    layout's classes), color, size, position, background (RGB), is_validation, and
    shape where the layout has one."""
    labels = np.array([layout.class_index(name) for name in class_names], dtype=np.int64)
    objects = sample_objects(class_names, signal, streams["concepts"], layout)
    return _objects_arrays(objects, labels, layout, data_cfg, streams, validation_fraction)


def _shape_slots(shapes: np.ndarray, layout: Layout) -> np.ndarray:
    """Shape in h: 0 disc / 1 triangle in one slot, or one-hot (disc, triangle)."""
    if layout.is_one_hot("shape"):
        return np.eye(2, dtype=np.float32)[shapes]
    return shapes[:, None].astype(np.float32)


def _objects_arrays(objects, labels, layout, data_cfg, streams, validation_fraction):
    n = len(labels)
    positions = _positions(n, data_cfg, streams["positions"])
    if "background" in objects:  # the concept, grey in every channel
        backgrounds = np.repeat(objects["background"][:, None], 3, axis=1)
    else:
        backgrounds = _backgrounds(n, data_cfg, streams["backgrounds"])
    shapes = objects.get("shape")
    images = render_images(
        objects["color"], objects["size"], positions, backgrounds, data_cfg, streams["noise"],
        shapes,
    )  # fmt: skip
    slots = {
        "color": objects["color"],
        "size": objects["size"][:, None],
        "shape": None if shapes is None else _shape_slots(shapes, layout),
        "background": objects.get("background", np.zeros(n))[:, None],
    }
    arrays = {
        "images": images,
        "h": np.concatenate([slots[c] for c in layout.concepts], axis=1).astype(np.float32),
        "label": labels,
        "color": objects["color"],
        "size": objects["size"],
        "position": positions,
        "background": backgrounds,
        "is_validation": _validation_flags(labels, validation_fraction, streams["split"]),
    }
    if shapes is not None:
        arrays["shape"] = shapes
    return arrays


def _check_mask_ratio(layout: Layout, mask_ratio: float) -> None:
    if not 0.0 <= float(mask_ratio) <= 1.0:
        raise ConceptspaceError(
            f"masking ratio {mask_ratio} is outside [0, 1]; it is the fraction of "
            "masked-class images whose concept is hidden: choose values from 0 to 1 in "
            "studies.underspecification.mask_ratios"
        )
    if layout.masked is None and mask_ratio:
        raise ConceptspaceError(
            f"layout {layout.name} has no prompt masking, but the masking ratio is "
            f"{mask_ratio}; use the color_shape layout or a ratio of 0"
        )


def mask_prompts(
    arrays: dict[str, np.ndarray],
    layout: Layout,
    mask_ratio: float,
    rng: np.random.Generator,
    mask_value: float = MASK_VALUE,
) -> np.ndarray:
    """Mask round(mask_ratio * n) of the layout's masked class (in place): their masked
    concept's slots of h become ``mask_value`` (studies.underspecification.mask_value). Returns the bool mask (N,). The masked
    images are the first of one random order of the class, so they nest across ratios."""
    _check_mask_ratio(layout, mask_ratio)
    masked = np.zeros(len(arrays["label"]), dtype=bool)
    if layout.masked is None:
        return masked
    masked_class, concept = layout.masked
    members = np.flatnonzero(arrays["label"] == layout.class_index(masked_class))
    chosen = rng.permutation(members)[: int(round(float(mask_ratio) * len(members)))]
    masked[chosen] = True
    arrays["h"][chosen, layout.slots(concept)] = mask_value
    return masked


def render_training_set(
    data_cfg: Mapping[str, Any],
    signal: Signal,
    seed: int,
    layout: Layout = COLOR_SIZE,
    mask_ratio: float = 0.0,
    mask_value: float = MASK_VALUE,
) -> RenderedSet:
    """``images_per_class`` images of each training class of ``layout``; the unseen
    classes are held out.

    Returns a ``RenderedSet`` (a dict of arrays with ``.metadata``): images float32
    (N, 3, S, S), h float32 (N, h_dim) = the sample's own values (2x2: (r, g, b, size)),
    label int64 (index into the layout's classes), color, size, position, background, and
    is_validation (a random ``validation_fraction`` of each class); shape where the
    layout has one; masked (bool) where it masks prompts (``mask_prompts``).
    """
    _check_mask_ratio(layout, mask_ratio)  # before the images: a bad ratio renders nothing
    streams = _streams(seed, _TRAINING_SET)
    per_class = int(data_cfg["images_per_class"])
    class_names = [name for name in layout.training_classes for _ in range(per_class)]
    arrays = _render_objects(
        class_names, signal, layout, data_cfg, streams, float(data_cfg["validation_fraction"])
    )
    settings = {"data": dict(data_cfg), "signal": _signal_record(signal, layout)}
    metadata = {
        "kind": "training_set",
        "data": dict(data_cfg),
        "signal": _signal_record(signal, layout),
        "seed": int(seed),
        "classes": list(layout.training_classes),
        "class_means": {name: layout.class_h(name, signal).tolist() for name in layout.classes},
        **_layout_record(layout),
    }
    if layout.masked is not None:
        arrays["masked"] = mask_prompts(arrays, layout, mask_ratio, streams["mask"], mask_value)
        masked_class, concept = layout.masked
        settings.update(layout=layout.name, mask_ratio=float(mask_ratio))
        settings.update(mask_value=float(mask_value))
        metadata.update(
            mask_ratio=float(mask_ratio),
            mask_value=float(mask_value),
            masking=(
                f"{concept} of {int(arrays['masked'].sum())} of the "
                f"{int(np.sum(arrays['label'] == layout.class_index(masked_class)))} images "
                f"of class {masked_class} ({layout.label(masked_class)}) is {mask_value:g} in h"
            ),
        )
    elif layout is not COLOR_SIZE:
        settings["layout"] = layout.name
    metadata["provenance"] = provenance(settings, seed)
    return RenderedSet(arrays, metadata)


def render_probe_set(
    data_cfg: Mapping[str, Any],
    signals: Sequence[Signal],
    images_per_class: int,
    seed: int,
    validation_fraction: float | None = None,
    layout: Layout = COLOR_SIZE,
) -> RenderedSet:
    """Images of ALL classes of ``layout`` for the concept probe, pooled over signal
    levels.

    Each image's signal level is drawn uniformly from ``signals`` (the authors pool
    several settings, ~16k images). Backgrounds follow the training distribution, the
    one the diffusion models learn and generate. Arrays as in ``render_training_set``
    (h unmasked), plus color_gap and size_gap (N,) float32 of each image's signal level.
    ``validation_fraction`` defaults to ``data_cfg['validation_fraction']``.
    """
    if not signals:
        raise ConceptspaceError("the probe needs at least one signal level (dc, ds)")
    if validation_fraction is None:
        validation_fraction = float(data_cfg["validation_fraction"])
    streams = _streams(seed, _PROBE_SET)
    class_names = [name for name in layout.classes for _ in range(int(images_per_class))]
    n = len(class_names)
    labels = np.array([layout.class_index(name) for name in class_names], dtype=np.int64)
    level = streams["signals"].integers(len(signals), size=n)

    objects: dict[str, np.ndarray] = {}
    for index, signal in enumerate(signals):
        members = np.flatnonzero(level == index)
        chosen = [class_names[i] for i in members]
        drawn = sample_objects(chosen, signal, streams["concepts"], layout)
        for name, values in drawn.items():
            objects.setdefault(name, np.empty((n,) + values.shape[1:], values.dtype))
            objects[name][members] = values
    arrays = _objects_arrays(objects, labels, layout, data_cfg, streams, validation_fraction)
    arrays.update(
        {
            "color_gap": np.array([signals[i].color_gap for i in level], dtype=np.float32),
            "size_gap": np.array([signals[i].size_gap for i in level], dtype=np.float32),
        }
    )
    signal_records = [_signal_record(s, layout) for s in signals]
    settings = {"data": dict(data_cfg), "signals": signal_records}
    if layout is not COLOR_SIZE:
        settings["layout"] = layout.name
    metadata = {
        "kind": "probe_set",
        "data": dict(data_cfg),
        "signals": signal_records,
        "images_per_class": int(images_per_class),
        "validation_fraction": float(validation_fraction),
        "seed": int(seed),
        "classes": list(layout.classes),
        **_layout_record(layout),
        "provenance": provenance(settings, seed),
    }
    return RenderedSet(arrays, metadata)


def concept_labels(labels: np.ndarray, layout: Layout = COLOR_SIZE) -> np.ndarray:
    """Class indices -> (N, n_concepts) concept values (the class's digits)."""
    table = np.array([layout.digits(name) for name in layout.classes], dtype=np.int64)
    return table[np.asarray(labels, dtype=np.int64)]


def save_dataset(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: dict | None = None
) -> None:
    """Write arrays and metadata to one .npz (no pickle), atomically.

    Float images in [0, 1] are stored as uint8 round(x * 255) (see the module notes on
    quantisation). ``metadata`` is merged over ``arrays.metadata`` when ``arrays`` is a
    ``RenderedSet`` and stored as a JSON string.
    """
    merged = {**getattr(arrays, "metadata", {}), **(metadata or {})}
    merged.setdefault("image_encoding", IMAGE_ENCODING)
    stored = {}
    for name, values in arrays.items():
        values = np.asarray(values)
        if values.dtype == object:
            raise ValueError(f"array '{name}' has dtype object; datasets are stored without pickle")
        if name == "images" and values.dtype != np.uint8:
            values = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
        stored[name] = values
    if "metadata" in stored:
        raise ValueError("'metadata' is reserved for the JSON metadata; rename that array")
    stored["metadata"] = np.array(json.dumps(merged, sort_keys=True, default=_to_json))
    with atomic_path(path) as tmp:
        # An open file keeps np.savez from appending '.npz' to the temporary name.
        with open(tmp, "wb") as handle:
            np.savez(handle, **stored)


def _to_json(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def load_dataset(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a dataset written by ``save_dataset``: (arrays, metadata).

    Images come back float32 in [0, 1]. A missing, truncated or corrupt file raises
    ConceptspaceError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise ConceptspaceError(f"dataset {path} does not exist; run `snakemake` to render it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        metadata = json.loads(str(arrays.pop("metadata")))
        missing = [name for name in ("images", "h", "label") if name not in arrays]
        if missing:
            raise ValueError(f"arrays {missing} are missing")
        images = arrays["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images are {images.dtype} {images.shape}, not uint8 (N, 3, S, S)")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ConceptspaceError(
            f"dataset {path} could not be read ({type(err).__name__}: {err}); it is truncated "
            "or corrupt: delete it and rerun `snakemake` to render it again"
        ) from err
    arrays["images"] = images.astype(np.float32) / 255.0
    return arrays, metadata
