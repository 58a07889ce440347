"""Analytic parameter and multiply-add counts, read from the architecture table.

Nothing here builds a network: the counts walk the same resolved layer list
(`architecture.mobilenet_v2_spec` / `mobilenet_v1_spec`) that the Flax modules
read, with TF-'SAME' output sizes, so they agree with `model.init` and with the
traced program by construction (tests/test_stats.py checks both).

Conventions (those of the official MobileNetV2 README table, which these counts
reproduce for all 22 released checkpoints):
  params        what `model.init` puts in the 'params' collection: conv and
                depthwise kernels, BN scale and bias, classifier kernel and bias.
  params_no_bn  conv and depthwise kernels plus classifier kernel and bias
                (the README's 'Parameters' column, with 1001 classes).
  batch_stats   BN moving mean and variance (the 'batch_stats' collection).
  madds         multiply-accumulates of every convolution, depthwise
                convolution and the classifier; BN, activations, residual adds
                and the average pool are not counted (the README's 'MACs').

The MobileNetV1 paper uses the same convention with a 1024x1000 FC: 1.0@224
has 568.74M MAdds (printed 569M, rounded) and 4.21M weights (4.2M; BN
parameters or a 1001st class do not change the first decimal). Its Table 2
breakdown (1x1 conv 94.86%, depthwise 3.06%, FC 0.18%) is reproduced exactly.
Its resolution rows are the 224 count scaled by rho^2 and rounded, which is why
1.0@160 is printed 290M although the exact count is 290.68M.
"""

import dataclasses
from typing import Callable, Optional

from mnv2_jax.models import architecture

MODEL_NAMES = ('mobilenet_v2', 'mobilenet_v1')
DEFAULT_EXPANSION_RATIO = 6


@dataclasses.dataclass(frozen=True)
class LayerCount:
  """One weight layer: its name in the Flax parameter tree and its costs.

  `output_size` is the spatial side of its output (1 for the classifier);
  `batch_norm_channels` is the width of the BN that follows it (0 if none).
  """
  name: str
  kind: str  # 'conv' | 'depthwise' | 'dense'
  output_size: int
  weights: int
  madds: int
  batch_norm_channels: int = 0


def _conv(name: str, in_channels: int, out_channels: int, kernel_size: int,
          output_size: int) -> LayerCount:
  weights = kernel_size * kernel_size * in_channels * out_channels
  return LayerCount(name, 'conv', output_size, weights, weights * output_size**2, out_channels)


def _depthwise(name: str, channels: int, output_size: int,
               computed_size: Optional[int] = None) -> LayerCount:
  """`computed_size`: the side actually computed, where it exceeds `output_size`."""
  weights = architecture.KERNEL_SIZE**2 * channels
  computed_size = output_size if computed_size is None else computed_size
  return LayerCount(name, 'depthwise', output_size, weights, weights * computed_size**2,
                    channels)


def exact_size(output_size: int, dilation: int) -> int:
  """A dilated convolution computes exactly its output (XLA, and this package)."""
  del dilation
  return output_size


# (output side, dilation) -> the side a dilated convolution computes.
ComputedSize = Callable[[int, int], int]


def _classifier(in_features: int, num_classes: int) -> LayerCount:
  # The bias is a parameter but costs no multiply-accumulate.
  return LayerCount('classifier', 'dense', 1, in_features * num_classes + num_classes,
                    in_features * num_classes)


def _validate_num_classes(num_classes) -> None:
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer (1000 for ImageNet, 1001 for the '
                     f'official checkpoints), got {num_classes!r}.')


def mobilenet_v2_layers(width_multiplier: float = 1.0, resolution: int = 224,
                        num_classes: int = 1000,
                        expansion_ratio: float = DEFAULT_EXPANSION_RATIO,
                        output_stride: Optional[int] = None, include_top: bool = True,
                        computed_size: ComputedSize = exact_size) -> list[LayerCount]:
  """Every weight layer of MobileNetV2 in order, named as in the Flax parameter tree.

  `output_stride` and `include_top=False` (no last conv and classifier) are
  the DeepLab backbone's (`MobileNetV2(output_stride=..., features_only=True)`);
  `computed_size` says how many outputs a dilated depthwise conv computes.
  """
  architecture.validate_resolution(resolution)
  _validate_num_classes(num_classes)
  spec = architecture.mobilenet_v2_spec(width_multiplier, expansion_ratio, output_stride)
  size = architecture.conv_output_size(resolution, architecture.STEM_STRIDE)
  layers = [_conv('stem_conv', 3, spec.stem_channels, architecture.KERNEL_SIZE, size)]
  for block in spec.blocks:
    prefix = f'block_{block.index}'
    if block.has_expansion:
      layers.append(_conv(f'{prefix}/expand_conv', block.in_channels, block.expanded_channels,
                          1, size))
    size = architecture.conv_output_size(size, block.stride)
    layers.append(_depthwise(f'{prefix}/depthwise_conv', block.expanded_channels, size,
                             computed_size(size, block.dilation)))
    layers.append(_conv(f'{prefix}/project_conv', block.expanded_channels, block.out_channels,
                        1, size))
  if not include_top:
    return layers
  layers.append(_conv('last_conv', spec.blocks[-1].out_channels, spec.last_channels, 1, size))
  layers.append(_classifier(spec.last_channels, num_classes))
  return layers


def mobilenet_v1_layers(width_multiplier: float = 1.0, resolution: int = 224,
                        num_classes: int = 1000, output_stride: Optional[int] = None,
                        include_top: bool = True,
                        computed_size: ComputedSize = exact_size) -> list[LayerCount]:
  """Every weight layer of MobileNetV1 in order, named as in the Flax parameter tree.

  `output_stride`, `include_top` and `computed_size` as for `mobilenet_v2_layers`.
  """
  architecture.validate_resolution(resolution)
  _validate_num_classes(num_classes)
  spec = architecture.mobilenet_v1_spec(width_multiplier, output_stride)
  size = architecture.conv_output_size(resolution, architecture.STEM_STRIDE)
  layers = [_conv('stem_conv', 3, spec.stem_channels, architecture.KERNEL_SIZE, size)]
  for layer in spec.layers:
    size = architecture.conv_output_size(size, layer.stride)
    layers.append(_depthwise(f'layer_{layer.index}_depthwise_conv', layer.in_channels, size,
                             computed_size(size, layer.dilation)))
    layers.append(_conv(f'layer_{layer.index}_pointwise_conv', layer.in_channels,
                        layer.out_channels, 1, size))
  if not include_top:
    return layers
  layers.append(_classifier(spec.layers[-1].out_channels, num_classes))
  return layers


def layer_counts(name: str, width_multiplier: float = 1.0, resolution: int = 224,
                 num_classes: int = 1000,
                 expansion_ratio: Optional[float] = DEFAULT_EXPANSION_RATIO) -> list[LayerCount]:
  """The per-layer counts of model `name`; MobileNetV1 has no expansion ratio (ignored)."""
  architecture.validate_choice('model', name, MODEL_NAMES)
  if name == 'mobilenet_v2':
    if expansion_ratio is None:
      expansion_ratio = DEFAULT_EXPANSION_RATIO
    return mobilenet_v2_layers(width_multiplier, resolution, num_classes, expansion_ratio)
  return mobilenet_v1_layers(width_multiplier, resolution, num_classes)


def count_model(name: str, width_multiplier: float = 1.0, resolution: int = 224,
                num_classes: int = 1000,
                expansion_ratio: Optional[float] = DEFAULT_EXPANSION_RATIO) -> dict:
  """Exact parameter and multiply-add counts of one model configuration.

  The shortcut and bottleneck-activation ablations change neither count, so
  they are not arguments. For 'mobilenet_v1' `expansion_ratio` is ignored and
  reported as None.

  Returns a dict with model, width, resolution, expansion_ratio, num_classes,
  params, params_no_bn, batch_stats and madds (exact integers).
  """
  if name == 'mobilenet_v2' and expansion_ratio is None:
    expansion_ratio = DEFAULT_EXPANSION_RATIO
  layers = layer_counts(name, width_multiplier, resolution, num_classes, expansion_ratio)
  weights = sum(layer.weights for layer in layers)
  # Each BN has a scale and a bias (params) and a moving mean and variance (batch_stats).
  batch_norm_channels = sum(layer.batch_norm_channels for layer in layers)
  return {
      'model': name,
      'width': width_multiplier,
      'resolution': resolution,
      'expansion_ratio': expansion_ratio if name == 'mobilenet_v2' else None,
      'num_classes': num_classes,
      'params': weights + 2 * batch_norm_channels,
      'params_no_bn': weights,
      'batch_stats': 2 * batch_norm_channels,
      'madds': sum(layer.madds for layer in layers),
  }
