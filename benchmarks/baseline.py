"""The baseline the training speed is compared against: conceptspace's own U-Net and VDM
loss (the same architecture, the same arithmetic), trained the way research code commonly
does it: a float32 eager loop fed by a torch DataLoader over the dataset, batches built on
the host and copied to the device every step, the loss read back (``.item()``) every step
for logging, default (NCHW) memory format, no autocast, no compile.

It is a measuring stick, not a training path: it writes nothing.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from conceptspace.render import load_dataset
from conceptspace.checkpoints import build_vdm


class ImageDataset(Dataset):
    """The training split of a rendered dataset, one (image, h) pair per item."""

    def __init__(self, dataset_path):
        arrays, _ = load_dataset(dataset_path)
        train = ~np.asarray(arrays["is_validation"], dtype=bool)
        self.images = arrays["images"][train]
        self.h = arrays["h"][train].astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.images[index]), torch.from_numpy(self.h[index])


def train_baseline(
    model_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    dataset_path,
    steps: int,
    warmup_steps: int,
    device: str | torch.device,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``warmup_steps + steps`` steps; time the last ``steps``.

    Returns seconds, steps, batch_size and the mean loss of the timed steps.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    data = ImageDataset(dataset_path)
    image_size = int(data.images.shape[-1])
    vdm = build_vdm(model_cfg, int(data.h.shape[1]), image_size).to(device)
    optimizer = torch.optim.AdamW(
        vdm.parameters(),
        lr=float(training_cfg["lr"]),
        weight_decay=float(training_cfg["weight_decay"]),
    )
    batch_size = int(training_cfg["batch_size"])
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    losses: list[float] = []
    step, started = 0, None
    vdm.train()
    while step < warmup_steps + steps:
        for x, h in loader:
            if step == warmup_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            x, h = x.to(device), h.to(device)
            loss = vdm.loss(x, h)["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vdm.parameters(), float(training_cfg["grad_clip"]))
            optimizer.step()
            losses.append(loss.item())  # the per-step host sync research code logs with
            step += 1
            if step == warmup_steps + steps:
                break
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "steps": steps,
        "batch_size": batch_size,
        "mean_loss": float(np.mean(losses[warmup_steps:])),
    }
