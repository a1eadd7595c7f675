"""Synthetic images of the 2x2 study (SPEC "Synthetic data").

An image is a blurred disc of one color on a flat background:

    grid     linspace(-1, 1, S) on both axes; pixel [i, j] sits at (x = grid[j], y = grid[i])
    mask     1 where sqrt((x - x0)^2 + (y - y0)^2) < size, else 0
    blur     Gaussian of ``blur_sigma_px`` pixels (separable; the mask is rendered on a
             grid padded beyond the image, so discs cut by the border blur correctly)
    image    m * color + (1 - m) * background + N(0, noise_std^2), clipped to [0, 1]

Concept values of a class spread uniformly around its means (``Signal``): each color
channel by +- dc/8, the radius by +- 3 ds/8 with a floor of 0.1. Training images are
conditioned on their own values, h = (r, g, b, size).

Datasets are stored as .npz without pickle, images as uint8 = round(x * 255). The
quantisation error (uniform, std 1/255/sqrt(12) ~ 0.0011) is about the size of the pixel
noise (std 0.001), so storing bytes changes the data no more than the noise already does.

Random streams: one ``np.random.SeedSequence`` per dataset, split with ``spawn`` into
independent streams for concepts, positions, backgrounds, the validation split, pixel
noise and (probe set) signal levels, so a seed fixes a dataset exactly.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from conceptspace.concepts import (
    CLASSES,
    CONCEPTS,
    H_LAYOUT,
    SIZE_FLOOR,
    TRAINING_CLASSES,
    Signal,
    class_digits,
    class_index,
)
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
_STREAMS = ("concepts", "positions", "backgrounds", "split", "noise", "signals")

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


def _blurred_masks(
    sizes: np.ndarray, positions: np.ndarray, image_size: int, sigma_px: float
) -> np.ndarray:
    """Disc masks r < size, blurred by a Gaussian of sigma_px pixels: (N, S, S) float32."""
    kernel = _gaussian_kernel(sigma_px) if sigma_px > 0 else np.ones(1, np.float32)
    pad = len(kernel) // 2
    spacing = 2.0 / (image_size - 1)
    # The padded grid continues the image grid beyond the border; a 'valid' convolution
    # on it then returns exactly the S x S image.
    padded = -1.0 + spacing * np.arange(-pad, image_size + pad)
    dx = padded[None, None, :] - positions[:, 0, None, None]
    dy = padded[None, :, None] - positions[:, 1, None, None]
    masks = (dx**2 + dy**2 < sizes[:, None, None] ** 2).astype(np.float32)
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
) -> np.ndarray:
    """Render discs: float32 (N, 3, S, S) in [0, 1].

    colors (N, 3) and backgrounds (N, 3) are RGB in [0, 1]; sizes (N,) are radii and
    positions (N, 2) centres (x, y), both in grid units. ``rng`` draws the pixel noise.
    """
    colors = np.asarray(colors, np.float32).reshape(-1, 3)
    backgrounds = np.asarray(backgrounds, np.float32).reshape(-1, 3)
    sizes = np.asarray(sizes, np.float32).reshape(-1)
    positions = np.asarray(positions, np.float32).reshape(-1, 2)
    n = len(colors)
    if not (len(backgrounds) == len(sizes) == len(positions) == n):
        raise ValueError(
            f"render_images needs one value per image: {n} colors, {len(sizes)} sizes, "
            f"{len(positions)} positions, {len(backgrounds)} backgrounds"
        )
    image_size = int(data_cfg["image_size"])
    sigma_px = float(data_cfg["blur_sigma_px"])
    noise_std = float(data_cfg["noise_std"])

    images = np.empty((n, 3, image_size, image_size), np.float32)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        mask = _blurred_masks(sizes[part], positions[part], image_size, sigma_px)[:, None]
        color = colors[part, :, None, None]
        background = backgrounds[part, :, None, None]
        chunk = mask * color + (1 - mask) * background
        chunk += noise_std * rng.standard_normal(chunk.shape, dtype=np.float32)
        images[part] = np.clip(chunk, 0.0, 1.0)
    return images


def sample_concepts(
    class_names: Sequence[str], signal: Signal, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample concept values of the given classes: colors (N, 3), sizes (N,), float32.

    Each color channel is Uniform(mean +- dc/8) and the radius Uniform(mean +- 3 ds/8),
    at least 0.1, around the class means of ``signal``.
    """
    digits = np.array([class_digits(name) for name in class_names], dtype=np.int64)
    digits = digits.reshape(-1, 2)
    color_means = np.stack([signal.color_mean(0), signal.color_mean(1)])
    size_means = np.array([signal.size_mean(0), signal.size_mean(1)])
    n = len(digits)
    color_spread = rng.uniform(-signal.color_halfwidth, signal.color_halfwidth, size=(n, 3))
    size_spread = rng.uniform(-signal.size_halfwidth, signal.size_halfwidth, size=n)
    colors = color_means[digits[:, 0]] + color_spread
    sizes = np.maximum(size_means[digits[:, 1]] + size_spread, SIZE_FLOOR)
    return colors.astype(np.float32), sizes.astype(np.float32)


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


def _signal_record(signal: Signal) -> dict[str, float]:
    return {"color_gap": float(signal.color_gap), "size_gap": float(signal.size_gap)}


def _dataset_arrays(images, colors, sizes, labels, positions, backgrounds, is_validation):
    """The arrays every dataset file holds; h = (r, g, b, size) is the sample's own values."""
    return {
        "images": images,
        "h": np.concatenate([colors, sizes[:, None]], axis=1).astype(np.float32),
        "label": labels,
        "color": colors,
        "size": sizes,
        "position": positions,
        "background": backgrounds,
        "is_validation": is_validation,
    }


def render_training_set(data_cfg: Mapping[str, Any], signal: Signal, seed: int) -> RenderedSet:
    """``images_per_class`` images of each training class (00, 01, 10); 11 is held out.

    Returns a ``RenderedSet`` (a dict of arrays with ``.metadata``): images float32
    (N, 3, S, S), h float32 (N, 4) = the sample's own (r, g, b, size), label int64
    (index into CLASSES), color, size, position, background, and is_validation (a random
    ``validation_fraction`` of each class).
    """
    streams = _streams(seed, _TRAINING_SET)
    per_class = int(data_cfg["images_per_class"])
    class_names = [name for name in TRAINING_CLASSES for _ in range(per_class)]
    labels = np.array([class_index(name) for name in class_names], dtype=np.int64)
    colors, sizes = sample_concepts(class_names, signal, streams["concepts"])
    positions = _positions(len(labels), data_cfg, streams["positions"])
    backgrounds = _backgrounds(len(labels), data_cfg, streams["backgrounds"])
    images = render_images(colors, sizes, positions, backgrounds, data_cfg, streams["noise"])
    arrays = _dataset_arrays(
        images, colors, sizes, labels, positions, backgrounds,
        _validation_flags(labels, float(data_cfg["validation_fraction"]), streams["split"]),
    )  # fmt: skip
    metadata = {
        "kind": "training_set",
        "data": dict(data_cfg),
        "signal": _signal_record(signal),
        "seed": int(seed),
        "classes": list(TRAINING_CLASSES),
        "class_means": {name: signal.class_h(name).tolist() for name in CLASSES},
        "h_layout": list(H_LAYOUT),
        "provenance": provenance({"data": dict(data_cfg), "signal": _signal_record(signal)}, seed),
    }
    return RenderedSet(arrays, metadata)


def render_probe_set(
    data_cfg: Mapping[str, Any],
    signals: Sequence[Signal],
    images_per_class: int,
    seed: int,
    validation_fraction: float | None = None,
) -> RenderedSet:
    """Images of ALL four classes for the concept probe, pooled over signal levels.

    Each image's signal level is drawn uniformly from ``signals`` (the authors pool
    several settings, ~16k images). Backgrounds follow the training distribution, the
    one the diffusion models learn and generate. Arrays as in ``render_training_set``,
    plus color_gap and size_gap (N,) float32 of each image's signal level.
    ``validation_fraction`` defaults to ``data_cfg['validation_fraction']``.
    """
    if not signals:
        raise ConceptspaceError("the probe needs at least one signal level (dc, ds)")
    if validation_fraction is None:
        validation_fraction = float(data_cfg["validation_fraction"])
    streams = _streams(seed, _PROBE_SET)
    class_names = [name for name in CLASSES for _ in range(int(images_per_class))]
    n = len(class_names)
    labels = np.array([class_index(name) for name in class_names], dtype=np.int64)
    level = streams["signals"].integers(len(signals), size=n)

    colors = np.empty((n, 3), np.float32)
    sizes = np.empty(n, np.float32)
    for index, signal in enumerate(signals):
        members = np.flatnonzero(level == index)
        chosen = [class_names[i] for i in members]
        colors[members], sizes[members] = sample_concepts(chosen, signal, streams["concepts"])
    positions = _positions(n, data_cfg, streams["positions"])
    backgrounds = _backgrounds(n, data_cfg, streams["backgrounds"])
    images = render_images(colors, sizes, positions, backgrounds, data_cfg, streams["noise"])
    arrays = _dataset_arrays(
        images, colors, sizes, labels, positions, backgrounds,
        _validation_flags(labels, validation_fraction, streams["split"]),
    )  # fmt: skip
    arrays.update(
        {
            "color_gap": np.array([signals[i].color_gap for i in level], dtype=np.float32),
            "size_gap": np.array([signals[i].size_gap for i in level], dtype=np.float32),
        }
    )
    signal_records = [_signal_record(s) for s in signals]
    metadata = {
        "kind": "probe_set",
        "data": dict(data_cfg),
        "signals": signal_records,
        "images_per_class": int(images_per_class),
        "validation_fraction": float(validation_fraction),
        "seed": int(seed),
        "classes": list(CLASSES),
        "concepts": list(CONCEPTS),
        "h_layout": list(H_LAYOUT),
        "provenance": provenance({"data": dict(data_cfg), "signals": signal_records}, seed),
    }
    return RenderedSet(arrays, metadata)


def concept_labels(labels: np.ndarray) -> np.ndarray:
    """Class indices -> (N, n_concepts) concept values (color 0 red / 1 blue, size 0 / 1)."""
    table = np.array([class_digits(name) for name in CLASSES], dtype=np.int64)
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
