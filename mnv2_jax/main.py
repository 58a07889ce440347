"""Trains and evaluates MobileNetV2: `python -m mnv2_jax.main --config configs/default.py --workdir DIR`.

Re-running the same command on the same workdir resumes from its latest checkpoint.
The command restarts itself once with a faster memory allocator (see
`mnv2_jax/allocator.py`; MNV2_SYSTEM_MALLOC=1 turns that off).
"""

import sys

from mnv2_jax import allocator

if __name__ == '__main__':
  # Before the imports of JAX and TensorFlow below, which the restart would repeat.
  allocator.reexecute_with_fast_allocator()

# pylint: disable=wrong-import-position
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mnv2_jax import checkpoint, train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and TensorBoard logs.')
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/default.py[:arg].',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except checkpoint.Preempted as e:
    print(f'Preempted: {e}', file=sys.stderr)
    sys.exit(143)  # as if SIGTERM had not been caught; re-run the command to resume


if __name__ == '__main__':
  app.run(main)
