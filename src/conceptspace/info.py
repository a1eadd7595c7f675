"""`conceptspace info PATH`: the provenance stored in any file the pipeline writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conceptspace.io import ConceptspaceError

PROVENANCE_KEYS = ("config_hash", "git_commit", "seed", "versions", "host", "command")


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance record of a dataset (.npz), checkpoint (.pt), netCDF or JSON file."""
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
    except ConceptspaceError:
        raise
    except Exception as err:  # any reader's failure means the file is damaged
        raise ConceptspaceError(
            f"{path} could not be read ({type(err).__name__}: {err}); it is truncated or "
            "corrupt: delete it and rerun snakemake to rebuild it"
        ) from err
    raise ConceptspaceError(f"{path}: no provenance reader for '{suffix}' files")


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
