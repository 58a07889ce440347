"""The project's BatchNorm is flax's nn.BatchNorm with a hand-written gradient: same variables,
same values, same gradients (float32, 1e-5 relative), alone and across devices, with either way
of summing over the activations (`batch_norm.SUM_FORMS`)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from mnv2_jax.models import batch_norm
from mnv2_jax.models.batch_norm import BatchNorm

EPSILON, MOMENTUM = 1e-3, 0.9


def _modules(axis_name=None, train=True, dtype=jnp.float32):
  kwargs = dict(use_running_average=not train, momentum=MOMENTUM, epsilon=EPSILON,
                axis_name=axis_name, dtype=dtype)
  return nn.BatchNorm(param_dtype=jnp.float32, **kwargs), BatchNorm(**kwargs)


def _inputs(shape=(4, 6, 5, 8), seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape) * 3 + 1.5, jnp.float32)
  variables = {
      'params': {'scale': jnp.asarray(rng.uniform(0.5, 1.5, shape[-1]), jnp.float32),
                 'bias': jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)},
      'batch_stats': {'mean': jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
                      'var': jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32)},
  }
  # A loss that weighs every output differently and goes through ReLU6, as the network does.
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return x, variables, weights


def _assert_trees_close(actual, expected, rtol=1e-5):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    scale = float(jnp.max(jnp.abs(e))) or 1.0
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=0, atol=rtol * scale)


@pytest.fixture(params=batch_norm.SUM_FORMS)
def sum_form(request, monkeypatch):
  monkeypatch.setattr(batch_norm, 'SUM_FORM', request.param)
  return request.param


def _loss_and_grads(module, variables, x, weights):
  def loss(params, x):
    y, updates = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(jnp.clip(y, 0, 6) * weights), updates['batch_stats']
  (value, batch_stats), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      variables['params'], x)
  return value, batch_stats, grads


def test_the_variables_are_flax_batch_norms():
  reference, ours = _modules()
  x, _, _ = _inputs()
  expected = reference.init(jax.random.key(0), x)
  actual = ours.init(jax.random.key(0), x)
  _assert_trees_close(actual, expected, rtol=0)


# (4, 6, 5, 8): 24 rows, in groups of 8; (3, 7, 5, 8): 21 rows, in groups of 7.
@pytest.mark.parametrize('shape', [(4, 6, 5, 8), (3, 7, 5, 8), (2, 3, 16), (64, 32)])
def test_training_output_statistics_and_gradients_equal_flax(shape, sum_form):
  reference, ours = _modules()
  x, variables, weights = _inputs(shape)
  expected = _loss_and_grads(reference, variables, x, weights)
  actual = _loss_and_grads(ours, variables, x, weights)
  _assert_trees_close(actual, expected)


def test_inference_uses_the_moving_averages_as_flax_does():
  reference, ours = _modules(train=False)
  x, variables, _ = _inputs()
  _assert_trees_close(ours.apply(variables, x), reference.apply(variables, x), rtol=0)


def test_bfloat16_compute_keeps_float32_statistics_and_returns_bfloat16(sum_form):
  reference, ours = _modules(dtype=jnp.bfloat16)
  x, variables, _ = _inputs()
  x = x.astype(jnp.bfloat16)
  y, updates = ours.apply(variables, x, mutable=['batch_stats'])
  expected_y, expected_updates = reference.apply(variables, x, mutable=['batch_stats'])
  assert y.dtype == expected_y.dtype == jnp.bfloat16
  assert updates['batch_stats']['mean'].dtype == jnp.float32
  _assert_trees_close(updates, expected_updates)
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(expected_y, np.float32),
                             rtol=1e-2, atol=1e-2)
  grads = jax.grad(lambda x: jnp.sum(ours.apply(variables, x, mutable=['batch_stats'])[0]
                                     .astype(jnp.float32)))(x)
  assert grads.dtype == jnp.bfloat16


def test_statistics_and_gradients_across_devices_equal_flax_synchronised_batch_norm(sum_form):
  """Under shard_map (pmap semantics) with axis_name: the same values and per-device gradients."""
  devices = np.array(jax.devices()[:4])
  assert len(devices) == 4, 'tests/conftest.py provides eight CPU devices'
  mesh = Mesh(devices, ('batch',))
  reference, ours = _modules(axis_name='batch')
  x, variables, weights = _inputs((8, 6, 5, 8))

  def per_device(module, params, x, weights):
    def loss(params, x):
      y, updates = module.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
      return jnp.sum(jnp.clip(y, 0, 6) * weights), updates['batch_stats']
    (value, stats), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    # Per-device parameter gradients, stacked, so that each device's own sum is compared.
    grads = (jax.tree.map(lambda g: g[None], grads[0]), grads[1])
    return value[None], stats, grads

  def run(module):
    step = jax.shard_map(functools.partial(per_device, module), mesh=mesh,
                         in_specs=(P(), P('batch'), P('batch')),
                         out_specs=(P('batch'), P(), (P('batch'), P('batch'))), check_vma=False)
    return jax.jit(step)(variables['params'], x, weights)

  _assert_trees_close(run(ours), run(reference))
