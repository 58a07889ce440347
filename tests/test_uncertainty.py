"""experiments.uncertainty: t-intervals, contrasts, rank correlation, bootstrap."""

import math

import numpy as np
import pytest

from experiments import uncertainty


def test_t_quantiles_are_the_tabulated_two_sided_95_percent_values():
  assert uncertainty.t_quantile_975(1) == 12.706205
  assert uncertainty.t_quantile_975(2) == 4.302653
  assert uncertainty.t_quantile_975(4) == 2.776445
  assert uncertainty.t_quantile_975(30) == 2.042272
  assert uncertainty.t_quantile_975(10_000) == pytest.approx(1.9602, abs=1e-4)
  with pytest.raises(ValueError, match='df >= 1'):
    uncertainty.t_quantile_975(0)


def test_t_quantiles_match_scipy_where_it_is_installed():
  stats = pytest.importorskip('scipy.stats')
  for df in range(1, 200):
    assert uncertainty.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-5)
  # A fractional df (Welch's) errs on the wide side, by at most 3%.
  for df in np.linspace(1, 40, 391):
    exact = stats.t.ppf(0.975, df)
    assert exact - 1e-6 <= uncertainty.t_quantile_975(df) <= 1.03 * exact


def test_mean_interval_of_three_seeds():
  estimate = uncertainty.mean_interval([50.0, 56.0, 62.0])
  assert (estimate.value, estimate.std, estimate.n) == (56.0, 6.0, 3)
  half_width = 4.302653 * 6.0 / math.sqrt(3)
  assert (estimate.low, estimate.high) == pytest.approx((56 - half_width, 56 + half_width))


def test_one_value_has_no_spread_and_no_interval():
  estimate = uncertainty.mean_interval([42.0])
  assert estimate.value == 42.0 and estimate.std is None and not estimate.has_interval


def test_a_contrast_over_shared_seeds_is_paired():
  # The seeds move both configurations alike; the difference is 2 on every seed.
  estimate = uncertainty.contrast_interval([(1.0, {0: 52.0, 1: 62.0, 2: 72.0}),
                                            (-1.0, {0: 50.0, 1: 60.0, 2: 70.0})])
  assert (estimate.value, estimate.low, estimate.high) == (2.0, 2.0, 2.0)
  assert estimate.method == 'paired by seed (3 seeds)'


def test_a_contrast_without_shared_seeds_is_welchs_interval():
  stats = pytest.importorskip('scipy.stats')
  a, b = [1.0, 2.0, 4.0], [0.0, 0.5, 0.7, 1.2]
  estimate = uncertainty.contrast_interval([(1.0, dict(zip((0, 1, 2), a))),
                                            (-1.0, dict(zip((3, 4, 5, 6), b)))])
  exact = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
  assert estimate.value == pytest.approx(np.mean(a) - np.mean(b))
  assert estimate.method == 'Welch (df 2.3)'
  # Never narrower than the exact interval, and at most 3% wider.
  exact_half_width = (exact.high - exact.low) / 2
  assert exact_half_width <= estimate.high - estimate.value <= 1.03 * exact_half_width


def test_spearman_gives_ties_their_average_rank():
  assert list(uncertainty.average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
  assert uncertainty.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert uncertainty.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # Ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5]: Pearson's r = 7.25 / 9.5.
  assert uncertainty.spearman([1, 2, 2, 3, 5], [3, 1, 4, 4, 5]) == pytest.approx(7.25 / 9.5)
  assert math.isnan(uncertainty.spearman([1, 1, 1], [1, 2, 3]))


def test_the_bootstrap_interval_is_the_same_on_every_call():
  values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
  first = uncertainty.bootstrap_interval(lambda indices: values[indices].mean(), len(values))
  assert first == uncertainty.bootstrap_interval(
      lambda indices: values[indices].mean(), len(values))
  assert first[0] < values.mean() < first[1]
