"""Per-device train and eval steps, written with a named device axis.

Both functions see one device's slice of the global batch and communicate only
through collectives over `axis_name`, so the same function runs under
`jax.shard_map` on a mesh (the default) and under `jax.pmap`
(see `mnv2_jax.parallel`, which binds `axis_name`). They are pure and jit-able;
logging and checkpoints belong to the loop.

BN statistics are per device by default, as in the paper's multi-GPU training:
each device normalises with its own batch and updates its own moving averages.
The moving averages are then averaged over the devices (`pmean`) so that the
replicated state stays identical everywhere (the official TF-Slim multi-clone
training kept only the first clone's update; the mean over devices is the
better estimate). With `config.train.sync_batch_norm` the model itself averages
the batch statistics over the axis (`create_model`), the moving averages are
then already equal and the `pmean` changes nothing.
"""

import functools
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mnv2_jax.train import optimizer
from mnv2_jax.train.state import TrainState

Batch = Dict[str, jax.Array]
LossFn = Callable[[Any, Batch], tuple[jax.Array, Dict[str, jax.Array]]]
EvaluateFn = Callable[[Any, Batch, jax.Array],
                      tuple[Dict[str, jax.Array], Dict[str, jax.Array]]]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy with smoothed one-hot targets.

  Label smoothing 0.1 (official recipe) puts 0.9 + 0.1/K on the true class and
  0.1/K on every other class (`optax.smooth_labels`, as TF's
  `softmax_cross_entropy(label_smoothing=...)`).
  """
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def dropout_key(dropout_rng: jax.Array, step: jax.Array, axis_name: str) -> jax.Array:
  """A dropout key unique to this step and this device, reproducible from the seed."""
  return jax.random.fold_in(jax.random.fold_in(dropout_rng, step), lax.axis_index(axis_name))


def train_step(state: TrainState, batch: Batch, dropout_rng: jax.Array, *,
               axis_name: str, loss_fn: LossFn,
               ema_decay: Optional[float] = None,
               learning_rate_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
               ) -> tuple[TrainState, Dict[str, jax.Array]]:
  """One synchronous data-parallel update, as seen by one device.

  Args:
    state: the replicated training state.
    batch: this device's examples ('image' float [B, H, W, 3] and the task's
      targets).
    dropout_rng: the same key on every device and every step (e.g. derived
      from config.seed); it is folded with the step and the device index so
      that every device and step draws different dropout masks,
      deterministically.
    axis_name: the mapped device axis (bound by `mnv2_jax.parallel`).
    loss_fn: the task's `loss(outputs, batch) -> (loss, metrics)`
      (`mnv2_jax.tasks`); the L2 term lives in the optimiser
      (`optimizer.l2_loss`).
    ema_decay: maximum EMA decay (0.9999); None or 0 keeps the EMA equal to the
      weights.
    learning_rate_fn: the schedule, only to report the learning rate used.

  Returns:
    (new_state, metrics): the task's metrics averaged over devices and, when
    `learning_rate_fn` is given, 'learning_rate' (the rate applied this step).
  """
  rng = dropout_key(dropout_rng, state.step, axis_name)

  def objective(params):
    outputs, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        mutable=['batch_stats'], rngs={'dropout': rng})
    loss, metrics = loss_fn(outputs, batch)
    return loss, (metrics, new_model_state['batch_stats'])

  (_, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  # The mean of per-device mean gradients is the gradient of the global batch
  # mean (every device holds the same number of examples).
  grads = lax.pmean(grads, axis_name)
  batch_stats = lax.pmean(batch_stats, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)

  # The EMA averages the weights after this update, with num_updates = the
  # step before it (decay 0.1 on the first update). TF-Slim grouped the EMA
  # and the gradient ops without an order between them; this is the
  # deterministic reading.
  decay = optimizer.ema_decay_at(state.step, ema_decay)
  new_state = new_state.replace(
      ema_params=optimizer.update_ema(state.ema_params, new_state.params, decay),
      ema_batch_stats=optimizer.update_ema(state.ema_batch_stats, new_state.batch_stats, decay))

  metrics = lax.pmean(metrics, axis_name)
  if learning_rate_fn is not None:
    metrics['learning_rate'] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, axis_name: str, evaluate_fn: EvaluateFn,
              predict_fn: Optional[Callable[[Any, jax.Array], Any]] = None
              ) -> tuple[Dict[str, jax.Array], Dict[str, jax.Array]]:
  """The task's evaluation of the raw and the EMA weights on this device's examples.

  Args:
    state: the replicated training state.
    batch: this device's examples: 'image', the task's targets and optionally
      'mask' (bool [B], False on padding, which then counts nowhere).
    axis_name: the mapped device axis.
    evaluate_fn: the task's `evaluate(outputs, batch, mask) -> (sums, examples)`.
    predict_fn: the task's `predictor(model)`: (variables, images) -> outputs;
      None: `state.apply_fn` in inference mode.

  Returns:
    (sums, examples): sums psum'd over the devices, with 'count' (real
    examples) and the task's sums, those of the EMA weights prefixed 'ema_';
    examples are the task's per-example arrays (same prefixes) plus 'mask'
    when there are any, still split over the devices along the batch.
  """
  mask = batch.get('mask')
  mask = (jnp.ones(batch['image'].shape[:1], jnp.float32) if mask is None
          else mask.astype(jnp.float32))
  if predict_fn is None:
    predict_fn = functools.partial(state.apply_fn, train=False)
  sums, examples = {'count': jnp.sum(mask)}, {}
  for prefix, variables in (('', state.variables), ('ema_', state.ema_variables)):
    outputs = predict_fn(variables, batch['image'])
    task_sums, task_examples = evaluate_fn(outputs, batch, mask)
    sums.update({prefix + name: value for name, value in task_sums.items()})
    examples.update({prefix + name: value for name, value in task_examples.items()})
  if examples:
    examples['mask'] = mask > 0
  return lax.psum(sums, axis_name), examples


def batch_statistics_step(state: TrainState, batch: Batch, *, axis_name: str,
                          statistics_model: Any) -> Dict[str, Any]:
  """This batch's BN statistics under the raw and under the EMA weights ("precise BN").

  Args:
    state: the replicated training state; its weights are not changed.
    batch: this device's training examples ('image').
    axis_name: the mapped device axis.
    statistics_model: the task's model with `batch_norm_momentum=0`, so that the
      'batch_stats' a training-mode pass stores are this batch's mean and
      variance themselves (`precise_batch_norm_model`).

  Returns:
    {'batch_stats': ..., 'ema_batch_stats': ...}, averaged over the devices as
    the train step averages the moving averages.
  """
  def statistics(variables):
    # Dropout draws do not reach any BN layer; a fixed key keeps the pass deterministic.
    _, updates = statistics_model.apply(variables, batch['image'], train=True,
                                        mutable=['batch_stats'],
                                        rngs={'dropout': jax.random.key(0)})
    return lax.pmean(updates['batch_stats'], axis_name)

  return {'batch_stats': statistics(state.variables),
          'ema_batch_stats': statistics(state.ema_variables)}


def precise_batch_norm_model(model: Any) -> Any:
  """`model` whose BN layers store each batch's own statistics (momentum 0).

  Every network of the repository passes its `batch_norm_momentum` down to all
  of its BN layers (backbone and heads).
  """
  if not hasattr(model, 'batch_norm_momentum'):
    raise ValueError(f'{type(model).__name__} has no batch_norm_momentum field: '
                     f'set config.train.precise_batch_norm_batches=0 for it.')
  return model.clone(batch_norm_momentum=0.0)
