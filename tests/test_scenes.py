"""The scene renderer shared by the built-in datasets, and the detection and segmentation ones."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnv2_jax import data  # noqa: F401 (registers the builders)
from mnv2_jax.data import procedural_shapes
from mnv2_jax.data import scenes
from test_procedural_shapes import RENDERED_MEANS

SQUARE = scenes.FINE_CLASS_NAMES.index('square')
DISC = scenes.FINE_CLASS_NAMES.index('disc')


def _split(num_examples, resolution=48, seed=0, split='train'):
  return list(procedural_shapes.render_scene_split(num_examples, resolution, seed, split))


def _two_squares(behind_x=-0.3, behind_scale=0.4, in_front=True, resolution=64):
  """A square at `behind_x` and, in front of it, a larger square from x=-0.308 to 0.508."""
  drawn = scenes.draw_scenes(np.array([[SQUARE, DISC]]), resolution, np.random.default_rng(0))
  return dataclasses.replace(
      drawn, labels=np.array([[SQUARE, SQUARE]]), present=np.array([[True, in_front]]),
      centre=np.array([[[behind_x, 0.0], [0.1, 0.0]]]), scale=np.array([[behind_scale, 0.6]]),
      angle=np.zeros((1, 2)), colour=np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]),
      noise=np.zeros_like(drawn.noise))


def _full_coverage(drawn):
  """[K, n, R, R] each slot's unoccluded coverage over the whole image (0 for empty slots)."""
  spec = scenes.version_spec(drawn.version)
  return np.stack([
      scenes.object_coverage(drawn.labels[:, slot], drawn.resolution, drawn.centre[:, slot],
                             drawn.angle[:, slot], drawn.scale[:, slot], spec)
      * drawn.present[:, slot, None, None]
      for slot in range(drawn.labels.shape[1])])


def test_coverage_in_a_window_is_the_whole_images_there_and_zero_outside():
  rng = np.random.default_rng(0)
  for version, resolution in (('1.2.0', 32), ('2.0.0', 32), ('2.0.0', 64)):
    spec = scenes.version_spec(version)
    labels = np.repeat(np.arange(len(spec.class_names)), 3)  # small to large
    scale = np.tile([0.2, 0.45, 0.85], len(spec.class_names))
    centre = rng.uniform(-1, 1, (len(labels), 2)) * (1 - scale[:, None])
    angle = rng.uniform(0, 2 * np.pi, len(labels))
    whole = scenes.object_coverage(labels, resolution, centre, angle, scale, spec)
    for image in range(len(labels)):  # each in its own window, the tightest
      frame = labels[image:image + 1], resolution, centre[image:image + 1], angle[image:image + 1]
      corner, size = scenes._object_windows(frame[2], scale[image:image + 1], resolution)
      window = scenes.object_coverage(*frame, scale[image:image + 1], spec, corner, size)
      (row, column), = corner
      np.testing.assert_array_equal(window[0], whole[image, row:row + size, column:column + size])
      outside = whole[image].copy()
      outside[row:row + size, column:column + size] = 0
      assert not outside.any()


def test_boxes_tightly_enclose_the_pixels_that_show_each_object():
  labels, present = procedural_shapes.scene_layout(0, 24, 20, np.random.default_rng(5))
  drawn = scenes.draw_scenes(labels, 48, np.random.default_rng(6), object_scale=(0.2, 0.5),
                             present=present)
  rendering = scenes.render_scenes(drawn)
  coverage = _full_coverage(drawn)
  in_front = np.concatenate([np.cumprod((1 - coverage)[::-1], axis=0)[::-1][1:],
                             np.ones_like(coverage[:1])])
  visible = coverage * in_front  # the share of each pixel the object still shows
  pixel_edges = (np.arange(49) / 48).astype(np.float32)  # boxes are float32, as TFDS's
  for image, slot in zip(*np.nonzero(present)):
    shown = rendering.object_map[image] == slot
    # A pixel shows the object iff its own coverage is >= 0.5 and nothing in front reaches 0.5;
    # whatever shows more than half of a pixel is the one it shows.
    later = coverage[slot + 1:, image] >= 0.5
    np.testing.assert_array_equal(shown, (coverage[slot, image] >= 0.5) & ~later.any(axis=0))
    assert shown[visible[slot, image] > 0.5].all()
    rows, columns = np.nonzero(shown)
    ymin, xmin, ymax, xmax = rendering.boxes[image, slot]
    assert (ymin, ymax) == (pixel_edges[rows.min()], pixel_edges[rows.max() + 1])
    assert (xmin, xmax) == (pixel_edges[columns.min()], pixel_edges[columns.max() + 1])
  assert not rendering.boxes[~present].any()


def test_an_object_in_front_hides_the_pixels_behind_it_and_shrinks_their_box():
  alone = scenes.render_scenes(_two_squares(in_front=False))
  occluded = scenes.render_scenes(_two_squares())
  behind_alone = alone.object_map[0] == 0
  behind, front = occluded.object_map[0] == 0, occluded.object_map[0] == 1
  assert behind.sum() < 0.6 * behind_alone.sum()
  np.testing.assert_array_equal(behind, behind_alone & ~front)
  np.testing.assert_array_equal(occluded.class_map[0] > 0, behind | front)
  # The front square covers the right part: the box behind loses its right side only.
  box_alone, box = alone.boxes[0, 0], occluded.boxes[0, 0]
  np.testing.assert_array_equal(box[:3], box_alone[:3])
  assert box[3] < box_alone[3] - 0.1
  assert 0.3 < occluded.visible_fraction[0, 0] < 0.6 and occluded.visible_fraction[0, 1] == 1
  # Where both squares cover a pixel whole, it has the front square's colour (blue), not red.
  coverage = _full_coverage(_two_squares())[:, 0]
  overlap = (coverage[0] == 1) & (coverage[1] == 1)
  assert overlap.sum() > 100
  assert (occluded.images[0][overlap] == (0, 0, 255)).all()


def test_a_mostly_hidden_object_is_left_out_of_the_boxes_but_stays_in_the_mask():
  # A smaller square behind: only its left ~18% (x < -0.308 of [-0.356, -0.084]) shows.
  rendering = scenes.render_scenes(_two_squares(behind_x=-0.22, behind_scale=0.2))
  assert 0 < rendering.visible_fraction[0, 0] < procedural_shapes.MIN_VISIBLE_FRACTION
  ((boxes, labels),) = procedural_shapes.annotations(rendering)
  np.testing.assert_array_equal(boxes, rendering.boxes[0, 1:])
  np.testing.assert_array_equal(labels, [SQUARE])
  assert (rendering.object_map[0] == 0).any()


def test_the_class_map_shows_the_class_of_the_object_each_pixel_shows():
  for rendering in _split(40):
    shown_labels = np.take_along_axis(
        rendering.labels, np.maximum(rendering.object_map, 0).reshape(40, -1), axis=1)
    np.testing.assert_array_equal(
        rendering.class_map,
        np.where(rendering.object_map >= 0, 1 + shown_labels.reshape(40, 48, 48), 0))
    for class_map, labels, boxes in zip(rendering.class_map, rendering.labels,
                                        rendering.boxes):
      showing = boxes[:, 2] > 0
      assert set(np.unique(class_map)) - {0} == set(1 + labels[showing])


@pytest.mark.parametrize('version', sorted(RENDERED_MEANS))
def test_one_object_scenes_are_the_classification_images(version):
  # The classification dataset is the K = 1 case: its images as each version first rendered
  # them, and its one object fills the class map.
  expected = RENDERED_MEANS[version]
  labels = np.arange(len(expected))
  drawn = scenes.draw_scenes(labels[:, None], 32, np.random.default_rng([0, 0, 0]), version)
  rendering = scenes.render_scenes(drawn)
  images, _ = next(procedural_shapes.render_split(len(expected), 32, 0, 'train', version))
  np.testing.assert_array_equal(rendering.images, images)
  np.testing.assert_allclose(images.reshape(len(expected), -1).mean(axis=1), expected, atol=0.05)
  for class_map, label in zip(rendering.class_map, labels):
    assert set(np.unique(class_map)) == {0, 1 + label}


def test_scenes_are_a_function_of_seed_split_and_chunk():
  first, again = _split(300, 32), _split(300, 32)
  for chunk, chunk_again in zip(first, again):
    for field in scenes.Rendering._fields:
      np.testing.assert_array_equal(getattr(chunk, field), getattr(chunk_again, field))
  # The first chunk (256 scenes) does not depend on how many follow.
  (shorter,) = _split(256, 32)
  np.testing.assert_array_equal(shorter.images, first[0].images)
  np.testing.assert_array_equal(shorter.boxes, first[0].boxes)
  assert not np.array_equal(_split(20, 32, seed=1)[0].images, _split(20, 32)[0].images)
  assert not np.array_equal(_split(20, 32, split='test')[0].images, _split(20, 32)[0].images)


def test_object_counts_and_classes_are_balanced_over_a_split_and_objects_overlap():
  chunks = _split(300, 32)
  present = np.concatenate([chunk.present for chunk in chunks])
  labels = np.concatenate([chunk.labels for chunk in chunks])[present]
  visible_fraction = np.concatenate([chunk.visible_fraction for chunk in chunks])[present]
  np.testing.assert_array_equal(np.bincount(present.sum(axis=1)), [0, 75, 75, 75, 75])
  assert len(labels) == 750
  assert set(np.bincount(labels, minlength=20)) == {37, 38}  # 750 = 20 * 37.5
  kept = np.concatenate([labels for chunk in chunks
                         for _, labels in procedural_shapes.annotations(chunk)])
  assert (np.bincount(kept, minlength=20) >= 0.85 * np.bincount(labels, minlength=20)).all()
  assert 0.1 < (visible_fraction < 1).mean() < 0.6  # occlusion is common, not the rule


def _prepare(name, tmp_path, seed):
  config = procedural_shapes.make_scene_builder_config(
      num_train_examples=24, num_test_examples=12, render_resolution=48, seed=seed)
  builder = tfds.builder(name, config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits['train'].num_examples == 24
  assert builder.info.splits['test'].num_examples == 12
  (rendering,) = procedural_shapes.render_scene_split(12, 48, seed, 'test')
  return builder, list(tfds.as_numpy(builder.as_dataset(split='test'))), rendering


def test_detection_builder_serves_the_rendered_boxes_and_labels(tmp_path, capsys):
  builder, examples, rendering = _prepare('procedural_shapes_detection', tmp_path, seed=3)
  out, err = capsys.readouterr()
  directory = tmp_path / 'procedural_shapes_detection' / builder.builder_config.name / '1.0.0'
  assert out.splitlines() == [f'rendering procedural_shapes_detection: 24 train + 12 test '
                              f'images at 48 px into {directory} (about 1 s)']
  assert 'rendering procedural_shapes_detection: 100%' in err and 'custom data' not in err
  objects = builder.info.features['objects']
  assert isinstance(objects['bbox'], tfds.features.BBoxFeature)
  assert objects['label'].names == list(scenes.FINE_CLASS_NAMES)
  # TFDS stores the examples shuffled: each stored one is matched by its objects.
  rendered = {(boxes.tobytes(), labels.tobytes()): image for image, (boxes, labels)
              in zip(rendering.images, procedural_shapes.annotations(rendering))}
  assert len(rendered) == len(examples) == 12
  for example in examples:
    key = (example['objects']['bbox'].tobytes(), example['objects']['label'].tobytes())
    image = rendered.pop(key)
    # JPEG (quality 95) error only (~3/255 mean absolute error).
    assert np.abs(example['image'].astype(np.float32) - image).mean() < 6.0


def test_segmentation_builder_serves_the_rendered_class_maps(tmp_path):
  builder, examples, rendering = _prepare('procedural_shapes_segmentation', tmp_path, seed=3)
  assert builder.info.features['segmentation_mask'].shape == (48, 48, 1)
  rendered = {class_map.tobytes(): image
              for image, class_map in zip(rendering.images, rendering.class_map)}
  for example in examples:
    image = rendered.pop(example['segmentation_mask'][..., 0].tobytes())  # PNG: exact
    assert np.abs(example['image'].astype(np.float32) - image).mean() < 6.0
  assert not rendered


def test_scene_config_names_encode_size_resolution_seed_and_other_shapes(tmp_path):
  default = procedural_shapes.make_scene_builder_config()
  assert default.name == 'train5000_test1000_res128_seed0'
  # TFDS takes a config named like the predefined one only if it is that object.
  assert procedural_shapes.make_scene_builder_config(num_train_examples=5_000) is default
  assert procedural_shapes.ProceduralShapesDetection.BUILDER_CONFIGS == [default]
  config = procedural_shapes.make_scene_builder_config(50, 20, 64, 7, shapes_version='1.2.0')
  assert config.name == 'train50_test20_res64_seed7_shapes1.2.0'
  builder = tfds.builder('procedural_shapes_detection', config=config, data_dir=str(tmp_path))
  assert builder.info.features['objects']['label'].num_classes == 10
