"""A run killed with SIGKILL after a checkpoint and restarted ends bitwise identical.

Real subprocesses of `python -m mnv2_jax.main`, as a user would run them: an
uninterrupted run, a run killed with SIGKILL (no chance to clean up) at
whatever step it reached after its first checkpoint, and the same command
re-run on its workdir, which takes over the killed run's workdir lock. All
saved leaves (params, BN statistics, optimizer state, EMA copies, step) of the
final checkpoints must have the same bytes.

The runs share the test run's persistent compilation cache, so only the first
one compiles (a cached executable computes the same bits as a fresh compile;
this test would see it otherwise). The code and config must not change between the runs:
a resumed run continues with the code and config of the restart.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import default as default_config
from mnv2_jax import checkpoint
from mnv2_jax.train import loop
import train_test_utils as utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 12
CHECKPOINT_EVERY = 4
TIMEOUT_SECONDS = 600


def _command(workdir, data_dir):
  # 64 training images in batches of 8: 8 steps per epoch, so the resumed run
  # also crosses an epoch boundary of the data pipeline.
  return [sys.executable, '-m', 'mnv2_jax.main',
          '--config', 'configs/default.py:width=0.35,res=32,batch=8',
          '--workdir', workdir,
          f'--config.train.num_steps={NUM_STEPS}',
          f'--config.train.checkpoint_every_steps={CHECKPOINT_EVERY}',
          f'--config.train.eval_every_steps={NUM_STEPS}',
          '--config.train.log_every_steps=4',
          '--config.train.keep_checkpoints=10',
          f'--config.data.data_dir={data_dir}',
          '--config.data.num_train_examples=64',
          '--config.data.num_test_examples=16',
          '--config.data.eval_batch_size=16']


def _environment():
  # Every program cached, however small; one CPU device in every run.
  return utils.subprocess_environment(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _checkpoint_steps(workdir):
  directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return []
  # Unfinished saves live in '<step>.orbax-checkpoint-tmp-*' until renamed.
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _run(command, env):
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def _run_and_kill_after_first_checkpoint(command, env):
  """Starts a run and SIGKILLs it as soon as a first checkpoint is complete."""
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  workdir = command[command.index('--workdir') + 1]
  deadline = time.time() + TIMEOUT_SECONDS
  while time.time() < deadline and process.poll() is None:
    if _checkpoint_steps(workdir):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.01)
  return process.wait(timeout=TIMEOUT_SECONDS)


def _saved_state(workdir, step):
  """A checkpoint's state as host arrays, keyed by path."""
  path = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step), 'state')
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                metadata.tree)
    tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree.leaves_with_path(tree)}


def test_run_killed_after_a_checkpoint_and_restarted_ends_bitwise_identical(tmp_path):
  data_dir, env = str(tmp_path / 'tfds'), _environment()
  uninterrupted, interrupted = str(tmp_path / 'uninterrupted'), str(tmp_path / 'interrupted')
  _run(_command(uninterrupted, data_dir), env)

  returncode = _run_and_kill_after_first_checkpoint(_command(interrupted, data_dir), env)
  assert returncode == -signal.SIGKILL
  killed_at = max(_checkpoint_steps(interrupted))
  assert killed_at < NUM_STEPS
  assert not os.path.exists(os.path.join(interrupted, 'final_metrics.json'))

  log = _run(_command(interrupted, data_dir), env)
  assert 'Taking over workdir' in log and 'it was killed' in log  # its lock was left behind
  assert f'Resuming from step {killed_at}' in log
  assert os.path.exists(os.path.join(interrupted, 'final_metrics.json'))
  # run_info.json records both starts of the interrupted run, the uninterrupted one's only one.
  with open(os.path.join(interrupted, 'run_info.json')) as f:
    assert [start['start_step'] for start in json.load(f)['starts']] == [0, killed_at]
  with open(os.path.join(uninterrupted, 'run_info.json')) as f:
    assert [start['start_step'] for start in json.load(f)['starts']] == [0]

  expected = _saved_state(uninterrupted, NUM_STEPS)
  actual = _saved_state(interrupted, NUM_STEPS)
  assert expected.keys() == actual.keys()
  assert any('ema_batch_stats' in key for key in expected)
  differing = [key for key in expected
               if expected[key].dtype != actual[key].dtype
               or expected[key].tobytes() != actual[key].tobytes()]
  assert not differing, f'{len(differing)} of {len(expected)} leaves differ, e.g. {differing[:3]}'


def test_changed_config_fields_names_changed_added_and_removed_fields():
  previous = {'seed': 0, 'model': {'width_multiplier': 0.35, 'dropout_rate': 0.2}}
  current = {'seed': 0, 'model': {'width_multiplier': 0.5, 'batch_norm_momentum': 0.9}}
  assert loop.changed_config_fields(previous, current) == [
      'model.batch_norm_momentum', 'model.dropout_rate', 'model.width_multiplier']
  assert loop.changed_config_fields(previous, previous) == []


def test_resuming_with_a_changed_config_warns(tmp_path, caplog):
  config = default_config.get_config('width=0.35,res=32,batch=8')
  (tmp_path / loop.CONFIG_FILE).write_text(config.to_json_best_effort())
  os.makedirs(tmp_path / checkpoint.CHECKPOINT_DIR / '4')
  with caplog.at_level(logging.WARNING):
    loop._warn_if_config_changed(str(tmp_path), config)  # pylint: disable=protected-access
  assert 'differs' not in caplog.text
  config.unlock()
  config.seed = 1
  with caplog.at_level(logging.WARNING):
    loop._warn_if_config_changed(str(tmp_path), config)  # pylint: disable=protected-access
  assert 'differs from the previous run in seed' in caplog.text
