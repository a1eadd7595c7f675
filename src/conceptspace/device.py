"""Where a stage computes: the device and the CPU thread count, for every stage alike."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def compute_device(device: str | torch.device | None, threads: int | None) -> torch.device:
    """Set torch's CPU threads (when given) and resolve ``device``: a stage's set-up."""
    if threads:
        torch.set_num_threads(int(threads))
    return resolve_device(device)
