"""Mobile DeepLabv3 (paper Table 7): the head, its accounting, and the inference strategies.

Parameter trees come from `jax.eval_shape` and multiply-adds from the
`jax.make_jaxpr` program, without compiling; only the inference tests run a
network, at width 0.35 with 8-channel heads on 33-64 pixel images.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deeplab_default
from mnv2_jax.models import deeplab_architecture
from mnv2_jax.models.deeplab import DeepLabV3, resize_bilinear_align_corners
from mnv2_jax.segmentation import inference
from mnv2_jax.stats import segmentation
from mnv2_jax.stats.__main__ import main as stats_main
from mnv2_jax.tasks import segmentation as segmentation_task
from test_stats import traced_macs

TABLE7 = {(row['network'], row['output_stride'], row['aspp'], row['multi_scale_flip']): row
          for row in segmentation.table7_rows()}
V1_OS16, V1_OS8_MF = ('MobileNetV1', 16, True, False), ('MobileNetV1', 8, True, True)
V2_OS16, V2_OS8_MF = ('MobileNetV2*', 16, True, False), ('MobileNetV2*', 8, True, True)
V2_NO_ASPP_OS16, V2_NO_ASPP_OS8_MF = ('MobileNetV2*', 16, False, False), ('MobileNetV2*', 8, False, True)


def count_leaves(tree) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


# --- Table 7: parameters ----------------------------------------------------------


def test_table7_has_six_mobilenet_rows():
  assert set(TABLE7) == {V1_OS16, V1_OS8_MF, V2_OS16, V2_OS8_MF, V2_NO_ASPP_OS16,
                         V2_NO_ASPP_OS8_MF}


@pytest.mark.parametrize('key, params', [
    (V1_OS16, 11_145_301), (V1_OS8_MF, 11_145_301), (V2_OS16, 4_523_541),
    (V2_OS8_MF, 4_523_541), (V2_NO_ASPP_OS16, 2_113_557), (V2_NO_ASPP_OS8_MF, 2_113_557)])
def test_every_table7_params_figure_is_reproduced_to_0_01_million(key, params):
  row = TABLE7[key]
  assert row['params'] == params
  assert round(params / 1e6, 2) == row['paper_params']


def test_table7_params_count_bn_scale_and_bias():
  # Without them MobileNetV2* + ASPP would be 4.49M, not the printed 4.52M.
  record = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2')
  assert round(record['params_no_bn'] / 1e6, 2) == 4.49
  assert record['params'] - record['params_no_bn'] == 34_624


def test_table7_params_need_regular_3x3_aspp_convs_not_separable_ones():
  for model, printed in (('deeplabv3_mobilenet_v2', 4.52), ('deeplabv3_mobilenet_v1', 11.15)):
    separable = segmentation.count_deeplab_model(model, aspp_convolution='separable')
    assert round(separable['params'] / 1e6, 2) != printed
  assert segmentation.count_deeplab_model(
      'deeplabv3_mobilenet_v2', aspp_convolution='separable')['params'] == 2_568_021


def test_mobilenet_v2_star_reads_the_320_channel_block_output_not_the_1280_last_conv():
  head = deeplab_architecture.resolve('mobilenet_v2', 21, 16, aspp=True)[1]
  assert head.in_channels == 320
  assert deeplab_architecture.resolve('mobilenet_v1', 21, 16, aspp=True)[1].in_channels == 1024


# --- Table 7: multiply-adds ---------------------------------------------------------


@pytest.mark.parametrize('key, madds', [(V2_OS16, 5_823_096_448), (V2_OS8_MF, 387_477_555_456)])
def test_the_aspp_rows_of_mobilenet_v2_star_are_reproduced_on_deeplabs_513_crop(key, madds):
  """5.8B and 387B: input 513 (DeepLab's crop for '512x512'), atrous convs as space-to-batch."""
  record = segmentation.count_deeplab_model(
      'deeplabv3_mobilenet_v2', 512, key[1], key[2], key[3], 21, convention='deeplab')
  assert record['madds'] == madds
  row = TABLE7[key]
  assert round(madds / 1e9, row['madds_decimals']) == row['paper_madds']
  assert [reading['reached'] for reading in row['readings']] == [False, False, False, True]


@pytest.mark.parametrize('key, nearest_label, nearest_billions, difference', [
    (V2_NO_ASPP_OS16, '513, space-to-batch', 2.7424, -0.0076),
    (V2_NO_ASPP_OS8_MF, '513, space-to-batch', 152.525, -0.075),
    (V1_OS16, '513, space-to-batch', 14.2266, -0.0234),
    (V1_OS8_MF, '512, space-to-batch', 928.330, -13.570),
])
def test_four_madds_figures_are_not_reached_by_any_reading(key, nearest_label, nearest_billions,
                                                           difference):
  row = TABLE7[key]
  assert not any(reading['reached'] for reading in row['readings'])
  nearest = row['nearest']
  assert nearest['reading'].label == nearest_label
  assert nearest['madds_billions'] == pytest.approx(nearest_billions, abs=5e-4)
  assert nearest['difference_billions'] == pytest.approx(difference, abs=5e-4)


def test_no_per_pixel_cost_shared_by_both_heads_reaches_both_387_and_2_75():
  """387B leaves < 22.5M multiply-adds of room over its 12 evaluations; 2.75B needs > 2.5M more
  on one 513x513 evaluation. Per input pixel the room is smaller than the need, so adding
  any cost per pixel (upsampling, elementwise ops) to both heads cannot reach both."""
  aspp_mf = TABLE7[V2_OS8_MF]['readings'][-1]['madds']
  no_aspp = TABLE7[V2_NO_ASPP_OS16]['readings'][-1]['madds']
  mf_pixels = sum(side**2 for side in deeplab_architecture.evaluation_sizes(513, True))
  room_per_pixel = (387.5e9 - aspp_mf) / mf_pixels
  need_per_pixel = (2.745e9 - no_aspp) / 513**2
  assert 0 < room_per_pixel < need_per_pixel


def test_multi_scale_flip_is_12_evaluations_at_deeplabs_scaled_sides():
  assert deeplab_architecture.evaluation_sizes(513, True) == [
      257, 257, 385, 385, 513, 513, 641, 641, 769, 769, 897, 897]
  single = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2', 512, 8, aspp=False)
  multi = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2', 512, 8, aspp=False,
                                           multi_scale_flip=True)
  assert multi['evaluations'] == 12 and multi['params'] == single['params']
  assert 17 * single['madds'] < multi['madds'] < 18 * single['madds']  # sum of scale^2 x 2 = 17.4


def test_space_to_batch_computes_each_side_rounded_up_to_a_multiple_of_the_rate():
  assert [segmentation.space_to_batch_size(33, rate) for rate in (1, 2, 6, 12, 18)] == [
      33, 34, 36, 36, 36]


# --- The accounting agrees with the real module --------------------------------------

CROSS_CHECK = [
    dict(backbone='mobilenet_v2', output_stride=16, aspp=True),
    dict(backbone='mobilenet_v2', output_stride=8, aspp=False, num_classes=5),
    dict(backbone='mobilenet_v1', output_stride=16, aspp=True),
    dict(backbone='mobilenet_v2', output_stride=8, aspp=True, aspp_convolution='separable',
         width_multiplier=0.5),
    dict(backbone='mobilenet_v1', output_stride=8, aspp=True, aspp_convolution='separable',
         width_multiplier=0.25),
]
CROSS_CHECK_IDS = ['v2-os16', 'v2-os8-no-aspp', 'v1-os16', 'v2-os8-separable', 'v1-os8-separable']


def _module_and_layers(config, resolution):
  config = dict(config)
  kwargs = dict(num_classes=config.pop('num_classes', 21), depthwise_impl='xla', **config)
  model = DeepLabV3(**kwargs)
  layers = segmentation.deeplab_layer_counts(
      f'deeplabv3_{kwargs["backbone"]}', resolution, kwargs['output_stride'], kwargs['aspp'],
      kwargs['num_classes'], kwargs.get('width_multiplier', 1.0),
      kwargs.get('aspp_convolution', 'regular'), atrous_counting='direct')
  return model, layers


@functools.lru_cache(maxsize=None)
def _abstract_variables(index, resolution):
  model, _ = _module_and_layers(CROSS_CHECK[index], resolution)
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


@pytest.mark.parametrize('index', range(len(CROSS_CHECK)), ids=CROSS_CHECK_IDS)
def test_analytic_params_equal_model_init_layer_by_layer(index):
  variables = _abstract_variables(index, 97)
  _, layers = _module_and_layers(CROSS_CHECK[index], 97)
  config = CROSS_CHECK[index]
  record = segmentation.count_deeplab_model(
      f'deeplabv3_{config["backbone"]}', 97, config['output_stride'], config['aspp'],
      num_classes=config.get('num_classes', 21),
      width_multiplier=config.get('width_multiplier', 1.0),
      aspp_convolution=config.get('aspp_convolution', 'regular'), convention='exact')
  assert count_leaves(variables['params']) == record['params']
  assert count_leaves(variables['batch_stats']) == record['batch_stats']
  assert count_leaves(variables['params']['backbone']) == record['backbone_params']
  for layer in layers:
    module = variables['params']
    for key in layer.name.split('/'):
      module = module[key]
    assert count_leaves(module) == layer.weights, layer.name


@pytest.mark.parametrize('index', range(len(CROSS_CHECK)), ids=CROSS_CHECK_IDS)
def test_analytic_madds_equal_the_macs_of_the_traced_program(index):
  """'exact' (direct) counting is what the module runs: one conv_general_dilated or
  dot_general per layer, the dilated ones included (logits kept at the output stride)."""
  resolution = 97
  model, layers = _module_and_layers(CROSS_CHECK[index], resolution)
  model = model.clone(upsample_logits=False)
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
      _abstract_variables(index, resolution), images)
  assert sorted(traced_macs(jaxpr.jaxpr)) == sorted(layer.madds for layer in layers)


@pytest.mark.parametrize('output_stride, rates', [(16, {6, 12, 18}), (8, {12, 24, 36})])
def test_the_traced_aspp_convs_are_dilated_6_12_18_at_os_16_and_doubled_at_8(output_stride,
                                                                             rates):
  model = DeepLabV3(output_stride=output_stride, depthwise_impl='xla', width_multiplier=0.35)
  images = jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images)
  dense_dilations = {eqn.params['rhs_dilation'] for eqn in jaxpr.jaxpr.eqns
                     if eqn.primitive.name == 'conv_general_dilated'
                     and eqn.params['feature_group_count'] == 1}
  assert {dilation for dilation, _ in dense_dilations} - {1} == rates


# --- The head variants ----------------------------------------------------------------


def test_the_head_without_aspp_has_two_1x1_branches_a_projection_and_the_classifier():
  # image pooling and aspp0: 320 x 256 + BN; projection 512 x 256 + BN; logits 256 x 21 + 21.
  expected = 2 * (320 * 256 + 512) + (512 * 256 + 512) + (256 * 21 + 21)
  record = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2', aspp=False)
  assert record['head_params'] == expected == 301_845


def test_aspp_adds_three_dilated_3x3_convs_and_widens_the_projection():
  with_aspp = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2')
  without = segmentation.count_deeplab_model('deeplabv3_mobilenet_v2', aspp=False)
  assert with_aspp['head_params'] - without['head_params'] == (
      3 * (9 * 320 * 256 + 512) + 3 * 256 * 256)
  assert with_aspp['backbone_params'] == without['backbone_params'] == 1_811_712


def test_the_module_parameter_tree_names_deeplabs_scopes():
  variables = jax.eval_shape(
      DeepLabV3(depthwise_impl='xla', width_multiplier=0.35).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32))
  params = variables['params']
  assert set(params) == {'backbone', 'image_pooling', 'image_pooling_bn', 'aspp0', 'aspp0_bn',
                         'aspp1', 'aspp1_bn', 'aspp2', 'aspp2_bn', 'aspp3', 'aspp3_bn',
                         'concat_projection', 'concat_projection_bn', 'logits'}
  assert params['aspp1']['kernel'].shape == (3, 3, 112, 256)
  assert params['concat_projection']['kernel'].shape == (1, 1, 5 * 256, 256)
  assert params['logits']['bias'].shape == (21,)
  assert 'last_conv' not in params['backbone'] and 'classifier' not in params['backbone']


@pytest.mark.parametrize('kwargs, argument', [
    (dict(backbone='resnet'), 'backbone'), (dict(output_stride=4), 'output_stride'),
    (dict(output_stride=None), 'output_stride'), (dict(num_classes=0), 'num_classes'),
    (dict(aspp_convolution='atrous'), 'aspp_convolution'), (dict(head_channels=0), 'head_channels'),
    (dict(dropout_rate=1.0), 'dropout_rate'),
])
def test_deeplab_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    DeepLabV3(**kwargs)


# --- Inference strategies ----------------------------------------------------------------

# He initialisation keeps the activations' scale through the backbone.
TINY = dict(width_multiplier=0.35, head_channels=8, num_classes=3, depthwise_impl='xla',
            kernel_init='fan_in')


@functools.lru_cache(maxsize=None)
@functools.cache
def _tiny_model_and_variables():
  """Logits of order 1 rather than DeepLab's initial 0.01, so that probabilities differ.

  One compiled initialisation for the file's tests, which only read the variables.
  """
  model = DeepLabV3(**TINY)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  logits = variables['params']['logits']
  variables['params']['logits'] = dict(logits, kernel=100 * logits['kernel'])
  return model, variables


def _images(height=64, width=64, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(
      -1, 1, size=(1, height, width, 3)).astype(np.float32))


def test_the_logits_are_bilinearly_upsampled_to_the_input_size():
  model = DeepLabV3(**TINY)
  images = jax.ShapeDtypeStruct((2, 65, 49, 3), jnp.float32)
  (logits, endpoints), _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, return_endpoints=True), images)
  assert logits.shape == (2, 65, 49, 3) and logits.dtype == jnp.float32
  assert endpoints['logits_at_output_stride'].shape == (2, 5, 4, 3)


def test_multi_scale_flip_probabilities_have_the_images_shape_and_sum_to_one():
  model, variables = _tiny_model_and_variables()
  shape = jax.eval_shape(lambda v, x: inference.predict_multi_scale_flip(model, v, x),
                         variables, jax.ShapeDtypeStruct((2, 64, 80, 3), jnp.float32))
  assert shape.shape == (2, 64, 80, 3)
  probabilities = inference.predict_probabilities(model, variables, _images(), (0.5, 1.0), True)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
  assert inference.predict_labels(probabilities).shape == (1, 64, 64)


def test_a_mirrored_evaluation_is_mirrored_back_before_averaging():
  model, variables = _tiny_model_and_variables()
  images = _images()
  apply = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x), axis=-1))
  expected = (apply(images) + apply(images[:, :, ::-1])[:, :, ::-1]) / 2
  actual = inference.predict_probabilities(model, variables, images, (1.0,), flip=True)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
  # The network itself is not mirror-symmetric (TF-SAME pads 0 before, 1 after on 64 pixels).
  assert not np.allclose(apply(images), apply(images[:, :, ::-1])[:, :, ::-1], atol=0.05)


def test_flip_averaged_multi_scale_predictions_mirror_with_the_image():
  model, variables = _tiny_model_and_variables()
  images = _images(seed=1)
  predict = functools.partial(inference.predict_probabilities, model, variables,
                              scales=(0.5, 1.0), flip=True)
  np.testing.assert_allclose(predict(images[:, :, ::-1]), predict(images)[:, :, ::-1],
                             rtol=1e-4, atol=1e-5)


def test_single_scale_inference_is_the_softmax_of_the_network():
  model, variables = _tiny_model_and_variables()
  images = _images(seed=2)
  np.testing.assert_allclose(inference.predict_probabilities(model, variables, images),
                             jax.nn.softmax(model.apply(variables, images), axis=-1),
                             rtol=1e-5, atol=1e-6)


def test_align_corners_resize_maps_corners_onto_corners_and_keeps_ramps_linear():
  ramp = jnp.arange(3.0).reshape(1, 3, 1, 1) + 10 * jnp.arange(2.0).reshape(1, 1, 2, 1)
  resized = resize_bilinear_align_corners(ramp, 5, 3)
  np.testing.assert_allclose(resized[0, :, :, 0], np.array(
      [[0, 5, 10], [0.5, 5.5, 10.5], [1, 6, 11], [1.5, 6.5, 11.5], [2, 7, 12]]), atol=1e-5)
  np.testing.assert_allclose(resize_bilinear_align_corners(resized, 3, 2), ramp, atol=1e-5)
  pooled = jnp.full((1, 1, 1, 2), 3.0)
  assert resize_bilinear_align_corners(pooled, 4, 5).shape == (1, 4, 5, 2)


# --- The command line -----------------------------------------------------------------------


def test_command_prints_one_record_per_output_stride_with_the_issues_fields(capsys):
  assert stats_main(['--model', 'deeplabv3_mobilenet_v2', '--resolution', '512',
                     '--output-stride', '16,8', '--num-classes', '21', '--json']) == 0
  records = json.loads(capsys.readouterr().out)
  assert [record['output_stride'] for record in records] == [16, 8]
  assert {'model', 'resolution', 'output_stride', 'aspp', 'multi_scale_flip', 'num_classes',
          'params', 'madds'} <= set(records[0])
  assert records[0] == segmentation.count_deeplab_model('deeplabv3_mobilenet_v2', 512, 16)
  assert round(records[0]['madds'] / 1e9, 1) == 5.8


def test_command_defaults_to_table7s_setting_and_reads_the_head_flags(capsys):
  stats_main(['--model', 'deeplabv3_mobilenet_v2', '--output-stride', '8', '--no-aspp',
              '--multi-scale-flip', '--json'])
  [record] = json.loads(capsys.readouterr().out)
  assert (record['resolution'], record['input_size'], record['num_classes']) == (512, 513, 21)
  assert (record['aspp'], record['multi_scale_flip'], record['evaluations']) == (False, True, 12)
  stats_main(['--model', 'deeplabv3_mobilenet_v1', '--convention', 'exact', '--json'])
  [record] = json.loads(capsys.readouterr().out)
  assert (record['input_size'], record['atrous_counting']) == (512, 'direct')
  assert round(record['params'] / 1e6, 2) == 11.15


def test_command_prints_a_table_by_default(capsys):
  stats_main(['--model', 'deeplabv3_mobilenet_v2'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 3 and '4,523,541' in lines[2] and '5.8231' in lines[2]


@pytest.mark.parametrize('argv, message', [
    (['--model', 'mobilenet_v2', '--no-aspp'], '--no-aspp'),
    (['--model', 'mobilenet_v2', '--output-stride', '16'], '--output-stride'),
    (['--model', 'deeplabv3_mobilenet_v2', '--output-stride', '4'], 'output_stride'),
    (['--model', 'deeplabv3_mobilenet_v2', '--expansion-ratio', '6'], '--expansion-ratio'),
    (['--model', 'deeplabv3_mobilenet_v2', '--convention', 'tfprof'], '--convention'),
])
def test_command_rejects_flags_that_do_not_apply_naming_them(argv, message, capsys):
  assert stats_main(argv) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('error: ') and message in line


def test_table7_comparison_marks_the_two_reproduced_madds(capsys):
  assert segmentation.main([]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 + 6
  assert sum(line.count('✓') for line in lines) == 2
  assert '| 5.823B ✓ |' in lines[4] and '| 387.48B ✓ |' in lines[5]


def test_the_segmentation_tasks_evaluation_runs_the_trained_weights_at_its_stride_and_scales(
    monkeypatch):
  """Trained at output stride 16, evaluated at 8 on the same weights (only the dilations and
  ASPP's rates change); multi-scale + flip comes out as log-probabilities."""
  model, variables = _tiny_model_and_variables()
  config = deeplab_default.get_config()
  with config.unlocked():
    config.model.output_stride = model.output_stride
    config.segmentation.eval_output_stride = 8
  task = segmentation_task.Segmentation(config)
  images = _images(33, 33)
  at_8 = jax.jit(task.predictor(model))(variables, images)
  np.testing.assert_allclose(
      at_8, jax.jit(DeepLabV3(**TINY, output_stride=8).apply)(variables, images),
      rtol=1e-5, atol=1e-5)
  at_16 = jax.eval_shape(model.apply, variables, images)
  assert at_8.shape == at_16.shape and model.output_stride == 16
  # MF: whatever inference.predict_multi_scale_flip averages, as logits (one scale here,
  # mirrored: the file's other tests cover the 12 evaluations).
  one_scale_flip = lambda m, v, x: inference.predict_probabilities(m, v, x, (1.0,), flip=True)
  monkeypatch.setattr(inference, 'predict_multi_scale_flip', one_scale_flip)
  with config.unlocked():
    config.segmentation.update(eval_output_stride=None, eval_multi_scale_flip=True)
  images = _images()
  np.testing.assert_allclose(jax.nn.softmax(task.predictor(model)(variables, images), axis=-1),
                             one_scale_flip(model, variables, images), rtol=1e-5, atol=1e-6)
