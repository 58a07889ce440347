"""The per-device train and eval steps: loss, update, EMA, dropout keys, eval counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from configs import recipe
from mnv2_jax import parallel
from mnv2_jax.tasks import classification
from mnv2_jax.train import optimizer, state as state_lib, step as step_lib
from tiny_training import RESOLUTION, SMOOTHED_LOSS, TinyNet, random_batch, tiny_config


def _tiny_state(config, model=None):
  model = model or TinyNet()
  tx = optimizer.create_optimizer(config, steps_per_epoch=10)
  return state_lib.create_train_state(jax.random.key(0), model, tx,
                                      (1, RESOLUTION, RESOLUTION, 3))


def test_label_smoothing_0_1_over_4_classes_targets_0_925_and_0_025():
  logits = jnp.array([[2.0, -1.0, 0.5, 0.0]])
  log_probs = np.asarray(jax.nn.log_softmax(logits))[0]
  expected = -(0.925 * log_probs[2] + 0.025 * (log_probs.sum() - log_probs[2]))
  loss = step_lib.cross_entropy_loss(logits, jnp.array([2]), label_smoothing=0.1)
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
  plain = step_lib.cross_entropy_loss(logits, jnp.array([2]))
  np.testing.assert_allclose(plain[0], -log_probs[2], rtol=1e-6)


def test_one_device_step_applies_the_optimizer_to_the_batch_gradient_and_updates_the_ema():
  config = tiny_config()
  state = _tiny_state(config)
  batch = random_batch()
  schedule = optimizer.create_learning_rate_schedule(config, 10)

  def loss_fn(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                     batch['image'], train=True, mutable=['batch_stats'])
    return jnp.mean(step_lib.cross_entropy_loss(logits, batch['label'], 0.1)), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  param_updates, _ = state.tx.update(grads, state.opt_state, state.params)
  expected_params = optax.apply_updates(state.params, param_updates)

  dp = parallel.DataParallel('shard_map', jax.devices()[:1])
  p_train = dp.wrap_train_step(functools.partial(
      step_lib.train_step, loss_fn=SMOOTHED_LOSS, ema_decay=0.9999, learning_rate_fn=schedule))
  new_state, metrics = p_train(dp.replicate(state), dp.shard_batch(batch), jax.random.key(1))
  new_state, metrics = dp.unreplicate(new_state), dp.fetch_metrics(metrics)

  assert int(new_state.step) == 1
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['learning_rate'], 0.045 * 8 / 96, rtol=1e-6)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, new_state.params, expected_params)
  jax.tree.map(close, new_state.batch_stats, updates['batch_stats'])
  # First EMA update: decay min(0.9999, 1/10) = 0.1.
  jax.tree.map(lambda e, old, new: close(e, 0.1 * old + 0.9 * new),
               new_state.ema_params, state.params, new_state.params)
  jax.tree.map(lambda e, old, new: close(e, 0.1 * old + 0.9 * new),
               new_state.ema_batch_stats, state.batch_stats, new_state.batch_stats)


def test_dropout_keys_differ_per_device_and_per_step_and_repeat_for_the_same_seed():
  mesh = Mesh(np.asarray(jax.devices()[:4]), ('batch',))

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P()), out_specs=P('batch'),
                     check_vma=False)
  def keys(rng, step):
    return jax.random.key_data(step_lib.dropout_key(rng, step, 'batch'))[None]

  rng = jax.random.key(7)
  step_0, step_1 = np.asarray(keys(rng, 0)), np.asarray(keys(rng, 1))
  all_keys = {tuple(k) for k in np.concatenate([step_0, step_1])}
  assert len(all_keys) == 8
  np.testing.assert_array_equal(np.asarray(keys(jax.random.key(7), 0)), step_0)


@pytest.mark.parametrize('strategy', parallel.STRATEGIES)
def test_eval_step_counts_only_unmasked_examples_over_all_devices(strategy):
  state = _tiny_state(tiny_config())
  batch = random_batch()
  batch['mask'] = np.array([True] * 5 + [False] * 3)
  dp = parallel.DataParallel(strategy, jax.devices()[:2])
  p_eval = dp.wrap_eval_step(functools.partial(step_lib.eval_step,
                                               evaluate_fn=classification.evaluate_logits))
  sums, examples = p_eval(dp.replicate(state), dp.shard_batch(batch))
  counts = dp.fetch_metrics(sums)
  assert examples == {}  # classification sends nothing per example back
  logits = state.apply_fn(state.variables, batch['image'][:5], train=False)
  expected_loss = float(jnp.sum(step_lib.cross_entropy_loss(logits, batch['label'][:5])))
  expected_top1 = int(np.sum(np.argmax(logits, -1) == batch['label'][:5]))
  assert counts['count'] == 5
  np.testing.assert_allclose(counts['loss_sum'], expected_loss, rtol=1e-5)
  assert counts['top1_correct'] == expected_top1
  assert counts['top5_correct'] == 5  # 4 classes: the top 5 always holds the label
  # A fresh state's EMA is a copy of the weights.
  np.testing.assert_allclose(counts['ema_loss_sum'], counts['loss_sum'], rtol=1e-6)


def test_bfloat16_model_computes_in_bfloat16_and_keeps_float32_params():
  config = tiny_config()
  config.model = recipe.model(name='mobilenet_v2', width_multiplier=0.35, dtype='bfloat16')
  model = state_lib.create_model(config, num_classes=10)
  tx = optimizer.create_optimizer(config, steps_per_epoch=10)
  state = jax.eval_shape(lambda: state_lib.create_train_state(jax.random.key(0), model, tx,
                                                              (1, 32, 32, 3)))
  batch = {'image': jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct((2,), jnp.int32)}
  mesh = Mesh(np.asarray(jax.devices()[:1]), ('batch',))
  step = jax.shard_map(functools.partial(step_lib.train_step, axis_name='batch',
                                         loss_fn=SMOOTHED_LOSS), mesh=mesh,
                       in_specs=(P(), P('batch'), P()), out_specs=(P(), P()), check_vma=False)
  jaxpr, (new_state, _) = jax.make_jaxpr(step, return_shape=True)(state, batch,
                                                                   jax.random.key(0))
  assert {leaf.dtype for leaf in jax.tree.leaves(new_state.params)} == {jnp.dtype(jnp.float32)}
  # The stem's 3x3 patches (its CPU form) and its 16-channel 16x16 output are bfloat16.
  assert 'bf16[2,16,16,27]' in str(jaxpr) and 'bf16[2,16,16,16]' in str(jaxpr)


def test_create_model_binds_batch_norm_to_the_device_axis_only_with_sync_batch_norm():
  config = tiny_config()
  config.model = recipe.model(name='mobilenet_v1', width_multiplier=0.25)
  assert state_lib.create_model(config, 10).batch_norm_axis_name is None
  config.train.sync_batch_norm = True
  assert state_lib.create_model(config, 10).batch_norm_axis_name == parallel.BATCH_AXIS
  config.model.dtype = 'float16'
  with pytest.raises(ValueError, match='config.model.dtype'):
    state_lib.create_model(config, 10)
