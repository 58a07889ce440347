"""Batch normalisation with a hand-written gradient: `nn.BatchNorm`'s values, half its passes.

The variables, their names and every value are those of `flax.linen.BatchNorm`
(fast variance E[x^2] - E[x]^2, statistics in float32, moving averages
updated with `momentum`, not during initialisation), so checkpoints, the
Keras weight conversion and export are unchanged. What differs is the
gradient in training mode. The one JAX derives from flax's forward pass
reduces over the activations several times (through the mean, the mean of
squares and the variance separately); the textbook form needs two sums,
sum(g) and sum(g * x_hat), computed together in one pass (`SUM_FORM`), and one
elementwise pass for the input gradient:

  d x = scale / sigma * (g - mean(g) - x_hat * mean(g * x_hat)).

BN's reductions were the largest item of a CPU training step's profile
(benchmarks/README.md). Under `shard_map`/`pmap` with `axis_name` the two
means are averaged across devices, which is exactly what differentiating
flax's `pmean` of the statistics gives; the scale and bias gradients stay
per-device sums, as there (the training step averages them afterwards).
Tests (tests/test_batch_norm.py) hold both paths equal in value and gradient.
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import reductions

# How the four per-channel sums (mean and mean of squares forward, the two gradient sums
# backward) are computed for NHWC activations: 'reduce' (jnp.mean, which XLA:CPU hands to
# YNNPACK's reductions) or 'row_groups' (`reductions.channel_sums`: groups of rows first, in
# the pass that computes the summands). Whole training steps with row groups, interleaved in
# one process (2-core AMD EPYC, 2026-12-04): 1.06-1.12x faster (benchmarks/README.md).
SUM_FORMS = ('reduce', 'row_groups')
SUM_FORM = 'row_groups'


def _channel_sums(arrays, axes):
  """The sum of each of `arrays` over `axes` (every axis but the channels)."""
  if SUM_FORM == 'row_groups' and arrays[0].ndim == 4:
    return tuple(reductions.channel_sums(arrays))
  return tuple(jnp.sum(array, axes) for array in arrays)


def _mean_across_devices(means: tuple, axis_name: Optional[str]) -> tuple:
  """Per-device means averaged over the mapped axis `axis_name` (unchanged when None)."""
  if axis_name is None:
    return means
  # One collective for all of them, as flax does for the statistics.
  reduced = jax.lax.pmean(jnp.stack(means), axis_name)
  return tuple(reduced[i] for i in range(len(means)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_with_batch_statistics(x: jax.Array, scale: jax.Array, bias: jax.Array,
                                    epsilon: float, axis_name: Optional[str]):
  """(BN(x) in float32, batch mean, batch variance) over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  count = x.size // x.shape[-1]
  mean, mean_of_squares = _mean_across_devices(
      tuple(total / count for total in _channel_sums([x, jnp.square(x)], axes)), axis_name)
  var = jnp.maximum(0.0, mean_of_squares - jnp.square(mean))
  return (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias, mean, var


def _forward(x, scale, bias, epsilon, axis_name):
  outputs = normalize_with_batch_statistics(x, scale, bias, epsilon, axis_name)
  _, mean, var = outputs
  return outputs, (x, scale, mean, var)


def _backward(epsilon, axis_name, residuals, cotangents):
  x, scale, mean, var = residuals
  # The statistics only feed the moving averages, which are not differentiated.
  output_grad = cotangents[0]
  axes = tuple(range(x.ndim - 1))
  inverse_std = jax.lax.rsqrt(var + epsilon)
  x_hat = (x.astype(output_grad.dtype) - mean) * inverse_std
  grad_sum, grad_x_hat_sum = _channel_sums([output_grad, output_grad * x_hat], axes)
  count = x.size // x.shape[-1]
  mean_grad, mean_grad_x_hat = _mean_across_devices(
      (grad_sum / count, grad_x_hat_sum / count), axis_name)
  x_grad = (scale * inverse_std) * (output_grad - mean_grad - x_hat * mean_grad_x_hat)
  return x_grad.astype(x.dtype), grad_x_hat_sum, grad_sum


normalize_with_batch_statistics.defvjp(_forward, _backward)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis (scale and bias, float32 statistics), faster to train."""
  use_running_average: bool
  momentum: float
  epsilon: float
  axis_name: Optional[str] = None
  dtype: Any = None
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    moving_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    moving_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    scale = self.param('scale', self.scale_init, features, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, features, jnp.float32)
    if self.use_running_average:
      # flax's operations in flax's order and shapes, which the export converters fold into
      # the preceding convolution (with (C,)-shaped operands instead, the int8 ONNX file of
      # tests/test_export.py came out 2.5% above its size bound).
      shape = (1,) * (x.ndim - 1) + features
      y = x - moving_mean.value.reshape(shape)
      y = y * (jax.lax.rsqrt(moving_var.value.reshape(shape) + self.epsilon) * scale.reshape(shape))
      y = y + bias.reshape(shape)
    else:
      # As flax: no cross-device statistics while initialising (no mapped axis exists then).
      axis_name = None if self.is_initializing() else self.axis_name
      y, mean, var = normalize_with_batch_statistics(x, scale, bias, self.epsilon, axis_name)
      if not self.is_initializing():
        moving_mean.value = self.momentum * moving_mean.value + (1 - self.momentum) * mean
        moving_var.value = self.momentum * moving_var.value + (1 - self.momentum) * var
    return y.astype(self.dtype or jnp.result_type(x, scale))
