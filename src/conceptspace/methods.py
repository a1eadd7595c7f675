"""The ways of prompting a checkpoint (docs/study.md "Prompting methods").

One evaluation scores several *methods*; each is a named variant with a kind:

- ``naive``: every class prompted with its concept means, h = ``signal.class_h(class)``.
- ``overprompt_<i>`` (kind overprompt): the unseen class only, its color replaced by
  ``evaluation.methods.overprompt.colors[i]`` (pushed past the training values), its
  size slot set to ``overprompt.size`` (the authors' analysis fixes it at 0.3, between
  the small and the large radius; null keeps the class mean).
- ``intervention_<i>`` (kind intervention): the unseen class, prompted naively, with
  the linear latent intervention of ``unet.LinearIntervention`` at alpha =
  ``alphas[i]`` and the configured beta in every block's embedding.
- ``patched_final`` / ``patched_step_XXXXXX`` (kind patched): every class prompted
  naively, the embeddings computed by the donor checkpoint's embedding module (the
  final checkpoint of the run, or a chosen step).

Layouts (``concepts.Layout``): naive prompting and patching prompt every class of the
layout; overprompts (blue colors) apply to its unseen classes whose color is blue (2x2
and color_shape: 11); the latent intervention, whose directions are the 2x2's blue
color and large size slots, applies to the color_size layout and, with directions of
its own (``concepts.Layout.intervention_h``), to one-hot layouts (CelebA); it is absent
from other layouts' evaluations.

Method names, and the order overprompts and alphas appear in the config, are the
contract with the gathered datasets (docs/contracts.md). An empty list switches a
method off; its variants are then absent. This module has no torch dependency: the
config checks run while Snakemake parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from conceptspace.concepts import CLASSES, COLOR_SIZE, Layout

METHOD_KINDS = ("naive", "overprompt", "intervention", "patched")
# Kinds whose variants are summarised by the best variant at each step (gather_run).
BEST_OF_KINDS = ("overprompt", "intervention")
FINAL_DONOR = "final"


@dataclass(frozen=True)
class Method:
    """One prompting variant. ``color`` (overprompt) replaces the prompt's RGB; alpha and
    beta (intervention) scale the latent intervention; ``donor_step`` (patched) names the
    checkpoint whose embedding module computes the embeddings."""

    name: str
    kind: str
    setting: str
    prompts: tuple[str, ...]
    color: tuple[float, float, float] | None = None
    size: float | None = None
    alpha: float = 0.0
    beta: float = 0.0
    donor_step: int | None = None


NAIVE = Method("naive", "naive", "class means", CLASSES)


def donor_name(donor: str | int) -> str:
    """The method name of a patching donor: patched_final or patched_step_XXXXXX."""
    return "patched_final" if str(donor) == FINAL_DONOR else f"patched_step_{int(donor):06d}"


def overprompted_classes(layout: Layout) -> tuple[str, ...]:
    """The unseen classes whose color is blue: those a blue overprompt pushes further
    (none in a layout without color, e.g. CelebA's)."""
    if "color" not in layout.concepts:
        return ()
    color = layout.concepts.index("color")
    return tuple(c for c in layout.unseen_classes if layout.digits(c)[color] == 1)


def has_intervention(layout: Layout) -> bool:
    """The latent intervention is defined for the 2x2 (the config's color and size
    directions) and for one-hot layouts of two concepts (``Layout.intervention_h``)."""
    return layout is COLOR_SIZE or layout.has_one_hot_intervention


def build_methods(
    methods_cfg: Mapping[str, Any], final_step: int, layout: Layout = COLOR_SIZE
) -> list[Method]:
    """Every variant of ``evaluation.methods`` for ``layout``, naive first, in config order.

    ``final_step`` is the run's last checkpoint step (the "final" donor).
    """
    methods = [
        NAIVE if layout is COLOR_SIZE else Method("naive", "naive", "class means", layout.classes)
    ]
    overprompted = overprompted_classes(layout)
    size = methods_cfg["overprompt"].get("size") if "size" in layout.concepts else None
    size = None if size is None else float(size)
    for i, color in enumerate(methods_cfg["overprompt"]["colors"] if overprompted else []):
        rgb = tuple(float(c) for c in color)
        setting = "rgb=(" + ", ".join(f"{c:g}" for c in rgb) + ")"
        setting += "" if size is None else f" size={size:g}"
        methods.append(Method(f"overprompt_{i}", "overprompt", setting, overprompted, rgb, size))
    intervention = methods_cfg["intervention"]
    beta = float(intervention["beta"])
    alphas = intervention["alphas"] if has_intervention(layout) else []
    for i, alpha in enumerate(alphas):
        setting = f"alpha={float(alpha):g} beta={beta:g}"
        methods.append(
            Method(
                f"intervention_{i}",
                "intervention",
                setting,
                layout.unseen_classes,
                alpha=float(alpha),
                beta=beta,
            )
        )
    for donor in methods_cfg["patching"]["donors"]:
        step = int(final_step) if str(donor) == FINAL_DONOR else int(donor)
        label = f"final (step {step})" if str(donor) == FINAL_DONOR else f"step {step}"
        methods.append(
            Method(donor_name(donor), "patched", f"donor={label}", layout.classes, donor_step=step)
        )
    return methods


def sample_sheet_steps(sheet_cfg: Mapping[str, Any], steps: Sequence[int]) -> list[int]:
    return (
        list(steps) if sheet_cfg["steps"] == "all" else sorted(int(s) for s in sheet_cfg["steps"])
    )
