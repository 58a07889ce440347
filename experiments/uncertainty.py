"""95% confidence intervals for results over a few seeds.

What a comparison over 3-5 seeds needs, and no more:
  mean_interval      one configuration: mean, standard deviation and the
                     t-interval of its mean over seeds.
  contrast_interval  a weighted sum of configuration means (a difference of
                     two configurations, one minus an interpolation between
                     two others, ...) with its t-interval: paired by seed when
                     the configurations share at least two seeds (seed-to-seed
                     luck cancels), Welch's interval over independent runs
                     otherwise.
  spearman           the rank correlation, ties given their average rank.
  bootstrap_interval a percentile interval of any statistic of resampled
                     items, from a fixed random seed (the same data always give
                     the same interval).
An interval needs two or more values; with one, `low` and `high` are None.
"""

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

CONFIDENCE = 0.95

# Two-sided 95% quantiles of Student's t distribution, t(0.975; df) for df =
# 1..30, as tabulated (to 3 decimals) in the NIST/SEMATECH e-Handbook of
# Statistical Methods, section 1.3.6.7.2 "Critical values of the Student's t
# distribution"; here to 6 decimals. The repository does not depend on scipy.
T_QUANTILES_975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)
NORMAL_QUANTILE_975 = 1.959963984540054

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def t_quantile_975(df: float) -> float:
  """t(0.975; df): the table for df <= 30, the Cornish-Fisher series beyond.

  A fractional df (Welch's) interpolates log t linearly in 1/df between the
  table's neighbours: never below the exact quantile and at most 3% above it
  (at df 1-2), so the interval errs on the wide side. Beyond 30 the expansion
  of Abramowitz and Stegun 26.7.5 (four terms) is within 1e-6 of the exact
  value.
  """
  if not df >= 1:
    raise ValueError(f't-interval needs df >= 1, got {df}.')
  if df <= len(T_QUANTILES_975):
    below, above = math.floor(df), math.ceil(df)
    if below == above:
      return T_QUANTILES_975[below - 1]
    fraction = (1 / below - 1 / df) / (1 / below - 1 / above)
    return math.exp((1 - fraction) * math.log(T_QUANTILES_975[below - 1]) +
                    fraction * math.log(T_QUANTILES_975[above - 1]))
  z = NORMAL_QUANTILE_975
  terms = ((z**3 + z) / 4,
           (5 * z**5 + 16 * z**3 + 3 * z) / 96,
           (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
           (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
  return z + sum(term / df**power for power, term in enumerate(terms, start=1))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean (or a contrast of means) and its 95% interval (None when n = 1)."""
  value: float
  low: Optional[float]
  high: Optional[float]
  n: int  # values behind it: seeds (paired), runs, or resamples' items
  std: Optional[float] = None  # of the values (mean_interval only)
  method: str = ''

  @property
  def has_interval(self) -> bool:
    return self.low is not None and self.high is not None


def mean_interval(values: Sequence[float], method: str = 't-interval') -> Estimate:
  """Mean, sample standard deviation (ddof 1) and the t-interval of the mean."""
  values = np.asarray(values, dtype=float)
  if values.size == 0:
    raise ValueError('mean_interval needs at least one value.')
  mean = float(values.mean())
  if values.size == 1:
    return Estimate(mean, None, None, 1, method='n = 1: no interval')
  std = float(values.std(ddof=1))
  half_width = t_quantile_975(values.size - 1) * std / math.sqrt(values.size)
  return Estimate(mean, mean - half_width, mean + half_width, int(values.size), std, method)


def contrast_interval(terms: Sequence[tuple[float, Mapping[int, float]]]) -> Estimate:
  """sum(weight * mean of values) over `terms` = (weight, {seed: value}), with its interval.

  Paired when the configurations share two or more seeds: the interval is the
  t-interval of the per-seed contrast over the shared seeds (runs of other
  seeds are left out). Otherwise Welch's interval from each configuration's
  own variance, with the Welch-Satterthwaite degrees of freedom; no interval
  when a configuration has a single run.
  """
  terms = [(weight, values) for weight, values in terms if weight != 0 and values]
  if not terms:
    raise ValueError('contrast_interval needs a term with values.')
  shared = set.intersection(*(set(values) for _, values in terms))
  if len(shared) >= 2:
    per_seed = [sum(weight * values[seed] for weight, values in terms) for seed in sorted(shared)]
    return mean_interval(per_seed, method=f'paired by seed ({len(shared)} seeds)')
  estimate = sum(weight * float(np.mean(list(values.values()))) for weight, values in terms)
  sizes = [len(values) for _, values in terms]
  if min(sizes) < 2:
    return Estimate(estimate, None, None, min(sizes), method='n = 1: no interval')
  # Each term's share of the variance of the contrast: weight^2 * s^2 / n.
  shares = [weight**2 * np.var(list(values.values()), ddof=1) / len(values)
            for weight, values in terms]
  variance = float(sum(shares))
  if variance == 0:
    return Estimate(estimate, estimate, estimate, min(sizes), method='Welch (no spread)')
  df = variance**2 / sum(share**2 / (size - 1) for share, size in zip(shares, sizes))
  half_width = t_quantile_975(df) * math.sqrt(variance)
  return Estimate(estimate, estimate - half_width, estimate + half_width, min(sizes),
                  method=f'Welch (df {df:.1f})')


def average_ranks(values: Sequence[float]) -> np.ndarray:
  """Ranks 1..n; tied values share the mean of their ranks."""
  values = np.asarray(values, dtype=float)
  ranks = np.empty(values.size)
  ranks[np.argsort(values, kind='stable')] = np.arange(1, values.size + 1)
  _, tie_group = np.unique(values, return_inverse=True)
  return (np.bincount(tie_group, weights=ranks) / np.bincount(tie_group))[tie_group]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation (Pearson's on average ranks); nan if x or y is constant."""
  x_ranks, y_ranks = average_ranks(x), average_ranks(y)
  if np.ptp(x_ranks) == 0 or np.ptp(y_ranks) == 0:
    return math.nan
  return float(np.corrcoef(x_ranks, y_ranks)[0, 1])


def bootstrap_interval(statistic: Callable[[np.ndarray], float], num_items: int,
                       resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
  """Percentile 95% interval of statistic(indices) over resamples of range(num_items).

  Resamples where the statistic is undefined (nan, e.g. all items alike) are
  left out.
  """
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, num_items, size=(resamples, num_items))
  values = np.array([statistic(indices) for indices in draws])
  values = values[np.isfinite(values)]
  if values.size == 0:
    raise ValueError('the statistic is undefined on every bootstrap resample.')
  tail = 100 * (1 - CONFIDENCE) / 2
  low, high = np.percentile(values, [tail, 100 - tail])
  return float(low), float(high)
