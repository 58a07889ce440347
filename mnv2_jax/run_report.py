"""What a run shows a person: the summary block at its end and WORKDIR/curves.png.

`summary_text(final_metrics, workdir)` is the block `mnv2_jax.main` prints
when a run ends: final and best accuracies, wall time, throughput, model size
and cost, and where the run's files are. Every number is read from
final_metrics.json's dict, so the block and the file never disagree.

`write_curves(workdir)` draws WORKDIR/curves.png from metrics.jsonl: the
training loss, the learning rate and the eval top-1 of the raw and the EMA
weights against the step. The training loop redraws it after each evaluation
(process 0); `python -m experiments.figures --workdir W` draws it for any
finished or running workdir.
"""

import os
from typing import Any, Mapping, Optional, Sequence

from mnv2_jax import metrics as metrics_lib

CURVES_FILE = 'curves.png'
# Small and quick to draw: the loop redraws it at every evaluation.
CURVES_SIZE_INCHES = (13, 3.8)
CURVES_DPI = 100


def _percent(value: Any) -> str:
  value = metrics_lib.finite_number(value)
  return '-' if value is None else f'{100 * value:.2f}%'


def _duration(seconds: float) -> str:
  """'2 h 03 min', '2 min 15 s' or '45 s'."""
  seconds = round(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f'{hours} h {minutes:02d} min'
  return f'{minutes} min {seconds} s' if minutes else f'{seconds} s'


def _count(value: Any, unit: str) -> str:
  return '-' if value is None else f'{int(value):,} {unit}'


def summary_text(final: Mapping[str, Any], workdir: str,
                 run_info: Optional[Mapping[str, Any]] = None) -> str:
  """The end-of-run summary: the numbers of `final` (final_metrics.json), labelled.

  run_info (run_info.json) adds the model's name, width and resolution. Keys
  that an older final_metrics.json lacks show as '-'.
  """
  run_info = run_info or {}
  wall = metrics_lib.finite_number(final.get('wall_time_seconds'))
  rate = metrics_lib.finite_number(final.get('mean_images_per_second'))
  timing = '-' if wall is None else f'{wall:.1f} s'
  if wall is not None and wall >= 60:
    timing += f' ({_duration(wall)})'
  if rate is not None:
    timing += f', {rate:.1f} images/s while training'

  def best(key: str) -> str:
    step = final.get(f'{key}_step')
    return _percent(final.get(key)) + ('' if step is None else f' at step {step}')

  model = ''
  if run_info.get('model'):
    model = (f'{run_info["model"]} width {run_info.get("width_multiplier")} at '
             f'{run_info.get("resolution")} px: ')
  tensorboard = os.path.join(workdir, metrics_lib.TENSORBOARD_DIR)
  lines = [
      f'Run finished at step {final.get("step")}: {timing}',
      f'  final top-1 / top-5   raw {_percent(final.get("eval_top1"))} / '
      f'{_percent(final.get("eval_top5"))}   EMA {_percent(final.get("eval_ema_top1"))} / '
      f'{_percent(final.get("eval_ema_top5"))}',
      f'  best top-1            raw {best("best_eval_top1")}   EMA {best("best_eval_ema_top1")}',
      f'  model                 {model}{_count(final.get("params"), "parameters")}, '
      f'{_count(final.get("madds"), "multiply-adds")}',
      f'  workdir               {workdir}',
      f'                        final_metrics.json, metrics.jsonl, {CURVES_FILE}, '
      f'checkpoints/, {metrics_lib.TENSORBOARD_DIR}/',
      f'Open the curves: tensorboard --logdir {tensorboard}  (or {CURVES_FILE} in the workdir)',
  ]
  return '\n'.join(lines)


def _series(records: Sequence[Mapping[str, Any]], key: str,
            scale: float = 1.0) -> tuple[list[int], list[float]]:
  """(steps, values) of the records with a finite `key`, by step (a resumed step once)."""
  points = {}
  for record in records:
    value = metrics_lib.finite_number(record.get(key))
    if value is not None and 'step' in record:
      points[int(record['step'])] = scale * value
  steps = sorted(points)
  return steps, [points[step] for step in steps]


def curves_figure(records: Sequence[Mapping[str, Any]], title: str = ''):
  """Training loss, learning rate and eval top-1 (raw and EMA) against the step."""
  # A bare Figure draws with the Agg canvas: no display, and pyplot's global
  # backend is left alone for whoever imported it.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  figure = Figure(figsize=CURVES_SIZE_INCHES, layout='constrained')
  loss_ax, learning_rate_ax, top1_ax = figure.subplots(1, 3)
  loss_ax.plot(*_series(records, 'train_loss'), color='tab:blue')
  loss_ax.set_title('training loss')
  learning_rate_ax.plot(*_series(records, 'learning_rate'), color='tab:green')
  learning_rate_ax.set_title('learning rate')
  learning_rate_ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
  top1_ax.plot(*_series(records, 'eval_top1', 100.0), marker='.', label='raw weights')
  top1_ax.plot(*_series(records, 'eval_ema_top1', 100.0), marker='.', label='EMA weights')
  top1_ax.set_title('eval top-1 (%)')
  top1_ax.legend(loc='lower right')
  for ax in (loss_ax, learning_rate_ax, top1_ax):
    ax.set_xlabel('step')
    ax.grid(True, alpha=0.3)
  if title:
    figure.suptitle(title)
  return figure


def write_curves(workdir: str, out_path: Optional[str] = None) -> Optional[str]:
  """Draws `workdir`'s metrics.jsonl into WORKDIR/curves.png (or `out_path`).

  Returns the path, or None when nothing has been logged yet. The file is
  replaced atomically, so a viewer (or a second writer, such as
  experiments.figures on a running workdir) never sees half an image.
  """
  metrics_path = os.path.join(workdir, metrics_lib.METRICS_FILE)
  records = metrics_lib.read_jsonl(metrics_path) if os.path.exists(metrics_path) else []
  if not any('step' in record for record in records):
    return None
  out_path = out_path or os.path.join(workdir, CURVES_FILE)
  figure = curves_figure(records, title=os.path.abspath(workdir))
  temporary = f'{out_path}.{os.getpid()}.tmp'
  figure.savefig(temporary, format='png', dpi=CURVES_DPI)
  os.replace(temporary, out_path)
  return out_path
