"""Keras' MobileNetV2 converts to ours with identical logits, and mismatches are named.

No weights are downloaded: Keras models are built with weights=None and every
weight and BN moving statistic is randomised, so equal logits need every
layer mapped right (incl. the depthwise kernel layout and TF-SAME padding).
"""

import functools
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mnv2_jax import convert  # noqa: E402
from mnv2_jax import pretrained  # noqa: E402
from mnv2_jax.models import MobileNetV2  # noqa: E402

import keras  # noqa: E402

# Keras' TF backend converts tensors with np.array(x, copy=False) semantics NumPy 2 deprecates.
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')


def _randomise(keras_model, seed: int) -> None:
  """He-scaled kernels and non-trivial BN (scale, bias, moving mean and variance)."""
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    for variable in layer.weights:
      shape = tuple(variable.shape)
      if variable.name == 'kernel':
        fan_in = np.prod(shape[:2]) if type(layer).__name__ == 'DepthwiseConv2D' else np.prod(
            shape[:-1])
        value = rng.normal(0, np.sqrt(2 / fan_in), shape)
      elif variable.name == 'gamma':
        value = rng.uniform(0.5, 1.5, shape)
      elif variable.name in ('beta', 'bias'):
        value = rng.normal(0, 0.2, shape)
      elif variable.name == 'moving_mean':
        value = rng.normal(0, 0.5, shape)
      elif variable.name == 'moving_variance':
        value = rng.uniform(0.5, 2.0, shape)
      else:
        raise AssertionError(f'unexpected Keras weight {variable.path}')
      variable.assign(value.astype(np.float32))


@functools.cache
def random_keras_model(width: float, resolution: int, num_classes: int = 1000):
  model = keras.applications.MobileNetV2(alpha=width, input_shape=(resolution, resolution, 3),
                                         weights=None, classes=num_classes,
                                         classifier_activation=None)
  _randomise(model, seed=int(width * 100) + resolution)
  return model


@functools.cache
def _jitted_apply(num_classes, width_multiplier, expansion_ratio, depthwise_impl):
  model = MobileNetV2(num_classes=num_classes, width_multiplier=width_multiplier,
                      expansion_ratio=expansion_ratio, depthwise_impl=depthwise_impl)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))


def _our_logits(variables, model_config, images, depthwise_impl='auto'):
  apply = _jitted_apply(model_config['num_classes'], model_config['width_multiplier'],
                        model_config['expansion_ratio'], depthwise_impl)
  return np.asarray(apply(variables, images))


def _images(resolution, batch=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, resolution, resolution, 3)).astype(
      np.float32)


# Widths at their extremes and in the middle; 97 is odd, where stride-2 TF SAME pads (1, 1).
@pytest.mark.parametrize('width, resolution, depthwise_impl',
                         [(0.35, 96, 'auto'), (1.0, 128, 'xla'), (1.4, 97, 'auto')])
def test_converted_keras_model_gives_the_same_logits(width, resolution, depthwise_impl):
  keras_model = random_keras_model(width, resolution)
  images = _images(resolution)
  keras_logits = np.asarray(keras_model(images, training=False))
  variables, model_config = convert.convert_keras_model(keras_model)
  assert model_config['width_multiplier'] == width
  assert model_config['resolution'] == resolution
  assert model_config['num_classes'] == 1000
  logits = _our_logits(variables, model_config, images, depthwise_impl)
  assert keras_logits.std() > 1  # The random network is far from constant.
  np.testing.assert_allclose(logits, keras_logits, rtol=0, atol=1e-4)


def test_converted_variables_have_exactly_our_parameter_tree():
  variables, model_config = convert.convert_keras_model(random_keras_model(0.35, 96))
  model = MobileNetV2(num_classes=1000, width_multiplier=0.35)
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3)))
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), variables) ==
          jax.tree.map(lambda x: (x.shape, x.dtype), expected))


@pytest.mark.parametrize('width', [0.5, 0.75, 1.3])
def test_keras_has_our_architecture_at_the_other_released_widths(width):
  # 0.35, 1.0 and 1.4 are covered by the logits test; shapes and strides are checked here.
  variables, model_config = convert.convert_keras_model(random_keras_model(width, 32))
  assert model_config['width_multiplier'] == width
  model = MobileNetV2(num_classes=1000, width_multiplier=width)
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  assert (jax.tree.map(lambda x: x.shape, variables) ==
          jax.tree.map(lambda x: x.shape, expected))


def test_a_different_width_is_named():
  with pytest.raises(ValueError, match=r'does not match MobileNetV2 width 1\.0 with 1000 classes: '
                                       r'Conv1/kernel has shape \(3, 3, 3, 16\), expected '
                                       r'\(3, 3, 3, 32\).*It is a MobileNetV2 of width 0\.35'):
    convert.convert_keras_model(random_keras_model(0.35, 96), width_multiplier=1.0)


def test_a_different_class_count_is_named():
  with pytest.raises(ValueError, match=r'predictions/kernel has shape \(1280, 1000\), expected '
                                       r'\(1280, 1001\).*with 1000 classes'):
    convert.convert_keras_model(random_keras_model(0.35, 96), num_classes=1001)


def test_a_different_resolution_is_named():
  with pytest.raises(ValueError, match='takes 96x96 images, but resolution 128 was requested'):
    convert.convert_keras_model(random_keras_model(0.35, 96), resolution=128)


def test_a_keras_model_that_is_not_a_mobilenet_v2_is_refused():
  other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name='conv'),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
  with pytest.raises(ValueError, match="is not a Keras MobileNetV2: it lacks the layers 'Conv1'"):
    convert.convert_keras_model(other)


def test_a_weights_file_that_is_not_a_mobilenet_v2_is_refused(tmp_path):
  other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name='conv'),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
  path = str(tmp_path / 'other.h5')
  other.save(path)
  with pytest.raises(ValueError, match=f"{path} is not a Keras MobileNetV2"):
    convert.convert(0.35, 96, weights=path)


@pytest.fixture(scope='module')
def keras_h5_file(tmp_path_factory):
  """A random 0.35@96 MobileNetV2 saved whole as a legacy .h5 file (keeps its input size)."""
  path = str(tmp_path_factory.mktemp('keras') / 'mobilenet_v2_0.35_96.h5')
  random_keras_model(0.35, 96).save(path)
  return path


@pytest.fixture(scope='module')
def downloaded_weights_file(tmp_path_factory):
  """A random 0.35@96 MobileNetV2 in the format and under the name of Keras' ImageNet download."""
  import h5py  # pylint: disable=g-import-not-at-top
  from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('keras') /
             'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5')
  with h5py.File(path, 'w') as file:
    legacy_h5_format.save_weights_to_hdf5_group(file, random_keras_model(0.35, 96))
  return path


def test_the_download_format_lists_exactly_the_layout(downloaded_weights_file):
  shapes = convert.read_h5_weight_shapes(downloaded_weights_file)
  layout = convert.keras_layout(0.35, 1000)
  assert shapes == {w.layer: {v.weight: v.shape for v in layout if v.layer == w.layer}
                    for w in layout}


def test_a_weights_file_of_another_width_is_named_before_loading(downloaded_weights_file):
  with pytest.raises(ValueError, match=r'does not match MobileNetV2 width 0\.5 .*'
                                       r'It is a MobileNetV2 of width 0\.35 with 1000 classes'):
    convert.convert(0.5, 96, weights=downloaded_weights_file)


def test_a_weights_file_of_another_resolution_is_named(keras_h5_file, downloaded_weights_file):
  with pytest.raises(ValueError, match='with 96px inputs, but --resolution 128'):
    convert.convert(0.35, 128, weights=keras_h5_file)
  # Keras' download names say which width and resolution they were trained for.
  with pytest.raises(ValueError, match=r'for width 0\.35 at 96px, but --width 0\.35 '
                                       r'--resolution 128 was requested'):
    convert.convert(0.35, 128, weights=downloaded_weights_file)


def test_a_keras_file_converts_like_its_model_and_names_a_resolution_mismatch(tmp_path):
  keras_model = random_keras_model(0.35, 96)
  path = str(tmp_path / 'model.keras')
  keras_model.save(path)
  variables, model_config = convert.convert(0.35, 96, weights=path)
  expected, _ = convert.convert_keras_model(keras_model)
  jax.tree.map(np.testing.assert_array_equal, variables, expected)
  assert model_config['source'] == f'keras weights file {path}'
  with pytest.raises(ValueError, match='takes 96x96 images, but resolution 128 was requested'):
    convert.convert(0.35, 128, weights=path)


def test_command_line_writes_a_checkpoint_with_keras_logits(downloaded_weights_file, tmp_path):
  out = tmp_path / 'pretrained'
  convert.main(['--from', 'keras', '--width', '0.35', '--resolution', '96', '--weights',
                downloaded_weights_file, '--num-classes', '1000', '--out', str(out)])
  variables, model_config = pretrained.load_pretrained(out)
  assert model_config['source'] == f'keras weights file {downloaded_weights_file}'
  assert model_config['input_range'] == '[-1, 1]'
  images = _images(96, seed=1)
  keras_logits = np.asarray(random_keras_model(0.35, 96)(images, training=False))
  np.testing.assert_allclose(_our_logits(variables, model_config, images), keras_logits,
                             rtol=0, atol=1e-4)


def test_imagenet_weights_offline_fail_with_instructions(monkeypatch):
  def offline(*args, **kwargs):
    raise Exception('URL fetch failure on https://storage.googleapis.com/...: None -- offline')
  monkeypatch.setattr(keras.src.utils.file_utils, 'get_file', offline)
  with pytest.raises(RuntimeError, match=r'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0\.35_'
                                         r'96\.h5.*~/\.keras/models/.*--weights'):
    convert.convert(0.35, 96, weights='imagenet')


@pytest.mark.parametrize('width, resolution, num_classes, message', [
    (0.6, 224, 1000, r'ImageNet weights for widths \[0\.35, 0\.5, 0\.75, 1\.0, 1\.3, 1\.4\]'),
    (1.0, 200, 1000, r'ImageNet weights for resolutions \[96, 128, 160, 192, 224\], not 200'),
    (1.0, 224, 1001, r'ImageNet weights have 1000 classes, not 1001'),
])
def test_imagenet_requests_keras_cannot_serve_are_refused_up_front(width, resolution, num_classes,
                                                                   message):
  with pytest.raises(ValueError, match=message):
    convert.convert(width, resolution, weights='imagenet', num_classes=num_classes)


def test_a_missing_weights_file_is_named(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    convert.convert(1.0, 224, weights=str(tmp_path / 'missing.h5'))



def test_the_training_loop_evaluates_a_converted_model_to_keras_own_accuracy(tmp_path):
  """`main --config.init_from=DIR --config.eval_only=True` on the built-in dataset (10 classes)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from mnv2_jax import data  # pylint: disable=g-import-not-at-top
  from mnv2_jax.train import loop  # pylint: disable=g-import-not-at-top
  config = default.get_config('width=0.35,res=32,batch=16')
  config.data.update(dict(data_dir=str(tmp_path / 'tfds'), num_train_examples=64,
                          num_test_examples=64, eval_batch_size=32))
  num_classes = data.get_dataset_info(config.data).num_classes
  keras_model = random_keras_model(0.35, 32, num_classes)
  variables, model_config = convert.convert_keras_model(keras_model)
  pretrained.save_pretrained(tmp_path / 'pretrained', variables, model_config)
  config.init_from = str(tmp_path / 'pretrained')
  config.eval_only = True
  loop.train_and_evaluate(config, str(tmp_path / 'eval'))
  with open(tmp_path / 'eval' / 'final_metrics.json') as f:
    final = json.load(f)

  correct, total = 0, 0
  for batch in data.create_eval_iterator(config.data):
    predictions = np.argmax(np.asarray(keras_model(batch['image'], training=False)), axis=-1)
    correct += int(np.sum((predictions == batch['label']) & batch['mask']))
    total += int(np.sum(batch['mask']))
  assert total == 64
  assert final['eval_top1'] == pytest.approx(correct / total)
  assert final['eval_ema_top1'] == final['eval_top1']
