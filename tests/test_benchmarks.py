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
