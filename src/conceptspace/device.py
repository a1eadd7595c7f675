"""Where a stage computes: the device and the CPU thread count, for every stage alike."""

from __future__ import annotations

import os
from typing import Mapping

import torch

from conceptspace.io import ConceptspaceError

# Variables Slurm sets in a job that was allocated GPUs (batch script and job steps): a
# count, then lists of GPU indices.
SLURM_GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


def allocated_gpus(environ: Mapping[str, str] = os.environ) -> str | None:
    """'NAME=value' of the Slurm variable that says this job holds GPUs, or None outside
    a Slurm job or in one without GPUs."""
    if not environ.get("SLURM_JOB_ID"):
        return None
    for name in SLURM_GPU_VARIABLES:
        value = environ.get(name, "").strip()
        none = ("", "(null)") + (("0",) if name == "SLURM_GPUS_ON_NODE" else ())
        if value not in none:
            return f"{name}={value}"
    return None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> CUDA when available, else CPU; but a Slurm job that was given
    a GPU and cannot see one stops here instead of computing for hours on the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        allocated = allocated_gpus()
        if allocated:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise ConceptspaceError(
                f"this Slurm job ({os.environ['SLURM_JOB_ID']}) was given a GPU ({allocated}) "
                f"but torch {torch.__version__} ({build} build) sees no CUDA device, and "
                "compute.device is auto. Check the node's GPU driver and that the job's "
                "environment has a CUDA build of torch; to compute on the CPU anyway, set "
                "compute.device: cpu"
            )
        return torch.device("cpu")
    return torch.device(device)


def compute_device(device: str | torch.device | None, threads: int | None) -> torch.device:
    """Set torch's CPU threads (when given) and resolve ``device``: a stage's set-up."""
    if threads:
        torch.set_num_threads(int(threads))
    return resolve_device(device)
