"""Which TFDS builder a data config names, its checks and its sizes.

Every dataset goes through a `tfds` builder: a catalogue dataset by name, the
built-in `procedural_shapes` (rendered on first use into `data_dir`), or an
image folder through `tfds.folder_dataset.ImageFolder`.
"""

import difflib
import functools
import os
import re
from typing import Callable, NamedTuple, Optional

import ml_collections
import tensorflow_datasets as tfds

from mnv2_jax.data import procedural_shapes

BUILT_IN_DATASET = 'procedural_shapes'
# The multi-object scenes of the same shapes, for detection and segmentation.
BUILT_IN_DETECTION_DATASET = 'procedural_shapes_detection'
BUILT_IN_SEGMENTATION_DATASET = 'procedural_shapes_segmentation'
BUILT_IN_DATASETS = (BUILT_IN_DATASET, BUILT_IN_DETECTION_DATASET, BUILT_IN_SEGMENTATION_DATASET)
IMAGE_FOLDER_DATASET = 'image_folder'
MIN_RESOLUTION = 32
IMAGENET_MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')

# `tfds.testing.mock_data` replaces `as_dataset` and serves random examples
# without any files; the "is it prepared / downloaded" checks then do not
# apply. Comparing with the original method is how we tell (read from the
# class __dict__: attribute access wraps it anew each time).
_ORIGINAL_AS_DATASET = tfds.core.DatasetBuilder.__dict__['as_dataset']


class DatasetInfo(NamedTuple):
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


def _tfds_mocked() -> bool:
  return (tfds.core.DatasetBuilder.__dict__['as_dataset'] is not
          _ORIGINAL_AS_DATASET)


def _base_name(dataset: str) -> str:
  """'imagenet2012_subset/1pct:5.0.0' -> 'imagenet2012_subset'."""
  return dataset.split(':')[0].split('/')[0]


def _tfds_data_dir(data_config) -> str:
  """The data directory tfds uses for `data_config.data_dir` (None: default)."""
  return os.path.expanduser(data_config.data_dir or
                            tfds.core.constants.DATA_DIR)


def _render_resolution(data_config) -> int:
  return data_config.render_resolution or data_config.resolution


def get_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `data_config` (not prepared: see `prepare`)."""
  if data_config.dataset == IMAGE_FOLDER_DATASET:
    return _image_folder_builder(data_config.image_folder)
  if data_config.dataset in (BUILT_IN_DETECTION_DATASET, BUILT_IN_SEGMENTATION_DATASET):
    return _built_in_scene_builder(
        data_config.dataset, data_config.num_train_examples, data_config.num_test_examples,
        _render_resolution(data_config), data_config.dataset_seed, data_config.data_dir,
        data_config.get('dataset_version'))
  if data_config.dataset == BUILT_IN_DATASET:
    return _built_in_builder(
        data_config.num_train_examples, data_config.num_test_examples,
        _render_resolution(data_config), data_config.dataset_seed,
        data_config.data_dir, data_config.get('dataset_version'))
  return tfds.builder(data_config.dataset, data_dir=data_config.data_dir)


@functools.lru_cache(maxsize=8)
def _built_in_builder(num_train_examples, num_test_examples, render_resolution,
                      seed, data_dir, version=None):
  config = procedural_shapes.make_builder_config(
      num_train_examples=num_train_examples,
      num_test_examples=num_test_examples,
      render_resolution=render_resolution, seed=seed,
      version=version or procedural_shapes.LATEST_VERSION)
  if procedural_shapes.ProceduralShapes.get_builder_config(config.name, config.version):
    # tfds refuses a custom config named like a predefined one.
    return tfds.builder(f'{BUILT_IN_DATASET}/{config.name}:{config.version}', data_dir=data_dir)
  return tfds.builder(BUILT_IN_DATASET, config=config, data_dir=data_dir)


@functools.lru_cache(maxsize=8)
def _built_in_scene_builder(dataset, num_train_examples, num_test_examples, render_resolution,
                            seed, data_dir, shapes_version=None):
  """The detection or segmentation scenes; data.dataset_version picks the shapes drawn."""
  config = procedural_shapes.make_scene_builder_config(
      num_train_examples=num_train_examples, num_test_examples=num_test_examples,
      render_resolution=render_resolution, seed=seed,
      shapes_version=shapes_version or procedural_shapes.SCENE_SHAPES_VERSION)
  builder_class = tfds.builder_cls(dataset)
  if builder_class.get_builder_config(config.name, config.version):
    return tfds.builder(f'{dataset}/{config.name}:{config.version}', data_dir=data_dir)
  return tfds.builder(dataset, config=config, data_dir=data_dir)


@functools.lru_cache(maxsize=8)
def _image_folder_builder(root_dir: str):
  return tfds.folder_dataset.ImageFolder(os.path.expanduser(root_dir))


def _needs_preparing(builder: tfds.core.DatasetBuilder) -> bool:
  return not (is_image_folder(builder) or _tfds_mocked() or builder.is_prepared())


def prepare(builder: tfds.core.DatasetBuilder) -> None:
  """Renders the built-in dataset (or prepares a manual-download one) once."""
  if _needs_preparing(builder):
    builder.download_and_prepare()


def needs_preparing(data_config: ml_collections.ConfigDict) -> bool:
  """Whether `get_dataset_info` will first prepare the dataset (render, download, extract)."""
  return _needs_preparing(get_builder(data_config))


def resolve_eval_split(data_config, builder=None) -> str:
  """`eval_split`, or the dataset's held-out split when it is None."""
  if data_config.eval_split:
    return data_config.eval_split
  if _base_name(data_config.dataset) == 'imagenet2012':
    return 'validation'
  if data_config.dataset in BUILT_IN_DATASETS:
    return 'test'
  builder = builder or get_builder(data_config)
  splits = set(builder.info.splits.keys())
  if 'test' in splits or not splits:
    return 'test'
  return 'validation'


def is_image_folder(builder: tfds.core.DatasetBuilder) -> bool:
  return isinstance(builder, tfds.folder_dataset.ImageFolder)


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
  """Examples in `split` (a TFDS split or slice) of a prepared builder."""
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  # Mocked builders have no split metadata; their datasets know their size.
  return int(builder.as_dataset(split=split).cardinality())


def get_dataset_info(data_config: ml_collections.ConfigDict,
                     num_classes_fn: Optional[Callable] = None) -> DatasetInfo:
  """Number of classes and of train/eval examples (prepares the dataset).

  `num_classes_fn(builder)` counts the classes (a task's `num_classes`); the
  default reads the 'label' feature of a classification dataset.
  """
  builder = get_builder(data_config)
  prepare(builder)
  return DatasetInfo(
      num_classes=(builder.info.features['label'].num_classes if num_classes_fn is None
                   else num_classes_fn(builder)),
      num_train_examples=num_examples(builder, data_config.train_split),
      num_eval_examples=num_examples(
          builder, resolve_eval_split(data_config, builder)))


def _check_positive_int(name: str, value, *divisors: tuple[str, int]) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f'data.{name}={value!r} must be a positive integer; set '
                     f'--config.data.{name}=<int>.')
  for what, divisor in divisors:
    if value % divisor:
      raise ValueError(
          f'data.{name}={value} is not divisible by the {what} ({divisor}); '
          f'use a multiple of {divisor}, e.g. '
          f'--config.data.{name}={max(divisor, value // divisor * divisor)}.')


def similar_dataset_names(name: str, known: list[str]) -> list[str]:
  """Up to three of `known` that `name` may mean, the likeliest first.

  A name that a known one extends by a version number comes first
  ('imagenet' -> 'imagenet2012', 'cifar' -> 'cifar10'), then the closest by
  spelling (which would rank 'imagenette' above 'imagenet2012').
  """
  versioned = sorted((other for other in known
                      if other.startswith(name) and other[len(name):].isdigit()), key=len)
  close = difflib.get_close_matches(name, known, n=3)
  return list(dict.fromkeys(versioned + close))[:3]


def _check_known_dataset(dataset: str) -> None:
  if dataset in BUILT_IN_DATASETS + (IMAGE_FOLDER_DATASET,):
    return
  known = tfds.list_builders(with_community_datasets=False)
  if _base_name(dataset) in known:
    return
  close = similar_dataset_names(_base_name(dataset), known + [BUILT_IN_DATASET])
  hint = f'did you mean {" or ".join(map(repr, close))}? ' if close else ''
  raise ValueError(
      f'data.dataset={dataset!r} is not a known dataset: {hint}Set '
      f'--config.data.dataset to a TFDS name (see `tfds.list_builders()`), '
      f'{BUILT_IN_DATASET!r} (built in) or {IMAGE_FOLDER_DATASET!r} with '
      f'data.image_folder.')


def _check_image_folder(data_config) -> None:
  folder = data_config.image_folder
  if data_config.dataset != IMAGE_FOLDER_DATASET:
    if folder:
      raise ValueError(
          f'data.image_folder={folder!r} is only read with '
          f'data.dataset={IMAGE_FOLDER_DATASET!r} (it is '
          f'{data_config.dataset!r}); set --config.data.dataset='
          f'{IMAGE_FOLDER_DATASET}.')
    return
  if not folder:
    raise ValueError(f'data.dataset={IMAGE_FOLDER_DATASET!r} needs the '
                     f'directory: set --config.data.image_folder=<dir> '
                     f'(<dir>/<split>/<class>/<image>).')
  if not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(f'data.image_folder={folder!r} is not a directory; point '
                     f'it at <dir> laid out as <dir>/<split>/<class>/<image>.')
  splits = [entry for entry in os.listdir(os.path.expanduser(folder))
            if os.path.isdir(os.path.join(os.path.expanduser(folder), entry))]
  for split in (data_config.train_split,
                resolve_eval_split(data_config,
                                   _image_folder_builder(folder))):
    if _base_name(split.split('[')[0]) not in splits:
      raise ValueError(
          f'data.image_folder={folder!r} has no {split!r} split directory '
          f'(found {sorted(splits)}); lay it out as <dir>/<split>/<class>/'
          f'<image> or set data.train_split / data.eval_split.')


def _check_manual_download(data_config, builder) -> None:
  """A manual-download dataset must be prepared or have its files in place."""
  if _tfds_mocked() or builder.is_prepared():
    return
  if not getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None):
    return
  manual_dir = os.path.join(_tfds_data_dir(data_config), 'downloads',
                            'manual')
  if _base_name(data_config.dataset) == 'imagenet2012':
    missing = [name for name in IMAGENET_MANUAL_FILES
               if not os.path.exists(os.path.join(manual_dir, name))]
    if missing:
      raise ValueError(
          f'imagenet2012 is not prepared in {_tfds_data_dir(data_config)} and '
          f'its manual download is missing ({", ".join(missing)}): put '
          f'{" and ".join(IMAGENET_MANUAL_FILES)} into {manual_dir}/ (or set '
          f'data.data_dir to a directory with a prepared imagenet2012).')
  elif not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    # A builder of this package names its files itself (it has no TFDS page).
    files = getattr(builder, 'MANUAL_DIR_CONTENTS', 'the files its TFDS page lists')
    raise ValueError(
        f'{data_config.dataset} needs a manual download that is not in '
        f'{manual_dir}/: put {files} there (or set '
        f'data.data_dir to a directory where it is prepared).')


def check_classification_features(data_config, builder) -> None:
  """An 'image' and a ClassLabel 'label' feature, or one ValueError line."""
  features = builder.info.features
  missing = [name for name in ('image', 'label')
             if name not in getattr(features, 'keys', lambda: ())()]
  if missing:
    raise ValueError(
        f'Dataset {data_config.dataset!r} has no {" or ".join(missing)} '
        f'feature (it has {sorted(features.keys())}); use an image '
        f'classification dataset with "image" and "label" features (or set '
        f'config.task for detection or segmentation data).')
  if not isinstance(features['label'], tfds.features.ClassLabel):
    raise ValueError(
        f'Dataset {data_config.dataset!r}: "label" is not a ClassLabel '
        f'feature; use an image classification dataset.')


def _split_names(split: str) -> set[str]:
  """'train[:90%]+validation' -> {'train', 'validation'}."""
  return {re.sub(r'\[.*\]', '', part).strip() for part in split.split('+')}


def _check_splits(data_config, builder) -> None:
  """Train/eval splits must exist (checked where the split list is known)."""
  if data_config.dataset in BUILT_IN_DATASETS:
    available = {'train', 'test'}
  elif (_tfds_mocked() or is_image_folder(builder) or
        not builder.info.splits):
    return
  else:
    available = set(builder.info.splits.keys())
  for field in ('train_split', 'eval_split'):
    split = (data_config.train_split if field == 'train_split' else
             resolve_eval_split(data_config, builder))
    missing = _split_names(split) - available
    if missing:
      raise ValueError(
          f'data.{field}={split!r}: {data_config.dataset!r} has no split '
          f'{", ".join(sorted(missing))} (it has {", ".join(sorted(available))}'
          f'); set --config.data.{field} to one of them.')


def validate_data_config(data_config: ml_collections.ConfigDict,
                         num_devices: int, process_count: int,
                         check_dataset: Optional[Callable] = None) -> None:
  """Raises a one-line ValueError (problem and fix) for a bad data config.

  `check_dataset(builder)` checks the dataset's features (a task's
  `check_dataset`); the default wants a classification dataset. Cheap: reads
  at most dataset metadata, never renders or compiles anything.
  """
  resolution = data_config.resolution
  if (isinstance(resolution, bool) or not isinstance(resolution, int) or
      resolution < MIN_RESOLUTION):
    raise ValueError(
        f'data.resolution={resolution!r} must be an integer >= '
        f'{MIN_RESOLUTION}; set --config.data.resolution to e.g. 96..224 '
        f'(or 32..64 on CPU).')
  if not 0 < data_config.min_crop_area <= 1:
    raise ValueError(
        f'data.min_crop_area={data_config.min_crop_area!r} must be in (0, 1]; '
        f'the recipe uses 0.05.')
  if data_config.render_resolution is not None:
    _check_positive_int('render_resolution', data_config.render_resolution)
    if data_config.render_resolution < MIN_RESOLUTION:
      raise ValueError(
          f'data.render_resolution={data_config.render_resolution} must be >= '
          f'{MIN_RESOLUTION}; raise it or leave it None (= resolution).')
  divisors = [('device count', num_devices), ('process count', process_count)]
  _check_positive_int('batch_size', data_config.batch_size, *divisors)
  if data_config.eval_batch_size is not None:
    _check_positive_int('eval_batch_size', data_config.eval_batch_size,
                        *divisors)
  _check_positive_int('shuffle_buffer_size', data_config.shuffle_buffer_size)
  if data_config.dataset in BUILT_IN_DATASETS:
    _check_positive_int('num_train_examples', data_config.num_train_examples)
    _check_positive_int('num_test_examples', data_config.num_test_examples)
    version = data_config.get('dataset_version')
    if version is not None and str(version) not in procedural_shapes.VERSIONS:
      raise ValueError(
          f'data.dataset_version={version!r} is not a version of {BUILT_IN_DATASET}\'s '
          f'shapes (which {data_config.dataset} draws); set '
          f'--config.data.dataset_version to one of {", ".join(procedural_shapes.VERSIONS)} '
          f'(or leave it unset for the newest).')
  _check_image_folder(data_config)
  _check_known_dataset(data_config.dataset)
  builder = get_builder(data_config)
  if check_dataset is None:
    check_classification_features(data_config, builder)
  else:
    check_dataset(builder)
  _check_manual_download(data_config, builder)
  _check_splits(data_config, builder)
