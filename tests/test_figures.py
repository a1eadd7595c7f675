"""The signal figure: PDF and PNG from fabricated study datasets, including the awkward
ones (one seed, one level, nothing ever learned, a requested gap that was not run)."""

import numpy as np
import pytest

from conceptspace.concepts import CLASSES, CONCEPTS
from conceptspace.evaluate import write_evaluation
from conceptspace.figures.signal import plot_signal
from conceptspace.io import ConceptspaceError
from conceptspace.trajectories import gather_run, gather_study, save_dataset_nc

STEPS = [10, 40, 90, 160, 250, 360]
EVALUATION = {
    "samples_per_prompt": 3,
    "sampler_steps": 5,
    "batch_size": 8,
    "threshold": 0.8,
    "smoothed": {"threshold": 0.9, "sigma": 2.0, "consecutive": 3},
}


def fabricate_study(folder, runs):
    """runs: {(seed, color_gap, size_gap): crossing index or None}. The unseen class
    walks from (color_gap / 2, 0.6) in concept space to (1, 1) at its crossing."""
    rng = np.random.default_rng(0)
    trajectories = []
    for (seed, color_gap, size_gap), crossing in runs.items():
        paths = []
        for index, step in enumerate(STEPS):
            p_target = rng.uniform(0.6, 1.0, size=(len(CLASSES), len(CONCEPTS), 3))
            progress = (
                1.0 if crossing is not None and index >= crossing else 0.5 * index / len(STEPS)
            )
            start = (color_gap * 0.5, 0.6)  # each color gap takes its own path
            p_target[CLASSES.index("11")] = [
                [start[0] + (1 - start[0]) * progress],
                [start[1] + (1 - start[1]) * progress],
            ]
            path = folder / f"eval_{seed}_{color_gap}_{size_gap}_{step}.nc"
            attrs = {"step": step, "seed": seed, "color_gap": color_gap, "size_gap": size_gap}
            write_evaluation(path, p_target, CLASSES, CONCEPTS, attrs)
            paths.append(path)
        trajectory = folder / f"trajectory_{seed}_{color_gap}_{size_gap}.nc"
        save_dataset_nc(gather_run(paths), trajectory)
        trajectories.append(trajectory)
    return gather_study(trajectories, {"evaluation": EVALUATION}, EVALUATION)


def assert_written(out_pdf):
    png = out_pdf.with_suffix(".png")
    assert out_pdf.read_bytes()[:5] == b"%PDF-"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out_pdf.stat().st_size > 5000 and png.stat().st_size > 20000
    assert not list(out_pdf.parent.glob(".*")), "temporary files left behind"


def test_plot_signal_writes_pdf_and_png(tmp_path):
    runs = {
        (seed, color_gap, size_gap): crossing
        for seed in (0, 1)
        for (color_gap, size_gap), crossing in {
            (0.3, 0.4): 4,
            (0.45, 0.4): 3,
            (0.6, 0.4): 2,
            (0.6, 0.3): 3,
        }.items()
    }
    runs[(1, 0.3, 0.4)] = None  # one run never learns: drawn, not dropped
    study = fabricate_study(tmp_path, runs)
    out = tmp_path / "figures" / "fig_signal.pdf"
    pdf, png = plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.6)
    assert (pdf, png) == (out, out.with_suffix(".png"))
    assert_written(out)


def test_plot_signal_with_all_learning_times_nan(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.3, 0.4): None, (0, 0.6, 0.4): None})
    assert study["learning_time"].isnull().all()
    out = tmp_path / "never.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.6)
    assert_written(out)


def test_plot_signal_with_one_seed_one_level(tmp_path):
    study = fabricate_study(tmp_path, {(3, 0.4, 0.4): 2})
    assert study.sizes["seed"] == 1 and study.sizes["color_gap"] == 1
    out = tmp_path / "single.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.4, size_sweep_color_gap=0.4)
    assert_written(out)


def test_plot_signal_with_gaps_that_were_not_run(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.4, 0.4): 2})
    out = tmp_path / "elsewhere.pdf"
    plot_signal(study, out, color_sweep_size_gap=0.2, size_sweep_color_gap=0.8)
    assert_written(out)


def test_plot_signal_refuses_a_dataset_that_is_not_a_study(tmp_path):
    study = fabricate_study(tmp_path, {(0, 0.4, 0.4): 2}).drop_vars("learning_speed")
    with pytest.raises(ConceptspaceError, match="learning_speed"):
        plot_signal(study, tmp_path / "x.pdf", 0.4, 0.4)
    assert not (tmp_path / "x.pdf").exists()
