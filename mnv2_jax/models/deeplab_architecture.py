"""The Mobile DeepLabv3 head as data (paper Section 6.3, Table 7).

DeepLabv3 (Chen et al. 2017) on a MobileNet backbone run at output stride 16
or 8 (`architecture.atrous_strides_and_dilations`). The head reads one
feature map: for MobileNetV2 the output of the last bottleneck block (320
channels; the paper's 'MobileNetV2*', DeepLab's `layer_18` endpoint, which
leaves out the 1280-channel last conv), for MobileNetV1 its last layer (1024).

Branches, each a conv to 256 channels + BN + ReLU, concatenated in DeepLab's
order (`model.py` `extract_features`):
  image_pooling  the feature map averaged over space, a 1x1 conv, broadcast back;
  aspp0          a 1x1 conv;
  aspp1..aspp3   with ASPP only: 3x3 convs dilated by 6, 12, 18 at output
                 stride 16 (12, 24, 36 at 8: the rates scale with 16 / OS).
then `concat_projection` (1x1 conv + BN + ReLU), dropout in training, and
`logits` (1x1 conv with a bias, no BN), bilinearly upsampled to the input.

The ASPP convolutions are regular 3x3 convolutions: that is the reading that
reproduces Table 7's parameter counts (4.52M and 11.15M); the separable ones
that DeepLab's code defaults to (`aspp_with_separable_conv`, for Xception)
would give 2.57M and 4.89M (docs/segmentation.md). `aspp_convolution='separable'`
builds that variant: a dilated 3x3 depthwise conv + BN + ReLU, then a 1x1 conv
+ BN + ReLU (DeepLab's `split_separable_conv2d`).

The Flax module (`deeplab.py`) and the accounting (`mnv2_jax/stats/segmentation.py`)
both read `deeplab_head_spec`.
"""

import dataclasses
from typing import Union

from mnv2_jax.models import architecture

BACKBONES = ('mobilenet_v2', 'mobilenet_v1')
ASPP_CONVOLUTIONS = ('regular', 'separable')
HEAD_CHANNELS = 256
ASPP_RATES_AT_OUTPUT_STRIDE_16 = (6, 12, 18)
# DeepLab's multi-scale + left-right flip evaluation ('MF' in Table 7).
MULTI_SCALE_EVAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclasses.dataclass(frozen=True)
class HeadConvSpec:
  """One convolution of the head, named as in the Flax parameter tree.

  Every conv but the classifier is followed by BN and ReLU and has no bias;
  `depthwise` is the 3x3 half of a separable ASPP branch.
  """
  name: str
  in_channels: int
  out_channels: int
  kernel_size: int = 1
  dilation: int = 1
  depthwise: bool = False
  batch_norm: bool = True


@dataclasses.dataclass(frozen=True)
class DeepLabHeadSpec:
  """The head on a feature map of `in_channels`.

  `image_pooling` runs on the spatially averaged (1x1) map; each of `branches`
  is a chain of convs on the feature map; their outputs (image pooling first)
  are concatenated into `projection`, followed by `classifier`.
  """
  in_channels: int
  image_pooling: HeadConvSpec
  branches: tuple[tuple[HeadConvSpec, ...], ...]
  projection: HeadConvSpec
  classifier: HeadConvSpec

  @property
  def convs(self) -> tuple[HeadConvSpec, ...]:
    return ((self.image_pooling,) + tuple(conv for branch in self.branches for conv in branch) +
            (self.projection, self.classifier))


def aspp_rates(output_stride: int) -> tuple[int, ...]:
  """DeepLab's rates, 6/12/18 at output stride 16, doubled at 8 (the same field of view)."""
  return tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_OUTPUT_STRIDE_16)


def validate_num_classes(num_classes) -> None:
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer (21 for PASCAL VOC), '
                     f'got {num_classes!r}.')


def validate_output_stride(output_stride) -> None:
  # The head needs a concrete stride for its rates; 32 is allowed but unusual.
  if output_stride is None:
    raise ValueError(f'output_stride must be one of {list(architecture.OUTPUT_STRIDES)} '
                     f'for DeepLab (16 or 8 in the paper), got None.')
  architecture.validate_output_stride(output_stride)


def backbone_spec(backbone: str, width_multiplier: float, output_stride: int
                  ) -> Union[architecture.MobileNetV2Spec, architecture.MobileNetV1Spec]:
  architecture.validate_choice('backbone', backbone, BACKBONES)
  validate_output_stride(output_stride)
  if backbone == 'mobilenet_v2':
    return architecture.mobilenet_v2_spec(width_multiplier, output_stride=output_stride)
  return architecture.mobilenet_v1_spec(width_multiplier, output_stride)


def feature_channels(spec: Union[architecture.MobileNetV2Spec,
                                 architecture.MobileNetV1Spec]) -> int:
  """Channels of the feature map the head reads (320 for MobileNetV2*, 1024 for V1)."""
  if isinstance(spec, architecture.MobileNetV2Spec):
    return spec.blocks[-1].out_channels
  return spec.layers[-1].out_channels


def deeplab_head_spec(in_channels: int, num_classes: int, output_stride: int, aspp: bool = True,
                      aspp_convolution: str = 'regular',
                      head_channels: int = HEAD_CHANNELS) -> DeepLabHeadSpec:
  """Resolves the head for a feature map of `in_channels` (Table 7's two variants).

  aspp=True: image pooling, a 1x1 conv and three dilated 3x3 convs (ASPP);
  aspp=False: image pooling and the 1x1 conv only ("DeepLabv3 without ASPP").
  """
  validate_num_classes(num_classes)
  validate_output_stride(output_stride)
  architecture.validate_choice('aspp_convolution', aspp_convolution, ASPP_CONVOLUTIONS)
  if isinstance(head_channels, bool) or not isinstance(head_channels, int) or head_channels < 1:
    raise ValueError(f'head_channels must be a positive integer (256 in DeepLab), '
                     f'got {head_channels!r}.')
  branches = [(HeadConvSpec('aspp0', in_channels, head_channels),)]
  if aspp:
    for index, rate in enumerate(aspp_rates(output_stride), 1):
      name = f'aspp{index}'
      if aspp_convolution == 'regular':
        branches.append((HeadConvSpec(name, in_channels, head_channels, 3, rate),))
      else:
        branches.append((
            HeadConvSpec(f'{name}_depthwise', in_channels, in_channels, 3, rate, depthwise=True),
            HeadConvSpec(f'{name}_pointwise', in_channels, head_channels)))
  concatenated = head_channels * (1 + len(branches))
  return DeepLabHeadSpec(
      in_channels=in_channels,
      image_pooling=HeadConvSpec('image_pooling', in_channels, head_channels),
      branches=tuple(branches),
      projection=HeadConvSpec('concat_projection', concatenated, head_channels),
      classifier=HeadConvSpec('logits', head_channels, num_classes, batch_norm=False))


def scaled_input_size(size: int, scale: float) -> int:
  """The side of an input rescaled by `scale`, as DeepLab's `scale_dimension`.

  (size - 1) * scale + 1 keeps sizes of the form k * 2**n + 1 (513 -> 257, 385,
  641, ...) in that form, so that the corners of every feature map stay aligned.
  """
  return int((size - 1) * scale + 1)


def evaluation_sizes(size: int, multi_scale_flip: bool) -> list[int]:
  """The input side of each network evaluation: one, or 6 scales x 2 flips for MF."""
  if not multi_scale_flip:
    return [size]
  return [scaled_input_size(size, scale) for scale in MULTI_SCALE_EVAL_SCALES for _ in range(2)]


def resolve(backbone: str, num_classes: int, output_stride: int, aspp: bool,
            width_multiplier: float = 1.0, aspp_convolution: str = 'regular',
            head_channels: int = HEAD_CHANNELS) -> tuple:
  """(backbone spec, head spec) of one DeepLabv3 configuration."""
  spec = backbone_spec(backbone, width_multiplier, output_stride)
  return spec, deeplab_head_spec(feature_channels(spec), num_classes, output_stride, aspp,
                                 aspp_convolution, head_channels)

