"""A run's checkpoints on disk: where they live, how they are written and read, and the
model they hold. Training writes them (``save_checkpoint``, ``write_manifest``) and resumes
from them (``find_resume_checkpoint``); evaluation, sampling and figures read them
(``load_checkpoint``). Neither side imports the other: both come here.

Layout of a run (``run_dir``)::

    checkpoints/step_000500.pt     torch.save dict, loadable with weights_only=True:
                                   model, step, rng, divergence (the monitor's
                                   reference), config, metrics, provenance; and
                                   optimizer, in the run's two latest checkpoints only
    checkpoints/step_000500.json   sidecar: step, metrics, config, provenance
    <manifest_path>                written last: the checkpoints, the config, final loss

Each checkpoint is written sidecar first, then the .pt through ``io.atomic_path``, so a
.pt that exists is complete. Only a resume reads the optimizer state (two thirds of a
checkpoint: 85 of 128 MB at the paper's scale), and a resume starts from the newest
readable checkpoint that holds it (the one before the latest if that is damaged or
deleted; step 0 where none does, exact too): once a checkpoint is written, the one two
before it is rewritten without it, again through ``io.atomic_path``. Keeping it in every
checkpoint would let a lost early checkpoint resume from the one before it, at three
times the disk (measured with torch.save: the paper's model 42.6 MB a checkpoint without
it, 127.7 MB with it; its 60 checkpoints 2.7 GB a run as kept, 7.7 GB with it in all); a
lost early checkpoint retrains its run.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

import torch

from conceptspace.device import resolve_device
from conceptspace.io import (
    DAMAGED_TORCH_FILE_ERRORS,
    ConceptspaceError,
    atomic_path,
    read_json,
    write_json,
)
from conceptspace.unet import UNet
from conceptspace.vdm import LEGACY_DATA_RANGE, VDM

log = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"step_(\d{6,})\.pt")
_CHECKPOINT_KEYS = ("model", "step", "rng", "config")
RESUME_KEY = "optimizer"  # in the run's two latest checkpoints only
MONITOR_KEY = "divergence"  # the divergence monitor's reference (None: monitor off)
# Model keys added after runs were trained without them, with the value those runs used:
# a stored config that lacks one means this value (for loading and for resuming), and so
# does a model config given without it (tests/test_train.py resumes and loads such a run).
LEGACY_MODEL_KEYS = {"data_range": list(LEGACY_DATA_RANGE), "h_init_fan_in": None}


# ----------------------------------------------------------------------------- where


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.pt"


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def stored_steps(checkpoints_dir: Path) -> list[int]:
    steps = []
    for path in checkpoints_dir.glob("step_*.pt"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match:
            steps.append(int(match[1]))
    return sorted(steps)


def _training_outputs(path: Path) -> list[Path]:
    """What says a checkpoint's run is trained, in the workflow's layout
    (``<results>/<study>/runs/<run>/checkpoints/step_*.pt``): the run's manifest and the
    manifest of the pack that trained it (rule train_vdm's output, ``<study>/packs``)."""
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints":
        return []  # not in a run folder
    outputs = [run_dir / "manifest.json"] if (run_dir / "manifest.json").exists() else []
    if run_dir.parent.name != "runs":
        return outputs
    for pack in sorted((run_dir.parent.parent / "packs").glob("*.json")):
        try:
            runs = read_json(pack).get("runs", {})
        except (ConceptspaceError, AttributeError):
            runs = {}  # unreadable: it names no run
        if run_dir.name in runs:
            outputs.append(pack)
    return outputs


def recovery(path: Path) -> str:
    """The fix for a missing or damaged checkpoint ``path``, as one command to run.

    Snakemake trains a run again only when its pack's manifest is gone (the checkpoints
    are undeclared), so the command deletes that too: the pack's job then rewrites its
    finished runs' manifests and resumes this run from its newest readable checkpoint
    before ``path`` that holds optimizer state (``find_resume_checkpoint``), which
    writes ``path`` again, bit for bit what it was.
    """
    path = Path(path)
    outputs = _training_outputs(path)
    doomed = ([path] if path.exists() else []) + outputs
    how = (
        "training resumes from the run's newest readable checkpoint before it that holds "
        "optimizer state (the run's two latest checkpoints hold it; without one, from step "
        "0) and writes it again, identical"
    )
    if not doomed:
        return f"rerun training (`snakemake`) to write it: {how}"
    return (
        f"to write it again run `{shlex.join(['rm', '-f', *map(str, doomed)])}`, then rerun "
        f"`snakemake` as before"
        + (" (without its manifests it trains the run again)" if outputs else "")
        + f": {how}"
    )


def retraining(path: Path) -> str:
    """The fix for a checkpoint another version of the code wrote: its run trained again
    from step 0. Its other checkpoints are that version's too, so none can be resumed
    from; the command deletes the run's folder and its pack's manifest, without which
    Snakemake plans no training (``recovery``)."""
    path = Path(path)
    if path.parent.name != "checkpoints":
        return "train the run again with this version"
    run_dir = path.parent.parent
    packs = [output for output in _training_outputs(path) if output.parent != run_dir]
    return (
        f"to train its run again from step 0 with this version run "
        f"`{shlex.join(['rm', '-rf', str(run_dir), *map(str, packs)])}`, then rerun "
        "`snakemake` as before"
    )


# ----------------------------------------------------------------------------- reading


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) with every way a file can be broken turned into a
    ConceptspaceError that names the file and the fix (``recovery``)."""
    if not path.exists():
        raise ConceptspaceError(f"checkpoint {path} does not exist; {recovery(path)}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
        if missing:
            raise KeyError(f"keys {missing} are missing")
    except DAMAGED_TORCH_FILE_ERRORS as err:
        raise ConceptspaceError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {err}); it is "
            f"truncated or corrupt; {recovery(path)}"
        ) from err
    return checkpoint


def build_vdm(model_cfg: Mapping[str, Any], h_dim: int, image_size: int):
    """The VDM of ``model_cfg``: untrained for training, or for a checkpoint's weights."""
    model_cfg = {**LEGACY_MODEL_KEYS, **model_cfg}
    net = UNet.from_config(model_cfg, h_dim, image_size)
    return VDM(
        net,
        float(model_cfg["gamma_min"]),
        float(model_cfg["gamma_max"]),
        float(model_cfg["reconstruction_sigma"]),
        data_range=model_cfg["data_range"],
    )


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the VDM of a checkpoint, in eval mode on ``device``: (vdm, metadata).

    metadata: step, config, metrics, provenance. A missing or corrupt file raises
    ConceptspaceError naming the file and the fix.
    """
    path = Path(path)
    device = resolve_device(device)
    checkpoint = read_checkpoint(path, device)
    config = checkpoint["config"]
    try:
        vdm = build_vdm(config["model"], int(config["h_dim"]), int(config["image_size"]))
        vdm.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ConceptspaceError(
            f"checkpoint {path} does not match the model code ({type(err).__name__}: {err}); "
            f"it was written by another version of conceptspace; {retraining(path)}"
        ) from err
    metadata = {
        "path": str(path),
        "step": int(checkpoint["step"]),
        "config": config,
        "metrics": checkpoint.get("metrics", {}),
        "provenance": checkpoint.get("provenance", {}),
    }
    return vdm.to(device).eval(), metadata


def find_resume_checkpoint(
    run_dir: Path, save_steps: list[int], device: torch.device
) -> tuple[Path | None, dict | None]:
    """The latest checkpoint that loads and holds optimizer state (an exact resume), no
    later than the first scheduled one missing (so a deleted checkpoint is written again).
    Corrupt ones are skipped. Where none holds optimizer state, the latest that loads (its
    config is checked; ``_with_optimizer_state`` then starts from step 0)."""
    stored = stored_steps(run_dir / "checkpoints")
    missing = [step for step in save_steps if step not in stored]
    limit = missing[0] if missing else save_steps[-1]
    readable: tuple[Path | None, dict | None] = (None, None)
    for step in reversed([s for s in stored if s <= limit]):
        path = checkpoint_path(run_dir, step)
        try:
            checkpoint = read_checkpoint(path, device)
        except ConceptspaceError as err:
            reason = err.__cause__ or err
            log.warning(
                "checkpoint %s does not load (%s: %s); skipping it: training resumes from an "
                "earlier checkpoint and writes it again",
                path,
                type(reason).__name__,
                reason,
            )
            continue
        if RESUME_KEY in checkpoint:
            return path, checkpoint
        if readable[1] is None:
            readable = (path, checkpoint)
        log.info("checkpoint %s holds no optimizer state; looking further back", path)
    return readable


# ----------------------------------------------------------------------------- writing


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    config: dict,
    record: dict,
    train_loss: float,
    validation: dict[str, float] | None,
    schedule_ends: dict[str, float],
) -> None:
    """``state``: the run's "model" (state_dict), "optimizer" (state_dict), "rng" and
    "divergence" (the monitor's reference, or None)."""
    metrics = {
        # Mean training loss (bits/dim) over the steps since the previous checkpoint.
        "train_loss": train_loss,
        # ELBO (bits/dim) of the fixed validation subset, fixed noise; None without one.
        "validation_bpd": None if validation is None else validation.get("loss"),
        "validation_terms": validation,
        **schedule_ends,
    }
    path = checkpoint_path(run_dir, step)
    # Sidecar first: a .pt that exists always has its sidecar.
    write_json(
        _sidecar_path(path),
        {"step": step, "metrics": metrics, "config": config, "provenance": record},
    )
    payload = {
        "model": state["model"],
        RESUME_KEY: state[RESUME_KEY],
        "step": step,
        "rng": state["rng"],
        MONITOR_KEY: state.get(MONITOR_KEY),
        "config": config,
        "metrics": metrics,
        "provenance": record,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    _drop_optimizer_before(run_dir, step, keep=2)
    log.info(
        "checkpoint step %d: train loss %.4f, validation %s bits/dim%s -> %s",
        step,
        train_loss,
        "n/a" if metrics["validation_bpd"] is None else f"{metrics['validation_bpd']:.4f}",
        _terms_text(metrics),
        path,
    )


def _terms_text(metrics: Mapping[str, Any]) -> str:
    """The schedule's gamma_0 and the validation ELBO's reconstruction and diffusion terms,
    for the log line of a checkpoint (the checkpoint and its sidecar hold them): whether
    the network has started to learn shows in the diffusion term, and the reconstruction
    term follows gamma_0 alone."""
    terms = metrics.get("validation_terms") or {}
    parts = [f"gamma_0 {metrics['gamma_0']:.4f}"] if "gamma_0" in metrics else []
    parts += [
        f"{name} {terms[name]:.4f}" for name in ("reconstruction", "diffusion") if name in terms
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _drop_optimizer_before(run_dir: Path, step: int, keep: int) -> None:
    """Rewrite the checkpoint ``keep`` checkpoints before ``step`` without its optimizer
    state: a resume reads the latest, or the one before a damaged latest. Atomic: a job
    killed meanwhile leaves it whole, with or without. (Earlier ones went the same way.)"""
    earlier = [s for s in stored_steps(run_dir / "checkpoints") if s < step]
    if len(earlier) < keep:
        return
    path = checkpoint_path(run_dir, earlier[-keep])
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except DAMAGED_TORCH_FILE_ERRORS:
        return  # a resume skips it (find_resume_checkpoint)
    if payload.pop(RESUME_KEY, None) is not None:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)


def _manifest_entry(path: Path) -> dict[str, Any]:
    """A checkpoint's line in the manifest, from its sidecar (or the .pt if that is gone)."""
    try:
        record = read_json(_sidecar_path(path))
        metrics = record["metrics"]
    except (ConceptspaceError, KeyError, TypeError):
        metrics = read_checkpoint(path).get("metrics", {})
    return {
        "step": int(CHECKPOINT_NAME.fullmatch(path.name)[1]),
        "path": str(path),
        "sidecar": str(_sidecar_path(path)),
        "train_loss": metrics.get("train_loss"),
        "validation_bpd": metrics.get("validation_bpd"),
    }


def write_manifest(manifest_path, run_dir, save_steps, config, scheduled, record) -> dict[str, Any]:
    entries = [_manifest_entry(checkpoint_path(run_dir, step)) for step in save_steps]
    final = entries[-1]
    manifest = {
        "run_dir": str(run_dir),
        "checkpoints": [e for e in entries if e["step"] in scheduled],
        "final_checkpoint": final,
        "final_step": final["step"],
        # Mean training loss over the steps since the previous checkpoint (bits/dim).
        "final_train_loss": final["train_loss"],
        "final_validation_bpd": final["validation_bpd"],
        "config": config,
        "provenance": record,
    }
    if manifest_path is not None:  # None: a pack's runs, whose manifests go in the pack's
        write_json(manifest_path, manifest)
        log.info("wrote manifest %s (%d checkpoints)", manifest_path, len(manifest["checkpoints"]))
    return manifest
