"""The analytic accounting reproduces the published tables and the real network.

Published numbers come from the package's reference tables (mnv2_jax.reference);
the real network is checked without compiling: `jax.eval_shape` for the parameter
tree and `jax.make_jaxpr` for the multiply-adds of the traced program.
"""

import functools
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mnv2_jax import reference, stats
from mnv2_jax.models import MODELS
from mnv2_jax.stats.__main__ import main as stats_main

RELEASED_CHECKPOINTS = reference.checkpoints()
MOBILENET_V1_TABLE = reference.mobilenet_v1()


# --- MobileNetV2: the official table of released checkpoints ------------------


@pytest.mark.parametrize(
    'row', RELEASED_CHECKPOINTS, ids=lambda r: f'{r["multiplier"]}@{r["resolution"]}')
def test_counts_reproduce_the_released_checkpoint_table(row):
  # The official README counts 1001 classes, no BN parameters and floors the MACs.
  counts = stats.count_model('mobilenet_v2', row['multiplier'], row['resolution'],
                             num_classes=1001)
  assert round(counts['params_no_bn'] / 1e6, 2) == row['params_millions']
  assert math.floor(counts['madds'] / 1e6) == row['macs_millions']


def test_width_1_0_at_224_has_300_million_madds_and_3_47_million_weights():
  counts = stats.count_model('mobilenet_v2', 1.0, 224, num_classes=1001)
  assert counts['madds'] == 300_775_552
  assert counts['params_no_bn'] == 3_472_041


def test_width_1_0_with_1000_classes_has_3_504_872_trainable_params():
  counts = stats.count_model('mobilenet_v2', 1.0, 224, num_classes=1000)
  assert counts['params'] == 3_504_872
  # Plus the BN moving statistics: Keras' total of 3,538,984.
  assert counts['params'] + counts['batch_stats'] == 3_538_984


@pytest.mark.parametrize('width, params', [
    (0.35, 1_677_128), (0.5, 1_968_680), (0.75, 2_636_424), (1.3, 5_386_792), (1.4, 6_108_776)])
def test_trainable_params_match_keras_at_every_width(width, params):
  assert stats.count_model('mobilenet_v2', width, 224)['params'] == params


def test_params_do_not_depend_on_resolution_and_madds_grow_with_it():
  rows = [stats.count_model('mobilenet_v2', 0.75, r) for r in (96, 128, 160, 192, 224)]
  assert len({row['params'] for row in rows}) == 1
  assert [row['madds'] for row in rows] == sorted({row['madds'] for row in rows})


def test_each_extra_class_costs_one_weight_row_and_one_bias():
  base = stats.count_model('mobilenet_v2', 1.4, 160, num_classes=1000)
  more = stats.count_model('mobilenet_v2', 1.4, 160, num_classes=1001)
  assert more['params'] - base['params'] == 1792 + 1
  assert more['madds'] - base['madds'] == 1792


def test_larger_expansion_ratio_costs_more():
  madds = [stats.count_model('mobilenet_v2', 1.0, 224, expansion_ratio=t)['madds']
           for t in range(1, 11)]
  assert madds == sorted(set(madds))


# --- MobileNetV1 ---------------------------------------------------------------


@pytest.mark.parametrize(
    'row', MOBILENET_V1_TABLE, ids=lambda r: f'{r["multiplier"]}@{r["resolution"]}')
def test_mobilenet_v1_counts_reproduce_the_v1_paper(row):
  """The V1 paper counts a 1024x1000 FC; params to 0.1M and MACs rounded to the nearest 1M.

  Its resolution rows (Table 7) are the 224 count scaled by rho^2 ("the resolution
  multiplier reduces the cost by rho^2"), then rounded: at 160 the exact count is
  290.68M but the paper prints 290 = round(568.74 * (160/224)^2).
  """
  width, resolution = row['multiplier'], row['resolution']
  counts = stats.count_model('mobilenet_v1', width, resolution, num_classes=1000)
  at_224 = stats.count_model('mobilenet_v1', width, 224, num_classes=1000)
  assert round(counts['params_no_bn'] / 1e6, 1) == row['params_millions']
  assert round(at_224['madds'] * (resolution / 224)**2 / 1e6) == row['macs_millions']
  assert abs(counts['madds'] / 1e6 - row['macs_millions']) < 1


def test_mobilenet_v1_1_0_at_224_has_569_million_madds_and_keras_param_count():
  counts = stats.count_model('mobilenet_v1', 1.0, 224, num_classes=1000)
  assert round(counts['madds'] / 1e6) == 569
  assert counts['params'] == 4_231_976  # Keras MobileNet(alpha=1.0) trainable parameters.


def test_mobilenet_v1_exact_count_at_160_is_290_68_million():
  assert stats.count_model('mobilenet_v1', 1.0, 160)['madds'] == 290_675_200


def test_mobilenet_v1_cost_breakdown_matches_v1_paper_table_2():
  """V1 paper Table 2: 1x1 conv 94.86% / 74.59%, depthwise 3.06% / 1.06%, FC 0.18% / 24.33%.

  Its parameter shares leave out the FC bias. Its "Conv 3x3 1.19%" of the
  mult-adds is a digit swap of the 1.91% this count (and its own total) gives.
  """
  layers = stats.layer_counts('mobilenet_v1', 1.0, 224, 1000)
  madds = sum(layer.madds for layer in layers)
  weights = sum(layer.weights for layer in layers) - 1000
  share = lambda kind, key: sum(getattr(layer, key) for layer in layers if kind(layer))
  pointwise = lambda layer: layer.kind == 'conv' and layer.name != 'stem_conv'
  depthwise = lambda layer: layer.kind == 'depthwise'
  stem = lambda layer: layer.name == 'stem_conv'
  assert round(100 * share(pointwise, 'madds') / madds, 2) == 94.86
  assert round(100 * share(depthwise, 'madds') / madds, 2) == 3.06
  assert round(100 * share(stem, 'madds') / madds, 2) == 1.91
  assert round(100 * 1024 * 1000 / madds, 2) == 0.18
  assert round(100 * share(pointwise, 'weights') / weights, 2) == 74.59
  assert round(100 * share(depthwise, 'weights') / weights, 2) == 1.06
  assert round(100 * share(stem, 'weights') / weights, 2) == 0.02
  assert round(100 * 1024 * 1000 / weights, 2) == 24.33


# --- The counts agree with the real Flax modules ------------------------------


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def traced_macs(jaxpr) -> list[int]:
  """Multiply-accumulates of every convolution and matrix product, from shapes alone."""
  macs = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      assert eqn.params['batch_group_count'] == 1
      rhs_shape = eqn.invars[1].aval.shape
      out_features, in_features, *spatial = eqn.params['dimension_numbers'].rhs_spec
      # in_features of the kernel is already channels / feature_group_count.
      macs.append(math.prod(eqn.outvars[0].aval.shape) * rhs_shape[in_features] *
                  math.prod(rhs_shape[d] for d in spatial))
    elif eqn.primitive.name == 'dot_general':
      (lhs_contracting, _), _ = eqn.params['dimension_numbers']
      lhs_shape = eqn.invars[0].aval.shape
      macs.append(math.prod(eqn.outvars[0].aval.shape) *
                  math.prod(lhs_shape[d] for d in lhs_contracting))
    for sub_jaxpr in _sub_jaxprs(eqn):
      macs.extend(traced_macs(sub_jaxpr))
  return macs


CROSS_CHECK_CONFIGS = [
    ('mobilenet_v2', 1.0, 224, 6, 1000),
    ('mobilenet_v2', 0.35, 96, 6, 1001),
    ('mobilenet_v2', 0.5, 127, 3, 1000),
    ('mobilenet_v2', 1.4, 97, 10, 10),
    ('mobilenet_v2', 1.3, 33, 1, 5),
    ('mobilenet_v1', 1.0, 224, None, 1000),
    ('mobilenet_v1', 0.25, 99, None, 1001),
]


def _build(name, width, expansion_ratio, num_classes):
  kwargs = dict(num_classes=num_classes, width_multiplier=width, depthwise_impl='xla')
  if expansion_ratio is not None:
    kwargs['expansion_ratio'] = expansion_ratio
  return MODELS[name](**kwargs)


@functools.lru_cache(maxsize=None)
def _abstract_variables(name, width, resolution, expansion_ratio, num_classes):
  model = _build(name, width, expansion_ratio, num_classes)
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return model, images, jax.eval_shape(model.init, jax.random.key(0), images)


@pytest.mark.parametrize('name, width, resolution, expansion_ratio, num_classes',
                         CROSS_CHECK_CONFIGS)
def test_analytic_madds_equal_the_macs_of_the_traced_program(
    name, width, resolution, expansion_ratio, num_classes):
  # With depthwise_impl='xla' every convolution is one conv_general_dilated (the depthwise
  # ones with feature_group_count=channels) and the classifier one dot_general.
  model, images, variables = _abstract_variables(
      name, width, resolution, expansion_ratio, num_classes)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  macs = traced_macs(jaxpr.jaxpr)
  layers = stats.layer_counts(name, width, resolution, num_classes, expansion_ratio)
  assert sorted(macs) == sorted(layer.madds for layer in layers)
  assert sum(macs) == stats.count_model(
      name, width, resolution, num_classes, expansion_ratio)['madds']


@pytest.mark.parametrize('name, width, resolution, expansion_ratio, num_classes',
                         CROSS_CHECK_CONFIGS)
def test_analytic_params_equal_model_init(name, width, resolution, expansion_ratio, num_classes):
  _, _, variables = _abstract_variables(name, width, resolution, expansion_ratio, num_classes)
  counts = stats.count_model(name, width, resolution, num_classes, expansion_ratio)
  size = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  assert size(variables['params']) == counts['params']
  assert size(variables['batch_stats']) == counts['batch_stats']
  # Layer by layer: every analytic layer is a kernel (+ classifier bias) of the parameter tree.
  params = variables['params']
  for layer in stats.layer_counts(name, width, resolution, num_classes, expansion_ratio):
    module = params
    for key in layer.name.split('/'):
      module = module[key]
    assert size(module) == layer.weights, layer.name
  conv_weights = sum(
      leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if path[-1].key in ('kernel', 'bias') and 'bn' not in jax.tree_util.keystr(path))
  assert conv_weights == counts['params_no_bn']


# --- The command line ---------------------------------------------------------


def test_command_prints_one_json_row_per_width_and_resolution(capsys):
  assert stats_main(['--model', 'mobilenet_v2', '--width', '0.35,0.5,0.75,1.0,1.4',
                     '--resolution', '96,128,160,192,224', '--num-classes', '1001',
                     '--json']) == 0
  rows = json.loads(capsys.readouterr().out)
  assert len(rows) == 25
  assert {(row['width'], row['resolution']) for row in rows} == {
      (w, r) for w in (0.35, 0.5, 0.75, 1.0, 1.4) for r in (96, 128, 160, 192, 224)}
  one = next(row for row in rows if row['width'] == 1.0 and row['resolution'] == 224)
  assert one == stats.count_model('mobilenet_v2', 1.0, 224, 1001)
  assert {'model', 'width', 'resolution', 'num_classes', 'params', 'params_no_bn',
          'madds'} <= set(one)
  assert all(isinstance(row[key], int) for row in rows
             for key in ('params', 'params_no_bn', 'madds'))


def test_python_dash_m_runs_the_command():
  result = subprocess.run(
      [sys.executable, '-m', 'mnv2_jax.stats', '--width', '0.35', '--resolution', '96',
       '--num-classes', '1001', '--json'], capture_output=True, text=True, check=True)
  [row] = json.loads(result.stdout)
  assert math.floor(row['madds'] / 1e6) == 11 and round(row['params_no_bn'] / 1e6, 2) == 1.66


def test_command_prints_a_table_with_a_header_and_one_line_per_combination(capsys):
  assert stats_main(['--width', '1.0,0.5', '--resolution', '224,96']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 + 4
  assert lines[0].split()[:3] == ['model', 'width', 'resolution']
  assert '3,504,872' in lines[1] and '300,774,272' in lines[1]


def test_command_counts_mobilenet_v1_and_other_expansion_ratios(capsys):
  stats_main(['--model', 'mobilenet_v1', '--width', '0.25', '--json'])
  [v1] = json.loads(capsys.readouterr().out)
  assert v1 == stats.count_model('mobilenet_v1', 0.25, 224)
  stats_main(['--expansion-ratio', '4', '--resolution', '128', '--json'])
  [v2] = json.loads(capsys.readouterr().out)
  assert v2 == stats.count_model('mobilenet_v2', 1.0, 128, expansion_ratio=4)


@pytest.mark.parametrize('argv, message', [
    (['--width', '0'], 'width_multiplier'),
    (['--resolution', '31'], 'resolution'),
    (['--resolution', '96.5'], '--resolution'),
    (['--expansion-ratio', '0.5'], 'expansion_ratio'),
    (['--num-classes', '0'], 'num_classes'),
    (['--model', 'resnet50'], '--model'),
    (['--model', 'mobilenet_v1', '--expansion-ratio', '6'], '--expansion-ratio'),
])
def test_command_rejects_bad_flags_with_one_error_line_naming_them(argv, message, capsys):
  assert stats_main(argv) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('error: ') and message in line


@pytest.mark.parametrize('kwargs, argument', [
    (dict(name='resnet50'), 'model'),
    (dict(width_multiplier=0.0), 'width_multiplier'),
    (dict(width_multiplier=-1.0), 'width_multiplier'),
    (dict(resolution=31), 'resolution'),
    (dict(resolution=224.0), 'resolution'),
    (dict(expansion_ratio=0.5), 'expansion_ratio'),
    (dict(num_classes=0), 'num_classes'),
])
def test_count_model_rejects_bad_arguments_naming_them(kwargs, argument):
  kwargs = {'name': 'mobilenet_v2', **kwargs}
  with pytest.raises(ValueError, match=argument):
    stats.count_model(**kwargs)


def test_numbers_are_exact_integers_not_floats():
  counts = stats.count_model('mobilenet_v2', 0.35, 97, 1001, expansion_ratio=5)
  assert all(type(counts[key]) is int for key in ('params', 'params_no_bn', 'batch_stats', 'madds'))
