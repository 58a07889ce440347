"""Building blocks shared by the MobileNet modules: conv + BN + activation."""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# The official TF-Slim initialiser for every convolution, depthwise and logits kernel.
kernel_init = nn.initializers.truncated_normal(stddev=0.09)

# BN as in the official network: decay 0.997, epsilon 1e-3, with scale and bias.
BATCH_NORM_MOMENTUM = 0.997
BATCH_NORM_EPSILON = 1e-3


def relu6(x: jax.Array) -> jax.Array:
  return jnp.minimum(jnp.maximum(x, 0), 6)


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any, name: str,
               momentum: float = BATCH_NORM_MOMENTUM) -> nn.BatchNorm:
  """BN over the batch; `axis_name` set means statistics are averaged across devices.

  `momentum` is the decay of the moving averages used at evaluation; the
  official 0.997 needs thousands of steps, short runs need a smaller one.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=momentum,
                      epsilon=BATCH_NORM_EPSILON, axis_name=axis_name if train else None,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def conv(features: int, kernel_size: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  # Flax 'SAME' is TF 'SAME': for stride 2 on an even input it pads 0 before and 1 after.
  return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride), padding='SAME',
                 use_bias=False, kernel_init=kernel_init, dtype=dtype,
                 param_dtype=jnp.float32, name=name)
