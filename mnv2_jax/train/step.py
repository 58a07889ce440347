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

from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mnv2_jax.train import optimizer
from mnv2_jax.train.state import TrainState

Batch = Dict[str, jax.Array]


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


def _correct_top_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  k = min(k, logits.shape[-1])
  _, top = lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1)


def dropout_key(dropout_rng: jax.Array, step: jax.Array, axis_name: str) -> jax.Array:
  """A dropout key unique to this step and this device, reproducible from the seed."""
  return jax.random.fold_in(jax.random.fold_in(dropout_rng, step), lax.axis_index(axis_name))


def train_step(state: TrainState, batch: Batch, dropout_rng: jax.Array, *,
               axis_name: str, label_smoothing: float = 0.0,
               ema_decay: Optional[float] = None,
               learning_rate_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
               ) -> tuple[TrainState, Dict[str, jax.Array]]:
  """One synchronous data-parallel update, as seen by one device.

  Args:
    state: the replicated training state.
    batch: this device's examples: 'image' float [B, H, W, 3], 'label' int [B].
    dropout_rng: the same key on every device and every step (e.g. derived
      from config.seed); it is folded with the step and the device index so
      that every device and step draws different dropout masks,
      deterministically.
    axis_name: the mapped device axis (bound by `mnv2_jax.parallel`).
    label_smoothing: see `cross_entropy_loss`.
    ema_decay: maximum EMA decay (0.9999); None or 0 keeps the EMA equal to the
      weights.
    learning_rate_fn: the schedule, only to report the learning rate used.

  Returns:
    (new_state, metrics) with metrics averaged over devices: 'loss' (the
    smoothed cross-entropy, without the L2 term which lives in the optimiser;
    see `optimizer.l2_loss`), 'top1' (training accuracy) and, when
    `learning_rate_fn` is given, 'learning_rate' (the rate applied this step).
  """
  rng = dropout_key(dropout_rng, state.step, axis_name)

  def loss_fn(params):
    logits, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        mutable=['batch_stats'], rngs={'dropout': rng})
    loss = jnp.mean(cross_entropy_loss(logits, batch['label'], label_smoothing))
    return loss, (logits, new_model_state['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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

  metrics = {'loss': loss,
             'top1': jnp.mean(jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)}
  metrics = lax.pmean(metrics, axis_name)
  if learning_rate_fn is not None:
    metrics['learning_rate'] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, axis_name: str) -> Dict[str, jax.Array]:
  """Summed evaluation counts for the raw and the EMA weights, over all devices.

  Args:
    state: the replicated training state.
    batch: this device's examples: 'image', 'label' and optionally 'mask'
      (bool [B], False on padding, which then counts nowhere).
    axis_name: the mapped device axis.

  Returns:
    psum'd scalars: 'count' (real examples), 'loss_sum' (plain cross-entropy,
    no label smoothing), 'top1_correct', 'top5_correct', and the same three
    with an 'ema_' prefix. Divide by 'count' after summing over batches.
  """
  labels = batch['label']
  mask = batch.get('mask')
  mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)

  def counts(variables, prefix):
    logits = state.apply_fn(variables, batch['image'], train=False)
    return {
        f'{prefix}loss_sum': jnp.sum(cross_entropy_loss(logits, labels) * mask),
        f'{prefix}top1_correct': jnp.sum(_correct_top_k(logits, labels, 1) * mask),
        f'{prefix}top5_correct': jnp.sum(_correct_top_k(logits, labels, 5) * mask),
    }

  metrics = {'count': jnp.sum(mask)}
  metrics.update(counts(state.variables, ''))
  metrics.update(counts(state.ema_variables, 'ema_'))
  return lax.psum(metrics, axis_name)
