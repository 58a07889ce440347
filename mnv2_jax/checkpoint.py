"""Training checkpoints in WORKDIR/checkpoints: an orbax CheckpointManager with fallbacks.

Each checkpoint (a directory named by its step) holds two items:
  'state': the training state pytree (step, params, BN statistics, optimizer
           state, EMA copies);
  'meta':  JSON: the step, the data position (`data_start_step`, passed to
           `data.create_train_iterator(start_step=...)` on resume), the base
           RNG key data, and a SHA-256 fingerprint of the state's bytes.

Together these make a resumed run bitwise identical to an uninterrupted one:
the per-step RNG is `fold_in(base_key, step)` (nothing consumed to carry
over), the data iterator restarts at exactly the saved position, and the
EMA comes back with the weights.

Robustness:
- orbax writes every checkpoint into a temporary directory and renames it when
  complete, so a save cut short by a kill is never mistaken for a checkpoint
  (the leftovers are removed on the next start).
- A finalized checkpoint that fails to restore or whose bytes no longer match
  the fingerprint (disk corruption, a half-copied directory) is moved aside to
  WORKDIR/checkpoints_corrupt/ with a warning and the previous one is used.
- A workdir whose checkpoints hold another model (`check_fits`, before the
  restore) is refused, rather than taken for corrupt.
- Preemption: `PreemptionWatcher` turns SIGTERM into a flag checked once per
  step (single process); with several processes JAX's preemption service and
  orbax's `reached_preemption` pick a step that all processes agree on (a
  per-process flag could make processes save at different steps and hang).
"""

import hashlib
import os
import shutil
import signal
import threading
from typing import Any, Optional

from absl import logging
import jax
from etils import epath
import numpy as np
import orbax.checkpoint as ocp

from mnv2_jax import errors

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'checkpoints_corrupt'

# The training state is replicated: orbax's default replica-parallel save has
# every device write a slice of each array, which costs one small compiled
# slice per array shape and device (296 compilations, 18 s, for the 0.35-wide
# network on 8 CPU devices) to split a checkpoint of a few tens of MB.
# Without it the first replica's copy is written by the process holding it.
_STATE_TYPE_HANDLERS = ocp.type_handlers.create_type_handler_registry(
    (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)),
    (np.ndarray, ocp.type_handlers.NumpyHandler()),
    *((scalar, ocp.type_handlers.ScalarHandler()) for scalar in (int, float, np.number)))


class Preempted(Exception):
  """Raised after a checkpoint was saved because the job was asked to stop (SIGTERM)."""


class CorruptCheckpointError(ValueError):
  """A checkpoint's contents do not match the fingerprint written with it."""


class IncompatibleCheckpointError(errors.UserError):
  """The workdir's checkpoints hold another model (or layout) than the config describes."""


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
  return {'/'.join(str(getattr(key, 'key', getattr(key, 'name', key))) for key in path):
          tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_fits(workdir: str, expected_state: Any) -> None:
  """Raises IncompatibleCheckpointError if the newest checkpoint in `workdir` holds another model.

  `expected_state` gives the shapes of the state as this run would save it
  (e.g. `DataParallel.replicated_shapes` of the abstract state); the
  checkpoint's metadata gives the saved ones, and the params and BN
  statistics are compared. Without this check the restore of a workdir
  trained at another width (say) would fail like a corrupt checkpoint: every
  checkpoint would be set aside and training would start afresh. A newest
  checkpoint whose metadata cannot be read is left to `restore_latest`'s
  fallback.
  """
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if (
      os.path.isdir(directory)) else []
  if not steps:
    return
  handler = ocp.PyTreeCheckpointHandler()
  try:
    saved = handler.metadata(epath.Path(directory) / str(steps[-1]) / 'state').tree
  except Exception:  # pylint: disable=broad-except  # damaged: not this check's business
    return
  finally:
    handler.close()
  if not (isinstance(saved, dict) and saved.get('params')):
    return
  for collection in ('params', 'batch_stats'):
    there = _shapes_by_path(saved.get(collection, {}))
    here = _shapes_by_path(getattr(expected_state, collection, {}))
    difference = next((f'{collection}/{path} is {there.get(path, "missing")} there, '
                       f'{here.get(path, "missing")} here'
                       for path in sorted(set(there) | set(here))
                       if there.get(path) != here.get(path)), None)
    if difference:
      raise IncompatibleCheckpointError(
          f'workdir {workdir} holds checkpoints of another model ({difference}); pass a new '
          f'--workdir, or the config it was trained with ({workdir}/config.json).')


def fingerprint(tree: Any) -> str:
  """SHA-256 of the leaves' bytes, in tree order.

  Uses each array's first addressable shard, which is the whole array for the
  replicated training state of data-parallel training.
  """
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      leaf = leaf.addressable_data(0)
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(str((value.dtype.str, value.shape)).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class PreemptionWatcher:
  """Records SIGTERM (the usual preemption notice) in a flag the loop checks each step."""

  def __init__(self, install_signal_handler: bool = True):
    self._event = threading.Event()
    self._previous_handler = None
    # Signal handlers can only be set from the main thread; with several
    # processes JAX's preemption service owns SIGTERM (see module docstring).
    if (install_signal_handler and jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping.', signum)
    self._event.set()

  def request_stop(self) -> None:
    self._event.set()

  @property
  def stop_requested(self) -> bool:
    return self._event.is_set()

  def close(self) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None


class Checkpointer:
  """Periodic, final and preemption saves plus a restore that skips corrupt checkpoints."""

  def __init__(self, workdir: str, *, save_every_steps: int, keep: int,
               async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        # orbax's default policy would also save right after the first step.
        save_decision_policy=policies.AnySavePolicy([
            policies.FixedIntervalPolicy(save_every_steps),
            policies.PreemptionCheckpointingPolicy()]),
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,  # leftovers of a save cut short by a kill
        enable_async_checkpointing=async_save,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        'state': ocp.PyTreeCheckpointHandler(type_handler_registry=_STATE_TYPE_HANDLERS),
        'meta': ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    """True at every save_every_steps-th step and at an orbax preemption sync point."""
    return self.manager.should_save(step)

  def save(self, step: int, state: Any, base_rng_data: Any, extra: Optional[dict] = None) -> None:
    """Saves `state` at `step` (asynchronously; call `wait` before exiting)."""
    meta = {'step': int(step), 'data_start_step': int(step),
            'base_rng': np.asarray(base_rng_data).tolist(), 'fingerprint': fingerprint(state)}
    meta.update(extra or {})
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    logging.info('Saving checkpoint for step %d in %s.', step, self.directory)

  def _restore_step(self, step: int, abstract_state: Any) -> tuple[Any, Any, dict]:
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=abstract_state,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
        meta=ocp.args.JsonRestore()))
    state, meta = restored['state'], restored['meta']
    if meta.get('fingerprint') != fingerprint(state):
      raise CorruptCheckpointError(
          f'checkpoint {step} does not match its fingerprint (corrupted on disk)')
    return state, np.asarray(meta['base_rng'], np.uint32), meta

  def restore_latest(self, state_template: Any) -> Optional[tuple[Any, np.ndarray, dict]]:
    """Restores the newest readable checkpoint as (state, base_rng_data, meta), or None.

    `state_template` gives the structure, shapes, dtypes and shardings to
    restore into (e.g. the freshly initialised, replicated state). Unreadable
    checkpoints are moved to WORKDIR/checkpoints_corrupt/ with a warning.
    """
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    for step in reversed(self.all_steps()):
      try:
        state, base_rng_data, meta = self._restore_step(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        # Any failure (missing/truncated files, bad metadata, wrong bytes)
        # means this checkpoint cannot be trusted; an older one still can.
        logging.warning('Checkpoint at step %d in %s cannot be restored (%s: %s); '
                        'skipping it in favour of the previous one.',
                        step, self.directory, type(e).__name__, str(e).splitlines()[0][:300])
        self._set_aside(step)
        continue
      logging.info('Restored checkpoint for step %d from %s.', step, self.directory)
      return state, base_rng_data, meta
    return None

  def _set_aside(self, step: int) -> None:
    """Moves a bad checkpoint out of the manager's directory so later saves can reuse its step."""
    if jax.process_index() == 0:
      source = os.path.join(self.directory, str(step))
      target = os.path.join(self.workdir, CORRUPT_DIR, str(step))
      if os.path.exists(target):
        shutil.rmtree(target)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(source, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'checkpoint_set_aside_{step}')
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
