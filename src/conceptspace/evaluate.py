"""Scoring one checkpoint in concept space (docs/study.md, "Prompting methods" and
"Scoring and the learning time").

Conditions: every prompting method of ``conceptspace.methods`` (naive, overprompt_i,
intervention_i, patched_*) applied to each prompt it is defined for (overprompts and
interventions only to the unseen class 11; ``methods`` for other layouts). Each condition is sampled
``samples_per_prompt`` times with the ancestral sampler (``sampler_steps`` steps); the
probe reads every sample; ``p_target[method, prompt, concept, sample]`` is its
probability that the sample shows the prompt's target value of that concept (the
class's digit: color 0 red / 1 blue, size 0 large / 1 small), NaN where the method is
not applied to the prompt. Prompts and concepts are those of the run's concept layout
(``concepts.Layout``: the probe's, checked against the checkpoint's h), every class of
it, so a layout's unseen classes are always among the prompts.

Common random numbers: the noise of sample i of a condition comes from its own
``torch.Generator`` seeded from (run seed, target class, i) only, never from the method,
the checkpoint's step or the batch it lands in. Every method and every checkpoint of a
run therefore starts from the same noise, so differences between methods and between
checkpoints are the model's, not the sampler's. An overprompt equal to the class means,
an intervention with alpha = beta = 0, or patching with the checkpoint's own embedding
module reproduce the naive samples. (The generators live on the evaluation device: a
CPU and a CUDA evaluation draw different noise; and a row's floating-point result can
move in the last bits with the batch it shares, never more.)

All conditions share sampler calls: the (condition, sample) pairs are cut into batches
of ``evaluation.batch_size`` (the memory limit), whatever their method: a batch mixes
prompts, interventions (alpha, beta per row) and donors (embeddings per row), so a
checkpoint takes ceil(n_conditions x samples_per_prompt / batch_size) sampler calls.
:func:`generate_images` is that loop, shared by the evaluation, the ``sample`` command
(:func:`sample_checkpoints`) and the benchmarks.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from conceptspace import checkpoints
from conceptspace.concepts import COLOR_SIZE, Layout, Signal, layout_attrs
from conceptspace.config_checks import method_problems
from conceptspace.device import compute_device
from conceptspace.io import (
    ConceptspaceError,
    config_hash,
    eta,
    provenance,
    remove_stale_temporaries,
)
from conceptspace.methods import Method, build_methods
from conceptspace.netcdf import (
    COORD_ATTRS,
    EVALUATION_VERSION,
    P_TARGET_ATTRS,
    VALID_ATTRS,
    VALID_FRAME_OFF,
    VALID_FRAME_OFF_ATTRS,
    method_coords,
    missing_run_attrs,
    netcdf_attrs,
    save_dataset_nc,
)
from conceptspace.runs import checkpoint_steps, same_gap

log = logging.getLogger(__name__)

# Keeps the evaluation noise apart from any other stream seeded from the run seed.
EVALUATION_STREAM = 0x5EED_E7A1
COLOR_SLICE = COLOR_SIZE.slots("color")  # the 2x2 h = (r, g, b, size): concepts.H_LAYOUT
SIZE_INDEX = COLOR_SIZE.slots("size").start


def sample_seed(seed: int, prompt: str, sample: int) -> int:
    """The seed of one sample's generator: a hash of (run seed, target class, sample index).

    Independent of the method, of the checkpoint's step (common random numbers across
    checkpoints) and of batching. Prompts are identified by their class digits, so adding
    a prompt does not change the noise of the others.
    """
    digits = [int(d) for d in prompt]
    sequence = np.random.SeedSequence([EVALUATION_STREAM, int(seed), *digits, int(sample)])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))  # < 2**63


def _generators(
    items: Sequence[tuple[str, int]], seed: int, device: torch.device
) -> list[torch.Generator]:
    generators = []
    for prompt, sample in items:
        generator = torch.Generator(device=device)
        generator.manual_seed(sample_seed(seed, prompt, sample))
        generators.append(generator)
    return generators


# ----------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """One method applied to one prompt (its target class of ``layout``)."""

    method: Method
    prompt: str
    layout: Layout = COLOR_SIZE

    def h(self, signal: Signal) -> np.ndarray:
        """The h given to the model: the class means, the color (and size) overridden by
        an overprompt."""
        h = self.layout.class_h(self.prompt, signal).copy()
        if self.method.color is not None:
            h[self.layout.slots("color")] = self.method.color
        if self.method.size is not None:
            h[self.layout.slots("size")] = self.method.size
        return h


def conditions_of(methods: Sequence[Method], layout: Layout = COLOR_SIZE) -> list[Condition]:
    """Every (method, prompt) pair, method-major, prompts in the layout's class order."""
    return [Condition(m, prompt, layout) for m in methods for prompt in m.prompts]


def intervention_directions(methods_cfg: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(color_h, size_h): h holding only the color direction, and only the size one."""
    cfg = methods_cfg["intervention"]
    color_h = torch.zeros(SIZE_INDEX + 1)
    color_h[COLOR_SLICE] = torch.tensor([float(c) for c in cfg["color_direction"]])
    size_h = torch.zeros(SIZE_INDEX + 1)
    size_h[SIZE_INDEX] = float(cfg["size_direction"])
    return color_h, size_h


def _directions(methods_cfg: Mapping[str, Any], layout: Layout) -> tuple[torch.Tensor, ...]:
    """The intervention's (amplified, removed) h: the config's for the 2x2, the layout's
    own for a one-hot layout (CelebA)."""
    if layout.one_hot:
        return tuple(torch.from_numpy(h) for h in layout.intervention_h())
    return intervention_directions(methods_cfg)


def condition_embeddings(
    net: torch.nn.Module,
    rows: Sequence[Condition],
    h: torch.Tensor,
    directions: tuple[torch.Tensor, torch.Tensor] | None,
    donors: Mapping[int, torch.nn.Module],
) -> list[torch.Tensor]:
    """Per-block embeddings (B, C_i) of a batch whose rows may mix methods: each row is
    embedded by its donor's embedding module (``net``'s own when it has none), with its
    own alpha and beta when its method intervenes."""
    groups: dict[int | None, list[int]] = {}
    for row, condition in enumerate(rows):
        groups.setdefault(condition.method.donor_step, []).append(row)
    parts = []
    for donor_step, index in groups.items():
        module = net if donor_step is None else donors[donor_step]
        members = [rows[row].method for row in index]
        intervention = None
        if any(m.alpha or m.beta for m in members):
            from conceptspace.unet import LinearIntervention

            if directions is None:
                raise ValueError("interventions need the directions (color_h, size_h)")
            intervention = LinearIntervention(
                torch.tensor([m.alpha for m in members]),
                torch.tensor([m.beta for m in members]),
                *directions,
            )
        sub_h = h if len(index) == len(rows) else h[index]
        parts.append((index, module.embed(sub_h, intervention)))
    if len(parts) == 1:
        return parts[0][1]
    embeddings = [torch.empty(len(rows), *e.shape[1:], device=e.device) for e in parts[0][1]]
    for index, part in parts:
        for full, e in zip(embeddings, part):
            full[index] = e
    return embeddings


@dataclass(frozen=True)
class SampledRun:
    """One run's checkpoint as the sampler draws it: its VDM, its signal (the class means
    its prompts take), its seed (its noise), the intervention's (color_h, size_h)
    ``directions`` and the ``donors`` (donor step -> network) its patched conditions use."""

    vdm: torch.nn.Module
    signal: Signal
    seed: int
    directions: tuple[torch.Tensor, torch.Tensor] | None = None
    donors: Mapping[int, torch.nn.Module] | None = None


def generate_images(
    runs: Sequence[SampledRun],
    conditions: Sequence[Condition],
    samples: int,
    sampler_steps: int,
    batch_size: int,
    device: torch.device,
    vmapped: bool = False,
) -> Iterator[tuple[list[tuple[int, int]], list[torch.Tensor]]]:
    """Sample ``samples`` images of every condition for each run of a pack (one run: a
    pack of one), in as few sampler calls as ``batch_size`` allows. Yields (items, images)
    per batch: items the (condition index, sample index) of each row, the same rows for
    every run, and images one (B, C, S, S) tensor in [0, 1] per run. Sample i of a
    condition uses the generator of (its run's seed, its target class, i): the same noise
    for every method, and for a run in any pack. ``vmapped``: the runs' networks evaluated
    in one vmapped call per sampler step (``stacked.StackedNetworks``, what a GPU wants), else
    one after another."""
    from conceptspace.vdm import sample_runs

    network = None
    if vmapped and len(runs) > 1:
        from conceptspace.stacked import StackedNetworks

        network = StackedNetworks([run.vdm.net for run in runs])
    items = [(c, i) for c in range(len(conditions)) for i in range(samples)]
    h_of = [[torch.from_numpy(condition.h(run.signal)) for condition in conditions] for run in runs]
    n_batches = math.ceil(len(items) / batch_size)
    started = time.perf_counter()
    for batch in range(n_batches):
        chunk = items[batch * batch_size : (batch + 1) * batch_size]
        rows = [conditions[c] for c, _ in chunk]
        embeddings, generators = [], []
        with torch.no_grad():
            for run, run_h in zip(runs, h_of):
                h = torch.stack([run_h[c] for c, _ in chunk]).to(device)
                embeddings.append(
                    condition_embeddings(run.vdm.net, rows, h, run.directions, run.donors or {})
                )
                generators.append(
                    _generators(
                        [(row.prompt, i) for row, (_, i) in zip(rows, chunk)], run.seed, device
                    )
                )
            if len(runs) == 1:  # VDM.sample: sample_runs of a pack of one
                images = [runs[0].vdm.sample(None, sampler_steps, generators[0], embeddings[0])]
            else:
                images = sample_runs(
                    [run.vdm for run in runs], sampler_steps, generators, embeddings, network
                )
        done = batch * batch_size + len(chunk)
        elapsed = time.perf_counter() - started
        log.info(
            "batch %d/%d: %d conditions, %d/%d samples%s (%.1f s, %.2f samples/s, ETA %s)",
            batch + 1,
            n_batches,
            len({c for c, _ in chunk}),
            done,
            len(items),
            f" x {len(runs)} runs" if len(runs) > 1 else "",
            elapsed,
            done * len(runs) / max(elapsed, 1e-9),
            eta(done, len(items), elapsed),
        )
        yield chunk, images


def target_probabilities(probabilities: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
    """(B, n_concepts, 2) probe probabilities -> (B, n_concepts): each row's probability
    of its own prompt's value of every concept."""
    targets = torch.tensor([[int(d) for d in p] for p in prompts], device=probabilities.device)
    chosen = probabilities.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen.double().cpu().numpy()


def score_samples(
    probe,
    images: torch.Tensor,
    prompts: Sequence[str],
    layout: Layout,
    data_cfg: Mapping[str, Any],
    signal: Signal | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the evaluation records of a batch of generated ``images`` (B, 3, S, S) in
    [0, 1], row i prompted with ``prompts[i]``: the probe's probability of each concept's
    target value (B, n_concepts), and the validity verdict (B,) of
    ``validity.sample_validity`` (one object of plausible size inside the image), with
    its frame rule on and off (from the same measurements). The probe answers for any
    image, a blank one included; the verdict is what keeps a blank from scoring as a
    success (``trajectories.summarise_samples``)."""
    from conceptspace.probe import predict_proba
    from conceptspace.validity import measure

    scores = target_probabilities(predict_proba(probe, images), prompts)
    measured = measure(images, layout, data_cfg, signal)
    return scores, measured.valid(), measured.valid(frame_rule=False)


# ----------------------------------------------------------------------------- loading


def _check_run(metadata: Mapping[str, Any], signal: Signal, seed: int, path: Path) -> None:
    """Refuse a checkpoint whose recorded run differs from the one we were told."""
    config = metadata.get("config", {})
    recorded_seed = config.get("seed")
    if recorded_seed is not None and int(recorded_seed) != int(seed):
        raise ConceptspaceError(
            f"checkpoint {path} was trained with seed {recorded_seed}, but --seed is {seed}; "
            "evaluate it with its own run's seed"
        )
    recorded = (config.get("dataset") or {}).get("signal") or {}
    gaps = [("color_gap", signal.color_gap), ("size_gap", signal.size_gap)]
    gaps.append(("background_gap", signal.background_gap))
    for key, given in gaps:
        if key in recorded and not same_gap(float(recorded[key]), float(given)):
            raise ConceptspaceError(
                f"checkpoint {path} was trained with {key} {recorded[key]}, but the evaluation "
                f"was asked for {given}; prompts would use the wrong class means. Pass the "
                "run's own gaps"
            )


def _sampling_settings(evaluation_cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    values = tuple(
        int(evaluation_cfg[k]) for k in ("samples_per_prompt", "sampler_steps", "batch_size")
    )
    if min(values) < 1:
        raise ConceptspaceError(
            "evaluation.samples_per_prompt, sampler_steps and batch_size must be >= 1; got "
            f"{values[0]}, {values[1]}, {values[2]}"
        )
    if "methods" not in evaluation_cfg:
        raise ConceptspaceError(
            "the evaluation settings lack 'methods'; add evaluation.methods to the config "
            "(see config.yaml)"
        )
    return values


@dataclass
class Prepared:
    """A checkpoint ready to sample: its VDM, metadata, methods, conditions and donors."""

    vdm: torch.nn.Module
    metadata: dict
    step: int
    methods: list[Method]
    conditions: list[Condition]
    donors: dict[int, torch.nn.Module]
    directions: tuple[torch.Tensor, torch.Tensor]

    @property
    def data_cfg(self) -> dict:
        """The data settings the run's training set was rendered with (what the validity
        verdict bounds its objects by); empty for a dataset that has none (CelebA)."""
        return (self.metadata["config"].get("dataset") or {}).get("data") or {}

    def sampled(self, signal: Signal, seed: int) -> SampledRun:
        """This checkpoint as the sampler draws it, for the run of ``signal`` and ``seed``."""
        return SampledRun(self.vdm, signal, seed, self.directions, self.donors)

    def generate(
        self, samples: int, signal: Signal, seed: int, evaluation_cfg: Mapping[str, Any], device
    ) -> Iterator[tuple[list[tuple[int, int]], torch.Tensor]]:
        """:func:`generate_images` of all this checkpoint's conditions, as a run alone."""
        _, sampler_steps, batch_size = _sampling_settings(evaluation_cfg)
        for chunk, (images,) in generate_images(
            [self.sampled(signal, seed)],
            self.conditions,
            samples,
            sampler_steps,
            batch_size,
            device,
        ):
            yield chunk, images


def prepare_checkpoint(
    checkpoint_path: str | os.PathLike,
    methods_cfg: Mapping[str, Any],
    signal: Signal,
    seed: int,
    device: torch.device,
    layout: Layout = COLOR_SIZE,
) -> Prepared:
    """Load a checkpoint and the donor checkpoints its patching methods need (from the
    same run folder; "final" is the run's last scheduled checkpoint). Its h must be the
    ``layout``'s."""

    checkpoint_path = Path(checkpoint_path)
    vdm, metadata = checkpoints.load_checkpoint(checkpoint_path, device)
    _check_run(metadata, signal, seed, checkpoint_path)
    h_dim = int(metadata["config"].get("h_dim", layout.h_dim))
    if h_dim != layout.h_dim:
        raise ConceptspaceError(
            f"checkpoint {checkpoint_path} takes a {h_dim}-d h, but the {layout.name} layout's h "
            f"is {layout.h_dim}-d ({', '.join(layout.h_layout)}); evaluate it with the probe "
            "of its own study"
        )
    step = int(metadata["step"])
    steps = checkpoint_steps(metadata["config"]["training"])
    problems = list(method_problems(methods_cfg, steps))
    if problems:
        raise ConceptspaceError("; ".join(problems))
    methods = build_methods(methods_cfg, steps[-1], layout)
    donors: dict[int, torch.nn.Module] = {}
    run_dir = checkpoint_path.parent.parent
    for method in methods:
        donor_step = method.donor_step
        if donor_step is None or donor_step in donors:
            continue
        donor_path = checkpoints.checkpoint_path(run_dir, donor_step)
        try:
            # missing or damaged: its message's fix (checkpoints.recovery) deletes the manifests
            # too, without which snakemake plans no training to write it again
            donor, donor_metadata = checkpoints.load_checkpoint(donor_path, device)
        except ConceptspaceError as err:
            raise ConceptspaceError(
                f"{method.name} needs the run's step-{donor_step} checkpoint as its donor: {err}"
            ) from err
        _check_run(donor_metadata, signal, seed, donor_path)
        donors[donor_step] = donor.net
    return Prepared(
        vdm,
        metadata,
        step,
        methods,
        conditions_of(methods, layout),
        donors,
        _directions(methods_cfg, layout),
    )


# ----------------------------------------------------------------------------- files


def method_index(methods: Sequence[Method]) -> dict[str, Any]:
    """The method coordinate and its kind and setting, for xarray ``coords``."""
    return method_coords(
        [m.name for m in methods], [m.kind for m in methods], [m.setting for m in methods]
    )


def write_evaluation(
    path: str | os.PathLike,
    p_target: np.ndarray,
    methods: Sequence[Method],
    prompts: Sequence[str],
    concepts: Sequence[str],
    attrs: Mapping[str, Any],
    valid: np.ndarray,
    valid_frame_off: np.ndarray | None = None,
) -> None:
    """Write one checkpoint's evaluation as netCDF: ``p_target`` (method, prompt, concept,
    sample) and ``valid`` (method, prompt, sample; 1 or 0), and ``valid_frame_off`` like
    it (the verdict with the frame rule off; None: not recorded, as before it was), NaN
    where a method is not applied to a prompt, with their coordinates (method with
    method_kind and method_setting); ``attrs`` (which must hold step, seed, and color_gap
    and size_gap but for CelebA) become global attributes, non-scalars as JSON strings."""
    p_target = np.asarray(p_target, dtype=np.float32)
    expected = (len(methods), len(prompts), len(concepts))
    if p_target.ndim != 4 or p_target.shape[:3] != expected:
        raise ValueError(
            f"p_target must be (method, prompt, concept, sample) = ({', '.join(map(str, expected))}"
            f", n); got {p_target.shape}"
        )
    verdicts = {"valid": (valid, VALID_ATTRS)}
    if valid_frame_off is not None:
        verdicts[VALID_FRAME_OFF] = (valid_frame_off, VALID_FRAME_OFF_ATTRS)
    dims = ("method", "prompt", "sample")
    for name, (verdict, verdict_attrs) in verdicts.items():
        verdict = np.asarray(verdict, dtype=np.float32)
        if verdict.shape != p_target.shape[:2] + p_target.shape[3:]:
            raise ValueError(
                f"{name} must be (method, prompt, sample) = "
                f"{p_target.shape[:2] + p_target.shape[3:]}; got {verdict.shape}"
            )
        verdicts[name] = (dims, verdict, dict(verdict_attrs))
    missing = missing_run_attrs(attrs)
    if missing:
        raise ValueError(f"evaluation attrs lack {', '.join(missing)}")
    ds = xr.Dataset(
        {
            "p_target": (
                ("method", "prompt", "concept", "sample"),
                p_target,
                dict(P_TARGET_ATTRS),
            ),
            **verdicts,
        },
        coords={
            **method_index(methods),
            "prompt": np.array([str(p) for p in prompts], dtype=object),
            "concept": np.array([str(c) for c in concepts], dtype=object),
            "sample": np.arange(p_target.shape[3], dtype=np.int64),
        },
    )
    for name in ("prompt", "concept", "sample"):
        ds[name].attrs = dict(COORD_ATTRS[name])
    ds.attrs = {
        "description": (
            "One checkpoint prompted with every method: for each method, prompted class, "
            "concept and sample, the probe's probability that the sample shows the prompt's "
            "target value of the concept, and whether the sample holds exactly one object "
            "of plausible size (valid; valid_frame_off: with the verdict's frame rule off; "
            "NaN: method not applied to the prompt)."
        ),
        **netcdf_attrs(attrs),
    }
    save_dataset_nc(ds, path)


def _run_attrs(
    prepared: Prepared,
    evaluation_cfg: Mapping[str, Any],
    signal: Signal,
    seed: int,
    device,
    layout: Layout = COLOR_SIZE,
    mask_ratio: float | None = None,
) -> dict[str, Any]:
    """Attributes every file made from one checkpoint carries."""
    settings = {
        "evaluation": dict(evaluation_cfg),
        "signal": {"color_gap": signal.color_gap, "size_gap": signal.size_gap},
        "checkpoint_config_hash": config_hash(prepared.metadata["config"]),
        "step": prepared.step,
    }
    return {
        "step": prepared.step,
        "seed": int(seed),
        # a one-hot layout (CelebA) has no signal level
        **(
            {}
            if layout.one_hot
            else {"color_gap": float(signal.color_gap), "size_gap": float(signal.size_gap)}
        ),
        **layout_attrs(layout),
        **(
            {"background_gap": float(signal.background_gap)}
            if "background" in layout.concepts
            else {}
        ),
        **({} if mask_ratio is None else {"mask_ratio": float(mask_ratio)}),
        "checkpoint": str(prepared.metadata["path"]),
        "evaluation_cfg": dict(evaluation_cfg),  # stored as a JSON string
        "methods_cfg": dict(evaluation_cfg["methods"]),
        "sampling": (
            "every method's conditions in shared batches; noise per sample seeded from "
            "(seed, target class, sample index), the same for every method and checkpoint "
            f"(common random numbers); generators on {device.type}"
        ),
        **provenance(settings, int(seed)),
    }


# ----------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class RunEvaluation:
    """What every checkpoint of one run is evaluated with."""

    probe_path: Path
    evaluation_cfg: Mapping[str, Any]
    min_accuracy: float
    signal: Signal
    seed: int
    device: torch.device
    mask_ratio: float | None = None

    @classmethod
    def on(
        cls, probe_path, evaluation_cfg, min_accuracy, signal, seed, device, threads, mask_ratio
    ):
        """The settings of a run, on ``device`` with ``threads`` CPU threads."""
        device = compute_device(device, threads)
        return cls(Path(probe_path), evaluation_cfg, min_accuracy, signal, seed, device, mask_ratio)

    def load_probe(self):
        """The probe, refused below its accuracy floor, checked against the run's gaps."""
        from conceptspace.probe import load_probe

        probe = load_probe(self.probe_path, self.min_accuracy, self.device)
        self.check_gaps(probe)
        return probe

    def check_gaps(self, probe) -> None:
        """Refuse a run without gaps where the probe's layout prompts class means."""
        layout = getattr(probe, "layout", COLOR_SIZE)  # probes before layouts: the 2x2
        if not layout.one_hot and min(self.signal.color_gap, self.signal.size_gap) <= 0:
            raise ConceptspaceError(
                f"the {layout.name} layout prompts class means at the run's gaps, but no "
                "color or size gap was given; pass the run's --color-gap and --size-gap"
            )

    def inputs_hash(self, checkpoint: Path) -> str:
        """A hash of what one checkpoint's evaluation is made from: the evaluation code's
        version, the settings, the run, the device type (its generators draw the noise),
        and the size and modification time of the probe and of every checkpoint of the
        run (the evaluated one and the patching donors among them: retraining rewrites
        them, atomically)."""

        def file_stamp(path: Path) -> list:
            try:
                stat = path.stat()
            except OSError:
                return [str(path), None]  # missing: evaluating it names the problem
            return [path.name, stat.st_size, stat.st_mtime_ns]

        signal = self.signal
        return config_hash(
            {
                "evaluation": dict(self.evaluation_cfg),
                "min_accuracy": float(self.min_accuracy),
                "signal": [signal.color_gap, signal.size_gap, signal.background_gap],
                "seed": int(self.seed),
                "mask_ratio": self.mask_ratio,
                "device": self.device.type,
                "code": EVALUATION_VERSION,
                "checkpoint": checkpoint.name,
                "checkpoints": [file_stamp(p) for p in sorted(checkpoint.parent.glob("step_*.pt"))],
                "probe": file_stamp(self.probe_path),
            }
        )


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike,
    probe_path: str | os.PathLike,
    *,
    evaluation_cfg: Mapping[str, Any],
    min_accuracy: float,
    signal: Signal,
    seed: int,
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    mask_ratio: float | None = None,
) -> Path:
    """Prompt the checkpoint with every method, score the samples with the probe, write
    netCDF (see :func:`write_evaluation`) to ``out_path`` and return its path. The probe
    is loaded with ``min_accuracy`` as its floor, so a weak probe is refused
    (ConceptspaceError) before any sampling. The concept layout is the probe's;
    ``mask_ratio`` (underspecification runs) is recorded with the run's seed and gaps."""
    run = RunEvaluation.on(
        probe_path, evaluation_cfg, min_accuracy, signal, seed, device, threads, mask_ratio
    )
    job = CheckpointJob(Path(checkpoint_path), Path(out_path), run)
    return _evaluate_with(run.load_probe(), [job])[0]


@dataclass(frozen=True)
class CheckpointJob:
    """One run's checkpoint to evaluate, and where its evaluation goes."""

    checkpoint: Path
    out: Path
    run: RunEvaluation
    extra_attrs: Mapping[str, Any] | None = None


class _Scores:
    """One checkpoint's evaluation being filled in: p_target (method, prompt, concept,
    sample) and the validity verdicts (method, prompt, sample), NaN where not applied."""

    def __init__(self, methods: Sequence[Method], conditions: Sequence[Condition], layout, samples):
        prompts = layout.classes
        self.p_target = np.full((len(methods), len(prompts), len(layout.concepts), samples), np.nan)
        self.valid = np.full((len(methods), len(prompts), samples), np.nan)
        self.valid_frame_off = self.valid.copy()
        self.where = [(methods.index(c.method), prompts.index(c.prompt)) for c in conditions]

    def add(self, chunk, scores, verdicts, verdicts_frame_off) -> None:
        for (c, i), row, verdict, verdict_frame_off in zip(
            chunk, scores, verdicts, verdicts_frame_off
        ):
            self.p_target[self.where[c] + (slice(None), i)] = row
            self.valid[self.where[c] + (i,)] = verdict
            self.valid_frame_off[self.where[c] + (i,)] = verdict_frame_off


def rows_per_run(batch_size: int, runs: int, vmapped: bool) -> int:
    """A run's rows in one sampler call. evaluation.batch_size bounds a call's rows: a
    vmapped pack's runs share them, a run alone or evaluated in a loop has them all.
    (benchmarks/gpu_pack.py cuts its timed calls with this too.)"""
    return max(1, batch_size // runs) if vmapped and runs > 1 else batch_size


def _evaluate_with(probe, jobs: Sequence[CheckpointJob], vmapped: bool = False) -> list[Path]:
    """:func:`evaluate_checkpoint` of one checkpoint of each run of a pack (one run: a pack
    of one), with the probe already loaded (``evaluate_pack`` loads it once): the runs'
    samples are drawn together (:func:`generate_images`), each run's with its own noise,
    and each run's are scored and written as if it were alone."""
    first = jobs[0].run
    evaluation_cfg, device = first.evaluation_cfg, first.device
    samples_per_prompt, sampler_steps, batch_size = _sampling_settings(evaluation_cfg)
    layout = getattr(probe, "layout", COLOR_SIZE)
    prepared = []
    for job in jobs:
        one = prepare_checkpoint(
            job.checkpoint, evaluation_cfg["methods"], job.run.signal, job.run.seed, device, layout
        )
        image_size = int(one.metadata["config"]["image_size"])
        if image_size != probe.image_size:
            raise ConceptspaceError(
                f"checkpoint {job.checkpoint} makes {image_size}px images but probe "
                f"{job.run.probe_path} reads {probe.image_size}px ones; train both with the "
                "same data.image_size"
            )
        prepared.append(one)
    methods, conditions = prepared[0].methods, prepared[0].conditions
    for job, one in zip(jobs[1:], prepared[1:]):
        if one.conditions != conditions:
            raise ConceptspaceError(
                f"checkpoint {job.checkpoint} is prompted with other methods than "
                f"{jobs[0].checkpoint}; a pack's runs share one checkpoint schedule and methods"
            )
    batch_size = rows_per_run(batch_size, len(jobs), vmapped)
    n_samples = len(conditions) * samples_per_prompt
    for job, one in zip(jobs, prepared):
        log.info(
            "evaluating %s (step %d) on %s: %d methods, %d conditions x %d samples = %d, "
            "%d sampler steps, %d batches of <= %d%s",
            job.checkpoint,
            one.step,
            device,
            len(methods),
            len(conditions),
            samples_per_prompt,
            n_samples,
            sampler_steps,
            math.ceil(n_samples / batch_size),
            batch_size,
            f", with {len(jobs) - 1} more runs of its pack" if len(jobs) > 1 else "",
        )
    scores = [_Scores(methods, conditions, layout, samples_per_prompt) for _ in jobs]
    runs = [one.sampled(job.run.signal, job.run.seed) for job, one in zip(jobs, prepared)]
    for chunk, images in generate_images(
        runs, conditions, samples_per_prompt, sampler_steps, batch_size, device, vmapped
    ):
        chunk_prompts = [conditions[c].prompt for c, _ in chunk]
        for job, one, run_images, run_scores in zip(jobs, prepared, images, scores):
            run_scores.add(
                chunk,
                *score_samples(
                    probe, run_images, chunk_prompts, layout, one.data_cfg, job.run.signal
                ),
            )
    for job, one, run_scores in zip(jobs, prepared, scores):
        _write_scores(probe, job, one, run_scores, layout)
    return [job.out for job in jobs]


def _write_scores(probe, job: CheckpointJob, prepared: Prepared, scores: _Scores, layout) -> None:
    """Write one run's evaluation of one checkpoint, and log its unseen classes' accuracy."""
    run = job.run
    attrs = _run_attrs(
        prepared, run.evaluation_cfg, run.signal, run.seed, run.device, layout, run.mask_ratio
    )
    probe_accuracy = dict(getattr(probe, "accuracy", {}) or {})
    attrs.update(
        probe=str(run.probe_path),
        min_accuracy=float(run.min_accuracy),
        **{f"probe_accuracy_{name}": float(value) for name, value in probe_accuracy.items()},
        **(job.extra_attrs or {}),
    )
    prompts, methods = layout.classes, prepared.methods
    write_evaluation(
        job.out,
        scores.p_target,
        methods,
        prompts,
        layout.concepts,
        attrs,
        scores.valid,
        scores.valid_frame_off,
    )
    valid, p_target = scores.valid, scores.p_target
    for unseen_class in layout.unseen_classes:
        k = prompts.index(unseen_class)
        accuracy = np.mean(valid[:, k] * p_target[:, k].prod(axis=1), axis=-1)  # (method,)
        log.info(
            "wrote %s; unseen class %s, accuracy (valid fraction): %s",
            job.out,
            unseen_class,
            "; ".join(
                f"{m.name} {accuracy[j]:.3f} ({np.mean(valid[j, k]):.2f})"
                for j, m in enumerate(methods)
                if unseen_class in m.prompts
            ),
        )


@dataclass(frozen=True)
class PackMember:
    """One run of a pack to evaluate: its settings, its checkpoints (in order) and the
    folder of its per-checkpoint evaluations."""

    run: RunEvaluation
    checkpoints: Sequence[Path]
    eval_dir: Path


def evaluate_pack(members: Sequence[PackMember], vmapped: bool | None = None) -> list[list[Path]]:
    """Evaluate every checkpoint of each run of a pack into its ``eval_dir/step_XXXXXX.nc``
    and return each run's files, in checkpoint order; gathering them into a run's
    trajectory is the next step's (``trajectories.gather_run``).

    The runs' checkpoints of one step are sampled together (:func:`_evaluate_with`), so a
    GPU draws the whole pack's prompts in one batched call per sampler step (``vmapped``;
    by default on a GPU only, as the pack trainer: ``stacked.vmap_runs``); each run keeps its
    own noise, so its evaluations do not depend on its pack. The per-checkpoint files are
    working files: one already there is kept when its inputs are the same
    (:meth:`RunEvaluation.inputs_hash`), so a killed job resumes at the checkpoint it
    stopped at. Delete a run's ``eval_dir`` to evaluate it again."""
    from conceptspace.stacked import vmap_runs

    if not members:
        raise ConceptspaceError("a pack to evaluate needs at least one run")
    first = members[0].run
    for member in members[1:]:
        run = member.run
        if (run.probe_path, run.min_accuracy, run.device) != (
            first.probe_path,
            first.min_accuracy,
            first.device,
        ) or dict(run.evaluation_cfg) != dict(first.evaluation_cfg):
            raise ConceptspaceError(
                "the runs of one pack are evaluated with one probe, device and evaluation "
                "settings; evaluate runs of other settings in packs of their own"
            )
    vmapped = vmap_runs(first.device) if vmapped is None else vmapped
    probe = first.load_probe()
    for member in members[1:]:
        member.run.check_gaps(probe)
    for member in members:
        member.eval_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(member.eval_dir)
    # each run's files in its checkpoints' order; step_XXXXXX.pt -> step_XXXXXX.nc
    eval_paths = [[m.eval_dir / f"{Path(c).stem}.nc" for c in m.checkpoints] for m in members]
    # a pack's runs share their checkpoint schedule (a run stopped early has fewer): each
    # step's checkpoints are sampled together, steps in order (step_XXXXXX.pt, zero-padded
    # to 6 digits: by length first for steps past a million)
    steps = sorted(
        {Path(c).name for m in members for c in m.checkpoints}, key=lambda n: (len(n), n)
    )
    kept, done, started = 0, 0, time.perf_counter()
    total = sum(len(m.checkpoints) for m in members)
    for name in steps:
        jobs = []
        for member, outs in zip(members, eval_paths):
            for checkpoint, out in zip(map(Path, member.checkpoints), outs):
                if checkpoint.name != name:
                    continue
                inputs = member.run.inputs_hash(checkpoint)
                if _made_from(out, inputs):
                    kept += 1
                else:
                    jobs.append(CheckpointJob(checkpoint, out, member.run, {"inputs_hash": inputs}))
                done += 1
        if jobs:
            _evaluate_with(probe, jobs, vmapped)
        elapsed = time.perf_counter() - started
        log.info(
            "checkpoint %d/%d evaluated (%d kept from an earlier job; %.1f s, ETA %s)",
            done,
            total,
            kept,
            elapsed,
            eta(done - kept, total - kept, elapsed),
        )
    return eval_paths


def evaluate_run(
    checkpoint_paths: Sequence[str | os.PathLike],
    probe_path: str | os.PathLike,
    *,
    evaluation_cfg: Mapping[str, Any],
    min_accuracy: float,
    signal: Signal,
    seed: int,
    eval_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    mask_ratio: float | None = None,
) -> list[Path]:
    """:func:`evaluate_pack` of one run: every checkpoint into
    ``eval_dir/step_XXXXXX.nc``, those files returned in checkpoint order (the
    `gather-run` command gathers them)."""
    run = RunEvaluation.on(
        probe_path, evaluation_cfg, min_accuracy, signal, seed, device, threads, mask_ratio
    )
    member = PackMember(run, [Path(c) for c in checkpoint_paths], Path(eval_dir))
    return evaluate_pack([member])[0]


def _made_from(path: Path, inputs: str) -> bool:
    """Whether the evaluation at ``path`` exists, reads, and was made from ``inputs``."""
    if not path.exists():
        return False
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            made_from = ds.attrs.get("inputs_hash")
    except Exception as err:  # a damaged working file is made again
        log.warning("%s could not be read (%s); evaluating it again", path, err)
        return False
    return made_from == inputs


def sample_checkpoints(
    checkpoint_paths: Sequence[str | os.PathLike],
    *,
    evaluation_cfg: Mapping[str, Any],
    signal: Signal,
    seed: int,
    samples: int,
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    layout: Layout = COLOR_SIZE,
    mask_ratio: float | None = None,
) -> Path:
    """The first ``samples`` samples of every condition of each checkpoint, drawn with
    the evaluation's generators (so they are the images the evaluation scored), written
    as netCDF to ``out_path``:

    ``images`` uint8 (step, method, prompt, sample, y, x, channel), 0 where a method is
    not applied to a prompt; ``valid`` uint8 (step, method, prompt, sample), the
    evaluation's validity verdict of each image (1: one object of plausible size);
    ``applied`` bool (method, prompt); coords as in the evaluation files (method with
    method_kind, method_setting).
    """
    from conceptspace.validity import sample_validity

    device = compute_device(device, threads)
    _sampling_settings(evaluation_cfg)  # refuse bad settings before loading anything
    if samples < 1 or not checkpoint_paths:
        raise ConceptspaceError("sample needs at least one checkpoint and --samples >= 1")

    stacks, verdicts, steps, methods, first = [], [], [], None, None
    for path in checkpoint_paths:
        prepared = prepare_checkpoint(path, evaluation_cfg["methods"], signal, seed, device, layout)
        if methods is None:
            methods, first = prepared.methods, prepared
        size = prepared.vdm.net.image_size
        channels = prepared.vdm.net.image_channels
        images = np.zeros(
            (len(methods), len(layout.classes), samples, size, size, channels), np.uint8
        )
        valid = np.zeros(images.shape[:3], np.uint8)
        conditions = prepared.conditions
        log.info("sampling %s (step %d): %d conditions", path, prepared.step, len(conditions))
        for chunk, batch in prepared.generate(samples, signal, seed, evaluation_cfg, device):
            pixels = (batch * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            verdict = sample_validity(batch, layout, prepared.data_cfg, signal)
            for (c, i), image, ok in zip(chunk, pixels, verdict):
                condition = conditions[c]
                at = (methods.index(condition.method), layout.class_index(condition.prompt), i)
                images[at], valid[at] = image, ok
        stacks.append(images)
        verdicts.append(valid)
        steps.append(prepared.step)

    order = np.argsort(steps)
    applied = np.array([[p in m.prompts for p in layout.classes] for m in methods])
    ds = xr.Dataset(
        {
            "images": (
                ("step", "method", "prompt", "sample", "y", "x", "channel"),
                np.stack([stacks[k] for k in order]),
                {"units": "1", "long_name": "generated image, RGB in 0..255 (0: not applied)"},
            ),
            "valid": (
                ("step", "method", "prompt", "sample"),
                np.stack([verdicts[k] for k in order]),
                dict(VALID_ATTRS),
            ),
            "applied": (
                ("method", "prompt"),
                applied,
                {"units": "1", "long_name": "whether the method prompts the class"},
            ),
        },
        coords={
            "step": np.array(sorted(steps), dtype=np.int64),
            **method_index(methods),
            "prompt": np.array(list(layout.classes), dtype=object),
            "sample": np.arange(samples, dtype=np.int64),
            "channel": np.array(["red", "green", "blue"], dtype=object),
        },
    )
    for name in ("step", "prompt", "sample"):
        ds[name].attrs = dict(COORD_ATTRS[name])
    ds["channel"].attrs = {"units": "1", "long_name": "color channel"}
    attrs = _run_attrs(first, evaluation_cfg, signal, seed, device, layout, mask_ratio)
    attrs.pop("step")
    attrs["checkpoint"] = [str(p) for p in checkpoint_paths]
    ds.attrs = {
        "description": (
            "Sample sheet: the first samples of every method and prompt at each checkpoint, "
            "drawn with the evaluation's per-sample generators (the images it scored)."
        ),
        **netcdf_attrs(attrs),
    }
    save_dataset_nc(ds, out_path)
    log.info(
        "wrote %s: %d steps x %d methods x %d samples", out_path, len(steps), len(methods), samples
    )
    return Path(out_path)
