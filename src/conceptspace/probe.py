"""The concept classifier that scores generations (docs/study.md "The probe").

One network with a head per concept of its layout (``concepts.Layout``; the 2x2: color
0 red / 1 blue, size 0 large / 1 small): a small U-Net-style encoder (conv stem; per level one residual
block with GroupNorm + GELU, stride-2 downsampling between levels; self-attention at the
lowest resolution), global max-pool, and an MLP head giving logits (B, n_concepts, 2).

It is trained on all classes of the layout, the unseen ones included, pooled over the study's
signal levels: it is an evaluator, not the model under study. Evaluation refuses a
probe whose held-out accuracy is below ``probe.min_accuracy`` (``load_probe``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conceptspace.concepts import (
    COLOR_SIZE,
    CONCEPTS,
    Layout,
    Signal,
    layout_attrs,
    layout_from_attrs,
)
from conceptspace.device import compute_device, resolve_device
from conceptspace.io import (
    DAMAGED_TORCH_FILE_ERRORS,
    ConceptspaceError,
    atomic_path,
    eta,
    provenance,
    write_json,
)
from conceptspace.render import concept_labels, load_dataset, render_probe_set

log = logging.getLogger(__name__)

# Held-out accuracy is measured in batches of this size (memory, not statistics).
_EVAL_BATCH = 512


class _ResidualBlock(nn.Module):
    """GroupNorm -> GELU -> conv, twice, plus a (1x1 if needed) skip connection."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        h = self.conv2(F.gelu(self.norm2(h)))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Residual multi-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + attended.transpose(1, 2).reshape(batch, channels, height, width)


class ProbeNet(nn.Module):
    """Concept classifier: images float [0, 1] (B, 3, S, S) -> logits (B, n_concepts, 2)."""

    def __init__(
        self,
        image_size: int,
        channels: Sequence[int] = (32, 32, 32),
        groups: int = 4,
        attention_heads: int = 4,
        n_concepts: int = len(CONCEPTS),
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        _check_architecture(image_size, channels, groups, attention_heads)
        self.image_size = int(image_size)
        self.n_concepts = int(n_concepts)
        # the heads' names; a loaded probe gets those it was trained with
        self.concepts = tuple(CONCEPTS[: self.n_concepts])

        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.blocks.append(_ResidualBlock(previous, width, groups))
            if level < len(channels) - 1:
                self.downsamples.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
            previous = width
        self.attention = _SelfAttention(previous, groups, attention_heads)
        self.out_norm = nn.GroupNorm(groups, previous)
        self.head = nn.Sequential(
            nn.Linear(previous, previous),
            nn.GELU(),
            nn.Linear(previous, 2 * self.n_concepts),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(2 * images - 1)  # centre the [0, 1] pixels
        for level, block in enumerate(self.blocks):
            x = block(x)
            if level < len(self.downsamples):
                x = self.downsamples[level](x)
        x = F.gelu(self.out_norm(self.attention(x)))
        pooled = x.amax(dim=(2, 3))  # global max-pool: where the object is does not matter
        return self.head(pooled).view(-1, self.n_concepts, 2)


def _check_architecture(
    image_size: int, channels: list[int], groups: int, attention_heads: int
) -> None:
    if not channels:
        raise ConceptspaceError("probe.channels must list at least one level")
    for width in channels:
        if width % groups:
            raise ConceptspaceError(
                f"probe.groups ({groups}) must divide every probe.channels entry ({channels})"
            )
    if channels[-1] % attention_heads:
        raise ConceptspaceError(
            f"probe.attention_heads ({attention_heads}) must divide the last probe.channels "
            f"entry ({channels[-1]})"
        )
    if image_size < 2 ** (len(channels) - 1):
        raise ConceptspaceError(
            f"image_size {image_size} is too small for {len(channels)} probe levels "
            "(each level after the first halves the resolution); use fewer probe.channels"
        )


def _accuracy(
    probe: ProbeNet, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """Fraction of images whose predicted value of each concept is right."""
    correct = torch.zeros(probe.n_concepts, dtype=torch.float64)
    for start in range(0, len(images), _EVAL_BATCH):
        batch = images[start : start + _EVAL_BATCH]
        predicted = predict_proba(probe, batch).argmax(dim=-1).cpu()
        correct += (predicted == labels[start : start + _EVAL_BATCH]).sum(dim=0)
    fraction = correct / max(len(images), 1)
    return {name: float(fraction[i]) for i, name in enumerate(probe.concepts)}


def train_probe(
    data_cfg: Mapping[str, Any],
    probe_cfg: Mapping[str, Any],
    signals: Sequence[Signal],
    seed: int,
    out_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    layout: Layout = COLOR_SIZE,
    dataset_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Render the pooled probe set of ``layout``'s classes, train the probe (a head per
    concept), save it and its metrics. With ``dataset_path`` the probe set is that file
    instead (a prepared CelebA probe set with every class, ``celeba.prepare_celeba(...,
    include_held_out=True)``): its images, its validation split and its layout.

    Writes ``out_path`` (torch checkpoint: state_dict, config, accuracy, provenance) and
    ``metrics_path`` (JSON: held-out accuracy per concept, counts, provenance). Returns
    the metrics. A probe below ``min_accuracy`` is still written (with a warning) so its
    metrics can be read; ``load_probe`` is what refuses it.
    """
    device = compute_device(device, threads)
    torch.manual_seed(seed)  # the probe's initial weights

    arrays, layout, source = _probe_set(data_cfg, probe_cfg, signals, seed, layout, dataset_path)
    data = _ProbeData.split(arrays, layout, device)

    config = {
        "image_size": data.image_size,
        "channels": [int(c) for c in probe_cfg["channels"]],
        "groups": int(probe_cfg["groups"]),
        "attention_heads": int(probe_cfg["attention_heads"]),
        "n_concepts": len(layout.concepts),
    }
    probe = ProbeNet(**config).to(device)
    probe.concepts = layout.concepts
    _fit(probe, data, probe_cfg, seed, device)

    accuracy = _accuracy(probe, data.validation_images, data.validation_labels, device)
    min_accuracy = float(probe_cfg["min_accuracy"])
    _log_accuracy(accuracy, min_accuracy)

    signal_records = [{"color_gap": s.color_gap, "size_gap": s.size_gap} for s in signals]
    record = provenance(_settings(data_cfg, probe_cfg, signal_records, source, layout), seed)
    _save_probe(out_path, probe, config, accuracy, layout, record)
    metrics = {
        "accuracy": accuracy,
        "min_accuracy": min_accuracy,
        "n_train": int(len(data.train_images)),
        "n_validation": int(len(data.validation_images)),
        "steps": int(probe_cfg["steps"]),
        "signals": signal_records,
        "layout": layout.name,
        "provenance": record,
    }
    write_json(metrics_path, metrics)
    return metrics


def _probe_set(
    data_cfg: Mapping[str, Any],
    probe_cfg: Mapping[str, Any],
    signals: Sequence[Signal],
    seed: int,
    layout: Layout,
    dataset_path: str | os.PathLike | None,
) -> tuple[Mapping[str, Any], Layout, dict[str, Any]]:
    """The probe set's arrays, its layout, and where it came from (for the provenance):
    rendered for ``layout``, or read from ``dataset_path`` with the layout it holds."""
    if dataset_path is None:
        rendered = render_probe_set(
            data_cfg,
            signals,
            int(probe_cfg["images_per_class"]),
            seed,
            validation_fraction=float(probe_cfg["validation_fraction"]),
            layout=layout,
        )
        return rendered, layout, {}
    arrays, metadata = load_dataset(dataset_path)
    layout = layout_from_attrs(metadata)
    missing = sorted(set(layout.classes) - {layout.classes[i] for i in set(arrays["label"])})
    if missing:
        raise ConceptspaceError(
            f"probe set {dataset_path} has no images of class(es) {', '.join(missing)}; the "
            "probe must see every class, the unseen ones included: prepare it with "
            "include_held_out (`conceptspace celeba --include-held-out`)"
        )
    source = {"dataset": str(dataset_path), "dataset_provenance": metadata.get("provenance")}
    return arrays, layout, source


@dataclass
class _ProbeData:
    """The probe set split: training images and concept labels on the device, held-out
    ones on the host (they are scored in batches, ``_accuracy``)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    image_size: int

    @classmethod
    def split(cls, arrays: Mapping[str, Any], layout: Layout, device: torch.device) -> _ProbeData:
        held_out = arrays["is_validation"]
        images = torch.from_numpy(arrays["images"])
        labels = torch.from_numpy(concept_labels(arrays["label"], layout))
        train_images, train_labels = images[~held_out], labels[~held_out]
        if len(train_images) == 0:
            raise ConceptspaceError(
                "the probe has no training images; raise probe.images_per_class or lower "
                "probe.validation_fraction"
            )
        return cls(
            train_images=train_images.to(device),
            train_labels=train_labels.to(device),
            validation_images=images[held_out],
            validation_labels=labels[held_out],
            image_size=int(images.shape[-1]),
        )


class _ShuffledBatches:
    """Batch indices from a seeded generator of their own: shuffled epochs without
    replacement (an epoch's tail shorter than a batch is skipped)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.order = torch.randperm(n, generator=self.generator)
        self.cursor = 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        index = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return index


def _fit(
    probe: ProbeNet,
    data: _ProbeData,
    probe_cfg: Mapping[str, Any],
    seed: int,
    device: torch.device,
) -> None:
    """``probe_cfg['steps']`` AdamW steps on the training images, about ten progress lines."""
    steps = int(probe_cfg["steps"])
    batch_size = int(probe_cfg["batch_size"])
    n_train = len(data.train_images)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=float(probe_cfg["lr"]), weight_decay=float(probe_cfg["weight_decay"])
    )
    batches = _ShuffledBatches(n_train, batch_size, seed)
    report_every = max(1, math.ceil(steps / 10))
    log.info(
        "training probe: %d train / %d validation images, %d steps, batch %d, device %s",
        n_train,
        len(data.validation_images),
        steps,
        batch_size,
        device,
    )

    probe.train()
    started = time.perf_counter()
    running_loss, running_count = 0.0, 0
    for step in range(1, steps + 1):
        index = batches.next().to(device)
        loss = _concept_loss(probe, data.train_images[index], data.train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        running_count += 1
        if step % report_every == 0 or step == steps:
            elapsed = time.perf_counter() - started
            log.info(
                "probe step %d/%d loss %.4f (%.1f steps/s, ETA %s)",
                step,
                steps,
                running_loss / running_count,
                step / max(elapsed, 1e-9),
                eta(step, steps, elapsed),
            )
            running_loss, running_count = 0.0, 0


def _concept_loss(probe: ProbeNet, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each concept's head, summed over concepts."""
    logits = probe(images)
    per_concept = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), reduction="none")
    return per_concept.view(-1, probe.n_concepts).mean(dim=0).sum()


def _log_accuracy(accuracy: Mapping[str, float], min_accuracy: float) -> None:
    log.info("probe held-out accuracy: %s", _format_accuracy(accuracy))
    if min(accuracy.values(), default=1.0) < min_accuracy:
        log.warning(
            "probe accuracy is below probe.min_accuracy %.3f; evaluation will refuse it",
            min_accuracy,
        )


def _settings(
    data_cfg: Mapping[str, Any],
    probe_cfg: Mapping[str, Any],
    signal_records: list[dict[str, float]],
    source: Mapping[str, Any],
    layout: Layout,
) -> dict[str, Any]:
    """What the probe's provenance hashes: its settings and where its images came from."""
    settings = {"data": dict(data_cfg), "probe": dict(probe_cfg), "signals": signal_records}
    settings.update(source)
    if layout is not COLOR_SIZE:
        settings["layout"] = layout.name
    return settings


def _save_probe(
    out_path: str | os.PathLike,
    probe: ProbeNet,
    config: Mapping[str, Any],
    accuracy: Mapping[str, float],
    layout: Layout,
    record: Mapping[str, Any],
) -> None:
    checkpoint = {
        "state_dict": {name: t.detach().cpu() for name, t in probe.state_dict().items()},
        "config": config,
        "accuracy": accuracy,
        "concepts": list(layout.concepts),
        **layout_attrs(layout),
        "provenance": record,
    }
    with atomic_path(out_path) as tmp:
        torch.save(checkpoint, tmp)


def _format_accuracy(accuracy: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in accuracy.items())


def load_probe(
    path: str | os.PathLike, min_accuracy: float, device: str | torch.device = "cpu"
) -> ProbeNet:
    """Load a trained probe in eval mode; refuse one below ``min_accuracy`` on any concept."""
    path = Path(path)
    if not path.exists():
        raise ConceptspaceError(f"probe {path} does not exist; run `snakemake` to train it")
    device = resolve_device(device)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        config = checkpoint["config"]
        accuracy = checkpoint["accuracy"]
        probe = ProbeNet(**config)
        probe.load_state_dict(checkpoint["state_dict"])
        probe.concepts = tuple(checkpoint.get("concepts", probe.concepts))
        probe.layout = layout_from_attrs(checkpoint)  # probes before layouts: the 2x2
    except DAMAGED_TORCH_FILE_ERRORS as err:
        raise ConceptspaceError(
            f"probe {path} could not be read ({type(err).__name__}: {err}); it is truncated or "
            "corrupt: delete it and rerun `snakemake` to train it again"
        ) from err
    for concept in probe.concepts:
        value = accuracy.get(concept)
        if value is None or value < min_accuracy:
            shown = "missing" if value is None else f"{value:.4f}"
            raise ConceptspaceError(
                f"probe {path}: held-out accuracy on {concept} is {shown}, below "
                f"probe.min_accuracy {min_accuracy}; a weak probe would misread generations. "
                "Train it longer: raise probe.steps and/or probe.images_per_class in "
                "config.yaml (then rerun `snakemake`), or lower probe.min_accuracy knowingly."
            )
    probe.accuracy = dict(accuracy)
    return probe.to(device).eval()


def predict_proba(probe: ProbeNet, images: torch.Tensor) -> torch.Tensor:
    """Probabilities (B, n_concepts, 2) of each concept's values; no grad, eval mode.

    ``images`` are float in [0, 1], (B, 3, S, S) with S the probe's image size; they
    move to the probe's device.
    """
    expected = (3, probe.image_size, probe.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"the probe takes images (B, {', '.join(map(str, expected))}); got {tuple(images.shape)}"
        )
    was_training = probe.training
    probe.eval()
    device = next(probe.parameters()).device
    with torch.no_grad():
        logits = probe(images.to(device=device, dtype=torch.float32))
    probe.train(was_training)
    return torch.softmax(logits, dim=-1)
