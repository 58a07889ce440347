"""MobileNetV2 and MobileNetV1 as Flax modules: shapes, parameters, ablations, endpoints, errors.

Shapes and parameter counts use `jax.eval_shape` (tracing only, no compile).
The ablation tests run the real network once per variant at width 0.35 and
48x48 pixels with randomised parameters and BN statistics, so that a wiring
difference cannot hide behind near-zero initial values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import stats
from mnv2_jax.models import MobileNetV1, MobileNetV2, architecture

WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)
RESOLUTIONS = (96, 128, 160, 192, 224)


def count_leaves(tree) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def abstract_init(model, resolution: int, batch: int = 2, **call_kwargs):
  """(output, variables) of `model.init_with_output` as shapes only."""
  images = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, **call_kwargs), images)


# --- The sweep grid: shapes and parameter counts ------------------------------


@pytest.mark.parametrize('resolution', RESOLUTIONS)
@pytest.mark.parametrize('width', WIDTHS)
def test_sweep_grid_output_shape_and_params_match_the_accounting(width, resolution):
  # 'xla' only makes tracing quicker; the variables do not depend on the impl.
  model = MobileNetV2(width_multiplier=width, depthwise_impl='xla')
  (logits, endpoints), variables = abstract_init(model, resolution, return_endpoints=True)
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  spec = architecture.mobilenet_v2_spec(width)
  assert endpoints['last_conv'].shape == (2, -(-resolution // 32), -(-resolution // 32),
                                          spec.last_channels)
  counts = stats.count_model('mobilenet_v2', width, resolution)
  assert count_leaves(variables['params']) == counts['params']
  assert count_leaves(variables['batch_stats']) == counts['batch_stats']


@pytest.mark.parametrize('width, params', [
    (0.35, 1_677_128), (0.5, 1_968_680), (0.75, 2_636_424), (1.0, 3_504_872),
    (1.3, 5_386_792), (1.4, 6_108_776)])
def test_trainable_params_equal_keras_and_torchvision_counts(width, params):
  _, variables = abstract_init(MobileNetV2(width_multiplier=width, depthwise_impl='xla'), 96)
  assert count_leaves(variables['params']) == params


def test_width_1_0_has_3_538_984_params_with_bn_moving_statistics():
  _, variables = abstract_init(MobileNetV2(depthwise_impl='xla'), 64)
  assert count_leaves(variables) == 3_538_984


def test_variables_do_not_depend_on_the_depthwise_impl():
  shapes = lambda impl: jax.tree.map(lambda leaf: leaf.shape, abstract_init(
      MobileNetV2(width_multiplier=0.5, depthwise_impl=impl), 64)[1])
  assert shapes('xla') == shapes('shifted') == shapes('auto')


def test_parameter_tree_has_the_official_layer_names_and_shapes():
  _, variables = abstract_init(MobileNetV2(num_classes=1001, depthwise_impl='xla'), 64)
  params = jax.tree.map(lambda leaf: leaf.shape, variables['params'])
  assert params['stem_conv'] == {'kernel': (3, 3, 3, 32)}
  assert params['stem_bn'] == {'scale': (32,), 'bias': (32,)}
  # The first block has t=1: no expansion convolution.
  assert set(params['block_0']) == {'depthwise_conv', 'depthwise_bn', 'project_conv',
                                    'project_bn'}
  assert params['block_0']['depthwise_conv'] == {'kernel': (3, 3, 1, 32)}
  assert params['block_1']['expand_conv'] == {'kernel': (1, 1, 16, 96)}
  assert params['block_1']['depthwise_conv'] == {'kernel': (3, 3, 1, 96)}
  assert params['block_1']['project_conv'] == {'kernel': (1, 1, 96, 24)}
  assert params['block_16']['project_conv'] == {'kernel': (1, 1, 960, 320)}
  assert params['last_conv'] == {'kernel': (1, 1, 320, 1280)}
  assert params['classifier'] == {'kernel': (1280, 1001), 'bias': (1001,)}
  assert sorted(k for k in params if k.startswith('block_')) == sorted(
      f'block_{i}' for i in range(17))
  assert set(variables['batch_stats']['last_bn']) == {'mean', 'var'}


@pytest.mark.parametrize('expansion_ratio', range(1, 11))
def test_expansion_ratios_1_to_10_have_the_accounted_params_and_shapes(expansion_ratio):
  model = MobileNetV2(width_multiplier=0.5, expansion_ratio=expansion_ratio,
                      depthwise_impl='xla')
  (logits, endpoints), variables = abstract_init(model, 64, return_endpoints=True)
  assert logits.shape == (2, 1000)
  assert count_leaves(variables['params']) == stats.count_model(
      'mobilenet_v2', 0.5, 64, expansion_ratio=expansion_ratio)['params']
  spec = architecture.mobilenet_v2_spec(0.5, expansion_ratio)
  for block in spec.blocks:
    # The first block is always t=1; with t=1 no block has an expansion conv.
    has_expand_conv = 'expand_conv' in variables['params'][f'block_{block.index}']
    assert has_expand_conv == (block.index > 0 and expansion_ratio > 1)
    expected_width = block.in_channels if block.index == 0 else architecture.make_divisible(
        expansion_ratio * block.in_channels)
    assert endpoints[f'block_{block.index}/expansion'].shape[-1] == expected_width


def test_width_1_4_scales_the_last_conv_to_1792_and_0_35_keeps_1280():
  for width, last in ((1.4, 1792), (0.35, 1280)):
    _, variables = abstract_init(MobileNetV2(width_multiplier=width, depthwise_impl='xla'), 64)
    assert variables['params']['last_conv']['kernel'].shape[-1] == last


# --- Endpoints -----------------------------------------------------------------

BLOCK_STRIDES = (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)


@pytest.mark.parametrize('width', [0.35, 1.0, 1.4])
def test_endpoints_hold_every_block_output_and_expansion_with_the_right_channels(width):
  model = MobileNetV2(width_multiplier=width, depthwise_impl='xla')
  (_, endpoints), _ = abstract_init(model, 224, batch=1, return_endpoints=True)
  spec = architecture.mobilenet_v2_spec(width)
  assert [block.stride for block in spec.blocks] == list(BLOCK_STRIDES)
  assert endpoints['stem'].shape == (1, 112, 112, spec.stem_channels)
  size = 112
  for block in spec.blocks:
    i = block.index
    assert endpoints[f'block_{i}/expansion'].shape == (1, size, size, block.expanded_channels)
    size = -(-size // block.stride)
    assert endpoints[f'block_{i}/output'].shape == (1, size, size, block.out_channels)
  assert endpoints['last_conv'].shape == (1, 7, 7, spec.last_channels)
  assert endpoints['pre_logits'].shape == (1, spec.last_channels)
  assert endpoints['logits'].shape == (1, 1000)


def test_ssdlite_attaches_to_a_14x14x576_expansion_at_output_stride_16():
  # Paper Section 6.2: "the expansion of layer 15" (output stride 16) of the 1.0 network.
  (_, endpoints), _ = abstract_init(MobileNetV2(depthwise_impl='xla'), 224, batch=1,
                                    return_endpoints=True)
  assert endpoints['block_13/expansion'].shape == (1, 14, 14, 576)
  assert endpoints['block_16/output'].shape == (1, 7, 7, 320)


def test_official_channel_lists_at_every_width():
  # Reference README: stem | block outputs | last, for each released width.
  expected = {
      0.35: (16, [8, 8, 8] + [16] * 3 + [24] * 4 + [32] * 3 + [56] * 3 + [112], 1280),
      0.5: (16, [8, 16, 16] + [16] * 3 + [32] * 4 + [48] * 3 + [80] * 3 + [160], 1280),
      0.75: (24, [16, 24, 24] + [24] * 3 + [48] * 4 + [72] * 3 + [120] * 3 + [240], 1280),
      1.0: (32, [16, 24, 24] + [32] * 3 + [64] * 4 + [96] * 3 + [160] * 3 + [320], 1280),
      1.4: (48, [24, 32, 32] + [48] * 3 + [88] * 4 + [136] * 3 + [224] * 3 + [448], 1792),
  }
  for width, (stem, outputs, last) in expected.items():
    (_, endpoints), _ = abstract_init(MobileNetV2(width_multiplier=width, depthwise_impl='xla'),
                                      32, batch=1, return_endpoints=True)
    assert endpoints['stem'].shape[-1] == stem
    assert [endpoints[f'block_{i}/output'].shape[-1] for i in range(17)] == outputs
    assert endpoints['last_conv'].shape[-1] == last


# --- Ablations (paper Figure 6), run for real with randomised variables --------

ABLATION_WIDTH, ABLATION_RESOLUTION = 0.35, 48


def randomised_variables(abstract_variables, seed: int = 0):
  """Random kernels (1/sqrt(fan-in)) and BN parameters/statistics far from their init."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      values = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name in ('scale', 'var'):
      values = rng.uniform(0.5, 1.5, size=leaf.shape)
    else:  # BN bias and mean, classifier bias.
      values = rng.normal(scale=0.5, size=leaf.shape)
    return jnp.asarray(values, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract_variables)


@functools.lru_cache(maxsize=1)
def ablation_variables():
  _, variables = abstract_init(
      MobileNetV2(width_multiplier=ABLATION_WIDTH, depthwise_impl='xla'), ABLATION_RESOLUTION)
  images = np.random.default_rng(1).uniform(
      -1, 1, size=(2, ABLATION_RESOLUTION, ABLATION_RESOLUTION, 3)).astype(np.float32)
  return randomised_variables(variables), jnp.asarray(images)


@functools.lru_cache(maxsize=None)
def run_variant(shortcut: str = 'bottleneck', bottleneck_activation: str = 'linear',
                depthwise_impl: str = 'shifted'):
  """Logits, endpoints and every submodule's output (inference mode) as numpy arrays."""
  model = MobileNetV2(width_multiplier=ABLATION_WIDTH, shortcut=shortcut,
                      bottleneck_activation=bottleneck_activation, depthwise_impl=depthwise_impl)
  variables, images = ablation_variables()

  # The checks need exact values, not speed: skipping LLVM optimisation compiles faster.
  @functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
  def forward(variables, images):
    (logits, endpoints), state = model.apply(variables, images, train=False,
                                             return_endpoints=True, capture_intermediates=True,
                                             mutable=['intermediates'])
    return logits, endpoints, state['intermediates']

  return jax.tree.map(np.asarray, forward(variables, images))


def module_output(intermediates, *path):
  for key in path:
    intermediates = intermediates[key]
  return intermediates['__call__'][0]


def relu6(x):
  return np.minimum(np.maximum(x, 0), 6)


def block_input(endpoints, i):
  return endpoints['stem'] if i == 0 else endpoints[f'block_{i - 1}/output']


def assert_clearly_different(a, b):
  assert np.max(np.abs(a - b)) > 1e-2 * np.max(np.abs(b))


def test_the_standard_network_has_10_shortcuts_between_bottlenecks():
  _, endpoints, intermediates = run_variant('bottleneck')
  spec = architecture.mobilenet_v2_spec(ABLATION_WIDTH)
  residual = [block.index for block in spec.blocks if block.residual]
  assert residual == [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
  for block in spec.blocks:
    i = block.index
    projection = module_output(intermediates, f'block_{i}', 'project_bn')
    expected = projection + block_input(endpoints, i) if block.residual else projection
    np.testing.assert_allclose(endpoints[f'block_{i}/output'], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('expansion_ratio', range(2, 11))
@pytest.mark.parametrize('width', WIDTHS)
def test_the_expansion_shortcut_connects_10_pairs_of_equal_expanded_tensors(
    width, expansion_ratio):
  spec = architecture.mobilenet_v2_spec(width, expansion_ratio)
  sources = architecture.expansion_shortcut_sources(spec)
  assert sources == {i + 1: i for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)}
  for target, source in sources.items():
    assert spec.blocks[target].expanded_channels == spec.blocks[source].expanded_channels


def test_with_t_1_there_are_no_expansions_for_the_expansion_shortcut_to_connect():
  assert architecture.expansion_shortcut_sources(architecture.mobilenet_v2_spec(1.0, 1)) == {}


def test_the_expansion_shortcut_adds_the_previous_expansion_and_nothing_else():
  _, endpoints, intermediates = run_variant('expansion')
  spec = architecture.mobilenet_v2_spec(ABLATION_WIDTH)
  sources = architecture.expansion_shortcut_sources(spec)
  for block in spec.blocks[1:]:
    i = block.index
    expanded = relu6(module_output(intermediates, f'block_{i}', 'expand_bn'))
    if i in sources:
      expanded = expanded + endpoints[f'block_{sources[i]}/expansion']
    np.testing.assert_allclose(endpoints[f'block_{i}/expansion'], expanded, rtol=1e-5,
                               atol=1e-5)
    # No shortcut between the bottlenecks any more.
    np.testing.assert_allclose(endpoints[f'block_{i}/output'],
                               module_output(intermediates, f'block_{i}', 'project_bn'))


def test_the_expansion_shortcut_and_the_other_ablations_add_no_parameters():
  shapes = lambda shortcut, activation: jax.tree.map(lambda leaf: leaf.shape, abstract_init(
      MobileNetV2(width_multiplier=0.75, shortcut=shortcut, bottleneck_activation=activation,
                  depthwise_impl='xla'), 64)[1])
  standard = shapes('bottleneck', 'linear')
  for shortcut in architecture.SHORTCUTS:
    for activation in architecture.BOTTLENECK_ACTIVATIONS:
      assert shapes(shortcut, activation) == standard, (shortcut, activation)


def test_the_expansion_shortcut_changes_the_outputs():
  assert_clearly_different(run_variant('expansion')[0], run_variant('bottleneck')[0])


def test_no_residual_has_no_shortcut_anywhere_and_changes_the_outputs():
  logits, endpoints, intermediates = run_variant('none')
  for i in range(17):
    np.testing.assert_allclose(endpoints[f'block_{i}/output'],
                               module_output(intermediates, f'block_{i}', 'project_bn'))
    if i > 0:
      np.testing.assert_allclose(
          endpoints[f'block_{i}/expansion'],
          relu6(module_output(intermediates, f'block_{i}', 'expand_bn')), rtol=1e-6)
  assert_clearly_different(logits, run_variant('bottleneck')[0])


def test_relu6_in_the_bottleneck_clips_the_projection_and_changes_the_outputs():
  logits, endpoints, intermediates = run_variant('bottleneck', 'relu6')
  spec = architecture.mobilenet_v2_spec(ABLATION_WIDTH)
  for block in spec.blocks:
    i = block.index
    projection = module_output(intermediates, f'block_{i}', 'project_bn')
    expected = relu6(projection)
    if block.residual:
      expected = expected + block_input(endpoints, i)
    np.testing.assert_allclose(endpoints[f'block_{i}/output'], expected, rtol=1e-5, atol=1e-5)
  # The linear network really has negative projections for ReLU6 to remove.
  _, _, linear = run_variant('bottleneck', 'linear')
  assert (module_output(linear, 'block_16', 'project_bn') < 0).mean() > 0.2
  assert_clearly_different(logits, run_variant('bottleneck', 'linear')[0])


def test_shifted_and_xla_depthwise_give_the_same_network_outputs():
  np.testing.assert_allclose(run_variant(depthwise_impl='shifted')[0],
                             run_variant(depthwise_impl='xla')[0], rtol=1e-4, atol=1e-4)


# --- MobileNetV1 ---------------------------------------------------------------


@pytest.mark.parametrize('resolution', [128, 224])
@pytest.mark.parametrize('width', [0.25, 0.5, 0.75, 1.0])
def test_mobilenet_v1_output_shape_and_params_match_the_accounting(width, resolution):
  model = MobileNetV1(width_multiplier=width, depthwise_impl='xla')
  (logits, endpoints), variables = abstract_init(model, resolution, return_endpoints=True)
  assert logits.shape == (2, 1000)
  assert endpoints['layer_12/output'].shape == (2, resolution // 32, resolution // 32,
                                                int(1024 * width))
  counts = stats.count_model('mobilenet_v1', width, resolution)
  assert count_leaves(variables['params']) == counts['params']
  assert count_leaves(variables['batch_stats']) == counts['batch_stats']


def test_mobilenet_v1_1_0_has_4_231_976_trainable_params_as_keras():
  _, variables = abstract_init(MobileNetV1(depthwise_impl='xla'), 64)
  assert count_leaves(variables['params']) == 4_231_976


# --- Bad arguments -------------------------------------------------------------


@pytest.mark.parametrize('kwargs, argument', [
    (dict(width_multiplier=0.0), 'width_multiplier'),
    (dict(width_multiplier=-0.5), 'width_multiplier'),
    (dict(width_multiplier=float('nan')), 'width_multiplier'),
    (dict(expansion_ratio=0), 'expansion_ratio'),
    (dict(expansion_ratio=0.5), 'expansion_ratio'),
    (dict(bottleneck_activation='relu'), 'bottleneck_activation'),
    (dict(shortcut='dense'), 'shortcut'),
    (dict(depthwise_impl='cudnn'), 'depthwise_impl'),
    (dict(num_classes=0), 'num_classes'),
    (dict(batch_norm_momentum=1.0), 'batch_norm_momentum'),
])
def test_mobilenet_v2_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    MobileNetV2(**kwargs)


@pytest.mark.parametrize('kwargs, allowed', [
    (dict(bottleneck_activation='relu'), "['linear', 'relu6']"),
    (dict(shortcut='dense'), "['bottleneck', 'expansion', 'none']"),
    (dict(depthwise_impl='cudnn'), "['auto', 'xla', 'shifted', 'ffi']"),
])
def test_choice_errors_list_the_allowed_values(kwargs, allowed):
  with pytest.raises(ValueError) as error:
    MobileNetV2(**kwargs)
  assert allowed in str(error.value)


@pytest.mark.parametrize('kwargs, argument', [
    (dict(width_multiplier=0.0), 'width_multiplier'),
    (dict(depthwise_impl='grouped'), 'depthwise_impl'),
    (dict(num_classes=-3), 'num_classes'),
    (dict(batch_norm_momentum=-0.1), 'batch_norm_momentum'),
])
def test_mobilenet_v1_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    MobileNetV1(**kwargs)


@pytest.mark.parametrize('model', [MobileNetV2, MobileNetV1])
@pytest.mark.parametrize('height, width', [(31, 31), (64, 16)])
def test_resolution_below_32_is_rejected_naming_resolution(model, height, width):
  images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  with pytest.raises(ValueError, match='resolution'):
    jax.eval_shape(model(depthwise_impl='xla').init, jax.random.key(0), images)


def test_32_pixels_is_the_smallest_resolution_accepted():
  (logits, endpoints), _ = abstract_init(MobileNetV2(depthwise_impl='xla'), 32,
                                         return_endpoints=True)
  assert endpoints['last_conv'].shape[1:3] == (1, 1) and logits.shape == (2, 1000)


@pytest.mark.parametrize('resolution', [224.0, 96.5, '224', True])
def test_non_integer_resolution_is_rejected_naming_resolution(resolution):
  with pytest.raises(ValueError, match='resolution'):
    architecture.validate_resolution(resolution)


def test_images_must_be_nhwc():
  with pytest.raises(ValueError, match='NHWC'):
    jax.eval_shape(MobileNetV2(depthwise_impl='xla').init, jax.random.key(0),
                   jax.ShapeDtypeStruct((64, 64, 3), jnp.float32))


def _init(model, images):
  # Compiled: op-by-op initialisation of 17 blocks takes far longer.
  return jax.jit(model.init)(jax.random.key(0), images)


@pytest.mark.parametrize('model_class', [MobileNetV2, MobileNetV1])
def test_the_bn_momentum_attribute_sets_the_moving_average_update(model_class):
  """One training step moves every BN mean from 0 by (1 - momentum) * batch mean."""
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  model = model_class(num_classes=10, width_multiplier=0.35, batch_norm_momentum=0.9)
  variables = _init(model, images)
  _, updates = jax.jit(lambda variables, images: model.apply(
      variables, images, train=True, mutable=['batch_stats', 'intermediates'],
      capture_intermediates=lambda module, method: module.name == 'stem_conv',
      rngs={'dropout': jax.random.key(2)}))(variables, images)
  [stem_conv_output] = updates['intermediates']['stem_conv']['__call__']
  batch_mean = jnp.mean(stem_conv_output, axis=(0, 1, 2))
  assert float(jnp.abs(batch_mean).max()) > 0
  np.testing.assert_allclose(updates['batch_stats']['stem_bn']['mean'], 0.1 * batch_mean,
                             rtol=1e-4, atol=1e-7)
  # The parameter tree does not depend on the momentum.
  assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(
      model_class(num_classes=10, width_multiplier=0.35).init, jax.random.key(0), images))


def test_the_default_bn_momentum_is_the_official_0_997():
  assert MobileNetV2().batch_norm_momentum == MobileNetV1().batch_norm_momentum == 0.997


# --- Initialisation options (CPU-scale protocol; the official network's are the defaults) ---


def _train_mode_endpoints(model, images):
  variables = _init(model, images)
  apply = jax.jit(lambda variables, images: model.apply(
      variables, images, train=True, return_endpoints=True, mutable=['batch_stats'],
      rngs={'dropout': jax.random.key(1)}))
  (_, endpoints), _ = apply(variables, images)
  return variables, endpoints


IMAGES_48 = jax.random.uniform(jax.random.key(3), (4, 48, 48, 3), minval=-1, maxval=1)


def test_the_official_initialisation_is_the_default():
  model = MobileNetV2()
  assert (model.kernel_init, model.zero_init_residual, model.zero_init_classifier) == (
      'truncated_normal', False, False)
  assert (MobileNetV1().kernel_init, MobileNetV1().zero_init_classifier) == (
      'truncated_normal', False)
  variables = _init(MobileNetV2(num_classes=10, width_multiplier=0.35), IMAGES_48)
  assert all(float(jnp.min(leaf)) == 1.0 for path, leaf in
             jax.tree_util.tree_leaves_with_path(variables['params'])
             if path[-1].key == 'scale')
  kernel = variables['params']['block_3']['expand_conv']['kernel']
  assert float(jnp.abs(kernel).max()) <= 2 * 0.09 + 1e-6  # truncated at two stddevs
  assert abs(float(jnp.std(kernel)) - 0.09 * 0.88) < 0.01  # truncation shrinks the stddev


def test_zero_init_residual_starts_every_block_with_a_bottleneck_shortcut_as_the_identity():
  model = MobileNetV2(num_classes=10, width_multiplier=0.35, zero_init_residual=True)
  variables, endpoints = _train_mode_endpoints(model, IMAGES_48)
  residual = [b.index for b in model.spec.blocks if b.residual]
  assert len(residual) == 10
  for block in model.spec.blocks:
    scale = variables['params'][f'block_{block.index}']['project_bn']['scale']
    assert float(jnp.abs(scale).max()) == (0.0 if block.residual else 1.0)
    if block.residual:
      # Equal up to the rounding of XLA's fusions, which may recompute a tensor.
      np.testing.assert_allclose(endpoints[f'block_{block.index}/output'],
                                 endpoints[f'block_{block.index - 1}/output'], rtol=1e-6,
                                 atol=1e-6)


def test_zero_init_residual_with_expansion_shortcuts_zeroes_the_expansion_bn_they_bypass():
  model = MobileNetV2(num_classes=10, width_multiplier=0.35, shortcut='expansion',
                      zero_init_residual=True)
  variables, endpoints = _train_mode_endpoints(model, IMAGES_48)
  sources = architecture.expansion_shortcut_sources(model.spec)
  assert len(sources) == 10
  for block in model.spec.blocks:
    params = variables['params'][f'block_{block.index}']
    assert float(jnp.abs(params['project_bn']['scale']).min()) == 1.0
    if block.index in sources:
      assert float(jnp.abs(params['expand_bn']['scale']).max()) == 0.0
      np.testing.assert_allclose(endpoints[f'block_{block.index}/expansion'],
                                 endpoints[f'block_{sources[block.index]}/expansion'],
                                 rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('model_class', [MobileNetV2, MobileNetV1])
def test_zero_init_classifier_starts_every_logit_at_zero(model_class):
  model = model_class(num_classes=10, width_multiplier=0.35, zero_init_classifier=True)
  variables = _init(model, IMAGES_48)
  assert float(jnp.abs(variables['params']['classifier']['kernel']).max()) == 0.0
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, IMAGES_48), np.zeros((4, 10)))


@pytest.mark.parametrize('model_class', [MobileNetV2, MobileNetV1])
def test_fan_in_init_scales_each_kernel_by_its_fan_in(model_class):
  """He et al. 2015: variance 2 / fan-in, truncated normal (whose stddev flax corrects)."""
  model = model_class(num_classes=10, width_multiplier=0.5, kernel_init='fan_in')
  params = _init(model, IMAGES_48)['params']
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
             if path[-1].key == 'kernel' and leaf.size >= 4096]
  assert len(kernels) > 10
  for kernel in kernels:
    fan_in = kernel.size // kernel.shape[-1]
    if kernel.ndim == 4 and kernel.shape[2] == 1:  # depthwise: 3x3 taps of one channel
      fan_in = kernel.shape[0] * kernel.shape[1]
    np.testing.assert_allclose(float(jnp.std(kernel)), (2 / fan_in) ** 0.5, rtol=0.1)


def test_initialisation_options_do_not_change_the_variables_tree():
  shapes = lambda model: jax.tree.map(jnp.shape, jax.eval_shape(
      model.init, jax.random.key(0), IMAGES_48))
  assert shapes(MobileNetV2(width_multiplier=0.35, kernel_init='fan_in', zero_init_residual=True,
                            zero_init_classifier=True)) == shapes(
                                MobileNetV2(width_multiplier=0.35))


def test_an_unknown_kernel_init_is_rejected_listing_the_choices():
  for model_class in (MobileNetV2, MobileNetV1):
    with pytest.raises(ValueError, match=r"kernel_init.*\['truncated_normal', 'fan_in'\]"):
      model_class(kernel_init='xavier')
