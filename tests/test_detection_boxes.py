"""The SSD detection machinery does what the OD API's ssdlite config does, on hand-made cases.

Anchors, box coding, matching, the loss and NMS (`mnv2_jax.detection`); every
hand-made case runs under `jax.jit`, since the training step will.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax.detection import anchors, boxes, loss, postprocess, targets

PAPER_FEATURE_MAP_SIZES = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]  # 320x320 input


# --- Anchors --------------------------------------------------------------------


def test_scales_run_from_0_2_to_0_95_over_six_layers():
  assert anchors.AnchorConfig().scales() == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


def test_lowest_layer_has_three_anchors_and_the_others_six():
  config = anchors.AnchorConfig()
  assert config.anchors_per_location() == (3, 6, 6, 6, 6, 6)
  assert config.box_specs()[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
  scale, next_scale = 0.35, 0.5
  assert config.box_specs()[1] == pytest.approx(
      [(scale, 1.0), (scale, 2.0), (scale, 0.5), (scale, 3.0), (scale, 0.3333),
       (math.sqrt(scale * next_scale), 1.0)])


def test_a_320_input_has_2034_anchors_layer_by_layer():
  grid = anchors.generate_anchors(PAPER_FEATURE_MAP_SIZES, (320, 320))
  per_layer = [h * w * n for (h, w), n in zip(PAPER_FEATURE_MAP_SIZES, (3, 6, 6, 6, 6, 6))]
  assert per_layer == [1200, 600, 150, 54, 24, 6]
  assert grid.shape == (2034, 4) and grid.dtype == np.float32


def test_anchor_coordinates_are_cell_centres_with_scale_and_aspect_ratio():
  grid = anchors.generate_anchors(PAPER_FEATURE_MAP_SIZES, (320, 320))
  # Layer 0, cell (0, 0): centre 0.5 / 20; first the 0.1 square, then 0.2 at aspect ratio 2.
  np.testing.assert_allclose(grid[0], [-0.025, -0.025, 0.075, 0.075], atol=1e-7)
  half_height, half_width = 0.1 / math.sqrt(2), 0.1 * math.sqrt(2)
  np.testing.assert_allclose(grid[1], [0.025 - half_height, 0.025 - half_width,
                                       0.025 + half_height, 0.025 + half_width], atol=1e-7)
  # Layer 1 (10x10) starts at 1200; cell (row 2, column 3), its 4th anchor: 0.35 at ratio 3.
  height, width = 0.35 / math.sqrt(3), 0.35 * math.sqrt(3)
  np.testing.assert_allclose(grid[1200 + (2 * 10 + 3) * 6 + 3],
                             [0.25 - height / 2, 0.35 - width / 2,
                              0.25 + height / 2, 0.35 + width / 2], atol=1e-6)
  # The very last anchor: the 1x1 layer's interpolated square, sqrt(0.95 * 1), not clipped.
  side = math.sqrt(0.95)
  np.testing.assert_allclose(grid[-1], [0.5 - side / 2] * 2 + [0.5 + side / 2] * 2, atol=1e-6)


def test_anchors_of_a_wide_image_are_square_in_pixels():
  grid = anchors.generate_anchors([(4, 8), (2, 4), (1, 2), (1, 1), (1, 1), (1, 1)], (64, 128))
  height, width = grid[0, 2] - grid[0, 0], grid[0, 3] - grid[0, 1]
  assert height == pytest.approx(0.1) and width == pytest.approx(0.05)  # 6.4 px each way


@pytest.mark.parametrize('kwargs, argument', [
    (dict(num_layers=1), 'num_layers'),
    (dict(min_scale=0.0), 'min_scale'),
    (dict(min_scale=0.9, max_scale=0.5), 'max_scale'),
    (dict(aspect_ratios=()), 'aspect_ratios'),
    (dict(aspect_ratios=(1.0, -2.0)), 'aspect_ratios'),
    (dict(interpolated_scale_aspect_ratio=-1.0), 'interpolated_scale_aspect_ratio'),
])
def test_anchor_config_rejects_bad_arguments_naming_them(kwargs, argument):
  with pytest.raises(ValueError, match=argument):
    anchors.AnchorConfig(**kwargs)


def test_anchor_grid_needs_one_feature_map_per_layer():
  with pytest.raises(ValueError, match='feature_map_sizes'):
    anchors.generate_anchors([(2, 2)] * 5, (64, 64))


# --- Box coding -----------------------------------------------------------------


def test_iou_of_hand_made_pairs():
  unit = jnp.array([[0.0, 0.0, 1.0, 1.0]])
  others = jnp.array([[0.0, 0.5, 1.0, 1.5],   # half overlaps: 0.5 / 1.5
                      [2.0, 2.0, 3.0, 3.0],   # disjoint
                      [0.0, 0.0, 1.0, 1.0]])  # itself
  np.testing.assert_allclose(boxes.pairwise_iou(unit, others), [[1 / 3, 0.0, 1.0]], rtol=1e-6)
  empty = jnp.zeros((1, 4))
  assert boxes.pairwise_iou(empty, empty)[0, 0] == 0.0  # Padding rows: 0, not 0/0.


def test_encoding_uses_centre_offsets_scaled_by_10_and_log_sizes_by_5():
  anchor = jnp.array([0.2, 0.2, 0.6, 0.4])  # centre (0.4, 0.3), size 0.4 x 0.2
  shifted = jnp.array([0.24, 0.2, 0.64, 0.4])  # centre moved down by 0.1 of the anchor height
  np.testing.assert_allclose(boxes.encode(shifted, anchor), [1.0, 0.0, 0.0, 0.0], atol=1e-5)
  taller = jnp.array([0.0, 0.2, 0.8, 0.4])  # same centre, twice the height
  np.testing.assert_allclose(boxes.encode(taller, anchor), [0.0, 0.0, 5 * math.log(2), 0.0],
                             atol=1e-5)
  assert not jnp.any(boxes.encode(anchor, anchor))  # An anchor encodes to exactly zero.


def test_decode_inverts_encode():
  rng = np.random.RandomState(0)
  corner = rng.uniform(0, 0.6, (50, 2))
  gt = jnp.asarray(np.concatenate([corner, corner + rng.uniform(0.05, 0.4, (50, 2))], 1),
                   jnp.float32)
  grid = jnp.asarray(anchors.generate_anchors(PAPER_FEATURE_MAP_SIZES, (320, 320))[:50])
  codes = jax.jit(boxes.encode)(gt, grid)
  np.testing.assert_allclose(jax.jit(boxes.decode)(codes, grid), gt, atol=1e-5)


# --- Matching and targets ---------------------------------------------------------

QUADRANTS = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0],
                       [0.5, 0.0, 1.0, 0.5], [0.5, 0.5, 1.0, 1.0]])


def test_matching_by_iou_with_a_forced_match_and_a_padding_row():
  gt_boxes = jnp.array([[0.0, 0.0, 0.5, 0.6],    # IoU 0.83 with anchor 0: matched
                        [0.5, 0.5, 0.8, 0.8],    # IoU 0.36 with anchor 3: forced onto it
                        [0.5, 0.0, 1.0, 0.5]])   # padding (equal to anchor 2): never matched
  valid = jnp.array([True, True, False])
  matches = jax.jit(targets.match_anchors)(gt_boxes, valid, QUADRANTS)
  np.testing.assert_array_equal(matches, [0, -1, -1, 1])


def test_when_two_boxes_force_the_same_anchor_the_earlier_keeps_it():
  gt_boxes = jnp.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]])  # both best on anchor 0
  matches = targets.match_anchors(gt_boxes, jnp.array([True, True]), QUADRANTS)
  np.testing.assert_array_equal(matches, [0, -1, -1, -1])


def test_an_image_without_boxes_has_only_background():
  matches = targets.match_anchors(jnp.zeros((2, 4)), jnp.array([False, False]), QUADRANTS)
  np.testing.assert_array_equal(matches, [-1, -1, -1, -1])


def test_targets_shift_labels_past_the_background_slot_and_encode_matched_boxes():
  gt_boxes = jnp.array([[0.0, 0.0, 0.5, 0.6], [0.5, 0.5, 0.8, 0.8], [0.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([5, 2, 0])
  valid = jnp.array([True, True, False])
  box_targets, class_targets, positive = jax.jit(targets.assign_targets)(
      gt_boxes, labels, valid, QUADRANTS)
  np.testing.assert_array_equal(class_targets, [6, 0, 0, 3])
  np.testing.assert_array_equal(positive, [True, False, False, True])
  np.testing.assert_allclose(box_targets[0], boxes.encode(gt_boxes[0], QUADRANTS[0]))
  assert not jnp.any(box_targets[1:3])


# --- The loss ---------------------------------------------------------------------


def _binary_cross_entropy(logit, label):
  return math.log1p(math.exp(-logit)) if label else math.log1p(math.exp(logit))


def test_loss_keeps_every_positive_and_the_three_hardest_negatives_per_positive():
  # Image 0: anchor 0 is class slot 1; five negatives whose slot-1 logits set their hardness.
  # Image 1: no positives, so min_negatives_per_image = 3 negatives.
  negative_logits = [[2.0, -1.0, 3.0, 0.5, 1.0], [0.0, 4.0, -2.0, 1.5, 2.5]]
  class_logits = np.zeros((2, 6, 3), np.float32)
  class_logits[0, 0, 1] = 1.0
  class_logits[0, 1:, 1] = negative_logits[0]
  class_logits[1, 1:, 1] = negative_logits[1]
  class_targets = np.zeros((2, 6), np.int32)
  class_targets[0, 0] = 1
  positive = class_targets > 0
  box_targets = np.zeros((2, 6, 4), np.float32)
  box_encodings = np.full((2, 6, 4), 7.0, np.float32)  # Negatives' boxes must not count.
  box_encodings[0, 0] = [0.5, -2.0, 0.0, 0.0]

  result = jax.jit(loss.ssd_loss)(box_encodings, class_logits, box_targets, class_targets,
                                   positive)

  background = lambda slot1: (_binary_cross_entropy(0.0, True) + _binary_cross_entropy(slot1, False)
                              + _binary_cross_entropy(0.0, False))
  positive_loss = (_binary_cross_entropy(0.0, False) + _binary_cross_entropy(1.0, True)
                   + _binary_cross_entropy(0.0, False))
  hardest = lambda logits: sum(background(x) for x in sorted(logits, reverse=True)[:3])
  expected_classification = positive_loss + hardest(negative_logits[0]) + hardest(
      negative_logits[1])
  expected_localization = 0.5 * 0.5**2 + (2.0 - 0.5)  # Huber: quadratic below 1, linear above.
  assert int(result['num_positives']) == 1  # The normaliser.
  assert float(result['classification_loss']) == pytest.approx(expected_classification, rel=1e-5)
  assert float(result['localization_loss']) == pytest.approx(expected_localization, rel=1e-6)
  assert float(result['loss']) == pytest.approx(expected_classification + expected_localization,
                                                rel=1e-5)


def test_hard_negatives_are_three_per_positive_and_drawn_from_the_hardest_pool():
  losses = jnp.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
  positive = jnp.zeros(10, bool).at[jnp.array([1, 8])].set(True)
  mask = loss.hard_example_mask(losses, positive)
  np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 3, 4, 5, 6, 8])
  # With a pool of the 5 hardest, the positive ranked 9th is left out: 1 positive, 3 negatives.
  mask = loss.hard_example_mask(losses, positive, num_hard_examples=5)
  np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 3])


def test_loss_has_finite_gradients():
  class_logits = jnp.zeros((1, 4, 3))
  box_encodings = jnp.zeros((1, 4, 4))
  targets_ = (jnp.ones((1, 4, 4)), jnp.array([[2, 0, 0, 0]]), jnp.array([[True, False, False,
                                                                        False]]))
  grads = jax.grad(lambda e, c: loss.ssd_loss(e, c, *targets_)['loss'], argnums=(0, 1))(
      box_encodings, class_logits)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  assert float(jnp.abs(grads[0][0, 1:]).sum()) == 0.0  # Negatives get no box gradient.


# --- NMS and post-processing ----------------------------------------------------------

NMS_BOXES = jnp.array([[0.0, 0.0, 1.0, 1.0],    # 0: score 0.9, kept
                       [0.0, 0.0, 1.0, 0.8],    # 1: IoU 0.8 with box 0: suppressed
                       [0.0, 0.5, 1.0, 1.5],    # 2: IoU 1/3 with box 0: kept
                       [0.0, 0.0, 0.1, 0.1],    # 3: score below 1e-8: dropped
                       [0.0, 0.5, 1.0, 1.5]])   # 4: a tie with box 2, which has the lower index
NMS_SCORES = jnp.array([0.9, 0.8, 0.7, 1e-9, 0.7])


def test_nms_keeps_boxes_overlapping_less_than_0_6_in_score_order():
  indices, valid = jax.jit(postprocess.non_max_suppression, static_argnums=2)(
      NMS_BOXES, NMS_SCORES, 4)
  np.testing.assert_array_equal(indices[valid], [0, 2])
  np.testing.assert_array_equal(valid, [True, True, False, False])


def test_nms_stops_at_max_detections():
  indices, valid = postprocess.non_max_suppression(NMS_BOXES, NMS_SCORES, max_detections=1)
  np.testing.assert_array_equal(indices, [0])
  assert bool(valid[0])


def _logit(probability):
  return math.log(probability / (1 - probability))


def test_postprocess_runs_nms_per_class_and_drops_the_background_slot():
  grid = NMS_BOXES[:3]  # Zero codes decode to the anchors themselves.
  absent = -30.0  # sigmoid(-30) < 1e-8: no detection
  class_logits = jnp.array([[[10.0, _logit(0.9), absent],     # box 0: class 0
                             [10.0, _logit(0.8), _logit(0.85)],  # box 1: both classes
                             [10.0, absent, absent]]])        # background only
  out = jax.jit(postprocess.postprocess, static_argnums=3)(
      jnp.zeros((1, 3, 4)), class_logits, grid, 3)
  # Box 1 of class 0 overlaps box 0 of class 0 and goes; as class 1 it stays.
  np.testing.assert_array_equal(out['classes'][0], [0, 1, -1])
  np.testing.assert_allclose(out['scores'][0], [0.9, 0.85, 0.0], rtol=1e-5)
  np.testing.assert_allclose(out['boxes'][0, :2], grid[:2], atol=1e-6)
  assert not jnp.any(out['boxes'][0, 2])
  assert int(out['num_detections'][0]) == 2


def test_postprocess_clips_boxes_to_the_image():
  grid = jnp.array([[-0.2, 0.5, 0.4, 1.3]])
  out = postprocess.postprocess(jnp.zeros((1, 1, 4)), jnp.array([[[0.0, 5.0]]]), grid, 1)
  np.testing.assert_allclose(out['boxes'][0, 0], [0.0, 0.5, 0.4, 1.0], atol=1e-6)
