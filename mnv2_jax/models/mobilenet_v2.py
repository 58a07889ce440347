"""MobileNetV2 (Sandler et al., "Inverted Residuals and Linear Bottlenecks", CVPR 2018)."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture, memory_plan, memory_split
from mnv2_jax.models.depthwise import DepthwiseConv
from mnv2_jax.models.layers import (
    BATCH_NORM_MOMENTUM, KERNEL_INITS, batch_norm, conv, relu6, validate_layer_options)


class InvertedResidual(nn.Module):
  """The bottleneck residual block of paper Table 1: k -> t*k -> k' channels.

  1x1 expansion conv + BN + ReLU6 (absent when t*k <= k), 3x3 depthwise conv
  with stride s + BN + ReLU6, 1x1 projection conv + BN with no activation (the
  linear bottleneck; 'relu6' adds ReLU6 for the Figure 6a ablation).

  Returns (output, expanded) where `expanded` is the t*k-channel tensor that
  enters the depthwise convolution, after the optional expansion shortcut.

  `zero_init_residual` starts the last BN of the branch that a shortcut
  bypasses at scale 0, so the block starts as the identity: the projection BN
  with a bottleneck shortcut, the expansion BN with an expansion shortcut
  (whose residual branch ends there).
  """
  spec: architecture.BottleneckSpec
  bottleneck_activation: str = 'linear'
  add_bottleneck_shortcut: bool = False
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32
  kernel_init: str = 'truncated_normal'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, inputs, train: bool, expansion_shortcut: Optional[jax.Array] = None):
    spec = self.spec
    norm = lambda name, zero_scale=False: batch_norm(
        train, self.batch_norm_axis_name, self.dtype, name, self.batch_norm_momentum,
        zero_scale=zero_scale and self.zero_init_residual)
    init = KERNEL_INITS[self.kernel_init]
    expanded = inputs
    if spec.has_expansion:
      expanded = conv(spec.expanded_channels, 1, 1, self.dtype, 'expand_conv', init)(expanded)
      expanded = relu6(norm('expand_bn', zero_scale=expansion_shortcut is not None)(expanded))
    if expansion_shortcut is not None:
      expanded = expanded + expansion_shortcut
    hidden = DepthwiseConv(stride=spec.stride, impl=self.depthwise_impl, dtype=self.dtype,
                           kernel_init=init, dilation=spec.dilation,
                           name='depthwise_conv')(expanded)
    hidden = relu6(norm('depthwise_bn')(hidden))
    output = conv(spec.out_channels, 1, 1, self.dtype, 'project_conv', init)(hidden)
    output = norm('project_bn', zero_scale=self.add_bottleneck_shortcut)(output)
    if self.bottleneck_activation == 'relu6':
      output = relu6(output)
    if self.add_bottleneck_shortcut:
      output = output + inputs
    return output, expanded


class MobileNetV2(nn.Module):
  """MobileNetV2 exactly as the official TF-Slim network (paper Table 2).

  Stem 3x3/2 conv to 32 channels, 17 inverted residual blocks, 1x1 conv to
  1280 channels, global average pool, dropout and a linear classifier. Every
  convolution has BN (momentum 0.997, eps 1e-3) and ReLU6; padding is TF 'SAME';
  kernels start from a truncated normal with stddev 0.09.

  Attributes:
    num_classes: classifier outputs (1000 for ImageNet; the official
      checkpoints use 1001, with class 0 as background).
    width_multiplier: scales every channel count with make_divisible(., 8);
      the last conv stays at 1280 below 1.0 and is scaled above.
    expansion_ratio: t for every block but the first (which always has t=1).
    bottleneck_activation: 'linear' (the paper) or 'relu6' (Figure 6a ablation:
      ReLU6 after the projection).
    shortcut: where the residual connections go (Figure 6b):
      'bottleneck' - the paper's design: the block input is added to the
        projection output of every block with stride 1 and equal input and
        output widths (10 blocks at every width), with no activation after it;
      'expansion' - the same 10 connections moved to the wide tensors: the
        expanded (t*k-channel, post-ReLU6) tensor of such a block is added to
        the expanded tensor of the following block, before its depthwise conv
        (an identity shortcut between expansions, as in a classical residual
        network; it adds no parameters);
      'none' - no residual connections at all.
    dropout_rate: dropout before the classifier during training.
    depthwise_impl: 'auto' | 'xla' | 'shifted' | 'ffi' (see `depthwise.py`).
    batch_norm_axis_name: a mapped axis over which BN statistics are averaged
      in training (synchronised BN); None keeps them per device.
    batch_norm_momentum: decay of the BN moving averages used at evaluation
      (official 0.997; short runs need less, e.g. 0.9).
    dtype: computation dtype (e.g. bfloat16); parameters stay float32.
    memory_split: T >= 1. With T > 1, inference evaluates the bottleneck
      blocks (and the stem fused with the t=1 first block) in channel groups
      of their inner tensors, accumulating the projections (paper Section
      5.1, see `memory_split.py`): the same variables and outputs, and the
      peak memory of eq. (2) with every block in T groups. A block that fits
      within that peak whole runs whole, the others in T groups
      (`memory_plan.group_plan`: at 1.0 @ 224 blocks 0-3 are split).
      Inference only; 1 is the normal network.
    kernel_init: 'truncated_normal' (official: stddev 0.09 for every kernel)
      or 'fan_in' (He variance scaling); see `layers.KERNEL_INITS`.
    zero_init_residual: start the last BN scale of every residual branch at 0
      (each block with a shortcut starts as the identity). Off in the
      official network; a CPU-scale option (results/cpu/PROTOCOL.md).
    zero_init_classifier: start the classifier kernel at 0 (all logits 0, the
      loss at log(num_classes)). Off in the official network.
    output_stride: None or 32 (the classifier), 16 or 8: the blocks after that
      stride run at stride 1 with dilated depthwise convolutions (TF-Slim's
      rule, `architecture.atrous_strides_and_dilations`); the variables do not
      change.
    features_only: stop after the last bottleneck block and return
      (features, endpoints), without the last 1x1 conv and the classifier:
      the 320-channel feature map that DeepLab's 'MobileNetV2*' heads read
      (TF-Slim's `layer_18`).
  """
  num_classes: int = 1000
  width_multiplier: float = 1.0
  expansion_ratio: float = 6
  bottleneck_activation: str = 'linear'
  shortcut: str = 'bottleneck'
  dropout_rate: float = 0.2
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32
  memory_split: int = 1
  kernel_init: str = 'truncated_normal'
  zero_init_residual: bool = False
  zero_init_classifier: bool = False
  output_stride: Optional[int] = None
  features_only: bool = False

  def __post_init__(self):
    memory_split.validate_memory_split(self.memory_split)
    architecture.validate_output_stride(self.output_stride)
    if self.memory_split > 1 and self.output_stride not in (None, 32):
      raise ValueError(f'memory_split={self.memory_split} is for the classifier; use '
                       f'memory_split=1 with output_stride={self.output_stride}.')
    architecture.validate_width_multiplier(self.width_multiplier)
    architecture.validate_expansion_ratio(self.expansion_ratio)
    architecture.validate_choice('bottleneck_activation', self.bottleneck_activation,
                                 architecture.BOTTLENECK_ACTIVATIONS)
    architecture.validate_choice('shortcut', self.shortcut, architecture.SHORTCUTS)
    validate_layer_options(self.depthwise_impl, self.batch_norm_momentum, self.kernel_init)
    if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got {self.num_classes!r}.')
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f'dropout_rate must be in [0, 1), got {self.dropout_rate!r}.')
    super().__post_init__()

  @property
  def spec(self) -> architecture.MobileNetV2Spec:
    return architecture.mobilenet_v2_spec(self.width_multiplier, self.expansion_ratio,
                                          self.output_stride)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False, return_endpoints: bool = False):
    """Maps NHWC images (scaled to [-1, 1]) to logits.

    With `return_endpoints=True` also returns a dict of feature maps for
    detection/segmentation heads: 'stem', 'block_{i}/expansion' (the t*k
    tensor entering block i's depthwise conv), 'block_{i}/output',
    'last_conv', 'pre_logits' and 'logits'.
    With `features_only` it returns (last block output, endpoints) instead.
    """
    if images.ndim != 4:
      raise ValueError(f'images must be NHWC, got shape {images.shape}.')
    for resolution in images.shape[1:3]:
      architecture.validate_resolution(resolution)
    if self.memory_split > 1 and (train or return_endpoints or self.features_only):
      raise ValueError(
          f'memory_split={self.memory_split} is for inference without endpoints (it never '
          f'materialises the expansion tensors); use memory_split=1 for train=True or '
          f'return_endpoints=True (the variables are the same).')
    spec = self.spec
    norm = lambda name: batch_norm(train, self.batch_norm_axis_name, self.dtype, name,
                                   self.batch_norm_momentum)
    endpoints = {}

    # Initialisation takes the normal path, so the variables never depend on T.
    if self.memory_split > 1 and not self.is_initializing():
      x = self._split_stem_and_blocks(images, spec)
    else:
      x = self._stem_and_blocks(images, spec, train, norm, endpoints)
    if self.features_only:
      return x, endpoints

    init = KERNEL_INITS[self.kernel_init]
    x = conv(spec.last_channels, 1, 1, self.dtype, 'last_conv', init)(x)
    x = relu6(norm('last_bn')(x))
    endpoints['last_conv'] = x
    x = jnp.mean(x, axis=(1, 2))
    endpoints['pre_logits'] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      kernel_init=nn.initializers.zeros if self.zero_init_classifier else init,
                      param_dtype=jnp.float32, name='classifier')(x)
    logits = logits.astype(jnp.float32)
    endpoints['logits'] = logits
    if return_endpoints:
      return logits, endpoints
    return logits

  def _stem_and_blocks(self, images, spec, train, norm, endpoints):
    x = conv(spec.stem_channels, 3, 2, self.dtype, 'stem_conv',
             KERNEL_INITS[self.kernel_init], impl=self.depthwise_impl)(images)
    x = relu6(norm('stem_bn')(x))
    endpoints['stem'] = x

    shortcut_sources = (architecture.expansion_shortcut_sources(spec)
                        if self.shortcut == 'expansion' else {})
    expanded = {}
    for block_spec in spec.blocks:
      i = block_spec.index
      source = shortcut_sources.get(i)
      x, expanded[i] = InvertedResidual(
          spec=block_spec,
          bottleneck_activation=self.bottleneck_activation,
          add_bottleneck_shortcut=self.shortcut == 'bottleneck' and block_spec.residual,
          depthwise_impl=self.depthwise_impl,
          batch_norm_axis_name=self.batch_norm_axis_name,
          batch_norm_momentum=self.batch_norm_momentum,
          dtype=self.dtype,
          kernel_init=self.kernel_init,
          zero_init_residual=self.zero_init_residual,
          name=f'block_{i}')(x, train, expanded[source] if source is not None else None)
      endpoints[f'block_{i}/expansion'] = expanded[i]
      endpoints[f'block_{i}/output'] = x
    return x

  def _split_stem_and_blocks(self, images, spec):
    """The stem and the blocks in channel groups (`memory_plan`), from the bound variables."""
    params, batch_stats = self.variables['params'], self.variables['batch_stats']
    block = lambda i: (params[f'block_{i}'], batch_stats[f'block_{i}'])
    options = dict(bottleneck_activation=self.bottleneck_activation,
                   depthwise_impl=self.depthwise_impl, dtype=self.dtype)
    x = memory_split.split_stem_and_first_block(images, (params, batch_stats), block(0), spec,
                                                self.memory_split, **options)
    height, width = images.shape[1:3]
    # Only the blocks that exceed the T-way peak whole are split (memory_plan.py);
    # an input that is not square keeps T groups everywhere (the plan is for squares).
    groups = (memory_plan.group_plan(spec, height, self.memory_split, self.shortcut)
              if height == width else {})
    shortcut_sources = (architecture.expansion_shortcut_sources(spec)
                        if self.shortcut == 'expansion' else {})
    block_inputs = {}
    for block_spec in spec.blocks[1:]:
      i = block_spec.index
      block_inputs[i] = x
      # The chain of blocks whose expanded tensors reach this one, nearest first.
      chain, source = [], shortcut_sources.get(i)
      while source is not None:
        chain.append((block_inputs[source], block(source)))
        source = shortcut_sources.get(source)
      x = memory_split.split_bottleneck(
          x, block(i), block_spec, groups.get(i, self.memory_split),
          add_bottleneck_shortcut=self.shortcut == 'bottleneck' and block_spec.residual,
          expansion_shortcut=chain, **options)
    return x
