"""`conceptspace info PATH`: the provenance stored in any file the pipeline writes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conceptspace.io import ConceptspaceError

PROVENANCE_KEYS = ("config_hash", "git_commit", "seed", "versions", "host", "command")
# Where figures.save_figure puts the provenance record (JSON) of a figure.
FIGURE_FIELDS = {".pdf": "Subject", ".png": "Description"}
_PDF_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance record of a dataset (.npz), checkpoint or probe (.pt), netCDF
    (.nc), JSON (sidecar, manifest, metrics) or figure (.pdf, .png) file."""
    if not path.exists():
        raise ConceptspaceError(f"{path} does not exist")
    suffix = path.suffix
    try:
        if suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as archive:
                metadata = json.loads(str(archive["metadata"]))
            return metadata.get("provenance", metadata)
        if suffix == ".pt":
            import torch

            return torch.load(path, map_location="cpu", weights_only=True)["provenance"]
        if suffix == ".nc":
            import xarray as xr

            with xr.open_dataset(path) as ds:
                attrs = dict(ds.attrs)
            return {key: _maybe_json(value) for key, value in attrs.items() if key != "config"}
        if suffix == ".json":
            record = json.loads(path.read_text())
            return record.get("provenance", record)
        if suffix in FIGURE_FIELDS:  # figures.save_figure stores the record as JSON there
            text = _png_text(path) if suffix == ".png" else _pdf_info_string(path)
            if text is None:
                raise ConceptspaceError(
                    f"{path} carries no provenance ({FIGURE_FIELDS[suffix]} field); it was "
                    "drawn by an older version: delete it and rerun snakemake to draw it again"
                )
            return json.loads(text)
    except ConceptspaceError:
        raise
    except Exception as err:  # any reader's failure means the file is damaged
        raise ConceptspaceError(
            f"{path} could not be read ({type(err).__name__}: {err}); it is truncated or "
            "corrupt: delete it and rerun snakemake to rebuild it"
        ) from err
    raise ConceptspaceError(f"{path}: no provenance reader for '{suffix}' files")


def _png_text(path: Path) -> str | None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # text chunks after the image data are read with it
        return image.text.get(FIGURE_FIELDS[".png"])


def _pdf_info_string(path: Path) -> str | None:
    """The literal string of the PDF Info dictionary's key, as matplotlib writes it:
    ASCII in parentheses with backslash escapes (the Info dictionary is not compressed)."""
    data = path.read_bytes()
    start = data.rfind(b"/" + FIGURE_FIELDS[".pdf"].encode() + b" (")
    if start < 0:
        return None
    out, i, depth = bytearray(), data.index(b"(", start) + 1, 0
    while True:
        char = data[i : i + 1]
        if not char:
            raise ValueError("unterminated string in the PDF Info dictionary")
        if char == b"\\":
            following = data[i + 1 : i + 2]
            if following.isdigit():  # octal escape, up to 3 digits
                digits = re.match(rb"[0-7]{1,3}", data[i + 1 : i + 4])[0]
                out.append(int(digits, 8))
                i += 1 + len(digits)
                continue
            out += _PDF_ESCAPES.get(following, following)
            i += 2
            continue
        if char == b"(":
            depth += 1
        elif char == b")":
            if depth == 0:
                return out.decode("latin-1")
            depth -= 1
        out += char
        i += 1


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def describe(path: Path) -> str:
    record = read_provenance(path)
    lines = [f"{path}"]
    for key in PROVENANCE_KEYS:
        if key in record:
            value = record[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
            lines.append(f"  {key:12s} {value}")
    for key in sorted(set(record) - set(PROVENANCE_KEYS)):
        lines.append(f"  {key:12s} {record[key]}")
    return "\n".join(lines)
