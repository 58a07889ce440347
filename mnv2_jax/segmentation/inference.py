"""Inference strategies of Table 7: single scale, and multi-scale inputs with flips ('MF').

MF is DeepLab's evaluation (`predict_labels_multi_scale`): the image is
resized to each of the scales 0.5, 0.75, ..., 1.75 (sides (size - 1) * scale
+ 1), evaluated as it is and mirrored left-right, each evaluation's logits
are resized back to the image (the mirrored ones mirrored back) and turned
into class probabilities, and the 12 probability maps are averaged.

`probabilities_at_scale` is jitted per (model, scale, flip) and input shape,
so each scale compiles once; the average over scales is a Python loop.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models.deeplab import resize_bilinear_align_corners
from mnv2_jax.models.deeplab_architecture import MULTI_SCALE_EVAL_SCALES, scaled_input_size

SINGLE_SCALE = (1.0,)


def _mirrored(images: jax.Array) -> jax.Array:
  return images[:, :, ::-1]


@functools.partial(jax.jit, static_argnames=('model', 'scale', 'flip'))
def probabilities_at_scale(model: nn.Module, variables: Any, images: jax.Array, scale: float,
                           flip: bool) -> jax.Array:
  """Summed class probabilities, at the images' size, of the evaluations at one scale.

  One evaluation, or two with `flip` (the image and its mirror, whose output is
  mirrored back so that both describe the same pixels). `model` maps NHWC
  images to logits at their own size (`DeepLabV3`).
  """
  height, width = images.shape[1:3]
  scaled = resize_bilinear_align_corners(
      images, scaled_input_size(height, scale), scaled_input_size(width, scale))
  views = [(scaled, lambda logits: logits)]
  if flip:
    views.append((_mirrored(scaled), _mirrored))
  total = 0.0
  for view, restore in views:
    logits = restore(model.apply(variables, view, train=False))
    logits = resize_bilinear_align_corners(logits, height, width)
    total = total + jax.nn.softmax(logits, axis=-1)
  return total


def predict_probabilities(model: nn.Module, variables: Any, images: jax.Array,
                          scales: Sequence[float] = SINGLE_SCALE,
                          flip: bool = False) -> jax.Array:
  """Class probabilities (N, H, W, classes) averaged over `scales` (and mirrored inputs).

  The defaults are single-scale inference; `scales=MULTI_SCALE_EVAL_SCALES,
  flip=True` is Table 7's MF.
  """
  if not scales:
    raise ValueError('scales must name at least one scale, e.g. (1.0,).')
  total = sum(probabilities_at_scale(model, variables, images, float(scale), flip)
              for scale in scales)
  return total / (len(scales) * (2 if flip else 1))


def predict_multi_scale_flip(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  """Table 7's 'MF' class probabilities: 6 scales x 2 mirror images, averaged."""
  return predict_probabilities(model, variables, images, MULTI_SCALE_EVAL_SCALES, flip=True)


def predict_labels(probabilities: jax.Array) -> jax.Array:
  """The class of each pixel (N, H, W), int32."""
  return jnp.argmax(probabilities, axis=-1).astype(jnp.int32)
