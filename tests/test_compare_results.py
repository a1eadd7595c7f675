"""scripts/compare_results.py: the same numbers pass, a changed number, weight, array,
claim or pixel is caught, and provenance alone is not a difference."""

import importlib.util
import json

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

from conftest import REPO

spec = importlib.util.spec_from_file_location(
    "compare_results", REPO / "scripts" / "compare_results.py"
)
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)


def results(root, value=1.0, commit="aaa", weight=0.0, pixel=0, claim="pass"):
    (root / "signal" / "runs" / "r").mkdir(parents=True)
    (root / "figures").mkdir()
    study = xr.Dataset({"accuracy": ("step", [0.5, value])}, coords={"step": [1, 2]})
    study.attrs["git_commit"] = commit  # provenance: not compared
    study.to_netcdf(root / "signal" / "study.nc")
    torch.save({"model": {"w": torch.tensor([weight])}}, root / "signal" / "runs" / "r" / "c.pt")
    torch.save({"state_dict": {"w": torch.tensor([1.0])}}, root / "signal" / "probe.pt")
    np.savez(root / "signal" / "data.npz", images=np.zeros(3), metadata=np.array(commit))
    claims = {"claims": [{"outcome": claim}], "provenance": {"git_commit": commit}}
    (root / "claims.json").write_text(json.dumps(claims))
    Image.fromarray(np.full((4, 4), pixel, dtype=np.uint8)).save(root / "figures" / "f.png")
    return root


def test_the_same_numbers_under_other_provenance_pass(tmp_path):
    old = results(tmp_path / "old")
    new = results(tmp_path / "new", commit="bbb")
    assert compare_results.compare(old, new) == []


@pytest.mark.parametrize(
    "change, found",
    [
        ({"value": 0.9}, "values differ: signal/study.nc"),
        ({"weight": 1e-7}, "model weights differ: signal/runs/r/c.pt"),
        ({"claim": "fail"}, "claims differ: claims.json"),
        ({"pixel": 1}, "pixels differ: figures/f.png"),
    ],
)
def test_a_changed_number_is_caught(tmp_path, change, found):
    old = results(tmp_path / "old")
    new = results(tmp_path / "new", **change)
    assert compare_results.compare(old, new) == [found]


def test_a_missing_file_is_caught(tmp_path):
    old = results(tmp_path / "old")
    new = results(tmp_path / "new")
    (new / "signal" / "data.npz").unlink()
    assert compare_results.compare(old, new) == [f"missing in {new}: signal/data.npz"]
