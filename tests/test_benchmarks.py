"""The benchmark command: a tiny run writes the report with every expected part (no
timing is judged here; benchmarks/README.md holds the measured figures)."""

import json
import math
import subprocess
import sys

from conftest import REPO


def test_tiny_benchmark_writes_a_complete_report(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--tiny", "--small-steps", "2"]
    command += ["--skip", "evaluation", "--devices", "cpu", "--repeats", "1", "--out", str(out)]
    subprocess.run(command, check=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    assert {"machine", "load_average_start", "load_average_end", "provenance"} <= set(report)
    assert report["machine"]["torch"] and report["machine"]["threads"] >= 1
    cases = {(r["impl"], r["variant"]): r for r in report["training"]}
    assert set(cases) == {("baseline", "default"), ("conceptspace", "default")}
    for result in cases.values():
        assert "error" not in result, result
        assert result["steps"] == 2 and result["device"] == "cpu"
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
