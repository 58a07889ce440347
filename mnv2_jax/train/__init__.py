"""Training: the state, the paper's optimiser recipe and the per-device steps.

- `state`: TrainState (step, params, batch_stats, opt_state, ema_params,
  ema_batch_stats), `create_model`, `create_train_state`.
- `optimizer`: TF1 RMSProp + masked L2 + learning-rate schedules (optax), EMA.
- `step`: per-device `train_step` / `eval_step` with a named device axis,
  run on all devices by `mnv2_jax.parallel.DataParallel`.
- `loop`: `train_and_evaluate`, imported on first use (below).
"""

from mnv2_jax.train.optimizer import (create_learning_rate_schedule, create_optimizer,
                                      l2_loss, l2_mask, scaled_learning_rate,
                                      total_train_steps, validate_optimizer_config)
from mnv2_jax.train.state import TrainState, create_model, create_train_state
from mnv2_jax.train.step import cross_entropy_loss, eval_step, train_step


def __getattr__(name):
  # The loop brings the input pipeline and with it TensorFlow; importing it lazily keeps the
  # state, optimiser and steps importable where TensorFlow is absent (an accelerator machine
  # running benchmarks/gpu_check.py) and keeps `import mnv2_jax.train.state` fast.
  if name == 'train_and_evaluate':
    from mnv2_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
    return train_and_evaluate
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
