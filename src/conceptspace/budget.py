"""Each claim's outcome against the training budget.

A study's runs trained for S steps, cut at an earlier step s, are the runs a budget of s
steps would have trained (``trajectories.truncated_study``: constant learning rate, same
seed). Judging the claims again on the cut studies gives, from one run of a preset, the
outcome every shorter budget would have had: which claims an hour can show, and how much
more training the others need.

    python -m conceptspace claims-budget --configfile config.yaml workflow/presets/cpu.yaml \\
        --signal results/signal/study.nc --steps 1000 1500 2000 2600
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import xarray as xr

from conceptspace.claims import CLAIMS, evaluate_claims, outcome_text
from conceptspace.trajectories import truncated_study

ABSENT = "the study was not run"
KEPT = ("number", "outcome", "value", "interval", "detail")  # of each claim, per budget


def claims_by_budget(
    signal: xr.Dataset,
    claims_cfg: Mapping[str, Any],
    steps: Sequence[int],
    underspecification: xr.Dataset | None = None,
) -> list[dict[str, Any]]:
    """For each budget in ``steps``: {step, claims: {name: {number, outcome, value,
    interval, detail}}}, the claims judged on the studies cut at that step. A study that
    ends before a budget (its own training overlay may be shorter) is judged whole."""
    rows = []
    for step in sorted(steps):
        cut = None if underspecification is None else truncated_study(underspecification, step)
        claims = evaluate_claims(truncated_study(signal, step), claims_cfg, cut, ABSENT)
        outcomes = {name: {key: claim[key] for key in KEPT} for name, claim in claims.items()}
        rows.append({"step": int(step), "claims": outcomes})
    return rows


def budget_table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per budget, one column per claim: 'outcome (value [interval])'."""
    names = list(CLAIMS)
    header = ["training steps"] + [
        f"{rows[0]['claims'][name]['number']} {name}" if rows else name for name in names
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row['step']:,}"]
        for name in names:
            cells.append(outcome_text(row["claims"][name]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
