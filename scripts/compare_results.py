#!/usr/bin/env python
"""Compare two results folders made from the same config and seeds:

    python scripts/compare_results.py OLD NEW

Says, file by file, whether NEW holds the same numbers as OLD: every netCDF file's data
variables and coordinates (attributes, which hold provenance such as the commit, are left
out), the model weights of every checkpoint and probe, the arrays of every rendered set,
claims.json without its provenance, and the pixels of every figure PNG. Exits 1 if any
differ or are missing, so a refactor or an upgrade can be checked against a kept run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from PIL import Image


def same_netcdf(old: Path, new: Path) -> bool:
    with xr.open_dataset(old) as a, xr.open_dataset(new) as b:
        return a.drop_attrs(deep=True).identical(b.drop_attrs(deep=True))


def _weights(path: Path) -> dict:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["model"] if "model" in saved else saved["state_dict"]  # a VDM or the probe


def same_weights(old: Path, new: Path) -> bool:
    a, b = _weights(old), _weights(new)
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def same_arrays(old: Path, new: Path) -> bool:
    with np.load(old) as a, np.load(new) as b:
        return a.files == b.files and all(
            np.array_equal(a[key], b[key]) for key in a.files if key != "metadata"
        )


def same_claims(old: Path, new: Path) -> bool:
    a, b = (json.loads(path.read_text()) for path in (old, new))
    return {**a, "provenance": None} == {**b, "provenance": None}


def same_pixels(old: Path, new: Path) -> bool:
    a, b = np.asarray(Image.open(old)), np.asarray(Image.open(new))
    return a.shape == b.shape and bool((a == b).all())


CHECKS = (  # (glob, what is compared, how)
    ("**/*.nc", "values", same_netcdf),
    ("**/*.pt", "model weights", same_weights),
    ("**/*.npz", "arrays", same_arrays),
    ("claims.json", "claims", same_claims),
    ("figures/*.png", "pixels", same_pixels),
)


def compare(old: Path, new: Path) -> list[str]:
    """The problems found (empty: NEW matches OLD); prints a count per kind of file."""
    problems = []
    for pattern, what, same in CHECKS:
        paths = sorted(old.glob(pattern))
        for path in paths:
            other = new / path.relative_to(old)
            if not other.exists():
                problems.append(f"missing in {new}: {path.relative_to(old)}")
            elif not same(path, other):
                problems.append(f"{what} differ: {path.relative_to(old)}")
        print(f"{pattern}: {len(paths)} compared ({what})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    problems = compare(args.old, args.new)
    for problem in problems:
        print(problem)
    print("same numbers" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
