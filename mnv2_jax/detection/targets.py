"""Matching anchors to ground truth and the per-anchor training targets.

The matcher is the OD API's `argmax_matcher` as the ssdlite config sets it:
an anchor is matched to the box it overlaps most when that IoU is >= 0.5
(matched and unmatched thresholds are equal, so no anchor is ignored), and every
ground-truth box is also forced onto the anchor it overlaps most, so that a
small or oddly shaped box still gets one positive
(`force_match_for_each_row`).

Ground truth comes padded to a fixed number of rows with a validity mask, so
the shapes are static and everything jits; padding rows never match.
"""

import jax
import jax.numpy as jnp

from mnv2_jax.detection import boxes as box_ops

MATCH_IOU_THRESHOLD = 0.5
UNMATCHED = -1
BACKGROUND_SLOT = 0


def match_anchors(gt_boxes: jax.Array, gt_valid: jax.Array, anchors: jax.Array,
                  iou_threshold: float = MATCH_IOU_THRESHOLD) -> jax.Array:
  """[N] int32: the index of the ground-truth row each anchor is matched to, or UNMATCHED (-1).

  gt_boxes [G, 4], gt_valid [G] bool, anchors [N, 4]. When two boxes force
  the same anchor, the earlier row keeps it (as the OD API's argmax does).
  """
  # Padding rows get IoU -1: below any threshold and never an argmax over real rows.
  iou = jnp.where(gt_valid[:, None], box_ops.pairwise_iou(gt_boxes, anchors), -1.0)
  best_iou = jnp.max(iou, axis=0)
  matches = jnp.where(best_iou >= iou_threshold, jnp.argmax(iou, axis=0), UNMATCHED)
  num_anchors = anchors.shape[0]
  forced = jax.nn.one_hot(jnp.argmax(iou, axis=1), num_anchors, dtype=jnp.bool_)
  forced = forced & gt_valid[:, None]
  return jnp.where(jnp.any(forced, axis=0), jnp.argmax(forced, axis=0), matches).astype(jnp.int32)


def assign_targets(gt_boxes: jax.Array, gt_labels: jax.Array, gt_valid: jax.Array,
                   anchors: jax.Array, iou_threshold: float = MATCH_IOU_THRESHOLD,
                   box_coder_scales: tuple[float, ...] = box_ops.BOX_CODER_SCALES):
  """The training targets of one image.

  gt_boxes [G, 4] normalised corners, gt_labels [G] contiguous class ids
  (0 .. num_classes - 1), gt_valid [G] bool, anchors [N, 4]. Returns
    box_targets    [N, 4] the matched box encoded against its anchor (0 if unmatched),
    class_targets  [N] int32 class slot: label + 1, or BACKGROUND_SLOT (0) if unmatched,
    positive       [N] bool, the matched anchors.
  Vmap it over a batch: `jax.vmap(assign_targets, in_axes=(0, 0, 0, None))`.
  """
  matches = match_anchors(gt_boxes, gt_valid, anchors, iou_threshold)
  positive = matches != UNMATCHED
  gt_index = jnp.maximum(matches, 0)
  # An unmatched anchor is encoded against itself: an exact zero target, never used by the loss.
  matched_boxes = jnp.where(positive[:, None], gt_boxes[gt_index], anchors)
  box_targets = box_ops.encode(matched_boxes, anchors, box_coder_scales)
  class_targets = jnp.where(positive, gt_labels[gt_index] + 1, BACKGROUND_SLOT)
  return box_targets, class_targets.astype(jnp.int32), positive
