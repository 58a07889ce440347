"""Data API: real pipeline code on TFDS mock data and a small built-in dataset."""

import collections
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import data
from mnv2_jax.data import input_pipeline
from mnv2_jax.data import preprocessing

NUM_TRAIN = 60
NUM_TEST = 37  # not a multiple of any batch below: the last batch is padded


@pytest.fixture(scope='module')
def shapes_config(tmp_path_factory):
  """The built-in dataset, small: real TFDS files, so splits can be sliced."""
  config = data.get_data_config(
      data_dir=str(tmp_path_factory.mktemp('tfds')), resolution=32,
      batch_size=8, eval_batch_size=6, num_train_examples=NUM_TRAIN,
      num_test_examples=NUM_TEST, shuffle_buffer_size=64)
  data.get_dataset_info(config)  # renders it once for the module
  return config


def _digest(array: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for batch_a, batch_b in zip(batches_a, batches_b):
    assert batch_a.keys() == batch_b.keys()
    for name in batch_a:
      np.testing.assert_array_equal(batch_a[name], batch_b[name])


# --- TFDS mock data (random images at random sizes) -------------------------


@pytest.mark.parametrize('dataset, num_classes',
                         [('imagenet2012', 1000), ('cifar10', 10)])
def test_mock_train_batches_are_float32_in_unit_range_with_valid_labels(
    dataset, num_classes):
  with tfds.testing.mock_data(num_examples=16):
    config = data.get_data_config(dataset=dataset, resolution=40,
                                  batch_size=8)
    data.validate_data_config(config, num_devices=8, process_count=1)
    info = data.get_dataset_info(config)
    batch = next(data.create_train_iterator(config, seed=0))
  assert info.num_classes == num_classes
  assert set(batch) == {'image', 'label'}
  assert batch['image'].shape == (8, 40, 40, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
  assert -1.0 <= batch['image'].min() < -0.5 and 0.5 < batch['image'].max() <= 1
  assert ((0 <= batch['label']) & (batch['label'] < num_classes)).all()


@pytest.mark.parametrize('dataset', ['imagenet2012', 'cifar10'])
def test_mock_eval_batches_have_fixed_size_and_boolean_mask(dataset):
  with tfds.testing.mock_data(num_examples=10):
    config = data.get_data_config(dataset=dataset, resolution=36,
                                  batch_size=8, eval_batch_size=4)
    batches = list(data.create_eval_iterator(config))
  assert len(batches) == 3  # 10 examples in batches of 4
  for batch in batches:
    assert batch['image'].shape == (4, 36, 36, 3)
    assert batch['image'].dtype == np.float32
    assert batch['label'].dtype == np.int32 and batch['mask'].dtype == bool
    assert -1.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  masks = np.concatenate([batch['mask'] for batch in batches])
  np.testing.assert_array_equal(masks, np.arange(12) < 10)
  np.testing.assert_array_equal(batches[-1]['image'][2:], 0.0)


def test_mock_imagenet2012_images_are_jpegs_of_varying_sizes():
  # So the fused decode-and-crop path is what the mock tests above exercise.
  with tfds.testing.mock_data(num_examples=6):
    builder = tfds.builder('imagenet2012')
    ds = builder.as_dataset(split='train',
                            decoders={'image': tfds.decode.SkipDecoding()})
    encoded = [example['image'] for example in ds]
  assert all(bool(tf.io.is_jpeg(image)) for image in encoded)
  sizes = {tuple(tf.image.extract_jpeg_shape(image).numpy()) for image in encoded}
  assert len(sizes) > 1


# --- Preprocessing ----------------------------------------------------------


def _bordered_image(size=64, border=4):
  """A green image with a red border of `border` pixels."""
  image = np.zeros((size, size, 3), np.uint8)
  image[..., 0] = 255
  image[border:size - border, border:size - border] = (0, 255, 0)
  return image


def test_eval_keeps_the_central_87_5_percent():
  image = _bordered_image(64, border=4)  # 87.5% of 64 is the 56 inside
  for raw in (tf.constant(image), tf.io.encode_png(image)):
    result = preprocessing.preprocess_for_eval(raw, resolution=56).numpy()
    np.testing.assert_allclose(result[..., 0], -1.0)
    np.testing.assert_allclose(result[..., 1], 1.0)


def test_fused_jpeg_crop_equals_decoding_then_cropping():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
  # Without chroma subsampling, so that no upsampling filter reads pixels
  # across the crop's edge: the two paths must then agree exactly.
  jpeg = tf.io.encode_jpeg(image, quality=95, chroma_downsampling=False)
  decoded = tf.io.decode_jpeg(jpeg, channels=3)
  for seed in range(5):
    seed = tf.constant([seed, 1], tf.int64)
    fused = preprocessing.preprocess_for_train(jpeg, seed, 48, True)
    unfused = preprocessing.preprocess_for_train(decoded, seed, 48, True)
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), atol=1e-6)


def test_random_crops_cover_5_to_100_percent_with_aspect_3_4_to_4_3():
  shape = tf.constant([400, 600], tf.int32)
  areas, aspects = [], []
  for seed in range(200):
    _, _, height, width = preprocessing.random_crop_window(
        shape, tf.constant([seed, 0], tf.int64)).numpy()
    areas.append(height * width / (400 * 600))
    aspects.append(width / height)
  areas, aspects = np.array(areas), np.array(aspects)
  assert areas.min() >= 0.05 - 0.01 and areas.max() <= 1.0
  assert areas.min() < 0.2 and areas.max() > 0.7  # the range is used
  assert aspects.min() >= 0.75 - 0.02 and aspects.max() <= 4 / 3 + 0.02


def test_train_preprocessing_is_a_function_of_the_seed():
  image = tf.io.encode_png(np.random.default_rng(1).integers(
      0, 256, (50, 70, 3), dtype=np.uint8))
  run = lambda seed: preprocessing.preprocess_for_train(
      image, tf.constant(seed, tf.int64), 32, True).numpy()
  np.testing.assert_array_equal(run([3, 4]), run([3, 4]))
  assert not np.array_equal(run([3, 4]), run([3, 5]))
  result = run([3, 4])
  assert result.shape == (32, 32, 3) and result.dtype == np.float32
  assert result.min() >= -1.0 and result.max() <= 1.0


# --- The built-in dataset through the pipeline --------------------------------


def test_dataset_info_counts_the_built_in_splits(shapes_config):
  info = data.get_dataset_info(shapes_config)
  assert info == data.DatasetInfo(num_classes=20, num_train_examples=NUM_TRAIN,  # 2.0.0's
                                  num_eval_examples=NUM_TEST)


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_eval_counts_every_example_exactly_once(shapes_config, process_count):
  reference = collections.Counter()
  for batch in data.create_eval_iterator(shapes_config):
    for image, label in zip(batch['image'][batch['mask']],
                            batch['label'][batch['mask']]):
      reference[(_digest(image), int(label))] += 1
  assert sum(reference.values()) == NUM_TEST and len(reference) == NUM_TEST

  seen = collections.Counter()
  num_batches = set()
  for process_index in range(process_count):
    batches = list(data.create_eval_iterator(
        shapes_config, process_index=process_index,
        process_count=process_count))
    num_batches.add(len(batches))
    for batch in batches:
      assert batch['image'].shape[0] == 6 // process_count
      for image, label in zip(batch['image'][batch['mask']],
                              batch['label'][batch['mask']]):
        seen[(_digest(image), int(label))] += 1
  assert len(num_batches) == 1  # multi-host eval steps need equal counts
  assert seen == reference


@pytest.mark.parametrize('process_count', [2, 3])
def test_process_splits_are_disjoint_and_cover_the_split(shapes_config,
                                                         process_count):
  builder = data.datasets.get_builder(shapes_config)
  read = lambda split: [
      bytes(example['image']) for example in tfds.as_numpy(builder.as_dataset(
          split=split, decoders={'image': tfds.decode.SkipDecoding()}))]
  whole = read('train')
  parts = [read(input_pipeline._process_split('train', index, process_count))
           for index in range(process_count)]
  assert sorted(sum(parts, [])) == sorted(whole)  # complete, no duplicates
  assert len(set(whole)) == NUM_TRAIN


def test_train_processes_read_disjoint_examples(shapes_config):
  # Without augmentation noise, labels alone cannot tell; compare the crops'
  # source by using the same seed: different parts give different batches.
  batches = [next(data.create_train_iterator(
      shapes_config, seed=0, process_index=index, process_count=2))
             for index in range(2)]
  for batch in batches:
    assert batch['image'].shape == (4, 32, 32, 3)
  assert not np.array_equal(batches[0]['image'], batches[1]['image'])


@pytest.mark.parametrize('process_count', [1, 2])
def test_resuming_at_step_k_equals_advancing_a_fresh_iterator_k_steps(
    shapes_config, process_count):
  # 60 examples / 8 per batch -> 7 steps per epoch (per process: 30 / 4 -> 7):
  # steps 5..10 cross the epoch boundary at step 7.
  kwargs = dict(seed=5, process_index=process_count - 1,
                process_count=process_count)
  fresh = _take(data.create_train_iterator(shapes_config, **kwargs), 11)
  for start_step in (5, 7, 9):
    resumed = _take(data.create_train_iterator(
        shapes_config, start_step=start_step, **kwargs), 11 - start_step)
    _assert_batches_equal(fresh[start_step:], resumed)


def test_train_iterator_is_deterministic_per_seed_and_reshuffles_per_epoch(
    shapes_config):
  first = _take(data.create_train_iterator(shapes_config, seed=1), 14)
  again = _take(data.create_train_iterator(shapes_config, seed=1), 14)
  other = _take(data.create_train_iterator(shapes_config, seed=2), 1)
  _assert_batches_equal(first, again)
  assert not np.array_equal(first[0]['image'], other[0]['image'])
  # Epoch 2 (steps 7..13) sees the examples in another order than epoch 1.
  epoch_1 = np.concatenate([batch['label'] for batch in first[:7]])
  epoch_2 = np.concatenate([batch['label'] for batch in first[7:]])
  assert not np.array_equal(epoch_1, epoch_2)


def test_cached_train_iterator_resumes_too(shapes_config):
  config = shapes_config.copy_and_resolve_references()
  config.cache = True
  fresh = _take(data.create_train_iterator(config, seed=0), 9)
  resumed = _take(data.create_train_iterator(config, seed=0, start_step=6), 3)
  _assert_batches_equal(fresh[6:], resumed)


def test_the_cache_keeps_the_built_in_jpegs_decoded_and_their_crops_are_unchanged(
    shapes_config, monkeypatch):
  config = shapes_config.copy_and_resolve_references()
  config.cache = True
  builder = data.datasets.get_builder(config)
  cached = lambda: input_pipeline._cached_part(builder, 'train', 0, 1, NUM_TRAIN)
  assert cached().element_spec['image'].dtype == tf.uint8
  decoded = _take(data.create_train_iterator(config, seed=3), 14)  # two epochs
  monkeypatch.setattr(input_pipeline, 'DECODED_CACHE_LIMIT_BYTES', 0)
  assert cached().element_spec['image'].dtype == tf.string
  encoded = _take(data.create_train_iterator(config, seed=3), 14)
  uncached = _take(data.create_train_iterator(shapes_config, seed=3), 14)
  _assert_batches_equal(decoded, encoded)  # slicing the decoded image == decode_and_crop_jpeg
  _assert_batches_equal(decoded, uncached)


def test_train_iterator_rejects_bad_arguments_when_created(shapes_config):
  with pytest.raises(ValueError, match='start_step'):
    data.create_train_iterator(shapes_config, seed=0, start_step=-1)
  config = shapes_config.copy_and_resolve_references()
  config.batch_size = 64  # more than the 60 training examples
  with pytest.raises(ValueError, match='fewer than one process batch'):
    data.create_train_iterator(config, seed=0)


# --- Image folders ----------------------------------------------------------


def test_image_folder_trains_and_evaluates(tmp_path):
  rng = np.random.default_rng(0)
  for split, count in (('train', 6), ('test', 3)):
    for name in ('cat', 'dog'):
      os.makedirs(tmp_path / split / name)
      for index in range(count):
        size = rng.integers(40, 90, 2)
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        tf.io.write_file(str(tmp_path / split / name / f'{index}.jpg'),
                         tf.io.encode_jpeg(image))
  config = data.get_data_config(dataset='image_folder',
                                image_folder=str(tmp_path), resolution=32,
                                batch_size=4, eval_batch_size=4)
  data.validate_data_config(config, num_devices=4, process_count=1)
  assert data.get_dataset_info(config) == data.DatasetInfo(2, 12, 6)
  batch = next(data.create_train_iterator(config, seed=0))
  assert batch['image'].shape == (4, 32, 32, 3)
  eval_batches = list(data.create_eval_iterator(config))
  assert sum(int(batch['mask'].sum()) for batch in eval_batches) == 6


# --- Config errors ----------------------------------------------------------


def _validate(num_devices=8, process_count=1, **overrides):
  data.validate_data_config(data.get_data_config(**overrides),
                            num_devices=num_devices,
                            process_count=process_count)


def test_default_config_is_valid():
  _validate()


def test_unknown_dataset_suggests_close_names():
  with pytest.raises(ValueError, match=r"'imagenet2021'.*'imagenet2012'.*"
                     r"tfds.list_builders\(\)"):
    _validate(dataset='imagenet2021')


def test_a_dataset_name_without_its_version_suggests_the_versioned_one_first():
  with pytest.raises(ValueError, match=r"data.dataset='imagenet'.*did you mean 'imagenet2012' "):
    _validate(dataset='imagenet')


def test_missing_imagenet_download_says_where_the_tar_files_go(tmp_path):
  manual_dir = os.path.join(str(tmp_path), 'downloads', 'manual')
  with pytest.raises(ValueError) as error:
    _validate(dataset='imagenet2012', data_dir=str(tmp_path))
  message = str(error.value)
  assert 'ILSVRC2012_img_train.tar' in message
  assert 'ILSVRC2012_img_val.tar' in message and manual_dir in message
  assert '\n' not in message


def test_dataset_without_image_and_label_features_is_rejected(tmp_path):
  with pytest.raises(ValueError, match='no image feature'):
    _validate(dataset='imdb_reviews', data_dir=str(tmp_path))


@pytest.mark.parametrize('resolution', [31, 16, 64.0, '64'])
def test_resolution_must_be_an_integer_of_at_least_32(resolution):
  config = data.get_data_config()
  config.resolution = 64
  with pytest.raises(ValueError, match='resolution'):
    config_dict = config.to_dict()
    config_dict['resolution'] = resolution
    data.validate_data_config(
        type(config)(config_dict), num_devices=1, process_count=1)


def test_batch_size_must_divide_over_devices_and_processes():
  with pytest.raises(ValueError, match='batch_size=12 .*device count \\(8\\)'):
    _validate(batch_size=12, num_devices=8)
  with pytest.raises(ValueError, match='eval_batch_size=100 .*device count'):
    _validate(eval_batch_size=100, num_devices=8)
  with pytest.raises(ValueError, match='process count \\(3\\)'):
    _validate(batch_size=128, num_devices=1, process_count=3)


def test_image_folder_must_exist(tmp_path):
  with pytest.raises(ValueError, match='is not a directory'):
    _validate(dataset='image_folder', image_folder=str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match='needs the directory'):
    _validate(dataset='image_folder')
  with pytest.raises(ValueError, match="no 'train' split directory"):
    _validate(dataset='image_folder', image_folder=str(tmp_path))


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError, match="eval_split='validation'.*has no split "
                     "validation \\(it has test, train\\)"):
    _validate(eval_split='validation')
  with pytest.raises(ValueError, match='train_split=.*has no split trian '):
    _validate(train_split='trian[:50%]')
  _validate(train_split='train[:90%]+test', eval_split='test[:10]')


def test_unknown_config_field_is_rejected():
  with pytest.raises(ValueError, match='Unknown data config field'):
    data.get_data_config(image_size=64)
