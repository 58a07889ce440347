"""Precise BN (`config.train.precise_batch_norm_batches`): evaluation with BN statistics
recomputed on training batches, the weights fixed, reported beside the moving averages'."""

import functools

import jax
import numpy as np
import pytest

from mnv2_jax import models, parallel
from mnv2_jax.train import loop, optimizer, state as state_lib, step as step_lib
from tiny_training import RESOLUTION, TinyNet, random_batch, tiny_config


def _state(model, resolution=RESOLUTION, seed=0):
  tx = optimizer.create_optimizer(tiny_config(), steps_per_epoch=2)
  state = state_lib.create_train_state(jax.random.key(seed), model, tx,
                                       (1, resolution, resolution, 3))
  # Moving averages far from any batch's statistics, as early in a run.
  moved = jax.tree.map(lambda x: x + 3.0, state.batch_stats)
  return state.replace(batch_stats=moved, ema_batch_stats=moved)


def _statistics_step(model, strategy='shard_map', num_devices=1):
  dp = parallel.DataParallel(strategy, jax.devices()[:num_devices])
  return dp, dp.wrap_statistics_step(functools.partial(
      step_lib.batch_statistics_step, statistics_model=step_lib.precise_batch_norm_model(model)))


def _statistics(model, state, images, strategy='shard_map', num_devices=1):
  dp, p_statistics = _statistics_step(model, strategy, num_devices)
  return dp.unreplicate(p_statistics(dp.replicate(state), dp.shard_batch({'image': images})))


def _close(actual, expected, tol=1e-5):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=tol, atol=tol), actual,
               expected)


@pytest.mark.parametrize('name', ['mobilenet_v2', 'mobilenet_v1'])
def test_with_a_batchs_own_statistics_inference_reproduces_training_mode_on_that_batch(name):
  # Holds only if every BN layer of the network stores the batch's statistics.
  model = models.MODELS[name](num_classes=10, width_multiplier=0.35, dropout_rate=0.0)
  images = random_batch(8, seed=3)['image']
  images = np.asarray(jax.image.resize(images, (8, 32, 32, 3), 'linear'))
  state = _state(model, resolution=32)
  statistics = _statistics(model, state, images)
  trained = model.apply(state.variables, images, train=True, mutable=['batch_stats'])[0]
  stale = model.apply(state.variables, images, train=False)
  precise = model.apply({'params': state.params, 'batch_stats': statistics['batch_stats']},
                        images, train=False)
  assert not np.allclose(stale, trained, atol=0.1)
  # Float32 rounding through 50+ layers (inference folds the statistics differently).
  np.testing.assert_allclose(precise, trained, rtol=2e-3, atol=2e-3)


def test_the_ema_weights_get_statistics_of_their_own():
  model = TinyNet()
  state = _state(model)
  state = state.replace(ema_params=jax.tree.map(lambda x: 0.5 * x, state.params))
  statistics = _statistics(model, state, random_batch(8)['image'])
  own = _statistics(model, state.replace(params=state.ema_params), random_batch(8)['image'])
  _close(statistics['ema_batch_stats'], own['batch_stats'])
  assert not np.allclose(statistics['ema_batch_stats']['stem_bn']['mean'],
                         statistics['batch_stats']['stem_bn']['mean'])


@pytest.mark.parametrize('strategy', parallel.STRATEGIES)
def test_on_several_devices_the_statistics_are_the_mean_of_each_devices(strategy):
  # As the train step averages the per-device moving averages.
  model = TinyNet()
  state = _state(model)
  images = random_batch(8)['image']
  halves = [_statistics(model, state, part) for part in (images[:4], images[4:])]
  _close(_statistics(model, state, images, strategy, num_devices=2),
         jax.tree.map(lambda a, b: (a + b) / 2, *halves))


def test_recomputed_statistics_are_the_plain_mean_over_the_batches(monkeypatch):
  # Not a moving average: each of the configured batches counts the same.
  model = TinyNet()
  state = _state(model)
  batches = [random_batch(8, seed=seed) for seed in (10, 11, 12)]
  dp, p_statistics = _statistics_step(model)
  monkeypatch.setattr(loop.data, 'create_train_iterator',
                      lambda *args, **kwargs: iter(batches))
  config = tiny_config()
  config.train.precise_batch_norm_batches = 3
  precise = loop.recompute_batch_norm(p_statistics, dp.replicate(state), dp, config,
                                      task=type('Task', (), {'train_example': None})())
  each = [_statistics(model, state, batch['image'])['batch_stats'] for batch in batches]
  _close(dp.unreplicate(precise.batch_stats), jax.tree.map(lambda *x: sum(x) / 3, *each))
  _close(dp.unreplicate(precise.params), state.params, tol=0)


def test_a_model_without_a_batch_norm_momentum_field_is_refused_naming_the_fix():
  class NoField:
    pass
  with pytest.raises(ValueError, match='precise_batch_norm_batches=0'):
    step_lib.precise_batch_norm_model(NoField())
