"""Concepts, concept classes and the conditioning vector h.

The 2x2 study has two concepts, color and size, each with two values. A class is named
by one digit per concept: color 0 = red, 1 = blue; size 0 = large, 1 = small. Classes
00 (red large), 01 (red small) and 10 (blue large) are trained; 11 (blue small) is held
out and only ever prompted.

h layout (compact; the authors' code uses an 11-d vector with unused slots):
    h = (r, g, b, size)
the object's RGB color in [0, 1] and its radius in grid units. Training images are
conditioned on their own sampled values; prompts use the class means.

Layouts. The 2x2 study is one concept ``Layout`` among several (``LAYOUTS``); a layout
names its concepts, its classes (one digit per concept, in concept order), which are
trained and which unseen, and its h (each concept's slots, in concept order):

    color_size             color x size; train 00 01 10, unseen 11 (blue small);
                           h = (r, g, b, size). The signal study; the constants above.
    color_shape            color x shape (0 disc, 1 triangle); train 00 (red disc),
                           01 (red triangle), 10 (blue disc), unseen 11 (blue
                           triangle); h = (r, g, b, shape). Objects are the 2x2's large
                           size at the run's size gap (a nuisance, not in h). The
                           underspecification study: ``mask_ratio`` p of the red
                           triangles have their color masked (``MASK_VALUE``).
    color_shape_one_hot    color_shape with shape one-hot in two slots, h = (r, g, b,
                           not_shape, shape), as the authors' code writes its concepts
                           (studies.underspecification.shape_encoding: one_hot).
    color_size_background  color x size x background (0 light, 1 dark grey,
                           0.5 +- db/2); train 000 001 010 100, unseen 011 101 110 111;
                           h = (r, g, b, size, background grey level).

    celeba                 two CelebA attributes (``celeba_layout``; default Male x
                           Wearing_Hat), h one-hot per attribute, the held-out class
                           (default 01, female with hat) unseen.

Masking [inferred]: a masked concept's slots of h hold ``MASK_VALUE`` = -1, a value no
real concept value takes (colors, radii, shapes and grey levels are all >= 0), so the
model can tell "color not given" apart from every real color.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

CONCEPTS = ("color", "size")
CLASSES = ("00", "01", "10", "11")
TRAINING_CLASSES = ("00", "01", "10")
UNSEEN_CLASS = "11"
H_DIM = 4
H_LAYOUT = ("red", "green", "blue", "size")

COLOR_NAMES = ("red", "blue")
SIZE_NAMES = ("large", "small")

# Sizes are 0.45 +- ds/2, colors 0.5 +- dc/2 per channel (docs/study.md "Concept signal").
SIZE_CENTER = 0.45
COLOR_CENTER = 0.5
SIZE_FLOOR = 0.1
BACKGROUND_CENTER = 0.5
MASK_VALUE = -1.0

# Each concept's value names (digit 0, 1) and its slots in h.
CONCEPT_VALUES = {
    "color": COLOR_NAMES,
    "size": SIZE_NAMES,
    "shape": ("disc", "triangle"),
    "background": ("light", "dark"),
}
CONCEPT_SLOTS = {
    "color": ("red", "green", "blue"),
    "size": ("size",),
    "shape": ("shape",),
    "background": ("background",),
}


@dataclass(frozen=True)
class Signal:
    """The concept signal of a run: color gap dc and size gap ds."""

    color_gap: float
    size_gap: float
    background_gap: float = 0.0  # only the color_size_background layout uses it

    @classmethod
    def of_run(
        cls, color_gap: float | None, size_gap: float | None, background_gap: float | None
    ) -> "Signal":
        """The signal of a run's gaps; a gap it lacks is 0 (CelebA runs have none:
        evaluation checks their layout instead)."""
        return cls(*(gap or 0.0 for gap in (color_gap, size_gap, background_gap)))

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

    # Training samples spread uniformly around the means (docs/study.md): each color channel by
    # +- dc/8, the radius by +- 3 ds/8, so neighbouring classes never overlap.
    @property
    def color_halfwidth(self) -> float:
        return self.color_gap / 8

    @property
    def size_halfwidth(self) -> float:
        return 3 * self.size_gap / 8

    def background_mean(self, background: int) -> float:
        """Grey level of background 0 (light) or 1 (dark): 0.5 +- db/2."""
        half = self.background_gap / 2
        return BACKGROUND_CENTER + half if background == 0 else BACKGROUND_CENTER - half

    @property
    def background_halfwidth(self) -> float:
        # [inferred] as the color channels: +- db/8 keeps the two greys apart.
        return self.background_gap / 8

    def concept_mean(self, concept: str, value: int) -> np.ndarray:
        """A concept's slots of h at its value 0 or 1 (class means; a shape is its digit)."""
        if concept == "color":
            return self.color_mean(value)
        if concept == "size":
            return np.array([self.size_mean(value)])
        if concept == "shape":
            return np.array([float(value)])
        if concept == "background":
            return np.array([self.background_mean(value)])
        raise ValueError(f"unknown concept {concept!r}; concepts are {', '.join(CONCEPT_SLOTS)}")

    def class_h(self, name: str) -> np.ndarray:
        """The prompt h of a 2x2 class: its concept means (``Layout.class_h`` for others)."""
        return COLOR_SIZE.class_h(name, self)


def class_digits(name: str) -> tuple[int, int]:
    if name not in CLASSES:
        raise ValueError(f"unknown class {name!r}; classes are {', '.join(CLASSES)}")
    return int(name[0]), int(name[1])


def class_index(name: str) -> int:
    return CLASSES.index(name)


@dataclass(frozen=True)
class Layout:
    """Concepts, classes and the h of one study (see the module notes).

    ``masked`` is (class, concept) of the layout's prompt masking, or None. ``one_hot``:
    h holds each concept one-hot, (not c, c), whatever the signal (CelebA's attributes,
    ``celeba_layout``); the concepts are then free names (the attributes).
    ``one_hot_concepts``: the concepts held one-hot in an otherwise signal-valued h.
    """

    name: str
    concepts: tuple[str, ...]
    training_classes: tuple[str, ...]
    masked: tuple[str, str] | None = None
    one_hot: bool = False
    one_hot_concepts: tuple[str, ...] = ()

    def is_one_hot(self, concept: str) -> bool:
        """Whether h holds ``concept`` one-hot, (not c, c), instead of its value."""
        return self.one_hot or concept in self.one_hot_concepts

    def concept_slots(self, concept: str) -> tuple[str, ...]:
        """The names of a concept's slots in h."""
        return (f"not_{concept}", concept) if self.is_one_hot(concept) else CONCEPT_SLOTS[concept]

    def record(self) -> dict:
        """What rebuilds the layout (``layout_named``): stored in datasets and probes."""
        return {
            "name": self.name,
            "concepts": list(self.concepts),
            "training_classes": list(self.training_classes),
            "one_hot": self.one_hot,
            "one_hot_concepts": list(self.one_hot_concepts),
        }

    def intervention_h(self) -> tuple[np.ndarray, np.ndarray]:
        """(amplified h, removed h) of the linear latent intervention of a one-hot layout
        with two concepts and one unseen class [inferred; the paper's CelebA runs give
        none]: the 2x2's rule, amplify concept 1 at the unseen class's value (blue) and
        remove concept 2 at the other value (large), on one-hot h. For the held-out
        female with hat (Male 0, Wearing_Hat 1): amplify "female" (1, 0, 0, 0), against
        the pull to male with hat, and remove "no hat" (0, 0, 1, 0), against female
        without hat: the two training classes it differs from in one attribute."""
        if not self.has_one_hot_intervention:
            raise ValueError(f"layout {self.name} has no one-hot intervention")
        first, second = self.digits(self.unseen_classes[0])
        amplified, removed = np.zeros(self.h_dim, np.float32), np.zeros(self.h_dim, np.float32)
        amplified[self.slots(self.concepts[0])] = np.eye(2)[first]
        removed[self.slots(self.concepts[1])] = np.eye(2)[1 - second]
        return amplified, removed

    @property
    def has_one_hot_intervention(self) -> bool:
        """Whether :meth:`intervention_h` is defined: one-hot, two concepts, one unseen class."""
        return self.one_hot and len(self.concepts) == 2 and len(self.unseen_classes) == 1

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class, digits in concept order, sorted (00, 01, 10, 11)."""
        return tuple("".join(d) for d in itertools.product("01", repeat=len(self.concepts)))

    @property
    def unseen_classes(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c not in self.training_classes)

    @property
    def h_layout(self) -> tuple[str, ...]:
        return tuple(slot for concept in self.concepts for slot in self.concept_slots(concept))

    @property
    def h_dim(self) -> int:
        return len(self.h_layout)

    def slots(self, concept: str) -> slice:
        """Where ``concept`` sits in h."""
        start = 0
        for name in self.concepts:
            if name == concept:
                return slice(start, start + len(self.concept_slots(name)))
            start += len(self.concept_slots(name))
        raise ValueError(f"layout {self.name} has no concept {concept!r}")

    def digits(self, name: str) -> tuple[int, ...]:
        if name not in self.classes:
            raise ValueError(
                f"unknown class {name!r} of layout {self.name}; classes are "
                + ", ".join(self.classes)
            )
        return tuple(int(d) for d in name)

    def class_index(self, name: str) -> int:
        return self.classes.index(name)

    def class_h(self, name: str, signal: Signal) -> np.ndarray:
        """The prompt h of a class: its concepts' means (a one-hot concept: its digit
        one-hot), float32."""
        parts = [
            np.eye(2)[v] if self.is_one_hot(c) else signal.concept_mean(c, v)
            for c, v in zip(self.concepts, self.digits(name))
        ]
        return np.concatenate(parts).astype(np.float32)

    def label(self, name: str) -> str:
        """Readable name of a class: 'blue triangle' (one-hot: 'not Male, Wearing_Hat')."""
        pairs = zip(self.concepts, self.digits(name))
        if self.one_hot:
            return ", ".join(c if v else f"not {c}" for c, v in pairs)
        return " ".join(CONCEPT_VALUES[c][v] for c, v in pairs)


COLOR_SIZE = Layout("color_size", CONCEPTS, TRAINING_CLASSES)
COLOR_SHAPE = Layout("color_shape", ("color", "shape"), ("00", "01", "10"), masked=("01", "color"))
COLOR_SHAPE_ONE_HOT = Layout(
    "color_shape_one_hot",
    ("color", "shape"),
    ("00", "01", "10"),
    masked=("01", "color"),
    one_hot_concepts=("shape",),
)
COLOR_SIZE_BACKGROUND = Layout(
    "color_size_background", ("color", "size", "background"), ("000", "001", "010", "100")
)
LAYOUTS = {
    layout.name: layout
    for layout in (COLOR_SIZE, COLOR_SHAPE, COLOR_SHAPE_ONE_HOT, COLOR_SIZE_BACKGROUND)
}


def celeba_layout(attributes: tuple[str, ...], held_out: str) -> Layout:
    """CelebA's layout: two attributes as concepts (digit 1 = present), h one-hot
    (1 - a1, a1, 1 - a2, a2), every class but ``held_out`` trained."""
    if held_out not in CLASSES:
        raise ValueError(f"held-out class {held_out!r} is not one of {', '.join(CLASSES)}")
    training = tuple(c for c in CLASSES if c != held_out)
    return Layout("celeba", tuple(attributes), training, one_hot=True)


def layout_named(name: str | dict | None) -> Layout:
    """The layout of that name, or rebuilt from its ``Layout.record()``; None (files from
    before layouts existed) is the 2x2."""
    if name is None:
        return COLOR_SIZE
    if isinstance(name, dict):
        if name["name"] in LAYOUTS:
            return LAYOUTS[name["name"]]
        return Layout(
            str(name["name"]),
            tuple(name["concepts"]),
            tuple(name["training_classes"]),
            one_hot=bool(name.get("one_hot", False)),
            one_hot_concepts=tuple(name.get("one_hot_concepts", ())),
        )
    if name not in LAYOUTS:
        raise ValueError(f"unknown concept layout {name!r}; layouts are {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def layout_attrs(layout: Layout) -> dict[str, Any]:
    """How a file names its layout: ``layout`` (its name) and, for a layout built from the
    config (CelebA's attributes), ``layout_record`` (``Layout.record()``)."""
    attrs: dict[str, Any] = {"layout": layout.name}
    if layout.name not in LAYOUTS:
        attrs["layout_record"] = layout.record()
    return attrs


def layout_from_attrs(attrs: Mapping[str, Any]) -> Layout:
    """The layout named by ``layout_attrs`` in a file's attributes or metadata (the record
    may be a JSON string, as netCDF stores it); no layout: the 2x2."""
    record = attrs.get("layout_record")
    if record is not None:
        return layout_named(json.loads(record) if isinstance(record, str) else dict(record))
    return layout_named(attrs.get("layout"))
