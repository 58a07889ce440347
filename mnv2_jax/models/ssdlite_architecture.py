"""SSD and SSDLite detection heads as data (paper Section 6.2, Tables 5 and 6).

The detector is the TF Object Detection API's `ssdlite_mobilenet_v2` (and
`ssd_mobilenet_v1` with SSDLite layers), which the paper trained:

  feature map 0  the backbone's output-stride-16 map: for MobileNetV2 the
                 expansion output of the 15th layer (`layer_15/expansion_output`
                 in TF-Slim, counting the stem as layer 1: block 13's 576-channel
                 expansion, before its stride-2 depthwise conv); for MobileNetV1
                 `Conv2d_11_pointwise` (layer 10 here, 512 channels);
  feature map 1  the output-stride-32 map: MobileNetV2's last 1x1 conv (1280),
                 MobileNetV1's `Conv2d_13_pointwise` (1024);
  maps 2-5       four extra layers, each a 1x1 conv to d/2 and a 3x3 stride-2
                 layer to d, d = 512, 256, 256, 128, BN + ReLU6 after each conv
                 (`multi_resolution_feature_maps` with `insert_1x1_conv`);
  predictors     per map, a box predictor (4 codes per anchor) and a class
                 predictor (num_classes + 1 slots per anchor, slot 0 the
                 background), each ending in a conv with a bias and no BN.

The head decides the convolutions (paper: SSDLite "replace[s] all the regular
convolutions with separable convolutions in SSD prediction layers"):
  'ssdlite'  the 3x3 stride-2 extra layer is a depthwise conv + BN + ReLU6 and a
             1x1 conv; each predictor a 3x3 depthwise conv + BN + ReLU6 and a
             1x1 conv (`use_depthwise: true` in both the feature extractor and
             the box predictor of ssdlite_mobilenet_v2_coco.config);
  'ssd'      regular 3x3 convs in both places (Table 5's SSD column).

The width multiplier scales the extra layers as the OD API's `depth_fn` does,
max(int(d * width), 16); the backbone is the classifier's network at that width.
Both the Flax module (`ssdlite.py`) and the accounting (`mnv2_jax/stats/detection.py`)
read `ssd_spec`, so they cannot disagree about a channel count or a stride.
"""

import dataclasses
from typing import Sequence, Union

from mnv2_jax.detection.anchors import AnchorConfig
from mnv2_jax.models import architecture

BACKBONES = ('mobilenet_v2', 'mobilenet_v1')
HEADS = ('ssdlite', 'ssd')
MIN_IMAGE_SIZE = 64
EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
MIN_DEPTH = 16  # `min_depth: 16` of the config's feature extractor.
BOX_CODE_SIZE = 4

# The backbone endpoints read as feature maps 0 and 1, and their output strides.
BACKBONE_ENDPOINTS = {
    'mobilenet_v2': (('block_13/expansion', 16), ('last_conv', 32)),
    'mobilenet_v1': (('layer_10/output', 16), ('layer_12/output', 32)),
}


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One convolution of the head, named as in the Flax parameter tree ('group/layer').

  kind 'conv' is a regular kernel_size x kernel_size convolution, 'depthwise'
  a 3x3 one with one filter per channel (in_channels == out_channels).
  batch_norm=True: BN + ReLU6 follow and the conv has no bias; False: a bias
  and no activation (the predictors' last layer).
  """
  name: str
  kind: str
  in_channels: int
  out_channels: int
  kernel_size: int
  stride: int
  output_size: tuple[int, int]
  batch_norm: bool = True

  @property
  def group(self) -> str:
    return self.name.split('/')[0]

  @property
  def layer(self) -> str:
    return self.name.split('/')[-1]

  @property
  def batch_norm_name(self) -> str:
    return self.layer.removesuffix('_conv') + '_bn'


@dataclasses.dataclass(frozen=True)
class FeatureMap:
  """One of the six maps predictions are made on: where it comes from and its shape."""
  index: int
  source: str  # A backbone endpoint, or the extra layer that makes it.
  channels: int
  size: tuple[int, int]
  anchors_per_location: int


@dataclasses.dataclass(frozen=True)
class SSDSpec:
  backbone: str
  width_multiplier: float
  image_size: tuple[int, int]
  num_classes: int
  head: str
  anchor_config: AnchorConfig
  feature_maps: tuple[FeatureMap, ...]
  extra_layers: tuple[tuple[ConvLayer, ...], ...]  # One conv sequence per extra map, in order.
  box_predictors: tuple[tuple[ConvLayer, ...], ...]  # One per feature map.
  class_predictors: tuple[tuple[ConvLayer, ...], ...]

  @property
  def num_class_slots(self) -> int:
    """num_classes + 1: the OD API always predicts a background slot (index 0)."""
    return self.num_classes + 1

  @property
  def num_anchors(self) -> int:
    return sum(m.size[0] * m.size[1] * m.anchors_per_location for m in self.feature_maps)


def validate_num_classes(num_classes) -> None:
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer (80 for COCO, without the '
                     f'background slot), got {num_classes!r}.')


def image_size_pair(image_size: Union[int, Sequence[int]], name: str = 'image_size'
                    ) -> tuple[int, int]:
  """(height, width) from an int or a pair, each an integer >= MIN_IMAGE_SIZE."""
  pair = (image_size, image_size) if isinstance(image_size, int) and not isinstance(
      image_size, bool) else tuple(image_size) if isinstance(image_size, (tuple, list)) else None
  if pair is None or len(pair) != 2 or not all(
      isinstance(side, int) and not isinstance(side, bool) and side >= MIN_IMAGE_SIZE
      for side in pair):
    raise ValueError(f'{name} must be an integer >= {MIN_IMAGE_SIZE} or a (height, width) '
                     f'pair of them (the paper: 320), got {image_size!r}.')
  return pair


def extra_layer_depth(depth: float, width_multiplier: float) -> int:
  # The OD API's depth_fn: truncation, then the config's min_depth.
  return max(int(depth * width_multiplier), MIN_DEPTH)


def backbone_feature_channels(backbone: str, width_multiplier: float) -> tuple[int, int]:
  """Channels of feature maps 0 and 1, read from the backbone's own table."""
  if backbone == 'mobilenet_v2':
    spec = architecture.mobilenet_v2_spec(width_multiplier)
    return spec.blocks[13].expanded_channels, spec.last_channels
  spec = architecture.mobilenet_v1_spec(width_multiplier)
  return spec.layers[10].out_channels, spec.layers[12].out_channels


def _downsampled(size: tuple[int, int], stride: int) -> tuple[int, int]:
  return tuple(architecture.conv_output_size(side, stride) for side in size)


def _extra_layer(index: int, in_channels: int, nominal_depth: int, width_multiplier: float,
                 size: tuple[int, int], head: str) -> tuple[ConvLayer, ...]:
  name = f'extra_layer_{index}'
  # The OD API rounds d/2 and d separately: depth_fn(d / 2) and depth_fn(d).
  reduced = extra_layer_depth(nominal_depth / 2, width_multiplier)
  depth = extra_layer_depth(nominal_depth, width_multiplier)
  output_size = _downsampled(size, 2)
  layers = [ConvLayer(f'{name}/reduce_conv', 'conv', in_channels, reduced, 1, 1, size)]
  if head == 'ssdlite':
    layers += [ConvLayer(f'{name}/depthwise_conv', 'depthwise', reduced, reduced, 3, 2,
                         output_size),
               ConvLayer(f'{name}/project_conv', 'conv', reduced, depth, 1, 1, output_size)]
  else:
    layers.append(ConvLayer(f'{name}/conv', 'conv', reduced, depth, 3, 2, output_size))
  return tuple(layers)


def _predictor(name: str, feature_map: FeatureMap, outputs_per_anchor: int,
               head: str) -> tuple[ConvLayer, ...]:
  outputs = feature_map.anchors_per_location * outputs_per_anchor
  channels, size = feature_map.channels, feature_map.size
  if head == 'ssdlite':
    return (ConvLayer(f'{name}/depthwise_conv', 'depthwise', channels, channels, 3, 1, size),
            ConvLayer(f'{name}/predict_conv', 'conv', channels, outputs, 1, 1, size,
                      batch_norm=False))
  return (ConvLayer(f'{name}/predict_conv', 'conv', channels, outputs, 3, 1, size,
                    batch_norm=False),)


def ssd_spec(backbone: str = 'mobilenet_v2', width_multiplier: float = 1.0,
             image_size: Union[int, Sequence[int]] = 320, num_classes: int = 80,
             head: str = 'ssdlite', anchor_config: AnchorConfig = AnchorConfig()) -> SSDSpec:
  """Resolves the detector for one backbone, width, input size, class count and head."""
  architecture.validate_choice('backbone', backbone, BACKBONES)
  architecture.validate_choice('head', head, HEADS)
  architecture.validate_width_multiplier(width_multiplier)
  validate_num_classes(num_classes)
  image_size = image_size_pair(image_size)
  if not isinstance(anchor_config, AnchorConfig):
    raise ValueError(f'anchor_config must be an AnchorConfig, got {anchor_config!r}.')
  num_maps = len(BACKBONE_ENDPOINTS[backbone]) + len(EXTRA_LAYER_DEPTHS)
  if anchor_config.num_layers != num_maps:
    raise ValueError(f'anchor_config.num_layers must be {num_maps} (one per feature map), '
                     f'got {anchor_config.num_layers}.')
  anchors = anchor_config.anchors_per_location()

  feature_maps = []
  for index, ((endpoint, stride), channels) in enumerate(zip(
      BACKBONE_ENDPOINTS[backbone], backbone_feature_channels(backbone, width_multiplier))):
    feature_maps.append(FeatureMap(index, endpoint, channels, _downsampled(image_size, stride),
                                   anchors[index]))
  extra_layers = []
  for depth in EXTRA_LAYER_DEPTHS:
    previous, index = feature_maps[-1], len(feature_maps)
    layers = _extra_layer(index, previous.channels, depth, width_multiplier, previous.size, head)
    extra_layers.append(layers)
    feature_maps.append(FeatureMap(index, layers[0].group, layers[-1].out_channels,
                                   layers[-1].output_size, anchors[index]))
  return SSDSpec(
      backbone=backbone, width_multiplier=width_multiplier, image_size=image_size,
      num_classes=num_classes, head=head, anchor_config=anchor_config,
      feature_maps=tuple(feature_maps), extra_layers=tuple(extra_layers),
      box_predictors=tuple(_predictor(f'box_predictor_{m.index}', m, BOX_CODE_SIZE, head)
                           for m in feature_maps),
      class_predictors=tuple(_predictor(f'class_predictor_{m.index}', m, num_classes + 1, head)
                             for m in feature_maps))
