"""What a colleague is handed: the Snakemake report of the smoke run, and the provenance of
every file the run wrote (`python -m conceptspace info`)."""

import re
import subprocess
import sys

import pytest

from conceptspace.info import read_provenance
from conftest import REPO, SMOKE, snakemake

pytestmark = pytest.mark.workflow

REPORT_CAPTIONS = REPO / "workflow" / "report"
PROVENANCE = ("config_hash", "git_commit", "versions", "seed")


def caption_of(png) -> str:
    """The caption file of a figure PNG (figures.smk: fig_X.png -> fig_X.rst; the sample
    sheets samples_<run>.png -> sample_sheet.rst)."""
    name = "sample_sheet" if png.stem.startswith("samples_") else png.stem
    return REPORT_CAPTIONS / f"{name}.rst"


def caption_title(path) -> str:
    """A caption's bold first phrase, which the report must show."""
    return re.match(r"\*\*(.+?)\*\*", path.read_text())[1]


def test_report_holds_the_study_and_every_figure_with_its_caption(smoke_run):
    workdir, _ = smoke_run
    report = workdir / "results" / "report.html"
    snakemake(workdir, "--report", str(report), configs=(REPO / "config.yaml", SMOKE))
    html = report.read_text()
    assert "Emergence of Hidden" in html and "Claims table" in html  # workflow.rst
    # workflow.rst is a template: the smoke config's values, not the placeholders, show
    assert "snakemake.config" not in html and "60 training steps" in html
    figures = sorted((workdir / "results" / "figures").glob("*.png"))
    assert any(png.name == "fig_signal.png" for png in figures)
    for png in figures:
        assert caption_of(png).exists(), f"{png.name} has no caption in workflow/report/"
        assert caption_title(caption_of(png)) in html, f"{png.name}'s caption is not in the report"
        assert png.name in html


def test_every_output_carries_provenance_that_info_prints(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    outputs = sorted(
        path
        for path in results.rglob("*")
        if path.is_file() and "logs" not in path.relative_to(results).parts
        and path.suffix != ".html"  # the report is Snakemake's, not the pipeline's
    )  # fmt: skip
    kinds = {path.suffix for path in outputs}
    assert {".npz", ".pt", ".json", ".nc", ".pdf", ".png"} <= kinds, kinds
    for path in outputs:
        record = read_provenance(path)
        missing = [key for key in PROVENANCE if key not in record]
        assert not missing, f"{path} lacks {missing}"
        assert len(record["config_hash"]) == 16 and record["git_commit"]
    info = subprocess.run(
        [sys.executable, "-m", "conceptspace", "info", *map(str, outputs)],
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0, info.stderr
    assert info.stdout.count("config_hash") == len(outputs)
    assert info.stdout.count("  versions") == len(outputs) and "torch" in info.stdout


def test_training_and_evaluation_logs_show_rates_without_carriage_returns(smoke_run):
    workdir, _ = smoke_run
    logs = workdir / "results" / "logs"
    expected = {
        "train_vdm": r"step \d+/\d+ loss \S+ bits/dim .* steps/s \d+ images/s \| ETA \d+:\d\d:\d\d",
        "train_probe": r"probe step \d+/\d+ loss \S+ \(\S+ steps/s, ETA \d+:\d\d:\d\d\)",
        "evaluate_pack": r"\d+/\d+ samples \(\S+ s, \S+ samples/s, ETA \d+:\d\d:\d\d\)",
    }
    for rule, pattern in expected.items():
        files = sorted((logs / rule).rglob("*.log"))
        assert files, f"no logs of {rule}"
        for path in files:
            text = path.read_text()
            assert "\r" not in text, f"{path} has carriage returns"
            assert re.search(pattern, text), f"{path} shows no progress line like {pattern!r}"
