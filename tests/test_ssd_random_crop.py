"""SSD's random crop of detection training images (the OD API's ssd_random_crop defaults)."""

import numpy as np
import pytest
import tensorflow as tf

from configs import ssdlite_coco
from mnv2_jax import tasks
from mnv2_jax.detection import random_crop

# Pixel (y, x) of this image holds (y, x, 0): a crop shows which pixels it took.
HEIGHT, WIDTH = 90, 120
COORDINATE_IMAGE = np.stack([*np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij"),
                             np.zeros((HEIGHT, WIDTH), int)], axis=-1).astype(np.uint8)
BOXES = np.array([[0.1, 0.1, 0.4, 0.3], [0.5, 0.55, 0.95, 0.9], [0.2, 0.6, 0.3, 0.7],
                  [0.0, 0.0, 1.0, 1.0]], np.float32)


def _crops(count):
  for k in range(count):
    image, boxes, kept, window = random_crop.ssd_random_crop(
        tf.constant(COORDINATE_IMAGE), tf.constant(BOXES), tf.constant([11, k], tf.int64))
    yield image.numpy(), boxes.numpy(), kept.numpy(), window.numpy()


def test_boxes_in_window_keep_those_with_enough_of_their_area_inside_in_its_frame():
  window = tf.constant([0.0, 0.0, 0.5, 0.5])
  boxes = tf.constant([[0.1, 0.1, 0.3, 0.3],    # inside
                       [0.375, 0.125, 0.625, 0.375],  # half inside
                       [0.6, 0.6, 0.9, 0.9],    # outside
                       [0.5, 0.1, 0.7, 0.3],    # touching the edge from outside
                       [0.2, 0.2, 0.2, 0.4]])   # no area
  for threshold, expected in ((0.0, [0, 1]), (0.5, [0, 1]), (0.6, [0]), (1.0, [0])):
    moved, kept = random_crop.boxes_in_window(boxes, window, tf.constant(threshold))
    assert kept.numpy().tolist() == expected
  moved, _ = random_crop.boxes_in_window(boxes, window, tf.constant(0.0))
  np.testing.assert_allclose(moved.numpy(), [[0.2, 0.2, 0.6, 0.6], [0.75, 0.25, 1.0, 0.75]],
                             atol=1e-6)


def test_the_crop_is_the_windows_pixels_and_its_boxes_are_the_kept_boxes_in_its_frame():
  for image, boxes, kept, window in _crops(40):
    top, left = image[0, 0, :2]
    assert image.shape[:2] == (round((window[2] - window[0]) * HEIGHT),
                               round((window[3] - window[1]) * WIDTH))
    assert (top, left) == (round(window[0] * HEIGHT), round(window[1] * WIDTH))
    np.testing.assert_array_equal(
        image, COORDINATE_IMAGE[top:top + image.shape[0], left:left + image.shape[1]])
    extent = np.tile(window[2:] - window[:2], 2)
    back = boxes * extent + np.tile(window[:2], 2)
    clipped = np.concatenate([np.maximum(BOXES[kept, :2], window[:2]),
                              np.minimum(BOXES[kept, 2:], window[2:])], axis=1)
    np.testing.assert_allclose(back, clipped, atol=1e-5)


def test_whole_images_and_every_setting_occur_at_their_rates_and_a_seed_repeats():
  windows = [window for _, _, _, window in _crops(400)]
  whole = np.mean([np.allclose(w, random_crop.WHOLE_IMAGE) for w in windows])
  # 15% are kept whole by design; a failed sampling (no window within 100 tries) adds a few.
  assert 0.12 <= whole <= 0.30
  areas = [(w[2] - w[0]) * (w[3] - w[1]) for w in windows]
  assert min(areas) >= random_crop.AREA_RANGE[0] - 0.02 and np.median(areas) < 0.8
  first, again = next(_crops(1)), next(_crops(1))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)


def test_most_crops_hold_a_small_object_whole_some_cut_it_and_a_few_lose_it():
  """One small central box: the settings that demand coverage (and the 15% whole images)
  keep it whole; the lenient ones may cut it or leave it out."""
  box = np.array([[0.4, 0.4, 0.6, 0.6]], np.float32)
  outcomes = {'lost': 0, 'whole': 0, 'cut': 0}
  for k in range(300):
    _, boxes, kept, window = random_crop.ssd_random_crop(
        tf.constant(COORDINATE_IMAGE), tf.constant(box), tf.constant([5, k], tf.int64))
    if not len(kept.numpy()):
      outcomes['lost'] += 1
      continue
    back = boxes.numpy()[0] * np.tile(window[2:] - window[:2], 2) + np.tile(window[:2], 2)
    outcomes['whole' if np.allclose(back, box[0], atol=1e-5) else 'cut'] += 1
  assert outcomes['whole'] > 150 and outcomes['cut'] > 20 and outcomes['lost'] > 0, outcomes


@pytest.mark.parametrize('random_crop_setting', ['ssd', 'none'])
def test_a_training_example_crops_image_and_boxes_alike(random_crop_setting):
  """The bright object of a scene sits where its box says after crop, flip and resize."""
  config = ssdlite_coco.get_config('width=0.35,res=64,batch=8')
  with config.unlocked():
    config.detection.random_crop = random_crop_setting
  task = tasks.get_task(config)
  image = np.zeros((160, 160, 3), np.uint8)
  image[40:100, 60:140] = 255
  example = {'image': tf.constant(image),
             'objects': {'bbox': tf.constant([[0.25, 0.375, 0.625, 0.875]]),
                         'label': tf.constant([3], tf.int64),
                         'is_crowd': tf.constant([False])}}
  cropped = 0
  for k in range(24):
    out = task.train_example(example, tf.constant([2, k], tf.int64))
    pixels, valid = out['image'].numpy()[..., 0], out['boxes_valid'].numpy()
    assert out['image'].shape == (64, 64, 3) and out['boxes'].shape == (100, 4)
    if not valid[0]:
      assert random_crop_setting == 'ssd' and not valid.any()
      continue
    rows, cols = np.nonzero(pixels > 0.0)  # brighter than mid-grey ([-1, 1] input)
    bright = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / 64
    np.testing.assert_allclose(bright, out['boxes'].numpy()[0], atol=1.5 / 64)
    cropped += not np.allclose(out['boxes'].numpy()[0, [0, 2]], [0.25, 0.625], atol=1e-6)
  assert (cropped > 4) == (random_crop_setting == 'ssd')
