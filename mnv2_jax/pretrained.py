"""Pretrained checkpoints: model variables plus the description of the model they belong to.

A pretrained directory holds

  DIR/variables/        an orbax checkpoint of {'params': ..., 'batch_stats': ...}
  DIR/model_config.json {"name", "width_multiplier", "expansion_ratio", "num_classes",
                         "resolution", "source", "input_range", "format_version"}

It is what `python -m mnv2_jax.convert` writes and what `config.init_from` reads
(evaluation only, or the start of fine-tuning). Unlike a training checkpoint it
carries no optimizer state or step, only inference variables, and it says which
architecture it is so that a mismatch with the run's config fails with a clear
message instead of a shape error deep inside Flax.

`resolution` is the input size the weights were trained (or converted) for;
the network itself accepts any resolution >= 32, so it is informative, not a
constraint. `input_range` is always '[-1, 1]': images are scaled as
`x / 127.5 - 1` (= `keras.applications.mobilenet_v2.preprocess_input`).
"""

import json
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from mnv2_jax.models import architecture

MODEL_CONFIG_FILE = 'model_config.json'
VARIABLES_DIR = 'variables'
FORMAT_VERSION = 1
INPUT_RANGE = '[-1, 1]'
REQUIRED_MODEL_CONFIG_KEYS = ('name', 'width_multiplier', 'expansion_ratio', 'num_classes',
                              'resolution', 'source')
VARIABLE_COLLECTIONS = ('params', 'batch_stats')
MODEL_NAMES = ('mobilenet_v2', 'mobilenet_v1')


def validate_model_config(model_config: Mapping[str, Any]) -> None:
  """Raises ValueError naming the first missing or invalid entry of `model_config`."""
  missing = [key for key in REQUIRED_MODEL_CONFIG_KEYS if key not in model_config]
  if missing:
    raise ValueError(f'model_config is missing {missing}; it needs all of '
                     f'{list(REQUIRED_MODEL_CONFIG_KEYS)}.')
  architecture.validate_choice('model_config["name"]', model_config['name'], MODEL_NAMES)
  architecture.validate_width_multiplier(model_config['width_multiplier'])
  architecture.validate_expansion_ratio(model_config['expansion_ratio'])
  architecture.validate_resolution(model_config['resolution'])
  num_classes = model_config['num_classes']
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'model_config["num_classes"] must be a positive integer, '
                     f'got {num_classes!r}.')
  if not isinstance(model_config['source'], str):
    raise ValueError(f'model_config["source"] must be a string describing where the weights '
                     f'come from, got {model_config["source"]!r}.')


def _validate_variables(variables: Mapping[str, Any]) -> None:
  if not isinstance(variables, Mapping) or set(variables) != set(VARIABLE_COLLECTIONS):
    keys = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
    raise ValueError(f'variables must be a dict with exactly the collections '
                     f'{list(VARIABLE_COLLECTIONS)}, got {keys}.')


def _as_numpy(tree):
  # Host numpy arrays: the checkpoint must not remember the devices it was written from.
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def save_pretrained(directory: str | os.PathLike, variables: Mapping[str, Any],
                    model_config: Mapping[str, Any], overwrite: bool = False) -> None:
  """Writes `variables` ({'params', 'batch_stats'}) and `model_config` to `directory`.

  Raises ValueError before writing anything if the inputs are incomplete, or if
  `directory` already holds files and `overwrite` is False. The arrays must be
  fully addressable (host numpy or single-process jax arrays); in a multi-process
  run every process calls this (orbax coordinates the write) and process 0
  writes the JSON.
  """
  _validate_variables(variables)
  model_config = dict(model_config)
  model_config.setdefault('input_range', INPUT_RANGE)
  model_config['format_version'] = FORMAT_VERSION
  validate_model_config(model_config)
  directory = os.path.abspath(os.fspath(directory))  # orbax needs absolute paths.
  if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
    raise ValueError(f'{directory} already exists and is not empty; choose a new directory '
                     f'or pass overwrite=True.')
  os.makedirs(directory, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, VARIABLES_DIR), _as_numpy(dict(variables)),
                    force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  # The JSON is written last: its presence means the directory is complete.
  if jax.process_index() != 0:
    return
  with open(os.path.join(directory, MODEL_CONFIG_FILE), 'w') as f:
    json.dump(model_config, f, indent=2, sort_keys=True)
    f.write('\n')


def is_pretrained_directory(directory: str | os.PathLike) -> bool:
  directory = os.fspath(directory)
  return (os.path.isfile(os.path.join(directory, MODEL_CONFIG_FILE)) and
          os.path.isdir(os.path.join(directory, VARIABLES_DIR)))


def load_model_config(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads only the model description of a pretrained directory (cheap)."""
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    raise ValueError(f'Pretrained directory {directory} does not exist; create one with '
                     f'`python -m mnv2_jax.convert ... --out {directory}`.')
  if not is_pretrained_directory(directory):
    hint = (' (it looks like a training workdir: point init_from at a directory written by '
            'mnv2_jax.convert or mnv2_jax.pretrained.save_pretrained)'
            if os.path.isdir(os.path.join(directory, 'checkpoints')) else '')
    raise ValueError(f'{directory} is not a pretrained checkpoint: it needs {MODEL_CONFIG_FILE} '
                     f'and {VARIABLES_DIR}/{hint}.')
  try:
    with open(os.path.join(directory, MODEL_CONFIG_FILE), 'rb') as f:
      model_config = json.loads(f.read())
  except OSError as e:
    raise ValueError(f'{directory}/{MODEL_CONFIG_FILE} cannot be read ({e.strerror}).') from e
  except ValueError as e:  # not JSON, or not text at all
    raise ValueError(f'{directory}/{MODEL_CONFIG_FILE} is not valid JSON: {e}.') from e
  if not isinstance(model_config, dict):
    raise ValueError(f'{directory}/{MODEL_CONFIG_FILE} must hold a JSON object.')
  validate_model_config(model_config)
  return model_config


def _ocdbt_without_array_data(path: str) -> bool:
  """Whether `path` is an OCDBT checkpoint whose data files (under 'd/' folders) are all missing.

  An interrupted copy leaves them out; orbax then fails in a background thread
  that prints an asyncio traceback, so this case is caught before orbax reads.
  """
  if not os.path.exists(os.path.join(path, 'manifest.ocdbt')):
    return False
  return not any(files for root, _, files in os.walk(path) if os.path.basename(root) == 'd')


def restore_as_numpy(path: str) -> Any:
  """An orbax PyTree checkpoint (pretrained variables, a training state) as host numpy arrays.

  Restoring as numpy leaves no dependence on the device layout of the writer.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    metadata = checkpointer.metadata(path).item_metadata
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                metadata.tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  finally:
    checkpointer.close()


def load_pretrained(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
  """Returns (variables, model_config) from a directory written by `save_pretrained`.

  `variables` is {'params': ..., 'batch_stats': ...} of host numpy arrays, ready
  for `model.apply` or for placing onto devices by the caller.
  """
  model_config = load_model_config(directory)
  path = os.path.join(os.path.abspath(os.fspath(directory)), VARIABLES_DIR)
  if _ocdbt_without_array_data(path):
    raise ValueError(f'{path} cannot be read (its array data files are missing): the pretrained '
                     f'directory is incomplete or damaged; copy or convert it again.')
  try:
    variables = restore_as_numpy(path)
  except Exception as e:  # pylint: disable=broad-except
    # Missing or truncated files (an interrupted copy) fail in many ways inside orbax.
    reason = (str(e).strip().splitlines() or [''])[0][:200]
    raise ValueError(f'{path} cannot be read ({type(e).__name__}: {reason}): the pretrained '
                     f'directory is incomplete or damaged; copy or convert it again.') from e
  _validate_variables(variables)
  return variables, model_config


def check_model_matches(model_config: Mapping[str, Any], *, name: str, width_multiplier: float,
                        expansion_ratio: float, num_classes: Optional[int] = None) -> None:
  """Raises ValueError naming every field where a pretrained model differs from the wanted one.

  `num_classes=None` skips the class-count check (e.g. fine-tuning with a new head).
  """
  wanted = {'name': name, 'width_multiplier': width_multiplier,
            'expansion_ratio': expansion_ratio}
  if num_classes is not None:
    wanted['num_classes'] = num_classes
  differences = [f'{key}: checkpoint has {model_config.get(key)!r}, config wants {value!r}'
                 for key, value in wanted.items() if model_config.get(key) != value]
  if differences:
    raise ValueError('Pretrained checkpoint does not match the model: ' + '; '.join(differences)
                     + '. Set config.model to match the checkpoint or convert a matching one.')
