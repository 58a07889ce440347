"""MobileNetV1 (Howard et al. 2017), the baseline of the paper's Figure 5."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture
from mnv2_jax.models.depthwise import DepthwiseConv
from mnv2_jax.models.layers import (
    BATCH_NORM_MOMENTUM, KERNEL_INITS, batch_norm, conv, relu6, validate_layer_options)


class MobileNetV1(nn.Module):
  """3x3/2 stem conv, 13 depthwise-separable layers, average pool, classifier.

  Each layer is a 3x3 depthwise conv + BN + ReLU6 and a 1x1 conv + BN + ReLU6
  (ReLU6 as in the official TF-Slim implementation). The width multiplier
  alpha scales every layer (truncated, at least 8 channels).
  `kernel_init` and `zero_init_classifier` are as in `MobileNetV2` (it has no
  residual branches, so no `zero_init_residual`), and so are `output_stride`
  (8 or 16 dilate the depthwise convs after that stride) and `features_only`
  (return (last layer output, endpoints) without the classifier: the
  1024-channel map DeepLab's heads read).
  """
  num_classes: int = 1000
  width_multiplier: float = 1.0
  dropout_rate: float = 0.001  # The official V1 keeps 99.9% before the logits.
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32
  kernel_init: str = 'truncated_normal'
  zero_init_classifier: bool = False
  output_stride: Optional[int] = None
  features_only: bool = False

  def __post_init__(self):
    architecture.validate_width_multiplier(self.width_multiplier)
    architecture.validate_output_stride(self.output_stride)
    validate_layer_options(self.depthwise_impl, self.batch_norm_momentum, self.kernel_init)
    if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got {self.num_classes!r}.')
    super().__post_init__()

  @property
  def spec(self) -> architecture.MobileNetV1Spec:
    return architecture.mobilenet_v1_spec(self.width_multiplier, self.output_stride)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False, return_endpoints: bool = False):
    if images.ndim != 4:
      raise ValueError(f'images must be NHWC, got shape {images.shape}.')
    for resolution in images.shape[1:3]:
      architecture.validate_resolution(resolution)
    spec = self.spec
    norm = lambda name: batch_norm(train, self.batch_norm_axis_name, self.dtype, name,
                                   self.batch_norm_momentum)
    endpoints = {}
    init = KERNEL_INITS[self.kernel_init]
    x = conv(spec.stem_channels, 3, 2, self.dtype, 'stem_conv', init,
             impl=self.depthwise_impl)(images)
    x = relu6(norm('stem_bn')(x))
    endpoints['stem'] = x
    for layer in spec.layers:
      i = layer.index
      x = DepthwiseConv(stride=layer.stride, impl=self.depthwise_impl, dtype=self.dtype,
                        kernel_init=init, dilation=layer.dilation,
                        name=f'layer_{i}_depthwise_conv')(x)
      x = relu6(norm(f'layer_{i}_depthwise_bn')(x))
      x = conv(layer.out_channels, 1, 1, self.dtype, f'layer_{i}_pointwise_conv', init)(x)
      x = relu6(norm(f'layer_{i}_pointwise_bn')(x))
      endpoints[f'layer_{i}/output'] = x
    if self.features_only:
      return x, endpoints
    x = jnp.mean(x, axis=(1, 2))
    endpoints['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      kernel_init=nn.initializers.zeros if self.zero_init_classifier else init,
                      param_dtype=jnp.float32, name='classifier')(x).astype(jnp.float32)
    endpoints['logits'] = logits
    if return_endpoints:
      return logits, endpoints
    return logits
