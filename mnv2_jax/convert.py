r"""Imports the official ImageNet MobileNetV2 weights from Keras into a pretrained checkpoint.

  python -m mnv2_jax.convert --from keras --width 1.0 --resolution 224 \
      [--weights imagenet | --weights path/to/file.h5|.keras] [--num-classes 1000] --out DIR

writes DIR (see `mnv2_jax.pretrained`), which
`python -m mnv2_jax.main --config configs/imagenet.py --workdir WORKDIR --config.init_from=DIR
--config.eval_only=True` evaluates and which fine-tuning starts from. From Python:
`convert_keras_model(keras_model) -> (variables, model_config)`.

`keras.applications.MobileNetV2` carries the TF-Slim release converted to Keras,
for widths 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 at resolutions 96, 128, 160, 192, 224.
It is the same network as `mnv2_jax.models.MobileNetV2` in inference mode: the
converted checkpoint reproduces Keras' logits to float32 rounding (tested at
several widths and resolutions, even and odd). Where they differ:

* Classes: Keras' ImageNet weights have 1000 classes (no background class);
  the TF-Slim checkpoints have 1001 (class 0 = background). A converted
  checkpoint has `num_classes` 1000 and labels in Keras/TFDS order, which is the
  order of `imagenet2012` in TFDS (slim's label i+1 is TFDS label i).
* Input: both expect RGB scaled to [-1, 1] (`x / 127.5 - 1`,
  `keras.applications.mobilenet_v2.preprocess_input`) - as our data pipeline does.
* Channel widths: Keras rounds block outputs as make_divisible(int(c * alpha)),
  expansions as t * k without rounding, and the last conv as 1280 for alpha <= 1
  else make_divisible(1280 * alpha); for k a multiple of 8 and integer t this is
  exactly our rule at every width (checked for 0.25-2.0, incl. all six released).
* Padding: Keras' stem is a 'same' convolution (TF SAME); its stride-2 depthwise
  convolutions use ZeroPadding2D(correct_pad) + 'valid', which pads (0, 1) on an
  even input and (1, 1) on an odd one - identical to TF SAME for a model built
  with a fixed input size. A Keras model built with an unknown input size
  (input_shape=(None, None, 3)) always pads (0, 1), so on odd feature maps it
  computes a different (smaller) output than TF SAME; its weights are the same.
* Batch norm: epsilon 1e-3 in both; Keras' momentum is 0.999, ours (slim's
  decay) 0.997 - only relevant when training.
* Dropout: Keras' MobileNetV2 has none; ours has dropout 0.2 before the
  classifier in training (inference is unaffected).
* Weights carry no resolution: Keras' files are per resolution only because
  each was trained at that size. `resolution` in the checkpoint records it.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mnv2_jax import errors
from mnv2_jax import pretrained
from mnv2_jax.models import architecture

# What keras.applications.MobileNetV2 has ImageNet weights for.
KERAS_IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
KERAS_IMAGENET_RESOLUTIONS = (96, 128, 160, 192, 224)
KERAS_IMAGENET_CLASSES = 1000
KERAS_BATCH_NORM_EPSILON = 1e-3
# Keras' file name for the ImageNet weights with the classifier ('include_top').
KERAS_IMAGENET_FILE = re.compile(
    r'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_(?P<width>[0-9.]+)_(?P<resolution>\d+)\.h5$')

# Keras BatchNormalization weight -> (our collection, our name).
_BATCH_NORM_WEIGHTS = {'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
                       'moving_mean': ('batch_stats', 'mean'),
                       'moving_variance': ('batch_stats', 'var')}


@dataclasses.dataclass(frozen=True)
class KerasWeight:
  """One Keras weight and where it goes in our variables."""
  layer: str                    # Keras layer name, e.g. 'block_3_expand_BN'.
  weight: str                   # Keras weight name within the layer, e.g. 'gamma'.
  shape: tuple[int, ...]        # Shape in Keras.
  collection: str               # 'params' or 'batch_stats'.
  path: tuple[str, ...]         # Path in our collection, e.g. ('block_3', 'expand_bn', 'scale').
  depthwise: bool = False       # Keras (3, 3, C, 1) -> ours (3, 3, 1, C).


def _keras_block_prefix(index: int) -> str:
  # Keras names block 0 (t=1, no expansion) after slim's 'expanded_conv'.
  return 'expanded_conv_' if index == 0 else f'block_{index}_'


def keras_layout(width_multiplier: float, num_classes: int) -> tuple[KerasWeight, ...]:
  """Every weight of keras.applications.MobileNetV2(alpha=width_multiplier), in Keras' order.

  Read from our architecture table, so it is also the statement of what a
  Keras model must contain to be our network.
  """
  spec = architecture.mobilenet_v2_spec(width_multiplier, expansion_ratio=6)
  layout = []

  # `ours` is the '/'-separated path of our module, e.g. 'block_3/expand_conv'.
  def conv(layer, in_channels, out_channels, kernel_size, ours):
    shape = (kernel_size, kernel_size, in_channels, out_channels)
    layout.append(KerasWeight(layer, 'kernel', shape, 'params', (*ours.split('/'), 'kernel')))

  def depthwise(layer, channels, ours):
    layout.append(KerasWeight(layer, 'kernel', (3, 3, channels, 1), 'params',
                              (*ours.split('/'), 'kernel'), depthwise=True))

  def batch_norm(layer, channels, ours):
    for weight, (collection, name) in _BATCH_NORM_WEIGHTS.items():
      layout.append(KerasWeight(layer, weight, (channels,), collection, (*ours.split('/'), name)))

  conv('Conv1', 3, spec.stem_channels, 3, 'stem_conv')
  batch_norm('bn_Conv1', spec.stem_channels, 'stem_bn')
  for block in spec.blocks:
    prefix, ours = _keras_block_prefix(block.index), f'block_{block.index}'
    if block.has_expansion:
      conv(f'{prefix}expand', block.in_channels, block.expanded_channels, 1, f'{ours}/expand_conv')
      batch_norm(f'{prefix}expand_BN', block.expanded_channels, f'{ours}/expand_bn')
    depthwise(f'{prefix}depthwise', block.expanded_channels, f'{ours}/depthwise_conv')
    batch_norm(f'{prefix}depthwise_BN', block.expanded_channels, f'{ours}/depthwise_bn')
    conv(f'{prefix}project', block.expanded_channels, block.out_channels, 1, f'{ours}/project_conv')
    batch_norm(f'{prefix}project_BN', block.out_channels, f'{ours}/project_bn')
  conv('Conv_1', spec.blocks[-1].out_channels, spec.last_channels, 1, 'last_conv')
  batch_norm('Conv_1_bn', spec.last_channels, 'last_bn')
  layout.append(KerasWeight('predictions', 'kernel', (spec.last_channels, num_classes), 'params',
                            ('classifier', 'kernel')))
  layout.append(KerasWeight('predictions', 'bias', (num_classes,), 'params',
                            ('classifier', 'bias')))
  return tuple(layout)


def keras_strides(width_multiplier: float) -> dict[str, int]:
  """The stride of every strided Keras layer (the stem and the depthwise convolutions)."""
  spec = architecture.mobilenet_v2_spec(width_multiplier, expansion_ratio=6)
  strides = {'Conv1': 2}
  for block in spec.blocks:
    strides[f'{_keras_block_prefix(block.index)}depthwise'] = block.stride
  return strides


# ---------------------------------------------------------------------------------------------
# Comparing what a model or file holds with the layout.

Shapes = Mapping[str, Mapping[str, tuple[int, ...]]]  # layer -> weight -> shape


def _layout_shapes(layout: Sequence[KerasWeight]) -> dict[str, dict[str, tuple[int, ...]]]:
  shapes = {}
  for w in layout:
    shapes.setdefault(w.layer, {})[w.weight] = w.shape
  return shapes


def _num_classes_of(shapes: Shapes) -> Optional[int]:
  bias = shapes.get('predictions', {}).get('bias')
  return bias[0] if bias and len(bias) == 1 else None


def identify_width(shapes: Shapes) -> Optional[float]:
  """The released width whose MobileNetV2 has exactly these weights, if any."""
  num_classes = _num_classes_of(shapes)
  if num_classes is None:
    return None
  for width in KERAS_IMAGENET_WIDTHS:
    if _layout_shapes(keras_layout(width, num_classes)) == {k: dict(v) for k, v in shapes.items()}:
      return width
  return None


def _short_list(names: Sequence[str], limit: int = 4) -> str:
  shown = ', '.join(repr(n) for n in names[:limit])
  return shown + (f' and {len(names) - limit} more' if len(names) > limit else '')


def check_weights_match(shapes: Shapes, width_multiplier: float, num_classes: int,
                        what: str) -> None:
  """Raises ValueError naming what differs between `shapes` and MobileNetV2(width, classes)."""
  expected = _layout_shapes(keras_layout(width_multiplier, num_classes))
  missing = [layer for layer in expected if layer not in shapes]
  if len(missing) > len(expected) // 2:
    raise ValueError(
        f'{what} is not a Keras MobileNetV2: it lacks the layers {_short_list(missing)} '
        f'(expected the layer names of keras.applications.MobileNetV2).')
  if missing == ['predictions']:
    raise ValueError(f'{what} has no classifier layer \'predictions\' (built with '
                     f'include_top=False?); conversion needs the full model with its classifier.')
  differences = []
  if missing:
    differences.append(f'missing layers {_short_list(missing)}')
  unexpected = [layer for layer in shapes if layer not in expected]
  if unexpected:
    differences.append(f'unexpected layers {_short_list(unexpected)}')
  for layer, weights in expected.items():
    if layer not in shapes:
      continue
    if set(shapes[layer]) != set(weights):
      differences.append(f'{layer} has weights {sorted(shapes[layer])}, expected {sorted(weights)}')
      continue
    for weight, shape in weights.items():
      if tuple(shapes[layer][weight]) != shape:
        differences.append(f'{layer}/{weight} has shape {tuple(shapes[layer][weight])}, '
                           f'expected {shape}')
  if not differences:
    return
  actual_classes = _num_classes_of(shapes)
  actual_width = identify_width(shapes)
  hint = ''
  if actual_width is not None:
    hint = f' It is a MobileNetV2 of width {actual_width} with {actual_classes} classes.'
  elif actual_classes is not None and actual_classes != num_classes:
    hint = f' It has {actual_classes} classes.'
  raise ValueError(
      f'{what} does not match MobileNetV2 width {width_multiplier} with {num_classes} classes: '
      + '; '.join(differences[:4]) + (f' (and {len(differences) - 4} more)' if len(differences) > 4
                                       else '') + '.' + hint)


# ---------------------------------------------------------------------------------------------
# Keras model -> our variables.

def _to_variables(arrays: Mapping[tuple[str, str], np.ndarray],
                  layout: Sequence[KerasWeight]) -> dict[str, Any]:
  variables = {'params': {}, 'batch_stats': {}}
  for w in layout:
    value = np.asarray(arrays[(w.layer, w.weight)], dtype=np.float32)
    if w.depthwise:
      value = np.transpose(value, (0, 1, 3, 2))
    node = variables[w.collection]
    for key in w.path[:-1]:
      node = node.setdefault(key, {})
    node[w.path[-1]] = value
  return variables


def _keras_model_weights(keras_model) -> dict[tuple[str, str], np.ndarray]:
  import keras  # pylint: disable=g-import-not-at-top
  arrays = {}
  for layer in keras_model.layers:
    for variable in layer.weights:
      # Keras 3 names variables by their attribute ('kernel'); Keras 2 files add ':0'.
      arrays[(layer.name, variable.name.split('/')[-1].split(':')[0])] = (
          keras.ops.convert_to_numpy(variable))
  return arrays


def _keras_model_resolution(keras_model, resolution: Optional[int]) -> int:
  input_shape = keras_model.input_shape
  if not (isinstance(input_shape, tuple) and len(input_shape) == 4):
    raise ValueError(f'Keras model {keras_model.name!r} must take one NHWC image input, '
                     f'got input shape {input_shape}.')
  height, width, channels = input_shape[1:]
  if channels != 3:
    raise ValueError(f'Keras model {keras_model.name!r} takes {channels} input channels, '
                     f'expected 3 (RGB, channels_last).')
  if height is None or width is None:
    if resolution is None:
      raise ValueError(f'Keras model {keras_model.name!r} has no fixed input size; pass '
                       f'resolution= (the size its weights were trained at).')
    return resolution
  if height != width:
    raise ValueError(f'Keras model {keras_model.name!r} takes {height}x{width} images; '
                     f'only square inputs are supported.')
  if resolution is not None and height != resolution:
    raise ValueError(f'Keras model {keras_model.name!r} takes {height}x{width} images, '
                     f'but resolution {resolution} was requested.')
  return height


def convert_keras_model(keras_model, *, width_multiplier: Optional[float] = None,
                        resolution: Optional[int] = None, num_classes: Optional[int] = None,
                        source: Optional[str] = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """Converts a keras.applications.MobileNetV2 into (variables, model_config) for our model.

  Args:
    keras_model: a Keras MobileNetV2 with its classifier (include_top=True),
      channels_last. Any classifier_activation: we keep the logits.
    width_multiplier: expected width; None infers it among the released widths.
    resolution: expected input size; None takes the model's input size.
    num_classes: expected class count; None takes the classifier's.
    source: recorded in model_config; defaults to the Keras model's name.

  Raises:
    ValueError naming what differs when the model is not this MobileNetV2.
  """
  what = f'Keras model {keras_model.name!r}'
  arrays = _keras_model_weights(keras_model)
  shapes = {}
  for (layer, weight), value in arrays.items():
    shapes.setdefault(layer, {})[weight] = tuple(value.shape)
  if 'Conv1' not in shapes:
    nested = [layer.name for layer in keras_model.layers
              if hasattr(layer, 'layers') and any(l.name == 'Conv1' for l in layer.layers)]
    if nested:
      raise ValueError(f'{what} wraps a MobileNetV2 in layer {nested[0]!r}; convert that inner '
                       f'model (keras_model.get_layer({nested[0]!r})) instead.')
  if num_classes is None:
    num_classes = _num_classes_of(shapes)
    if num_classes is None:
      check_weights_match(shapes, 1.0, KERAS_IMAGENET_CLASSES, what)  # Names what is missing.
  if width_multiplier is None:
    width_multiplier = identify_width(shapes)
    if width_multiplier is None:
      check_weights_match(shapes, 1.0, num_classes, what)  # Raises, naming the differences.
  check_weights_match(shapes, width_multiplier, num_classes, what)
  resolution = _keras_model_resolution(keras_model, resolution)
  architecture.validate_resolution(resolution)

  for layer in keras_model.layers:
    epsilon = getattr(layer, 'epsilon', None)
    if type(layer).__name__ == 'BatchNormalization' and not np.isclose(
        epsilon, KERAS_BATCH_NORM_EPSILON):
      raise ValueError(f'{what}: layer {layer.name!r} has batch-norm epsilon {epsilon}, '
                       f'expected {KERAS_BATCH_NORM_EPSILON} (as MobileNetV2).')
  for name, stride in keras_strides(width_multiplier).items():
    strides = tuple(keras_model.get_layer(name).strides)
    if strides != (stride, stride):
      raise ValueError(f'{what}: layer {name!r} has strides {strides}, expected '
                       f'{(stride, stride)} (as MobileNetV2).')

  layout = keras_layout(width_multiplier, num_classes)
  variables = _to_variables(arrays, layout)
  model_config = dict(name='mobilenet_v2', width_multiplier=width_multiplier, expansion_ratio=6,
                      num_classes=num_classes, resolution=resolution,
                      source=source or f'keras model {keras_model.name}',
                      input_range=pretrained.INPUT_RANGE)
  return variables, model_config


# ---------------------------------------------------------------------------------------------
# Files and the ImageNet download.

def read_h5_weight_shapes(path: str) -> Optional[dict[str, dict[str, tuple[int, ...]]]]:
  """Weight shapes by layer name from a Keras-2-style .h5 file (weights or full model).

  Returns None for Keras 3 '.weights.h5' files, which do not store layer names.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    file = h5py.File(path, 'r')
  except OSError as e:
    raise ValueError(f'{path} is not a readable HDF5 file ({e}).') from e
  with file:
    group = file['model_weights'] if 'model_weights' in file else file
    if 'layer_names' not in group.attrs:
      return None
    shapes = {}
    for layer in group.attrs['layer_names']:
      layer = layer.decode() if isinstance(layer, bytes) else str(layer)
      for name in group[layer].attrs.get('weight_names', []):
        name = name.decode() if isinstance(name, bytes) else str(name)
        weight = name.split('/')[-1].split(':')[0]
        shapes.setdefault(layer, {})[weight] = tuple(group[layer][name].shape)
    return shapes


def _h5_input_resolution(path: str) -> Optional[int]:
  """The input size recorded in a full-model .h5 file, if any."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'r') as file:
    config = file.attrs.get('model_config')
  if config is None:
    return None
  config = json.loads(config.decode() if isinstance(config, bytes) else config)
  for layer in config.get('config', {}).get('layers', []):
    if layer.get('class_name') == 'InputLayer':
      layer_config = layer.get('config', {})
      shape = layer_config.get('batch_shape') or layer_config.get('batch_input_shape')
      if shape and len(shape) == 4:
        return shape[1]
  return None


def _check_weights_file(path: str, width_multiplier: float, resolution: int,
                        num_classes: int) -> None:
  """Checks an .h5 file against the requested model before Keras loads it by layer order."""
  shapes = read_h5_weight_shapes(path)
  if shapes is not None:
    check_weights_match(shapes, width_multiplier, num_classes, path)
  match = KERAS_IMAGENET_FILE.search(os.path.basename(path))
  if match and (float(match['width']) != width_multiplier or
                int(match['resolution']) != resolution):
    raise ValueError(
        f'{path} holds Keras\' ImageNet weights for width {float(match["width"])} at '
        f'{match["resolution"]}px, but --width {width_multiplier} --resolution {resolution} '
        f'was requested.')
  file_resolution = _h5_input_resolution(path)
  if file_resolution is not None and file_resolution != resolution:
    raise ValueError(f'{path} is a model with {file_resolution}px inputs, but --resolution '
                     f'{resolution} was requested.')


def _validate_request(width_multiplier: float, resolution: int, weights: str,
                      num_classes: int) -> None:
  architecture.validate_width_multiplier(width_multiplier)
  architecture.validate_resolution(resolution)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}.')
  if weights == 'imagenet':
    if width_multiplier not in KERAS_IMAGENET_WIDTHS:
      raise ValueError(f'Keras has ImageNet weights for widths {list(KERAS_IMAGENET_WIDTHS)}, '
                       f'not {width_multiplier}.')
    if resolution not in KERAS_IMAGENET_RESOLUTIONS:
      raise ValueError(f'Keras has ImageNet weights for resolutions '
                       f'{list(KERAS_IMAGENET_RESOLUTIONS)}, not {resolution}; convert the '
                       f'nearest one (the network runs at any resolution).')
    if num_classes != KERAS_IMAGENET_CLASSES:
      raise ValueError(f'Keras\' ImageNet weights have {KERAS_IMAGENET_CLASSES} classes, not '
                       f'{num_classes}; drop --num-classes (fine-tuning replaces the head).')
  elif not os.path.isfile(weights):
    raise ValueError(f'--weights must be "imagenet" or an existing .h5/.keras file; '
                     f'{weights!r} does not exist.')
  elif not weights.endswith(('.h5', '.hdf5', '.keras')):
    raise ValueError(f'--weights file {weights!r} must end in .h5, .hdf5 or .keras.')


def load_keras_model(width_multiplier: float = 1.0, resolution: int = 224,
                     weights: str = 'imagenet', num_classes: int = KERAS_IMAGENET_CLASSES):
  """keras.applications.MobileNetV2 with `weights` ('imagenet' or a .h5/.keras file), logits out."""
  _validate_request(width_multiplier, resolution, weights, num_classes)
  if weights != 'imagenet':
    weights = os.path.abspath(weights)
    if weights.endswith('.keras'):
      return _load_keras_file(weights)
    _check_weights_file(weights, width_multiplier, resolution, num_classes)
  import keras  # pylint: disable=g-import-not-at-top
  try:
    return keras.applications.MobileNetV2(
        alpha=width_multiplier, input_shape=(resolution, resolution, 3), weights=weights,
        classes=num_classes, classifier_activation=None)
  except Exception as e:  # pylint: disable=broad-except
    if weights == 'imagenet':
      file_name = (f'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width_multiplier)}_'
                   f'{resolution}.h5')
      raise RuntimeError(
          f'Could not get Keras\' ImageNet weights {file_name} ({type(e).__name__}: {e}). '
          f'Without internet, download it on another machine (keras.applications.MobileNetV2('
          f'alpha={width_multiplier}, input_shape=({resolution}, {resolution}, 3)) caches it in '
          f'~/.keras/models/) and copy it to ~/.keras/models/ here, or pass '
          f'--weights /path/to/{file_name}.') from e
    raise ValueError(f'{weights} does not fit keras MobileNetV2(alpha={width_multiplier}, '
                     f'classes={num_classes}): {e}') from e


def _load_keras_file(path: str):
  import keras  # pylint: disable=g-import-not-at-top
  try:
    return keras.saving.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} could not be read as a Keras model: {e}') from e


def convert(width_multiplier: float = 1.0, resolution: int = 224, weights: str = 'imagenet',
            num_classes: int = KERAS_IMAGENET_CLASSES) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables, model_config) of Keras' MobileNetV2 with `weights`, checked against the request."""
  keras_model = load_keras_model(width_multiplier, resolution, weights, num_classes)
  if weights == 'imagenet':
    source = (f'keras.applications.MobileNetV2 ImageNet weights '
              f'(alpha={width_multiplier}, {resolution}px, {KERAS_IMAGENET_CLASSES} classes)')
  else:
    source = f'keras weights file {os.path.abspath(weights)}'
  return convert_keras_model(keras_model, width_multiplier=width_multiplier,
                             resolution=resolution, num_classes=num_classes, source=source)


# ---------------------------------------------------------------------------------------------
# Command line.

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = errors.ArgumentParser(
      prog='python -m mnv2_jax.convert',
      description='Convert Keras MobileNetV2 weights into a pretrained checkpoint for mnv2_jax.')
  parser.add_argument('--from', dest='source_format', choices=['keras'], default='keras',
                      help='where the weights come from')
  parser.add_argument('--width', type=float, default=1.0, help='width multiplier (alpha)')
  parser.add_argument('--resolution', type=int, default=224,
                      help='input resolution the weights were trained at')
  parser.add_argument('--weights', default='imagenet',
                      help='"imagenet" (Keras\' download, cached in ~/.keras/models/) or a '
                           '.h5/.keras file')
  parser.add_argument('--num-classes', type=int, default=KERAS_IMAGENET_CLASSES,
                      help='classes of the classifier')
  parser.add_argument('--out', required=True, help='output directory for the checkpoint')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  return parser.parse_args(argv)


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> None:
  args = parse_args(argv)
  out = os.path.abspath(args.out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.UserError(f'--out {out} is a file; pass a new or empty directory.')
  if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
    raise errors.UserError(f'--out {out} already exists and is not empty; pass --overwrite to '
                           f'replace it.')
  try:
    variables, model_config = convert(args.width, args.resolution, args.weights,
                                      args.num_classes)
  except (ValueError, RuntimeError) as e:
    # ValueError: the request or the weights file; RuntimeError: no way to download
    # Keras' weights (its message says how to get them).
    raise errors.UserError(errors.one_line(e)) from e
  pretrained.save_pretrained(out, variables, model_config, overwrite=args.overwrite)
  print(f'Wrote {out}: MobileNetV2 width {model_config["width_multiplier"]} at '
        f'{model_config["resolution"]}px, {model_config["num_classes"]} classes, '
        f'inputs in {model_config["input_range"]} (from {model_config["source"]}).')


if __name__ == '__main__':
  sys.exit(main())
