"""The 1x1 convolutions, written as matrix products, are flax's nn.Conv: value, gradients, variables;
so is the stem's 3x3 convolution written as one matrix product over its patches (on CPU)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import models
from mnv2_jax.models.layers import PatchesConv, PointwiseConv, conv, patches_conv


def _inputs_kernel_cotangent(in_channels=6, out_channels=4, seed=0):
  rng = np.random.default_rng(seed)
  inputs = rng.normal(size=(2, 5, 7, in_channels)).astype(np.float32)
  kernel = rng.normal(size=(1, 1, in_channels, out_channels)).astype(np.float32)
  cotangent = rng.normal(size=(2, 5, 7, out_channels)).astype(np.float32)
  return jnp.asarray(inputs), jnp.asarray(kernel), jnp.asarray(cotangent)


def _reference_conv(features):
  return nn.Conv(features, (1, 1), padding='SAME', use_bias=False)


def test_pointwise_conv_has_the_variables_of_a_flax_1x1_conv():
  inputs, _, _ = _inputs_kernel_cotangent()
  ours = PointwiseConv(4).init(jax.random.key(0), inputs)
  reference = _reference_conv(4).init(jax.random.key(0), inputs)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, reference)
  assert jax.tree.map(jnp.shape, ours) == {'params': {'kernel': (1, 1, 6, 4)}}


def test_pointwise_conv_gives_the_output_and_gradients_of_a_flax_1x1_conv():
  inputs, kernel, cotangent = _inputs_kernel_cotangent()
  results = {}
  for name, module in (('ours', PointwiseConv(4)), ('flax', _reference_conv(4))):
    apply = lambda x, k, module=module: module.apply({'params': {'kernel': k}}, x)
    output, vjp = jax.vjp(apply, inputs, kernel)
    results[name] = (output, *vjp(cotangent))
  for ours, reference in zip(results['ours'], results['flax']):
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
  # The kernel gradient really is the sum over every position of input x output gradient.
  expected = np.einsum('nhwi,nhwo->io', inputs, cotangent)
  np.testing.assert_allclose(results['ours'][2][0, 0], expected, rtol=1e-5, atol=1e-5)


def test_pointwise_conv_in_bfloat16_keeps_a_float32_kernel_and_its_gradient():
  inputs, kernel, cotangent = _inputs_kernel_cotangent()
  module = PointwiseConv(4, dtype=jnp.bfloat16)
  apply = lambda x, k: module.apply({'params': {'kernel': k}}, x)
  output, vjp = jax.vjp(apply, inputs, kernel)
  _, kernel_grad = vjp(cotangent.astype(jnp.bfloat16))
  assert output.dtype == jnp.bfloat16 and kernel_grad.dtype == jnp.float32
  np.testing.assert_allclose(output.astype(np.float32),
                             _reference_conv(4).apply({'params': {'kernel': kernel}}, inputs),
                             rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize('kernel_size, stride, impl, expected', [
    (1, 1, 'xla', PointwiseConv), (3, 2, 'xla', nn.Conv), (3, 1, 'xla', nn.Conv),
    (1, 2, 'xla', nn.Conv), (1, 1, 'shifted', PointwiseConv), (3, 2, 'shifted', PatchesConv)])
def test_stride_1_1x1_convolutions_become_matrix_products_and_k_x_k_ones_patches_on_cpu(
    kernel_size, stride, impl, expected):
  assert type(conv(8, kernel_size, stride, jnp.float32, 'layer', impl=impl)) is expected


@pytest.mark.parametrize('name', ['mobilenet_v2', 'mobilenet_v1'])
def test_the_cpu_forms_leave_no_convolution_in_the_network(name):
  # depthwise_impl='shifted' writes the depthwise layers and the stem without convolutions.
  model = models.MODELS[name](num_classes=10, width_multiplier=0.35 if name == 'mobilenet_v2'
                              else 0.25, depthwise_impl='shifted')
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert 'conv_general_dilated' not in str(jaxpr)  # nested (custom-gradient) jaxprs too


# Even sizes (stride 2 pads 0 before, 1 after), odd sizes, and a 2x3 image whose every
# output reads padding.
@pytest.mark.parametrize('height, width', [(8, 8), (7, 7), (6, 9), (2, 3)])
@pytest.mark.parametrize('stride', [1, 2])
def test_patches_conv_gives_the_output_and_gradients_of_xla_same_convolution(height, width,
                                                                            stride):
  rng = np.random.default_rng(height * 10 + width + stride)
  inputs = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, -(-height // stride), -(-width // stride), 5)),
                          jnp.float32)
  reference = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = lambda x, k: patches_conv(x, k, stride)
  for actual, expected in zip(
      (ours(inputs, kernel), *jax.vjp(ours, inputs, kernel)[1](cotangent)),
      (reference(inputs, kernel), *jax.vjp(reference, inputs, kernel)[1](cotangent))):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_patches_conv_has_the_variables_and_initial_values_of_a_flax_conv():
  images = jnp.ones((1, 8, 8, 3))
  ours = conv(16, 3, 2, jnp.float32, 'stem', impl='shifted').init(jax.random.key(3), images)
  reference = conv(16, 3, 2, jnp.float32, 'stem', impl='xla').init(jax.random.key(3), images)
  assert jax.tree.map(jnp.shape, ours) == {'params': {'kernel': (3, 3, 3, 16)}}
  np.testing.assert_array_equal(ours['params']['kernel'], reference['params']['kernel'])
