"""CelebA faces as a dataset of the pipeline (docs/study.md; the paper's Male x Wearing_Hat).

The user supplies CelebA in torchvision's layout (it cannot be downloaded here) and
``prepare_celeba`` writes a dataset in the same format as the synthetic sets
(``render.save_dataset``), so ``train_run`` and the probe read it unchanged.

Loader: ``torchvision.datasets.CelebA(root, split, target_type="attr", download=False)``.
It reads these files under ``root/celeba/`` (torchvision 0.29, datasets/celeba.py)::

    img_align_celeba/                 the aligned JPEGs, 000001.jpg ... 202599.jpg
    list_eval_partition.txt           '000001.jpg 0' per line (0 train, 1 valid, 2 test)
    identity_CelebA.txt               '000001.jpg 2880'
    list_bbox_celeba.txt              count line, 'image_id x_1 y_1 width height', rows
    list_landmarks_align_celeba.txt   count line, 10 landmark names, rows of 10 integers
    list_attr_celeba.txt              count line, 40 attribute names, rows of 40 values +-1

It loads all five text files even for attributes alone, pairs their rows by position
(the partition file's order), and, even with download=False, checks the md5 of every
text file against the official release (not the images, only that their folder exists);
a mismatch gives only "Dataset not found or corrupted". ``check_celeba_dir`` runs first
and names the missing or mismatching file and the fix. ``verify_md5=False`` accepts
edited copies (a subset, re-saved files): the md5 check is then replaced by a check of
each file's format (columns, integers, attribute values +-1, the same images in the same
order in every file), which names the first bad line.

Classes and h. A class is named by one digit per attribute, as the synthetic classes:
digit i = 1 when attribute i is present. With the default attributes (Male, Wearing_Hat)
class "01" is female (Male = 0) with a hat (Wearing_Hat = 1): the paper's held-out class.
h is the authors' [code] conditioning, two one-hot attributes concatenated,
h = (1 - a1, a1, 1 - a2, a2), so H_DIM 4 like the synthetic h, and an all-zero pair can
later stand for a masked attribute. ``label`` is the class index in concepts.CLASSES, so
``render.concept_labels`` gives the per-attribute targets of the probe.

Images [inferred]: the authors resize their own pre-made PNGs straight to 64 x 64 (their
crop is not published). Here each aligned 178 x 218 photo is cropped to its central
square (``crop`` pixels, default the shorter side: the whole width, so hats stay in the
picture) and resized to ``image_size`` with torchvision's antialiased bicubic filter;
values in [0, 1], stored as uint8 like the synthetic sets (round(x * 255): the resize
already rounds to bytes, so storing adds no error). The authors' colour jitter and
horizontal flips are training-time augmentation and are not applied.

Balance: ``per_class`` images of every class in the set, drawn with the seed from the
chosen split without replacement; the held-out class is left out of training sets and
included in probe sets (``include_held_out``).
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from conceptspace.concepts import CLASSES, celeba_layout, class_digits, class_index, layout_attrs
from conceptspace.io import ConceptspaceError, eta, provenance
from conceptspace.render import IMAGE_ENCODING, RenderedSet, _validation_flags

log = logging.getLogger(__name__)

ROOT_KEY = "studies.celeba.root"  # the config key named in messages
BASE_FOLDER = "celeba"  # torchvision's CelebA.base_folder
IMAGE_FOLDER = "img_align_celeba"
DEFAULT_ATTRIBUTES = ("Male", "Wearing_Hat")
DEFAULT_HELD_OUT = (0, 1)  # female with hat
SPLITS = ("train", "valid", "test", "all")
DOWNLOAD_HINT = (
    "download CelebA yourself (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: "
    "img_align_celeba.zip and the Anno/ and Eval/ text files; torchvision cannot download "
    "it here), unzip img_align_celeba.zip into celeba/, and set "
    f"{ROOT_KEY} (--root on the command line) to the folder that holds celeba/"
)

# Each text file: (header lines before the rows, what a row holds). Header lines are a
# count and a line of column names; bbox's names start with 'image_id'.
TEXT_FILES = {
    "list_eval_partition.txt": (0, "'000001.jpg 0' (0 train, 1 valid, 2 test)"),
    "identity_CelebA.txt": (0, "'000001.jpg 2880' (the person's identity)"),
    "list_bbox_celeba.txt": (
        2,
        "a count line, 'image_id x_1 y_1 width height', then '000001.jpg 95 71 226 313'",
    ),
    "list_landmarks_align_celeba.txt": (
        2,
        "a count line, the 10 landmark names, then the image name and 10 integers",
    ),
    "list_attr_celeba.txt": (
        2,
        "a count line, the 40 attribute names, then the image name and 40 values of -1 or 1",
    ),
}
_PARTITION = "list_eval_partition.txt"
_ATTRIBUTES = "list_attr_celeba.txt"

# Separate entropy for training and probe sets, as render.py does for its sets.
_TRAINING_SET, _PROBE_SET = 0, 1


def expected_layout(root: str | os.PathLike) -> str:
    """What torchvision expects under ``root``, one entry per line (for messages)."""
    base = Path(root) / BASE_FOLDER
    lines = [f"  {base / IMAGE_FOLDER}/  (the aligned JPEGs, 000001.jpg ...)"]
    lines += [f"  {base / name}  ({what})" for name, (_, what) in TEXT_FILES.items()]
    return "\n".join(lines)


def _official_md5s() -> dict[str, str]:
    """The official text files' md5s, from torchvision's own table."""
    from torchvision.datasets import CelebA

    return {name: md5 for _, md5, name in CelebA.file_list if name in TEXT_FILES}


def check_celeba_dir(root: str | os.PathLike, verify_md5: bool = True) -> Path:
    """Stop with a ConceptspaceError naming what is missing, mismatching or malformed
    under ``root/celeba`` and the fix; return that folder when torchvision can load it."""
    root = Path(root)
    base = root / BASE_FOLDER
    missing = [IMAGE_FOLDER + "/"] if not (base / IMAGE_FOLDER).is_dir() else []
    missing += [name for name in TEXT_FILES if not (base / name).is_file()]
    if missing:
        where = f"{root} does not exist" if not root.is_dir() else f"{base} lacks {missing}"
        hint = ""
        if (root / IMAGE_FOLDER).is_dir() or (root / _ATTRIBUTES).is_file():
            hint = f" ({root} looks like the celeba folder itself: point at its parent)"
        raise ConceptspaceError(
            f"CelebA not found: {where}{hint}. torchvision's CelebA loader expects:\n"
            f"{expected_layout(root)}\nFix: {DOWNLOAD_HINT}."
        )
    if verify_md5:
        from torchvision.datasets.utils import check_integrity

        wrong = [
            f"{name} (official md5 {md5})"
            for name, md5 in _official_md5s().items()
            if not check_integrity(str(base / name), md5)
        ]
        if wrong:
            raise ConceptspaceError(
                f"CelebA under {base}: {', '.join(wrong)} differ from the official release, "
                "and torchvision's loader checks these md5s even without downloading. Fix: "
                "replace them with the official files (re-download; a truncated copy is the "
                "usual cause), or, for a deliberately edited copy (a subset, re-saved "
                "files), turn the check off (--no-verify-md5; verify_md5=False), which "
                "checks the files' format instead."
            )
    else:
        _check_text_formats(base)
    return base


def _read_rows(path: Path) -> list[list[str]]:
    # The same parsing as torchvision: space separated, runs of spaces allowed.
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter=" ", skipinitialspace=True))


def _format_error(path: Path, line: int, problem: str, what: str) -> ConceptspaceError:
    return ConceptspaceError(
        f"CelebA file {path} is malformed at line {line}: {problem}. torchvision reads it as "
        f"{what}. Fix: restore the official file ({DOWNLOAD_HINT})."
    )


def _check_text_formats(base: Path) -> None:
    """Each text file in the layout torchvision parses, and all listing the same images
    in the same order (torchvision pairs their rows by position without checking)."""
    reference: list[str] | None = None
    for name, (header_lines, what) in TEXT_FILES.items():
        path = base / name
        rows = _read_rows(path)
        if header_lines:
            if len(rows) < header_lines:
                raise _format_error(path, len(rows) + 1, "the header lines are missing", what)
            columns = [c for c in rows[header_lines - 1] if c and c != "image_id"]
            n_values = len(columns)
        else:
            n_values = 1
        body = rows[header_lines:]
        for number, row in enumerate(body, start=header_lines + 1):
            if len(row) != 1 + n_values:
                shown = " ".join(row)[:80]
                problem = f"{len(row)} fields instead of {1 + n_values} ('{shown}')"
                raise _format_error(path, number, problem, what)
            try:
                values = [int(v) for v in row[1:]]
            except ValueError:
                problem = f"a value is not an integer ('{' '.join(row)[:80]}')"
                raise _format_error(path, number, problem, what) from None
            if name == _ATTRIBUTES and any(v not in (-1, 1) for v in values):
                problem = f"an attribute value is not -1 or 1 ('{' '.join(row)[:80]}')"
                raise _format_error(path, number, problem, what)
        images = [row[0] for row in body]
        if reference is None:
            reference = images
        elif images != reference:
            raise ConceptspaceError(
                f"CelebA files {base / _PARTITION} and {path} do not list the same images in "
                f"the same order ({len(reference)} and {len(images)} rows); torchvision "
                f"pairs their rows by position. Fix: restore the official files "
                f"({DOWNLOAD_HINT})."
            )


def open_celeba(root: str | os.PathLike, split: str = "train", verify_md5: bool = True):
    """torchvision's CelebA (attributes, no download) after ``check_celeba_dir``."""
    from torchvision.datasets import CelebA

    if split not in SPLITS:
        raise ConceptspaceError(f"CelebA split {split!r} is unknown; use one of {SPLITS}")
    check_celeba_dir(root, verify_md5)

    class FormatCheckedCelebA(CelebA):
        # The md5 check is replaced by check_celeba_dir's format check (already run).
        def _check_integrity(self) -> bool:
            return True

    loader = CelebA if verify_md5 else FormatCheckedCelebA
    try:
        return loader(str(root), split=split, target_type="attr", download=False)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ConceptspaceError(
            f"torchvision could not load CelebA from {Path(root) / BASE_FOLDER} "
            f"({type(err).__name__}: {err}). It expects:\n{expected_layout(root)}\n"
            f"Fix: {DOWNLOAD_HINT}."
        ) from err


def class_h(name: str) -> np.ndarray:
    """h of a class: the two attributes one-hot, (1 - a1, a1, 1 - a2, a2), float32."""
    first, second = class_digits(name)
    return np.array([1 - first, first, 1 - second, second], dtype=np.float32)


def h_layout(attributes: Sequence[str]) -> list[str]:
    return [f"{prefix}{name}" for name in attributes for prefix in ("not_", "")]


def face_transform(image_size: int, crop: int | None = None):
    """PIL image -> uint8 tensor (3, S, S): central square crop, antialiased bicubic resize."""
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode

    def transform(image):
        image = image.convert("RGB")
        side = min(image.size) if crop is None else int(crop)
        if side > min(image.size):
            raise ConceptspaceError(
                f"crop {side} px is larger than a CelebA image ({image.size[0]} x "
                f"{image.size[1]}); choose at most {min(image.size)}"
            )
        image = F.center_crop(image, [side, side])
        image = F.resize(image, [image_size, image_size], InterpolationMode.BICUBIC, antialias=True)
        return F.pil_to_tensor(image)

    return transform


def _attribute_columns(dataset, attributes: Sequence[str]) -> list[int]:
    names = [name for name in dataset.attr_names if name]  # the header may end in a space
    unknown = [name for name in attributes if name not in names]
    if unknown:
        raise ConceptspaceError(
            f"CelebA has no attribute {', '.join(map(repr, unknown))}; its attributes are: "
            f"{', '.join(names)}"
        )
    return [dataset.attr_names.index(name) for name in attributes]


def _held_out_class(held_out: Sequence[int]) -> str:
    digits = [int(d) for d in held_out]
    if len(digits) != 2 or any(d not in (0, 1) for d in digits):
        raise ConceptspaceError(
            f"held_out must be two digits 0/1 (attribute absent/present), got {list(held_out)}"
        )
    return f"{digits[0]}{digits[1]}"


def prepare_celeba(
    root: str | os.PathLike,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    held_out: Sequence[int] = DEFAULT_HELD_OUT,
    image_size: int = 64,
    per_class: int = 2048,
    seed: int = 0,
    split: str = "train",
    include_held_out: bool = False,
    validation_fraction: float = 0.15,
    crop: int | None = None,
    verify_md5: bool = True,
    log_every: int = 1000,
) -> RenderedSet:
    """A balanced CelebA dataset in the synthetic sets' format (``render.save_dataset``).

    ``per_class`` images of each training class (the three classes other than
    ``held_out``), or of all four with ``include_held_out`` (a probe set), drawn with
    ``seed`` from torchvision's ``split``. Returns a RenderedSet: images uint8
    (N, 3, S, S) (x = value / 255; ``load_dataset`` gives float32), h float32 (N, 4),
    label int64 (index into CLASSES), attributes int64 (N, 2) of 0/1, filename,
    is_validation (a random ``validation_fraction`` of each class), and metadata with
    provenance.
    """
    unseen = _held_out_class(held_out)
    _check_request(attributes, per_class)
    dataset = open_celeba(root, split, verify_md5)
    columns = _attribute_columns(dataset, attributes)
    digits = dataset.attr[:, columns].numpy().astype(np.int64)  # torchvision maps -1/1 to 0/1
    available = {
        name: int(np.sum(np.all(digits == class_digits(name), axis=1))) for name in CLASSES
    }
    classes = [name for name in CLASSES if include_held_out or name != unseen]
    per_class = int(per_class)
    _check_available(available, classes, per_class, split, attributes)

    purpose = _PROBE_SET if include_held_out else _TRAINING_SET
    choose, split_rng = (
        np.random.default_rng(child)
        for child in np.random.SeedSequence([int(seed), purpose]).spawn(2)
    )
    index = _draw_images(digits, classes, per_class, choose)
    labels = np.repeat([class_index(name) for name in classes], per_class).astype(np.int64)
    arrays = {
        "images": _read_faces(dataset, index, root, int(image_size), crop, log_every),
        "h": np.stack([class_h(CLASSES[label]) for label in labels]),
        "label": labels,
        "attributes": digits[index],
        "filename": np.array([dataset.filename[int(i)] for i in index]),
        "is_validation": _validation_flags(labels, float(validation_fraction), split_rng),
    }
    settings = {
        "attributes": list(attributes),
        "held_out": unseen,
        "image_size": int(image_size),
        "per_class": per_class,
        "split": split,
        "include_held_out": bool(include_held_out),
        "validation_fraction": float(validation_fraction),
        "crop": crop,
        "verify_md5": bool(verify_md5),
    }
    return RenderedSet(arrays, _metadata(settings, root, seed, classes, available))


def _check_request(attributes: Sequence[str], per_class: int) -> None:
    if len(attributes) != 2 or attributes[0] == attributes[1]:
        raise ConceptspaceError(
            f"CelebA needs two different attributes (one per concept); got {list(attributes)}"
        )
    if int(per_class) < 1:
        raise ConceptspaceError(f"images per class must be at least 1, got {per_class}")


def _check_available(
    available: dict[str, int],
    classes: list[str],
    per_class: int,
    split: str,
    attributes: Sequence[str],
) -> None:
    short = {name: available[name] for name in classes if available[name] < per_class}
    if short:
        counts = ", ".join(f"{name}: {count}" for name, count in short.items())
        raise ConceptspaceError(
            f"CelebA split {split!r} has too few images for {per_class} per class "
            f"(class digits {attributes[0]} {attributes[1]}, 1 = present): {counts}. Lower "
            f"the images per class to at most {min(short.values())}, or use split 'all'."
        )


def _draw_images(
    digits: np.ndarray, classes: list[str], per_class: int, choose: np.random.Generator
) -> np.ndarray:
    """Indices of ``per_class`` images of each class, class after class."""
    chosen = []
    for name in classes:
        members = np.flatnonzero(np.all(digits == class_digits(name), axis=1))
        # Sorted within a class: files are read in directory order, the draw stays seeded.
        chosen.append(np.sort(choose.choice(members, size=per_class, replace=False)))
    return np.concatenate(chosen)


def _read_faces(
    dataset,
    index: np.ndarray,
    root: str | os.PathLike,
    image_size: int,
    crop: int | None,
    log_every: int,
) -> np.ndarray:
    """The images at ``index``, cropped and resized (``face_transform``), uint8."""
    transform = face_transform(image_size, crop)
    images = np.empty((len(index), 3, image_size, image_size), np.uint8)
    started = time.perf_counter()
    for done, i in enumerate(index, start=1):
        try:
            images[done - 1] = transform(dataset[int(i)][0]).numpy()
        except OSError as err:  # missing, truncated or not an image (PIL's errors)
            path = Path(root) / BASE_FOLDER / IMAGE_FOLDER / dataset.filename[int(i)]
            raise ConceptspaceError(
                f"CelebA image {path} could not be read ({type(err).__name__}: {err}). Fix: "
                f"restore {IMAGE_FOLDER}/ from img_align_celeba.zip ({DOWNLOAD_HINT})."
            ) from err
        if done % max(1, int(log_every)) == 0 or done == len(index):
            elapsed = time.perf_counter() - started
            log.info(
                "celeba: read %d/%d images (%.0f%%) | ETA %s",
                done,
                len(index),
                100 * done / len(index),
                eta(done, len(index), elapsed),
            )
    return images


def _metadata(
    settings: dict[str, Any],
    root: str | os.PathLike,
    seed: int,
    classes: list[str],
    available: dict[str, int],
) -> dict[str, Any]:
    attributes, unseen = settings["attributes"], settings["held_out"]
    return {
        "kind": "celeba_probe_set" if settings["include_held_out"] else "celeba_training_set",
        "celeba": settings,
        "root": str(root),  # not in the provenance hash: moving the data changes nothing
        "seed": int(seed),
        "classes": classes,
        "unseen_class": unseen,
        "concepts": list(attributes),
        "digits": "digit i = 1 when attribute i is present",
        "class_means": {name: class_h(name).tolist() for name in CLASSES},
        "h_layout": h_layout(attributes),
        "available": available,
        "image_encoding": IMAGE_ENCODING,
        **layout_attrs(celeba_layout(tuple(attributes), unseen)),  # probes and evaluation
        "provenance": provenance({"celeba": settings}, seed),
    }
