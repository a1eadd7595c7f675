"""A run's identity: the fields that name a training run, its id, the limits and decimals
of its gaps, when two gaps are the same, and the checkpoints it saves.

Every stage reads these (the config checks, the studies, rendering, training, evaluation,
gathering, the claims and the rules), so they live in this one leaf module, which imports
no module of the package: a stage that needs a run's identity imports it from here and
from nowhere else.
"""

from __future__ import annotations

import copy

# The fields a run may have, in the order a study dataset's coordinates take them: always
# its seed; its gaps unless its images are prepared (CelebA); a masking ratio or a
# background gap where its study varies one.
RUN_FIELDS = ("seed", "color_gap", "size_gap", "mask_ratio", "background_gap")
# The fields spanning the signal study: seeds x color gaps x size gaps.
SIGNAL_GRID = ("seed", "color_gap", "size_gap")

# Colors stay inside [0, 1] when 0.5 + dc/2 + dc/8 <= 1; discs stay inside the image
# when the largest radius 0.45 + ds/2 + 3ds/8 stays below 1. The schema's maxima are
# these (workflow/schemas/config.schema.yaml; tests/test_config.py compares them).
MAX_COLOR_GAP = 0.8
MAX_SIZE_GAP = 0.6
MAX_BACKGROUND_GAP = MAX_COLOR_GAP  # a grey of 0.5 +- db/2 moves like a color channel
# Run ids print gaps and masking ratios with this many decimals; the config check refuses
# finer values, which would give two runs one id.
GAP_DECIMALS = 3
# Two gaps are the same when they print the same in a run id: distinct ones differ by at
# least 10**-GAP_DECIMALS, float noise (a float32 attribute read back) by far less.
GAP_TOLERANCE = 0.5 * 10**-GAP_DECIMALS


def same_gap(a, b):
    """Whether gaps ``a`` and ``b`` are the same (elementwise for arrays)."""
    return abs(a - b) < GAP_TOLERANCE


def run_id(
    color_gap: float, size_gap: float, seed: int, background_gap: float | None = None
) -> str:
    """The name of one run of the rendered 2x2 layouts, also its folder:
    dc0.400_ds0.400_seed0; a run with a background concept (2x2x2) adds its gap:
    dc0.400_ds0.400_db0.400_seed0."""
    background = "" if background_gap is None else f"_db{_printed(background_gap)}"
    return f"dc{_printed(color_gap)}_ds{_printed(size_gap)}{background}_seed{seed}"


def masked_run_id(mask_ratio: float, seed: int) -> str:
    """The name of one run of the underspecification study: p0.250_seed0."""
    return f"p{_printed(mask_ratio)}_seed{seed}"


def _printed(value: float) -> str:
    return f"{value:.{GAP_DECIMALS}f}"


def checkpoint_steps(training: dict) -> list[int]:
    """Steps at which training saves a checkpoint: `count` steps from `first` to `last`,
    evenly spaced in sqrt(step), so early training, where concepts emerge, is sampled
    densely (the authors' quadratic schedule). A pure function of the config, so the DAG
    knows every evaluation job before training starts."""
    spec = training["checkpoints"]
    first, last, count = spec["first"], spec["last"], spec["count"]
    if count == 1:
        return [last]
    roots = [first**0.5 + (last**0.5 - first**0.5) * i / (count - 1) for i in range(count)]
    steps = sorted({round(r * r) for r in roots} | {first, last})
    return [s for s in steps if first <= s <= last]


def merge(base: dict, overlay: dict) -> dict:
    """Overlay one config on another the way Snakemake does: dicts merge, lists replace.
    (A study's ``training`` overlay, merged so, decides its runs' checkpoints.)"""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
