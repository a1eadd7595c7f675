"""The benchmark command: a tiny run writes the report with every expected part (no
timing is judged here; benchmarks/README.md holds the measured figures)."""

import json
import math
import subprocess
import sys

from conftest import REPO


def test_tiny_benchmark_writes_a_complete_report(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--small-steps", "20"]
    command += ["--skip", "evaluation", "--devices", "cpu", "--repeats", "1", "--out", str(out)]
    subprocess.run(command, check=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    assert {"machine", "load_average_start", "load_average_end", "provenance"} <= set(report)
    assert report["complete"] is True
    assert report["machine"]["torch"] and report["machine"]["threads"] >= 1
    cases = {(r["impl"], r["variant"]): r for r in report["training"]}
    assert set(cases) == {("baseline", "default"), ("conceptspace", "default")}
    for result in cases.values():
        assert "error" not in result, result
        assert result["steps"] == 20 and result["device"] == "cpu"
        assert result["images_per_s"] > 0 and math.isfinite(result["images_per_s"])
        assert result["peak_rss_mb"] > 0
    ratio = report["training_ratio_vs_baseline"]["tiny/cpu/default"]
    expected = (
        cases["conceptspace", "default"]["images_per_s"]
        / cases["baseline", "default"]["images_per_s"]
    )
    assert ratio == expected
    # The tiny mode plans the smoke preset: its job count comes from Snakemake's summary.
    assert report["dry_run"]["jobs"] > 10 and report["dry_run"]["seconds"] > 0


def test_best_rounds_reports_cases_measured_so_far():
    """The report written after each measurement holds every case measured at least
    once, each with its fastest round; a failed round does not hide a good one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = [
        [{"name": "a", "images_per_s": 2.0}, {"name": "a", "images_per_s": 3.0}],
        [{"name": "b", "error": "exit 1"}, {"name": "b", "images_per_s": 1.0}],
        [{"name": "c", "images_per_s": 5.0}],
        [],  # not measured yet
    ]
    results = bench.best_rounds(measured)
    assert [r["name"] for r in results] == ["a", "b", "c"]
    assert [r["images_per_s"] for r in results] == [3.0, 1.0, 5.0]
    assert results[1]["images_per_s_rounds"] == [None, 1.0]


def test_tiny_color_sweep_gathers_what_finished(tmp_path):
    """benchmarks/gpu_color_sweep.sh with TINY=1 (the GPU call's script, tiny, on the CPU):
    six runs trained as one pack through the vmapped pass a GPU takes, the probe and the
    evaluations beside it, then everything gathered; after a cut (a run's last checkpoint
    not evaluated) `finish` gathers the checkpoints every run has; `record` makes the
    docs/calibration/ folder."""
    import csv
    import os

    import xarray as xr

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "WORK": str(work)}
    script = REPO / "benchmarks" / "gpu_color_sweep.sh"
    subprocess.run(["bash", str(script), str(out)], check=True, env=env, timeout=900)
    assert {"README.md", "study.nc", "claims.json", "checkpoints.csv", "record.tar.gz"} <= {
        p.name for p in out.iterdir()
    }
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
    train_log = (work / "logs" / "train.log").read_text()
    assert "training a pack of 6 runs as one stacked model" in train_log
    # the checkpoint log line names gamma_0 and the ELBO's reconstruction and diffusion terms
    assert "gamma_0 -5.0" in train_log and "reconstruction" in train_log
    with xr.open_dataset(out / "study.nc") as study:
        assert list(study["step"].values) == [4, 7, 12]
        authors = study["learning_time_authors"].sel({"method": "naive"})
        assert authors.sizes == {"seed": 2, "color_gap": 3, "size_gap": 1, "concept": 2}
        assert sorted(study["color_gap"].values) == [0.4, 0.6, 0.8]
    rows = list(csv.DictReader(open(out / "checkpoints.csv")))
    assert len(rows) == 6 * 3
    for row in rows:
        # the reconstruction term (bits/dim) is gamma_0's: 0.5 log(2 pi s^2) + 0.5 e^g0 / s^2
        gamma_0, s = float(row["gamma_0"]), 1e-3
        nats = 0.5 * math.log(2 * math.pi * s**2) + 0.5 * math.exp(gamma_0) / s**2
        assert math.isclose(float(row["reconstruction"]), nats / math.log(2), rel_tol=1e-4)
        assert float(row["diffusion"]) > 0 and row["accuracy_11"] != ""
    readme = (out / "README.md").read_text()
    assert "| 0.4 | 0 |" in readme and "8,000" in readme and "| 0.8 | 100 |" in readme
    assert "gamma_0 dc 0.4" in readme and '"training_mode": "pack"' in readme

    # a cut: one run's last checkpoint never evaluated
    (work / "runs" / "dc0.600_ds0.400_seed100" / "eval" / "step_000012.nc").unlink()
    again = tmp_path / "again"
    finish = [sys.executable, str(REPO / "benchmarks" / "gpu_color_sweep.py"), "finish"]
    subprocess.run(finish + ["--tiny", "--work", str(work), "--out", str(again)], check=True)
    with xr.open_dataset(again / "study.nc") as study:
        assert list(study["step"].values) == [4, 7]
        assert (study["learning_time_authors"].sel({"method": "naive"}).values <= 7).all()
    assert "steps 4 to 7" in (again / "README.md").read_text()

    record = tmp_path / "record"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_color_sweep.py"), "record"]
    subprocess.run(command + [str(out), "--out", str(record)], check=True)
    text = (record / "README.md").read_text()
    assert "What it taught" in text and "samples_dc0.400_ds0.400_seed0.png" in text
    assert (record / "samples_dc0.800_ds0.400_seed0.png").exists()
    assert (record / "study.nc").exists() and (record / "train.log").exists()
