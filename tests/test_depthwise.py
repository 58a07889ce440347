"""The 'shifted' depthwise convolution is XLA's grouped convolution, value and gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models.depthwise import DepthwiseConv, resolve_depthwise_impl

CHANNELS = 5


def _inputs_and_kernel(height: int, width: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  inputs = rng.normal(size=(2, height, width, CHANNELS)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 1, CHANNELS)).astype(np.float32)
  return jnp.asarray(inputs), jnp.asarray(kernel)


def _apply(impl: str, stride: int):
  module = DepthwiseConv(stride=stride, impl=impl)
  return jax.jit(lambda inputs, kernel: module.apply({'params': {'kernel': kernel}}, inputs))


# Even and odd sizes, square and not: TF-SAME pads differently in each case.
SHAPES = [(8, 8), (7, 7), (7, 10)]


@functools.lru_cache(maxsize=None)
def _output_and_gradients(height: int, width: int, stride: int) -> dict:
  """For both impls: output, and the gradients w.r.t. input and kernel of <output, cotangent>."""
  inputs, kernel = _inputs_and_kernel(height, width, seed=1)
  cotangent = jnp.asarray(np.random.default_rng(2).normal(
      size=(2, -(-height // stride), -(-width // stride), CHANNELS)).astype(np.float32))

  @jax.jit
  def both_impls(inputs, kernel):
    results = {}
    for impl in ('xla', 'shifted'):
      output, vjp = jax.vjp(_apply(impl, stride), inputs, kernel)
      results[impl] = (output, *vjp(cotangent))
    return results

  return jax.tree.map(np.asarray, both_impls(inputs, kernel))


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('height, width', SHAPES)
def test_shifted_and_xla_give_the_same_output(height, width, stride):
  results = _output_and_gradients(height, width, stride)
  expected, actual = results['xla'][0], results['shifted'][0]
  assert actual.shape == expected.shape == (2, -(-height // stride), -(-width // stride), CHANNELS)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('height, width', SHAPES)
def test_shifted_and_xla_give_the_same_gradients_for_input_and_kernel(height, width, stride):
  results = _output_and_gradients(height, width, stride)
  _, expected_input_grad, expected_kernel_grad = results['xla']
  _, input_grad, kernel_grad = results['shifted']
  assert input_grad.shape == (2, height, width, CHANNELS)
  assert kernel_grad.shape == (3, 3, 1, CHANNELS)
  np.testing.assert_allclose(input_grad, expected_input_grad, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(kernel_grad, expected_kernel_grad, rtol=1e-5, atol=1e-4)
  assert np.abs(kernel_grad).max() > 0.1  # The comparison is not between zeros.


@pytest.mark.parametrize('impl', ['xla', 'shifted'])
def test_stride_2_on_an_even_input_pads_zero_before_and_one_after_as_tf_same(impl):
  inputs, kernel = _inputs_and_kernel(8, 8)
  output = _apply(impl, 2)(inputs, kernel)
  # Output (0, 0) sees input rows/cols 0..2 through taps 0..2 (no padding before);
  # output (3, 3) sees rows/cols 6, 7 and one padded zero through taps 0, 1.
  first = jnp.einsum('nhwc,hwc->nc', inputs[:, 0:3, 0:3], kernel[:, :, 0])
  last = jnp.einsum('nhwc,hwc->nc', inputs[:, 6:8, 6:8], kernel[0:2, 0:2, 0])
  np.testing.assert_allclose(output[:, 0, 0], first, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(output[:, 3, 3], last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', ['xla', 'shifted'])
def test_stride_1_pads_one_on_each_side(impl):
  inputs, kernel = _inputs_and_kernel(7, 7)
  output = _apply(impl, 1)(inputs, kernel)
  corner = jnp.einsum('nhwc,hwc->nc', inputs[:, 0:2, 0:2], kernel[1:3, 1:3, 0])
  np.testing.assert_allclose(output[:, 0, 0], corner, rtol=1e-5, atol=1e-5)


def test_each_channel_is_convolved_with_its_own_taps_only():
  inputs, kernel = _inputs_and_kernel(6, 6)
  output = _apply('shifted', 1)(inputs, kernel)
  alone = _apply('shifted', 1)(inputs.at[..., 1:].set(0), kernel)
  np.testing.assert_allclose(output[..., 0], alone[..., 0], rtol=1e-6)
  np.testing.assert_allclose(alone[..., 1:], 0)


def test_kernel_is_3x3x1xchannels_without_bias():
  variables = jax.eval_shape(DepthwiseConv().init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 8, 8, 7), jnp.float32))
  assert jax.tree.map(lambda leaf: leaf.shape, variables) == {'params': {'kernel': (3, 3, 1, 7)}}


def test_auto_uses_shifted_on_cpu_and_xla_on_accelerators():
  expected = 'shifted' if jax.default_backend() == 'cpu' else 'xla'
  assert resolve_depthwise_impl('auto') == expected


def test_bfloat16_computation_stays_close_to_float32():
  inputs, kernel = _inputs_and_kernel(8, 8)
  module = DepthwiseConv(stride=2, impl='shifted', dtype=jnp.bfloat16)
  output = jax.jit(module.apply)({'params': {'kernel': kernel}}, inputs)
  assert output.dtype == jnp.bfloat16
  np.testing.assert_allclose(output.astype(jnp.float32), _apply('xla', 2)(inputs, kernel),
                             rtol=5e-2, atol=5e-2)


def test_unknown_impl_is_rejected_naming_depthwise_impl():
  inputs, kernel = _inputs_and_kernel(8, 8)
  with pytest.raises(ValueError, match='depthwise_impl'):
    _apply('cudnn', 1)(inputs, kernel)
