"""Experiment configs: `get_config(arg)` in each file returns a plain ConfigDict.

Config files are loaded by path (`--config configs/default.py:width=0.5,res=48`);
the string after the colon reaches `get_config` as `arg` and is parsed with
`parse_arg`, as in big_vision.
"""

from typing import Any, Optional

import ml_collections


def _parse_value(key: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'config arg {key} must be true or false, got {text!r}.')
  try:
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
  except ValueError:
    kind = 'an integer' if isinstance(default, int) else 'a number'
    raise ValueError(f'config arg {key} must be {kind}, got {text!r}.') from None
  return text


def parse_arg(arg: Optional[str], **defaults: Any) -> ml_collections.ConfigDict:
  """Parses 'key=value,key=value' into a ConfigDict of `defaults` with those values set.

  Values take the type of their default (bool, int, float or str); an unknown
  key raises a ValueError that lists the known ones.
  """
  values = dict(defaults)
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    key, separator, text = item.partition('=')
    key = key.strip()
    if not separator:
      raise ValueError(f'config arg {item!r} must look like key=value (known keys: '
                       f'{sorted(defaults)}).')
    if key not in defaults:
      raise ValueError(f'unknown config arg {key!r}; known keys: {sorted(defaults)}.')
    values[key] = _parse_value(key, text.strip(), defaults[key])
  return ml_collections.ConfigDict(values)
