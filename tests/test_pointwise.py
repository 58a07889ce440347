"""The 1x1 convolutions, written as matrix products, are flax's nn.Conv: value, gradients, variables."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import models
from mnv2_jax.models.layers import PointwiseConv, conv


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


@pytest.mark.parametrize('kernel_size, stride, expected', [
    (1, 1, PointwiseConv), (3, 2, nn.Conv), (3, 1, nn.Conv), (1, 2, nn.Conv)])
def test_only_stride_1_1x1_convolutions_become_matrix_products(kernel_size, stride, expected):
  assert type(conv(8, kernel_size, stride, jnp.float32, 'layer')) is expected


@pytest.mark.parametrize('name', ['mobilenet_v2', 'mobilenet_v1'])
def test_the_only_convolution_left_in_the_network_is_the_stem(name):
  # depthwise_impl='shifted' writes the depthwise layers without convolutions too.
  model = models.MODELS[name](num_classes=10, width_multiplier=0.35 if name == 'mobilenet_v2'
                              else 0.25, depthwise_impl='shifted')
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  convs = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == 'conv_general_dilated']
  assert [eqn.invars[1].aval.shape[:2] for eqn in convs] == [(3, 3)]
