"""The paper's claims about Figures 5 and 6, measured on a workroot's runs.

  python -m experiments.claims --workroot sweeps/cpu --out results/cpu/CLAIMS.md

Writes the report as Markdown (--out) and JSON (the same path, .json). Each
claim of CLAIMS (below) is stated as the paper makes it and in our words,
then measured on the finished runs of its sweep:
  - a comparison of configurations is a difference of mean final top-1 (in
    points) with its 95% t-interval, paired by seed where the configurations
    share two or more seeds (experiments.uncertainty.contrast_interval);
  - the rank correlation of top-1 with multiply-adds comes with a 95%
    percentile bootstrap interval over runs, from a fixed numpy seed.
Each comparison gets a verdict: 'agrees' when its interval lies on the
paper's side of zero, 'disagrees' when it lies on the other side, and
'inconclusive' when it contains zero or there is none (a single seed). The
'nearly identical' expansion ratios are checked against a stated band
(NEARLY_IDENTICAL_POINTS). A claim made of several comparisons disagrees if
any of them does, agrees if all do, and is inconclusive otherwise; every
comparison is printed with its numbers, and each disagreeing one again in the
summary.

The accuracy is PRIMARY_METRIC, the EMA weights' final top-1 (the released
checkpoints' convention); unfinished and failed runs are left out and counted.
"""

import dataclasses
import json
import math
import pathlib
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from configs.sweeps import format_width
from experiments import collect
from experiments import uncertainty
from mnv2_jax import errors

PRIMARY_METRIC = 'final_ema_top1'

NEARLY_IDENTICAL_POINTS = 2.0
"""Expansion ratios t = 5-10 count as 'nearly identical' when each t's mean
top-1 lies within this many points of the mean over t = 5-10: agrees when its
95% interval lies inside +-NEARLY_IDENTICAL_POINTS, disagrees when it lies
wholly outside. The paper gives no number; 2 points is also the gain below
which collect's convergence rule calls a run settled, i.e. the smallest
difference this protocol claims to resolve."""
BAND_RATIOS = (5, 10)  # the paper's 'between 5 and 10', inclusive

AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURED = (
    'agrees', 'disagrees', 'inconclusive', 'not measured')

Groups = dict[str, list[dict[str, Any]]]  # configuration -> its finished runs


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One measured effect: what is compared, its estimate with interval, the verdict."""
  description: str
  estimate: uncertainty.Estimate
  verdict: str
  expected: str  # what the paper's claim says of the effect: '> 0', 'within +-2'
  points_against: bool  # the estimate itself (interval aside) is on the other side


@dataclasses.dataclass
class Finding:
  """What a claim's measurement found: its comparisons and notes on what was left out."""
  comparisons: list[Comparison] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def verdict(self) -> str:
    return combine([comparison.verdict for comparison in self.comparisons])


def combine(verdicts: Sequence[str]) -> str:
  """Disagrees if any part disagrees, agrees if all agree, else inconclusive."""
  if not verdicts:
    return NOT_MEASURED
  if DISAGREES in verdicts:
    return DISAGREES
  return AGREES if all(verdict == AGREES for verdict in verdicts) else INCONCLUSIVE


def positive(description: str, estimate: uncertainty.Estimate) -> Comparison:
  """The paper says the effect is > 0."""
  points_against = estimate.value <= 0
  if not estimate.has_interval or math.isnan(estimate.value):
    verdict = INCONCLUSIVE
  elif estimate.low > 0:
    verdict = AGREES
  elif estimate.high < 0:
    verdict = DISAGREES
  else:
    verdict = INCONCLUSIVE
  return Comparison(description, estimate, verdict, '> 0', points_against)


def within(description: str, estimate: uncertainty.Estimate, band: float) -> Comparison:
  """The paper says the effect is about zero: within +-band."""
  points_against = abs(estimate.value) >= band
  if not estimate.has_interval:
    verdict = INCONCLUSIVE
  elif -band < estimate.low and estimate.high < band:
    verdict = AGREES
  elif estimate.low > band or estimate.high < -band:
    verdict = DISAGREES
  else:
    verdict = INCONCLUSIVE
  return Comparison(description, estimate, verdict, f'within +-{band:g}', points_against)


def by_seed(runs: Sequence[dict[str, Any]]) -> dict[int, float]:
  """{seed: top-1} of a configuration's runs (a run of unknown seed pairs with none)."""
  return {run['seed'] if run['seed'] is not None else -1 - index: run[PRIMARY_METRIC]
          for index, run in enumerate(runs)}


def difference(higher: Sequence[dict], lower: Sequence[dict]) -> uncertainty.Estimate:
  """Mean top-1 of `higher` minus that of `lower`, with its interval."""
  return uncertainty.contrast_interval([(1.0, by_seed(higher)), (-1.0, by_seed(lower))])


def _short(configuration: str) -> str:
  return configuration.split('/', 1)[-1]


def _v2(groups: Groups) -> Groups:
  return {name: runs for name, runs in groups.items() if runs[0]['model'] == 'mobilenet_v2'}


def _steps(groups: Groups, along: str, fixed: str, describe: Callable[[float, float, float], str],
           ) -> Finding:
  """Each adjacent step up in `along` at every value of `fixed` (MobileNetV2 runs)."""
  finding = Finding()
  slices = {}
  for name, runs in _v2(groups).items():
    slices.setdefault(float(runs[0][fixed]), []).append((float(runs[0][along]), name))
  for fixed_value, members in sorted(slices.items()):
    members.sort()
    if len(members) < 2:
      finding.notes.append(f'{_short(members[0][1])}: alone in its slice, nothing to compare.')
    for (low_value, low), (high_value, high) in zip(members, members[1:]):
      finding.comparisons.append(positive(describe(fixed_value, low_value, high_value),
                                          difference(groups[high], groups[low])))
  return finding


def measure_resolution_steps(groups: Groups) -> Finding:
  return _steps(groups, 'resolution', 'width_multiplier',
                lambda width, low, high: f'width {format_width(width)}: {low:g} -> {high:g} px')


def measure_width_steps(groups: Groups) -> Finding:
  return _steps(groups, 'width_multiplier', 'resolution',
                lambda resolution, low, high:
                f'{resolution:g} px: width {format_width(low)} -> {format_width(high)}')


def measure_madds_rank(groups: Groups) -> Finding:
  runs = [run for runs in _v2(groups).values() for run in runs if run.get('madds')]
  madds = np.array([float(run['madds']) for run in runs])
  top1 = np.array([run[PRIMARY_METRIC] for run in runs])
  if len(runs) < 3 or len(set(madds)) < 2:
    return Finding(notes=['needs 3 or more MobileNetV2 runs at 2 or more MAdds.'])
  description = f'Spearman rank correlation of top-1 with MAdds, {len(runs)} runs'
  correlation = uncertainty.spearman(madds, top1)
  if math.isnan(correlation):  # top-1 does not change with MAdds at all: no rise either
    return Finding([positive(description, uncertainty.Estimate(
        correlation, None, None, len(runs),
        method=f'undefined: every run has the same top-1 ({top1[0]:.2f}%)'))])
  low, high = uncertainty.bootstrap_interval(
      lambda indices: uncertainty.spearman(madds[indices], top1[indices]), len(runs))
  estimate = uncertainty.Estimate(
      correlation, low, high, len(runs),
      method=f'bootstrap over runs ({uncertainty.BOOTSTRAP_RESAMPLES} resamples, '
      f'numpy seed {uncertainty.BOOTSTRAP_SEED})')
  return Finding([positive(description, estimate)])


def measure_v2_above_v1(groups: Groups) -> Finding:
  """Each V2 configuration minus V1's curve at its MAdds, linear in log MAdds."""
  finding = Finding()
  v1 = sorted((float(runs[0]['madds']), name) for name, runs in groups.items()
              if runs[0]['model'] == 'mobilenet_v1' and runs[0].get('madds'))
  v2 = sorted((float(runs[0]['madds']), name) for name, runs in _v2(groups).items()
              if runs[0].get('madds'))
  if len(v1) < 2 or not v2:
    finding.notes.append('needs MobileNetV2 runs and 2 or more MobileNetV1 configurations.')
    return finding
  log_madds = np.log([madds for madds, _ in v1])
  outside = []
  for madds, name in v2:
    x = math.log(madds)
    if not log_madds[0] <= x <= log_madds[-1]:
      outside.append(_short(name))
      continue
    upper = int(np.searchsorted(log_madds, x))
    if log_madds[upper] == x:
      terms, between = [(-1.0, by_seed(groups[v1[upper][1]]))], _short(v1[upper][1])
    else:
      lower = upper - 1
      fraction = (x - log_madds[lower]) / (log_madds[upper] - log_madds[lower])
      terms = [(-(1 - fraction), by_seed(groups[v1[lower][1]])),
               (-fraction, by_seed(groups[v1[upper][1]]))]
      between = f'between {_short(v1[lower][1])} and {_short(v1[upper][1])}'
    estimate = uncertainty.contrast_interval([(1.0, by_seed(groups[name])), *terms])
    finding.comparisons.append(positive(
        f'{_short(name)} ({madds / 1e6:.2f}M MAdds) - MobileNetV1 there ({between})', estimate))
  if outside:
    finding.notes.append(
        f'{len(outside)} MobileNetV2 configurations lie outside MobileNetV1\'s MAdds range '
        f'({v1[0][0] / 1e6:.2f}-{v1[-1][0] / 1e6:.2f}M) and are not compared (no '
        f'extrapolation): {", ".join(outside)}.')
  return finding


def _in_order(groups: Groups, field: str, order: Sequence[tuple[str, str]]) -> Finding:
  """Each variant (value, label) of `field` above the next one in `order`."""
  finding = Finding()
  variants = {}
  for name, runs in groups.items():
    variants.setdefault(runs[0][field], []).append(runs)
  for (better, better_label), (worse, worse_label) in zip(order, order[1:]):
    missing = [value for value in (better, worse) if len(variants.get(value, [])) != 1]
    if missing:
      finding.notes.append(f'{better_label} vs {worse_label}: needs exactly one configuration '
                           f'with {field} = {" and ".join(missing)}.')
      continue
    finding.comparisons.append(positive(f'{better_label} - {worse_label}', difference(
        variants[better][0], variants[worse][0])))
  return finding


def measure_linear_bottleneck(groups: Groups) -> Finding:
  return _in_order(groups, 'bottleneck_activation',
                   [('linear', 'linear bottleneck'), ('relu6', 'ReLU6 bottleneck')])


def measure_shortcuts(groups: Groups) -> Finding:
  return _in_order(groups, 'shortcut', [('bottleneck', 'shortcut between bottlenecks'),
                                        ('expansion', 'shortcut between expansions'),
                                        ('none', 'no shortcut')])


def _by_expansion_ratio(groups: Groups) -> tuple[dict[float, list[dict]], list[float], str]:
  """({t: runs}, the t of the band 5-10 that were run, their text: '5-10')."""
  by_ratio = {float(runs[0]['expansion_ratio']): runs for runs in groups.values()
              if runs[0].get('expansion_ratio') is not None}
  band = [t for t in sorted(by_ratio) if BAND_RATIOS[0] <= t <= BAND_RATIOS[1]]
  band_text = f'{band[0]:g}-{band[-1]:g}' if len(band) > 1 else ', '.join(f'{t:g}' for t in band)
  return by_ratio, band, band_text


def measure_expansion_band(groups: Groups) -> Finding:
  finding = Finding()
  by_ratio, band, band_text = _by_expansion_ratio(groups)
  if len(band) < 2:
    finding.notes.append('needs 2 or more expansion ratios between 5 and 10.')
    return finding
  for t in band:
    # t minus the band's mean: weight 1 - 1/|band| on t, -1/|band| on the others.
    estimate = uncertainty.contrast_interval(
        [((1.0 if u == t else 0.0) - 1 / len(band), by_seed(by_ratio[u])) for u in band])
    finding.comparisons.append(within(f't = {t:g} - mean of t = {band_text}', estimate,
                                      NEARLY_IDENTICAL_POINTS))
  means = {t: float(np.mean(list(by_seed(by_ratio[t]).values()))) for t in band}
  lowest, highest = min(means, key=means.get), max(means, key=means.get)
  finding.notes.append(
      f'measured band: mean top-1 of t = {band_text} from {means[lowest]:.1f}% (t = {lowest:g}) to '
      f'{means[highest]:.1f}% (t = {highest:g}), a spread of '
      f'{means[highest] - means[lowest]:.1f} points; "nearly identical" is tested as every t '
      f'within +-{NEARLY_IDENTICAL_POINTS:g} points of the band\'s mean.')
  return finding


def measure_expansion_below_band(groups: Groups) -> Finding:
  finding = Finding()
  by_ratio, band, band_text = _by_expansion_ratio(groups)
  below = [t for t in sorted(by_ratio) if t < BAND_RATIOS[0]]
  if not band or not below:
    finding.notes.append('needs expansion ratios both below 5 and between 5 and 10.')
    return finding
  for t in below:
    estimate = uncertainty.contrast_interval(
        [*((1 / len(band), by_seed(by_ratio[u])) for u in band), (-1.0, by_seed(by_ratio[t]))])
    finding.comparisons.append(positive(f'mean of t = {band_text} - t = {t:g}', estimate))
  return finding


@dataclasses.dataclass(frozen=True)
class Claim:
  number: str
  source: str  # where the paper shows it
  sweep: str
  paper: str  # what the paper reports, in its terms (ImageNet)
  ours: str  # what is measured here
  measure: Callable[[Groups], Finding]


CLAIMS = (
    Claim('1a', 'Figure 5', 'fig5',
          'At every width multiplier, top-1 rises with the input resolution.',
          'At each width, every step up the resolution grid raises the mean top-1.',
          measure_resolution_steps),
    Claim('1b', 'Figure 5', 'fig5',
          'At every input resolution, top-1 rises with the width multiplier.',
          'At each resolution, every step up the width grid raises the mean top-1.',
          measure_width_steps),
    Claim('1c', 'Figure 5', 'fig5',
          'Over the grid of widths and resolutions, more multiply-adds give a higher top-1.',
          'The Spearman rank correlation of top-1 with MAdds over all MobileNetV2 runs is '
          'positive.',
          measure_madds_rank),
    Claim('2', 'Figure 5', 'fig5',
          'MobileNetV2 is more accurate than MobileNetV1 at the same multiply-adds.',
          'Each MobileNetV2 configuration within MobileNetV1\'s MAdds range beats MobileNetV1\'s '
          'curve at its MAdds (interpolated linearly in log MAdds between the neighbouring '
          'MobileNetV1 points).',
          measure_v2_above_v1),
    Claim('3', 'Figure 6a', 'fig6a',
          'A linear bottleneck trains to a higher top-1 than a ReLU6 after the projection.',
          'Final top-1 of the linear bottleneck minus that of the ReLU6 bottleneck is positive.',
          measure_linear_bottleneck),
    Claim('4', 'Figure 6b', 'fig6b',
          'Shortcuts between bottlenecks beat shortcuts between expansions, which beat no '
          'shortcut.',
          'Final top-1: bottleneck shortcut minus expansion shortcut, and expansion shortcut '
          'minus no shortcut, are both positive.',
          measure_shortcuts),
    Claim('5a', 'Expansion ratio (text)', 'expansion',
          'Expansion ratios between 5 and 10 give nearly identical performance.',
          f'Each t = 5-10 lies within +-{NEARLY_IDENTICAL_POINTS:g} points of the mean top-1 '
          'over t = 5-10.',
          measure_expansion_band),
    Claim('5b', 'Expansion ratio (text)', 'expansion',
          'Expansion ratios below 5 do worse than those between 5 and 10.',
          'The mean top-1 over t = 5-10 minus that of each t < 5 is positive.',
          measure_expansion_below_band),
)


def evaluate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Measures every claim on the finished runs of `rows` (experiments.collect rows)."""
  used = [row for row in rows if row['status'] == 'finished' and row[PRIMARY_METRIC] is not None]
  by_sweep = {}
  for row in used:
    by_sweep.setdefault(row['sweep'], []).append(row)
  results = []
  for claim in CLAIMS:
    groups = collect.group_runs(by_sweep.get(claim.sweep, []))
    finding = claim.measure(groups) if groups else Finding(
        notes=[f'no finished runs of sweep {claim.sweep!r}.'])
    results.append((claim, finding))
  return {'runs_used': len(used), 'runs_left_out': len(rows) - len(used),
          'configurations': len(collect.group_runs(used)), 'results': results}


def _signed(value: float, digits: int) -> str:
  return f'{value:+.{digits}f}'


def _effect_text(estimate: uncertainty.Estimate, digits: int) -> tuple[str, str]:
  """('+3.20', '[+1.10, +5.30]') or ('+3.20', 'none')."""
  interval = (f'[{_signed(estimate.low, digits)}, {_signed(estimate.high, digits)}]'
              if estimate.has_interval else 'none')
  return _signed(estimate.value, digits), interval


def _digits(comparison: Comparison) -> int:
  return 3 if comparison.description.startswith('Spearman') else 2


def _tally(finding: Finding) -> str:
  counts = {verdict: sum(c.verdict == verdict for c in finding.comparisons)
            for verdict in (AGREES, DISAGREES, INCONCLUSIVE)}
  if len(finding.comparisons) == 1:
    comparison = finding.comparisons[0]
    value, interval = _effect_text(comparison.estimate, _digits(comparison))
    return f'{value} (95% CI {interval})'
  leaning = sum(c.verdict == INCONCLUSIVE and c.points_against for c in finding.comparisons)
  return (f'{len(finding.comparisons)} comparisons: {counts[AGREES]} agree, '
          f'{counts[DISAGREES]} disagree, {counts[INCONCLUSIVE]} inconclusive'
          + (f' ({leaning} of them with the estimate against the paper)' if leaning else ''))


def render_markdown(report: dict[str, Any], workroot: str) -> str:
  lines = [
      '# The paper\'s claims, measured',
      '',
      f'Written by `python -m experiments.claims --workroot {workroot}`. Runs: '
      f'{report["runs_used"]} finished runs in {report["configurations"]} configurations; '
      f'{report["runs_left_out"]} unfinished or failed runs left out.',
      '',
      f'- Accuracy: `{PRIMARY_METRIC}`, the final top-1 of the EMA weights in percent (the '
      'released checkpoints\' convention). Effects are in percentage points.',
      '- A comparison is a difference of mean top-1 with its 95% t-interval, paired by seed '
      'where the configurations share two or more seeds (Welch\'s interval otherwise); the rank '
      'correlation has a 95% percentile bootstrap interval over runs '
      f'({uncertainty.BOOTSTRAP_RESAMPLES} resamples, numpy seed '
      f'{uncertainty.BOOTSTRAP_SEED}).',
      '- Verdict: agrees / disagrees when the interval lies wholly on the paper\'s / the other '
      'side of zero; inconclusive when it contains zero or there is none (one seed). A claim '
      'of several comparisons disagrees if any does and agrees only if all do.',
      '',
      '## Summary',
      '',
      '| claim | source | the paper | verdict | measured |',
      '|---|---|---|---|---|',
  ]
  for claim, finding in report['results']:
    measured = _tally(finding) if finding.comparisons else '; '.join(finding.notes)
    disagreeing = [c for c in finding.comparisons if c.verdict == DISAGREES]
    if disagreeing and len(finding.comparisons) > 1:
      measured += '; disagreeing: ' + '; '.join(
          f'{c.description} {" ".join(_effect_text(c.estimate, _digits(c)))}'
          for c in disagreeing)
    verdict = finding.verdict
    lines.append(f'| {claim.number} | {claim.source} | {claim.paper} | '
                 f'{f"**{verdict}**" if verdict == DISAGREES else verdict} | {measured} |')
  for claim, finding in report['results']:
    lines += ['', f'## {claim.number}. {claim.source}: {claim.paper}', '',
              f'Measured here: {claim.ours} Sweep `{claim.sweep}`.', '',
              f'Verdict: **{finding.verdict}**.']
    if finding.comparisons:
      lines += ['', '| comparison | the paper | effect | 95% CI | n | interval | verdict |',
                '|---|---|---|---|---|---|---|']
      for comparison in finding.comparisons:
        value, interval = _effect_text(comparison.estimate, _digits(comparison))
        lines.append(f'| {comparison.description} | {comparison.expected} | {value} | '
                     f'{interval} | {comparison.estimate.n} | {comparison.estimate.method} | '
                     f'{comparison.verdict} |')
    if finding.notes:
      lines += [''] + [f'- {note}' for note in finding.notes]
  return '\n'.join(lines) + '\n'


def to_json(report: dict[str, Any], workroot: str) -> dict[str, Any]:
  return {
      'workroot': workroot, 'metric': PRIMARY_METRIC,
      'runs_used': report['runs_used'], 'runs_left_out': report['runs_left_out'],
      'configurations': report['configurations'],
      'bootstrap': {'resamples': uncertainty.BOOTSTRAP_RESAMPLES,
                    'seed': uncertainty.BOOTSTRAP_SEED},
      'nearly_identical_points': NEARLY_IDENTICAL_POINTS,
      'claims': [{
          'number': claim.number, 'source': claim.source, 'sweep': claim.sweep,
          'paper': claim.paper, 'ours': claim.ours, 'verdict': finding.verdict,
          'notes': finding.notes,
          'comparisons': [{
              'description': comparison.description,
              # JSON has no nan: an undefined effect is null.
              'effect': (None if math.isnan(comparison.estimate.value) else
                         comparison.estimate.value),
              'ci95_low': comparison.estimate.low, 'ci95_high': comparison.estimate.high,
              'n': comparison.estimate.n, 'method': comparison.estimate.method,
              'paper': comparison.expected, 'verdict': comparison.verdict} for comparison in finding.comparisons],
      } for claim, finding in report['results']],
  }


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.claims',
                                 description=__doc__.split('\n\n')[0])
  parser.add_argument('--workroot', required=True, help='directory of run workdirs')
  parser.add_argument('--out', help='Markdown report (default: WORKROOT/CLAIMS.md); the JSON '
                      'goes next to it with the same stem')
  args = parser.parse_args(argv)
  try:
    rows = collect.collect(args.workroot)
  except ValueError as error:
    raise errors.UserError(errors.one_line(error)) from error
  report = evaluate(rows)
  if not report['runs_used']:
    print(f'error: no finished runs in {args.workroot}.', file=sys.stderr)
    return 1
  out = pathlib.Path(args.out or pathlib.Path(args.workroot) / 'CLAIMS.md')
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(render_markdown(report, args.workroot))
  json_out = out.with_suffix('.json')
  json_out.write_text(json.dumps(to_json(report, args.workroot), indent=2) + '\n')
  for claim, finding in report['results']:
    print(f'{claim.number:3s} {finding.verdict:13s} {claim.source}: {claim.paper}')
  print(f'-> {out}, {json_out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
