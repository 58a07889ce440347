"""Box geometry and the centre-size box coder (the OD API's `faster_rcnn_box_coder`).

Boxes are [..., 4] arrays of [ymin, xmin, ymax, xmax]. The coder writes a box
relative to its anchor as
  ty = 10 (y - y_a) / h_a,  tx = 10 (x - x_a) / w_a,  th = 5 log(h / h_a),  tw = 5 log(w / w_a)
(centres y, x and sizes h, w), the scales (10, 10, 5, 5) of the ssdlite
config: they bring the four targets to a similar, roughly unit spread.
"""

import jax
import jax.numpy as jnp

BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
# Added to the sizes before dividing and taking logs, as the OD API does, so a
# degenerate (zero-size) box encodes to a finite number.
SIZE_EPSILON = 1e-8


def area(boxes: jax.Array) -> jax.Array:
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(boxes: jax.Array, other_boxes: jax.Array) -> jax.Array:
  """[N, 4] x [M, 4] -> [N, M] intersection over union; 0 where the boxes do not meet.

  Pairs with no intersection get exactly 0, also when both boxes are empty
  (padding rows), instead of 0/0.
  """
  top_left = jnp.maximum(boxes[:, None, :2], other_boxes[None, :, :2])
  bottom_right = jnp.minimum(boxes[:, None, 2:], other_boxes[None, :, 2:])
  intersection = jnp.prod(jnp.maximum(bottom_right - top_left, 0), axis=-1)
  union = area(boxes)[:, None] + area(other_boxes)[None, :] - intersection
  return jnp.where(intersection > 0, intersection / jnp.where(intersection > 0, union, 1), 0.0)


def to_centre_size(boxes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(y_centre, x_centre, height, width) of [..., 4] corner boxes."""
  height = boxes[..., 2] - boxes[..., 0]
  width = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + height / 2, boxes[..., 1] + width / 2, height, width


def encode(boxes: jax.Array, anchors: jax.Array,
           scales: tuple[float, float, float, float] = BOX_CODER_SCALES) -> jax.Array:
  """Regression targets [..., 4] = (ty, tx, th, tw) of `boxes` relative to `anchors`."""
  y, x, h, w = to_centre_size(boxes)
  y_a, x_a, h_a, w_a = to_centre_size(anchors)
  h, w = h + SIZE_EPSILON, w + SIZE_EPSILON
  h_a, w_a = h_a + SIZE_EPSILON, w_a + SIZE_EPSILON
  return jnp.stack([scales[0] * (y - y_a) / h_a, scales[1] * (x - x_a) / w_a,
                    scales[2] * jnp.log(h / h_a), scales[3] * jnp.log(w / w_a)], axis=-1)


def decode(codes: jax.Array, anchors: jax.Array,
           scales: tuple[float, float, float, float] = BOX_CODER_SCALES) -> jax.Array:
  """The corner boxes [..., 4] that `codes` describe relative to `anchors` (inverse of `encode`)."""
  y_a, x_a, h_a, w_a = to_centre_size(anchors)
  y = codes[..., 0] / scales[0] * h_a + y_a
  x = codes[..., 1] / scales[1] * w_a + x_a
  h = jnp.exp(codes[..., 2] / scales[2]) * h_a
  w = jnp.exp(codes[..., 3] / scales[3]) * w_a
  return jnp.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)
