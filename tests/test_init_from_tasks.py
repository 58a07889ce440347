"""config.init_from for every task: a pretrained classifier starts a detector's or segmenter's backbone.

The paper's detection and segmentation models start from ImageNet classifiers
(Sections 6.2 and 6.3); `config.init_from` names such a classifier's pretrained
directory for any task, and the loop puts its weights where the task's
`init_from_target()` says.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import deeplab_default, ssdlite_default
from mnv2_jax import tasks
from mnv2_jax.train import loop
from mnv2_jax.train import optimizer as optimizer_lib
from mnv2_jax.train import state as state_lib
import train_test_utils as utils

WIDTH = 0.35


def _detection_config(resolution=64):
  config = ssdlite_default.get_config(f'width={WIDTH},res={resolution},batch=16,steps=1')
  with config.unlocked():
    config.data.update(num_train_examples=32, num_test_examples=16, eval_batch_size=16)
    config.train.update(eval_every_steps=1, checkpoint_every_steps=1, log_every_steps=1)
  return config


def _segmentation_config():
  config = deeplab_default.get_config('res=64,batch=16')
  with config.unlocked():
    config.model.width_multiplier = WIDTH
  return config


def _started_state(config, directory):
  """The step-0 state `train_and_evaluate` builds from config.init_from = directory."""
  task = tasks.get_task(config)
  model = task.create_model(11, batch_norm_axis_name='batch')
  tx = optimizer_lib.create_optimizer(config, 10, lambda step: 0.1)
  resolution = config.data.resolution
  fresh_fn = lambda: state_lib.create_train_state(jax.random.key(0), model, tx,
                                                  (1, resolution, resolution, 3))
  abstract = jax.eval_shape(fresh_fn)
  loaded, model_config = loop._load_pretrained(str(directory), abstract, 11,
                                               task.init_from_target())
  state = loop._pretrained_state(str(directory), loaded, model_config, abstract, fresh_fn, 11)
  return state, traverse_util.flatten_dict(jax.device_get(fresh_fn().params))


def test_the_backbone_takes_the_classifiers_weights_and_the_heads_start_fresh(tmp_path):
  # DeepLab's backbone lacks the classifier's last conv too; a detector's backbone is
  # checked after training in tests/test_detection_task.py (the same loading path).
  classifier = utils.save_random_classifier(tmp_path / 'pretrained')
  state, fresh = _started_state(_segmentation_config(), tmp_path / 'pretrained')
  params = traverse_util.flatten_dict(state.params)
  backbone = {path[1:]: value for path, value in params.items() if path[0] == 'backbone'}
  assert backbone and set(backbone) < set(classifier)  # the classifier layer is left out
  assert not any(path[0] == 'classifier' for path in backbone)
  for path, value in backbone.items():
    np.testing.assert_array_equal(value, classifier[path])
  heads = [path for path in params if path[0] != 'backbone']
  assert heads
  for path in heads:
    np.testing.assert_array_equal(params[path], fresh[path])
  jax.tree.map(np.testing.assert_array_equal, state.ema_params, state.params)  # EMA starts equal


def _refusal(config, directory):
  with config.unlocked():
    config.init_from = str(directory)
  task = tasks.get_task(config)
  loop.validate_config(config)  # init_from is a valid field for every task
  with pytest.raises(ValueError) as error:
    loop._check_init_from(config, task.init_from_target(), 11)
  assert '\n' not in str(error.value)
  return str(error.value)


def test_a_classifier_of_another_width_is_refused_naming_the_field(tmp_path):
  utils.save_random_classifier(tmp_path / 'pretrained', width=0.5)
  assert 'width_multiplier: checkpoint has 0.5, config wants 0.35' in _refusal(
      _detection_config(), tmp_path / 'pretrained')


def test_a_mobilenet_v1_classifier_cannot_start_a_mobilenet_v2_backbone(tmp_path):
  utils.save_random_classifier(tmp_path / 'pretrained', name='mobilenet_v1')
  assert "name: checkpoint has 'mobilenet_v1', config wants 'mobilenet_v2'" in _refusal(
      _segmentation_config(), tmp_path / 'pretrained')
