r"""Top-1 at chosen steps, mean and spread over seeds, for every configuration of a sweep.

  python -m experiments.curve_table --workroot sweeps/cpu --sweep plateau \
      --steps 100,200,400,800 [--out table.md]

Reads WORKROOT/<sweep>/<run>/seed<k>/metrics.jsonl (the layout of
`launch.sweep --seeds`) and prints one markdown row per configuration: the raw
eval top-1 at each step as "mean ± std (min-max)" over the seeds that reached
that step, the final EMA top-1 the same way, and the number of seeds. It is
the table of results/cpu/PROTOCOL.md: how fast each variant leaves chance,
and how much that depends on the seed.
"""

import pathlib
import sys
from typing import Optional, Sequence

import numpy as np

from experiments import collect
from launch import manifest
from mnv2_jax import errors


def _cell(values: Sequence[float]) -> str:
  if not values:
    return '-'
  if len(values) == 1:
    return f'{values[0]:.1f}'
  return (f'{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} '
          f'({min(values):.1f}-{max(values):.1f})')


def curve_rows(sweep_dir: pathlib.Path, steps: Sequence[int]) -> list[dict]:
  """Per configuration directory below `sweep_dir`: top-1 values per step and final EMA."""
  rows = []
  for configuration in sorted(path for path in sweep_dir.iterdir() if path.is_dir()):
    seed_dirs = sorted(path for path in configuration.glob(f'{manifest.SEED_DIR_PREFIX}*')
                       if path.is_dir())
    at_step = {step: [] for step in steps}
    final_ema = []
    for seed_dir in seed_dirs:
      curve = dict(zip(*collect.eval_curve(seed_dir, 'eval_top1')))
      for step in steps:
        if step in curve:
          at_step[step].append(curve[step])
      if (seed_dir / collect.FINAL_METRICS_FILE).exists():
        _, ema_curve = collect.eval_curve(seed_dir, 'eval_ema_top1')
        final_ema.append(ema_curve[-1])
    if seed_dirs:
      rows.append({'configuration': configuration.name, 'top1_at_step': at_step,
                   'final_ema_top1': final_ema, 'seeds': len(seed_dirs)})
  return rows


def markdown(rows: Sequence[dict], steps: Sequence[int]) -> str:
  header = ['configuration', *(f'top-1 @ {step}' for step in steps), 'final EMA top-1', 'seeds']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    cells = [row['configuration'], *(_cell(row['top1_at_step'][step]) for step in steps),
             _cell(row['final_ema_top1']), str(row['seeds'])]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.curve_table',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--workroot', required=True, type=pathlib.Path)
  parser.add_argument('--sweep', required=True)
  parser.add_argument('--steps', default='100,200,400,800')
  parser.add_argument('--out', type=pathlib.Path, help='also write the table to this file')
  args = parser.parse_args(argv)
  try:
    steps = [int(step) for step in args.steps.split(',')]
  except ValueError:
    raise errors.UserError(f'--steps must be comma-separated integers, got {args.steps!r}.')
  sweep_dir = args.workroot / args.sweep
  if not sweep_dir.is_dir():
    raise errors.UserError(f'{sweep_dir} is not a directory; pass the --workroot and --sweep '
                           'that launch.sweep used.')
  table = markdown(curve_rows(sweep_dir, steps), steps)
  print(table, end='')
  if args.out:
    args.out.write_text(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
