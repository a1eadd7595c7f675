"""Each claim's decision as a pure function of per-run numbers, and how often it passes
chance.

A claim's judge (``claims.py``) reads a study dataset, reduces it to a few numbers per
run (a learning time, a margin, a lead) grouped by level, and decides. The decision is
here, apart from the dataset, so that the same function that judges a study can be fed
simulated studies: studies with no effect at all (the null), where a judge that passes
more than its level ``alpha`` passes chance, and studies with an effect of the size
measured in this project's runs, where the share that pass is the judge's power.

Why exact tests. With two or three seeds per level, the percentile bootstrap's lower
bound is the most extreme resample: on simulated studies with no effect it passed a
difference of two means in 17.8% of them at two seeds per level, where a 95% interval
should allow 2.5%. Each claim is therefore decided by an exact one-sided test over the
runs at level ``alpha`` (= 1 - claims.confidence), which holds that level at any number
of seeds; the bootstrap interval is still reported beside it, and still decides a fail
(an interval at or below no effect). The price is honest: a design with too few seeds
cannot pass at all (``smallest_p`` above ``alpha``), and the claim says so.

The tests, per claim (the null hypothesis each one rejects):

1. speed: permutation test of Spearman's rho between color gap and the speed of
   learning color (the gap does not matter: every dealing of the runs' speeds to the
   gaps is equally likely). Passes when p <= alpha and rho >= claims.speed.min_spearman.
2. memorization: an intersection-union test. The claim is two claims at once (weak gap
   pulled to 01, strong gap to 10), so each gap's mean margin gets its own sign-flip test
   (margins symmetric about claims.memorization.min_margin), and the claim passes when
   both pass at alpha: that holds alpha whatever the other gap does (a real pull at the
   strong gap must not carry a chance pull at the weak one).
3. hidden: the sign test of d = T(naive) - T(elicited) > 0 over runs (ties dropped), and
   the fraction of runs with d > 0 >= claims.hidden.min_fraction.
4. patching: per run, the checkpoints where patching rescues naive prompting (naive
   below the threshold, patched at or above) against those where it does the reverse;
   the sign test over runs that rescues outnumber reversals (with no effect each is as
   likely: smoothed accuracies that merely jitter around the threshold give both), and
   the fraction of runs with a rescue >= claims.patching.min_fraction.
5. underspecification: permutation test of the delay mean T(largest ratio) - mean
   T(smallest) over the runs of the two ratios (the ratio does not matter), above
   claims.underspecification.min_delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from conceptspace.statistics import (
    mean_ranks,
    permutation_test,
    sign_flip_test,
    sign_test,
    smallest_p,
)


@dataclass(frozen=True)
class Test:
    """A claim's exact test on one study: its statistic, p-value, the smallest p-value
    the design allows, and whether the claim passes (p <= alpha and the estimate meets
    its threshold)."""

    name: str
    value: float
    p_value: float
    smallest_p: float
    passes: bool
    runs_per_level: tuple[int, ...]


Groups = Sequence[np.ndarray]


def speed_test(groups: Groups, cfg: Mapping[str, Any], alpha: float) -> Test:
    """Claim 1. ``groups``: per color gap in increasing order, each run's speed of
    learning color (1/T; 0 for a run that never learned: slowest, tied)."""
    sizes = [len(group) for group in groups]
    label_ranks = mean_ranks(np.repeat(np.arange(len(groups)), sizes))
    label_ranks = label_ranks - label_ranks.mean()
    # Spearman's rho is Pearson's on ranks; dealing the runs anew permutes their ranks.
    speed_ranks = mean_ranks(np.concatenate(groups))

    def rho(dealt: list[np.ndarray]) -> np.ndarray:
        ranks = np.concatenate(dealt, axis=1)
        centred = ranks - ranks.mean(axis=1, keepdims=True)
        norm = np.sqrt((centred**2).sum(axis=1) * (label_ranks**2).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            value = centred @ label_ranks / norm
        return np.where(norm > 0, value, 0.0)  # every run equally fast: no order

    value, p = permutation_test(np.split(speed_ranks, np.cumsum(sizes)[:-1]), rho)
    passes = p <= alpha and value >= float(cfg["min_spearman"])
    smallest = design_smallest_p("speed", sizes)
    return Test("permutation test of rho", value, p, smallest, passes, tuple(sizes))


def memorization_test(groups: Groups, cfg: Mapping[str, Any], alpha: float) -> Test:
    """Claim 2. ``groups``: the margins of the seeds at the weakest and at the strongest
    color gap. The value is the smaller of the two mean margins; p the larger of the two
    sign-flip tests' (intersection-union)."""
    lower = float(cfg["min_margin"])
    tests = [sign_flip_test([group - lower], lambda g: g[0].mean(axis=1)) for group in groups]
    p = max(p for _, p in tests)
    value = min(float(np.mean(group)) for group in groups)
    passes = p <= alpha and value > lower
    sizes = tuple(len(group) for group in groups)
    smallest = design_smallest_p("memorization", sizes)
    return Test("sign-flip test per gap (both must pass)", value, p, smallest, passes, sizes)


def hidden_test(groups: Groups, cfg: Mapping[str, Any], alpha: float) -> Test:
    """Claim 3. ``groups``: per signal level, each run's lead d in steps."""
    d = np.concatenate(groups)
    p = sign_test(d)
    fraction = float(np.mean(d > 0))
    passes = p <= alpha and fraction >= float(cfg["min_fraction"])
    smallest = design_smallest_p("hidden", [int(np.sum(d != 0))])
    sizes = tuple(len(group) for group in groups)
    return Test("sign test of d > 0", float(np.median(d)), p, smallest, passes, sizes)


def patching_test(groups: Groups, cfg: Mapping[str, Any], alpha: float) -> Test:
    """Claim 4. ``groups``: per signal level, an (runs, 2) array of each run's rescued
    and reversed checkpoints. The value is the fraction of runs with a rescue."""
    counts = np.concatenate([np.asarray(group).reshape(-1, 2) for group in groups])
    rescued, reversed_ = counts[:, 0], counts[:, 1]
    p = sign_test(rescued - reversed_)
    fraction = float(np.mean(rescued > 0))
    passes = p <= alpha and fraction >= float(cfg["min_fraction"])
    smallest = design_smallest_p("patching", [int(np.sum(rescued != reversed_))])
    sizes = tuple(len(np.asarray(group).reshape(-1, 2)) for group in groups)
    return Test("sign test of rescues over reversals", fraction, p, smallest, passes, sizes)


def underspecification_test(groups: Groups, cfg: Mapping[str, Any], alpha: float) -> Test:
    """Claim 5. ``groups``: T of the seeds at the smallest and at the largest masking
    ratio (never: one step past the last checkpoint)."""
    lower = float(cfg["min_delay"])

    def delay(dealt: list[np.ndarray]) -> np.ndarray:
        return dealt[1].mean(axis=1) - dealt[0].mean(axis=1)

    value, p = permutation_test(groups, delay)
    passes = p <= alpha and value > lower
    sizes = tuple(len(group) for group in groups)
    smallest = design_smallest_p("underspecification", sizes)
    return Test("permutation test of the delay", value, p, smallest, passes, sizes)


TESTS: dict[str, Callable[[Groups, Mapping[str, Any], float], Test]] = {
    "speed": speed_test,
    "memorization": memorization_test,
    "hidden": hidden_test,
    "patching": patching_test,
    "underspecification": underspecification_test,
}

# ----------------------------------------------------------------------------- simulation
# Studies of S checkpoints' worth of steps; a learning time is a checkpoint step or never.
STEPS = np.array([50, 90, 143, 207, 283, 370, 470, 582, 705, 840, 987, 1146, 1317, 1500])
NEVER = float(STEPS[-1] + 1)
Simulate = Callable[[np.random.Generator, Sequence[int]], list[np.ndarray]]


def _times(rng: np.random.Generator, size: int, never_share: float, centre=None) -> np.ndarray:
    """Learning times: a checkpoint step (around ``centre``, an index into STEPS, or
    uniform), or NEVER with probability ``never_share``."""
    if centre is None:
        index = rng.integers(0, len(STEPS), size)
    else:
        index = np.clip(np.rint(rng.normal(centre, 1.0, size)), 0, len(STEPS) - 1).astype(int)
    return np.where(rng.random(size) < never_share, NEVER, STEPS[index])


def _speeds(times: np.ndarray) -> np.ndarray:
    return np.where(times < NEVER, 1.0 / times, 0.0)


def _margins(rng: np.random.Generator, size: int, pull: float) -> np.ndarray:
    """Margins of seeds whose path approaches a corner (80%; else 0, no approach), the
    expected corner with probability ``pull`` (0.5: chance), at a distance typical of
    the runs (|margin| 0.8 to 1.4)."""
    magnitude = rng.uniform(0.8, 1.4, size) * (rng.random(size) < 0.8)
    return np.where(rng.random(size) < pull, magnitude, -magnitude)


def _leads(rng: np.random.Generator, size: int, earlier: float, later: float) -> np.ndarray:
    """Leads d in steps: > 0 with probability ``earlier``, < 0 with ``later``, else 0."""
    draw = rng.random(size)
    magnitude = rng.choice(np.diff(STEPS), size) * rng.integers(1, 4, size)
    return np.where(draw < earlier, magnitude, np.where(draw < earlier + later, -magnitude, 0.0))


NULL_MODELS: dict[str, Simulate] = {
    # every run's T drawn alike whatever its gap, a third never learned
    "speed": lambda rng, sizes: [_speeds(_times(rng, n, 1 / 3)) for n in sizes],
    # the worst null for an intersection-union test: one gap's pull real, the other's
    # chance (both at chance passes less often)
    "memorization": lambda rng, sizes: [_margins(rng, sizes[0], 0.5), _margins(rng, sizes[1], 1.0)],
    # a lead as likely as a lag; 40% ties
    "hidden": lambda rng, sizes: [_leads(rng, n, 0.3, 0.3) for n in sizes],
    # rescues and reversals drawn alike (a jittering accuracy near the threshold)
    "patching": lambda rng, sizes: [rng.poisson(0.6, (n, 2)) for n in sizes],
    # every run's T drawn alike at both ratios, a third never learned
    "underspecification": lambda rng, sizes: [_times(rng, n, 1 / 3) for n in sizes],
}

# Effects of the size measured in this project's runs (docs/scoring.md says which):
EFFECT_MODELS: dict[str, Simulate] = {
    # color gaps 0.2 / 0.4 / 0.8 of the cpu preset: 0.2 mostly never within 1,500 steps,
    # 0.4 around step 600, 0.8 before 300
    "speed": lambda rng, sizes: [
        _speeds(_times(rng, n, never, centre))
        for n, (never, centre) in zip(sizes, [(0.7, 11), (0.1, 7), (0.0, 3)][-len(sizes) :])
    ],
    # the weak gap pulled to 01 in 3 of 4 seeds, the strong one to 10 in all
    "memorization": lambda rng, sizes: [
        _margins(rng, sizes[0], 0.75),
        _margins(rng, sizes[1], 1.0),
    ],
    # cpu-long's first six signal runs (2026-12-01): 3 of 6 earlier, none later (15 runs
    # since: 9 earlier, none later; the weaker model understates the power)
    "hidden": lambda rng, sizes: [_leads(rng, n, 0.5, 0.0) for n in sizes],
    # the paper's Fig. 5: most runs rescued at a checkpoint or two, few reversals
    "patching": lambda rng, sizes: [
        np.stack([rng.poisson(1.5, n), rng.poisson(0.2, n)], axis=1) for n in sizes
    ],
    # cpu-long's masking: ratio 0 learns at steps 4,353-6,279 of 7,000 in three seeds (here
    # near the 12th of 14 checkpoints, a tenth never: as late as seed 0, later than seeds 1
    # and 2), full masking prevents it
    "underspecification": lambda rng, sizes: [
        _times(rng, sizes[0], 0.1, 11),
        np.full(sizes[1], NEVER),
    ],
}


def pass_rate(
    claim: str,
    sizes: Sequence[int],
    cfg: Mapping[str, Any],
    alpha: float,
    model: str = "null",
    studies: int = 2000,
    seed: int = 0,
) -> float:
    """Share of ``studies`` simulated studies with runs per level ``sizes`` that claim
    ``claim``'s judge passes: the false-pass rate under its null model ("null") or its
    power at the measured effect ("effect"). Seeded: the same arguments, the same rate."""
    models = {"null": NULL_MODELS, "effect": EFFECT_MODELS}[model]
    rng = np.random.default_rng(seed)
    test = TESTS[claim]
    passed = sum(test(models[claim](rng, sizes), cfg, alpha).passes for _ in range(studies))
    return passed / studies


# The levels each claim compares: claim 1 the color gaps of the presets (3), claim 2 the
# weakest and strongest gap, claims 3 and 4 every level of the signal study (3), claim 5
# the smallest and largest masking ratio.
LEVELS = {"speed": 3, "memorization": 2, "hidden": 3, "patching": 3, "underspecification": 2}


def rates_table(
    claims_cfg: Mapping[str, Any], alpha: float, seeds: Sequence[int], studies: int, seed: int = 0
) -> str:
    """A Markdown table: per claim and seeds per level, the smallest p the design allows,
    the false-pass rate (null) and the power at the measured effect."""
    lines = [
        "| claim | seeds per level | levels | smallest p | passes chance | power at the measured effect |",
        "|---|---|---|---|---|---|",
    ]
    for claim, test in TESTS.items():
        for n in seeds:
            sizes = [n] * LEVELS[claim]
            null, effect = (
                pass_rate(claim, sizes, claims_cfg[claim], alpha, model, studies, seed)
                for model in ("null", "effect")
            )
            smallest = design_smallest_p(claim, sizes)
            lines.append(
                f"| {claim} | {n} | {LEVELS[claim]} | {smallest:.3g} | {100 * null:.1f}% | "
                f"{100 * effect:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def design_smallest_p(claim: str, sizes: Sequence[int]) -> float:
    """The smallest p-value claim ``claim``'s test can give on runs per level ``sizes``
    with no tied runs (the sign tests of claims 3 and 4 drop ties: their tests count
    the untied runs)."""
    if claim in ("speed", "underspecification"):
        return smallest_p("permutation", sizes)
    if claim == "memorization":  # each gap's sign-flip test must pass
        return max(smallest_p("sign_flip", [n]) for n in sizes)
    return smallest_p("sign", sizes)


if __name__ == "__main__":  # python -m conceptspace.judges: the table in docs/scoring.md
    import argparse

    from conceptspace.config import load_config

    parser = argparse.ArgumentParser(description=rates_table.__doc__)
    parser.add_argument("--configfile", default="config.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--studies", type=int, default=2000)
    args = parser.parse_args()
    claims_cfg = load_config(args.configfile)["claims"]
    alpha = 1.0 - float(claims_cfg["confidence"])
    print(rates_table(claims_cfg, alpha, args.seeds, args.studies, int(claims_cfg["seed"])))
