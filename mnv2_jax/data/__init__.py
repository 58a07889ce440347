"""Data API: TFDS image classification datasets for training and evaluation.

  config = get_data_config(dataset='imagenet2012', resolution=224)
  validate_data_config(config, num_devices, process_count)  # cheap checks
  info = get_dataset_info(config)   # num_classes, num_{train,eval}_examples
  train = create_train_iterator(config, seed=0, start_step=step,
                                process_index=i, process_count=n)
  for batch in create_eval_iterator(config, process_index=i, process_count=n):
    ...  # batch['image'], batch['label'], batch['mask']

Importing this package registers the built-in TFDS builders
('procedural_shapes', 'procedural_shapes_detection' and
'procedural_shapes_segmentation'; see procedural_shapes.py), the PASCAL VOC
2012 (+ SBD) reader 'voc_segmentation' (voc_segmentation.py) and hides
GPUs/TPUs from TensorFlow, which only runs the input pipeline on the CPU, so it
never claims accelerator memory from JAX.
"""

import tensorflow as tf

for _device_type in ('GPU', 'TPU'):
  try:
    tf.config.set_visible_devices([], _device_type)
  except (RuntimeError, ValueError):
    # RuntimeError: TF already initialised its devices (nothing to hide any
    # more); ValueError: this TF build does not know the device type.
    pass

# pylint: disable=g-import-not-at-top,wrong-import-position
from mnv2_jax.data import procedural_shapes  # registers the built-in builders
from mnv2_jax.data import voc_segmentation  # registers 'voc_segmentation' (manual download)
from mnv2_jax.data.config import get_data_config
from mnv2_jax.data.datasets import DatasetInfo
from mnv2_jax.data.datasets import get_dataset_info
from mnv2_jax.data.datasets import needs_preparing
from mnv2_jax.data.datasets import validate_data_config
from mnv2_jax.data.input_pipeline import create_eval_iterator
from mnv2_jax.data.input_pipeline import create_train_iterator

__all__ = [
    'DatasetInfo',
    'create_eval_iterator',
    'create_train_iterator',
    'get_data_config',
    'get_dataset_info',
    'needs_preparing',
    'validate_data_config',
]
