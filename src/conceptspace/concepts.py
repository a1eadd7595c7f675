"""Concepts, concept classes and the conditioning vector h.

The 2x2 study has two concepts, color and size, each with two values. A class is named
by one digit per concept: color 0 = red, 1 = blue; size 0 = large, 1 = small. Classes
00 (red large), 01 (red small) and 10 (blue large) are trained; 11 (blue small) is held
out and only ever prompted.

h layout (compact; the authors' code uses an 11-d vector with unused slots):
    h = (r, g, b, size)
the object's RGB color in [0, 1] and its radius in grid units. Training images are
conditioned on their own sampled values; prompts use the class means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONCEPTS = ("color", "size")
CLASSES = ("00", "01", "10", "11")
TRAINING_CLASSES = ("00", "01", "10")
UNSEEN_CLASS = "11"
H_DIM = 4
H_LAYOUT = ("red", "green", "blue", "size")

COLOR_NAMES = ("red", "blue")
SIZE_NAMES = ("large", "small")

# SPEC: sizes are 0.45 +- ds/2; colors 0.5 +- dc/2 per channel.
SIZE_CENTER = 0.45
COLOR_CENTER = 0.5
SIZE_FLOOR = 0.1


@dataclass(frozen=True)
class Signal:
    """The concept signal of a run: color gap dc and size gap ds."""

    color_gap: float
    size_gap: float

    def color_mean(self, color: int) -> np.ndarray:
        """Mean RGB of color 0 (red) or 1 (blue)."""
        half = self.color_gap / 2
        if color == 0:
            return np.array([COLOR_CENTER + half, COLOR_CENTER - half, COLOR_CENTER - half])
        return np.array([COLOR_CENTER - half, COLOR_CENTER - half, COLOR_CENTER + half])

    def size_mean(self, size: int) -> float:
        """Mean radius of size 0 (large) or 1 (small)."""
        half = self.size_gap / 2
        return SIZE_CENTER + half if size == 0 else SIZE_CENTER - half

    # Training samples spread uniformly around the means (SPEC): each color channel by
    # +- dc/8, the radius by +- 3 ds/8, so neighbouring classes never overlap.
    @property
    def color_halfwidth(self) -> float:
        return self.color_gap / 8

    @property
    def size_halfwidth(self) -> float:
        return 3 * self.size_gap / 8

    def class_h(self, name: str) -> np.ndarray:
        """The prompt h of a class: its concept means."""
        color, size = class_digits(name)
        return np.concatenate([self.color_mean(color), [self.size_mean(size)]]).astype(np.float32)


def class_digits(name: str) -> tuple[int, int]:
    if name not in CLASSES:
        raise ValueError(f"unknown class {name!r}; classes are {', '.join(CLASSES)}")
    return int(name[0]), int(name[1])


def class_index(name: str) -> int:
    return CLASSES.index(name)


def run_id(color_gap: float, size_gap: float, seed: int) -> str:
    """The name of one training run, also its folder: dc0.400_ds0.400_seed0."""
    return f"dc{color_gap:.3f}_ds{size_gap:.3f}_seed{seed}"
