"""SSD's random crop (Liu et al. 2016, Section 2.2), as the OD API's `ssd_random_crop`.

The OD API's ssdlite_mobilenet_v2_coco config, which the paper trained, augments
with a horizontal flip and `ssd_random_crop {}`, i.e. that op's defaults:

  1. draw one of seven settings uniformly: the crop must cover at least
     `min_object_covered` of some ground-truth box, and a box survives only if at
     least `min_box_overlap` of its own area lies in the crop (both from
     0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, paired);
  2. with probability 0.15 keep the whole image instead (`random_coef`);
  3. sample the window with `sample_distorted_bounding_box` (aspect ratio 0.5-2,
     10-100% of the image's area, 100 attempts, the whole image if none fits);
  4. drop the boxes completely outside the window or below the overlap, move the
     rest into the window's frame and clip them to it.

This is a host-side tf.data step on TF's stateless ops, so one seed gives one
crop on every machine. Written here because the OD API is not a dependency (it
pins its own TF and protobuf) and its op draws from stateful seeds; the logic
above is short and sits on the same TF op (`sample_distorted_bounding_box`).
"""

import tensorflow as tf

MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
MIN_BOX_OVERLAP = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
ASPECT_RATIO_RANGE = (0.5, 2.0)
AREA_RANGE = (0.1, 1.0)
KEEP_ORIGINAL_PROBABILITY = 0.15
MAX_ATTEMPTS = 100
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


def ssd_random_crop(image: tf.Tensor, boxes: tf.Tensor,
                    seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """image [H, W, C], boxes [N, 4] normalised corners, seed [2] -> (cropped image,
  the kept boxes in the crop's frame [M, 4], the kept boxes' indices [M], the window
  [4] in the input's normalised coordinates).

  Gather the boxes' other fields (labels, ...) with the returned indices.
  """
  boxes = tf.cast(boxes, tf.float32)
  setting_seed, keep_seed, window_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  setting = tf.random.stateless_uniform([], setting_seed, maxval=len(MIN_OBJECT_COVERED),
                                        dtype=tf.int32)
  min_box_overlap = tf.gather(MIN_BOX_OVERLAP, setting)
  begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), tf.clip_by_value(boxes, 0.0, 1.0)[None], seed=window_seed,
      min_object_covered=tf.gather(MIN_OBJECT_COVERED, setting),
      aspect_ratio_range=ASPECT_RATIO_RANGE, area_range=AREA_RANGE,
      max_attempts=MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
  keep_original = tf.random.stateless_uniform([], keep_seed) <= KEEP_ORIGINAL_PROBABILITY
  window = tf.where(keep_original, tf.constant(WHOLE_IMAGE), tf.reshape(window, [4]))
  begin = tf.where(keep_original, tf.zeros_like(begin), begin)
  size = tf.where(keep_original, tf.shape(image), size)
  # The whole image keeps every box (degenerate ones aside).
  min_box_overlap = tf.where(keep_original, 0.0, min_box_overlap)
  moved, indices = boxes_in_window(boxes, window, min_box_overlap)
  return tf.slice(image, begin, size), moved, indices, window


def boxes_in_window(boxes: tf.Tensor, window: tf.Tensor,
                    min_box_overlap: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The boxes [N, 4] that keep at least `min_box_overlap` of their area inside
  `window` [4] and are not completely outside it, in the window's frame, clipped
  to it: ([M, 4], their indices [M])."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  w_ymin, w_xmin, w_ymax, w_xmax = tf.unstack(window)
  outside = (ymin >= w_ymax) | (ymax <= w_ymin) | (xmin >= w_xmax) | (xmax <= w_xmin)
  intersection = (tf.maximum(tf.minimum(ymax, w_ymax) - tf.maximum(ymin, w_ymin), 0.0) *
                  tf.maximum(tf.minimum(xmax, w_xmax) - tf.maximum(xmin, w_xmin), 0.0))
  area = (ymax - ymin) * (xmax - xmin)
  # The OD API divides by the area; a degenerate box gives NaN there and is dropped.
  kept = ~outside & (area > 0) & (intersection >= min_box_overlap * area)
  indices = tf.cast(tf.reshape(tf.where(kept), [-1]), tf.int32)
  origin = tf.stack([w_ymin, w_xmin, w_ymin, w_xmin])
  extent = tf.stack([w_ymax - w_ymin, w_xmax - w_xmin] * 2)
  return tf.clip_by_value((tf.gather(boxes, indices) - origin) / extent, 0.0, 1.0), indices
