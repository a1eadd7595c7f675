"""Training one VDM run, with checkpoints that a killed job resumes from exactly.

A run's checkpoints and manifest, how they are stored and why only the two latest hold
optimizer state: ``conceptspace.checkpoints``. Checkpoints are saved at
``checkpoint_steps(training_cfg)`` (the schedule the Snakemake DAG plans evaluations for)
and at the last step; a killed job resumes from them exactly.

Determinism: every random number of training (batch indices, t0, eps, dropout) comes
from the global torch RNG, seeded once with ``torch.manual_seed(seed)``; a checkpoint
stores that RNG's state, and validation draws its fixed noise from a generator of its
own, so it never touches it. A resumed run therefore ends with exactly the weights of an
uninterrupted one (same device, same thread count; CUDA kernels with atomics aside).

Speed (benchmarks/README.md): the training images live in one tensor on the device, batch
indices are drawn there, and the host syncs only every ``log_every`` steps and at
checkpoints; the loss is accumulated on the device meanwhile. A NaN/inf is therefore
noticed at the next log or checkpoint, always before a checkpoint is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from conceptspace.checkpoints import (
    LEGACY_MODEL_KEYS,
    MONITOR_KEY,
    RESUME_KEY,
    build_vdm,
    checkpoint_path,
    find_resume_checkpoint,
    read_checkpoint,
    save_checkpoint,
    stored_steps,
    write_manifest,
)

from conceptspace.device import compute_device
from conceptspace.divergence import DivergenceMonitor
from conceptspace.io import ConceptspaceError, eta, provenance, remove_stale_temporaries
from conceptspace.pack import RunBatch, StackedModel, draw_batch, loss_template, mask_specs
from conceptspace.stacked import vmap_runs

# One schedule for training and for the DAG: `count` steps evenly spaced in sqrt(step)
# from `first` to `last`, rounded to ints, duplicates removed, sorted.
from conceptspace.runs import checkpoint_steps

log = logging.getLogger(__name__)

__all__ = ["checkpoint_steps", "train_run", "train_pack", "PackRun"]

# Validation ELBO: a fixed subset of held-out images and fixed noise at every checkpoint.
VALIDATION_IMAGES = 256
VALIDATION_SEED_OFFSET = 7919  # validation noise differs from the training stream
# Training keys that do not change the weights; a resume may change them freely.
# explode_factor: the divergence check's key before training.divergence, in older runs.
COSMETIC_TRAINING_KEYS = ("log_every", "divergence", "explode_factor")


# ----------------------------------------------------------------------------- helpers


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, so stored and requested configs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: obj}


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a run's config that fix its weights (what a resume must match).

    The dataset is identified by its content (fingerprint), sizes and origin, not by its
    path or the data settings that do not change its images (a results folder can move,
    data.background_test can change, without breaking resumes).
    """
    training = {k: v for k, v in config["training"].items() if k not in COSMETIC_TRAINING_KEYS}
    dataset = {k: v for k, v in config["dataset"].items() if k not in ("path", "data")}
    return {
        "model": {**LEGACY_MODEL_KEYS, **config["model"]},
        "training": training,
        "seed": config["seed"],
        "dataset": dataset,
    }


def _config_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    old, new = _flatten(_identity(stored)), _flatten(_identity(requested))
    return [
        f"{key} (checkpoint {old.get(key, '<absent>')!r}, requested {new.get(key, '<absent>')!r})"
        for key in sorted(set(old) | set(new))
        if old.get(key, "<absent>") != new.get(key, "<absent>")
    ]


def _dataset_summary(path: str | os.PathLike, arrays: dict, metadata: dict) -> dict[str, Any]:
    """What identifies a dataset: its origin (kind, signal, seed, data settings), its
    sizes, and a fingerprint of its contents (images and h, as trained on)."""
    digest = hashlib.sha256()
    for name in ("images", "h", "is_validation"):
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    n_validation = int(np.count_nonzero(arrays["is_validation"]))
    return _plain(
        {
            "path": str(path),
            "kind": metadata.get("kind"),
            "signal": metadata.get("signal"),
            "seed": metadata.get("seed"),
            "data": metadata.get("data"),
            "n_images": int(len(arrays["images"])),
            "n_train": int(len(arrays["images"]) - n_validation),
            "n_validation": n_validation,
            "fingerprint": digest.hexdigest()[:16],
        }
    )


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Global RNG states as tensors and plain values (weights_only cannot load ndarrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _use_channels_last(device: torch.device, precision: str) -> bool:
    # CPU (oneDNN): ~1.2x in fp32 and in bf16 (measured on the build machine). CUDA: pays off with bf16
    # tensor cores; fp32 convolutions there gain little and GroupNorm may lose.
    return device.type == "cpu" or precision == "bf16"


def _scalar_terms(terms: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in terms.items() if torch.is_tensor(v) and v.ndim == 0}


@torch.no_grad()
def _validation_elbo(
    vdm, images: torch.Tensor, h: torch.Tensor, batch_size: int, seed: int
) -> dict[str, float] | None:
    """The ELBO terms (bits/dim) on the fixed validation subset, in eval mode, with the
    same t0 and eps at every checkpoint: they come from a private generator, so the
    training RNG is untouched and a resumed run stays exact."""
    if len(images) == 0:
        return None
    was_training = vdm.training
    vdm.eval()
    generator = torch.Generator(images.device).manual_seed(seed + VALIDATION_SEED_OFFSET)
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        terms = _scalar_terms(vdm.loss(x, h[start : start + batch_size], generator=generator))
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + value * len(x)
    vdm.train(was_training)
    return {name: float(total) / len(images) for name, total in totals.items()}


def _schedule_ends(vdm) -> dict[str, float]:
    """gamma(0) and gamma(1) of the learned schedule: whether bf16 or anything else
    moves it is worth seeing next to the loss."""
    try:
        with torch.no_grad():
            ends = vdm.gamma(torch.tensor([0.0, 1.0], device=next(vdm.parameters()).device))
        return {"gamma_0": float(ends[0]), "gamma_1": float(ends[1])}
    except Exception as err:  # informative only; never stop training for it
        log.debug("could not read the schedule's end points: %s", err)
        return {}


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class PackRun:
    """One run of a pack: its training set, seed and folder, and where its manifest goes
    (None: ``train_pack`` only returns it)."""

    dataset_path: str | os.PathLike
    seed: int
    run_dir: str | os.PathLike
    manifest_path: str | os.PathLike | None = None


def train_run(
    model_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    dataset_path: str | os.PathLike,
    seed: int,
    run_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    device: str | torch.device = "auto",
    threads: int | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Train one VDM on a rendered dataset, resuming from ``run_dir``'s last checkpoint:
    a pack of one (``train_pack``).

    ``compile`` runs the network through torch.compile (compute.compile): it compiles
    during the first steps, and pays only where benchmarks/README.md shows it does.

    Returns the manifest (also written to ``manifest_path``, last). Raises
    ConceptspaceError if ``run_dir`` holds checkpoints of a different config, or if the
    loss becomes NaN/inf or climbs far above its best (``training.divergence``); the last
    good checkpoint is kept.
    """
    run = PackRun(dataset_path, seed, run_dir, manifest_path)
    (manifest,) = train_pack(model_cfg, training_cfg, [run], device, threads, compile)
    return manifest


def train_pack(
    model_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    runs: Sequence[PackRun],
    device: str | torch.device = "auto",
    threads: int | None = None,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """Train the runs of one pack (one architecture, step count and checkpoint schedule)
    as one stacked model (``conceptspace.pack``), each resuming from its own checkpoints
    and writing them as a lone run does; returns their manifests, in order.

    A run that diverges stops alone and its pack-mates go on; once they are done, a
    ConceptspaceError names every run that diverged. Runs whose latest checkpoints stand
    at different steps (a pack killed while it wrote them) resume together from the
    latest step they all hold with optimizer state; where there is none, each group of
    runs at one step trains as a pack of its own, one group after another.
    """
    device = compute_device(device, threads)
    steps = int(training_cfg["steps"])
    precision = training_cfg.get("precision", "fp32")
    _check_bf16_support(precision, device)
    scheduled = _checkpoint_schedule(training_cfg, steps)
    plan = _Plan(
        steps=steps,
        batch_size=int(training_cfg["batch_size"]),
        log_every=max(1, int(training_cfg["log_every"])),
        # The last step is always saved too, so a finished run never retrains its tail.
        save_steps=sorted(set(scheduled) | {steps}),
        scheduled=scheduled,
        precision=precision,
        device=device,
    )
    manifests: dict[int, dict[str, Any]] = {}
    members = []
    for index, run in enumerate(runs):
        member = _Member.prepare(index, run, model_cfg, training_cfg, plan, len(runs) > 1)
        if member.checkpoint is not None and member.checkpoint["step"] == steps:
            log.info(
                "all %d checkpoints exist in %s; rewriting the manifest",
                len(plan.save_steps),
                member.run_dir / "checkpoints",
            )
            manifests[index] = member.write_manifest(plan)
        else:
            member.checkpoint = _with_optimizer_state(member.resume_path, member.checkpoint)
            members.append(member)
    shapes = {(m.data.h_dim, m.data.image_size) for m in members}
    if len(shapes) > 1:
        raise ConceptspaceError(
            f"the runs of a pack must share one architecture, but their training sets have "
            f"(h_dim, image size) {sorted(shapes)}; pack runs of one study only"
        )
    failures: list[ConceptspaceError] = []
    for cohort in _cohorts(members, device):
        failures += _train_cohort(cohort, model_cfg, training_cfg, plan, compile)
        for member in cohort:
            if not member.diverged:
                manifests[member.index] = member.write_manifest(plan)
    if len(runs) == 1 and failures:
        raise failures[0]
    if failures:
        raise ConceptspaceError(
            f"{len(failures)} of the pack's {len(runs)} runs diverged (the others trained "
            "on and wrote their manifests): " + " || ".join(str(f) for f in failures)
        )
    return [manifests[index] for index in range(len(runs))]


# The configuration schema (workflow/schemas) checks every setting before a workflow or
# command-line run gets here; train_run re-checks only what a direct library caller
# would otherwise learn about late or not at all.


def _check_bf16_support(precision: str, device: torch.device) -> None:
    # The schema cannot know the device: without this a bf16 run on an old GPU fails in
    # the first forward pass with a message that does not name the setting.
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConceptspaceError(
            f"{torch.cuda.get_device_name(device)} has no bfloat16 support; set "
            "training.precision: fp32"
        )


def _checkpoint_schedule(training_cfg: Mapping[str, Any], steps: int) -> list[int]:
    """The scheduled checkpoint steps, which must fit in training: a checkpoint past the
    end would be missed only when the manifest is written, after the whole training."""
    scheduled = checkpoint_steps(training_cfg)
    if not scheduled or scheduled[-1] > steps:
        raise ConceptspaceError(
            f"checkpoints {scheduled} do not fit in training.steps = {steps}; make "
            "training.checkpoints.last <= training.steps"
        )
    return scheduled


@dataclass
class _TrainingData:
    """A rendered dataset on the device, one tensor per split (batches are indexed there,
    without a trip through the host): the training images and the fixed validation
    subset, with what identifies the dataset (``_dataset_summary``)."""

    train_images: torch.Tensor
    train_h: torch.Tensor
    validation_images: torch.Tensor
    validation_h: torch.Tensor
    h_dim: int
    image_size: int
    summary: dict[str, Any]
    device: torch.device

    @classmethod
    def load(cls, dataset_path: str | os.PathLike, device: torch.device) -> _TrainingData:
        from conceptspace.render import load_dataset

        arrays, metadata = load_dataset(dataset_path)
        images = torch.from_numpy(np.ascontiguousarray(arrays["images"], dtype=np.float32))
        h_all = torch.from_numpy(np.ascontiguousarray(arrays["h"], dtype=np.float32))
        held_out = torch.from_numpy(np.asarray(arrays["is_validation"], dtype=bool))
        train_images, train_h = images[~held_out].to(device), h_all[~held_out].to(device)
        if len(train_images) == 0:
            raise ConceptspaceError(
                f"dataset {dataset_path} has no training images (all are validation); lower "
                "data.validation_fraction or raise data.images_per_class"
            )
        return cls(
            train_images=train_images,
            train_h=train_h,
            validation_images=images[held_out][:VALIDATION_IMAGES].to(device),
            validation_h=h_all[held_out][:VALIDATION_IMAGES].to(device),
            h_dim=int(h_all.shape[1]),
            image_size=int(images.shape[-1]),
            summary=_dataset_summary(dataset_path, arrays, metadata),
            device=device,
        )


def _run_config(
    model_cfg: Mapping[str, Any], training_cfg: Mapping[str, Any], seed: int, data: _TrainingData
) -> dict[str, Any]:
    """The config a run's checkpoints store (and a resume compares, ``_identity``)."""
    return _plain(
        {
            "model": dict(model_cfg),
            "training": dict(training_cfg),
            "seed": int(seed),
            "h_dim": data.h_dim,
            "image_size": data.image_size,
            "dataset": data.summary,
        }
    )


def _matching_checkpoint(
    run_dir: Path, save_steps: list[int], config: dict, device: torch.device
) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from (``find_resume_checkpoint``), or (None, None) for a
    fresh run; refuses a ``run_dir`` whose checkpoints were trained under another config."""
    checkpoints_dir = run_dir / "checkpoints"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(checkpoints_dir)  # a job killed inside torch.save
    resume_path, checkpoint = find_resume_checkpoint(run_dir, save_steps, device)
    if checkpoint is not None:
        differences = _config_differences(checkpoint["config"], config)
        if differences:
            raise ConceptspaceError(
                f"{run_dir} holds checkpoints of a different configuration ({resume_path}); "
                f"differing keys: {'; '.join(differences)}. Either restore these settings "
                f"(config.yaml or the preset) to resume, or delete {run_dir} to train "
                "this configuration from scratch."
            )
    return resume_path, checkpoint


def _with_optimizer_state(resume_path: Path | None, checkpoint: dict | None) -> dict | None:
    """``checkpoint`` if a resume can continue from it, else None (start from step 0)."""
    if checkpoint is not None and RESUME_KEY not in checkpoint:
        # only the two latest keep it (save_checkpoint)
        log.warning(
            "checkpoint %s holds no optimizer state; training starts from step 0 and "
            "writes the checkpoints again",
            resume_path,
        )
        return None
    return checkpoint


@dataclass(frozen=True)
class _Plan:
    """What the runs of a pack share, fixed before the first step: how long they train,
    when they report and save, in which precision, on which device."""

    steps: int
    batch_size: int
    log_every: int
    save_steps: list[int]
    scheduled: list[int]
    precision: str
    device: torch.device


@dataclass
class _Member:
    """One run of a pack: its data, what its checkpoints record, the checkpoint it
    resumes from, and (once training) its own random number generator."""

    index: int
    run: PackRun
    run_dir: Path
    label: str  # prefixes its progress lines in a pack of several runs
    data: _TrainingData
    config: dict[str, Any]
    record: dict[str, Any]
    monitor: DivergenceMonitor | None
    resume_path: Path | None
    checkpoint: dict | None
    generator: torch.Generator | None = None
    diverged: bool = False

    @classmethod
    def prepare(cls, index, run, model_cfg, training_cfg, plan: _Plan, in_pack: bool) -> _Member:
        run_dir = Path(run.run_dir)
        data = _TrainingData.load(run.dataset_path, plan.device)
        config = _run_config(model_cfg, training_cfg, run.seed, data)
        resume_path, checkpoint = _matching_checkpoint(
            run_dir, plan.save_steps, config, plan.device
        )
        return cls(
            index=index,
            run=run,
            run_dir=run_dir,
            label=f"{run_dir.name}: " if in_pack else "",
            data=data,
            config=config,
            record=provenance(config, run.seed),
            # Stops training when the loss climbs far above its best (None: only NaN/inf
            # stop it); see conceptspace.divergence and docs/trust.md.
            monitor=DivergenceMonitor.from_config(training_cfg),
            resume_path=resume_path,
            checkpoint=checkpoint,
        )

    @property
    def start(self) -> int:
        return 0 if self.checkpoint is None else int(self.checkpoint["step"])

    def write_manifest(self, plan: _Plan) -> dict[str, Any]:
        return write_manifest(
            self.run.manifest_path,
            self.run_dir,
            plan.save_steps,
            self.config,
            plan.scheduled,
            self.record,
        )

    def initial_state(self, model_cfg, device: torch.device) -> tuple[dict, dict | None]:
        """(weights, optimizer state or None), and the run's generator: from its
        checkpoint, or, at step 0, its seeded initialisation followed by the stream a lone
        run draws from (all randomness of a run comes from its seed)."""
        if self.checkpoint is None:
            torch.manual_seed(self.run.seed)
            vdm = build_vdm(model_cfg, self.data.h_dim, self.data.image_size)
            self.generator = _device_generator(device)
            state = {key: value.to(device) for key, value in vdm.state_dict().items()}
            return state, None
        log.info("%sresuming from step %d (%s)", self.label, self.start, self.resume_path)
        self.generator = _generator_from(self.checkpoint["rng"], device)
        reference = self.checkpoint.get(MONITOR_KEY)
        if self.monitor is not None and reference is not None:
            if self.monitor.load_state_dict(reference):
                log.info(
                    "%sdivergence monitor: reference restored from step %d (%d log intervals, "
                    "best %.4f bits/dim)",
                    self.label,
                    self.start,
                    self.monitor.intervals,
                    self.monitor.best,
                )
            else:
                log.info(
                    "%sdivergence monitor: log_every changed since step %d; it arms again",
                    self.label,
                    self.start,
                )
        state, optimizer = self.checkpoint["model"], self.checkpoint[RESUME_KEY]
        self.checkpoint = None  # the pack holds them from here on
        return state, optimizer


def _device_generator(device: torch.device) -> torch.Generator:
    """A generator holding the state the device's global one holds now."""
    generator = torch.Generator(device)
    if device.type == "cuda":
        generator.set_state(torch.cuda.get_rng_state(device))
    else:
        generator.set_state(torch.get_rng_state())
    return generator


def _generator_from(state: Mapping[str, Any], device: torch.device) -> torch.Generator:
    """The run's generator at a checkpoint: the global state a lone run stores there."""
    generator = torch.Generator(device)
    if device.type != "cuda":
        generator.set_state(state["torch"])
        return generator
    if "cuda" not in state:
        raise ConceptspaceError(
            "the checkpoint was written by a CPU run and holds no CUDA RNG state, so a "
            "CUDA resume cannot reproduce it; resume with --device cpu or delete the run "
            "folder to restart on CUDA"
        )
    generator.set_state(state["cuda"])
    return generator


def _run_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """A checkpoint's ``rng`` in a lone run's format, the run's generator in the slot of
    the global generator it replaces (CPU: "torch", CUDA: "cuda")."""
    state = _rng_state(device)
    state["cuda" if device.type == "cuda" else "torch"] = generator.get_state()
    return state


def _cohorts(members: list[_Member], device: torch.device) -> list[list[_Member]]:
    """The groups of runs that train together: one, unless their checkpoints stand at
    different steps and cannot all go back to the earliest of them (``train_pack``)."""
    if not members:
        return []
    earliest = min(member.start for member in members)
    for member in members:
        if member.start > earliest > 0:
            _step_back(member, earliest, device)
    starts = sorted({member.start for member in members})
    return [[m for m in members if m.start == start] for start in starts]


def _step_back(member: _Member, step: int, device: torch.device) -> None:
    """Resume ``member`` from its checkpoint at ``step`` if that one loads and holds the
    optimizer state (a pack killed while writing its runs' checkpoints: the one before a
    run's latest does), so that it trains with its pack again."""
    path = checkpoint_path(member.run_dir, step)
    try:
        checkpoint = read_checkpoint(path, device) if path.exists() else None
    except ConceptspaceError:
        checkpoint = None
    if checkpoint is not None and RESUME_KEY in checkpoint:
        log.info("%sgoes back to step %d, where its pack-mates resume", member.label, step)
        member.resume_path, member.checkpoint = path, checkpoint


def _train_cohort(
    members: list[_Member], model_cfg, training_cfg, plan: _Plan, compile: bool
) -> list[ConceptspaceError]:
    """Train runs standing at one step as one stacked model; returns the errors of those
    that diverged."""
    first = members[0].data
    vdm = build_vdm(model_cfg, first.h_dim, first.image_size).to(plan.device)
    channels_last = _use_channels_last(plan.device, plan.precision)
    if channels_last:
        vdm = vdm.to(memory_format=torch.channels_last)
    # bf16: the network autocasts its own forward and hands float32 back, so the ELBO's
    # arithmetic (small terms, the learned schedule) stays in float32. An unknown
    # precision stops here (ValueError naming the allowed ones).
    vdm.net.set_precision(plan.precision)
    template = loss_template(vdm)
    if compile:
        template.vdm.net.compile()  # in place: the state_dict keys stay those of the eager net
    example = draw_batch(
        first.train_images, first.train_h, plan.batch_size, torch.Generator(plan.device), [],
        channels_last,
    )  # fmt: skip
    masks = mask_specs(template, example)
    start = members[0].start  # every member's (_cohorts)
    initial = [member.initial_state(model_cfg, plan.device) for member in members]
    resumed = [optimizer for _, optimizer in initial]
    stack = StackedModel(
        template,
        [state for state, _ in initial],
        None if resumed[0] is None else resumed,
        lr=float(training_cfg["lr"]),
        weight_decay=float(training_cfg["weight_decay"]),
        grad_clip=float(training_cfg["grad_clip"]),
        channels_last=channels_last,
        vmapped=vmap_runs(plan.device),
    )
    del initial, resumed
    for member in members:  # from ``start``: initial_state handed the checkpoints over
        _log_start(
            plan, member, start, sum(p[0].numel() for p in stack.params.values()), channels_last
        )
    if len(members) > 1:
        log.info("training a pack of %d runs as one stacked model", len(members))
    stepper = _Stepper(plan, members, stack, vdm, masks, channels_last)
    return stepper.run(start)


def _log_start(
    plan: _Plan, member: _Member, start: int, parameters: int, channels_last: bool
) -> None:
    data = member.data
    log.info(
        "%straining %s: %d parameters, %d train / %d validation images (%dx%d), h_dim %d; "
        "steps %d -> %d, batch %d, %s on %s (%d threads)%s",
        member.label,
        member.run_dir,
        parameters,
        len(data.train_images),
        len(data.validation_images),
        data.image_size,
        data.image_size,
        data.h_dim,
        start,
        plan.steps,
        plan.batch_size,
        plan.precision,
        plan.device,
        torch.get_num_threads(),
        ", channels_last" if channels_last else "",
    )


class _Stepper:
    """Steps ``start + 1`` to ``plan.steps`` of a pack, with no host syncs except at log
    and checkpoint steps. A run that diverges leaves the pack there."""

    def __init__(self, plan, members, stack, vdm, masks, channels_last):
        self.plan, self.members, self.stack = plan, members, stack
        self.vdm = vdm  # a plain VDM of the architecture: validation and the schedule's ends
        self.masks, self.channels_last = masks, channels_last

    def run(self, start: int) -> list[ConceptspaceError]:
        plan = self.plan
        self.stack.loss_module.train()
        tally = _LossTally(plan.device, start, len(self.members))
        watches = [_DivergenceWatch(m.run_dir, m.monitor, start) for m in self.members]
        progress = _Progress(start, plan.steps, plan.batch_size)
        failures: list[ConceptspaceError] = []
        for step in range(start + 1, plan.steps + 1):
            tally.add(*self.stack.step([self._draw(member) for member in self.members]))
            report, save = step % plan.log_every == 0 or step == plan.steps, step in plan.save_steps
            if not (report or save):
                continue
            finite = tally.finite()
            problems = [watch.check_finite(ok, step) for watch, ok in zip(watches, finite)]
            n, recent = tally.since_report(step)
            if report:
                grads = tally.take_report(step)
                lines = [
                    (m.label, loss, grad)
                    for m, loss, grad, problem in zip(self.members, recent, grads, problems)
                    if problem is None
                ]
                progress.report(step, n, lines, runs=len(self.members))
            # A whole log interval at a report, part of one at a checkpoint between reports;
            # checked after the report is logged, so the log shows the loss that stops training.
            for k, watch in enumerate(watches):
                if problems[k] is None:
                    problems[k] = watch.check_climb(recent[k], n, report, step)
            if any(problems):
                failures += self._leave(problems, tally, watches)
                if not self.members:
                    break
            if save:
                with progress.paused():  # checkpoint time is not training time
                    self._save(step, tally.take_interval(step))
        return failures

    def _draw(self, member: _Member) -> RunBatch:
        data = member.data
        return draw_batch(
            data.train_images,
            data.train_h,
            self.plan.batch_size,
            member.generator,
            self.masks,
            self.channels_last,
        )

    def _leave(self, problems, tally, watches) -> list[ConceptspaceError]:
        """The diverged runs leave the pack (their last good checkpoints kept)."""
        keep = [k for k, problem in enumerate(problems) if problem is None]
        for member, problem in zip(self.members, problems):
            if problem is not None:
                member.diverged = True
                log.error("%s%s", member.label, problem)
        if keep:
            self.stack = self.stack.keep(keep)
            tally.keep(keep)
        self.members = [self.members[k] for k in keep]
        watches[:] = [watches[k] for k in keep]
        return [problem for problem in problems if problem is not None]

    def _save(self, step: int, train_losses: list[float]) -> None:
        for k, member in enumerate(self.members):
            state = self.stack.run_state(k)
            self.vdm.load_state_dict(state)
            validation = _validation_elbo(
                self.vdm,
                member.data.validation_images,
                member.data.validation_h,
                self.plan.batch_size,
                member.run.seed,
            )
            save_checkpoint(
                member.run_dir,
                step,
                {
                    "model": state,
                    RESUME_KEY: self.stack.run_optimizer_state(k),
                    "rng": _run_rng_state(member.generator, self.plan.device),
                    MONITOR_KEY: None if member.monitor is None else member.monitor.state_dict(),
                },
                member.config,
                member.record,
                train_losses[k],
                validation,
                _schedule_ends(self.vdm),
            )


class _LossTally:
    """Each run's sums of the loss and the gradient norm since the last report, and of
    the loss since the last checkpoint, kept on the device (K,): the host reads them only
    at reports and checkpoints."""

    def __init__(self, device: torch.device, start: int, runs: int):
        self.report_loss = torch.zeros(runs, device=device)
        self.report_grad = torch.zeros(runs, device=device)
        self.interval_loss = torch.zeros(runs, device=device)
        self.report_start = self.interval_start = start

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.report_loss += loss
        self.interval_loss += loss
        self.report_grad += grad_norm

    def keep(self, indices: list[int]) -> None:
        for name in ("report_loss", "report_grad", "interval_loss"):
            setattr(self, name, getattr(self, name)[indices])

    def finite(self) -> list[bool]:
        """One sync covers every step since the last check: a NaN/inf in a run's loss or
        gradient norm poisons its sums."""
        return torch.isfinite(self.report_loss + self.report_grad + self.interval_loss).tolist()

    def since_report(self, step: int) -> tuple[int, list[float]]:
        """(steps since the last report, each run's mean loss over them)."""
        n = step - self.report_start
        return n, (self.report_loss / n).tolist()

    def take_report(self, step: int) -> list[float]:
        """Each run's mean gradient norm since the last report; the report sums start again."""
        grads = (self.report_grad / (step - self.report_start)).tolist()
        self.report_loss.zero_()
        self.report_grad.zero_()
        self.report_start = step
        return grads

    def take_interval(self, step: int) -> list[float]:
        """Each run's mean loss since the previous checkpoint; its sums start again."""
        losses = (self.interval_loss / (step - self.interval_start)).tolist()
        self.interval_loss.zero_()
        self.interval_start = step
        return losses


class _DivergenceWatch:
    """Says why a run must stop (``_diverged``) when its loss or gradient norm turns
    NaN/inf, or when the divergence monitor (``training.divergence``; None: off) sees its
    loss climb far above its best. Its reference is the checkpoint's at a resume. Remembers the last
    step that passed, so the message says between which steps training diverged."""

    def __init__(self, run_dir: Path, monitor: DivergenceMonitor | None, start: int):
        self.run_dir = run_dir
        self.monitor = monitor
        self.last_passed = start

    def check_finite(self, finite: bool, step: int) -> ConceptspaceError | None:
        # Caught before any checkpoint is written.
        if finite:
            return None
        return _diverged(
            self.run_dir, self.last_passed, step, "the loss or gradient norm became NaN/inf"
        )

    def check_climb(
        self, recent: float, n: int, complete: bool, step: int
    ) -> ConceptspaceError | None:
        """``recent``: the mean loss of the last ``n`` steps, a whole log interval when
        ``complete`` (the monitor allows for the extra noise of part of one)."""
        if self.monitor is not None:
            problem = self.monitor.observe(recent, n, complete=complete)
            if problem:
                return _diverged(self.run_dir, self.last_passed, step, problem)
        self.last_passed = step
        return None


class _Progress:
    """The progress lines: each run's mean loss and gradient norm, the pack's speed and
    ETA. Time spent writing checkpoints counts in the ETA but not in the speed."""

    def __init__(self, start: int, steps: int, batch_size: int):
        self.start, self.steps, self.batch_size = start, steps, batch_size
        self.started = self.last_time = time.perf_counter()

    def report(self, step: int, n: int, lines: list[tuple[str, float, float]], runs: int):
        """``lines``: (label, loss, gradient norm) of each run; ``runs``: the pack's size,
        whose images the speed counts."""
        now = time.perf_counter()
        rate = n / max(now - self.last_time, 1e-9)
        left = eta(step - self.start, self.steps - self.start, now - self.started)
        for label, loss, grad_norm in lines:
            log.info(
                "%sstep %d/%d loss %.4f bits/dim grad-norm %.3g | %.2f steps/s %.0f images/s "
                "| ETA %s",
                label,
                step,
                self.steps,
                loss,
                grad_norm,
                rate,
                rate * self.batch_size * runs,
                left,
            )
        self.last_time = now

    @contextmanager
    def paused(self) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.last_time += time.perf_counter() - began


def _diverged(run_dir: Path, last_good: int, step: int, what: str) -> ConceptspaceError:
    stored = stored_steps(run_dir / "checkpoints")
    kept = (
        f"the last good checkpoint, {checkpoint_path(run_dir, stored[-1])}, is kept"
        if stored
        else "no checkpoint had been written yet"
    )
    when = (
        f"at step {step}" if step == last_good + 1 else f"between steps {last_good + 1} and {step}"
    )
    return ConceptspaceError(
        f"training diverged: {what} {when} of {run_dir}; "
        f"{kept}. Lower training.lr or training.grad_clip, use training.precision: fp32, or "
        f"check the dataset, then delete {run_dir} to train again (a run does not resume "
        "under a changed config). Rerunning unchanged resumes from the last checkpoint and, "
        "training being deterministic, most likely diverges again."
    )
