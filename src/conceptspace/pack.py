"""A pack: K runs of one architecture trained in one process as one stacked model.

On a GPU one run of the paper's U-Net is bound by kernel launches, not arithmetic
(benchmarks/README.md): K runs stacked into one model launch each kernel once for all
of them. The stacking is PyTorch's model-ensembling recipe: every parameter is stored
once per run along a leading dim of size K (``torch.func.stack_module_state``'s layout),
and one run's loss, a ``functional_call`` of the ordinary VDM, is mapped over that dim
with ``torch.func.vmap`` (convolutions become grouped ones, linear layers batched
matmuls). A pack of one runs the same function without vmap, so K = 1 computes exactly
what a lone run computes. So does every run of a pack on a CPU, where a step is
arithmetic and vmap only costs (``stacked.vmap_runs``): there the runs' passes go one
after another, each on its slice of the stacked weights.

What keeps a run itself inside a pack:

* Randomness: vmap would draw a random op's numbers from the global generator, and mix
  runs. So no random op runs inside the stacked model: each run's batch indices, times,
  noise and dropout masks are drawn beforehand from its own ``torch.Generator`` (its
  seed, its checkpointed state), in the order and with the calls a lone run makes
  (``draw_batch``). Dropout is ``MaskedDropout``, which multiplies by the mask it is
  given: the mask F.dropout would draw (``empty_like(x).bernoulli_(1 - p) / (1 - p)``),
  from the run's generator. vmap's default randomness mode ("error") refuses any random
  op that slips in.
* Initialisation: each run's weights are its own seeded model's (built alone, then
  stacked), never the ensemble's.
* Optimizer: AdamW is elementwise, so one AdamW over the stacked parameters is K
  independent ones; a run's state is its slice, written in today's per-run format.
* Gradient clipping: by each run's own gradient norm (``clip_per_run``), never by the
  norm over the pack.

The runs' losses are summed for one backward pass: runs share no parameter, so each
run's gradient is that of its own loss.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from conceptspace.vdm import antithetic_times, same_layout

# vmap has no batching rule for the CPU's attention kernel and loops over the runs there
# (the middle block's attention at the lowest resolution, a small part of a step): a cost
# measured in benchmarks/README.md, not a fault worth a warning in every training log.
warnings.filterwarnings(
    "ignore", message=".*batching rule for aten::_scaled_dot_product_flash_attention_for_cpu"
)


class MaskedDropout(nn.Module):
    """Dropout whose mask is given (the non-persistent buffer ``mask``, swapped in by
    ``functional_call``): the pack draws it from the run's own generator. With no mask it
    records the input it would drop (``specs``) and passes it on: the shape pass."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.register_buffer("mask", None, persistent=False)
        self.seen: list[tuple[torch.Size, torch.dtype, torch.memory_format]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            channels_last = x.ndim == 4 and not x.is_contiguous()
            layout = torch.channels_last if channels_last else torch.contiguous_format
            self.seen.append((x.shape, x.dtype, layout))
            return x
        return x * self.mask


class _RunLoss(nn.Module):
    """One run's training loss from its drawn batch: what ``functional_call`` maps."""

    def __init__(self, vdm: nn.Module):
        super().__init__()
        self.vdm = vdm

    def forward(self, x, h, t, eps):
        return self.vdm.loss(x, h, t=t, eps=eps)["loss"]


@dataclass(frozen=True)
class MaskSpec:
    """One dropout module's mask, in the order the forward pass meets it."""

    name: str  # the mask's key for functional_call
    p: float
    shape: torch.Size
    dtype: torch.dtype
    layout: torch.memory_format


@dataclass
class RunBatch:
    """What one run's step reads, drawn from its own generator."""

    x: torch.Tensor
    h: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    masks: dict[str, torch.Tensor]


def draw_batch(
    images: torch.Tensor,
    h: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    masks: Sequence[MaskSpec],
    channels_last: bool,
) -> RunBatch:
    """A run's batch, times, noise and dropout masks, drawn in a lone run's order (batch
    indices, t0, eps, then each dropout's mask in forward order) with the same calls, so
    a run's stream is the same in a pack of any size."""
    device = images.device
    index = torch.randint(len(images), (batch_size,), device=device, generator=generator)
    x, h = images[index], h[index]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = antithetic_times(batch_size, device, generator)
    eps = same_layout(torch.randn(x.shape, device=device, generator=generator), x)
    drawn = {}
    for spec in masks:
        mask = torch.empty(spec.shape, dtype=spec.dtype, device=device, memory_format=spec.layout)
        drawn[spec.name] = mask.bernoulli_(1 - spec.p, generator=generator).div_(1 - spec.p)
    return RunBatch(x, h, t, eps, drawn)


def _stack(tensors: Sequence[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """``torch.stack``, except that under channels_last each run's 4-d slice keeps the
    channels_last strides a lone run's weights have (the same convolution kernels)."""
    first = tensors[0]
    if not (channels_last and first.ndim == 4):
        return torch.stack([t.detach() for t in tensors])
    out, channels = first.shape[0], first.shape[1]
    stacked = torch.empty(
        (len(tensors), out, *first.shape[2:], channels), dtype=first.dtype, device=first.device
    ).permute(0, 1, 4, 2, 3)
    for index, tensor in enumerate(tensors):
        stacked[index].copy_(tensor)
    return stacked


class StackedModel:
    """K runs' weights and AdamW states stacked, and one training step for all of them.

    ``template``: ``loss_template`` of a VDM of the runs' architecture on the device (its
    weights unused), already in its precision and memory format. ``states``: each run's
    state_dict; ``optimizer_states``: each run's AdamW state_dict (today's format), or None
    for runs at step 0. ``vmapped``: the runs' forward passes as one vmapped pass (what a
    GPU wants: each kernel launched once for all runs), else one after another, each on
    its slice of the stacked weights (what a CPU wants: there a step is arithmetic, and
    vmap's grouped convolutions and strided element-wise kernels cost about twice the
    runs' own, benchmarks/README.md); the weights, optimizer and clipping stay stacked.
    """

    def __init__(
        self,
        template: nn.Module,
        states: Sequence[Mapping[str, torch.Tensor]],
        optimizer_states: Sequence[Mapping[str, Any]] | None,
        lr: float,
        weight_decay: float,
        grad_clip: float,
        channels_last: bool,
        vmapped: bool = True,
    ):
        self.loss_module = template
        self.vmapped = vmapped
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.channels_last = channels_last
        self.keys = list(template.vdm.state_dict())
        names = [name for name, p in template.named_parameters() if p.requires_grad]
        if [f"vdm.{key}" for key in self.keys] != names:
            raise ValueError("a packed model's state must be its trainable parameters")
        self.params = {
            f"vdm.{key}": _stack([s[key] for s in states], channels_last).requires_grad_()
            for key in self.keys
        }
        self.size = len(states)
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=lr, weight_decay=weight_decay
        )
        if optimizer_states is not None:
            self.optimizer.load_state_dict(self._stacked_optimizer_state(optimizer_states))

    # --- conversions between the pack and its runs (today's per-run formats)

    def _stacked_optimizer_state(self, states: Sequence[Mapping[str, Any]]) -> dict:
        steps = {float(s["state"][0]["step"]) for s in states if s["state"]}
        if len(steps) > 1:
            raise ValueError(f"runs of one pack stand at different optimizer steps {steps}")
        stacked = {}
        for index in range(len(self.keys)):
            per_run = [s["state"][index] for s in states]
            stacked[index] = {
                "step": per_run[0]["step"],
                **{
                    key: _stack([r[key] for r in per_run], self.channels_last)
                    for key in per_run[0]
                    if key != "step"
                },
            }
        groups = copy.deepcopy(states[0]["param_groups"])
        return {"state": stacked, "param_groups": groups}

    def run_state(self, index: int) -> dict[str, torch.Tensor]:
        """Run ``index``'s state_dict, as a lone run's ``vdm.state_dict()``."""
        return {key: self.params[f"vdm.{key}"][index].detach().clone() for key in self.keys}

    def run_optimizer_state(self, index: int) -> dict[str, Any]:
        """Run ``index``'s AdamW state_dict, as a lone run's ``optimizer.state_dict()``."""
        packed = self.optimizer.state_dict()
        state = {
            i: {k: v.clone() if k == "step" else v[index].clone() for k, v in s.items()}
            for i, s in packed["state"].items()
        }
        return {"state": state, "param_groups": copy.deepcopy(packed["param_groups"])}

    def keep(self, indices: Sequence[int]) -> StackedModel:
        """The pack of the runs ``indices`` only (a diverged run leaves its pack)."""
        return StackedModel(
            self.loss_module,
            [self.run_state(i) for i in indices],
            [self.run_optimizer_state(i) for i in indices],
            self.lr,
            self.weight_decay,
            self.grad_clip,
            self.channels_last,
            self.vmapped,
        )

    # --- the step

    def _one_run(self, params, masks, x, h, t, eps):
        return functional_call(self.loss_module, {**params, **masks}, (x, h, t, eps))

    def losses(self, batches: Sequence[RunBatch]) -> torch.Tensor:
        """Each run's loss (K,): one vmapped forward pass, or (``vmapped`` off, and in a
        pack of one) each run's own pass on its slice of the stack, one after another."""
        if self.size == 1 or not self.vmapped:
            losses = []
            for index, b in enumerate(batches):
                params = {name: p[index] for name, p in self.params.items()}
                losses.append(self._one_run(params, b.masks, b.x, b.h, b.t, b.eps))
            return torch.stack(losses)
        stack = {
            field: torch.stack([getattr(b, field) for b in batches])
            for field in ("x", "h", "t", "eps")
        }
        masks = {name: torch.stack([b.masks[name] for b in batches]) for name in batches[0].masks}
        return vmap(self._one_run)(
            self.params, masks, stack["x"], stack["h"], stack["t"], stack["eps"]
        )

    def step(self, batches: Sequence[RunBatch]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every run: (losses, gradient norms before clipping), each
        (K,) and left on the device."""
        losses = self.losses(batches)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        grads = [p.grad for p in self.params.values()]
        grad_norms = clip_per_run(grads, self.grad_clip, batched=self.vmapped and self.size > 1)
        self.optimizer.step()
        return losses.detach().float(), grad_norms.detach().float()


def clip_per_run(grads: Sequence[torch.Tensor], max_norm: float, batched: bool) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for each run of a stack (dim 0) separately:
    returns the (K,) total norms before clipping. ``batched``: each tensor's K norms in one
    reduction (a GPU's few launches); else each run's norm as clip_grad_norm_ takes it
    (``get_total_norm`` of its slices), so a run sums in the same order as alone."""
    if batched:
        per_tensor = [torch.linalg.vector_norm(g.reshape(len(g), -1), dim=1) for g in grads]
        total = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)
    else:
        runs = len(grads[0])
        total = torch.stack(
            [torch.nn.utils.get_total_norm([g[k] for g in grads]) for k in range(runs)]
        )
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(coefficient.view(-1, *[1] * (grad.ndim - 1)).to(grad.dtype))
    return total


def loss_template(vdm: nn.Module) -> _RunLoss:
    """``vdm`` (a copy) wrapped as one run's loss, with its dropouts made ``MaskedDropout``."""
    vdm = copy.deepcopy(vdm)
    for name, module in list(vdm.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout) and child.p > 0:
                setattr(module, child_name, MaskedDropout(child.p))
    return _RunLoss(vdm).train()


def mask_specs(template: _RunLoss, example: RunBatch) -> list[MaskSpec]:
    """The dropout masks of one run's step, in forward order: one pass with no masks."""
    dropouts = {
        name: module
        for name, module in template.named_modules()
        if isinstance(module, MaskedDropout)
    }
    order: list[str] = []
    for module in dropouts.values():
        module.seen.clear()
    with torch.no_grad():
        handles = [
            module.register_forward_pre_hook(lambda m, args, name=name: order.append(name))
            for name, module in dropouts.items()
        ]
        try:
            # the network alone: the loss around it draws nothing and holds no dropout
            template.vdm.net(example.x, example.t, h=example.h)
        finally:
            for handle in handles:
                handle.remove()
    if len(order) != len(set(order)):
        raise ValueError("a dropout module runs twice in one forward pass; packs need one")
    specs = []
    for name in order:
        shape, dtype, layout = dropouts[name].seen[0]
        specs.append(MaskSpec(f"{name}.mask", dropouts[name].p, shape, dtype, layout))
        dropouts[name].seen.clear()
    return specs
