"""One run at a time per workdir: an exclusive flock on WORKDIR/run.lock for the whole run.

A second run on a workdir in use is refused at once (`WorkdirInUse`, a
UserError naming the holder). The lock is flock(2), not a PID file: the kernel
drops it when its holder dies, however it dies (SIGKILL, the OOM killer, a
machine restart), so a killed run never blocks the next one, and no PID has to
be second-guessed (PIDs are reused, and another host's cannot be checked).

The file records the holder (PID, host, start time, command) for the refusal
message, and is emptied when the holder releases the lock. A run that gets the
lock and still finds a record knows that its predecessor was killed: `acquire`
returns that record, and the run takes over (resuming from the last
checkpoint, as after any kill).

Shared filesystems: Linux implements flock on NFS with NFS locks, which the
server drops when the holding process dies, or after a client crash when the
client's lease runs out (about 90 s). On a filesystem without locks (some FUSE
mounts) `acquire` warns and the run goes on unlocked.

Multi-host runs lock once, from process 0 (see `train.loop`): every host
locking the shared workdir would refuse the job's own processes.
"""

import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from typing import Optional

from mnv2_jax import errors

LOCK_FILE = 'run.lock'
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class WorkdirInUse(errors.UserError):
  """Another live run holds the workdir."""


def _read_record(fd: int) -> Optional[dict]:
  """The holder written into the lock file, None if empty (or half-written)."""
  try:
    text = os.pread(fd, 1 << 16, 0).decode()
    record = json.loads(text) if text.strip() else None
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def describe(record: Optional[dict]) -> str:
  """'PID 123 on host h, started 2025-01-01T00:00:00+00:00' (or a run just starting)."""
  if not record:
    return 'a run that is just starting'
  text = f'PID {record.get("pid")} on host {record.get("host")}'
  return text + (f', started {record["started"]}' if record.get('started') else '')


class WorkdirLock:
  """The lock of one workdir; `acquire` it before writing there, `release` it at the end."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._fd: Optional[int] = None

  def acquire(self) -> Optional[dict]:
    """Takes the lock (creating the workdir); returns the record of a killed predecessor.

    Raises WorkdirInUse when a live run holds it, UserError when the workdir
    cannot be created.
    """
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
      raise errors.UserError(f'workdir {self.workdir} cannot be created or written '
                             f'({error.strerror}); pass another --workdir.') from error
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_record(fd)
      os.close(fd)
      raise WorkdirInUse(
          f'workdir {self.workdir} is in use by another run ({describe(holder)}); wait for it '
          f'to finish or stop it, or pass another --workdir.') from None
    except OSError as error:
      os.close(fd)
      if error.errno not in _NO_LOCKS:
        raise
      logging.warning('The filesystem of %s has no file locks (%s): nothing stops a second '
                      'run on this workdir.', self.workdir, error.strerror)
      return None
    killed = _read_record(fd)
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec='seconds'),
              'command': shlex.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
    self._fd = fd
    return killed

  def release(self) -> None:
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)  # a clean end leaves no record: nobody was killed here
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def holder(workdir: str) -> Optional[dict]:
  """The record of the live run that holds `workdir`'s lock ({} if unknown), None if free.

  For launchers, to tell a run refused because its workdir is in use from a
  failed one. It takes a shared lock for an instant to probe, so a run starting
  at that very instant is refused as if the workdir were in use.
  """
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _read_record(fd) or {}
  except OSError:
    return None
  else:
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None
  finally:
    os.close(fd)


def recorded_holder(workdir: str) -> Optional[dict]:
  """The run recorded in WORKDIR/run.lock, read without touching the lock; None if none.

  That is the live holder, or a run that was killed (its record stays until
  the next run takes over). Unlike `holder`, reading it never makes a run
  that starts at that instant refuse the workdir, so a status report can call
  it at any time.
  """
  try:
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
  except OSError:
    return None
  try:
    return _read_record(fd)
  finally:
    os.close(fd)
