"""The statistics behind the claims, on cases with known answers: the stratified
bootstrap (zero width without spread, strata kept, seeded, coverage near nominal in a
seeded simulation), Spearman with ties, and the one-sided sign test."""

import numpy as np
import pytest

from conceptspace.statistics import (
    bootstrap_interval,
    mean_ranks,
    permutation_test,
    relabellings,
    sign_flip_test,
    sign_test,
    smallest_p,
    spearman,
)


def pooled_mean(groups):
    return float(np.mean(np.concatenate(groups)))


def test_bootstrap_of_a_constant_has_zero_width():
    assert bootstrap_interval([[2.0, 2.0, 2.0], [2.0, 2.0]], pooled_mean) == (2.0, 2.0)


def test_bootstrap_resamples_within_each_group_keeping_its_size():
    groups = [[0.0, 1.0, 0.0], [10.0, 11.0]]

    def design(resampled):
        # members never cross groups, and each group keeps its size
        assert set(resampled[0]) <= {0.0, 1.0} and set(resampled[1]) <= {10.0, 11.0}
        return 10.0 * len(resampled[0]) + len(resampled[1])

    assert bootstrap_interval(groups, design, resamples=200) == (32.0, 32.0)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=6), rng.normal(size=4)]
    first = bootstrap_interval(groups, pooled_mean, seed=3)
    assert bootstrap_interval(groups, pooled_mean, seed=3) == first
    assert bootstrap_interval(groups, pooled_mean, seed=4) != first
    lo, hi = first
    assert lo < pooled_mean(groups) < hi


@pytest.mark.parametrize("confidence, low, high", [(0.95, 0.88, 0.99), (0.5, 0.38, 0.62)])
def test_bootstrap_interval_covers_the_true_mean_near_the_nominal_rate(confidence, low, high):
    # 200 simulated studies of 3 levels x 10 seeds; the pooled mean's true value is the
    # mean of the level means. The percentile interval undercovers a little at n = 30.
    rng = np.random.default_rng(0)
    means = np.array([0.0, 1.0, 5.0])
    covered = 0
    for repeat in range(200):
        groups = [rng.normal(mean, 1.0, size=10) for mean in means]
        lo, hi = bootstrap_interval(groups, pooled_mean, confidence, resamples=400, seed=repeat)
        covered += lo <= means.mean() <= hi
    assert low <= covered / 200 <= high


def test_bootstrap_refuses_what_it_cannot_resample():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([[1.0]], pooled_mean, confidence=1.0)
    with pytest.raises(ValueError, match="each with a member"):
        bootstrap_interval([[1.0], []], pooled_mean)
    with pytest.raises(ValueError, match="not finite on 50 of 50 resamples"):
        bootstrap_interval([[1.0, 2.0]], lambda groups: float("nan"), resamples=50)


def test_mean_ranks_share_ties():
    assert mean_ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert mean_ranks([np.inf, 0.0, np.inf]).tolist() == [2.5, 1.0, 2.5]


def test_spearman_ranks_ties_by_their_mean():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 3], [0, 0, 5]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(spearman([1, 2, 3], [4, 4, 4]))
    with pytest.raises(ValueError, match="pairs"):
        spearman([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    "differences, p_value",
    [
        ([1, 1, 1], 1 / 8),
        ([5, 2, -1], 4 / 8),  # P(X >= 2), X ~ Binomial(3, 1/2)
        ([3, 1, 4, 1, -5], 6 / 32),
        ([0, 0, 2], 1 / 2),  # ties dropped: one positive of one
        ([-1, -2], 1.0),
        ([0, 0], 1.0),
        ([1] * 10, 1 / 1024),
    ],
)
def test_sign_test_exact_values(differences, p_value):
    assert sign_test(differences) == pytest.approx(p_value)


def test_sign_test_refuses_missing_values():
    with pytest.raises(ValueError, match="NaN"):
        sign_test([1.0, np.nan])


def mean_difference(groups):
    return groups[1].mean(axis=1) - groups[0].mean(axis=1)


def test_permutation_test_exact_p_values():
    # 20 dealings of six runs to two groups of three; only the observed one puts the
    # three largest in the second group
    assert permutation_test([[1, 2, 3], [4, 5, 6]], mean_difference) == (3.0, pytest.approx(1 / 20))
    # two groups of two: six dealings, the observed the most extreme
    assert permutation_test([[1, 2], [3, 4]], mean_difference)[1] == pytest.approx(1 / 6)
    # no difference at all: every dealing ties, p = 1
    assert permutation_test([[1, 1], [1, 1]], mean_difference)[1] == 1.0
    # the wrong way round: every dealing is at least as large
    assert permutation_test([[4, 5, 6], [1, 2, 3]], mean_difference)[1] == 1.0
    assert relabellings([2, 2, 2]) == 90 and smallest_p("permutation", [3, 3]) == 1 / 20


def test_permutation_test_draws_at_random_beyond_the_exact_limit_and_is_seeded():
    groups = [np.arange(10.0), np.arange(10.0, 20.0)]  # 184,756 dealings
    value, p = permutation_test(groups, mean_difference, seed=1)
    assert value == 10.0 and p == pytest.approx(1 / 5001)  # (1 + 0 hits) / (1 + draws)
    mixed = [np.arange(0.0, 20.0, 2), np.arange(1.0, 20.0, 2)]
    assert permutation_test(mixed, mean_difference, seed=1) == permutation_test(
        mixed, mean_difference, seed=1
    )
    assert 0.3 < permutation_test(mixed, mean_difference, seed=1)[1] < 0.6


def test_sign_flip_test_exact_p_values():
    mean = lambda groups: groups[0].mean(axis=1)  # noqa: E731
    assert sign_flip_test([[1.0, 2.0, 3.0]], mean) == (2.0, pytest.approx(1 / 8))
    # a zero flips to itself: the same p as without it
    assert sign_flip_test([[1.0, 2.0, 3.0, 0.0]], mean)[1] == pytest.approx(1 / 8)
    # one negative of four: |values| 1, 2, 3, 2 sum to 4 or more with no flip, with 1
    # flipped, or with either 2 flipped: 4 of 16 patterns
    assert sign_flip_test([[1.0, 2.0, 3.0, -2.0]], mean)[1] == pytest.approx(4 / 16)
    assert smallest_p("sign_flip", [5]) == 1 / 32
