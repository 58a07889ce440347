"""The MobileNetV2 and MobileNetV1 architectures as data.

The network is the paper's Table 2: a stem convolution, rows of bottleneck
blocks ``(t, c, n, s)`` and a last 1x1 convolution. The width multiplier is a
transformation of that table (``make_divisible`` rounding), so the Flax modules
(`mnv2_jax.models`) and the analytic accounting (`mnv2_jax.stats`) read the same
resolved layer list and can never disagree about channel counts or strides.

Dense prediction (DeepLab) asks for a smaller output stride: `output_stride`
resolves each layer's (stride, dilation) as TF-Slim's `mobilenet_base` and
`mobilenet_v1_base` do, so the same table serves the classifier (output
stride 32, every dilation 1) and the atrous backbones (8 or 16).
"""

import dataclasses
import math
from typing import Optional, Sequence

# Paper Table 2: expansion ratio t, output channels c, repeats n, first stride s.
# The first row always has t=1; the other rows use the model's expansion ratio.
MOBILENET_V2_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_STEM_CHANNELS = 32
MOBILENET_V2_LAST_CHANNELS = 1280

# MobileNetV1 (Howard et al. 2017, Table 1): a 3x3 stride-2 stem convolution
# to 32 channels, then 13 depthwise-separable layers (output channels, stride).
MOBILENET_V1_STEM_CHANNELS = 32
MOBILENET_V1_LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

KERNEL_SIZE = 3
STEM_STRIDE = 2
MIN_RESOLUTION = 32
# The classifier's natural output stride is 32 (None means the same); DeepLab
# uses 16 (fast) or 8 (accurate).
OUTPUT_STRIDES = (8, 16, 32)
BOTTLENECK_ACTIVATIONS = ('linear', 'relu6')
SHORTCUTS = ('bottleneck', 'expansion', 'none')


def make_divisible(value: float, divisor: int = 8) -> int:
  """Rounds a channel count to a multiple of `divisor`, as the official code does.

  Rounds to the nearest multiple, but never goes more than 10% below `value`.
  """
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * value:
    rounded += divisor
  return rounded


def same_padding(size: int, stride: int, kernel_size: int = KERNEL_SIZE,
                 dilation: int = 1) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) for one spatial axis.

  For stride 2 on an even input this pads 0 before and 1 after, unlike the
  symmetric padding of torchvision/timm; the official checkpoints need it.
  A dilated kernel pads as TF does, as if it were dense with
  dilation * (kernel_size - 1) + 1 taps: `dilation` on each side at stride 1.
  """
  output = -(-size // stride)
  dilated_kernel_size = dilation * (kernel_size - 1) + 1
  total = max((output - 1) * stride + dilated_kernel_size - size, 0)
  return total // 2, total - total // 2


def conv_output_size(size: int, stride: int) -> int:
  """Spatial output size of a TF-'SAME' convolution."""
  return -(-size // stride)


@dataclasses.dataclass(frozen=True)
class BottleneckSpec:
  """One resolved bottleneck residual block (paper Table 1).

  `expanded_channels` is the width t*k of the inner tensor; `has_expansion`
  is False when that width is not larger than the input (the first block, or
  t=1), in which case the official network has no expansion convolution.
  `residual` says whether the standard shortcut (between bottlenecks) exists:
  stride 1 and equal input and output widths. `stride` and `dilation` are
  those of the depthwise convolution after `output_stride` is applied; a block
  whose stride 2 was dropped for a smaller output stride counts as stride 1
  for the shortcut, as in TF-Slim.
  """
  index: int
  in_channels: int
  expanded_channels: int
  out_channels: int
  stride: int
  expansion_ratio: float
  dilation: int = 1

  @property
  def has_expansion(self) -> bool:
    return self.expanded_channels > self.in_channels

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


@dataclasses.dataclass(frozen=True)
class MobileNetV2Spec:
  width_multiplier: float
  expansion_ratio: float
  stem_channels: int
  blocks: tuple[BottleneckSpec, ...]
  last_channels: int
  output_stride: Optional[int] = None


def validate_width_multiplier(width_multiplier: float) -> None:
  if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) or not (
      width_multiplier > 0 and math.isfinite(width_multiplier)):
    raise ValueError(
        f'width_multiplier must be a finite number > 0 (the paper uses 0.35-1.4), '
        f'got {width_multiplier!r}.')


def validate_batch_norm_momentum(batch_norm_momentum: float) -> None:
  if isinstance(batch_norm_momentum, bool) or not isinstance(
      batch_norm_momentum, (int, float)) or not 0 <= batch_norm_momentum < 1:
    raise ValueError(f'batch_norm_momentum must be a number in [0, 1) (official 0.997), '
                     f'got {batch_norm_momentum!r}.')


def validate_expansion_ratio(expansion_ratio: float) -> None:
  if isinstance(expansion_ratio, bool) or not isinstance(expansion_ratio, (int, float)) or not (
      expansion_ratio >= 1 and math.isfinite(expansion_ratio)):
    raise ValueError(
        f'expansion_ratio must be a number >= 1 (the paper uses 1-10, default 6), '
        f'got {expansion_ratio!r}.')


def validate_resolution(resolution) -> None:
  if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
    raise ValueError(
        f'resolution must be an integer >= {MIN_RESOLUTION} (the paper sweeps 96-224), '
        f'got {resolution!r}.')


def validate_choice(name: str, value, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f'{name} must be one of {list(allowed)}, got {value!r}.')


def validate_output_stride(output_stride: Optional[int]) -> None:
  if output_stride is not None and (isinstance(output_stride, bool) or
                                    output_stride not in OUTPUT_STRIDES):
    raise ValueError(f'output_stride must be None or one of {list(OUTPUT_STRIDES)} '
                     f'(32 and None: the classifier), got {output_stride!r}.')


def atrous_strides_and_dilations(strides: Sequence[int],
                                 output_stride: Optional[int]) -> list[tuple[int, int]]:
  """(stride, dilation) of each layer, given its nominal strides, for an output stride.

  TF-Slim's rule (`mobilenet_base`, `mobilenet_v1_base`), which DeepLab uses:
  once the product of the strides so far equals `output_stride`, every later
  layer runs at stride 1, and its 3x3 convolution is dilated by the rate
  accumulated so far; the rate is multiplied by each dropped stride *after*
  the layer that dropped it. So the first layer that loses its stride 2 keeps
  the current rate (1 at output stride 16) and only the layers after it dilate.
  `strides` starts with the stem's.
  """
  current_stride, rate = 1, 1
  resolved = []
  for stride in strides:
    if output_stride is not None and current_stride == output_stride:
      resolved.append((1, rate))
      rate *= stride
    else:
      resolved.append((stride, 1))
      current_stride *= stride
  return resolved


def mobilenet_v2_spec(width_multiplier: float = 1.0, expansion_ratio: float = 6,
                      output_stride: Optional[int] = None) -> MobileNetV2Spec:
  """Resolves Table 2 for a width multiplier, expansion ratio and output stride.

  Every channel count c becomes make_divisible(c * width_multiplier); the
  expansion width is make_divisible(t * input_channels). The last convolution
  keeps 1280 channels for multipliers below 1 ("apply width multiplier to all
  layers except the very last convolutional layer") and is scaled above 1.
  `output_stride` (8 or 16) sets the blocks' strides and dilations by
  `atrous_strides_and_dilations`; None or 32 is the classifier.
  """
  validate_width_multiplier(width_multiplier)
  validate_expansion_ratio(expansion_ratio)
  validate_output_stride(output_stride)
  stem_channels = make_divisible(MOBILENET_V2_STEM_CHANNELS * width_multiplier)
  rows = []  # (t, out_channels, nominal stride) of each block
  for row, (t, c, n, s) in enumerate(MOBILENET_V2_ROWS):
    t = t if row == 0 else expansion_ratio
    rows += [(t, make_divisible(c * width_multiplier), s if repeat == 0 else 1)
             for repeat in range(n)]
  strides_and_dilations = atrous_strides_and_dilations(
      [STEM_STRIDE] + [stride for _, _, stride in rows], output_stride)[1:]
  blocks = []
  in_channels = stem_channels
  for (t, out_channels, _), (stride, dilation) in zip(rows, strides_and_dilations):
    blocks.append(BottleneckSpec(
        index=len(blocks),
        in_channels=in_channels,
        expanded_channels=make_divisible(t * in_channels),
        out_channels=out_channels,
        stride=stride,
        expansion_ratio=t,
        dilation=dilation))
    in_channels = out_channels
  last_channels = make_divisible(MOBILENET_V2_LAST_CHANNELS * max(1.0, width_multiplier))
  return MobileNetV2Spec(width_multiplier=width_multiplier,
                         expansion_ratio=expansion_ratio,
                         stem_channels=stem_channels,
                         blocks=tuple(blocks),
                         last_channels=last_channels,
                         output_stride=output_stride)


def expansion_shortcut_sources(spec: MobileNetV2Spec) -> dict[int, int]:
  """Maps block index -> the block whose expanded tensor it receives ('expansion' shortcut).

  Block i+1's expanded tensor receives block i's expanded tensor when both have
  the same shape: block i has stride 1 and equal input/output width, so the
  inner widths make_divisible(t*k) agree. These are exactly the 10 places
  where the standard design has its shortcut between bottlenecks, moved up to
  the wide tensors as in a classical residual network.
  """
  sources = {}
  for block, next_block in zip(spec.blocks[:-1], spec.blocks[1:]):
    if (block.residual and block.has_expansion and next_block.has_expansion and
        block.expanded_channels == next_block.expanded_channels):
      sources[next_block.index] = block.index
  return sources


@dataclasses.dataclass(frozen=True)
class SeparableSpec:
  """One MobileNetV1 depthwise-separable layer: 3x3 depthwise then 1x1 pointwise.

  `stride` and `dilation` are the depthwise convolution's after `output_stride`.
  """
  index: int
  in_channels: int
  out_channels: int
  stride: int
  dilation: int = 1


@dataclasses.dataclass(frozen=True)
class MobileNetV1Spec:
  width_multiplier: float
  stem_channels: int
  layers: tuple[SeparableSpec, ...]
  output_stride: Optional[int] = None


def mobilenet_v1_channels(channels: int, width_multiplier: float) -> int:
  # The official V1 code scales by plain truncation with a floor of 8 channels.
  return max(int(channels * width_multiplier), 8)


def mobilenet_v1_spec(width_multiplier: float = 1.0,
                      output_stride: Optional[int] = None) -> MobileNetV1Spec:
  validate_width_multiplier(width_multiplier)
  validate_output_stride(output_stride)
  stem_channels = mobilenet_v1_channels(MOBILENET_V1_STEM_CHANNELS, width_multiplier)
  strides_and_dilations = atrous_strides_and_dilations(
      [STEM_STRIDE] + [s for _, s in MOBILENET_V1_LAYERS], output_stride)[1:]
  layers = []
  in_channels = stem_channels
  for index, ((c, _), (stride, dilation)) in enumerate(
      zip(MOBILENET_V1_LAYERS, strides_and_dilations)):
    out_channels = mobilenet_v1_channels(c, width_multiplier)
    layers.append(SeparableSpec(index, in_channels, out_channels, stride, dilation))
    in_channels = out_channels
  return MobileNetV1Spec(width_multiplier, stem_channels, tuple(layers), output_stride)
