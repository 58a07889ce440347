"""Memory-split inference (paper Section 5.1) computes exactly the normal network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models import MobileNetV2, architecture, memory_split
from mnv2_jax.models.mobilenet_v2 import InvertedResidual
import train_test_utils as utils

# Well below the required 1e-4; float32 summation order is all that differs.
TOLERANCE = 1e-4


def images(batch: int, resolution: int, seed: int = 1):
  return jax.random.uniform(jax.random.PRNGKey(seed), (batch, resolution, resolution, 3),
                            minval=-1, maxval=1)


# (width, resolution, split, options): whole networks, with an odd resolution,
# t=4, both activations and all shortcut layouts; inner widths such as 96, 144
# or 240 are not multiples of these T, so the uneven last group is exercised
# throughout. Every T from 1 to 8, and width 1.4, are covered layer by layer
# below (whole networks are slow to compile on CPU).
NETWORK_CASES = [
    (0.35, 32, 3, dict(expansion_ratio=4, bottleneck_activation='relu6', shortcut='none')),
    # The standard network: block 1 in four groups, blocks 2-16 whole (memory_plan.py).
    (0.35, 64, 4, dict()),
    (1.0, 33, 5, dict(shortcut='expansion')),
    # The hand-written CPU depthwise kernel inside the group loop (depthwise_ffi.py).
    (0.35, 48, 4, dict(depthwise_impl='ffi')),
]


@pytest.mark.parametrize('width, resolution, split, options', NETWORK_CASES)
def test_split_network_logits_equal_normal_network(width, resolution, split, options):
  normal = MobileNetV2(width_multiplier=width, num_classes=10, **options)
  x = images(2, resolution)
  variables = utils.random_variables(normal, x, seed=2)
  expected = jax.jit(normal.apply)(variables, x)
  logits = jax.jit(normal.clone(memory_split=split).apply)(variables, x)
  assert float(jnp.max(jnp.abs(expected))) > 0.5  # A meaningful, non-degenerate output.
  np.testing.assert_allclose(logits, expected, rtol=0, atol=TOLERANCE)


OPTIONS = dict(bottleneck_activation='linear', depthwise_impl='auto', dtype=jnp.float32)


def test_stem_and_first_block_split_1_to_8_ways_equal_the_normal_layers():
  network = MobileNetV2(width_multiplier=1.4, num_classes=10)
  x = images(1, 34)
  variables = utils.random_variables(network, x, seed=3)
  params, stats = variables['params'], variables['batch_stats']
  _, endpoints = jax.jit(functools.partial(network.apply, return_endpoints=True))(variables, x)
  for split in range(1, 9):
    output = jax.jit(functools.partial(
        memory_split.split_stem_and_first_block, spec=network.spec, memory_split=split,
        **OPTIONS))(x, (params, stats), (params['block_0'], stats['block_0']))
    np.testing.assert_allclose(output, endpoints['block_0/output'], rtol=0, atol=TOLERANCE,
                               err_msg=f'memory_split={split}')


# (width, expansion ratio, block): a stride-2 block at the first resolution
# change, a stride-1 residual block, the 320-channel last block at width 1.4,
# and a t=1 block without expansion convolution.
BLOCK_CASES = [(0.35, 6, 1), (1.0, 6, 5), (1.4, 6, 16), (0.5, 1, 5)]


@pytest.mark.parametrize('width, expansion_ratio, index', BLOCK_CASES)
def test_block_split_1_to_8_ways_equals_the_normal_block(width, expansion_ratio, index):
  block_spec = architecture.mobilenet_v2_spec(width, expansion_ratio).blocks[index]
  inputs = jax.random.normal(jax.random.PRNGKey(index), (2, 9, 9, block_spec.in_channels))
  normal = InvertedResidual(spec=block_spec, add_bottleneck_shortcut=block_spec.residual)
  variables = utils.random_variables(normal, inputs, False, seed=4)
  expected, _ = jax.jit(lambda v, x: normal.apply(v, x, False))(variables, inputs)
  for split in range(1, 9):
    output = jax.jit(functools.partial(
        memory_split.split_bottleneck, block_spec=block_spec, memory_split=split,
        add_bottleneck_shortcut=block_spec.residual, **OPTIONS))(
            inputs, (variables['params'], variables['batch_stats']))
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE,
                               err_msg=f'memory_split={split}')


def test_uneven_groups_cover_every_channel_exactly_once():
  for channels in (1, 8, 16, 96, 144, 240, 1280):
    for split in range(1, 10):
      size = memory_split.group_size(channels, split)
      groups = memory_split.num_groups(channels, split)
      assert groups <= split and (groups - 1) * size < channels <= groups * size


def test_variables_do_not_depend_on_memory_split():
  x = jnp.zeros((1, 32, 32, 3))
  shapes = lambda model: jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(
      model.init, jax.random.PRNGKey(0), x))
  assert shapes(MobileNetV2(width_multiplier=0.5)) == shapes(
      MobileNetV2(width_multiplier=0.5, memory_split=4))


@pytest.mark.parametrize('bad', [0, -2, 1.5, True, '4'])
def test_memory_split_must_be_a_positive_integer(bad):
  with pytest.raises(ValueError, match='memory_split'):
    MobileNetV2(memory_split=bad)


def test_memory_split_is_inference_only():
  model = MobileNetV2(width_multiplier=0.35, memory_split=2)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(MobileNetV2(width_multiplier=0.35).init, jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='inference'):
    jax.eval_shape(functools.partial(model.apply, train=True, mutable=['batch_stats'],
                                     rngs={'dropout': jax.random.PRNGKey(1)}), variables, x)
  with pytest.raises(ValueError, match='return_endpoints'):
    jax.eval_shape(functools.partial(model.apply, return_endpoints=True), variables, x)
