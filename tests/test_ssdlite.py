"""SSDLite (paper Section 6.2): the network, and its accounting against Tables 5 and 6.

The printed figures come from the package's reference tables; which layers and
class count make each of them is stated in `mnv2_jax/stats/detection.py`. The
real network is checked without compiling, as for the classifier
(tests/test_stats.py): `jax.eval_shape` for the parameter tree and
`jax.make_jaxpr` for the multiply-adds of the traced program.
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import pytest

from mnv2_jax import reference
from mnv2_jax.detection.anchors import AnchorConfig
from mnv2_jax.models import MobileNetV2, ssdlite_architecture
from mnv2_jax.models.ssdlite import SSDLite
from mnv2_jax.stats import detection
from mnv2_jax.stats.__main__ import main as stats_main
from test_stats import traced_macs

TABLE_5 = {row['head']: row for row in reference.paper_table(5)}
TABLE_6 = {row['network']: row for row in reference.paper_table(6) if row['head'] == 'SSDLite'}
COCO_CLASSES = 80  # The predictors add the background: 81 class slots.


def _paper_counts(model, head='ssdlite'):
  return detection.count_detection_model(model, 1.0, 320, COCO_CLASSES, head)


def _truncated(value, decimals):
  return math.floor(value * 10**decimals) / 10**decimals


# --- Table 6: whole networks ---------------------------------------------------


@pytest.mark.parametrize('model, network', [('ssdlite_mobilenet_v2', 'MobileNetV2'),
                                            ('ssdlite_mobilenet_v1', 'MobileNetV1')])
def test_table_6_params_and_madds_of_mobilenet_plus_ssdlite_at_320(model, network):
  counts, printed = _paper_counts(model), TABLE_6[network]
  assert round(counts['params'] / 1e6, 1) == printed['params_millions']
  assert round(counts['params_no_bn'] / 1e6, 1) == printed['params_millions']
  assert round(counts['madds'] / 1e9, 1) == printed['madds_billions']


def test_mobilenet_v2_ssdlite_has_4_3_million_params_and_0_79_billion_madds():
  counts = _paper_counts('ssdlite_mobilenet_v2')
  assert counts['params_no_bn'] == 4_286_261 and counts['params'] == 4_337_013
  assert counts['madds'] == 788_830_144
  assert counts['parts']['backbone']['madds'] == 611_212_800


def test_mobilenet_v1_ssdlite_has_5_1_million_params_and_1_31_billion_madds():
  counts = _paper_counts('ssdlite_mobilenet_v1')
  assert counts['params_no_bn'] == 5_063_413 and counts['params'] == 5_100_661
  assert counts['madds'] == 1_309_162_944


def test_the_config_class_count_of_90_misses_table_6():
  counts = detection.count_detection_model('ssdlite_mobilenet_v2', num_classes=90)
  assert round(counts['params_no_bn'] / 1e6, 1) == 4.4  # printed 4.3


# --- Table 5: the prediction layers (extra layers + predictors) ---------------


def test_table_5_ssdlite_prediction_layers_have_2_1_million_params():
  layers = _paper_counts('ssdlite_mobilenet_v2')['prediction_layers']
  assert round(layers['params_no_bn'] / 1e6, 1) == TABLE_5['SSDLite']['params_millions']
  assert round(layers['params'] / 1e6, 1) == TABLE_5['SSDLite']['params_millions']


def test_table_5_ssd_prediction_layers_have_14_8_million_params_and_1_25_billion_madds():
  layers = _paper_counts('ssdlite_mobilenet_v2', 'ssd')['prediction_layers']
  assert layers['params_no_bn'] == 14_773_173
  assert round(layers['params_no_bn'] / 1e6, 1) == TABLE_5['SSD']['params_millions']
  # 1.259B: the printed 1.25 truncates it (as the official MobileNetV2 table does its MACs).
  assert layers['madds'] == 1_259_068_672
  assert _truncated(layers['madds'] / 1e9, 2) == TABLE_5['SSD']['madds_billions']
  assert round(layers['madds'] / 1e9, 2) == 1.26


def test_table_5_ssdlite_madds_are_0_18_billion_not_the_printed_0_35():
  """No reading reaches 0.35B consistently: multiply and add counted apart gives 0.355B,
  but doubles every other figure too, and Table 6's 0.8B total needs the 0.18B."""
  layers = _paper_counts('ssdlite_mobilenet_v2')['prediction_layers']
  assert layers['madds'] == 177_617_344
  assert TABLE_5['SSDLite']['madds_billions'] - layers['madds'] / 1e9 == pytest.approx(0.172,
                                                                                      abs=5e-4)
  assert _truncated(2 * layers['madds'] / 1e9, 2) == TABLE_5['SSDLite']['madds_billions']
  backbone = _paper_counts('ssdlite_mobilenet_v2')['parts']['backbone']['madds']
  assert round((backbone + TABLE_5['SSDLite']['madds_billions'] * 1e9) / 1e9, 1) == 1.0


def test_ssdlite_prediction_layers_are_7_times_smaller_than_ssd():
  ssd = _paper_counts('ssdlite_mobilenet_v2', 'ssd')['prediction_layers']
  ssdlite = _paper_counts('ssdlite_mobilenet_v2')['prediction_layers']
  assert ssd['params_no_bn'] / ssdlite['params_no_bn'] == pytest.approx(7.0, abs=0.1)
  assert ssd['madds'] / ssdlite['madds'] == pytest.approx(7.1, abs=0.1)


def test_parts_add_up_to_the_whole():
  counts = _paper_counts('ssdlite_mobilenet_v1', 'ssd')
  for key in ('params', 'params_no_bn', 'batch_stats', 'madds'):
    assert sum(part[key] for part in counts['parts'].values()) == counts[key]
    assert counts['prediction_layers'][key] == (counts['parts']['extra_layers'][key]
                                                + counts['parts']['predictors'][key])


# --- The architecture table ----------------------------------------------------


def test_mobilenet_v2_feature_maps_at_320():
  spec = ssdlite_architecture.ssd_spec('mobilenet_v2', 1.0, 320, COCO_CLASSES)
  assert [(m.source, m.channels, m.size, m.anchors_per_location) for m in spec.feature_maps] == [
      ('block_13/expansion', 576, (20, 20), 3),  # TF-Slim layer_15/expansion_output, OS 16
      ('last_conv', 1280, (10, 10), 6),          # TF-Slim layer_19, OS 32
      ('extra_layer_2', 512, (5, 5), 6),
      ('extra_layer_3', 256, (3, 3), 6),
      ('extra_layer_4', 256, (2, 2), 6),
      ('extra_layer_5', 128, (1, 1), 6)]
  assert spec.num_anchors == 2034 and spec.num_class_slots == 81


def test_mobilenet_v1_feature_maps_are_conv2d_11_and_13_pointwise():
  spec = ssdlite_architecture.ssd_spec('mobilenet_v1', 1.0, 320, COCO_CLASSES)
  assert [(m.source, m.channels, m.size) for m in spec.feature_maps[:2]] == [
      ('layer_10/output', 512, (20, 20)), ('layer_12/output', 1024, (10, 10))]


def test_ssdlite_uses_depthwise_convs_where_ssd_uses_regular_3x3_convs():
  lite = ssdlite_architecture.ssd_spec(head='ssdlite')
  ssd = ssdlite_architecture.ssd_spec(head='ssd')
  describe = lambda layers: [(layer.kind, layer.kernel_size, layer.stride, layer.out_channels)
                             for layer in layers]
  assert describe(lite.extra_layers[0]) == [('conv', 1, 1, 256), ('depthwise', 3, 2, 256),
                                           ('conv', 1, 1, 512)]
  assert describe(ssd.extra_layers[0]) == [('conv', 1, 1, 256), ('conv', 3, 2, 512)]
  assert describe(lite.class_predictors[0]) == [('depthwise', 3, 1, 576), ('conv', 1, 1, 3 * 81)]
  assert describe(ssd.box_predictors[1]) == [('conv', 3, 1, 6 * 4)]
  assert not any(layer.batch_norm for layers in ssd.box_predictors for layer in layers)


def test_extra_layers_scale_with_the_width_as_the_od_api_depth_rule():
  spec = ssdlite_architecture.ssd_spec(width_multiplier=0.1)
  # max(int(d * 0.1), 16) for d/2 and d: 512 -> 25/51, 256 -> 16/25, 128 -> 16/16 (the floor).
  assert [(layers[0].out_channels, layers[-1].out_channels) for layers in spec.extra_layers] == [
      (25, 51), (16, 25), (16, 25), (16, 16)]


# --- The Flax module against the table ---------------------------------------------

CROSS_CHECK_CONFIGS = [
    ('ssdlite_mobilenet_v2', 1.0, 320, COCO_CLASSES, 'ssdlite'),
    ('ssdlite_mobilenet_v2', 1.0, 320, COCO_CLASSES, 'ssd'),
    ('ssdlite_mobilenet_v1', 1.0, 320, COCO_CLASSES, 'ssdlite'),
    ('ssdlite_mobilenet_v2', 0.35, 64, 3, 'ssdlite'),
    ('ssdlite_mobilenet_v1', 0.5, 97, 1, 'ssd'),
]


@functools.lru_cache(maxsize=None)
def _abstract_model(model, width, resolution, num_classes, head):
  network = SSDLite(num_classes=num_classes, backbone=detection.backbone_name(model),
                    width_multiplier=width, head=head, depthwise_impl='xla')
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return network, images, jax.eval_shape(network.init, jax.random.key(0), images)


def _size(tree):
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('model, width, resolution, num_classes, head', CROSS_CHECK_CONFIGS)
def test_analytic_params_equal_model_init_layer_by_layer(model, width, resolution, num_classes,
                                                         head):
  _, _, variables = _abstract_model(model, width, resolution, num_classes, head)
  counts = detection.count_detection_model(model, width, resolution, num_classes, head)
  assert _size(variables['params']) == counts['params']
  assert _size(variables['batch_stats']) == counts['batch_stats']
  params = variables['params']
  for layers in detection.detection_layer_counts(model, width, resolution, num_classes,
                                                 head).values():
    for layer in layers:
      module = params
      for key in layer.name.split('/'):
        module = module[key]
      assert _size(module) == layer.weights, layer.name


@pytest.mark.parametrize('model, width, resolution, num_classes, head', CROSS_CHECK_CONFIGS)
def test_analytic_madds_equal_the_macs_of_the_traced_program(model, width, resolution,
                                                             num_classes, head):
  # With depthwise_impl='xla' every convolution is one conv_general_dilated or dot_general.
  network, images, variables = _abstract_model(model, width, resolution, num_classes, head)
  jaxpr = jax.make_jaxpr(lambda v, x: network.apply(v, x))(variables, images)
  layers = [layer for part in detection.detection_layer_counts(
      model, width, resolution, num_classes, head).values() for layer in part]
  assert sorted(traced_macs(jaxpr.jaxpr)) == sorted(layer.madds for layer in layers)


def test_backbone_parameters_are_the_classifiers_without_its_classifier():
  _, _, variables = _abstract_model(*CROSS_CHECK_CONFIGS[0])
  classifier = jax.eval_shape(MobileNetV2(depthwise_impl='xla').init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  paths = lambda tree: {jax.tree_util.keystr(path)
                        for path, _ in jax.tree_util.tree_leaves_with_path(tree)}
  expected = {path for path in paths(classifier['params']) if 'classifier' not in path}
  assert paths(variables['params']['backbone']) == expected


def test_outputs_have_one_row_per_anchor_for_any_input_of_at_least_64():
  network = SSDLite(num_classes=7, width_multiplier=0.35, depthwise_impl='xla')
  for height, width in [(64, 64), (64, 100), (129, 77)]:
    images = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
    variables = jax.eval_shape(network.init, jax.random.key(0), images)
    outputs = jax.eval_shape(network.apply, variables, images)
    num_anchors = network.anchors((height, width)).shape[0]
    assert outputs['box_encodings'].shape == (2, num_anchors, 4)
    assert outputs['class_logits'].shape == (2, num_anchors, 8)


def test_training_mode_updates_the_batch_statistics_of_every_layer():
  network, images, variables = _abstract_model(*CROSS_CHECK_CONFIGS[3])
  outputs, updates = jax.eval_shape(
      lambda v, x: network.apply(v, x, train=True, mutable=['batch_stats']), variables, images)
  assert outputs['class_logits'].shape == (1, network.anchors(64).shape[0], 4)
  assert jax.tree.structure(updates['batch_stats']) == jax.tree.structure(
      variables['batch_stats'])


@pytest.mark.parametrize('kwargs, argument', [
    (dict(backbone='resnet50'), 'backbone'),
    (dict(head='yolo'), 'head'),
    (dict(width_multiplier=0.0), 'width_multiplier'),
    (dict(num_classes=0), 'num_classes'),
    (dict(num_classes=True), 'num_classes'),
    (dict(anchor_config=AnchorConfig(num_layers=5)), 'anchor_config.num_layers'),
    (dict(depthwise_impl='fast'), 'depthwise_impl'),
    (dict(batch_norm_momentum=1.0), 'batch_norm_momentum'),
])
def test_module_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    SSDLite(**kwargs)


@pytest.mark.parametrize('shape', [(1, 63, 320, 3), (1, 320, 32, 3), (320, 320, 3)])
def test_module_rejects_images_smaller_than_64_or_not_nhwc(shape):
  network = SSDLite(width_multiplier=0.35, depthwise_impl='xla')
  with pytest.raises(ValueError, match='images'):
    jax.eval_shape(network.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize('kwargs, argument', [
    (dict(model='ssd_resnet50'), 'model'),
    (dict(resolution=63), 'resolution'),
    (dict(resolution=320.0), 'resolution'),
    (dict(num_classes=-1), 'num_classes'),
    (dict(head='rcnn'), 'head'),
    (dict(width_multiplier=-0.5), 'width_multiplier'),
])
def test_count_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    detection.count_detection_model(**{'model': 'ssdlite_mobilenet_v2', **kwargs})


# --- The command line ---------------------------------------------------------


def test_command_prints_json_records_with_the_per_part_breakdown(capsys):
  assert stats_main(['--model', 'ssdlite_mobilenet_v2', '--resolution', '320',
                     '--num-classes', '80', '--head', 'ssd', '--json']) == 0
  [record] = json.loads(capsys.readouterr().out)
  assert record == _paper_counts('ssdlite_mobilenet_v2', 'ssd')
  assert {'model', 'resolution', 'num_classes', 'head', 'params', 'madds'} <= set(record)
  assert set(record['parts']) == {'backbone', 'extra_layers', 'predictors'}


def test_command_defaults_to_the_papers_320_input_80_classes_and_ssdlite(capsys):
  assert stats_main(['--model', 'ssdlite_mobilenet_v1', '--json']) == 0
  [record] = json.loads(capsys.readouterr().out)
  assert record == _paper_counts('ssdlite_mobilenet_v1')


def test_command_prints_a_table_with_one_line_per_width_and_resolution(capsys):
  assert stats_main(['--model', 'ssdlite_mobilenet_v2', '--width', '1.0,0.5',
                     '--resolution', '320,64']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 + 4 and 'extra_layers' in lines[0]
  assert lines[1].split()[:4] == ['ssdlite_mobilenet_v2', '1.0', '320', 'ssdlite']


@pytest.mark.parametrize('argv, message', [
    (['--model', 'ssdlite_mobilenet_v2', '--resolution', '63'], 'resolution'),
    (['--model', 'ssdlite_mobilenet_v2', '--expansion-ratio', '6'], '--expansion-ratio'),
    (['--model', 'ssdlite_mobilenet_v2', '--head', 'yolo'], '--head'),
    (['--model', 'mobilenet_v2', '--head', 'ssd'], '--head'),
])
def test_command_rejects_bad_flags_with_one_error_line_naming_them(argv, message, capsys):
  assert stats_main(argv) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('error: ') and message in line
