"""Mobile DeepLabv3 (paper Section 6.3): an atrous MobileNet backbone and the DeepLabv3 head.

The layer table is `deeplab_architecture.deeplab_head_spec`; this module only
runs it. Inference strategies (single scale, multi-scale + flips) are in
`mnv2_jax.segmentation.inference`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import deeplab_architecture
from mnv2_jax.models.depthwise import DepthwiseConv
from mnv2_jax.models.layers import (
    BATCH_NORM_MOMENTUM, batch_norm, conv, validate_layer_options)
from mnv2_jax.models.mobilenet_v1 import MobileNetV1
from mnv2_jax.models.mobilenet_v2 import MobileNetV2

BACKBONE_MODULES = {'mobilenet_v2': MobileNetV2, 'mobilenet_v1': MobileNetV1}

# TF-Slim's default conv initialiser (Glorot uniform) for the head, which
# DeepLab's ASPP arg scope does not override; its logits layer uses a
# truncated normal with stddev 0.01 (`get_branch_logits`). The separable ASPP
# variant keeps Glorot too (DeepLab's `split_separable_conv2d` would start
# from truncated normals, 0.33 depthwise and 0.06 pointwise).
HEAD_KERNEL_INIT = nn.initializers.glorot_uniform()
LOGITS_KERNEL_INIT = nn.initializers.truncated_normal(stddev=0.01)


def resize_bilinear_align_corners(images: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of NHWC `images` whose corner pixels map onto the output's corners.

  DeepLab resizes with `align_corners=True` everywhere; on its sizes of the
  form k * output_stride + 1 the feature-map pixels then sit exactly on input
  pixels. `jax.image.resize` aligns pixel centres instead, so this expresses
  align-corners sampling (x_in = x_out * (in - 1) / (out - 1)) through
  `jax.image.scale_and_translate`.
  """
  in_height, in_width = images.shape[1:3]
  if (in_height, in_width) == (height, width):
    return images
  # A side of 1 has no second corner: a 1-pixel input is constant along that
  # axis, and a 1-pixel output samples the first input pixel, as TF does.
  if in_height == 1 or height == 1:
    images = jnp.broadcast_to(images[:, :1], (images.shape[0], height) + images.shape[2:])
  if in_width == 1 or width == 1:
    images = jnp.broadcast_to(images[:, :, :1], images.shape[:2] + (width, images.shape[3]))
  scales, translations, axes = [], [], []
  for axis, old, new in ((1, images.shape[1], height), (2, images.shape[2], width)):
    if old != new:
      scale = (new - 1) / (old - 1)
      scales.append(scale)
      translations.append(0.5 - 0.5 * scale)
      axes.append(axis)
  if not axes:
    return images
  shape = (images.shape[0], height, width, images.shape[3])
  return jax.image.scale_and_translate(
      images, shape, axes, jnp.asarray(scales, jnp.float32),
      jnp.asarray(translations, jnp.float32), method='linear', antialias=False)


class DeepLabV3(nn.Module):
  """DeepLabv3 with a MobileNetV2* or MobileNetV1 backbone (paper Table 7).

  Attributes:
    num_classes: output classes (21 for PASCAL VOC: 20 objects + background).
    backbone: 'mobilenet_v2' (the head on the 320-channel output of the last
      block) or 'mobilenet_v1' (on its last, 1024-channel, layer).
    output_stride: 16 or 8 (32 allowed); sets the backbone's dilations and
      the ASPP rates (6/12/18 at 16, doubled at 8).
    aspp: True for the full head, False for image pooling + 1x1 conv only.
    aspp_convolution: 'regular' 3x3 convs (Table 7's counts) or 'separable'.
    width_multiplier: the backbone's.
    head_channels: width of every branch and of the projection (256).
    dropout_rate: dropout after the projection in training (DeepLab keeps 0.9).
    upsample_logits: return logits at the input's size (True, as DeepLab
      trains and predicts) or at the output stride (False: the labels would
      be downsampled instead).
    depthwise_impl, batch_norm_axis_name, batch_norm_momentum, dtype,
    kernel_init: as in `MobileNetV2`; `kernel_init` applies to the backbone,
      the head starts from DeepLab's initialisers (see above).
    zero_init_residual: start the MobileNetV2 backbone's residual branches at
      0 (`MobileNetV2.zero_init_residual`), for training from scratch; the
      MobileNetV1 backbone has no residual branches and rejects it.

  The backbone's variables sit under 'backbone' with the classifier's names,
  so an ImageNet checkpoint's variables (less 'last_conv', 'last_bn' and
  'classifier' for MobileNetV2, 'classifier' for V1) initialise it.
  """
  num_classes: int = 21
  backbone: str = 'mobilenet_v2'
  output_stride: int = 16
  aspp: bool = True
  aspp_convolution: str = 'regular'
  width_multiplier: float = 1.0
  head_channels: int = deeplab_architecture.HEAD_CHANNELS
  dropout_rate: float = 0.1
  upsample_logits: bool = True
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32
  kernel_init: str = 'truncated_normal'
  zero_init_residual: bool = False

  def __post_init__(self):
    self.head_spec  # Resolving the table validates every field it reads.
    validate_layer_options(self.depthwise_impl, self.batch_norm_momentum, self.kernel_init)
    if self.zero_init_residual and self.backbone != 'mobilenet_v2':
      raise ValueError(f'zero_init_residual needs the mobilenet_v2 backbone (the '
                       f'{self.backbone} backbone has no residual branches).')
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f'dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    super().__post_init__()

  @property
  def head_spec(self) -> deeplab_architecture.DeepLabHeadSpec:
    return deeplab_architecture.resolve(
        self.backbone, self.num_classes, self.output_stride, self.aspp, self.width_multiplier,
        self.aspp_convolution, self.head_channels)[1]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False, return_endpoints: bool = False):
    """Maps NHWC images (scaled to [-1, 1]) to per-pixel logits (float32).

    With `return_endpoints=True` also returns the backbone's endpoints plus
    'features' (the map the head reads), 'projection' and
    'logits_at_output_stride' (before the upsampling).
    """
    spec = self.head_spec
    backbone_options = dict(zero_init_residual=True) if self.zero_init_residual else {}
    features, endpoints = BACKBONE_MODULES[self.backbone](
        width_multiplier=self.width_multiplier, depthwise_impl=self.depthwise_impl,
        batch_norm_axis_name=self.batch_norm_axis_name,
        batch_norm_momentum=self.batch_norm_momentum, dtype=self.dtype,
        kernel_init=self.kernel_init, output_stride=self.output_stride, features_only=True,
        name='backbone', **backbone_options)(images, train=train)
    endpoints = dict(endpoints, features=features)

    def conv_bn_relu(x, layer: deeplab_architecture.HeadConvSpec):
      if layer.depthwise:
        x = DepthwiseConv(impl=self.depthwise_impl, dtype=self.dtype, kernel_init=HEAD_KERNEL_INIT,
                          dilation=layer.dilation, name=layer.name)(x)
      elif layer.kernel_size == 1:
        x = conv(layer.out_channels, 1, 1, self.dtype, layer.name, HEAD_KERNEL_INIT)(x)
      else:
        # Flax 'SAME' pads a dilated kernel as TF does: `dilation` on each side.
        x = nn.Conv(layer.out_channels, (layer.kernel_size,) * 2,
                    kernel_dilation=(layer.dilation,) * 2, padding='SAME', use_bias=False,
                    kernel_init=HEAD_KERNEL_INIT, dtype=self.dtype, param_dtype=jnp.float32,
                    name=layer.name)(x)
      x = batch_norm(train, self.batch_norm_axis_name, self.dtype, f'{layer.name}_bn',
                     self.batch_norm_momentum)(x)
      return nn.relu(x)

    # Image-level features: DeepLab upsamples the 1x1 map bilinearly, a broadcast.
    pooled = conv_bn_relu(jnp.mean(features, axis=(1, 2), keepdims=True), spec.image_pooling)
    branch_outputs = [jnp.broadcast_to(pooled, features.shape[:3] + pooled.shape[3:])]
    for branch in spec.branches:
      x = features
      for layer in branch:
        x = conv_bn_relu(x, layer)
      branch_outputs.append(x)
    x = conv_bn_relu(jnp.concatenate(branch_outputs, axis=-1), spec.projection)
    endpoints['projection'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Conv(spec.classifier.out_channels, (1, 1), use_bias=True,
                     kernel_init=LOGITS_KERNEL_INIT, dtype=self.dtype, param_dtype=jnp.float32,
                     name=spec.classifier.name)(x).astype(jnp.float32)
    endpoints['logits_at_output_stride'] = logits
    if self.upsample_logits:
      logits = resize_bilinear_align_corners(logits, *images.shape[1:3])
    if return_endpoints:
      return logits, endpoints
    return logits
