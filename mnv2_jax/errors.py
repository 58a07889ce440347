"""User errors and bugs: which is which, and how a command reports each.

A `UserError` is a mistake in what the user gave a command: a flag, a config
file, field or value, a path, a dataset or its files, a checkpoint or a workdir
that does not fit. Every entry point's `main` is wrapped in `command_line`,
which prints a UserError as one line on stderr,

  error: <the field or path, what is wrong with it, what to do>

and returns exit status 2, without a traceback. Anything else is a bug and
keeps its traceback. `--verbose` (every entry point takes it) or
MNV2_TRACEBACK=1 prints the traceback of a user error too.

Where UserErrors come from:
- The validators (`train.loop.validate_config`, `data.validate_data_config`,
  the models' and the pretrained checkpoints' checks, ...) raise plain
  one-line ValueErrors: they are library functions, called from notebooks and
  tests as well. Code that hands them what the user gave runs them inside
  `user_input()`, which turns their ValueErrors into UserErrors; a ValueError
  anywhere else (deep inside training, say) is a bug.
- Checks that can only be about the user's input (a workdir in use, or with
  another model's checkpoints; pretrained weights of other shapes) raise
  UserError themselves.
- The command-line parsers (`ArgumentParser` here; `mnv2_jax.flag_parsing`
  for the absl flags of `mnv2_jax.main`) raise UserError for a bad flag.

While a command checks its inputs it holds its log lines back
(`logs_held_back`), so that a refused command prints its error line alone.
"""

import argparse
import contextlib
import functools
import logging
import os
import sys
import traceback
from typing import Callable, Iterator, Optional, Sequence

USER_ERROR_STATUS = 2  # what argparse and absl exit with for a bad flag
VERBOSE_FLAG = '--verbose'
TRACEBACK_VARIABLE = 'MNV2_TRACEBACK'
VERBOSE_HELP = 'on an error in the command line, config or paths, also print its traceback'

_verbose = False  # set by `command_line` for the duration of a command


class UserError(ValueError):
  """A mistake in the user's input, reported as one line (see the module docstring).

  A ValueError, so callers that catch the validators' ValueErrors catch it too.
  """


def one_line(message: object) -> str:
  """`message` as a single line (its lines joined), without a leading 'error: '."""
  text = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
  return text[len('error: '):] if text.startswith('error: ') else text


def verbose() -> bool:
  """Whether user errors show their traceback (and the log lines held back before them)."""
  return _verbose or os.environ.get(TRACEBACK_VARIABLE, '') not in ('', '0')


def command_line(main: Callable[[Optional[Sequence[str]]], Optional[int]]):
  """Wraps an entry point `main(argv) -> exit status`: a UserError becomes one line and 2.

  `argv` is the arguments without the program name (None: sys.argv[1:]).
  """
  @functools.wraps(main)
  def run(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    global _verbose
    previous = _verbose
    _verbose = VERBOSE_FLAG in (sys.argv[1:] if argv is None else argv)
    try:
      return main(argv)
    except UserError as error:
      if verbose():
        traceback.print_exc()
      sys.stdout.flush()  # so that the error line comes after what the command printed
      print(f'error: {one_line(error)}', file=sys.stderr, flush=True)
      return USER_ERROR_STATUS
    finally:
      _verbose = previous

  return run


@contextlib.contextmanager
def user_input() -> Iterator[None]:
  """Runs checks of what the user gave: a ValueError raised inside becomes a UserError."""
  try:
    yield
  except UserError:
    raise
  except ValueError as error:
    raise UserError(one_line(error)) from error


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose mistakes raise one UserError line naming the flag; takes --verbose.

  (argparse itself prints the usage text, then the message, and exits.)
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument(VERBOSE_FLAG, action='store_true', help=VERBOSE_HELP)

  def error(self, message: str):
    raise UserError(f'{message} (see {self.prog} --help)')


class _Holder(logging.Handler):
  def __init__(self):
    super().__init__(logging.NOTSET)
    self.records: list[logging.LogRecord] = []

  def emit(self, record: logging.LogRecord) -> None:
    self.records.append(record)


@contextlib.contextmanager
def logs_held_back() -> Iterator[Callable[[], None]]:
  """Holds back what is logged (through the root logger) until the block ends.

  The records are then handled as usual, unless the block raised a UserError:
  a refused command prints its error line alone (with `verbose()`, the held
  records come first). Yields a function that shows the held records at once
  and stops holding (for work that takes long enough that its log lines
  should appear while it runs).
  """
  root = logging.getLogger()
  handlers = list(root.handlers)
  holder = _Holder()
  root.handlers = [holder]
  released = False

  def release(show: bool = True) -> None:
    nonlocal released
    if released:
      return
    released = True
    # Handlers added meanwhile (none are expected) stay.
    root.handlers = handlers + [h for h in root.handlers if h is not holder and h not in handlers]
    if show:
      # Without handlers, Python prints warnings and errors with its last-resort handler.
      targets = handlers or ([logging.lastResort] if logging.lastResort else [])
      for record in holder.records:
        for handler in targets:
          if record.levelno >= handler.level:
            handler.handle(record)
    holder.records.clear()

  try:
    yield release
  except UserError:
    release(show=verbose())
    raise
  finally:
    release()
