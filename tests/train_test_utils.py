"""Helpers shared by the training-loop tests: a tiny config and pretrained variables."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from mnv2_jax.train import state as state_lib

# A few hundred images are enough for the loop; rendering them takes a second.
TINY_SHAPES = dict(num_train_examples=256, num_test_examples=64)


def tiny_config(data_dir, *, num_steps: int) -> ml_collections.ConfigDict:
  """configs/default.py at width 0.35, 32 px, batch 16 (2 per fake device)."""
  config = default.get_config('width=0.35,res=32,batch=16')
  with config.unlocked():
    config.train.num_steps = num_steps
    config.train.eval_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.train.log_every_steps = 1
    config.train.keep_checkpoints = 2
    config.data.eval_batch_size = 16
    config.data.data_dir = data_dir
    config.data.update(TINY_SHAPES)
  return config


@pytest.fixture(scope='module')
def shapes_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def init_variables(config, num_classes: int, seed: int = 0) -> dict:
  model = state_lib.create_model(config, num_classes)
  resolution = config.data.resolution
  variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, resolution, resolution, 3)),
                                             train=False))(jax.random.key(seed))
  return jax.tree.map(np.asarray, dict(variables))


def count_params(config, num_classes: int) -> int:
  model = state_lib.create_model(config, num_classes)
  resolution = config.data.resolution
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, resolution, resolution, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def model_config(config, num_classes: int) -> dict:
  return dict(name=config.model.name, width_multiplier=config.model.width_multiplier,
              expansion_ratio=config.model.expansion_ratio, num_classes=num_classes,
              resolution=config.data.resolution, source='tests')
