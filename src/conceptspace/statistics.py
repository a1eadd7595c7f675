"""Small statistics for judging claims over seeds (numpy only, no plotting).

- :func:`bootstrap_interval`: a seeded, stratified percentile bootstrap. The members of
  each group (e.g. the seeds run at one signal level) are resampled with replacement
  within their group, so every resample keeps the design of the study: each level
  with as many runs as it had.
- :func:`spearman`: Spearman's rank correlation, ties given their mean rank.
- :func:`sign_test`: the one-sided sign test (binomial, ties dropped).
- :func:`permutation_test` and :func:`sign_flip_test`: exact one-sided randomization
  tests over the runs. With a handful of seeds per level a percentile bootstrap's bound
  is the most extreme resample, and it passes chance far more often than its nominal
  rate; these tests hold their level at any n, because under the null hypothesis every
  relabelling (or sign pattern) of the runs is equally likely, and their p-value counts
  the relabellings at least as extreme as the observed one. Their smallest p-value is
  1 / (number of relabellings): the design, not the data, says whether a pass is
  possible at all (:func:`smallest_p`).
"""

from __future__ import annotations

import functools
import itertools
from math import comb, factorial, prod
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


# Beyond this many relabellings a test draws MONTE_CARLO of them at random instead.
EXACT_LIMIT = 50_000
MONTE_CARLO = 5_000
# Statistics equal up to rounding count as ties (at least as extreme as the observed).
TIE_TOLERANCE = 1e-9

# A vectorized statistic: one (P, n_g) array per group, P relabellings of the runs, ->
# the P values of the statistic.
Vectorized = Callable[[list[np.ndarray]], np.ndarray]


def _split(pooled: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """(P, N) columns cut into groups of ``sizes`` along axis 1."""
    return np.split(pooled, np.cumsum(sizes)[:-1], axis=1)


def relabellings(sizes: Sequence[int]) -> int:
    """How many ways the pooled runs can be dealt to groups of ``sizes``."""
    return factorial(sum(sizes)) // prod(factorial(size) for size in sizes)


@functools.lru_cache(maxsize=32)
def _assignments(sizes: tuple[int, ...]) -> np.ndarray:
    """Every distinct dealing of runs 0..N-1 to groups of ``sizes``, as (M, N) orders:
    row r lists the runs of group 0, then of group 1, ... (each group's runs sorted)."""
    runs = tuple(range(sum(sizes)))

    def deal(left: tuple[int, ...], rest: Sequence[int]):
        if not rest:
            yield ()
            return
        for chosen in itertools.combinations(left, rest[0]):
            remaining = tuple(run for run in left if run not in chosen)
            for tail in deal(remaining, rest[1:]):
                yield chosen + tail

    return np.array(list(deal(runs, list(sizes))), dtype=int)


def _p_value(observed: float, values: np.ndarray, exact: bool) -> float:
    """Share of relabellings at least as extreme as the observed one; drawn at random,
    (1 + hits) / (1 + draws), which keeps the test's level (the observed labelling is
    one of the equally likely ones)."""
    hits = int(np.sum(values >= observed - TIE_TOLERANCE))
    return hits / len(values) if exact else (1 + hits) / (1 + len(values))


@functools.lru_cache(maxsize=16)
def _sign_patterns(n: int) -> np.ndarray:
    """Every pattern of signs over n runs, as (2^n, n) of +-1."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def _randomization_test(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Vectorized,
    count: Callable[[list[int]], int],
    every: Callable[[np.ndarray, list[int]], np.ndarray],
    draw: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    seed: int,
) -> tuple[float, float]:
    """(statistic, one-sided p) over the relabellings of the pooled runs that the null
    hypothesis makes equally likely: ``every`` (P, N) of them when ``count`` of them is
    at most EXACT_LIMIT, else MONTE_CARLO ``draw``n at random (seeded)."""
    arrays = [np.asarray(group, dtype=float) for group in groups]
    sizes = [len(group) for group in arrays]
    pooled = np.concatenate(arrays)
    observed = float(statistic(_split(pooled[None, :], sizes))[0])
    exact = count(sizes) <= EXACT_LIMIT
    relabelled = every(pooled, sizes) if exact else draw(pooled, np.random.default_rng(seed))
    values = np.asarray(statistic(_split(relabelled, sizes)), dtype=float)
    return observed, _p_value(observed, values, exact)


def permutation_test(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Vectorized,
    seed: int = 0,
) -> tuple[float, float]:
    """(statistic, one-sided p) of the permutation test that large values of
    ``statistic`` are not chance: the runs are dealt to the groups anew, keeping the
    group sizes, every dealing equally likely under the null hypothesis that the group
    does not matter. Exact over all dealings up to EXACT_LIMIT, else MONTE_CARLO random
    ones (seeded)."""
    return _randomization_test(
        groups,
        statistic,
        relabellings,
        lambda pooled, sizes: pooled[_assignments(tuple(sizes))],
        lambda pooled, rng: pooled[np.argsort(rng.random((MONTE_CARLO, len(pooled))), axis=1)],
        seed,
    )


def sign_flip_test(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Vectorized,
    seed: int = 0,
) -> tuple[float, float]:
    """(statistic, one-sided p) of the sign-flip (randomization) test that large values
    of ``statistic`` are not chance, under the null hypothesis that each run's value is
    as likely negative as positive (symmetric about 0): every pattern of signs over the
    runs is equally likely. Exact over all 2^N patterns up to EXACT_LIMIT, else
    MONTE_CARLO random ones (seeded). A value of 0 flips to itself."""
    return _randomization_test(
        groups,
        statistic,
        lambda sizes: 2 ** sum(sizes),
        lambda pooled, sizes: _sign_patterns(len(pooled)) * pooled,
        lambda pooled, rng: rng.choice((1.0, -1.0), size=(MONTE_CARLO, len(pooled))) * pooled,
        seed,
    )


def smallest_p(test: str, sizes: Sequence[int]) -> float:
    """The smallest p-value a test can give on groups of ``sizes``: 1 / the number of
    relabellings ('permutation'), sign patterns ('sign_flip') or, for the sign test,
    1 / 2^N ('sign'). Above the test's level no data can pass it: more seeds can."""
    if test == "permutation":
        return 1.0 / relabellings(sizes)
    if test in ("sign_flip", "sign"):
        return 0.5 ** sum(sizes)
    raise ValueError(f"unknown test {test!r}; use permutation, sign_flip or sign")
