"""Two processes with two CPU devices each (gloo on loopback) train like one 4-device process."""

import functools
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
from flax import traverse_util

from mnv2_jax import parallel
from mnv2_jax.train import optimizer, state as state_lib, step as step_lib
from tiny_training import RESOLUTION, SMOOTHED_LOSS, TinyNet, random_batch, tiny_config
import train_test_utils as utils

NUM_STEPS = 2
STRATEGIES = ('shard_map', 'pmap')

WORKER = textwrap.dedent('''
    import sys
    import jax
    jax.config.update('jax_num_cpu_devices', 2)  # before any backend starts
    import functools
    import ml_collections
    import numpy as np
    from flax import traverse_util
    from mnv2_jax import parallel
    from mnv2_jax.train import optimizer, state as state_lib, step as step_lib
    from tiny_training import RESOLUTION, SMOOTHED_LOSS, TinyNet, random_batch, tiny_config

    port, process_id, out_prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    parallel.initialize_distributed(ml_collections.ConfigDict({'distributed': {
        'initialize': True, 'coordinator_address': f'127.0.0.1:{port}',
        'num_processes': 2, 'process_id': process_id}}))
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    model = TinyNet(dropout_rate=0.5)  # per-device BN and dropout: the sensitive case
    tx = optimizer.create_optimizer(tiny_config(), steps_per_epoch=2)
    for strategy in sys.argv[4:]:
      state = state_lib.create_train_state(jax.random.key(0), model, tx,
                                           (1, RESOLUTION, RESOLUTION, 3))
      dp = parallel.DataParallel(strategy)
      p_train = dp.wrap_train_step(functools.partial(step_lib.train_step, loss_fn=SMOOTHED_LOSS,
                                                     ema_decay=0.9999))
      state = dp.replicate(state)
      for i in range(%(num_steps)d):
        global_batch = random_batch(8, seed=i)
        local_batch = {k: v[4 * process_id:4 * process_id + 4] for k, v in global_batch.items()}
        state, metrics = p_train(state, dp.shard_batch(local_batch), jax.random.key(1))
      host = dp.unreplicate(state)
      flat = traverse_util.flatten_dict({'params': host.params, 'batch_stats': host.batch_stats})
      np.savez(f'{out_prefix}_{strategy}_{process_id}.npz',
               loss=dp.fetch_metrics(metrics)['loss'],
               **{'/'.join(k): v for k, v in flat.items()})
    jax.distributed.shutdown()
''') % {'num_steps': NUM_STEPS}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _single_process_reference(strategy):
  """The same run in this process on 4 of its 8 CPU devices."""
  tx = optimizer.create_optimizer(tiny_config(), steps_per_epoch=2)
  state = state_lib.create_train_state(jax.random.key(0), TinyNet(dropout_rate=0.5), tx,
                                       (1, RESOLUTION, RESOLUTION, 3))
  dp = parallel.DataParallel(strategy, jax.devices()[:4])
  p_train = dp.wrap_train_step(functools.partial(step_lib.train_step, loss_fn=SMOOTHED_LOSS,
                                                 ema_decay=0.9999))
  state = dp.replicate(state)
  for i in range(NUM_STEPS):
    state, metrics = p_train(state, dp.shard_batch(random_batch(8, seed=i)), jax.random.key(1))
  host = dp.unreplicate(state)
  flat = traverse_util.flatten_dict({'params': host.params, 'batch_stats': host.batch_stats})
  return {'/'.join(k): v for k, v in flat.items()}, dp.fetch_metrics(metrics)['loss']


def test_two_processes_with_two_devices_each_agree_with_one_four_device_process(tmp_path):
  script = tmp_path / 'worker.py'
  script.write_text(WORKER)
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  repo_dir = os.path.dirname(tests_dir)
  env = utils.subprocess_environment(PYTHONPATH=os.pathsep.join([tests_dir, repo_dir]))
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, str(script), str(port), str(i),
                               str(tmp_path / 'run'), *STRATEGIES],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  try:
    outputs = [w.communicate(timeout=400)[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  for i, w in enumerate(workers):
    assert w.returncode == 0, f'process {i} failed:\n{outputs[i][-3000:]}'

  for strategy in STRATEGIES:
    expected, expected_loss = _single_process_reference(strategy)
    for i in range(2):
      result = np.load(tmp_path / f'run_{strategy}_{i}.npz')
      np.testing.assert_allclose(result['loss'], expected_loss, rtol=1e-5)
      assert set(result.files) == set(expected) | {'loss'}
      for name, value in expected.items():
        np.testing.assert_allclose(result[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=f'{strategy} process {i} {name}')
