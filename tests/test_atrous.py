"""Output stride control: TF-Slim's stride/dilation rule, dilated depthwise convs, feature sizes.

Shapes come from `jax.eval_shape` and programs from `jax.make_jaxpr` (no
compile); only the depthwise comparisons run, on 2x9x9x3 tensors.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.models import MobileNetV1, MobileNetV2, architecture
from mnv2_jax.models.depthwise import DepthwiseConv, depthwise_conv_shifted, depthwise_conv_xla

CHANNELS = 3


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


# --- The dilated 'shifted' depthwise convolution is XLA's ----------------------


@functools.lru_cache(maxsize=None)
def _output_and_gradients(impl: str, height: int, width: int, stride: int, dilation: int):
  inputs, kernel = _random((2, height, width, CHANNELS), 1), _random((3, 3, 1, CHANNELS), 2)
  convolution = depthwise_conv_xla if impl == 'xla' else depthwise_conv_shifted
  output, vjp = jax.vjp(lambda x, k: convolution(x, k, stride, dilation), inputs, kernel)
  cotangent = _random(output.shape, 3)
  return jax.tree.map(np.asarray, (output, *vjp(cotangent)))


# Even, odd and non-square sides; rate 4 spans 9 pixels, more than a 5-pixel side.
DILATED_CASES = [(9, 9, 1, 2), (8, 11, 1, 2), (8, 11, 1, 4), (5, 5, 1, 4), (9, 8, 2, 2)]


@pytest.mark.parametrize('height, width, stride, dilation', DILATED_CASES)
def test_dilated_shifted_depthwise_equals_xla_dilated_grouped_conv(height, width, stride,
                                                                   dilation):
  expected = _output_and_gradients('xla', height, width, stride, dilation)
  actual = _output_and_gradients('shifted', height, width, stride, dilation)
  assert actual[0].shape == (2, -(-height // stride), -(-width // stride), CHANNELS)
  np.testing.assert_allclose(actual[0], expected[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('height, width, stride, dilation', DILATED_CASES)
def test_dilated_shifted_depthwise_has_xla_input_and_kernel_gradients(height, width, stride,
                                                                      dilation):
  _, expected_input_grad, expected_kernel_grad = _output_and_gradients(
      'xla', height, width, stride, dilation)
  _, input_grad, kernel_grad = _output_and_gradients('shifted', height, width, stride, dilation)
  assert input_grad.shape == (2, height, width, CHANNELS)
  np.testing.assert_allclose(input_grad, expected_input_grad, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(kernel_grad, expected_kernel_grad, rtol=1e-5, atol=1e-4)
  assert np.abs(kernel_grad).max() > 0.1


@pytest.mark.parametrize('impl', ['xla', 'shifted'])
def test_rate_2_pads_two_on_each_side_as_tf_same(impl):
  inputs, kernel = _random((2, 9, 9, CHANNELS), 4), _random((3, 3, 1, CHANNELS), 5)
  module = DepthwiseConv(impl=impl, dilation=2)
  output = module.apply({'params': {'kernel': kernel}}, inputs)
  # Output (0, 0) reads rows/cols -2, 0, 2: only taps 1 and 2 land on the input.
  corner = jnp.einsum('nhwc,hwc->nc', inputs[:, 0:3:2, 0:3:2], kernel[1:, 1:, 0])
  np.testing.assert_allclose(output[:, 0, 0], corner, rtol=1e-5, atol=1e-5)
  centre = jnp.einsum('nhwc,hwc->nc', inputs[:, 2:7:2, 2:7:2], kernel[:, :, 0])
  np.testing.assert_allclose(output[:, 4, 4], centre, rtol=1e-5, atol=1e-5)


def test_same_padding_of_a_dilated_kernel_is_that_of_its_dense_extent():
  assert architecture.same_padding(33, 1, 3, dilation=6) == (6, 6)
  assert architecture.same_padding(33, 1, 3, dilation=1) == (1, 1)
  assert architecture.same_padding(8, 2, 3, dilation=2) == (1, 2)  # a 5-tap extent at stride 2


# --- TF-Slim's output stride rule ----------------------------------------------

V2_STRIDES_AND_DILATIONS = {
    # block 13 loses its stride 2 at rate 1; only the blocks after it dilate.
    16: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 1)] + [(1, 1)] * 7 + [(1, 2)] * 3,
    # block 6 loses its stride at rate 1, block 13 at rate 2.
    8: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 1)] + [(1, 2)] * 7 + [(1, 4)] * 3,
}
V1_STRIDES_AND_DILATIONS = {
    16: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (2, 1)] + [(1, 1)] * 6 + [(1, 2)],
    8: [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1)] + [(1, 2)] * 6 + [(1, 4)],
}


@pytest.mark.parametrize('output_stride', [16, 8])
def test_mobilenet_v2_blocks_follow_tf_slims_output_stride_rule(output_stride):
  spec = architecture.mobilenet_v2_spec(1.0, output_stride=output_stride)
  assert ([(block.stride, block.dilation) for block in spec.blocks] ==
          V2_STRIDES_AND_DILATIONS[output_stride])


@pytest.mark.parametrize('output_stride', [16, 8])
def test_mobilenet_v1_layers_follow_tf_slims_output_stride_rule(output_stride):
  spec = architecture.mobilenet_v1_spec(1.0, output_stride)
  assert ([(layer.stride, layer.dilation) for layer in spec.layers] ==
          V1_STRIDES_AND_DILATIONS[output_stride])


def test_the_rule_keeps_the_stem_and_multiplies_the_rate_after_the_dropped_stride():
  assert architecture.atrous_strides_and_dilations([2, 2, 1, 2, 2], 4) == [
      (2, 1), (2, 1), (1, 1), (1, 1), (1, 2)]
  assert architecture.atrous_strides_and_dilations([2, 2, 2], None) == [(2, 1)] * 3


def test_output_stride_32_is_the_classifiers_table():
  default = architecture.mobilenet_v2_spec(1.0)
  assert architecture.mobilenet_v2_spec(1.0, output_stride=32).blocks == default.blocks
  assert all(block.dilation == 1 for block in default.blocks)
  assert architecture.mobilenet_v1_spec(1.0, 32).layers == architecture.mobilenet_v1_spec().layers


@pytest.mark.parametrize('output_stride', [0, 4, 12, 64, True, '16'])
def test_other_output_strides_are_rejected_naming_the_choices(output_stride):
  with pytest.raises(ValueError, match=r'output_stride must be None or one of \[8, 16, 32\]'):
    architecture.mobilenet_v2_spec(1.0, output_stride=output_stride)
  with pytest.raises(ValueError, match='output_stride'):
    MobileNetV1(output_stride=output_stride)


# --- The networks ---------------------------------------------------------------


def _features(model_class, output_stride, resolution=513):
  model = model_class(depthwise_impl='xla', output_stride=output_stride, features_only=True)
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), images)


@pytest.mark.parametrize('model_class, channels', [(MobileNetV2, 320), (MobileNetV1, 1024)])
@pytest.mark.parametrize('output_stride, side', [(32, 17), (16, 33), (8, 65)])
def test_a_513_crop_gives_feature_maps_of_side_512_over_os_plus_1(model_class, channels,
                                                                   output_stride, side):
  (features, _), _ = _features(model_class, output_stride)
  assert features.shape == (1, side, side, channels)


@pytest.mark.parametrize('model_class', [MobileNetV2, MobileNetV1])
def test_the_output_stride_changes_no_variable(model_class):
  shapes = [jax.tree.map(lambda leaf: leaf.shape, _features(model_class, stride, 97)[1])
            for stride in (8, 16, 32)]
  assert shapes[0] == shapes[1] == shapes[2]


def test_mobilenet_v2_endpoints_at_output_stride_8_keep_65x65_from_block_6_on():
  (_, endpoints), _ = _features(MobileNetV2, 8)
  assert endpoints['block_5/output'].shape[1:3] == (65, 65)
  assert endpoints['block_6/expansion'].shape == (1, 65, 65, 192)
  assert all(endpoints[f'block_{i}/output'].shape[1:3] == (65, 65) for i in range(6, 17))


@pytest.mark.parametrize('model_class', [MobileNetV2, MobileNetV1])
def test_output_stride_32_traces_the_same_program_as_the_default_classifier(model_class):
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  default = model_class(width_multiplier=0.35, depthwise_impl='xla')
  explicit = model_class(width_multiplier=0.35, depthwise_impl='xla', output_stride=32)
  variables = jax.eval_shape(default.init, jax.random.key(0), images)
  programs = [str(jax.make_jaxpr(functools.partial(model.apply, train=False))(variables, images))
              for model in (default, explicit)]
  assert programs[0] == programs[1]


def test_features_only_drops_the_last_conv_and_the_classifier():
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  classifier = jax.eval_shape(MobileNetV2(depthwise_impl='xla').init, jax.random.key(0), images)
  features = _features(MobileNetV2, None, 64)[1]
  assert set(classifier['params']) - set(features['params']) == {
      'last_conv', 'last_bn', 'classifier'}
  v1 = jax.eval_shape(MobileNetV1(depthwise_impl='xla').init, jax.random.key(0), images)
  assert set(v1['params']) - set(_features(MobileNetV1, None, 64)[1]['params']) == {'classifier'}


def test_memory_split_inference_is_for_the_classifier_only():
  with pytest.raises(ValueError, match='memory_split=2 is for the classifier'):
    MobileNetV2(memory_split=2, output_stride=16)
