"""One run per workdir: a second run is refused naming the first, a killed run's lock is taken over.

The end-to-end test runs two real `python -m mnv2_jax.main` processes on one
workdir: the second is refused at once with one line naming the first
(PID and host), the first goes on training, and after it is killed with
SIGKILL its lock is taken over. (tests/test_resume.py checks that a run
restarted after SIGKILL takes the lock over and ends bitwise identical.) A
two-process job locks from process 0 alone, and a refusal reaches both.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from launch import local
from mnv2_jax import checkpoint, errors, workdir_lock
import train_test_utils as utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_SECONDS = 600
# Holds the lock of the workdir argv[1] until killed.
LOCK_HOLDER = ('import sys, time\n'
               'from mnv2_jax import workdir_lock\n'
               'workdir_lock.WorkdirLock(sys.argv[1]).acquire()\n'
               'print("locked", flush=True)\n'
               'time.sleep(600)\n')


# One process of a two-process job: locks each workdir in argv[3:] as train_and_evaluate does.
JOB_PROCESS = textwrap.dedent('''
    import sys
    import jax
    import ml_collections
    from mnv2_jax import errors, parallel
    from mnv2_jax.train import loop
    port, process_id = sys.argv[1], int(sys.argv[2])
    parallel.initialize_distributed(ml_collections.ConfigDict({'distributed': {
        'initialize': True, 'coordinator_address': f'127.0.0.1:{port}',
        'num_processes': 2, 'process_id': process_id}}))
    for workdir in sys.argv[3:]:
      try:
        loop._lock_workdir(workdir)
        print('locked', flush=True)
      except errors.UserError as error:
        print(f'refused: {error}', flush=True)
    jax.distributed.shutdown()
''')


def _environment():
  return utils.subprocess_environment(PYTHONPATH=REPO)  # one CPU device


def _wait_for(condition, what, process=None):
  deadline = time.time() + TIMEOUT_SECONDS
  while not condition():
    assert process is None or process.poll() is None, f'exited before {what}'
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.2)


def test_a_second_lock_is_refused_naming_the_holder_until_released(tmp_path):
  workdir = str(tmp_path / 'run')
  first = workdir_lock.WorkdirLock(workdir)
  assert first.acquire() is None  # nobody held it before
  with pytest.raises(workdir_lock.WorkdirInUse,
                     match=f'in use by another run \\(PID {os.getpid()} on host '
                           f'{socket.gethostname()}, started '):
    workdir_lock.WorkdirLock(workdir).acquire()
  assert isinstance(workdir_lock.WorkdirInUse('x'), errors.UserError)
  assert workdir_lock.holder(workdir)['pid'] == os.getpid()
  first.release()
  assert workdir_lock.holder(workdir) is None
  with workdir_lock.WorkdirLock(workdir):  # a clean release leaves no record behind
    pass


def test_a_workdir_that_cannot_be_created_is_a_user_error(tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(errors.UserError, match='cannot be created'):
    workdir_lock.WorkdirLock(str(tmp_path / 'a_file' / 'run')).acquire()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  workdir = str(tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', LOCK_HOLDER, workdir], cwd=REPO,
                            env=_environment(), stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'locked'
  assert workdir_lock.holder(workdir)['pid'] == holder.pid
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=TIMEOUT_SECONDS)
  assert workdir_lock.holder(workdir) is None  # the kernel dropped the lock
  lock = workdir_lock.WorkdirLock(workdir)
  killed = lock.acquire()
  assert killed['pid'] == holder.pid and killed['host'] == socket.gethostname()
  lock.release()


def test_the_local_launcher_reports_a_run_refused_for_a_live_workdir_as_running_elsewhere(
    tmp_path):
  workdir = tmp_path / 'sweep' / 'busy'
  manifest = {'sweep': 'sweep', 'workroot': str(tmp_path), 'repo_dir': REPO, 'runs': [{
      'name': 'sweep/busy', 'workdir': str(workdir),
      # What mnv2_jax.main does on a workdir in use: exit with status 2.
      'command': f'{sys.executable} -c "import sys; sys.exit(2)"'}]}
  messages = []
  with workdir_lock.WorkdirLock(str(workdir)):  # the same sweep, launched before
    code = local.LocalRunner(manifest, echo=messages.append).run()
  [run] = manifest['runs']
  assert run['status'] == 'running_elsewhere', messages
  assert f'PID {os.getpid()}' in run['error']
  assert code == 0 and any('already running elsewhere' in m for m in messages)


def test_a_multi_host_job_locks_once_and_is_refused_on_every_process(tmp_path):
  busy, free = str(tmp_path / 'busy'), str(tmp_path / 'free')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  with workdir_lock.WorkdirLock(busy):
    processes = [subprocess.Popen([sys.executable, '-c', JOB_PROCESS, str(port), str(index),
                                   busy, free], cwd=REPO, env=_environment(),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for index in range(2)]
    outputs = [[line for line in process.communicate(timeout=TIMEOUT_SECONDS)[0].splitlines()
                if line.startswith(('locked', 'refused'))]  # not gloo's connection notices
               for process in processes]
  assert [process.returncode for process in processes] == [0, 0], outputs
  (busy_0, free_0), (busy_1, free_1) = outputs
  assert busy_0.startswith('refused:') and f'PID {os.getpid()}' in busy_0  # process 0 locks
  assert busy_1.startswith('refused:') and 'process 0' in busy_1  # and tells the others
  assert free_0 == free_1 == 'locked'


def _checkpoint_steps(workdir):
  directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if (
      os.path.isdir(directory)) else []


def test_a_second_run_on_a_live_workdir_is_refused_and_the_first_goes_on(tmp_path):
  workdir = str(tmp_path / 'run')
  command = [sys.executable, '-m', 'mnv2_jax.main',
             '--config', 'configs/default.py:width=0.35,res=32,batch=8', '--workdir', workdir,
             '--config.train.num_steps=100000', '--config.train.checkpoint_every_steps=2',
             '--config.train.keep_checkpoints=3', '--config.train.eval_every_steps=100000',
             f'--config.data.data_dir={tmp_path / "tfds"}',
             '--config.data.num_train_examples=64', '--config.data.num_test_examples=16',
             '--config.data.eval_batch_size=16']
  first = subprocess.Popen(command, cwd=REPO, env=_environment(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    _wait_for(lambda: _checkpoint_steps(workdir), 'a first checkpoint', first)
    assert workdir_lock.holder(workdir)['pid'] == first.pid

    second = subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True,
                            text=True, timeout=TIMEOUT_SECONDS)
    [error] = [line for line in second.stderr.splitlines() if line.startswith('error:')]
    assert second.returncode == 2 and 'Traceback' not in second.stderr, second.stderr
    assert (f'workdir {workdir} is in use by another run (PID {first.pid} on host '
            f'{socket.gethostname()}') in error
    assert error == second.stderr.splitlines()[-1]

    # The first run is unharmed: it goes on saving checkpoints.
    refused_at = max(_checkpoint_steps(workdir))
    _wait_for(lambda: max(_checkpoint_steps(workdir)) > refused_at, 'a later checkpoint', first)
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=TIMEOUT_SECONDS)

  lock = workdir_lock.WorkdirLock(workdir)
  assert lock.acquire()['pid'] == first.pid  # killed: its lock is taken over
  lock.release()
