"""Parses the absl flags of `python -m mnv2_jax.main`; each mistake is one UserError line.

absl and ml_collections report a bad flag as a traceback, an escaped
multi-line message or a usage dump ("Pass --helpshort or --helpfull");
`parse` (the `flags_parser` of `app.run`) reports it as one line naming the
flag or config field and saying what to do:

  --config configs/nonexistent.py: no such file ...
  --config configs/default.py:width=abc: config arg width must be a number, got 'abc'
  --config.model.nme: config.model has no field 'nme'; did you mean 'name'?
  --config.train.num_steps=1.5: invalid literal for int() with base 10: '1.5'
  --workdir is required ...

A config file that fails to import (a syntax error, say) keeps its traceback,
which points at the offending line.
"""

import difflib
import os
import re
from typing import Optional, Sequence

from absl import flags

from mnv2_jax import errors

FLAGS = flags.FLAGS
CONFIG_FLAG = 'config'
HELP_HINT = 'see python -m mnv2_jax.main --helpshort'


def _flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The value of --name in `argv` ('--name value' or '--name=value'), the last one given."""
  value = None
  for i, arg in enumerate(argv):
    if arg in (f'--{name}', f'-{name}') and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith((f'--{name}=', f'-{name}=')):
      value = arg.split('=', 1)[1]
  return value


def _check_config_file(config_arg: Optional[str]) -> None:
  """ml_collections defers a missing config file to a later OSError without the path."""
  if config_arg is None:
    return
  path = config_arg.split(':', 1)[0]
  hint = 'pass a config file such as configs/default.py'
  if not os.path.exists(path):
    raise errors.UserError(f'--config {config_arg}: no such file {path!r} (relative paths start '
                           f'at {os.getcwd()}); {hint}.')
  if not os.path.isfile(path):
    raise errors.UserError(f'--config {config_arg}: {path!r} is not a file; {hint}.')
  if not os.access(path, os.R_OK):
    raise errors.UserError(f'--config {config_arg}: {path!r} is not readable (permission '
                           f'denied).')


def _override_names(argv: Sequence[str]) -> list[str]:
  """'model.name' for each --config.model.name=... (or --[no]config.x boolean form)."""
  names = []
  for arg in argv:
    match = re.match(rf'^--?(?:no)?{CONFIG_FLAG}\.([^=]+)', arg)
    if match:
      names.append(match.group(1))
  return names


def _unknown_field(config, names: Sequence[str]) -> Optional[str]:
  """The message for the first override naming no field of `config`; None if all exist."""
  for name in names:
    node, parents = config, [CONFIG_FLAG]
    for part in name.split('.'):
      if not hasattr(node, 'keys'):
        return (f'--{CONFIG_FLAG}.{name}: {".".join(parents)} is a value ({node!r}), not a '
                f'section with fields.')
      if part not in node:
        fields = sorted(node.keys())
        close = difflib.get_close_matches(part, fields, n=1)
        hint = f'did you mean {close[0]!r}?' if close else f'its fields are {", ".join(fields)}.'
        return f'--{CONFIG_FLAG}.{name}: {".".join(parents)} has no field {part!r}; {hint}'
      node, parents = node[part], parents + [part]
  return None


def _flag_error_message(error: flags.Error, config_arg: Optional[str]) -> str:
  message = errors.one_line(error)
  required = re.search(r'Flag --(\w+) must have a value other than None', message)
  if required:
    name = required.group(1)
    if name == CONFIG_FLAG and config_arg is not None:
      return (f'--config {config_arg}: get_config() returned None; it must return the '
              f'config (an ml_collections.ConfigDict).')
    return (f'--{name} is required, e.g. python -m mnv2_jax.main --config configs/default.py '
            f'--workdir runs/default.')
  if 'Error whilst parsing config file' in str(error):
    # ml_collections puts the config file's traceback in the message: its last line says it.
    last = [line for line in str(error).splitlines() if line.strip()][-1].strip()
    return f'--config {config_arg}: {re.sub(r"^[A-Za-z_.]*Error: ", "", last)}'
  if isinstance(error, flags.UnrecognizedFlagError):
    suggestion = re.search(r'Did you mean: (.+?) ?\?', message)
    hint = f'did you mean --{suggestion.group(1)}?' if suggestion else HELP_HINT
    return f'unknown flag --{error.flagname}; {hint}'
  if f'before a value for --{CONFIG_FLAG} was specified' in message:  # ml_collections
    return f'{message}: put --{CONFIG_FLAG} before its --{CONFIG_FLAG}.* overrides.'
  value_error = re.match(r'flag (--\S+?)=(.*?): (.*)', message)
  if isinstance(error, flags.IllegalFlagValueError) and value_error:
    flag, value, reason = value_error.groups()
    if 'Non-boolean argument' in reason:
      reason = 'must be true or false'
    return f'{flag}={value}: {reason}'
  return f'{message}; {HELP_HINT}.'


def parse(argv: Sequence[str]) -> list[str]:
  """absl's FLAGS(argv), for `app.run(..., flags_parser=parse)`; returns the other arguments.

  ml_collections reads the --config.* overrides from sys.argv, which must be
  `argv` (as it is for a command line).
  """
  config_arg = _flag_value(argv[1:], CONFIG_FLAG)
  _check_config_file(config_arg)
  try:
    remaining = FLAGS(argv)
  except flags.Error as error:
    raise errors.UserError(_flag_error_message(error, config_arg)) from error
  except (AttributeError, KeyError) as error:
    # ml_collections, for an override that names no config field; anything
    # else raising these while the flags are parsed is a bug and keeps its traceback.
    config = FLAGS[CONFIG_FLAG].parser.parse(config_arg) if config_arg else None
    message = _unknown_field(config, _override_names(argv)) if config is not None else None
    if message is None:
      raise
    raise errors.UserError(message) from error
  try:
    getattr(FLAGS[CONFIG_FLAG].value, 'keys', None)  # a config that failed to load raises here
  except OSError as error:
    raise errors.UserError(f'--config {config_arg}: {errors.one_line(error.__cause__ or error)}'
                           ) from error
  return remaining
