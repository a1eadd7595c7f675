"""Small statistics for judging claims over seeds (numpy only, no plotting).

- :func:`bootstrap_interval`: a seeded, stratified percentile bootstrap. The members of
  each group (e.g. the seeds run at one signal level) are resampled with replacement
  within their group, so every resample keeps the design of the study: each level
  with as many runs as it had.
- :func:`spearman`: Spearman's rank correlation, ties given their mean rank.
- :func:`sign_test`: the one-sided sign test (binomial, ties dropped).
"""

from __future__ import annotations

from math import comb
from typing import Callable, Sequence

import numpy as np


def bootstrap_interval(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[[list[np.ndarray]], float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile interval (lo, hi) of ``statistic`` at ``confidence``.

    ``groups``: one array per stratum, its members along the first axis (each group
    needs at least one). Each of ``resamples`` resamples draws, within every group, as
    many members as it has, with replacement, and calls ``statistic`` on the list of
    resampled groups (in the order given); the interval is the (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles of those values. The same arguments give the same
    interval (numpy's default generator seeded with ``seed``). ``statistic`` must return
    a finite number on every resample: a convention for degenerate resamples (e.g. no
    spread) belongs to the statistic, where its meaning is known.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1; got {resamples}")
    arrays = [np.asarray(group, dtype=float) for group in groups]
    if not arrays or any(len(group) == 0 for group in arrays):
        raise ValueError("bootstrap_interval needs at least one group, each with a member")
    rng = np.random.default_rng(seed)
    # One (resamples, size) index table per group, drawn group by group.
    picks = [group[rng.integers(0, len(group), size=(resamples, len(group)))] for group in arrays]
    values = np.array([statistic([pick[r] for pick in picks]) for r in range(resamples)])
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"the statistic was not finite on {int(np.sum(~np.isfinite(values)))} of "
            f"{resamples} resamples; give it a value for degenerate resamples"
        )
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def mean_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=float)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # Tied values occupy ranks start + 1 ... start + count; their mean is start + (count + 1) / 2.
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts + 1) / 2)[inverse.reshape(-1)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); NaN if either is constant."""
    ranks = [mean_ranks(values) for values in (x, y)]
    if len(ranks[0]) != len(ranks[1]):
        raise ValueError(f"spearman needs pairs; got {len(ranks[0])} x and {len(ranks[1])} y")
    if any(len(r) == 0 or np.ptp(r) == 0 for r in ranks):
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def sign_test(differences: Sequence[float] | np.ndarray) -> float:
    """One-sided sign test that ``differences`` tend to be > 0: the probability of at
    least as many positive signs as observed among the nonzero differences if each
    were positive with probability 1/2 (binomial). Zeros (ties) are dropped; 1 when
    none is left."""
    differences = np.asarray(differences, dtype=float)
    if np.isnan(differences).any():
        raise ValueError("sign_test got a missing (NaN) difference; drop or censor it first")
    nonzero = differences[differences != 0]
    n, positive = len(nonzero), int(np.sum(nonzero > 0))
    return sum(comb(n, k) for k in range(positive, n + 1)) / 2**n
