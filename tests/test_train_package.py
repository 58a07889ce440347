"""`mnv2_jax.train`'s state, optimiser and steps import without TensorFlow; the loop on first use."""

import subprocess
import sys

_PROBE = '''
import sys
from mnv2_jax import models, parallel
from mnv2_jax.train import optimizer, state, step
assert 'tensorflow' not in sys.modules, 'the state/step import pulled in TensorFlow'
import mnv2_jax.train
assert 'mnv2_jax.train.loop' not in sys.modules
from mnv2_jax.train import train_and_evaluate
from mnv2_jax.train import loop
assert train_and_evaluate is loop.train_and_evaluate
try:
  mnv2_jax.train.no_such_name
except AttributeError as error:
  assert 'no_such_name' in str(error)
else:
  raise AssertionError('unknown attribute resolved')
print('ok')
'''


def test_state_and_step_import_without_tensorflow_and_the_loop_loads_on_first_use():
  # A fresh interpreter: the test process has long imported TensorFlow through other tests.
  result = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith('ok')
