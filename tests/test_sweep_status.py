"""launch.sweep --status on a synthetic workroot: finished, running, failed, stopped and
missing runs, and the time left from their measured step times."""

import json
import os
import socket

import pytest

from launch import manifest as manifest_lib
from launch import status as status_lib
from launch import sweep
from synthetic_runs import write_run

TOTAL_STEPS = 400
BATCH_SIZE = 50
RATE = 100.0  # images/s of every synthetic train line


def _set_total_steps_and_batch(workdir, batch_size=None):
  run_info = json.loads((workdir / 'run_info.json').read_text())
  run_info['total_steps'] = TOTAL_STEPS
  (workdir / 'run_info.json').write_text(json.dumps(run_info))
  if batch_size is not None:
    config = json.loads((workdir / 'config.json').read_text())
    config['data']['batch_size'] = batch_size
    (workdir / 'config.json').write_text(json.dumps(config))


@pytest.fixture
def workroot(tmp_path):
  """Sweep 'demo': one run in every state, and its manifest as the local launcher leaves it."""
  root = tmp_path / 'sweeps'
  # 200 steps in 12.5 s of wall time: 0.0625 s a step.
  finished = write_run(root, 'demo/finished', evals=((100, 0.3), (200, 0.5)))
  # At step 100 of 400 with a live process in its lock: 50 images / 100 images/s = 0.5 s a step.
  running = write_run(root, 'demo/running', evals=((100, 0.3),), finished=False)
  _set_total_steps_and_batch(running, BATCH_SIZE)
  (running / 'run.lock').write_text(json.dumps(
      {'pid': os.getpid(), 'host': socket.gethostname(), 'started': '2025-01-01T00:00:00'}))
  # At step 200 of 400, nothing running it (no batch size: no step time of its own).
  stopped = write_run(root, 'demo/stopped', evals=((100, 0.3), (200, 0.4)), finished=False)
  _set_total_steps_and_batch(stopped)
  runs = []
  for name in ('finished', 'running', 'failed', 'stopped', 'missing'):
    runs.append({'name': f'demo/{name}', 'overrides': {}, 'workdir': str(root / 'demo' / name),
                 'command': '...', 'status': 'pending'})
  runs[1]['status'] = 'running'
  runs[2].update(status='failed', exit_code=2, log=str(root / 'demo' / 'failed' / 'launch.log'),
                 error='exit code 2\nI0101 starting\nerror: config.model.shortcut must be one '
                       "of ['bottleneck', 'expansion', 'none'], got 'sideways'.\n")
  runs[3]['status'] = 'interrupted'
  manifest_lib.write_manifest({'sweep': 'demo', 'workroot': str(root), 'runs': runs})
  assert finished.exists()
  return root


def test_every_run_has_its_state_step_and_measured_step_time(workroot):
  [manifest] = status_lib.manifests_in(str(workroot))
  status = status_lib.sweep_status(manifest)
  by_name = {run.name: run for run in status.runs}
  assert {name: run.state for name, run in by_name.items()} == {
      'demo/finished': 'finished', 'demo/running': 'running', 'demo/failed': 'failed',
      'demo/stopped': 'stopped', 'demo/missing': 'not started'}
  assert by_name['demo/running'].step == 100 and by_name['demo/stopped'].step == 200
  assert by_name['demo/finished'].seconds_per_step == pytest.approx(12.5 / 200)
  assert by_name['demo/running'].seconds_per_step == pytest.approx(BATCH_SIZE / RATE)
  assert by_name['demo/failed'].last_log_line.startswith('error: config.model.shortcut')
  # Remaining steps times step times, one run at a time (one runs now): the running run
  # its own 0.5 s, the stopped and the missing run the median 0.28125 s, the missing run
  # the median step count (400); the failed run is not counted.
  typical = (12.5 / 200 + BATCH_SIZE / RATE) / 2
  assert status.runs_at_a_time == 1
  assert status.seconds_left == pytest.approx(300 * 0.5 + 200 * typical + 400 * typical)


def test_status_command_prints_the_counts_the_time_left_and_each_unfinished_run(
    workroot, capsys):
  assert sweep.main(['--workroot', str(workroot), '--status']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == ('demo: 5 runs: 1 finished, 1 running, 1 failed, 1 stopped, '
                      '1 not started; about 5 min left (1 at a time, from measured step times)')
  assert 'running      demo/running  step 100/400' in lines[1]
  assert lines[2].startswith('  failed       demo/failed  error: config.model.shortcut must be')
  assert lines[2].endswith(f'(log: {workroot}/demo/failed/launch.log)')
  assert 'stopped      demo/stopped  step 200/400 (resumes on the next launch)' in lines[3]
  assert len(lines) == 4


def test_a_run_whose_process_is_gone_is_not_running(workroot):
  # A killed run leaves its lock record behind; its PID no longer exists.
  dead_pid = 2 ** 22 + 12345
  (workroot / 'demo' / 'running' / 'run.lock').write_text(json.dumps(
      {'pid': dead_pid, 'host': socket.gethostname()}))
  [manifest] = status_lib.manifests_in(str(workroot))
  manifest['runs'][1].pop('status')
  states = {run.name: run.state for run in status_lib.sweep_status(manifest).runs}
  assert states['demo/running'] == 'stopped'


def test_status_from_the_config_lists_runs_that_no_manifest_knows_yet(tmp_path, capsys):
  config = os.path.join(os.path.dirname(__file__), os.pardir, 'configs', 'default.py')
  workroot = tmp_path / 'sweeps'
  workroot.mkdir()
  assert sweep.main(['--config', config, '--sweep', 'fig6b', '--workroot', str(workroot),
                     '--status']) == 0
  out = capsys.readouterr().out
  assert out.splitlines() == [
      'fig6b: 3 runs: 0 finished, 0 running, 0 failed, 3 not started; time left: not '
      'measured yet']
  assert not list(workroot.iterdir())  # --status writes nothing


@pytest.mark.parametrize('args, message', [
    (['--status'], '--workroot'),
    (['--workroot', 'no/such/dir', '--status'], '--workroot no/such/dir does not exist'),
    (['--workroot', '.', '--config', 'configs/default.py', '--status'],
     'required: --sweep'),
    (['--workroot', '.'], 'required: --config, --sweep'),
])
def test_bad_status_arguments_fail_with_one_line(args, message, capsys):
  assert sweep.main(args) == 2
  err = capsys.readouterr().err
  assert message in err and err.count('\n') == 1
