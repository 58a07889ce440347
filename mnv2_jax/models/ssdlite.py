"""SSDLite (paper Section 6.2): MobileNetV2 or MobileNetV1 with SSD/SSDLite prediction layers.

The layers are those of `ssdlite_architecture.ssd_spec`; this module only
builds them. The backbone is the classifier network itself (same parameter
names under 'backbone', so ImageNet weights load unchanged), read through its
endpoints.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.detection.anchors import AnchorConfig, generate_anchors
from mnv2_jax.models import ssdlite_architecture
from mnv2_jax.models.depthwise import DepthwiseConv
from mnv2_jax.models.layers import batch_norm, conv, relu6, validate_layer_options
from mnv2_jax.models.mobilenet_v1 import MobileNetV1
from mnv2_jax.models.mobilenet_v2 import MobileNetV2

# The OD API config: BN decay 0.9997 everywhere, and truncated-normal(0.03)
# kernels for every layer it adds to the backbone.
DETECTION_BATCH_NORM_MOMENTUM = 0.9997
head_kernel_init = nn.initializers.truncated_normal(stddev=0.03)

BACKBONE_MODULES = {'mobilenet_v2': MobileNetV2, 'mobilenet_v1': MobileNetV1}


def _skip_backbone_classifier(next_method, args, kwargs, context):
  """Runs the backbone without its ImageNet classifier.

  The backbones always end in pooling and a 1000-way classifier that a
  detector never uses; skipping the call keeps its ~1.3M parameters out of the
  detector's variables (and its accounting) while the backbone's own code, and
  so its parameter names, stay exactly the classifier's.
  """
  module = context.module
  if isinstance(module, nn.Dense) and module.name == 'classifier' and (
      context.method_name == '__call__'):
    features = args[0]
    return jnp.zeros(features.shape[:-1] + (module.features,), features.dtype)
  return next_method(*args, **kwargs)


class ConvSequence(nn.Module):
  """A chain of `ssdlite_architecture.ConvLayer`s: conv + BN + ReLU6, or a conv with a bias."""
  layers: tuple[ssdlite_architecture.ConvLayer, ...]
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = DETECTION_BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for layer in self.layers:
      if layer.kind == 'depthwise':
        x = DepthwiseConv(stride=layer.stride, impl=self.depthwise_impl, dtype=self.dtype,
                          kernel_init=head_kernel_init, name=layer.layer)(x)
      elif layer.batch_norm:
        x = conv(layer.out_channels, layer.kernel_size, layer.stride, self.dtype, layer.layer,
                 head_kernel_init)(x)
      else:
        x = nn.Conv(layer.out_channels, (layer.kernel_size,) * 2, strides=layer.stride,
                    padding='SAME', use_bias=True, kernel_init=head_kernel_init,
                    dtype=self.dtype, param_dtype=jnp.float32, name=layer.layer)(x)
      if layer.batch_norm:
        x = relu6(batch_norm(train, self.batch_norm_axis_name, self.dtype,
                             layer.batch_norm_name, self.batch_norm_momentum)(x))
    return x


class SSDLite(nn.Module):
  """An SSD detector on a MobileNet backbone, as the OD API's ssdlite_mobilenet_v2.

  Maps NHWC images (scaled to [-1, 1], each side >= 64; the paper uses 320x320)
  to a dict of
    'box_encodings'  [B, num_anchors, 4] box codes relative to the anchors
                     (`mnv2_jax.detection.boxes.decode`),
    'class_logits'   [B, num_anchors, num_classes + 1], slot 0 the background,
  with anchors in the order of `anchors(image_size)`.

  Attributes:
    num_classes: object classes, without the background (80 for COCO).
    backbone: 'mobilenet_v2' (the paper's MNetV2 + SSDLite) or 'mobilenet_v1'.
    width_multiplier: of the backbone; the extra layers scale with it too.
    head: 'ssdlite' (depthwise-separable prediction layers) or 'ssd' (regular
      3x3 convs; paper Table 5).
    anchor_config: the anchor grid; its anchors per location size the predictors.
    depthwise_impl, batch_norm_axis_name, dtype: as in `MobileNetV2`.
    batch_norm_momentum: BN decay of backbone and head (the OD API's 0.9997).
  """
  num_classes: int = 80
  backbone: str = 'mobilenet_v2'
  width_multiplier: float = 1.0
  head: str = 'ssdlite'
  anchor_config: AnchorConfig = AnchorConfig()
  depthwise_impl: str = 'auto'
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = DETECTION_BATCH_NORM_MOMENTUM
  dtype: Any = jnp.float32

  def __post_init__(self):
    # Resolving the table at the paper's input size checks every structural argument.
    ssdlite_architecture.ssd_spec(self.backbone, self.width_multiplier,
                                  ssdlite_architecture.MIN_IMAGE_SIZE, self.num_classes,
                                  self.head, self.anchor_config)
    validate_layer_options(self.depthwise_impl, self.batch_norm_momentum)
    super().__post_init__()

  def spec(self, image_size) -> ssdlite_architecture.SSDSpec:
    return ssdlite_architecture.ssd_spec(self.backbone, self.width_multiplier, image_size,
                                         self.num_classes, self.head, self.anchor_config)

  def anchors(self, image_size) -> jax.Array:
    """[num_anchors, 4] normalised anchors for images of `image_size` (int or (height, width))."""
    spec = self.spec(image_size)
    return generate_anchors([m.size for m in spec.feature_maps], spec.image_size,
                            self.anchor_config)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    minimum = ssdlite_architecture.MIN_IMAGE_SIZE
    if images.ndim != 4 or min(images.shape[1:3]) < minimum:
      raise ValueError(f'images must be NHWC with height and width >= {minimum} (the paper: '
                       f'320x320), got shape {images.shape}.')
    spec = self.spec(tuple(images.shape[1:3]))
    common = dict(depthwise_impl=self.depthwise_impl,
                  batch_norm_axis_name=self.batch_norm_axis_name,
                  batch_norm_momentum=self.batch_norm_momentum, dtype=self.dtype)
    backbone = BACKBONE_MODULES[self.backbone](
        num_classes=1, width_multiplier=self.width_multiplier, dropout_rate=0.0,
        name='backbone', **common)
    with nn.intercept_methods(_skip_backbone_classifier):
      _, endpoints = backbone(images, train=train, return_endpoints=True)

    feature_maps = [endpoints[m.source] for m in spec.feature_maps[:2]]
    for layers in spec.extra_layers:
      feature_maps.append(ConvSequence(layers, name=layers[0].group, **common)(
          feature_maps[-1], train))

    batch = images.shape[0]
    box_encodings, class_logits = [], []
    for features, box_layers, class_layers in zip(feature_maps, spec.box_predictors,
                                                  spec.class_predictors):
      # [B, H, W, anchors * outputs] -> [B, H * W * anchors, outputs]: the anchor order.
      box_encodings.append(ConvSequence(box_layers, name=box_layers[0].group, **common)(
          features, train).reshape(batch, -1, ssdlite_architecture.BOX_CODE_SIZE))
      class_logits.append(ConvSequence(class_layers, name=class_layers[0].group, **common)(
          features, train).reshape(batch, -1, spec.num_class_slots))
    return {'box_encodings': jnp.concatenate(box_encodings, axis=1).astype(jnp.float32),
            'class_logits': jnp.concatenate(class_logits, axis=1).astype(jnp.float32)}
