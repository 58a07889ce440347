"""Run records in the workdir: metrics.jsonl, TensorBoard events and JSON files.

Only process 0 writes; on other processes every method is a no-op, so the
training loop can call them unconditionally.

WORKDIR/metrics.jsonl holds one JSON object per line, each with "step" (int)
and "epoch" (float) next to the scalars logged at that step (train lines:
train_loss, learning_rate, images_per_second; eval lines: eval_loss,
eval_top1, eval_top5, eval_ema_top1, eval_ema_top5). Each start of a run
(the first one and every resume) adds first_step_seconds to its first train
line: the wall time of its first step, compilation included, which is what a
warm compilation cache shortens. The same scalars go to TensorBoard event
files in WORKDIR/tensorboard.
"""

import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

from etils import epath
import numpy as np

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _to_json_value(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, '__array__'):
    value = np.asarray(value)
    value = value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep the line parseable
  return value


def write_json(path: str, obj: Mapping[str, Any]) -> None:
  """Writes `obj` as indented JSON atomically (a reader never sees half a file)."""
  temporary = path + '.tmp'
  with open(temporary, 'w') as f:
    json.dump({k: _to_json_value(v) for k, v in obj.items()}, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(temporary, path)


def read_jsonl(path) -> list[dict[str, Any]]:
  """The records of a JSON-lines file (a local path or a gs:// URL).

  A line cut short (by a killed writer, or one still writing) is skipped.
  """
  records = []
  for line in epath.Path(path).read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def finite_number(value: Any) -> Optional[float]:
  """`value` as a finite float, or None (metrics.jsonl stores NaN and inf as strings)."""
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def best_eval(records: Sequence[Mapping[str, Any]], key: str) -> tuple[Optional[float],
                                                                       Optional[int]]:
  """(best value of `key`, the step of its first occurrence) over the records that have it."""
  best_value, best_step = None, None
  for record in records:
    value = finite_number(record.get(key))
    if value is not None and (best_value is None or value > best_value):
      best_value, best_step = value, int(record['step'])
  return best_value, best_step


def mean_images_per_second(records: Sequence[Mapping[str, Any]]) -> Optional[float]:
  """Training throughput over the whole run: images trained / seconds spent training.

  Each train line's images_per_second covers the steps since the previous
  train line; weighting its inverse by those steps gives total time over
  total images (the batch size cancels). Compilation and evaluation are not in
  the lines' rates, so not in this either. None without a measured rate.
  """
  steps_done = seconds_per_image_sum = 0.0
  previous_step = 0
  for record in sorted((r for r in records if 'images_per_second' in r), key=lambda r: r['step']):
    rate = finite_number(record['images_per_second'])
    steps = record['step'] - previous_step
    previous_step = record['step']
    if rate and rate > 0 and steps > 0:
      steps_done += steps
      seconds_per_image_sum += steps / rate
  return steps_done / seconds_per_image_sum if seconds_per_image_sum else None


class MetricsWriter:
  """Appends scalars to WORKDIR/metrics.jsonl and TensorBoard (process 0 only).

  `resume_step`: when a run resumes from a checkpoint at that step, lines for
  later steps (written before the run was killed, and about to be recomputed)
  are dropped so that every step appears once.
  """

  def __init__(self, workdir: str, *, is_primary: bool = True, resume_step: int = 0):
    self.is_primary = is_primary
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tensorboard = None
    if not is_primary:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      self._drop_lines_after(resume_step)
    # flax's writer is a thin wrapper over tf.summary; imported lazily because
    # importing TensorFlow takes seconds and non-primary processes never need it.
    from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
    self._tensorboard = tensorboard.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                                  auto_flush=False)

  def _drop_lines_after(self, step: int) -> None:
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by a kill
        if record.get('step', 0) <= step:
          kept.append(json.dumps(record, sort_keys=True))
    with open(self.path + '.tmp', 'w') as f:
      f.writelines(line + '\n' for line in kept)
    os.replace(self.path + '.tmp', self.path)

  def write(self, step: int, epoch: float, scalars: Mapping[str, Any]) -> None:
    if not self.is_primary:
      return
    record = {'step': int(step), 'epoch': float(epoch)}
    record.update({name: _to_json_value(value) for name, value in scalars.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(record, sort_keys=True) + '\n')
    for name, value in scalars.items():
      self._tensorboard.scalar(name, float(value), int(step))

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.is_primary:
      self._tensorboard.text(tag, text, step)

  def flush(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None
