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


CLASSIFICATION_HEADLINE = (('top1', 'top-1'), ('top5', 'top-5'))


def eval_line(eval_metrics: Mapping[str, float],
              headline: Sequence[tuple[str, str]] = CLASSIFICATION_HEADLINE) -> str:
  """'eval top-1 0.9120 (EMA 0.9310), loss 0.3012': the first headline metric, raw and EMA."""
  key, label = headline[0]
  line = (f'eval {label} {eval_metrics[f"eval_{key}"]:.4f} '
          f'(EMA {eval_metrics[f"eval_ema_{key}"]:.4f})')
  if f'eval_precise_bn_{key}' in eval_metrics:  # config.train.precise_batch_norm_batches
    line += (f', precise BN {eval_metrics[f"eval_precise_bn_{key}"]:.4f} '
             f'(EMA {eval_metrics[f"eval_precise_bn_ema_{key}"]:.4f})')
  if 'eval_loss' in eval_metrics:
    line += f', loss {eval_metrics["eval_loss"]:.4f}'
  return line


def summary_text(final: Mapping[str, Any], workdir: str,
                 run_info: Optional[Mapping[str, Any]] = None,
                 headline: Sequence[tuple[str, str]] = CLASSIFICATION_HEADLINE) -> str:
  """The end-of-run summary: the numbers of `final` (final_metrics.json), labelled.

  run_info (run_info.json) adds the model's name, width and resolution;
  `headline` is the task's (metric key, label) pairs (`mnv2_jax.tasks`). Keys
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

  def values(prefix: str) -> str:
    return ' / '.join(_percent(final.get(f'eval_{prefix}{key}')) for key, _ in headline)

  model = ''
  if run_info.get('model'):
    model = (f'{run_info["model"]} width {run_info.get("width_multiplier")} at '
             f'{run_info.get("resolution")} px: ')
  labels = ' / '.join(label for _, label in headline)
  first_key, first_label = headline[0]
  column = max(len(f'final {labels}'), len(f'best {first_label}'), len('workdir')) + 3
  tensorboard = os.path.join(workdir, metrics_lib.TENSORBOARD_DIR)
  lines = [
      f'Run finished at step {final.get("step")}: {timing}',
      f'  {"final " + labels:<{column}}raw {values("")}   EMA {values("ema_")}',
      f'  {"best " + first_label:<{column}}raw {best(f"best_eval_{first_key}")}   '
      f'EMA {best(f"best_eval_ema_{first_key}")}',
      f'  {"model":<{column}}{model}{_count(final.get("params"), "parameters")}, '
      f'{_count(final.get("madds"), "multiply-adds")}',
      f'  {"workdir":<{column}}{workdir}',
      f'  {"":<{column}}final_metrics.json, metrics.jsonl, {CURVES_FILE}, '
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


def curves_figure(records: Sequence[Mapping[str, Any]], title: str = '',
                  headline: Sequence[tuple[str, str]] = CLASSIFICATION_HEADLINE):
  """Training loss, learning rate and the first headline metric (raw and EMA) by step."""
  # A bare Figure draws with the Agg canvas: no display, and pyplot's global
  # backend is left alone for whoever imported it.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  figure = Figure(figsize=CURVES_SIZE_INCHES, layout='constrained')
  loss_ax, learning_rate_ax, metric_ax = figure.subplots(1, 3)
  key, label = headline[0]
  loss_ax.plot(*_series(records, 'train_loss'), color='tab:blue')
  loss_ax.set_title('training loss')
  learning_rate_ax.plot(*_series(records, 'learning_rate'), color='tab:green')
  learning_rate_ax.set_title('learning rate')
  learning_rate_ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
  metric_ax.plot(*_series(records, f'eval_{key}', 100.0), marker='.', label='raw weights')
  metric_ax.plot(*_series(records, f'eval_ema_{key}', 100.0), marker='.', label='EMA weights')
  metric_ax.set_title(f'eval {label} (%)')
  metric_ax.legend(loc='lower right')
  for ax in (loss_ax, learning_rate_ax, metric_ax):
    ax.set_xlabel('step')
    ax.grid(True, alpha=0.3)
  if title:
    figure.suptitle(title)
  return figure


def write_curves(workdir: str, out_path: Optional[str] = None,
                 headline: Sequence[tuple[str, str]] = CLASSIFICATION_HEADLINE
                 ) -> Optional[str]:
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
  figure = curves_figure(records, title=os.path.abspath(workdir), headline=headline)
  temporary = f'{out_path}.{os.getpid()}.tmp'
  figure.savefig(temporary, format='png', dpi=CURVES_DPI)
  os.replace(temporary, out_path)
  return out_path
