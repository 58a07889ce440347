r"""The results pages' tables, written from the runs: per configuration, per seed, Figure 5's grid.

  python -m experiments.tables --workroot results/cpu/runs [--out results/cpu/TABLES.md]
      [--metric final_ema_top1]

Reads the runs as `experiments.collect` does and writes one markdown page:
  - the convergence tally: per sweep and over all, how many finished runs
    converged under collect's rule, against the protocol's target
    (CONVERGENCE_TARGET: at least 90% of the runs);
  - per sweep, one row per configuration: seeds, multiply-adds, the metric's
    mean ± standard deviation over seeds with its 95% t-interval, each seed's
    value (marked * where that run did not converge, and where it is
    unfinished: its last evaluation), converged k/n and the
    fraction of runs that left chance;
  - for 'fig5', the width x resolution grid of MobileNetV2 (mean and
    interval per cell) and MobileNetV1's points.
Every table on results/cpu/README.md is copied from this page, so that each
number there comes from a command over the archived runs.
"""

import pathlib
import re
import sys
from typing import Any, Optional, Sequence

from experiments import collect
from mnv2_jax import errors

CONVERGENCE_TARGET = 0.9
"""The protocol asks that at least this fraction of the runs converge (results/cpu/PROTOCOL.md)."""

METRICS = ('final_ema_top1', 'final_top1')
NOT_CONVERGED_MARK = '*'
UNFINISHED_MARK = ' (unfinished)'


def _number(value: Optional[float], digits: int = 2) -> str:
  return '' if value is None else f'{value:.{digits}f}'


def _madds(value: Optional[int]) -> str:
  return '' if value is None else f'{value / 1e6:.2f}M'


def _mean_sd(row: dict[str, Any], metric: str) -> str:
  mean, std = row[f'{metric}_mean'], row[f'{metric}_std']
  if mean is None:
    return ''
  return _number(mean) if std is None else f'{mean:.2f} ± {std:.2f}'


def _interval(row: dict[str, Any], metric: str) -> str:
  low, high = row[f'{metric}_ci95_low'], row[f'{metric}_ci95_high']
  return 'n = 1' if low is None else f'[{low:.2f}, {high:.2f}]'


def _per_seed(runs: Sequence[dict[str, Any]], metric: str) -> str:
  cells = []
  for run in runs:
    if run[metric] is None:
      continue
    mark = NOT_CONVERGED_MARK if run['converged'] is False else ''
    if run['status'] != 'finished':
      mark = UNFINISHED_MARK
    cells.append(f'{run[metric]:.2f}{mark}')
  return ' / '.join(cells)


def convergence_tally(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per sweep and over all ('all'): finished runs, how many converged, and the fraction."""
  by_sweep: dict[str, list[bool]] = {}
  for row in rows:
    if row['status'] == 'finished' and row['converged'] is not None:
      by_sweep.setdefault(row['sweep'], []).append(row['converged'])
  tally = []
  every = []
  for sweep, converged in by_sweep.items():
    every.extend(converged)
    tally.append({'sweep': sweep, 'runs': len(converged), 'converged': sum(converged)})
  tally.append({'sweep': 'all', 'runs': len(every), 'converged': sum(every)})
  for entry in tally:
    entry['fraction'] = entry['converged'] / entry['runs'] if entry['runs'] else None
  return tally


def tally_table(rows: Sequence[dict[str, Any]]) -> list[str]:
  lines = [f'| sweep | finished runs | converged | fraction | target >= {CONVERGENCE_TARGET:.0%} |',
           '|---|---|---|---|---|']
  for entry in convergence_tally(rows):
    fraction = entry['fraction']
    met = '' if fraction is None else ('met' if fraction >= CONVERGENCE_TARGET else 'not met')
    name = '**all**' if entry['sweep'] == 'all' else entry['sweep']
    shown = '' if fraction is None else f'{fraction:.1%}'
    lines.append(f"| {name} | {entry['runs']} | {entry['converged']} | {shown} | {met} |")
  return lines


def configuration_table(rows: Sequence[dict[str, Any]], aggregated: Sequence[dict[str, Any]],
                        metric: str) -> list[str]:
  """One row per configuration of one sweep (rows and aggregated already of that sweep)."""
  runs_of = collect.group_runs(rows)
  lines = [f'| configuration | seeds | MAdds | {metric} mean ± sd | 95% CI | per seed | '
           'converged | learned |',
           '|---|---|---|---|---|---|---|---|']
  for row in aggregated:
    runs = runs_of[row['configuration']]
    known, converged = row['n_convergence_known'], row['n_converged']
    learned = row['learned_fraction']
    lines.append(
        f"| `{row['configuration']}` | {row['seeds']} | {_madds(row['madds'])} | "
        f"{_mean_sd(row, metric)} | {_interval(row, metric)} | {_per_seed(runs, metric)} | "
        f"{converged}/{known} | "
        f"{'' if learned is None else f'{learned:.0%}'} |")
  return lines


def _natural_key(name: str) -> list:
  """'expansion/t10' after 'expansion/t9': digit runs compare as numbers."""
  return [(0, float(part), '') if part.replace('.', '', 1).isdigit() else (1, 0.0, part)
          for part in re.split(r'(\d+(?:\.\d+)?)', name) if part]


def _grid_key(value: Optional[float]) -> float:
  return float('inf') if value is None else value


def figure5_grid(aggregated: Sequence[dict[str, Any]], metric: str) -> list[str]:
  """MobileNetV2's width x resolution grid of means with intervals, then MobileNetV1's points."""
  v2 = [row for row in aggregated if row['model'] == 'mobilenet_v2']
  v1 = [row for row in aggregated if row['model'] != 'mobilenet_v2']
  lines = []
  if v2:
    resolutions = sorted({row['resolution'] for row in v2}, key=_grid_key)
    widths = sorted({row['width_multiplier'] for row in v2}, key=_grid_key)
    cell = {(row['width_multiplier'], row['resolution']): row for row in v2}
    lines += ['| MobileNetV2 width \\ resolution | '
              + ' | '.join(f'{resolution} px' for resolution in resolutions) + ' |',
              '|---|' + '---|' * len(resolutions)]
    for width in widths:
      cells = []
      for resolution in resolutions:
        row = cell.get((width, resolution))
        cells.append('' if row is None else
                     f'{_number(row[f"{metric}_mean"])} {_interval(row, metric)} '
                     f'({_madds(row["madds"])})')
      lines.append(f'| {width} | ' + ' | '.join(cells) + ' |')
  if v1:
    lines += ['', '| MobileNetV1 width | resolution | MAdds | mean | 95% CI | seeds |',
              '|---|---|---|---|---|---|']
    for row in sorted(v1, key=lambda row: _grid_key(row['width_multiplier'])):
      lines.append(f"| {row['width_multiplier']} | {row['resolution']} px | "
                   f"{_madds(row['madds'])} | {_number(row[f'{metric}_mean'])} | "
                   f"{_interval(row, metric)} | {row['seeds']} |")
  return lines


def render(workroot, metric: str = METRICS[0]) -> str:
  """The whole page for the runs below `workroot`."""
  rows = collect.collect(workroot)
  aggregated = collect.aggregate(rows)
  finished = sum(row['status'] == 'finished' for row in rows)
  lines = ['# Tables of the archived runs', '',
           f'Written by `python -m experiments.tables --workroot {workroot}` from {len(rows)} '
           f'runs ({finished} finished). Accuracies in percent: `{metric}`, mean over seeds with '
           'its standard deviation and 95% t-interval; per seed in seed order, '
           f'{NOT_CONVERGED_MARK} marking a run that had not converged (EMA top-1 still gaining '
           f'{collect.CONVERGENCE_GAIN_POINTS:g} points or more over the last '
           f'{collect.CONVERGENCE_WINDOW:.0%} of its steps); "learned": final EMA top-1 at least '
           f'{collect.LEARNED_CHANCE_MULTIPLE:g}x chance.', '',
           '## Convergence', ''] + tally_table(rows)
  for sweep in sorted({row['sweep'] for row in aggregated}):
    sweep_rows = [row for row in rows if row['sweep'] == sweep]
    sweep_aggregated = sorted((row for row in aggregated if row['sweep'] == sweep),
                              key=lambda row: _natural_key(row['configuration']))
    steps = sorted({row['total_steps'] for row in sweep_aggregated if row['total_steps']})
    lines += ['', f'## {sweep}', '',
              f"Steps: {', '.join(str(step) for step in steps)}.", '']
    lines += configuration_table(sweep_rows, sweep_aggregated, metric)
    if sweep == 'fig5':
      lines += ['', 'Grid (mean, 95% CI, MAdds):', ''] + figure5_grid(sweep_aggregated, metric)
  return '\n'.join(lines) + '\n'


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.tables',
                                 description=__doc__.split('\n\n')[0])
  parser.add_argument('--workroot', required=True, help='directory of run workdirs')
  parser.add_argument('--out', help='markdown path (default: WORKROOT/TABLES.md)')
  parser.add_argument('--metric', default=METRICS[0], choices=METRICS,
                      help='the accuracy the tables show (default: %(default)s)')
  args = parser.parse_args(argv)
  try:
    text = render(args.workroot, args.metric)
  except ValueError as error:
    raise errors.UserError(errors.one_line(error)) from error
  out = pathlib.Path(args.out or pathlib.Path(args.workroot) / 'TABLES.md')
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  print(f'tables of {args.workroot} -> {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
