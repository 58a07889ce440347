"""The training state: parameters, BN statistics, optimiser state and their EMA.

`TrainState` is a pytree (flax.struct.PyTreeNode) so it passes through
`jit`/`shard_map`/`pmap` and Orbax as one object; `apply_fn` and `tx` are static
fields (not saved, not traced). The EMA fields always exist: with the EMA
disabled (ema_decay None/0) they are copies of the current weights, so the
state's structure, the checkpoints and the evaluation do not depend on it.
"""

from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from mnv2_jax import models

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class TrainState(struct.PyTreeNode):
  """Everything a train step reads and writes.

  Attributes:
    step: number of optimiser updates applied so far (int32 scalar).
    params: the trainable weights (float32, also under mixed precision).
    batch_stats: BN moving means and variances.
    opt_state: the optax state (RMSProp accumulators, momentum, step count).
    ema_params, ema_batch_stats: exponential moving averages of the above two,
      evaluated next to the raw weights.
    apply_fn: the model's `apply` (static).
    tx: the optax transformation (static).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  ema_params: Any
  ema_batch_stats: Any
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads: Any, batch_stats: Any) -> 'TrainState':
    """One optimiser update of `params`; `batch_stats` replaces the old ones."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, batch_stats=batch_stats,
                        opt_state=opt_state)

  @property
  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}

  @property
  def ema_variables(self) -> dict:
    return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 batch_norm_axis_name: str = 'batch') -> flax.linen.Module:
  """The network of `config.model` for `num_classes` classes.

  With `config.train.sync_batch_norm` the BN layers average their batch
  statistics over the device axis `batch_norm_axis_name` (the mapped axis of
  `mnv2_jax.parallel`); otherwise each device normalises with its own batch.
  `config.model.dtype` sets the computation dtype (bfloat16 for mixed precision
  on GPU/TPU); the parameters stay float32.
  """
  c = config.model
  if c.name not in models.MODELS:
    raise ValueError(f'config.model.name must be one of {sorted(models.MODELS)}, got {c.name!r}.')
  if c.dtype not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {c.dtype!r}.')
  kwargs = dict(num_classes=num_classes, width_multiplier=c.width_multiplier,
                dropout_rate=c.dropout_rate, depthwise_impl=c.depthwise_impl,
                dtype=DTYPES[c.dtype],
                batch_norm_momentum=c.batch_norm_momentum,
                kernel_init=c.kernel_init, zero_init_classifier=c.zero_init_classifier)
  if config.train.get('sync_batch_norm', False):
    kwargs['batch_norm_axis_name'] = batch_norm_axis_name
  if c.name == 'mobilenet_v2':
    kwargs.update(expansion_ratio=c.expansion_ratio,
                  bottleneck_activation=c.bottleneck_activation, shortcut=c.shortcut,
                  zero_init_residual=c.zero_init_residual)
  return models.MODELS[c.name](**kwargs)


def create_train_state(rng: jax.Array, model: flax.linen.Module,
                       tx: optax.GradientTransformation,
                       input_shape: Sequence[int]) -> TrainState:
  """Initialises the model on zeros of `input_shape` (NHWC, e.g. (1, 224, 224, 3)).

  Runs on the default device under `jit`; place the result on the devices with
  `mnv2_jax.parallel.DataParallel.replicate`.
  """
  @jax.jit  # eager initialisation of 17 blocks, op by op, is slow
  def init(rng):
    variables = model.init({'params': rng}, jnp.zeros(input_shape, jnp.float32), train=False)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})
    return params, batch_stats, tx.init(params)

  params, batch_stats, opt_state = init(rng)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, ema_params=copy(params),
                    ema_batch_stats=copy(batch_stats), apply_fn=model.apply, tx=tx)
