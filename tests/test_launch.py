"""launch.sweep: dry-run outputs of every backend, and the local backend end to end.

The end-to-end test runs the real `python -m mnv2_jax.main` on tiny runs
(width 0.35, 32 px, batch 8, 3 steps) of a small sweep file that reuses
configs/default.py's get_config; the Ctrl-C test uses a stand-in for main.
"""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch import local
from launch import manifest as manifest_lib
from launch import sweep

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO_ROOT / 'configs' / 'default.py')
IMAGENET_CONFIG = str(REPO_ROOT / 'configs' / 'imagenet.py')

# Every tiny run: the smallest network at the smallest resolution, batch 8,
# three steps on a tiny built-in dataset.
TINY = {'model.width_multiplier': 0.35, 'data.resolution': 32, 'data.batch_size': 8,
        'data.eval_batch_size': 32, 'data.num_train_examples': 64,
        'data.num_test_examples': 32, 'train.num_steps': 3, 'train.eval_every_steps': 3,
        'train.checkpoint_every_steps': 3, 'train.log_every_steps': 1}


def run_sweep(capsys, *args):
  code = sweep.main(list(args))
  return code, capsys.readouterr()


def test_local_dry_run_prints_the_manifest_and_writes_nothing(tmp_path, capsys):
  workroot = tmp_path / 'runs'
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--sweep', 'fig6b',
                        '--workroot', str(workroot), '--dry-run', '--set', 'train.num_steps=5')
  assert code == 0
  manifest = json.loads(out.out)
  assert not workroot.exists()
  assert manifest['sweep'] == 'fig6b' and manifest['config'] == 'configs/default.py'
  assert [run['name'] for run in manifest['runs']] == [
      'fig6b/shortcut_bottleneck', 'fig6b/shortcut_expansion', 'fig6b/no_shortcut']
  run = manifest['runs'][1]
  assert run['workdir'] == str(workroot / 'fig6b' / 'shortcut_expansion')
  assert run['overrides']['model.shortcut'] == 'expansion'
  assert run['overrides']['train.num_steps'] == 5
  argv = shlex.split(run['command'])
  assert argv[:7] == [sys.executable, '-m', 'mnv2_jax.main', '--config', 'configs/default.py',
                      '--workdir', run['workdir']]
  assert '--config.model.shortcut=expansion' in argv and '--config.train.num_steps=5' in argv
  assert {r['status'] for r in manifest['runs']} == {'pending'}


def test_seeds_make_one_run_per_seed_with_its_own_workdir_and_seed(tmp_path, capsys):
  workroot = tmp_path / 'runs'
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--sweep', 'fig6a',
                        '--workroot', str(workroot), '--dry-run', '--seeds', '0,1,2')
  assert code == 0
  runs = json.loads(out.out)['runs']
  assert not workroot.exists()
  # Seed by seed: the whole sweep at seed 0 comes first.
  assert [run['name'] for run in runs] == [
      f'fig6a/{variant}/seed{seed}' for seed in (0, 1, 2)
      for variant in ('linear_bottleneck', 'relu6_bottleneck')]
  for run in runs:
    seed = int(run['name'][-1])
    assert run['workdir'] == str(workroot / 'fig6a' / run['name'].split('/')[1] / f'seed{seed}')
    assert run['overrides']['seed'] == seed
    argv = shlex.split(run['command'])
    assert argv[argv.index('--workdir') + 1] == run['workdir']
    assert f'--config.seed={seed}' in argv
  assert {run['status'] for run in runs} == {'pending'}
  # --only picks seeds by name as well.
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--sweep', 'fig6a',
                        '--workroot', str(workroot), '--dry-run', '--seeds', '0,1,2',
                        '--only', '*/seed1')
  assert [run['name'] for run in json.loads(out.out)['runs']] == [
      'fig6a/linear_bottleneck/seed1', 'fig6a/relu6_bottleneck/seed1']


def test_without_seeds_the_runs_keep_their_names_and_the_configs_seed(tmp_path, capsys):
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--sweep', 'fig6a',
                        '--workroot', str(tmp_path), '--dry-run')
  assert code == 0
  runs = json.loads(out.out)['runs']
  assert [run['name'] for run in runs] == ['fig6a/linear_bottleneck', 'fig6a/relu6_bottleneck']
  assert not any('seed' in run['overrides'] or '--config.seed' in run['command'] for run in runs)


def test_seeds_reach_the_slurm_array_and_the_tpu_commands(tmp_path, capsys):
  code, out = run_sweep(capsys, '--config', IMAGENET_CONFIG, '--sweep', 'fig6b',
                        '--workroot', str(tmp_path), '--backend', 'slurm', '--dry-run',
                        '--seeds', '3,4')
  assert code == 0
  assert '#SBATCH --array=0-5\n' in out.out
  assert '  0)  # fig6b/shortcut_bottleneck/seed3\n' in out.out
  assert '  5)  # fig6b/no_shortcut/seed4\n' in out.out
  assert f'WORKDIR={tmp_path}/fig6b/no_shortcut/seed4' in out.out
  assert out.out.count('--config.seed=3') == 3 and out.out.count('--config.seed=4') == 3
  code, out = run_sweep(capsys, '--config', IMAGENET_CONFIG, '--sweep', 'fig6b',
                        '--workroot', 'gs://bucket/mnv2', '--backend', 'tpu', '--dry-run',
                        '--tpu-name', 'v4-32', '--zone', 'us-central2-b', '--seeds', '3,4')
  assert code == 0
  lines = out.out.strip().splitlines()
  assert len(lines) == 6
  assert '--workdir gs://bucket/mnv2/fig6b/shortcut_expansion/seed4' in lines[4]
  assert '--config.seed=4' in lines[4]


def test_slurm_dry_run_prints_one_array_task_per_run_with_gpus(tmp_path, capsys):
  code, out = run_sweep(capsys, '--config', IMAGENET_CONFIG + ':replicas=8', '--sweep', 'fig5',
                        '--workroot', str(tmp_path), '--backend', 'slurm', '--dry-run',
                        '--partition', 'gpu', '--time', '72:00:00', '--gpus-per-run', '8',
                        '--cpus-per-run', '64', '--parallel', '4', '--sbatch-arg=--mem=400G')
  assert code == 0
  script = out.out
  assert script.startswith('#!/bin/bash\n')
  for directive in ('--array=0-27%4', '--gpus-per-task=8', '--cpus-per-task=64',
                    '--partition=gpu', '--time=72:00:00', '--ntasks=1', '--mem=400G',
                    '--signal=B:TERM@300', '--job-name=mnv2_jax-fig5'):
    assert f'#SBATCH {directive}\n' in script
  assert script.count('COMMAND=(python3 -m mnv2_jax.main --config configs/imagenet.py:replicas=8')\
      == 28
  assert '  0)  # fig5/v2_w0.35_r96\n' in script and '  27)  # fig5/v1_w1.0_r128\n' in script
  assert f'WORKDIR={tmp_path}/fig5/v2_w1.4_r224' in script
  assert 'final_metrics.json' in script and script.rstrip().endswith('exec "${COMMAND[@]}"')
  assert not (tmp_path / 'fig5').exists()
  # The script is valid bash.
  assert subprocess.run(['bash', '-n'], input=script, text=True).returncode == 0


def test_slurm_gres_replaces_gpus_per_task_and_finished_runs_are_left_out(tmp_path, capsys):
  finished = tmp_path / 'fig6a' / 'linear_bottleneck'
  finished.mkdir(parents=True)
  (finished / 'final_metrics.json').write_text('{}')
  code, out = run_sweep(capsys, '--config', IMAGENET_CONFIG, '--sweep', 'fig6a',
                        '--workroot', str(tmp_path), '--backend', 'slurm', '--dry-run',
                        '--gres', 'gpu:a100:8')
  assert code == 0
  assert '#SBATCH --gres=gpu:a100:8\n' in out.out and '--gpus-per-task' not in out.out
  assert '#SBATCH --array=0-0\n' in out.out
  assert 'relu6_bottleneck' in out.out and '# fig6a/linear_bottleneck' not in out.out


def test_tpu_dry_run_prints_one_gcloud_command_per_run_with_jax_distributed(tmp_path, capsys):
  code, out = run_sweep(capsys, '--config', IMAGENET_CONFIG, '--sweep', 'fig6b',
                        '--workroot', 'gs://bucket/mnv2', '--backend', 'tpu', '--dry-run',
                        '--tpu-name', 'v4-32', '--zone', 'us-central2-b', '--project', 'p')
  assert code == 0
  commands = [shlex.split(line) for line in out.out.strip().splitlines()]
  assert len(commands) == 3
  for command, name in zip(commands, ('shortcut_bottleneck', 'shortcut_expansion',
                                      'no_shortcut')):
    assert command[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'v4-32']
    assert '--zone=us-central2-b' in command and '--project=p' in command
    assert '--worker=all' in command
    remote = command[-1]
    assert remote.startswith('--command=cd mnv2_jax && python3 -m mnv2_jax.main ')
    assert f'--workdir gs://bucket/mnv2/fig6b/{name}' in remote
    assert remote.endswith('--config.distributed.initialize=True')


@pytest.mark.parametrize('args, message', [
    (['--sweep', 'fig7'], "no sweep 'fig7'"),
    (['--sweep', 'fig5', '--set', 'model.widht=2'], "'model.widht' names no config field"),
    (['--sweep', 'fig5', '--set', 'data.resolution=64'], 'conflicts with sweep'),
    (['--sweep', 'fig5', '--set', 'train.num_steps=lots'], 'train.num_steps is a int'),
    (['--sweep', 'fig5', '--only', 'fig6*'], 'matches no run'),
    (['--sweep', 'fig5', '--backend', 'tpu'], 'needs --tpu-name and --zone'),
    (['--sweep', 'fig5', '--parallel', '0'], '--parallel must be >= 1'),
    (['--sweep', 'fig5', '--seeds', 'a,b'], "--seeds 'a,b' must be distinct non-negative"),
    (['--sweep', 'fig5', '--seeds', '0,1,0'], "--seeds '0,1,0' must be distinct"),
    (['--sweep', 'fig5', '--seeds', '-1'], "--seeds '-1' must be distinct non-negative"),
    (['--sweep', 'fig5', '--seeds', '0,1', '--set', 'seed=3'], 'conflicts with --seeds'),
])
def test_bad_arguments_fail_with_one_clear_line(tmp_path, capsys, args, message):
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--workroot', str(tmp_path), *args)
  assert code == 2
  assert message in out.err and out.err.count('\n') == 1
  assert not list(tmp_path.iterdir())


def test_a_wrongly_typed_sweep_override_is_refused_before_any_run_starts(tmp_path, capsys):
  config = tmp_path / 'typo.py'
  config.write_text('from configs.default import get_config  # noqa: F401\n'
                    "SWEEPS = {'s': lambda add: add('a', {'data.resolution': 'large'})}\n")
  code, out = run_sweep(capsys, '--config', str(config), '--sweep', 's',
                        '--workroot', str(tmp_path / 'runs'))
  assert code == 2 and "override data.resolution='large' does not fit" in out.err
  assert not (tmp_path / 'runs').exists()


def test_local_backend_records_a_failure_continues_and_skips_finished_runs_when_rerun(
    tmp_path, capsys):
  # A run that fails in mnv2_jax.main's own validation (a string field, so the
  # launcher's type check lets it through) and a good tiny run after it.
  config = tmp_path / 'tiny_sweeps.py'
  tiny = {**TINY, 'data.data_dir': str(tmp_path / 'tensorflow_datasets')}
  config.write_text(textwrap.dedent(f'''\
      from configs.default import get_config  # noqa: F401

      TINY = {tiny!r}


      def sweep_tiny(add):
        add('bad', {{**TINY, 'model.bottleneck_activation': 'sigmoid'}})
        add('good', {{**TINY, 'model.shortcut': 'none'}})


      SWEEPS = {{'tiny': sweep_tiny}}
      '''))
  workroot = tmp_path / 'runs'
  args = ['--config', str(config), '--sweep', 'tiny', '--workroot', str(workroot)]
  manifest_file = workroot / 'tiny' / 'manifest.json'

  def runs():
    return {run['name']: run for run in manifest_lib.read_manifest(manifest_file)['runs']}

  def attempts(name):
    return (workroot / 'tiny' / name / 'launch.log').read_text().count('launch.sweep:')

  code, out = run_sweep(capsys, *args)
  assert code == 1, out.out + out.err
  bad, good = runs()['tiny/bad'], runs()['tiny/good']
  assert bad['status'] == 'failed' and bad['exit_code'] not in (0, None)
  assert 'sigmoid' in bad['error']  # the log's tail names the problem
  assert 'FAILED   tiny/bad' in out.out and 'finished tiny/good' in out.out
  # The sweep's progress line after each run (one at a time, bad first).
  assert 'tiny: 2 runs: 0 finished, 0 running, 1 failed, 1 not started; ' in out.out
  assert ('tiny: 2 runs: 1 finished, 0 running, 1 failed, 0 not started; nothing left but the '
          'failed runs') in out.out
  assert good['status'] == 'finished' and good['exit_code'] == 0
  final = json.loads((workroot / 'tiny' / 'good' / 'final_metrics.json').read_text())
  assert final['step'] == TINY['train.num_steps']
  config_json = json.loads((workroot / 'tiny' / 'good' / 'config.json').read_text())
  assert config_json['model']['shortcut'] == 'none'  # the override reached the run

  # The same command again: the finished run is skipped, the failed one retried.
  code, out = run_sweep(capsys, *args)
  assert code == 1
  assert '1 already finished, 1 to run' in out.out and 'started  tiny/good' not in out.out
  assert attempts('good') == 1 and attempts('bad') == 2
  assert runs()['tiny/good']['status'] == 'finished'


FAKE_MAIN = textwrap.dedent('''\
    """Stands in for mnv2_jax.main: trains while HOLD exists; saves and exits 143 on SIGTERM."""
    import json, os, signal, sys, time
    workdir = sys.argv[sys.argv.index('--workdir') + 1]
    hold = sys.argv[sys.argv.index('--hold') + 1]
    os.makedirs(workdir, exist_ok=True)
    state = os.path.join(workdir, 'state.json')
    resumed = os.path.exists(state)

    def save_and_exit(signum, frame):
      json.dump({'saved': True}, open(state, 'w'))
      print('saved a checkpoint', flush=True)
      sys.exit(143)

    signal.signal(signal.SIGTERM, save_and_exit)
    print('resumed' if resumed else 'started', flush=True)
    open(os.path.join(workdir, 'running'), 'w').close()
    while os.path.exists(hold):
      time.sleep(0.1)
    json.dump({'step': 1}, open(os.path.join(workdir, 'final_metrics.json'), 'w'))
    ''')


def test_ctrl_c_stops_runs_with_sigterm_so_they_save_and_the_next_launch_resumes_them(
    tmp_path):
  # The launcher's half of Ctrl-C, with a stand-in for mnv2_jax.main (whose own
  # SIGTERM checkpointing is tested with the training loop).
  fake_main = tmp_path / 'fake_main.py'
  fake_main.write_text(FAKE_MAIN)
  hold = tmp_path / 'hold'  # the stand-in trains until this file goes
  hold.touch()
  driver = tmp_path / 'driver.py'
  driver.write_text(textwrap.dedent(f'''\
      import faulthandler, shlex, signal, sys
      sys.path.insert(0, '{REPO_ROOT}')  # a script's sys.path has its own folder, not the cwd
      from launch import local
      faulthandler.register(signal.SIGUSR1)  # prints its stack if the test finds it hung
      # Ctrl-C as at a terminal: a test run started as a background job (`cmd &` in a shell
      # without job control) hands its children SIGINT ignored, and Python leaves it so.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      runs = []
      for name in ('a', 'b', 'c'):
        workdir = '{tmp_path}/runs/s/' + name
        runs.append({{'name': 's/' + name, 'overrides': {{}}, 'workdir': workdir,
                     'command': shlex.join([sys.executable, '{fake_main}', '--workdir', workdir,
                                            '--hold', '{hold}'])}})
      manifest = {{'sweep': 's', 'workroot': '{tmp_path}/runs', 'repo_dir': '{REPO_ROOT}',
                  'runs': runs}}
      sys.exit(local.LocalRunner(manifest, parallel=2, grace_seconds=30).run())
      '''))
  workdirs = [tmp_path / 'runs' / 's' / name for name in ('a', 'b', 'c')]
  launcher = subprocess.Popen([sys.executable, str(driver)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  # Generous: on a loaded machine two interpreters may take a minute to start.
  deadline = time.monotonic() + 240
  while not all((w / 'running').exists() for w in workdirs[:2]) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert all((w / 'running').exists() for w in workdirs[:2]), 'the first two runs never started'
  manifest_file = tmp_path / 'runs' / 's' / 'manifest.json'
  pids = [run['pid'] for run in manifest_lib.read_manifest(manifest_file)['runs'][:2]]
  launcher.send_signal(signal.SIGINT)
  try:
    output = launcher.communicate(timeout=60)[0]
  except subprocess.TimeoutExpired:
    launcher.send_signal(signal.SIGUSR1)  # its Python stack, for the failure message
    time.sleep(2)
    launcher.kill()
    hold.unlink()  # lets the stand-ins end
    pytest.fail('the launcher did not stop within 60 s of Ctrl-C; its output and stack:\n' +
                launcher.communicate()[0])
  assert launcher.returncode == 130, output
  for pid in pids:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)  # stopped, not orphaned
  statuses = [run['status'] for run in manifest_lib.read_manifest(manifest_file)['runs']]
  assert statuses == ['interrupted', 'interrupted', 'pending']
  for workdir in workdirs[:2]:
    assert 'saved a checkpoint' in (workdir / 'launch.log').read_text()  # got SIGTERM
  assert not workdirs[2].exists()

  # The next launch resumes the stopped runs and runs the one never started.
  hold.unlink()
  assert subprocess.run([sys.executable, str(driver)], cwd=REPO_ROOT,
                        capture_output=True).returncode == 0
  assert [run['status'] for run in manifest_lib.read_manifest(manifest_file)['runs']] == [
      'finished'] * 3
  assert 'resumed' in (workdirs[0] / 'launch.log').read_text()


def test_a_partly_finished_seed_set_skips_finished_seeds_and_resumes_the_rest(tmp_path):
  # Seed 0 finished, seed 1 stopped with a checkpoint, seed 2 never started;
  # the stand-in for mnv2_jax.main says whether it resumed.
  fake_main = tmp_path / 'fake_main.py'
  fake_main.write_text(FAKE_MAIN)
  workroot = tmp_path / 'runs'
  manifest = manifest_lib.build_manifest(DEFAULT_CONFIG, 'fig6a', str(workroot), 'local',
                                         seeds=[0, 1, 2], only=['fig6a/linear_bottleneck/*'])
  seed_dirs = [workroot / 'fig6a' / 'linear_bottleneck' / f'seed{seed}' for seed in range(3)]
  seed_dirs[0].mkdir(parents=True)
  (seed_dirs[0] / 'final_metrics.json').write_text('{"step": 1}')
  seed_dirs[1].mkdir(parents=True)
  (seed_dirs[1] / 'state.json').write_text('{"saved": true}')
  for run in manifest['runs']:
    run['command'] = shlex.join([
        sys.executable, str(fake_main), '--workdir', run['workdir'],
        '--hold', str(tmp_path / 'no_hold'), f'--config.seed={run["overrides"]["seed"]}'])
  echoed = []
  assert local.LocalRunner(manifest, echo=echoed.append).run() == 0
  assert 'sweep fig6a: 3 runs, 1 already finished, 2 to run, 1 at a time' in echoed
  assert ('fig6a: 3 runs: 2 finished, 0 running, 0 failed, 1 not started; time left: not '
          'measured yet') in echoed
  assert 'fig6a: 3 runs: 3 finished, 0 running, 0 failed, 0 not started; nothing left to run' in (
      echoed)
  assert not (seed_dirs[0] / 'launch.log').exists()  # not started again
  assert 'resumed' in (seed_dirs[1] / 'launch.log').read_text()
  assert '--config.seed=1' in (seed_dirs[1] / 'launch.log').read_text()
  assert 'resumed' not in (seed_dirs[2] / 'launch.log').read_text()
  assert '--config.seed=2' in (seed_dirs[2] / 'launch.log').read_text()
  written = manifest_lib.read_manifest(workroot / 'fig6a' / 'manifest.json')
  assert [(run['name'], run['status']) for run in written['runs']] == [
      (f'fig6a/linear_bottleneck/seed{seed}', 'finished') for seed in range(3)]


@pytest.mark.parametrize('finished', [True, False])
def test_a_run_recorded_with_other_settings_is_refused_instead_of_kept_or_resumed(
    tmp_path, capsys, finished):
  # e.g. a sweep's budget doubled after its runs finished: keeping them would mix budgets.
  workdir = tmp_path / 'runs' / 'fig6a' / 'linear_bottleneck'
  workdir.mkdir(parents=True)
  (workdir / manifest_lib.RUN_CONFIG_FILE).write_text(json.dumps(
      {'train': {'num_steps': 2400, 'eval_every_steps': 400}, 'model': {}}))
  if finished:
    (workdir / 'final_metrics.json').write_text('{"step": 2400}')
  code, out = run_sweep(capsys, '--config', DEFAULT_CONFIG, '--sweep', 'fig6a', '--workroot',
                        str(tmp_path / 'runs'), '--dry-run')
  assert code != 0 and not out.out
  message = out.err.strip().splitlines()[-1]
  assert 'fig6a/linear_bottleneck' in message and 'train.num_steps=2400' in message
  assert 'the sweep now sets 4800' in message and 'fresh --workroot' in message
  assert ('keep its result' if finished else 'resume it') in message


def test_a_run_recorded_with_the_same_settings_or_before_a_field_existed_is_accepted(tmp_path):
  workdir = tmp_path / 'runs' / 'fig6a' / 'linear_bottleneck'
  workdir.mkdir(parents=True)
  built = manifest_lib.build_manifest(DEFAULT_CONFIG, 'fig6a', str(tmp_path / 'runs'), 'local')
  overrides = built['runs'][0]['overrides']
  recorded = {}
  for key, value in overrides.items():
    if key != 'optimizer.classifier_learning_rate_multiplier':  # a field added later
      *parents, leaf = key.split('.')
      node = recorded
      for part in parents:
        node = node.setdefault(part, {})
      node[leaf] = value
  (workdir / manifest_lib.RUN_CONFIG_FILE).write_text(json.dumps(recorded))
  assert manifest_lib.recorded_config_conflicts(str(workdir), overrides) == []
  manifest_lib.build_manifest(DEFAULT_CONFIG, 'fig6a', str(tmp_path / 'runs'), 'local')


def test_the_launcher_reads_the_config_file_the_training_loop_writes():
  from mnv2_jax.train import loop  # pylint: disable=import-outside-toplevel
  assert manifest_lib.RUN_CONFIG_FILE == loop.CONFIG_FILE


def test_log_tail_keeps_the_last_lines_after_progress_bars(tmp_path):
  log = tmp_path / 'log'
  log.write_bytes(b'one\ntwo\r 10%\r 50%\r100%\nthree\n')
  assert local.log_tail(log, lines=2) == '100%\nthree'
  assert local.log_tail(tmp_path / 'missing') == ''
