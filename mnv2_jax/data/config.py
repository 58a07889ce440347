"""The data section of the experiment config (`config.data`).

`get_data_config(**overrides)` returns the defaults below with `overrides`
applied; the training config (configs/*.py) stores it as `config.data`, so
every field can be set from the command line as `--config.data.<field>=...`.
Fields that default to None are typed placeholders, so they can be set from
the command line too.

  dataset              TFDS name ('procedural_shapes', the built-in dataset;
                       'imagenet2012', 'imagenette', 'cifar10', ...) or
                       'image_folder' (then `image_folder` is the directory).
  data_dir             TFDS data directory; None: TFDS's default
                       ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  train_split          split (or TFDS slice, e.g. 'train[:90%]') to train on.
  eval_split           split to evaluate on; None: 'validation' for
                       imagenet2012, otherwise 'test' if the dataset has it,
                       else 'validation'.
  resolution           side of the square network input (>= 32).
  batch_size           GLOBAL training batch (over all processes and devices).
  eval_batch_size      GLOBAL eval batch; None: batch_size.
  color_jitter         brightness (32/255) and saturation (0.5-1.5) jitter in
                       the train preprocessing.
  min_crop_area        smallest area fraction of the random train crop (the
                       recipe's Inception crop: 0.05).
  shuffle_buffer_size  examples in the shuffle buffer (after the file-level
                       shuffle); encoded images, so ~110 kB each on ImageNet.
  cache                keep the (still encoded) examples in memory after the
                       first epoch; for datasets that fit (the built-in one,
                       cifar10, imagenette), not for ImageNet.
  image_folder         directory <image_folder>/<split>/<class>/<image> read by
                       `tfds.folder_dataset.ImageFolder` (dataset='image_folder').
Built-in datasets (`procedural_shapes`, and its multi-object scenes
`procedural_shapes_detection` / `procedural_shapes_segmentation`) knobs, see
procedural_shapes.py:
  num_train_examples, num_test_examples, dataset_seed;
  dataset_version      '2.0.0' (20 classes with fine detail) or '1.2.0' (10
                       coarse classes); None: the newest. Configs pin it.
                       For the scene datasets: the shapes they draw.
  render_resolution    side the images are rendered at; None: `resolution`
                       (the random crop then samples from full-detail images).
"""

import ml_collections
from ml_collections import config_dict


def get_data_config(**overrides) -> ml_collections.ConfigDict:
  """Default data config with `overrides` (field=value) applied."""
  config = ml_collections.ConfigDict()
  config.dataset = 'procedural_shapes'
  config.data_dir = config_dict.placeholder(str)
  config.train_split = 'train'
  config.eval_split = config_dict.placeholder(str)
  config.resolution = 64
  config.batch_size = 128
  config.eval_batch_size = config_dict.placeholder(int)
  config.color_jitter = True
  config.min_crop_area = 0.05
  config.shuffle_buffer_size = 10_000
  config.cache = False
  config.image_folder = config_dict.placeholder(str)
  # The built-in dataset.
  config.num_train_examples = 10_000
  config.num_test_examples = 2_000
  config.render_resolution = config_dict.placeholder(int)
  config.dataset_seed = 0
  config.dataset_version = config_dict.placeholder(str)

  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise ValueError(f'Unknown data config field(s) {unknown}; the fields are '
                     f'{sorted(config.keys())}.')
  for name, value in overrides.items():
    config[name] = value
  return config
