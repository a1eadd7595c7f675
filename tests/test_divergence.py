"""The divergence monitor: on loss traces alone (healthy descents across zero, jumps and
slow climbs from a negative plateau, flat plateaus, parts of intervals), then wired into
training, where a synthetic trace stops a real run before its next checkpoint."""

import logging
import math
import random

import pytest
import torch

from conceptspace.checkpoints import checkpoint_path, load_checkpoint
from conceptspace.config import load_config
from conceptspace.divergence import ARMING_INTERVALS, DivergenceMonitor
from conceptspace.io import ConceptspaceError
from conceptspace.train import train_run
from conftest import REPO, TINY_MODEL

# The training tests' tiny run and its dataset fixture serve here too.
from test_train import SEED, TRAINING, dataset  # noqa: F401

# The shipped settings: what every run of the pipeline uses.
DIVERGENCE = load_config(REPO / "config.yaml")["training"]["divergence"]
LOG_EVERY = 100

# Measured: the 100-step mean training loss (bits/dim) of a 6,000-step run of the cpu
# preset (color gap 0.8, size gap 0.4, seed 0). It crosses zero within its first interval
# and settles near -5.5.
CPU_PRESET_TRACE = [
    -0.114, -2.721, -3.655, -4.070, -4.335, -4.510, -4.615, -4.728, -4.799, -4.889,
    -4.908, -4.961, -4.978, -5.026, -5.112, -5.129, -5.097, -5.130, -5.155, -5.188,
    -5.216, -5.225, -5.214, -5.260, -5.276, -5.294, -5.304, -5.311, -5.325, -5.313,
    -5.347, -5.379, -5.380, -5.356, -5.411, -5.382, -5.407, -5.422, -5.413, -5.413,
    -5.444, -5.438, -5.415, -5.440, -5.452, -5.436, -5.456, -5.456, -5.474, -5.478,
    -5.465, -5.478, -5.504, -5.512, -5.457, -5.513, -5.490, -5.493, -5.501, -5.513,
]  # fmt: skip
PLATEAU = CPU_PRESET_TRACE[-1]

# torch at one thread for the whole module (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def monitor(**changes) -> DivergenceMonitor:
    settings = {**DIVERGENCE, **changes}
    return DivergenceMonitor.from_config({"log_every": LOG_EVERY, "divergence": settings})


def first_stop(trace, **changes) -> int | None:
    """Index of the first interval mean of ``trace`` that the monitor stops on, or None."""
    judge = monitor(**changes)
    for index, mean in enumerate(trace):
        if judge.observe(mean, LOG_EVERY, complete=True) is not None:
            return index
    return None


def noisy_descent(seed, intervals=200, start=3.0, end=-5.4, tau=20.0, noise=0.1):
    """Interval means falling from ``start`` through zero to ``end``, with Gaussian noise
    six times the cpu preset's (whose interval means scatter by ~0.017 bits/dim)."""
    rng = random.Random(seed)
    return [
        end + (start - end) * math.exp(-i / tau) + rng.gauss(0.0, noise) for i in range(intervals)
    ]


def climb(intervals, rise=55.0):
    """From the cpu trace's plateau up by ``rise`` (to about +50 bits/dim), evenly."""
    return [PLATEAU + rise * (i + 1) / intervals for i in range(intervals)]


# ------------------------------------------------------------------- traces alone


def test_the_cpu_presets_measured_loss_is_never_stopped():
    assert first_stop(CPU_PRESET_TRACE) is None


@pytest.mark.parametrize("seed", range(40))
def test_a_noisy_descent_across_zero_is_never_stopped(seed):
    trace = noisy_descent(seed)
    assert trace[0] > 0 > trace[-1]
    assert first_stop(trace) is None


def test_a_jump_from_a_negative_plateau_to_a_large_loss_stops_at_once():
    trace = CPU_PRESET_TRACE + [50.0] * 10
    assert first_stop(trace) == len(CPU_PRESET_TRACE)


@pytest.mark.parametrize("intervals", [100, 1000])
def test_a_slow_climb_of_the_same_size_stops_early(intervals):
    trace = CPU_PRESET_TRACE + climb(intervals)
    stop = first_stop(trace)
    assert stop is not None and stop >= len(CPU_PRESET_TRACE)
    # stopped after the loss rose by little more than min_rise, far below +50
    assert trace[stop] - min(CPU_PRESET_TRACE) <= DIVERGENCE["min_rise"] + 55.0 / intervals


def test_verdicts_do_not_depend_on_the_losss_sign_or_offset():
    traces = {
        "healthy": noisy_descent(seed=0),
        "jump": CPU_PRESET_TRACE + [50.0] * 10,
        "climb": CPU_PRESET_TRACE + climb(300),
    }
    for name, trace in traces.items():
        expected = first_stop(trace)
        for offset in (-1000.0, -50.0, 7.5, 1000.0):
            assert first_stop([x + offset for x in trace]) == expected, (name, offset)


def test_a_flat_plateaus_wiggles_do_not_stop_it_but_a_rise_past_min_rise_does():
    rng = random.Random(0)
    flat = [-5.0 + rng.gauss(0.0, 1e-4) for _ in range(50)]
    bump = 0.5 * DIVERGENCE["min_rise"]
    assert first_stop(flat + [-5.0 + bump] * 5) is None  # 5000 noise SDs, below the floor
    assert first_stop(flat + [-5.0 + bump] * 5, min_rise=0.1 * bump) == 50  # no floor: stops
    assert first_stop(flat + [-5.0 + 1.5 * DIVERGENCE["min_rise"]]) == 50


def test_a_mean_over_part_of_an_interval_is_allowed_its_extra_noise():
    """At a checkpoint between reports the loop judges the mean of the few steps since the
    last report: a single step's loss scatters sqrt(log_every) times as much as an
    interval's mean, and must not stop a healthy run."""
    rng = random.Random(0)
    batch_noise = 0.3  # per step; an interval mean's noise is 0.03

    def mean_of(steps):
        return PLATEAU + sum(rng.gauss(0.0, batch_noise) for _ in range(steps)) / steps

    judge = monitor(min_rise=0.05)  # a floor below the batch noise: the scale must do it
    for _ in range(30):
        assert judge.observe(mean_of(LOG_EVERY), LOG_EVERY, complete=True) is None
    best = judge.best
    for steps in (1, 2, 5) * 300:
        assert judge.observe(mean_of(steps), steps, complete=False) is None
    assert judge.best == best  # parts of intervals do not move the reference
    assert "over the last 1 step rose to 50" in judge.observe(50.0, 1, complete=False)


def test_the_monitor_arms_after_a_few_intervals_and_says_so_once(caplog):
    judge = monitor()
    with caplog.at_level(logging.INFO, logger="conceptspace.divergence"):
        for index, mean in enumerate(CPU_PRESET_TRACE):
            assert judge.armed == (index >= ARMING_INTERVALS)
            if not judge.armed:  # nothing to judge against yet: only NaN/inf stop training
                assert judge.observe(1e6, LOG_EVERY, complete=False) is None
            judge.observe(mean, LOG_EVERY, complete=True)
    armed = [r for r in caplog.records if "divergence monitor armed" in r.getMessage()]
    assert len(armed) == 1 and armed[0].levelno == logging.INFO
    reference = min(CPU_PRESET_TRACE[:ARMING_INTERVALS])
    assert f"reference {reference:.4f} bits/dim" in armed[0].getMessage()


def test_null_switches_the_monitor_off():
    assert DivergenceMonitor.from_config({"log_every": 100, "divergence": None}) is None
    assert DivergenceMonitor.from_config({"log_every": 100}) is None  # direct API calls
    with pytest.raises(ValueError, match="window >= 4"):
        monitor(window=2)


# ------------------------------------------------------------------- wired into training

# 30 log intervals of 2 steps; checkpoints at 10, 19 (between reports), 30, 44 and 60.
RUN = {
    **TRAINING,
    "steps": 60,
    "log_every": 2,
    "checkpoints": {"count": 5, "first": 10, "last": 60},
    "divergence": DIVERGENCE,
}


def healthy(step: int) -> float:
    """A noisy descent from +6 through zero (near step 16) toward -5.4 bits/dim."""
    return -5.4 + 12.0 * math.exp(-step / 20) + random.Random(step).gauss(0.0, 0.1)


def jump(step: int) -> float:
    return 50.0 if step > 30 else healthy(step)


def slow_climb(step: int) -> float:  # 0.5 bits/dim a step: at +50 about step 140
    return healthy(step) + 0.5 * max(0, step - 30)


def spike_before_checkpoint(step: int) -> float:
    return 50.0 if step == 19 else healthy(step)


def inject(monkeypatch, trace) -> None:
    """Training losses take the value ``trace(step)`` and keep their own gradients, so the
    model trains as usual while the loop, its checks and its checkpoints see the trace."""
    from conceptspace.vdm import VDM

    original, calls = VDM.loss, {"step": 0}

    def traced(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        if self.training:  # not validation
            calls["step"] += 1
            loss = terms["loss"]
            terms = {**terms, "loss": loss - loss.detach() + trace(calls["step"])}
        return terms

    monkeypatch.setattr(VDM, "loss", traced)


def test_a_healthy_run_across_zero_trains_to_the_end(dataset, tmp_path, monkeypatch, caplog):
    inject(monkeypatch, healthy)
    with caplog.at_level(logging.INFO, logger="conceptspace"):
        manifest = train_run(TINY_MODEL, RUN, dataset, SEED, tmp_path / "run", tmp_path / "m.json")
    losses = [entry["train_loss"] for entry in manifest["checkpoints"]]
    assert [entry["step"] for entry in manifest["checkpoints"]] == [10, 19, 30, 44, 60]
    assert losses[0] > 0 > losses[-1]  # the loss crossed zero
    assert caplog.text.count("divergence monitor armed: reference") == 1


@pytest.mark.parametrize(
    "trace, when, kept, absent",
    [
        (jump, "between steps 31 and 32", 30, 44),
        (slow_climb, "between steps", 30, 44),
        (spike_before_checkpoint, "at step 19", 10, 19),
    ],
)
def test_a_diverging_loss_stops_before_the_next_checkpoint(
    dataset, tmp_path, monkeypatch, trace, when, kept, absent
):
    inject(monkeypatch, trace)
    run_dir = tmp_path / "run"
    with pytest.raises(ConceptspaceError, match="training diverged") as caught:
        train_run(TINY_MODEL, RUN, dataset, SEED, run_dir, tmp_path / "m.json")
    message = str(caught.value)
    assert "above its best log-interval mean" in message and "training.divergence" in message
    assert when in message
    assert f"the last good checkpoint, {checkpoint_path(run_dir, kept)}, is kept" in message
    assert not checkpoint_path(run_dir, absent).exists() and not (tmp_path / "m.json").exists()
    vdm, metadata = load_checkpoint(checkpoint_path(run_dir, kept))  # still loads
    assert metadata["step"] == kept
    assert all(torch.isfinite(p).all() for p in vdm.parameters())


def test_a_resumed_run_is_judged_at_once_by_the_reference_its_checkpoint_kept(
    dataset, tmp_path, monkeypatch, caplog
):
    # A healthy run, its last checkpoint lost (a killed job): it resumes at step 44. Its
    # loss then jumps to 50 at once. A monitor that started afresh would arm only after 5
    # intervals of 50 (46 to 54), take 50 as its best, and never stop the run.
    inject(monkeypatch, healthy)
    run_dir = tmp_path / "run"
    train_run(TINY_MODEL, RUN, dataset, SEED, run_dir, tmp_path / "m.json")
    reference = torch.load(checkpoint_path(run_dir, 44), weights_only=True)["divergence"]
    assert reference["intervals"] == 22 and reference["log_every"] == 2
    assert len(reference["means"]) == DIVERGENCE["window"] + 1
    checkpoint_path(run_dir, 60).unlink()
    monkeypatch.undo()
    inject(monkeypatch, lambda call: 50.0)  # calls count from the resume
    with caplog.at_level(logging.INFO, logger="conceptspace"):
        with pytest.raises(ConceptspaceError, match="training diverged") as caught:
            train_run(TINY_MODEL, RUN, dataset, SEED, run_dir, tmp_path / "m.json")
    assert "reference restored from step 44 (22 log intervals" in caplog.text
    assert "between steps 45 and 46" in str(caught.value)
    assert f"{reference['best']:.4g}" in str(caught.value)  # the best from before the resume


def test_the_reference_round_trips_and_a_changed_log_every_arms_again():
    monitor = DivergenceMonitor(LOG_EVERY, 10, 1.0, 20)
    for mean in CPU_PRESET_TRACE[:8]:
        monitor.observe(mean, LOG_EVERY, complete=True)
    restored = DivergenceMonitor(LOG_EVERY, 10, 1.0, 20)
    assert restored.load_state_dict(monitor.state_dict())
    assert restored.state_dict() == monitor.state_dict() and restored.armed
    assert restored.allowed_rise(LOG_EVERY) == monitor.allowed_rise(LOG_EVERY)
    other = DivergenceMonitor(LOG_EVERY // 2, 10, 1.0, 20)
    assert not other.load_state_dict(monitor.state_dict())
    assert not other.armed and other.best == math.inf
