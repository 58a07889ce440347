"""The built-in procedural_shapes dataset: deterministic, balanced, any size, two versions."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnv2_jax import data  # registers the builder
from mnv2_jax.data import procedural_shapes
from mnv2_jax.data import scenes


def _render(num_examples, resolution, seed, split='train', version=procedural_shapes.LATEST_VERSION):
  chunks = list(procedural_shapes.render_split(num_examples, resolution, seed,
                                               split, version))
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


@pytest.mark.parametrize('version, num_classes', [('1.2.0', 10), ('2.0.0', 20)])
def test_classes_are_balanced_in_every_version(version, num_classes):
  assert len(procedural_shapes.class_names(version)) == num_classes
  _, labels = _render(num_classes * 15, 32, seed=0, version=version)
  np.testing.assert_array_equal(np.bincount(labels, minlength=num_classes), 15)


# Per-image mean pixel values of the first training images at 32 px (seed 0) of each version,
# as each version first rendered them (1.2.0's before 2.0.0 existed): published results were
# measured on these images. A tolerance rather than a hash, because NumPy's vectorised
# sin/exp may round differently on another processor.
RENDERED_MEANS = {
    '1.2.0': [82.69, 148.58, 182.13, 143.71, 133.5, 136.64, 79.59, 119.24, 157.7, 176.5],
    '2.0.0': [85.6, 158.02, 151.51, 158.01, 153.7, 148.33, 109.41, 127.66, 171.33, 185.5,
              139.04, 164.11, 200.31, 111.88, 129.36, 158.33, 147.61, 89.76, 102.55, 77.66],
}


@pytest.mark.parametrize('version', sorted(RENDERED_MEANS))
def test_every_version_still_renders_its_original_images(version):
  expected = RENDERED_MEANS[version]
  images, _ = _render(len(expected), 32, seed=0, version=version)
  np.testing.assert_allclose(images.reshape(len(expected), -1).mean(axis=1), expected,
                             atol=0.05)


def test_each_fine_class_is_a_twin_of_a_1_2_0_shape_that_differs_only_inside_it():
  fine = procedural_shapes.FINE_CLASS_NAMES
  assert fine[0::2] == procedural_shapes.CLASS_NAMES
  assert all(twin != shape for shape, twin in zip(fine[0::2], fine[1::2]))
  # Same scene (same random state) with the shape and with its twin: same background,
  # same object frame; the twin's pixels differ, but only within the object's radius.
  resolution = 128
  scale, centre = 0.8, np.zeros((1, 2))
  x, y = np.meshgrid(np.arange(resolution) + 0.5, np.arange(resolution) + 0.5)
  radius = np.hypot(x - resolution / 2, y - resolution / 2) / (resolution / 2) / scale
  spec = scenes.version_spec('2.0.0')
  for shape in range(len(procedural_shapes.CLASS_NAMES)):
    coarse, twin = (scenes.object_coverage(
        np.array([label]), resolution, centre, np.zeros(1), np.array([scale]), spec)[0]
        for label in (2 * shape, 2 * shape + 1))
    differs = np.abs(coarse - twin) > 0.5
    assert differs.sum() > 20, fine[2 * shape + 1]
    assert radius[differs].max() <= 1.0, fine[2 * shape + 1]


def test_a_lower_resolution_sees_the_same_object_through_larger_pixels():
  # 2.0.0's coverage of a pixel is the share of its area inside the object, so the object
  # at 32 px is exactly the one at 128 px averaged over 4x4 blocks: resolutions differ in
  # how much detail they resolve, not in what they show.
  spec = scenes.version_spec('2.0.0')
  labels = np.arange(20)
  rng = np.random.default_rng(0)
  frame = dict(centre=rng.uniform(-0.2, 0.2, (20, 2)), angle=rng.uniform(0, 6.3, 20),
               scale=rng.uniform(0.35, 0.8, 20))
  fine = scenes.object_coverage(labels, 128, spec=spec, **frame)
  coarse = scenes.object_coverage(labels, 32, spec=spec, **frame)
  np.testing.assert_allclose(coarse, fine.reshape(20, 32, 4, 32, 4).mean(axis=(2, 4)),
                             atol=1e-6)


def test_an_unknown_version_is_an_error_naming_the_versions():
  with pytest.raises(ValueError, match='1.2.0, 2.0.0'):
    procedural_shapes.make_builder_config(version='1.1.0')


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
  assert builder.info.features['label'].num_classes == 20
  examples = list(tfds.as_numpy(builder.as_dataset(split='test')))
  labels = np.array([example['label'] for example in examples])
  np.testing.assert_array_equal(np.bincount(labels, minlength=20), 1)
  # The stored images are the rendered ones up to JPEG (quality 95) error
  # (~3/255 mean absolute error; different images differ by ~50/255).
  rendered, rendered_labels = _render(20, 32, seed=1, split='test')
  stored = {int(label): [] for label in range(20)}
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
  directory = data_dir / 'procedural_shapes' / config.name / procedural_shapes.LATEST_VERSION
  assert out.splitlines() == [f'rendering procedural_shapes: 30 train + 20 test images at 32 px '
                              f'into {directory} (about 1 s)']
  assert 'rendering procedural_shapes: 100%' in err and '50/50' in err
  # Nothing is downloaded, and a size other than the default one is no cause for a warning.
  everything = out + err + caplog.text
  for tfds_wording in ('Downloading', 'Unknown size', 'downloaded and prepared',
                       'custom data configuration', 'has no dataset_info.json'):
    assert tfds_wording not in everything
  assert builder.info.splits['train'].num_examples == 30


def test_an_older_version_is_rendered_into_its_own_version_folder(tmp_path):
  for version, num_classes in (('1.2.0', 10), ('2.0.0', 20)):
    data_config = data.get_data_config(
        data_dir=str(tmp_path), resolution=32, num_train_examples=20, num_test_examples=20,
        dataset_version=version)
    assert data.get_dataset_info(data_config).num_classes == num_classes
    assert (tmp_path / 'procedural_shapes' / 'train20_test20_res32_seed0' / version /
            'dataset_info.json').exists()


def test_render_time_estimate_grows_with_images_and_pixels_above_64_px():
  assert procedural_shapes.estimated_render_seconds(10_000, 48) == pytest.approx(30)
  assert procedural_shapes.estimated_render_seconds(10_000, 64) == pytest.approx(30)
  assert procedural_shapes.estimated_render_seconds(10_000, 128) == pytest.approx(120)
