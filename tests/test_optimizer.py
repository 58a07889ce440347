"""The paper's optimiser recipe: TF1 RMSProp, masked L2, learning rates, EMA warm-up."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from configs import default
from mnv2_jax import models
from mnv2_jax.models.architecture import mobilenet_v2_spec
from mnv2_jax.train import optimizer
from tiny_training import tiny_config

# A parameter tree with each kind of leaf the mask must tell apart.
PARAM_SHAPES = {
    'stem_conv': {'kernel': (3, 3, 3, 4)},
    'stem_bn': {'scale': (4,), 'bias': (4,)},
    'block_1': {'expand_conv': {'kernel': (1, 1, 4, 6)},
                'depthwise_conv': {'kernel': (3, 3, 1, 6)},
                'project_conv': {'kernel': (1, 1, 6, 4)},
                'project_bn': {'scale': (4,), 'bias': (4,)}},
    'classifier': {'kernel': (4, 5), 'bias': (5,)},
}
DECAYED = {('stem_conv', 'kernel'), ('block_1', 'expand_conv', 'kernel'),
           ('block_1', 'project_conv', 'kernel'), ('classifier', 'kernel')}


def _random_tree(rng, scale=1.0):
  return jax.tree.map(lambda shape: (scale * rng.standard_normal(shape)).astype(np.float32),
                      PARAM_SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def _tf1_rmsprop_reference(params, grads_per_step, learning_rates, weight_decay):
  """NumPy transcription of tf.compat.v1.train.RMSPropOptimizer(decay=0.9,
  momentum=0.9, epsilon=1.0) on `loss + weight_decay * sum(w^2)/2` (masked)."""
  flat = {k: v.astype(np.float64) for k, v in traverse_util.flatten_dict(params).items()}
  ms = {k: np.ones_like(v) for k, v in flat.items()}  # TF1 initialises ms to 1.
  mom = {k: np.zeros_like(v) for k, v in flat.items()}
  history = []
  for grads, lr in zip(grads_per_step, learning_rates):
    for k, g in traverse_util.flatten_dict(grads).items():
      g = g.astype(np.float64) + (weight_decay * flat[k] if k in DECAYED else 0.0)
      ms[k] = 0.9 * ms[k] + 0.1 * g * g
      mom[k] = 0.9 * mom[k] + lr * g / np.sqrt(ms[k] + 1.0)
      flat[k] = flat[k] - mom[k]
    history.append(dict(flat))
  return history


def test_optimizer_matches_numpy_tf1_rmsprop_with_l2_mask_under_a_staircase_schedule():
  # 2 steps per epoch, decay every epoch by 0.5: the rate halves every 2 steps,
  # which separates TF1's lr-inside-momentum from lr-outside-momentum variants.
  config = tiny_config(decay_epochs=1.0, decay_rate=0.5, weight_decay=0.05)
  steps_per_epoch, num_steps = 2, 7
  rng = np.random.default_rng(0)
  params = _random_tree(rng)
  grads_per_step = [_random_tree(rng, scale=0.5) for _ in range(num_steps)]
  lr0 = 0.045 * 8 / 96
  learning_rates = [lr0 * 0.5 ** (t // 2) for t in range(num_steps)]
  expected = _tf1_rmsprop_reference(params, grads_per_step, learning_rates, 0.05)

  tx = optimizer.create_optimizer(config, steps_per_epoch)
  opt_state = tx.init(params)
  update = jax.jit(tx.update)
  for t, grads in enumerate(grads_per_step):
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    actual = traverse_util.flatten_dict(params)
    for k in actual:
      np.testing.assert_allclose(actual[k], expected[t][k], rtol=2e-5, atol=1e-7,
                                 err_msg=f'step {t} {k}')

  # The same test would catch PyTorch's order (momentum of raw steps, lr applied after).
  torch_order = optax.chain(
      optax.add_decayed_weights(0.05, mask=optimizer.l2_mask),
      optax.scale_by_rms(decay=0.9, eps=1.0, initial_scale=1.0),
      optax.trace(decay=0.9),
      optax.scale_by_learning_rate(optimizer.create_learning_rate_schedule(config, 2)))
  p = _random_tree(np.random.default_rng(0))
  s = torch_order.init(p)
  for grads in grads_per_step:
    u, s = torch_order.update(grads, s, p)
    p = optax.apply_updates(p, u)
  gap = np.max(np.abs(traverse_util.flatten_dict(p)[('stem_conv', 'kernel')]
                      - expected[-1][('stem_conv', 'kernel')]))
  assert gap > 1e-4


def test_l2_mask_selects_exactly_the_regular_kernels_of_mobilenet_v2():
  model = models.MobileNetV2(num_classes=10, width_multiplier=0.35)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  mask = traverse_util.flatten_dict(optimizer.l2_mask(shapes['params']))
  decayed = {'/'.join(path) for path, on in mask.items() if on}
  spec = mobilenet_v2_spec(0.35, 6)
  expected = {'stem_conv/kernel', 'last_conv/kernel', 'classifier/kernel'}
  for block in spec.blocks:
    expected.add(f'block_{block.index}/project_conv/kernel')
    if block.has_expansion:
      expected.add(f'block_{block.index}/expand_conv/kernel')
  assert decayed == expected
  assert len(decayed) == 3 + 17 + 16  # the first block has no expansion conv


def test_l2_mask_of_mobilenet_v1_takes_the_pointwise_convs_not_the_depthwise_ones():
  model = models.MobileNetV1(num_classes=10, width_multiplier=0.25)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  mask = traverse_util.flatten_dict(optimizer.l2_mask(shapes['params']))
  decayed = sorted('/'.join(path) for path, on in mask.items() if on)
  assert len(decayed) == 1 + 13 + 1
  assert not any('depthwise' in name or 'bn' in name or name.endswith('bias') for name in decayed)


def test_l2_loss_is_half_the_sum_of_squares_of_the_masked_kernels():
  params = _random_tree(np.random.default_rng(1))
  flat = traverse_util.flatten_dict(params)
  expected = 0.5 * sum(float(np.sum(flat[k].astype(np.float64) ** 2)) for k in DECAYED)
  np.testing.assert_allclose(float(optimizer.l2_loss(params)), expected, rtol=1e-6)


def test_learning_rate_is_0_045_per_96_images_with_staircase_decay_every_2_5_epochs():
  config = tiny_config()
  config.data.batch_size = 192
  schedule = optimizer.create_learning_rate_schedule(config, steps_per_epoch=10)
  assert optimizer.scaled_learning_rate(config.optimizer, 192) == pytest.approx(0.09)
  np.testing.assert_allclose(schedule(0), 0.09, rtol=1e-6)
  np.testing.assert_allclose(schedule(24), 0.09, rtol=1e-6)  # decay_steps = int(10 * 2.5) = 25
  np.testing.assert_allclose(schedule(25), 0.09 * 0.98, rtol=1e-6)
  np.testing.assert_allclose(schedule(260), 0.09 * 0.98 ** 10, rtol=1e-6)


def test_warmup_rises_linearly_then_hands_over_to_the_decay():
  config = tiny_config(warmup_epochs=1.0)
  schedule = optimizer.create_learning_rate_schedule(config, steps_per_epoch=10)
  peak = 0.045 * 8 / 96
  np.testing.assert_allclose(schedule(0), 0.0, atol=1e-9)
  np.testing.assert_allclose(schedule(5), peak / 2, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), peak, rtol=1e-6)
  np.testing.assert_allclose(schedule(10 + 25), peak * 0.98, rtol=1e-6)


def test_cosine_schedule_peaks_after_warmup_and_ends_at_zero():
  config = tiny_config(schedule='cosine', warmup_epochs=1.0)
  config.train.num_steps = 100
  schedule = optimizer.create_learning_rate_schedule(config, steps_per_epoch=10)
  peak = 0.045 * 8 / 96
  np.testing.assert_allclose(schedule(10), peak, rtol=1e-6)
  np.testing.assert_allclose(schedule(55), peak / 2, rtol=1e-5)
  np.testing.assert_allclose(schedule(100), 0.0, atol=1e-9)


def test_ema_decay_follows_tf_warmup_min_decay_1_plus_step_over_10_plus_step():
  for step, expected in [(0, 0.1), (10, 11 / 20), (90, 91 / 100), (10**6, 0.9999)]:
    np.testing.assert_allclose(optimizer.ema_decay_at(step, 0.9999), expected, rtol=1e-6)
  assert float(optimizer.ema_decay_at(5, None)) == 0.0
  ema = optimizer.update_ema({'w': jnp.full((2,), 1.0)}, {'w': jnp.full((2,), 3.0)},
                             optimizer.ema_decay_at(0, 0.9999))
  np.testing.assert_allclose(ema['w'], 0.1 * 1.0 + 0.9 * 3.0, rtol=1e-6)


@pytest.mark.parametrize('field,value', [('schedule', 'linear'), ('momentum', 1.0),
                                         ('epsilon', 0.0), ('ema_decay', 1.0),
                                         ('classifier_learning_rate_multiplier', 0.0)])
def test_bad_optimizer_config_fails_with_the_field_name(field, value):
  config = tiny_config(**{field: value})
  with pytest.raises(ValueError, match=f'config.optimizer.{field}'):
    optimizer.create_optimizer(config, steps_per_epoch=10)


def test_momentum_is_tf_momentum_sgd_and_poly_is_deeplabs_decay():
  config = _momentum_poly_config()
  schedule = optimizer.create_learning_rate_schedule(config, steps_per_epoch=10)
  # 2 warm-up steps to the peak 0.01 * 32 / 16, then (1 - k / 8) ** 0.9 over the other 8.
  assert [float(schedule(step)) for step in (0, 1, 2)] == pytest.approx([0.0, 0.01, 0.02])
  assert float(schedule(6)) == pytest.approx(0.02 * (1 - 4 / 8) ** 0.9)
  assert float(schedule(10)) == pytest.approx(0.0)
  tx = optimizer.create_optimizer(config, steps_per_epoch=10)
  params = {'kernel': jnp.ones((2, 2))}
  state = tx.init(params)
  velocity, weights = jnp.zeros((2, 2)), params['kernel']
  for step in range(5):
    grads = {'kernel': jnp.full((2, 2), 0.5 + step)}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    velocity = 0.9 * velocity + grads['kernel']  # no weight decay in this config
    weights = weights - schedule(step) * velocity
    np.testing.assert_allclose(params['kernel'], weights, rtol=1e-6)


@pytest.mark.parametrize('field, value, message', [
    ('name', 'adam', "config.optimizer.name must be one of ('rmsprop', 'momentum')"),
    ('schedule', 'step', 'config.optimizer.schedule must be one of'),
    ('poly_power', 0.0, 'config.optimizer.poly_power must be > 0'),
])
def test_a_bad_optimizer_name_schedule_or_power_is_one_line(field, value, message):
  config = _momentum_poly_config()
  config.optimizer[field] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    optimizer.validate_optimizer_config(config.optimizer)


def _momentum_poly_config():
  config = default.get_config('batch=32,steps=10')
  config.optimizer.update(name='momentum', schedule='poly', poly_power=0.9,
                          base_learning_rate=0.01, base_batch_size=16, momentum=0.9,
                          weight_decay=0.0, classifier_learning_rate_multiplier=1.0)
  config.optimizer.warmup_epochs = 0.2  # 2 steps of 10
  return config


def test_classifier_rate_multiplier_scales_exactly_the_classifier_updates():
  params = {'classifier': {'kernel': jnp.ones((3, 2)), 'bias': jnp.ones(2)},
            'block_0': {'expand_conv': {'kernel': jnp.ones((1, 1, 2, 3))}}}
  grads = jax.tree.map(lambda x: 0.3 * jnp.ones_like(x), params)

  def updates(multiplier):
    config = tiny_config(classifier_learning_rate_multiplier=multiplier)
    tx = optimizer.create_optimizer(config, steps_per_epoch=10)
    state = tx.init(params)
    for _ in range(3):
      result, state = tx.update(grads, state, params)
    return result

  ratio = jax.tree.map(lambda a, b: np.asarray(a / b), updates(0.1), updates(1.0))
  np.testing.assert_allclose(ratio['classifier']['kernel'], 0.1, rtol=1e-6)
  np.testing.assert_allclose(ratio['classifier']['bias'], 0.1, rtol=1e-6)
  np.testing.assert_allclose(ratio['block_0']['expand_conv']['kernel'], 1.0, rtol=1e-6)


def test_classifier_rate_multiplier_needs_a_classifier_layer():
  config = tiny_config(classifier_learning_rate_multiplier=0.5)
  tx = optimizer.create_optimizer(config, steps_per_epoch=10)
  with pytest.raises(ValueError, match='top-level classifier'):
    tx.init({'head': {'kernel': jnp.ones(2)}})
