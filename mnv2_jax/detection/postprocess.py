"""From the network's outputs to detections: decode, score, per-class NMS.

As the OD API's ssdlite `post_processing`: sigmoid scores with the
background slot dropped, boxes decoded and clipped to the image, greedy NMS
per class (IoU > 0.6 suppresses, scores <= 1e-8 are dropped, at most 100 per
class), then the 100 highest-scoring detections over all classes.

No maintained JAX library provides NMS, and the TF ops cannot run inside a
jitted JAX program, so it is written here with static shapes: greedy NMS
repeated `max_detections` times (take the highest remaining score, drop every
box that overlaps it by more than the threshold) gives exactly the boxes the
classic sorted sweep keeps, truncated to `max_detections`, in
O(max_detections x anchors) per class instead of the sweep's O(anchors^2).
"""

import jax
import jax.numpy as jnp

from mnv2_jax.detection import boxes as box_ops

NMS_IOU_THRESHOLD = 0.6
MAX_DETECTIONS = 100
SCORE_THRESHOLD = 1e-8


def non_max_suppression(boxes: jax.Array, scores: jax.Array,
                        max_detections: int = MAX_DETECTIONS,
                        iou_threshold: float = NMS_IOU_THRESHOLD,
                        score_threshold: float = SCORE_THRESHOLD) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS of one class: boxes [N, 4], scores [N].

  Returns (indices [max_detections] int32, valid [max_detections] bool): the
  kept boxes in decreasing score order; slots past the last kept box are
  invalid (index 0). Ties go to the lower index.
  """
  positions = jnp.arange(scores.shape[0])

  def keep_next(slot, state):
    remaining, indices, valid = state
    best = jnp.argmax(remaining)
    found = remaining[best] > -jnp.inf
    overlaps = box_ops.pairwise_iou(boxes[best][None], boxes)[0] > iou_threshold
    remaining = jnp.where(found & (overlaps | (positions == best)), -jnp.inf, remaining)
    return remaining, indices.at[slot].set(jnp.where(found, best, 0)), valid.at[slot].set(found)

  remaining = jnp.where(scores > score_threshold, scores, -jnp.inf)
  initial = (remaining, jnp.zeros(max_detections, jnp.int32), jnp.zeros(max_detections, bool))
  _, indices, valid = jax.lax.fori_loop(0, max_detections, keep_next, initial)
  return indices, valid


def postprocess(box_encodings: jax.Array, class_logits: jax.Array, anchors: jax.Array,
                max_detections: int = MAX_DETECTIONS,
                iou_threshold: float = NMS_IOU_THRESHOLD,
                score_threshold: float = SCORE_THRESHOLD,
                box_coder_scales: tuple[float, ...] = box_ops.BOX_CODER_SCALES
                ) -> dict[str, jax.Array]:
  """Detections of a batch: box_encodings [B, N, 4], class_logits [B, N, num_classes + 1].

  Returns, each with max_detections entries per image in decreasing score order:
  'boxes' [B, K, 4] normalised corners, 'scores' [B, K], 'classes' [B, K]
  contiguous class ids, 'valid' [B, K] bool and 'num_detections' [B]. Padding
  entries have box 0, score 0 and class -1.
  """
  def one_image(codes, logits):
    boxes = jnp.clip(box_ops.decode(codes, anchors, box_coder_scales), 0.0, 1.0)
    scores = jax.nn.sigmoid(logits[:, 1:].astype(jnp.float32))  # Slot 0 is the background.
    per_class = jax.vmap(
        lambda class_scores: non_max_suppression(boxes, class_scores, max_detections,
                                                 iou_threshold, score_threshold),
        in_axes=1)
    indices, valid = per_class(scores)  # [num_classes, K] each.
    classes = jnp.broadcast_to(jnp.arange(scores.shape[1])[:, None], indices.shape)
    candidate_scores = jnp.where(valid, scores[indices, classes], -jnp.inf).reshape(-1)
    top_scores, top = jax.lax.top_k(candidate_scores, max_detections)
    kept = valid.reshape(-1)[top]
    return {
        'boxes': jnp.where(kept[:, None], boxes[indices.reshape(-1)[top]], 0.0),
        'scores': jnp.where(kept, top_scores, 0.0),
        'classes': jnp.where(kept, classes.reshape(-1)[top], -1),
        'valid': kept,
        'num_detections': jnp.sum(kept),
    }
  return jax.vmap(one_image)(box_encodings, class_logits)
