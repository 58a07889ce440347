"""A tiny network and config for the training tests (compiles in seconds on CPU).

The train step only sees `apply_fn`, so a two-conv network with the real
MobileNetV2 building blocks (SAME conv, BN with an optional device axis,
depthwise conv, dropout, classifier) exercises the same code paths as the full
model at a fraction of the compile time.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnv2_jax.models.depthwise import DepthwiseConv
from mnv2_jax.models.layers import BATCH_NORM_MOMENTUM, batch_norm, conv, relu6
from mnv2_jax.tasks import classification

NUM_CLASSES = 4
RESOLUTION = 8
# The classification loss with the recipe's label smoothing, for steps built by hand.
SMOOTHED_LOSS = functools.partial(classification.softmax_loss, label_smoothing=0.1)


class TinyNet(nn.Module):
  """stem conv + BN + ReLU6, depthwise conv + BN + ReLU6, pool, dropout, classifier."""
  num_classes: int = NUM_CLASSES
  dropout_rate: float = 0.0
  batch_norm_axis_name: Optional[str] = None
  batch_norm_momentum: float = BATCH_NORM_MOMENTUM

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name: batch_norm(train, self.batch_norm_axis_name, jnp.float32, name,
                                   self.batch_norm_momentum)
    x = relu6(norm('stem_bn')(conv(8, 3, 2, jnp.float32, 'stem_conv')(x)))
    x = relu6(norm('depthwise_bn')(DepthwiseConv(stride=1, impl='xla', name='depthwise_conv')(x)))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='classifier')(x)


def tiny_config(**optimizer_overrides) -> ml_collections.ConfigDict:
  """The parts of the run config that the train API reads."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict({'batch_size': 8})
  config.optimizer = ml_collections.ConfigDict(dict(
      base_learning_rate=0.045, base_batch_size=96, rmsprop_decay=0.9, momentum=0.9,
      epsilon=1.0, initial_scale=1.0, schedule='exponential', decay_rate=0.98,
      decay_epochs=2.5, staircase=True, warmup_epochs=0.0, weight_decay=4e-5,
      label_smoothing=0.1, ema_decay=0.9999))
  config.optimizer.update(optimizer_overrides)
  config.train = ml_collections.ConfigDict(dict(
      num_epochs=1, num_steps=None, parallel_strategy='shard_map', sync_batch_norm=False))
  return config


def random_batch(batch_size: int = 8, seed: int = 0) -> dict:
  rng = np.random.RandomState(seed)
  return {'image': rng.uniform(-1, 1, (batch_size, RESOLUTION, RESOLUTION, 3)).astype(np.float32),
          'label': rng.randint(0, NUM_CLASSES, batch_size).astype(np.int32)}
