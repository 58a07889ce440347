"""Runs a sweep's manifest on this machine, N runs at a time.

- A run whose WORKDIR/final_metrics.json exists is skipped; any other run is
  (re)started with its command, and mnv2_jax.main resumes it from its own
  checkpoints. So re-running the same launcher command continues a sweep.
- Each run's stdout and stderr go to WORKDIR/launch.log (appended per attempt).
  A run that exits non-zero is recorded in the manifest as 'failed' with its
  exit code and the log's last lines; the other runs go on. A run refused
  because another live process holds its workdir (the same sweep launched
  twice) is recorded as 'running_elsewhere': mnv2_jax.main never runs one
  workdir twice at a time (`mnv2_jax.workdir_lock`).
- Each time a run ends, the launcher prints the sweep's progress line
  (`launch.status`: runs finished, running, failed and not started, and the
  time left from the measured step times), as `launch.sweep --status` does.
- Ctrl-C (or SIGTERM to the launcher) sends SIGTERM to every running run, so
  that each saves a checkpoint, waits up to `grace_seconds`, then SIGKILLs what
  is left, marks those runs 'interrupted' and writes the manifest: everything
  stays resumable. Runs start in their own process group, so the terminal's
  Ctrl-C reaches only the launcher, which then stops them in order.
"""

import collections
import os
import pathlib
import shlex
import signal
import subprocess
import threading
import time
from typing import Any, Callable, MutableMapping, Optional

from launch import manifest as manifest_lib
from launch import status as status_lib
from mnv2_jax import workdir_lock

LOG_TAIL_LINES = 30
POLL_SECONDS = 0.2


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
  """The last `lines` lines of a log after byte `start` (progress-bar redraws folded)."""
  if not path.exists():
    return ''
  with open(path, 'rb') as log:
    log.seek(max(start, path.stat().st_size - 64 * 1024))
    text = log.read().decode('utf-8', errors='replace')
  kept = collections.deque((line.rsplit('\r', 1)[-1] for line in text.splitlines()), maxlen=lines)
  return '\n'.join(kept)


class _Interrupted(Exception):
  pass


def _raise_interrupted(signum, frame):
  del signum, frame
  raise _Interrupted()


def _install(signum, handler):
  """signal.signal where allowed (the main thread); returns the previous handler."""
  if handler is None or threading.current_thread() is not threading.main_thread():
    return None
  return signal.signal(signum, handler)


class LocalRunner:
  """Starts, watches and stops the runs of one manifest."""

  def __init__(self, manifest: MutableMapping[str, Any], parallel: int = 1,
               grace_seconds: float = 120.0, echo: Callable[[str], None] = print,
               env: Optional[dict[str, str]] = None):
    if parallel < 1:
      raise ValueError(f'--parallel must be >= 1, got {parallel}.')
    self.manifest = manifest
    self.parallel = parallel
    self.grace_seconds = grace_seconds
    self.echo = echo
    self.env = env
    self.active: dict[str, tuple[subprocess.Popen, Any, float]] = {}

  def _save(self) -> None:
    self.manifest['updated'] = manifest_lib.now()
    manifest_lib.write_manifest(self.manifest)

  def _start(self, run: MutableMapping[str, Any]) -> None:
    workdir = pathlib.Path(run['workdir'])
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / manifest_lib.LOG_FILE
    log = open(log_path, 'ab')
    run['log_offset'] = log.tell()  # this attempt's output starts here
    log.write(f'=== {manifest_lib.now()} launch.sweep: {run["command"]}\n'.encode())
    log.flush()
    process = subprocess.Popen(
        shlex.split(run['command']), cwd=self.manifest['repo_dir'], stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env=self.env)
    run.update(status='running', started=manifest_lib.now(), log=str(log_path), pid=process.pid)
    for key in ('exit_code', 'error', 'ended', 'wall_seconds'):
      run.pop(key, None)
    self.active[run['name']] = (process, log, time.monotonic())
    self.echo(f'started  {run["name"]}  (log: {log_path})')

  def _finish(self, run: MutableMapping[str, Any], exit_code: int) -> None:
    process, log, started = self.active.pop(run['name'])
    del process
    log.close()
    run.pop('pid', None)
    run.update(exit_code=exit_code, ended=manifest_lib.now(),
               wall_seconds=round(time.monotonic() - started, 1))
    if exit_code == 0 and manifest_lib.is_finished(run['workdir']):
      run['status'] = 'finished'
      self.echo(f'finished {run["name"]}  ({run["wall_seconds"]:.0f} s)')
      return
    holder = workdir_lock.holder(run['workdir']) if exit_code != 0 else None
    if holder is not None:
      run['status'] = 'running_elsewhere'
      run['error'] = f'workdir in use by {workdir_lock.describe(holder)}'
      self.echo(f'skipped  {run["name"]}  (already running elsewhere: '
                f'{workdir_lock.describe(holder)})')
      return
    run['status'] = 'failed'
    tail = log_tail(pathlib.Path(run['log']), start=run.get('log_offset', 0))
    run['error'] = (f'exit code {exit_code}' if exit_code != 0 else
                    f'exit code 0 but no {manifest_lib.FINAL_METRICS_FILE}') + '\n' + tail
    last_line = tail.strip().splitlines()[-1] if tail.strip() else ''
    self.echo(f'FAILED   {run["name"]}  (exit code {exit_code}): {last_line}  '
              f'(log: {run["log"]})')

  def _stop_all(self) -> None:
    """SIGTERM every running run's process group, then SIGKILL after the grace period."""
    for process, _, _ in self.active.values():
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + self.grace_seconds
    for name, (process, log, started) in list(self.active.items()):
      try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
      log.close()
      run = self._runs_by_name[name]
      run.pop('pid', None)
      run.update(status='interrupted', exit_code=process.returncode, ended=manifest_lib.now(),
                 wall_seconds=round(time.monotonic() - started, 1))
      self.echo(f'stopped  {name}  (resumes on the next launch)')
    self.active.clear()

  def run(self) -> int:
    """Runs every unfinished run; returns 0 if all finished, 1 if some failed, 130 if stopped."""
    runs = self.manifest['runs']
    self._runs_by_name = {run['name']: run for run in runs}
    queue = collections.deque()
    for run in runs:
      if manifest_lib.is_finished(run['workdir']):
        run['status'] = 'finished'
      else:
        run['status'] = 'pending'
        queue.append(run)
    self.echo(f'sweep {self.manifest["sweep"]}: {len(runs)} runs, {len(runs) - len(queue)} '
              f'already finished, {len(queue)} to run, {self.parallel} at a time')
    self._save()
    previous_handler = _install(signal.SIGTERM, _raise_interrupted)
    try:
      while queue or self.active:
        while queue and len(self.active) < self.parallel:
          self._start(queue.popleft())
          self._save()
        for name, (process, _, _) in list(self.active.items()):
          exit_code = process.poll()
          if exit_code is not None:
            self._finish(self._runs_by_name[name], exit_code)
            self._save()
            self.echo(status_lib.summary_line(status_lib.sweep_status(
                self.manifest, runs_at_a_time=self.parallel)))
        time.sleep(POLL_SECONDS)
    except (KeyboardInterrupt, _Interrupted):
      self.echo(f'interrupted: sent SIGTERM to the running runs, waiting up to '
                f'{self.grace_seconds:.0f} s for their checkpoints ...')
      # A second Ctrl-C must not leave children half-stopped and the manifest unwritten.
      previous_interrupt = _install(signal.SIGINT, signal.SIG_IGN)
      try:
        self._stop_all()
      finally:
        _install(signal.SIGINT, previous_interrupt)
      self._save()
      return 130
    finally:
      _install(signal.SIGTERM, previous_handler)
    counts = collections.Counter(run['status'] for run in runs)
    self.echo(f'sweep {self.manifest["sweep"]}: ' +
              ', '.join(f'{count} {status}' for status, count in sorted(counts.items())) +
              f'  (manifest: {manifest_lib.manifest_path(self.manifest)})')
    return 0 if counts['failed'] == 0 else 1
