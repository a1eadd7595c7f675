"""Runs of one architecture stacked along a leading dim of size K, shared by the pack
trainer (``conceptspace.pack``) and the pack evaluator (``evaluate.evaluate_pack``): when
to map a pack's passes with ``torch.func.vmap``, and K networks evaluated as one for
sampling."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap


def vmap_runs(device: torch.device) -> bool:
    """Whether a pack runs its runs' passes as one vmapped pass: on a GPU, where a step is
    kernel launches; not on a CPU, where it is arithmetic and vmap costs about twice the
    runs' own passes (a pack of 4 of the cpu preset's model, benchmarks/README.md)."""
    return device.type == "cuda"


class StackedNetworks:
    """K runs' networks (one architecture, in eval mode) stacked for sampling: their
    eps_hat for a sampler step in one vmapped call (``vdm.sample_runs``' network), so a
    pack's sampling launches each kernel once for all its runs. Nothing random runs inside
    the networks in eval mode; each run's noise is drawn outside, from its generators."""

    def __init__(self, nets: Sequence[nn.Module]):
        self.template = copy.deepcopy(nets[0]).eval()
        states = [dict(net.named_parameters()) | dict(net.named_buffers()) for net in nets]
        names = list(states[0])
        if any(list(state) != names for state in states):
            raise ValueError("networks of one pack must share their architecture")
        self.params = {name: torch.stack([s[name].detach() for s in states]) for name in names}

    def _one_run(self, params, z, t, embeddings):
        return functional_call(self.template, params, (z, t), {"embeddings": embeddings})

    def __call__(self, z_runs, t_runs, embeddings_runs):
        batches = {len(z) for z in z_runs}
        if len(batches) > 1:
            raise ValueError(f"runs sampled together need one batch size, got {sorted(batches)}")
        embeddings = [torch.stack(block) for block in zip(*embeddings_runs)]
        eps_hat = vmap(self._one_run)(
            self.params, torch.stack(list(z_runs)), torch.stack(list(t_runs)), embeddings
        )
        return list(eps_hat.float().unbind(0))
