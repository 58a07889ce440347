"""The hand-written gradient of the 'shifted' depthwise convolution is JAX's own.

`depthwise_conv_shifted` carries a custom VJP (input gradient as a shifted
depthwise convolution of the dilated output gradient with the flipped kernel,
kernel gradient as nine reductions, one variadic reduction or sums over groups of
rows, the forms of `depthwise.KERNEL_GRADIENT_FORMS`; a strided layer's input gradient spread out or by
residue classes, `depthwise.INPUT_GRADIENT_FORMS`); `depthwise_conv_shifted_autodiff` is the
same forward differentiated by JAX, and `depthwise_conv_xla` is XLA's grouped
convolution. All three must agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models import depthwise, reductions
from mnv2_jax.models.depthwise import (depthwise_conv_shifted, depthwise_conv_shifted_autodiff,
                                       depthwise_conv_xla)

IMPLS = {
    'custom_vjp': depthwise_conv_shifted,
    'autodiff': depthwise_conv_shifted_autodiff,
    'xla': depthwise_conv_xla,
}


def _vjps(height: int, width: int, stride: int, dtype=jnp.float32):
  rng = np.random.default_rng(height * 100 + width * 10 + stride)
  inputs = jnp.asarray(rng.normal(size=(2, height, width, 3)), dtype)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 3)), dtype)
  cotangent = jnp.asarray(
      rng.normal(size=(2, -(-height // stride), -(-width // stride), 3)), dtype)

  @jax.jit
  def all_impls(inputs, kernel, cotangent):
    results = {}
    for name, impl in IMPLS.items():
      output, vjp = jax.vjp(lambda x, k, impl=impl: impl(x, k, stride), inputs, kernel)
      results[name] = (output, *vjp(cotangent))
    return results

  return jax.tree.map(lambda a: np.asarray(a, np.float32), all_impls(inputs, kernel, cotangent))


# Even sizes (stride 2 pads 0 before, 1 after), odd sizes (1 and 1), 1x1 and
# 2x3 inputs where every output touches the padding.
SHAPES = [(8, 8), (7, 7), (6, 9), (1, 1), (2, 3)]


@pytest.fixture(params=depthwise.KERNEL_GRADIENT_FORMS)
def kernel_gradient_form(request, monkeypatch):
  monkeypatch.setattr(depthwise, 'KERNEL_GRADIENT_FORM', request.param)
  return request.param


@pytest.fixture(params=depthwise.INPUT_GRADIENT_FORMS)
def input_gradient_form(request, monkeypatch):
  monkeypatch.setattr(depthwise, 'INPUT_GRADIENT_FORM', request.param)
  return request.param


@pytest.mark.parametrize('stride', [1, 2, 3])
@pytest.mark.parametrize('height, width', SHAPES)
def test_custom_vjp_input_and_kernel_gradients_equal_autodiff_and_xla(height, width, stride,
                                                                     kernel_gradient_form,
                                                                     input_gradient_form):
  results = _vjps(height, width, stride)
  output, input_grad, kernel_grad = results['custom_vjp']
  assert input_grad.shape == (2, height, width, 3)
  assert kernel_grad.shape == (3, 3, 1, 3)
  assert np.abs(kernel_grad).max() > 0.1  # Not a comparison between zeros.
  for reference in ('autodiff', 'xla'):
    expected_output, expected_input_grad, expected_kernel_grad = results[reference]
    np.testing.assert_allclose(output, expected_output, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(input_grad, expected_input_grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel_grad, expected_kernel_grad, rtol=1e-5, atol=1e-4)


def test_custom_vjp_in_bfloat16_returns_bfloat16_gradients_close_to_float32(
    kernel_gradient_form):
  bf16 = _vjps(8, 8, 2, jnp.bfloat16)['custom_vjp']
  f32 = _vjps(8, 8, 2, jnp.float32)['xla']
  for actual, expected in zip(bf16, f32):
    np.testing.assert_allclose(actual, expected, rtol=5e-2, atol=0.15)


def test_custom_vjp_gradient_dtypes_follow_the_inputs(kernel_gradient_form):
  inputs = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
  kernel = jnp.ones((3, 3, 1, 2), jnp.bfloat16)
  input_grad, kernel_grad = jax.grad(
      lambda x, k: depthwise_conv_shifted(x, k, 2).astype(jnp.float32).sum(),
      argnums=(0, 1))(inputs, kernel)
  assert input_grad.dtype == kernel_grad.dtype == jnp.bfloat16
  # Every input pixel of a 4x4 image is seen by the stride-2 3x3 window at
  # least once; corner (0, 0) exactly once (tap (0, 0) of output (0, 0)).
  assert float(input_grad[0, 0, 0, 0]) == 1.0
  assert float(kernel_grad[1, 1, 0, 0]) == 4.0  # The centre tap sees all 2x2 outputs.



@pytest.mark.parametrize('batch, height, row_group', [
    (1, 11, 8),   # 11 rows, a prime: no group but single rows divides them
    (3, 8, 8),    # 24 rows: groups of 8
    (2, 9, 4),    # 18 rows: groups of 3, the largest divisor up to 4
    (4, 6, 1),    # groups of one row: the plain reduction
])
def test_row_group_kernel_gradient_equals_one_reduction_for_any_row_count(
    batch, height, row_group, monkeypatch):
  rng = np.random.default_rng(batch * 100 + height)
  inputs = jnp.asarray(rng.normal(size=(batch, height, height + 1, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 5)), jnp.float32)

  def kernel_gradient(form):
    monkeypatch.setattr(depthwise, 'KERNEL_GRADIENT_FORM', form)
    monkeypatch.setattr(reductions, 'ROW_GROUP', row_group)
    return np.asarray(jax.grad(lambda k: jnp.sum(jnp.sin(depthwise_conv_shifted(inputs, k, 1))))(
        kernel))

  expected = kernel_gradient('one_reduction')
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(kernel_gradient('row_groups'), expected, rtol=1e-5, atol=1e-5)
