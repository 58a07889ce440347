"""The paper's Figures 5 and 6 (and the expansion-ratio study) from a workroot; one run's curves.

  python -m experiments.figures --workroot sweeps/cpu [--out DIR] [--metric final_ema_top1]
  python -m experiments.figures --workdir workdirs/default [--out DIR]

With --workdir it draws that run's curves.png (training loss, learning rate,
eval top-1 of the raw and EMA weights by step; `mnv2_jax.run_report`), the
picture the training loop redraws at each evaluation, for any finished or
running workdir: into the workdir, or into --out.

Makes every figure the workroot has data for, as PNG and PDF in --out
(default WORKROOT/figures):
  figure5    sweep 'fig5': top-1 vs multiply-adds (log x), one line per input
             resolution and one per width multiplier, MobileNetV1 points (each
             point the mean over seeds with its 95% t-interval), and
             the released checkpoints' ImageNet numbers
             (package data, mnv2_jax/reference/mobilenet_v2_checkpoints.csv) as a reference:
             overlaid when the runs are on ImageNet, in a side panel otherwise
             (a different dataset and scale share neither axis).
  figure6a   sweep 'fig6a': top-1 vs training step, linear vs ReLU6 bottleneck.
  figure6b   sweep 'fig6b': top-1 vs training step per shortcut placement.
             (6a, 6b: the mean curve over seeds, shaded with its 95% t-interval.)
  expansion  sweep 'expansion': final top-1 vs expansion ratio t with 95%
             t-interval bars, and the mean curve of each t.
A configuration is a run name without its seed (experiments.collect); a point
or curve is the mean over its seeds, and one with a single seed has no bar or
band and says so in the legend ('n = 1'). The top-1 shown is --metric
(default: the EMA weights' final top-1, as the released checkpoints report;
runs without EMA fall back to the raw weights). Unfinished runs are drawn
from their last eval, with hollow red markers.
"""

import pathlib
import sys
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display needed
from matplotlib import cm  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402

from experiments import collect  # noqa: E402
from experiments import uncertainty  # noqa: E402
from mnv2_jax import errors  # noqa: E402
from mnv2_jax import metrics as metrics_lib  # noqa: E402
from mnv2_jax import reference as reference_tables  # noqa: E402
from mnv2_jax import run_report  # noqa: E402

REFERENCE_DIR = reference_tables.DATA_DIR
METRICS = ('final_ema_top1', 'final_top1', 'best_ema_top1', 'best_top1')
FIGURE_FORMATS = ('png', 'pdf')
# Without a creation date, a PDF regenerated from the same runs is the same file (no spurious diff
# in results/); the PNG writer stores no date.
FIGURE_METADATA = {'pdf': {'CreationDate': None}, 'png': {}}

BOTTLENECK_LABELS = {'linear': 'Linear bottleneck', 'relu6': 'ReLU6 in bottleneck'}
SHORTCUT_LABELS = {'bottleneck': 'Shortcut between bottlenecks',
                   'expansion': 'Shortcut between expansions', 'none': 'No residual'}
PAPER_FIGURE5_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)  # 1.3@224 is released but not in the figure
SINGLE_RUN_LABEL = 'n = 1 seed: no error bar'


def metric_value(row: dict[str, Any], metric: str) -> Optional[float]:
  """row[metric], or the raw-weights value when the EMA one is missing."""
  value = row.get(metric)
  if value is None and 'ema_' in metric:
    value = row.get(metric.replace('ema_', ''))
  return value


def curve_key(metric: str) -> str:
  return 'eval_ema_top1' if 'ema_' in metric else 'eval_top1'


def metric_label(metric: str) -> str:
  when, _, what = metric.partition('_')
  weights = 'EMA weights' if 'ema_' in what else 'raw weights'
  return f'{when} top-1 (%, {weights})'


def _float(value) -> Optional[float]:
  return None if value in (None, '') else float(value)


def _width_text(width: float) -> str:
  text = f'{float(width):.4f}'.rstrip('0')
  return text + '0' if text.endswith('.') else text


def configuration_points(rows: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
  """One point per configuration: mean of `metric` over its runs, 95% interval, n.

  Each point keeps its runs ('runs', those with a value) and is 'finished'
  when all of them are.
  """
  points = []
  for runs in collect.group_runs(rows).values():
    runs = [run for run in runs if metric_value(run, metric) is not None]
    if not runs:
      continue
    estimate = uncertainty.mean_interval([metric_value(run, metric) for run in runs])
    points.append({
        'runs': runs, 'value': estimate.value, 'low': estimate.low, 'high': estimate.high,
        'n': estimate.n,
        'status': 'finished' if all(run['status'] == 'finished' for run in runs) else
                  'unfinished'})
  return points


def mean_curve(runs: Sequence[dict[str, Any]], metric: str) -> Optional[dict[str, Any]]:
  """The runs' eval top-1 per step: mean, 95% interval (nan where one run) and n.

  A step's mean is over the runs that reached it (an unfinished seed stops early).
  """
  values_at = {}
  drawn = 0
  for run in runs:
    workdir = pathlib.Path(run['workdir'])
    steps, values = collect.eval_curve(workdir, curve_key(metric))
    if not steps:
      steps, values = collect.eval_curve(workdir, 'eval_top1')
    drawn += bool(steps)
    for step, value in zip(steps, values):
      values_at.setdefault(step, []).append(value)
  if not values_at:
    return None
  steps = sorted(values_at)
  estimates = [uncertainty.mean_interval(values_at[step]) for step in steps]
  return {'steps': steps, 'mean': [estimate.value for estimate in estimates],
          'low': [np.nan if estimate.low is None else estimate.low for estimate in estimates],
          'high': [np.nan if estimate.high is None else estimate.high for estimate in estimates],
          'n': drawn}


def _error_bars(ax, xs: Sequence[float], points: Sequence[dict[str, Any]],
                color) -> list[tuple[float, float]]:
  """95% interval bars of the points that have one; returns (x, y) of single-run points."""
  with_bar = [(x, point) for x, point in zip(xs, points) if point.get('low') is not None]
  if with_bar:
    ax.errorbar([x for x, _ in with_bar], [point['value'] for _, point in with_bar],
                yerr=[[point['value'] - point['low'] for _, point in with_bar],
                      [point['high'] - point['value'] for _, point in with_bar]],
                fmt='none', ecolor=color, elinewidth=1, capsize=3)
  return [(x, point['value']) for x, point in zip(xs, points) if point.get('n') == 1]


def _mark_single_runs(ax, single_runs: Sequence[tuple[float, float]]) -> None:
  """A grey square around each single-seed point, with one legend entry saying why no bar."""
  if single_runs:
    ax.plot(*zip(*single_runs), linestyle='none', marker='s', markersize=11,
            markerfacecolor='none', markeredgecolor='0.5', label=SINGLE_RUN_LABEL)


def _seeds_note(counts: Sequence[int], interval: str = 'bars') -> str:
  """'mean of n = 3 seeds, bars: 95% t-interval', for a title."""
  low, high = min(counts), max(counts)
  if high == 1:
    return 'one seed per point: no interval'
  return (f'mean of n = {low if low == high else f"{low}-{high}"} seeds, '
          f'{interval}: 95% t-interval')


def _describe_scale(rows: Sequence[dict[str, Any]]) -> str:
  """'procedural_shapes, 32-64 px, 300 steps': what a title needs to say."""
  datasets = sorted({str(row['dataset']) for row in rows if row.get('dataset')})
  resolutions = sorted({int(row['resolution']) for row in rows if row.get('resolution')})
  steps = sorted({int(row['total_steps'] or row['step']) for row in rows
                  if row.get('total_steps') or row.get('step')})
  parts = [', '.join(datasets) or 'unknown dataset']
  if resolutions:
    parts.append(f'{resolutions[0]} px' if len(resolutions) == 1 else
                 f'{resolutions[0]}-{resolutions[-1]} px')
  if steps:
    parts.append(f'{steps[0]:,} steps' if len(steps) == 1 else
                 f'{steps[0]:,}-{steps[-1]:,} steps')
  return ', '.join(parts)


def read_reference(reference_dir: pathlib.Path = REFERENCE_DIR) -> dict[str, list[dict]]:
  """The released V2 checkpoints of Figure 5 and the V1 paper's points, as rows.

  Raises reference_tables.ReferenceDataError, naming the file, when a table
  cannot be read: Figure 5 is never drawn without its reference.
  """
  def point(model: str, row: dict[str, Any]) -> dict[str, Any]:
    return {'model': model, 'width_multiplier': row['multiplier'],
            'resolution': row['resolution'], 'madds': row['macs_millions'] * 1e6,
            'value': row['top1'], 'status': 'finished'}

  return {
      'mobilenet_v2': [point('mobilenet_v2', row)
                       for row in reference_tables.checkpoints(reference_dir)
                       if row['multiplier'] in PAPER_FIGURE5_WIDTHS],
      'mobilenet_v1': [point('mobilenet_v1', row)
                       for row in reference_tables.mobilenet_v1(reference_dir)],
  }


def _draw_figure5(ax, v2_points, v1_points, *, reference: bool = False) -> None:
  """One line per resolution (across widths) and per width (across resolutions).

  Points are dicts with width_multiplier, resolution, madds, value (top-1 %) and
  status. `reference` series (overlaid on measured ones) are grey and hollow,
  with labels that start 'ImageNet reference: '.
  """
  prefix = 'ImageNet reference: ' if reference else ''
  single_runs = []
  resolutions = sorted({point['resolution'] for point in v2_points})
  widths = sorted({point['width_multiplier'] for point in v2_points})
  colors = cm.viridis([index / max(1, len(resolutions) - 1) for index in range(len(resolutions))])
  for resolution, color in zip(resolutions, colors):
    points = sorted((p for p in v2_points if p['resolution'] == resolution),
                    key=lambda p: p['madds'])
    ax.plot([p['madds'] / 1e6 for p in points], [p['value'] for p in points],
            marker='o', linestyle='-', color='0.6' if reference else color,
            markerfacecolor='none' if reference else color,
            alpha=0.7 if reference else 1.0,
            label=f'{prefix}MobileNetV2, {resolution} px')
    single_runs += _error_bars(ax, [p['madds'] / 1e6 for p in points], points, color)
    for p in points:  # hollow marker: the run has not finished
      if p['status'] != 'finished':
        ax.plot([p['madds'] / 1e6], [p['value']], marker='o', markersize=10,
                markerfacecolor='none', markeredgecolor='red', linestyle='none')
  width_colors = cm.copper([index / max(1, len(widths) - 1) for index in range(len(widths))])
  for width, color in zip(widths, width_colors):
    points = sorted((p for p in v2_points if p['width_multiplier'] == width),
                    key=lambda p: p['madds'])
    if len(points) < 2:
      continue
    ax.plot([p['madds'] / 1e6 for p in points], [p['value'] for p in points],
            linestyle=':', linewidth=1.2, color='0.6' if reference else color,
            label=f'{prefix}MobileNetV2, width {_width_text(width)}')
  if v1_points:
    points = sorted(v1_points, key=lambda p: p['madds'])
    ax.plot([p['madds'] / 1e6 for p in points], [p['value'] for p in points],
            marker='x', markersize=8, linestyle='none', color='0.4' if reference else 'black',
            label=f'{prefix}MobileNetV1')
    single_runs += _error_bars(ax, [p['madds'] / 1e6 for p in points], points, 'black')
  _mark_single_runs(ax, single_runs)
  ax.set_xscale('log')
  # Plain numbers at 1-2-5 steps read better than powers of ten over 1-2 decades.
  ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f'{value:g}'))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel('multiply-adds (millions, log scale)')
  ax.grid(True, which='both', alpha=0.3)


def _points(rows, model: str, metric: str) -> list[dict[str, Any]]:
  """Figure 5 points of `model`: one per configuration, with MAdds, width and resolution."""
  points = []
  for point in configuration_points([row for row in rows if row['model'] == model], metric):
    row = point['runs'][0]
    if row.get('madds'):
      points.append({**point, 'width_multiplier': float(row['width_multiplier']),
                     'resolution': int(row['resolution']), 'madds': float(row['madds'])})
  return points


def plot_figure5(rows: Sequence[dict[str, Any]], metric: str = 'final_ema_top1',
                 reference: str = 'auto',
                 reference_dir: pathlib.Path = REFERENCE_DIR) -> Optional[Figure]:
  """Figure 5 from the 'fig5' rows; None if they have no accuracy yet.

  reference: 'auto' (overlay on ImageNet runs, side panel otherwise), 'overlay',
  'panel' or 'none'.
  """
  v2_points = _points(rows, 'mobilenet_v2', metric)
  v1_points = _points(rows, 'mobilenet_v1', metric)
  if not v2_points and not v1_points:
    return None
  datasets = {row.get('dataset') for row in rows}
  if reference == 'auto':
    reference = 'overlay' if datasets == {'imagenet2012'} else 'panel'
  reference_rows = read_reference(reference_dir) if reference != 'none' else None
  panel = reference == 'panel'
  figure = Figure(figsize=(15 if panel else 8.5, 6.5), layout='constrained')
  axes = figure.subplots(1, 2) if panel else [figure.subplots()]
  _draw_figure5(axes[0], v2_points, v1_points)
  axes[0].set_ylabel(metric_label(metric))
  axes[0].set_title(f'This repository: {_describe_scale(rows)}\n'
                    f'{_seeds_note([p["n"] for p in v2_points + v1_points])}')
  if reference == 'overlay':
    _draw_figure5(axes[0], reference_rows['mobilenet_v2'], reference_rows['mobilenet_v1'],
                  reference=True)
  elif panel:
    _draw_figure5(axes[1], reference_rows['mobilenet_v2'], reference_rows['mobilenet_v1'])
    axes[1].set_ylabel('top-1 (%, ImageNet val)')
    axes[1].set_title('Reference: released checkpoints and MobileNetV1 paper (ImageNet, '
                      '96-224 px)')
  for ax in axes:
    ax.legend(fontsize=7, ncol=2, loc='lower right')
  figure.suptitle('MobileNetV2 Figure 5: top-1 accuracy vs multiply-adds, '
                  'per resolution and width multiplier')
  return figure


def plot_training_curves(rows: Sequence[dict[str, Any]], title: str, field: str,
                         labels: dict[str, str],
                         metric: str = 'final_ema_top1') -> Optional[Figure]:
  """Top-1 vs training step: per configuration the mean curve over its seeds,
  shaded with its 95% t-interval, labelled `labels[row[field]]` and its n.

  Curves come in the order of `labels` (the paper's legend order).
  """
  order = list(labels)
  groups = sorted(collect.group_runs(rows).items(), key=lambda item: (
      order.index(item[1][0][field]) if item[1][0][field] in order else len(order), item[0]))
  figure = Figure(figsize=(8, 5.5), layout='constrained')
  ax = figure.subplots()
  drawn, counts = [], []
  for configuration, runs in groups:
    curve = mean_curve(runs, metric)
    if curve is None:
      continue
    label = labels.get(runs[0][field], configuration)
    label += f' (n = {curve["n"]})' if curve['n'] > 1 else ' (n = 1, no band)'
    if any(run['status'] != 'finished' for run in runs):
      label += ' (unfinished)'
    [line] = ax.plot(curve['steps'], curve['mean'], marker='.', label=label)
    if curve['n'] > 1:
      ax.fill_between(curve['steps'], curve['low'], curve['high'], color=line.get_color(),
                      alpha=0.2, linewidth=0)
    drawn += runs
    counts.append(curve['n'])
  if not drawn:
    return None
  ax.set_xlabel('training step')
  ax.set_ylabel(f'eval top-1 (%, {"EMA" if "ema_" in metric else "raw"} weights)')
  ax.grid(True, alpha=0.3)
  ax.legend()
  ax.set_title(f'{title}\n{_describe_scale(drawn)}, width '
               f'{", ".join(sorted({_width_text(r["width_multiplier"]) for r in drawn}))}\n'
               f'{_seeds_note(counts, "shaded")}')
  return figure


def plot_expansion(rows: Sequence[dict[str, Any]], metric: str = 'final_ema_top1') -> Optional[Figure]:
  """Final top-1 vs expansion ratio t (mean over seeds, 95% interval bars), and
  the mean training curve of each t."""
  points = configuration_points(
      [row for row in rows if row.get('expansion_ratio') is not None], metric)
  if not points:
    return None
  points.sort(key=lambda point: float(point['runs'][0]['expansion_ratio']))
  ratios = [float(point['runs'][0]['expansion_ratio']) for point in points]
  figure = Figure(figsize=(14, 5.5), layout='constrained')
  final_ax, curves_ax = figure.subplots(1, 2)
  [line] = final_ax.plot(ratios, [point['value'] for point in points], marker='o',
                         label='MobileNetV2')
  _mark_single_runs(final_ax, _error_bars(final_ax, ratios, points, line.get_color()))
  unfinished = [(t, point['value']) for t, point in zip(ratios, points)
                if point['status'] != 'finished']
  if unfinished:
    final_ax.plot(*zip(*unfinished), marker='o', markersize=10, markerfacecolor='none',
                  markeredgecolor='red', linestyle='none', label='unfinished (last eval)')
  final_ax.set_xlabel('expansion ratio t')
  final_ax.set_ylabel(metric_label(metric))
  final_ax.set_xticks(ratios)
  final_ax.grid(True, alpha=0.3)
  final_ax.legend()
  final_ax.set_title(f'final accuracy per expansion ratio\n'
                     f'{_seeds_note([point["n"] for point in points])}')
  colors = cm.viridis([index / max(1, len(points) - 1) for index in range(len(points))])
  for t, point, color in zip(ratios, points, colors):
    curve = mean_curve(point['runs'], metric)
    if curve is not None:
      curves_ax.plot(curve['steps'], curve['mean'], color=color, label=f't = {t:g}')
  curves_ax.set_xlabel('training step')
  curves_ax.set_ylabel('eval top-1 (%)')
  curves_ax.grid(True, alpha=0.3)
  curves_ax.legend(fontsize=8, ncol=2)
  curves_ax.set_title('training curves (mean over seeds)')
  runs = [run for point in points for run in point['runs']]
  widths = sorted({_width_text(run['width_multiplier']) for run in runs})
  figure.suptitle(f'MobileNetV2 expansion ratio study: {_describe_scale(runs)}, '
                  f'width {", ".join(widths)}')
  return figure


def make_figures(rows: Sequence[dict[str, Any]], metric: str = 'final_ema_top1',
                 reference: str = 'auto',
                 reference_dir: pathlib.Path = REFERENCE_DIR) -> dict[str, Figure]:
  """Every figure that `rows` (from experiments.collect) have data for, by name."""
  if metric not in METRICS:
    raise ValueError(f'--metric must be one of {list(METRICS)}, got {metric!r}.')
  by_sweep = {}
  for row in rows:
    by_sweep.setdefault(row['sweep'], []).append(row)
  figures = {
      'figure5': plot_figure5(by_sweep.get('fig5', []), metric, reference, reference_dir),
      'figure6a': plot_training_curves(
          by_sweep.get('fig6a', []),
          'MobileNetV2 Figure 6a: impact of the non-linearity in the bottleneck',
          'bottleneck_activation', BOTTLENECK_LABELS, metric),
      'figure6b': plot_training_curves(
          by_sweep.get('fig6b', []), 'MobileNetV2 Figure 6b: impact of the residual connection',
          'shortcut', SHORTCUT_LABELS, metric),
      'expansion': plot_expansion(by_sweep.get('expansion', []), metric),
  }
  return {name: figure for name, figure in figures.items() if figure is not None}


def save_figures(figures: dict[str, Figure], out_dir) -> list[pathlib.Path]:
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, figure in figures.items():
    for extension in FIGURE_FORMATS:
      path = out_dir / f'{name}.{extension}'
      figure.savefig(path, dpi=150, metadata=FIGURE_METADATA[extension])
      paths.append(path)
  return paths


def draw_run_curves(workdir: str, out_dir: Optional[str] = None) -> Optional[pathlib.Path]:
  """curves.png of one run's workdir, into the workdir or `out_dir`; None if nothing is logged.

  Raises ValueError (one line) for a path that is not a run's workdir.
  """
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise ValueError(f'--workdir {workdir} is not a directory; pass the --workdir of a '
                     f'python -m mnv2_jax.main run.')
  if not (workdir / metrics_lib.METRICS_FILE).exists():
    raise ValueError(f'--workdir {workdir} has no {metrics_lib.METRICS_FILE}: it is not the '
                     f'workdir of a python -m mnv2_jax.main run, or that run has not logged '
                     f'its first step yet.')
  out_path = None
  if out_dir is not None:
    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    out_path = str(pathlib.Path(out_dir) / run_report.CURVES_FILE)
  path = run_report.write_curves(str(workdir), out_path)
  return None if path is None else pathlib.Path(path)


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.figures',
                                 description=__doc__.split('\n\n')[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workroot', help='directory of run workdirs (sweeps): the paper\'s '
                      'figures')
  source.add_argument('--workdir', help='one run\'s workdir: its curves.png')
  parser.add_argument('--out', help='output directory (default: WORKROOT/figures, or the '
                      'workdir itself with --workdir)')
  parser.add_argument('--metric', choices=METRICS, default='final_ema_top1')
  parser.add_argument('--reference', choices=('auto', 'overlay', 'panel', 'none'),
                      default='auto', help='official ImageNet numbers on Figure 5')
  parser.add_argument('--reference-dir', type=pathlib.Path, default=REFERENCE_DIR)
  args = parser.parse_args(argv)
  if args.workdir is not None:
    with errors.user_input():
      path = draw_run_curves(args.workdir, args.out)
    if path is None:
      print(f'nothing logged yet in {args.workdir}/{metrics_lib.METRICS_FILE}; try again '
            f'after the run\'s first logged step.')
      return 1
    print(path)
    return 0
  try:
    rows = collect.collect(args.workroot)
    figures = make_figures(rows, args.metric, args.reference, args.reference_dir)
  except ValueError as error:
    raise errors.UserError(errors.one_line(error)) from error
  if not figures:
    print(f'no figure data in {args.workroot} (sweeps fig5, fig6a, fig6b, expansion).')
    return 1
  for path in save_figures(figures, args.out or pathlib.Path(args.workroot) / 'figures'):
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
