"""The paper's optimiser recipe as optax transforms.

MobileNetV2 was trained with TensorFlow 1's RMSProp (Section 6.1 and the
official TF-Slim flags):

  ms  <- 0.9 * ms + 0.1 * g^2                   (ms initialised to 1.0)
  mom <- 0.9 * mom + lr_t * g / sqrt(ms + 1.0)  (eps = 1.0, inside the root)
  w   <- w - mom

`optax.rmsprop(lr, decay=0.9, eps=1.0, initial_scale=1.0, eps_in_sqrt=True,
momentum=0.9)` is exactly this: it chains `scale_by_rms` (nu initialised to
`initial_scale`, scaling `g * rsqrt(nu + eps)`), `scale_by_learning_rate` and
then `trace(momentum)`. The learning rate is applied *before* the momentum
accumulation, as in TF1, so a changing schedule only affects new gradients and
not the velocity already accumulated (PyTorch-style `mom = m*mom + g; w -= lr*mom`
would differ as soon as the learning rate changes).

Coupled L2 weight decay, `weight_decay * sum(w^2) / 2` on the regular
convolution and dense kernels (stem, expand, project, last conv, classifier;
not depthwise kernels, BN parameters or biases), is `optax.add_decayed_weights`
placed BEFORE RMSProp in the chain: it adds `weight_decay * w` to the gradient,
which is exactly the gradient of the L2 loss term, and that sum then goes
through RMSProp's normalisation and momentum like in TF, where the L2 term is
part of the loss. We chose the chain over a loss term so that the whole recipe
lives in the one `optax.GradientTransformation` returned by `create_optimizer`
and the train step does not need to know which parameters are decayed. Both are
identical because the gradients are averaged across devices before the chain
runs and the parameters are replicated. (`l2_loss` computes the loss term
itself for logging.)

Learning rate: `base_learning_rate * global_batch / base_batch_size`
(0.045 per 96 images), decayed by 0.98 every `decay_epochs` epochs (staircase;
paper: 1 epoch, official release: 2.5), with an optional linear warm-up; or a
cosine decay to zero after the warm-up. Durations are given in epochs and turned
into steps here, from `steps_per_epoch`, at run time.

Other tasks' recipes: `optimizer.name = 'momentum'` is SGD with momentum as
TF's MomentumOptimizer (DeepLab's): `mom <- m * mom + g; w <- w - lr_t * mom`,
`optax.sgd(lr, momentum)` (trace, then the rate: here the rate scales the whole
velocity); `schedule = 'poly'` is DeepLab's polynomial decay
`lr * (1 - step / total) ** poly_power` after the warm-up
(`optax.polynomial_schedule`). RMSProp's fields (rmsprop_decay, epsilon,
initial_scale) do not apply to 'momentum'.

The exponential moving average (EMA) of weights and BN statistics follows TF's
`ExponentialMovingAverage(decay, num_updates=step)`, whose decay is
`min(decay, (1 + step) / (10 + step))`. `optax.ema` has no such warm-up (its
`debias` is Adam's bias correction, a different estimator), so the EMA is
applied in the train step with `optax.tree.update_moment` and `ema_decay_at`.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

SCHEDULES = ('exponential', 'cosine', 'poly')
OPTIMIZERS = ('rmsprop', 'momentum')


def validate_optimizer_config(optimizer_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `config.optimizer` field."""
  c = optimizer_config
  name = c.get('name', 'rmsprop')
  if name not in OPTIMIZERS:
    raise ValueError(f'config.optimizer.name must be one of {OPTIMIZERS}, got {name!r}.')
  if c.get('poly_power', 1.0) is None or not c.get('poly_power', 1.0) > 0:
    raise ValueError(f'config.optimizer.poly_power must be > 0, got {c.get("poly_power")!r}.')
  if c.schedule not in SCHEDULES:
    raise ValueError(f'config.optimizer.schedule must be one of {SCHEDULES}, got {c.schedule!r}.')
  positive = ('base_learning_rate', 'base_batch_size', 'epsilon', 'decay_epochs')
  for name in positive:
    if not c[name] > 0:
      raise ValueError(f'config.optimizer.{name} must be > 0, got {c[name]!r}.')
  for name in ('rmsprop_decay', 'momentum'):
    if not 0 <= c[name] < 1:
      raise ValueError(f'config.optimizer.{name} must be in [0, 1), got {c[name]!r}.')
  if not 0 < c.decay_rate <= 1:
    raise ValueError(f'config.optimizer.decay_rate must be in (0, 1], got {c.decay_rate!r}.')
  if not c.initial_scale >= 0:
    raise ValueError(f'config.optimizer.initial_scale must be >= 0, got {c.initial_scale!r}.')
  if not c.warmup_epochs >= 0:
    raise ValueError(f'config.optimizer.warmup_epochs must be >= 0, got {c.warmup_epochs!r}.')
  if not c.weight_decay >= 0:
    raise ValueError(f'config.optimizer.weight_decay must be >= 0, got {c.weight_decay!r}.')
  if not 0 <= c.label_smoothing < 1:
    raise ValueError(
        f'config.optimizer.label_smoothing must be in [0, 1), got {c.label_smoothing!r}.')
  multiplier = c.get('classifier_learning_rate_multiplier', 1.0)
  if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier > 0:
    raise ValueError(f'config.optimizer.classifier_learning_rate_multiplier must be a number '
                     f'> 0 (1.0: the same rate as the rest), got {multiplier!r}.')
  if c.ema_decay is not None and not 0 <= c.ema_decay < 1:
    raise ValueError(
        f'config.optimizer.ema_decay must be None or in [0, 1), got {c.ema_decay!r}.')


def scaled_learning_rate(optimizer_config: ml_collections.ConfigDict,
                         global_batch_size: int) -> float:
  """The linear scaling rule: 0.045 per 96 images times the global batch."""
  return (optimizer_config.base_learning_rate * global_batch_size
          / optimizer_config.base_batch_size)


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`config.train.num_steps` if set, otherwise `num_epochs` worth of steps."""
  if config.train.get('num_steps'):
    return int(config.train.num_steps)
  return max(1, int(round(config.train.num_epochs * steps_per_epoch)))


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  steps_per_epoch: int) -> optax.Schedule:
  """The learning rate as a function of the step (also used for logging).

  Args:
    config: the full config; reads `config.optimizer`, `config.data.batch_size`
      (the global batch) and, for the cosine schedule, `config.train`.
    steps_per_epoch: optimiser steps per epoch of the training set.
  """
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch!r}.')
  c = config.optimizer
  peak = scaled_learning_rate(c, config.data.batch_size)
  warmup_steps = int(round(c.warmup_epochs * steps_per_epoch))
  if c.schedule == 'cosine':
    total_steps = total_train_steps(config, steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=0.0)
  if c.schedule == 'poly':
    total_steps = total_train_steps(config, steps_per_epoch)
    decay = optax.polynomial_schedule(
        init_value=peak, end_value=0.0, power=c.poly_power,
        transition_steps=max(1, total_steps - warmup_steps))
    if warmup_steps == 0:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay],
                                boundaries=[warmup_steps])
  # TF: decay_steps = int(examples_per_epoch * num_epochs_per_decay / batch_size).
  decay_steps = max(1, int(steps_per_epoch * c.decay_epochs))
  decay = optax.exponential_decay(init_value=peak, transition_steps=decay_steps,
                                  decay_rate=c.decay_rate, staircase=c.staircase)
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], boundaries=[warmup_steps])


def l2_mask(params: Any) -> Any:
  """True for the kernels of regular convolutions and dense layers.

  Those are the stem, expand, project and last convs and the classifier
  (MobileNetV1: the pointwise convs); False for depthwise kernels (their module
  name contains 'depthwise', as in the official code, which excludes them from
  regularisation), BN scales/biases and the classifier bias.
  """
  flat = traverse_util.flatten_dict(params)
  mask = {path: path[-1] == 'kernel' and not any('depthwise' in name for name in path[:-1])
          for path in flat}
  return traverse_util.unflatten_dict(mask)


def l2_loss(params: Any) -> jax.Array:
  """sum(w^2) / 2 over the masked kernels (multiply by the weight decay)."""
  masked = jax.tree.map(lambda w, m: jnp.sum(jnp.square(w)) if m else 0.0,
                        params, l2_mask(params))
  return 0.5 * sum(jax.tree.leaves(masked))


def classifier_mask(params: Any) -> Any:
  """True for the parameters of the top-level 'classifier' layer (kernel and bias)."""
  if 'classifier' not in params:
    raise ValueError('config.optimizer.classifier_learning_rate_multiplier needs a model with '
                     'a top-level classifier layer; set it to 1.0 for this model.')
  return {name: jax.tree.map(lambda _: name == 'classifier', subtree)
          for name, subtree in params.items()}


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                     learning_rate: Optional[optax.Schedule] = None
                     ) -> optax.GradientTransformation:
  """L2 decay on the masked kernels, then TF1-style RMSProp with momentum (or momentum SGD).

  Args:
    config: the full config (see `create_learning_rate_schedule`).
    steps_per_epoch: optimiser steps per epoch.
    learning_rate: a schedule to use instead of the one built from the config.
  """
  c = config.optimizer
  validate_optimizer_config(c)
  if learning_rate is None:
    learning_rate = create_learning_rate_schedule(config, steps_per_epoch)
  if c.get('name', 'rmsprop') == 'momentum':
    update = optax.sgd(learning_rate, momentum=c.momentum)
  else:
    update = optax.rmsprop(learning_rate, decay=c.rmsprop_decay, eps=c.epsilon,
                           initial_scale=c.initial_scale, eps_in_sqrt=True,
                           momentum=c.momentum)
  chain = [optax.add_decayed_weights(c.weight_decay, mask=l2_mask), update]
  multiplier = c.get('classifier_learning_rate_multiplier', 1.0)
  if multiplier != 1.0:
    # The last transformation is linear in the rate (RMSProp's momentum accumulates
    # lr * g / rms), so scaling the classifier's updates scales its rate.
    chain.append(optax.masked(optax.scale(multiplier), classifier_mask))
  return optax.chain(*chain)


def ema_decay_at(step: jax.Array, max_decay: Optional[float]) -> jax.Array:
  """TF's `ExponentialMovingAverage(max_decay, num_updates=step)` decay.

  `min(max_decay, (1 + step) / (10 + step))`: the average follows the weights
  closely early in training. `max_decay` None or 0 disables the average (decay
  0 makes it a copy of the current weights).
  """
  if not max_decay:
    return jnp.zeros([], jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(max_decay), (1.0 + step) / (10.0 + step))


def update_ema(ema_tree: Any, new_tree: Any, decay: jax.Array) -> Any:
  """`decay * ema + (1 - decay) * new` leaf by leaf, kept in the EMA's dtype."""
  updated = optax.tree.update_moment(new_tree, ema_tree, decay, 1)
  return jax.tree.map(lambda u, e: u.astype(e.dtype), updated, ema_tree)
