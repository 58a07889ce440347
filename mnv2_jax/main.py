"""Trains and evaluates MobileNetV2: `python -m mnv2_jax.main --config configs/default.py --workdir DIR`.

Re-running the same command on the same workdir resumes from its latest checkpoint;
while a run uses a workdir, a second one there is refused. A mistake in the
flags, the config or the paths stops the command before any work with one
line, `error: ...`, and exit status 2 (`--verbose` adds the traceback; see
`mnv2_jax/errors.py`). The command restarts itself once with a faster memory
allocator (see `mnv2_jax/allocator.py`; MNV2_SYSTEM_MALLOC=1 turns that off).
"""

import os
import sys

from mnv2_jax import allocator

if __name__ == '__main__':
  # Before the imports of JAX and TensorFlow below, which the restart would repeat.
  allocator.reexecute_with_fast_allocator()

# pylint: disable=wrong-import-position
from typing import Optional, Sequence  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mnv2_jax import checkpoint, compilation_cache, errors, flag_parsing  # noqa: E402
from mnv2_jax.train import loop  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and TensorBoard logs.')
config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/default.py[:arg].',
                                lock_config=True)
flags.DEFINE_string('compilation_cache', None,
                    'Directory of JAX\'s persistent compilation cache (see '
                    'mnv2_jax/compilation_cache.py); launch.sweep passes one per workroot.')
flags.DEFINE_bool('verbose', False, errors.VERBOSE_HELP)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]}: everything is set with flags, '
                           f'e.g. --config.train.num_steps=100.')
  compilation_cache.enable(FLAGS.compilation_cache)
  try:
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except checkpoint.Preempted as e:
    print(f'Preempted: {e}', file=sys.stderr)
    sys.exit(143)  # as if SIGTERM had not been caught; re-run the command to resume


@errors.command_line
def run(argv: Optional[Sequence[str]] = None) -> int:
  """The command: parses `argv` (default: sys.argv[1:]), trains, and exits (SystemExit).

  Returns the exit status (2) instead when the command is refused.
  """
  if argv is not None:
    sys.argv = [sys.argv[0], *argv]  # ml_collections reads the --config.* overrides there
  app.run(main, argv=sys.argv, flags_parser=flag_parsing.parse)


if __name__ == '__main__':
  status = run()
  if status == errors.USER_ERROR_STATUS:
    # A refused command has written nothing and its error line is out: leave at
    # once, without the interpreter's shutdown, at which orbax's background
    # threads (left over from a failed read of a damaged checkpoint or
    # pretrained directory) print asyncio tracebacks after the error line.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)
