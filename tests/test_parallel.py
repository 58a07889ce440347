"""Data parallelism on 8 fake CPU devices: shard_map and pmap, synchronised or per-device BN."""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from mnv2_jax import parallel
from mnv2_jax.train import optimizer, state as state_lib, step as step_lib
from tiny_training import RESOLUTION, SMOOTHED_LOSS, TinyNet, random_batch, tiny_config

NUM_STEPS = 3


@functools.lru_cache(maxsize=None)
def _setup(strategy, num_devices, model):
  """The initial host state and the compiled data-parallel step (compiled once per case)."""
  tx = optimizer.create_optimizer(tiny_config(), steps_per_epoch=2)
  state = state_lib.create_train_state(jax.random.key(0), model, tx,
                                       (1, RESOLUTION, RESOLUTION, 3))
  dp = parallel.DataParallel(strategy, jax.devices()[:num_devices])
  p_train = dp.wrap_train_step(functools.partial(step_lib.train_step, loss_fn=SMOOTHED_LOSS,
                                                 ema_decay=0.9999))
  return state, dp, p_train


def _train(strategy, num_devices, model, dropout_seed=1):
  """NUM_STEPS steps on the same global batches; the host state after each step."""
  state, dp, p_train = _setup(strategy, num_devices, model)
  state, history = dp.replicate(state), []
  for i in range(NUM_STEPS):
    state, metrics = p_train(state, dp.shard_batch(random_batch(8, seed=i)),
                             jax.random.key(dropout_seed))
    history.append((dp.unreplicate(state), dp.fetch_metrics(metrics)))
  return history


def _assert_trees_close(actual, expected, tol):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=tol, atol=tol),
               actual, expected)


@pytest.mark.parametrize('strategy', parallel.STRATEGIES)
def test_8_devices_give_the_same_update_as_1_device_with_synchronised_batch_norm(strategy):
  assert jax.device_count() == 8
  model = TinyNet(batch_norm_axis_name='batch')
  expected_state, expected_metrics = _train('shard_map', 1, model)[-1]
  state, metrics = _train(strategy, 8, model)[-1]
  assert int(state.step) == NUM_STEPS
  for field in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats'):
    _assert_trees_close(getattr(state, field), getattr(expected_state, field), 1e-5)
  np.testing.assert_allclose(metrics['loss'], expected_metrics['loss'], rtol=1e-5)


def test_per_device_batch_norm_averages_each_devices_moving_statistics():
  model = TinyNet(dropout_rate=0.5)
  state, _ = _train('shard_map', 8, model)[0]
  initial, _, _ = _setup('shard_map', 8, model)
  images = random_batch(8, seed=0)['image']
  per_device = [initial.apply_fn(initial.variables, images[i:i + 1], train=True,
                                 mutable=['batch_stats'], rngs={'dropout': jax.random.key(0)}
                                 )[1]['batch_stats'] for i in range(8)]
  expected = jax.tree.map(lambda *stats: np.mean(np.stack(stats), axis=0), *per_device)
  _assert_trees_close(state.batch_stats, expected, 1e-5)


def test_shard_map_and_pmap_agree_with_per_device_batch_norm_and_dropout():
  model = TinyNet(dropout_rate=0.5)
  shard_map_state, _ = _train('shard_map', 8, model)[-1]
  pmap_state, _ = _train('pmap', 8, model)[-1]
  _assert_trees_close(pmap_state.params, shard_map_state.params, 1e-6)
  _assert_trees_close(pmap_state.batch_stats, shard_map_state.batch_stats, 1e-6)
  # Dropout is live: another dropout seed ends elsewhere.
  other_seed, _ = _train('shard_map', 8, model, dropout_seed=2)[-1]
  gap = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                     other_seed.params, shard_map_state.params)
  assert max(jax.tree.leaves(gap)) > 1e-4


@pytest.mark.parametrize('strategy', parallel.STRATEGIES)
def test_replicate_then_unreplicate_returns_the_same_host_values(strategy):
  dp = parallel.DataParallel(strategy)
  tree = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': np.int32(4)}
  back = dp.unreplicate(dp.replicate(tree))
  np.testing.assert_array_equal(back['w'], tree['w'])
  assert back['step'] == 4 and isinstance(back['w'], np.ndarray)
  # A scalar computed from the replicated state with plain jit reads back too.
  largest = jax.jit(lambda t: t['w'].max())(dp.replicate(tree))
  assert dp.fetch_metrics({'largest': largest}) == {'largest': 5.0}


@pytest.mark.parametrize('strategy', parallel.STRATEGIES)
def test_batch_not_divisible_by_the_devices_fails_naming_the_fix(strategy):
  dp = parallel.DataParallel(strategy)
  with pytest.raises(ValueError, match='divisible by 8'):
    dp.shard_batch(random_batch(6))


def test_unknown_strategy_fails_with_the_allowed_values():
  with pytest.raises(ValueError, match="parallel_strategy must be one of \\('shard_map', 'pmap'\\)"):
    parallel.DataParallel('horovod')


def test_initialize_distributed_does_nothing_unless_configured():
  config = ml_collections.ConfigDict({'distributed': {'initialize': False}})
  parallel.initialize_distributed(config)
  assert jax.process_count() == 1
