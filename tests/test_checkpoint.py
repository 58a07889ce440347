"""Training checkpoints: keep-N, full-state round trip, and the corrupt-latest fallback."""

import glob
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from mnv2_jax import checkpoint


class State(struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  ema_params: dict
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


def _state(value: float) -> State:
  tx = optax.rmsprop(0.1, momentum=0.9)
  params = {'conv': {'kernel': jnp.full((3, 3, 2, 4), float(value))}, 'bn': {'scale': jnp.ones(4)}}
  opt_state = jax.tree.map(lambda x: x + value, tx.init(params))
  return State(step=jnp.asarray(int(value), jnp.int32), params=params, opt_state=opt_state,
               ema_params=jax.tree.map(lambda x: x / 2, params), tx=tx)


def _save_steps(workdir, steps, keep=3, every=2):
  checkpointer = checkpoint.Checkpointer(str(workdir), save_every_steps=every, keep=keep)
  rng = np.asarray(jax.random.key_data(jax.random.key(7)))
  for step in steps:
    if checkpointer.should_save(step):
      checkpointer.save(step, _state(step), rng)
  checkpointer.close()
  return rng


def _assert_trees_equal(a, b):
  a, b = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
  assert [path for path, _ in a] == [path for path, _ in b]
  for (_, x), (_, y) in zip(a, b):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_saves_every_n_steps_and_keeps_the_newest_k(tmp_path):
  _save_steps(tmp_path, range(1, 11), keep=3, every=2)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  assert checkpointer.all_steps() == [6, 8, 10]
  checkpointer.close()
  _save_steps(tmp_path / 'keep_all', range(1, 6), keep=10, every=2)
  assert checkpoint.Checkpointer(str(tmp_path / 'keep_all'), save_every_steps=2,
                                 keep=10).all_steps() == [2, 4]


def test_restore_returns_state_ema_optimizer_rng_and_data_position(tmp_path):
  rng = _save_steps(tmp_path, range(1, 7))
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  state, base_rng, meta = checkpointer.restore_latest(_state(0))
  checkpointer.close()
  _assert_trees_equal(state, _state(6))
  assert state.tx is not None  # static fields come from the template
  np.testing.assert_array_equal(base_rng, rng)
  assert meta['step'] == 6 and meta['data_start_step'] == 6


def test_empty_directory_restores_nothing(tmp_path):
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  assert checkpointer.restore_latest(_state(0)) is None
  checkpointer.close()


def _corrupt(step_dir, how):
  data_files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'),
                                     recursive=True) if os.path.isfile(f)]
  assert data_files, f'no array data files under {step_dir}'
  for path in data_files:
    content = bytearray(open(path, 'rb').read())
    if how == 'truncated':
      content = content[:len(content) // 3]
    else:  # flipped bytes in the middle of every data file
      content[len(content) // 2] ^= 0xFF
    with open(path, 'wb') as f:
      f.write(content)


@pytest.mark.parametrize('how', ['truncated', 'flipped_bytes', 'missing_metadata', 'bad_json'])
def test_corrupt_latest_checkpoint_is_skipped_with_a_warning(tmp_path, how):
  _save_steps(tmp_path, range(1, 7))
  step_dir = os.path.join(tmp_path, checkpoint.CHECKPOINT_DIR, '6')
  if how == 'missing_metadata':
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))
  elif how == 'bad_json':
    with open(os.path.join(step_dir, 'meta', 'metadata'), 'w') as f:
      f.write('{"step": 6, "data_')
  else:
    _corrupt(step_dir, how)

  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  with pytest.MonkeyPatch.context() as patch:
    warnings = []
    patch.setattr(logging, 'warning', lambda message, *args: warnings.append(message % args))
    state, _, meta = checkpointer.restore_latest(_state(0))
  assert meta['step'] == 4
  _assert_trees_equal(state, _state(4))
  assert any('step 6' in w and 'previous one' in w for w in warnings), warnings
  # Set aside, so that training can save step 6 again.
  assert os.path.isdir(os.path.join(tmp_path, checkpoint.CORRUPT_DIR, '6'))
  assert checkpointer.all_steps() == [2, 4]
  checkpointer.save(6, state, np.zeros(2, np.uint32))
  checkpointer.close()
  assert checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3).all_steps() == [
      2, 4, 6]


def test_partially_written_checkpoint_is_ignored(tmp_path):
  _save_steps(tmp_path, range(1, 5))
  # What a save interrupted by a kill leaves: orbax's temporary directory.
  partial = os.path.join(tmp_path, checkpoint.CHECKPOINT_DIR, '6.orbax-checkpoint-tmp-123')
  os.makedirs(os.path.join(partial, 'state'))
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  _, _, meta = checkpointer.restore_latest(_state(0))
  checkpointer.close()
  assert meta['step'] == 4
  assert not os.path.exists(partial)  # cleaned up on start


def test_a_workdir_of_another_model_is_refused_and_nothing_is_set_aside(tmp_path):
  _save_steps(tmp_path, range(1, 5))
  checkpoint.check_fits(str(tmp_path), _state(0))  # the same model
  wider = _state(0).replace(params={'conv': {'kernel': jnp.zeros((3, 3, 2, 8))},
                                    'bn': {'scale': jnp.ones(8)}})
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match=r'params/bn/scale is \(4,\) there, \(8,\) here'):
    checkpoint.check_fits(str(tmp_path), wider)
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=3)
  assert checkpointer.all_steps() == [2, 4]
  checkpointer.close()
  # Metadata that cannot be read is a damaged checkpoint: restore_latest's fallback handles it.
  os.remove(os.path.join(tmp_path, checkpoint.CHECKPOINT_DIR, '4', 'state', '_METADATA'))
  checkpoint.check_fits(str(tmp_path), wider)


def test_fingerprint_changes_with_any_bit():
  state = _state(1)
  flipped = state.replace(params={'conv': {'kernel': state.params['conv']['kernel'].at[
      0, 0, 0, 0].set(np.nextafter(np.float32(1), np.float32(2)))}, 'bn': state.params['bn']})
  assert checkpoint.fingerprint(state) == checkpoint.fingerprint(_state(1))
  assert checkpoint.fingerprint(state) != checkpoint.fingerprint(flipped)
