"""The built-in procedural_shapes dataset: deterministic, balanced, any size."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnv2_jax import data  # registers the builder
from mnv2_jax.data import procedural_shapes


def _render(num_examples, resolution, seed, split='train'):
  chunks = list(procedural_shapes.render_split(num_examples, resolution, seed,
                                               split))
  return (np.concatenate([images for images, _ in chunks]),
          np.concatenate([labels for _, labels in chunks]))


def test_same_seed_renders_identical_images():
  images_a, labels_a = _render(40, 32, seed=3)
  images_b, labels_b = _render(40, 32, seed=3)
  np.testing.assert_array_equal(images_a, images_b)
  np.testing.assert_array_equal(labels_a, labels_b)


def test_different_seed_or_split_renders_different_images():
  images, _ = _render(20, 32, seed=3)
  other_seed, _ = _render(20, 32, seed=4)
  other_split, _ = _render(20, 32, seed=3, split='test')
  assert not np.array_equal(images, other_seed)
  assert not np.array_equal(images, other_split)


def test_images_are_uint8_rgb_at_the_render_resolution():
  for resolution in (32, 48):
    images, _ = _render(12, resolution, seed=0)
    assert images.shape == (12, resolution, resolution, 3)
    assert images.dtype == np.uint8
    # Not blank: backgrounds, objects and noise span a wide range of values.
    assert images.std() > 20


def test_classes_are_balanced():
  _, labels = _render(300, 32, seed=0)
  counts = np.bincount(labels, minlength=procedural_shapes.NUM_CLASSES)
  assert procedural_shapes.NUM_CLASSES >= 10
  np.testing.assert_array_equal(counts, 30)


def test_render_resolution_below_32_is_an_error():
  with pytest.raises(ValueError, match='>= 32'):
    _render(2, 31, seed=0)


def test_builder_config_name_encodes_size_resolution_and_seed():
  config = procedural_shapes.make_builder_config(
      num_train_examples=50, num_test_examples=20, render_resolution=40, seed=7)
  assert config.name == 'train50_test20_res40_seed7'


def test_prepared_builder_serves_balanced_deterministic_splits(tmp_path):
  config = procedural_shapes.make_builder_config(
      num_train_examples=30, num_test_examples=20, render_resolution=32, seed=1)
  builder = tfds.builder('procedural_shapes', config=config,
                         data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits['train'].num_examples == 30
  assert builder.info.splits['test'].num_examples == 20
  assert builder.info.features['label'].num_classes == 10
  examples = list(tfds.as_numpy(builder.as_dataset(split='test')))
  labels = np.array([example['label'] for example in examples])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), 2)
  # The stored images are the rendered ones up to JPEG (quality 95) error
  # (~3/255 mean absolute error; different images differ by ~50/255).
  rendered, rendered_labels = _render(20, 32, seed=1, split='test')
  stored = {int(label): [] for label in range(10)}
  for example in examples:
    stored[int(example['label'])].append(example['image'].astype(np.float32))
  for image, label in zip(rendered, rendered_labels):
    errors = [np.abs(candidate - image).mean()
              for candidate in stored[int(label)]]
    assert min(errors) < 6.0  # Mean absolute error in 0..255 units.


def test_rendering_says_what_it_does_in_one_line_and_a_progress_bar(tmp_path, capsys, caplog):
  data_dir = tmp_path / 'tfds'
  config = procedural_shapes.make_builder_config(
      num_train_examples=30, num_test_examples=20, render_resolution=32, seed=2)
  builder = tfds.builder('procedural_shapes', config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  out, err = capsys.readouterr()
  directory = data_dir / 'procedural_shapes' / config.name / '1.2.0'
  assert out.splitlines() == [f'rendering procedural_shapes: 30 train + 20 test images at 32 px '
                              f'into {directory} (about 1 s)']
  assert 'rendering procedural_shapes: 100%' in err and '50/50' in err
  # Nothing is downloaded, and a size other than the default one is no cause for a warning.
  everything = out + err + caplog.text
  for tfds_wording in ('Downloading', 'Unknown size', 'downloaded and prepared',
                       'custom data configuration', 'has no dataset_info.json'):
    assert tfds_wording not in everything
  assert builder.info.splits['train'].num_examples == 30


def test_render_time_estimate_grows_with_images_and_pixels_above_64_px():
  assert procedural_shapes.estimated_render_seconds(10_000, 48) == pytest.approx(30)
  assert procedural_shapes.estimated_render_seconds(10_000, 64) == pytest.approx(30)
  assert procedural_shapes.estimated_render_seconds(10_000, 128) == pytest.approx(120)
