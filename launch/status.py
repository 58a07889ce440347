"""Where a sweep stands: how many runs finished, run, failed or wait, and the time left.

  python -m launch.sweep --workroot sweeps/cpu --status            # every sweep there
  python -m launch.sweep --config configs/default.py --sweep fig5 \
      --workroot sweeps/cpu --status                               # one sweep, from its config

Prints per sweep one line, the one the local launcher prints each time a run
ends,

  fig5: 25 runs: 10 finished, 2 running, 1 failed, 12 not started; about 48 min left
      (2 at a time, from measured step times)

then a line per run that is running (its step), failed (the last line of its
log) or was stopped part-way. It reads only what the runs and the launcher
write (manifest.json, WORKDIR/final_metrics.json, metrics.jsonl,
run_info.json, config.json, run.lock), never takes a lock, and can run at any
time beside a sweep.

What each run is:
- finished: WORKDIR/final_metrics.json exists (mnv2_jax.main writes it last);
- running: a live process is recorded in WORKDIR/run.lock (on another host the
  record is trusted; for a remote workdir, the manifest's 'running');
- failed: the launcher recorded a non-zero exit and nothing runs it now;
- stopped: it has logged steps but nothing runs it (Ctrl-C, a time limit or a
  kill); the next launch resumes it;
- not started: none of the above.

Time left: each unfinished run's remaining steps times its seconds per step,
over the runs at a time. A finished run's seconds per step is its wall time
over its steps (compilation, evaluation and all); a run in progress measures
its training steps (metrics.jsonl's images/s and its batch size); a run
without a measurement takes the median of the others, and a run without
run_info.json the median step count. Failed runs are not counted: they run
again only when the sweep is launched again.
"""

import dataclasses
import json
import os
import socket
import statistics
from typing import Any, Mapping, Optional, Sequence

from etils import epath

from launch import manifest as manifest_lib
from mnv2_jax import metrics as metrics_lib
from mnv2_jax import workdir_lock

FINISHED, RUNNING, FAILED, STOPPED, NOT_STARTED = (
    'finished', 'running', 'failed', 'stopped', 'not started')
STATES = (FINISHED, RUNNING, FAILED, STOPPED, NOT_STARTED)
RUN_INFO_FILE = 'run_info.json'
CONFIG_FILE = 'config.json'


@dataclasses.dataclass
class RunStatus:
  name: str
  state: str
  step: int = 0  # the last logged step
  total_steps: Optional[int] = None
  seconds_per_step: Optional[float] = None  # measured, None when nothing is
  last_log_line: str = ''  # of a failed run
  log: str = ''


@dataclasses.dataclass
class SweepStatus:
  sweep: str
  runs: list[RunStatus]
  runs_at_a_time: int
  seconds_left: Optional[float]  # None when no step time is measured yet

  def count(self, state: str) -> int:
    return sum(run.state == state for run in self.runs)


def _read_json(path: epath.Path) -> dict:
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
  return value if isinstance(value, dict) else {}


def _process_alive(pid: Any) -> bool:
  """Whether process `pid` of this host exists."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError, ValueError):
    return True  # someone else's process, or no pid to check: assume it lives
  return True


def _is_running(run: Mapping[str, Any]) -> bool:
  workdir = run['workdir']
  if '://' in workdir:
    return run.get('status') == 'running'
  record = workdir_lock.recorded_holder(workdir)
  if record:
    # A killed run's record stays until the next run takes over; another
    # machine's process cannot be checked from here.
    return record.get('host') != socket.gethostname() or _process_alive(record.get('pid'))
  # Started by the local launcher a moment ago, before it took its lock.
  return run.get('status') == 'running' and 'pid' in run and _process_alive(run['pid'])


def _last_line(text: str) -> str:
  lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
  return lines[-1] if lines else ''


def run_status(run: Mapping[str, Any]) -> RunStatus:
  """The state, step and step time of one manifest entry, from its workdir's files."""
  workdir = epath.Path(run['workdir'])
  final_path = workdir / manifest_lib.FINAL_METRICS_FILE
  final = _read_json(final_path)
  run_info = _read_json(workdir / RUN_INFO_FILE)
  metrics_path = workdir / metrics_lib.METRICS_FILE
  records = metrics_lib.read_jsonl(metrics_path) if metrics_path.exists() else []
  steps = [int(record['step']) for record in records if 'step' in record]
  status = RunStatus(name=run['name'], state=NOT_STARTED, step=max(steps, default=0),
                     total_steps=run_info.get('total_steps'), log=run.get('log', ''))
  if final_path.exists():
    status.state = FINISHED
    status.step = int(final.get('step') or status.step)
    wall = metrics_lib.finite_number(final.get('wall_time_seconds'))
    if wall and status.step:
      status.seconds_per_step = wall / status.step
    return status
  rate = metrics_lib.mean_images_per_second(records)
  batch_size = _read_json(workdir / CONFIG_FILE).get('data', {}).get('batch_size')
  if rate and batch_size:
    status.seconds_per_step = batch_size / rate
  if _is_running(run):
    status.state = RUNNING
  elif run.get('status') == 'failed':
    status.state = FAILED
    status.last_log_line = _last_line(run.get('error', ''))
  elif status.step:
    status.state = STOPPED
  return status


def estimate_seconds_left(runs: Sequence[RunStatus], runs_at_a_time: int) -> Optional[float]:
  """The unfinished (not failed) runs' remaining steps times their step times, shared out."""
  measured = [run.seconds_per_step for run in runs if run.seconds_per_step]
  if not measured:
    return None
  typical_seconds_per_step = statistics.median(measured)
  known_totals = [run.total_steps for run in runs if run.total_steps]
  typical_total = statistics.median(known_totals) if known_totals else None
  seconds = 0.0
  for run in runs:
    if run.state in (FINISHED, FAILED):
      continue
    total = run.total_steps or typical_total
    if total is None:
      return None
    seconds += max(0, total - run.step) * (run.seconds_per_step or typical_seconds_per_step)
  return seconds / max(1, runs_at_a_time)


def sweep_status(manifest: Mapping[str, Any],
                 runs_at_a_time: Optional[int] = None) -> SweepStatus:
  """Every run of a manifest; `runs_at_a_time` None: as many as run now (at least one)."""
  runs = [run_status(run) for run in manifest['runs']]
  if runs_at_a_time is None:
    runs_at_a_time = max(1, sum(run.state == RUNNING for run in runs))
  return SweepStatus(sweep=manifest['sweep'], runs=runs, runs_at_a_time=runs_at_a_time,
                     seconds_left=estimate_seconds_left(runs, runs_at_a_time))


def _duration(seconds: float) -> str:
  minutes = round(seconds / 60)
  if minutes < 1:
    return 'under a minute'
  hours, minutes = divmod(minutes, 60)
  return f'{hours} h {minutes:02d} min' if hours else f'{minutes} min'


def summary_line(status: SweepStatus) -> str:
  """'fig5: 25 runs: 10 finished, 2 running, ...; about 48 min left (...)'."""
  counts = ', '.join(f'{status.count(state)} {state}' for state in STATES
                     if status.count(state) or state in (FINISHED, RUNNING, FAILED, NOT_STARTED))
  unfinished = len(status.runs) - status.count(FINISHED) - status.count(FAILED)
  if not unfinished:
    left = 'nothing left to run' if not status.count(FAILED) else (
        'nothing left but the failed runs (launch the sweep again to retry them)')
  elif status.seconds_left is None:
    left = 'time left: not measured yet'
  else:
    left = (f'about {_duration(status.seconds_left)} left ({status.runs_at_a_time} at a time, '
            f'from measured step times)')
  return f'{status.sweep}: {len(status.runs)} runs: {counts}; {left}'


def report(status: SweepStatus) -> str:
  """The summary line, then one line per running, failed or stopped run."""
  lines = [summary_line(status)]
  for run in status.runs:
    total = f'/{run.total_steps}' if run.total_steps else ''
    if run.state == RUNNING:
      lines.append(f'  running      {run.name}  step {run.step}{total}')
    elif run.state == STOPPED:
      lines.append(f'  stopped      {run.name}  step {run.step}{total} (resumes on the next '
                   f'launch)')
    elif run.state == FAILED:
      log = f'  (log: {run.log})' if run.log else ''
      lines.append(f'  failed       {run.name}  {run.last_log_line}{log}')
  return '\n'.join(lines)


def manifests_in(workroot: str, sweep: Optional[str] = None) -> list[dict]:
  """The manifests of WORKROOT/<sweep>/manifest.json (every sweep there, or `sweep`'s)."""
  root = epath.Path(manifest_lib.resolve_workroot(workroot))
  paths = ([root / sweep / manifest_lib.MANIFEST_FILE] if sweep else
           sorted(root.glob(f'*/{manifest_lib.MANIFEST_FILE}')))
  return [manifest_lib.read_manifest(path) for path in paths if path.exists()]


def with_recorded_statuses(manifest: dict, recorded: Optional[Mapping[str, Any]]) -> dict:
  """`manifest` (built from the config) with what a written manifest recorded about its runs."""
  if not recorded:
    return manifest
  by_name = {run['name']: run for run in recorded.get('runs', [])}
  for run in manifest['runs']:
    for key in ('status', 'error', 'log', 'pid'):
      if key in by_name.get(run['name'], {}):
        run[key] = by_name[run['name']][key]
  return manifest
