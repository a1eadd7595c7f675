"""Scoring one checkpoint in concept space (SPEC "Probes and evaluation").

Naive prompting: each class of ``concepts.CLASSES`` is prompted with its concept means,
h = ``signal.class_h(class)``, ``samples_per_prompt`` times with the ancestral sampler
(``sampler_steps`` steps). The probe reads every sample; ``p_target[prompt, concept,
sample]`` is its probability that the sample shows the prompt's target value of that
concept (the class's digit: color 0 red / 1 blue, size 0 large / 1 small).

Common random numbers: the noise of sample i of prompt c comes from its own
``torch.Generator`` seeded from (run seed, prompt, i) only, never from the checkpoint's
step or the batch it lands in. Every checkpoint of a run therefore starts from the same
initial noise and draws the same per-step noise, so the differences between
checkpoints are the model's, not the sampler's, and trajectories over training are
much less noisy. (The generators live on the evaluation device: a CPU and a CUDA
evaluation of one checkpoint draw different noise.)

All prompts share sampler calls: the 4 x samples_per_prompt samples are cut into
batches of ``evaluation.batch_size`` (the memory limit), so a checkpoint takes
ceil(4 x samples_per_prompt / batch_size) sampler calls.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from conceptspace.concepts import CLASSES, CONCEPTS, UNSEEN_CLASS, Signal, class_digits
from conceptspace.io import ConceptspaceError, config_hash, provenance
from conceptspace.trajectories import COORD_ATTRS, P_TARGET_ATTRS, netcdf_attrs, save_dataset_nc

log = logging.getLogger(__name__)

# Keeps the evaluation noise apart from any other stream seeded from the run seed.
EVALUATION_STREAM = 0x5EED_E7A1
# Gaps recorded in a checkpoint and given on the command line must agree this closely.
GAP_TOLERANCE = 5e-4


def sample_seed(seed: int, prompt: str, sample: int) -> int:
    """The seed of one sample's generator: a hash of (run seed, prompt, sample index).

    Independent of the checkpoint's step (common random numbers across checkpoints) and
    of batching. Prompts are identified by their class digits, so adding a prompt does
    not change the noise of the others.
    """
    color, size = class_digits(prompt)
    sequence = np.random.SeedSequence([EVALUATION_STREAM, int(seed), color, size, int(sample)])
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


def write_evaluation(
    path: str | os.PathLike,
    p_target: np.ndarray,
    prompts: Sequence[str],
    concepts: Sequence[str],
    attrs: Mapping[str, Any],
) -> None:
    """Write one checkpoint's evaluation as netCDF: ``p_target`` (prompt, concept,
    sample) with its coordinates; ``attrs`` (which must hold step, seed, color_gap and
    size_gap) become global attributes, non-scalars as JSON strings."""
    p_target = np.asarray(p_target, dtype=np.float32)
    expected = (len(prompts), len(concepts))
    if p_target.ndim != 3 or p_target.shape[:2] != expected:
        raise ValueError(
            f"p_target must be (prompt, concept, sample) = ({expected[0]}, {expected[1]}, n); "
            f"got {p_target.shape}"
        )
    missing = [key for key in ("step", "seed", "color_gap", "size_gap") if key not in attrs]
    if missing:
        raise ValueError(f"evaluation attrs lack {', '.join(missing)}")
    ds = xr.Dataset(
        {"p_target": (("prompt", "concept", "sample"), p_target, dict(P_TARGET_ATTRS))},
        coords={
            "prompt": np.array([str(p) for p in prompts], dtype=object),
            "concept": np.array([str(c) for c in concepts], dtype=object),
            "sample": np.arange(p_target.shape[2], dtype=np.int64),
        },
    )
    for name in ("prompt", "concept", "sample"):
        ds[name].attrs = dict(COORD_ATTRS[name])
    ds.attrs = {
        "description": (
            "Naive prompting of one checkpoint: for each prompted class, concept and "
            "sample, the probe's probability that the sample shows the prompt's target "
            "value of the concept."
        ),
        **netcdf_attrs(attrs),
    }
    save_dataset_nc(ds, path)


def target_probabilities(probabilities: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
    """(B, n_concepts, 2) probe probabilities -> (B, n_concepts): each row's probability
    of its own prompt's value of every concept."""
    targets = torch.tensor([class_digits(p) for p in prompts], device=probabilities.device)
    chosen = probabilities.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen.double().cpu().numpy()


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
    for key, given in (("color_gap", signal.color_gap), ("size_gap", signal.size_gap)):
        if key in recorded and abs(float(recorded[key]) - float(given)) > GAP_TOLERANCE:
            raise ConceptspaceError(
                f"checkpoint {path} was trained with {key} {recorded[key]}, but the evaluation "
                f"was asked for {given}; prompts would use the wrong class means. Pass the "
                "run's own gaps"
            )


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike,
    probe_path: str | os.PathLike,
    evaluation_cfg: Mapping[str, Any],
    min_accuracy: float,
    signal: Signal,
    seed: int,
    out_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Path:
    """Prompt every class naively, score the samples with the probe, write netCDF.

    Writes ``out_path`` (see :func:`write_evaluation`) and returns its path. The probe
    is loaded with ``min_accuracy`` as its floor, so a weak probe is refused
    (ConceptspaceError) before any sampling.
    """
    from conceptspace.probe import load_probe, predict_proba
    from conceptspace.train import load_checkpoint, resolve_device

    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(device)
    checkpoint_path, probe_path = Path(checkpoint_path), Path(probe_path)
    samples_per_prompt = int(evaluation_cfg["samples_per_prompt"])
    sampler_steps = int(evaluation_cfg["sampler_steps"])
    batch_size = int(evaluation_cfg["batch_size"])
    if samples_per_prompt < 1 or sampler_steps < 1 or batch_size < 1:
        raise ConceptspaceError(
            "evaluation.samples_per_prompt, sampler_steps and batch_size must be >= 1; got "
            f"{samples_per_prompt}, {sampler_steps}, {batch_size}"
        )

    probe = load_probe(probe_path, min_accuracy, device)
    vdm, metadata = load_checkpoint(checkpoint_path, device)
    _check_run(metadata, signal, seed, checkpoint_path)
    step = int(metadata["step"])
    image_size = int(metadata["config"]["image_size"])
    if image_size != probe.image_size:
        raise ConceptspaceError(
            f"checkpoint {checkpoint_path} makes {image_size}px images but probe {probe_path} "
            f"reads {probe.image_size}px ones; train both with the same data.image_size"
        )

    # Every (prompt, sample) pair, prompt-major; batches cut across prompts.
    items = [(prompt, i) for prompt in CLASSES for i in range(samples_per_prompt)]
    prompt_h = {prompt: torch.from_numpy(signal.class_h(prompt)) for prompt in CLASSES}
    n_batches = math.ceil(len(items) / batch_size)
    log.info(
        "evaluating %s (step %d) on %s: %d prompts x %d samples, %d sampler steps, "
        "%d batches of <= %d",
        checkpoint_path,
        step,
        device,
        len(CLASSES),
        samples_per_prompt,
        sampler_steps,
        n_batches,
        batch_size,
    )
    scores = np.empty((len(items), len(CONCEPTS)))
    started = time.perf_counter()
    with torch.no_grad():
        for batch in range(n_batches):
            chunk = items[batch * batch_size : (batch + 1) * batch_size]
            prompts = [prompt for prompt, _ in chunk]
            h = torch.stack([prompt_h[prompt] for prompt in prompts]).to(device)
            images = vdm.sample(h, sampler_steps, _generators(chunk, seed, device))
            probabilities = predict_proba(probe, images)
            start = batch * batch_size
            scores[start : start + len(chunk)] = target_probabilities(probabilities, prompts)
            elapsed = time.perf_counter() - started
            log.info(
                "batch %d/%d: %d samples (%.1f s, %.2f samples/s)",
                batch + 1,
                n_batches,
                start + len(chunk),
                elapsed,
                (start + len(chunk)) / max(elapsed, 1e-9),
            )
    # (prompt * sample, concept) -> (prompt, concept, sample)
    p_target = scores.reshape(len(CLASSES), samples_per_prompt, len(CONCEPTS)).transpose(0, 2, 1)

    probe_accuracy = dict(getattr(probe, "accuracy", {}) or {})
    settings = {
        "evaluation": dict(evaluation_cfg),
        "min_accuracy": float(min_accuracy),
        "signal": {"color_gap": signal.color_gap, "size_gap": signal.size_gap},
        "checkpoint_config_hash": config_hash(metadata["config"]),
        "step": step,
    }
    attrs = {
        "step": step,
        "seed": int(seed),
        "color_gap": float(signal.color_gap),
        "size_gap": float(signal.size_gap),
        "checkpoint": str(checkpoint_path),
        "probe": str(probe_path),
        "min_accuracy": float(min_accuracy),
        **{f"probe_accuracy_{name}": float(value) for name, value in probe_accuracy.items()},
        "evaluation_cfg": dict(evaluation_cfg),  # stored as a JSON string
        "sampling": (
            "naive prompting with the class means; noise per sample seeded from (seed, "
            "prompt, sample index), the same at every checkpoint (common random numbers); "
            f"generators on {device.type}"
        ),
        **provenance(settings, int(seed)),
    }
    write_evaluation(out_path, p_target, CLASSES, CONCEPTS, attrs)
    unseen = p_target[CLASSES.index(UNSEEN_CLASS)]
    log.info(
        "wrote %s; unseen class %s, mean p_target: %s",
        out_path,
        UNSEEN_CLASS,
        ", ".join(f"{c} {unseen[i].mean():.3f}" for i, c in enumerate(CONCEPTS)),
    )
    return Path(out_path)
