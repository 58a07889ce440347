"""Building config sections: defaults with named changes, a typo refused at once."""

from typing import Any, Mapping

import ml_collections


def with_changes(section: ml_collections.ConfigDict, name: str,
                 changes: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """`section` (config.<name>) with `changes` applied; a change must name an existing field,
  so that a typo fails here rather than becoming a silently ignored field."""
  for key, value in changes.items():
    if key not in section:
      raise KeyError(f'config.{name} has no field {key!r}; fields: {sorted(section)}.')
    section[key] = value
  return section
