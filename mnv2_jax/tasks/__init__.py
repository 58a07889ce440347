"""Tasks: what classification, detection and segmentation give the one training loop.

`get_task(config)` returns the `Task` of `config.task` ('classification' when a
config has no such field, as configs written before detection and segmentation
existed); `base.py` describes the interface.
"""

import ml_collections

from mnv2_jax.tasks.base import InitFromTarget, Task
from mnv2_jax.tasks.classification import Classification
from mnv2_jax.tasks.detection import Detection
from mnv2_jax.tasks.segmentation import Segmentation

TASKS = {task.name: task for task in (Classification, Detection, Segmentation)}
DEFAULT_TASK = Classification.name


def task_name(config: ml_collections.ConfigDict) -> str:
  return config.get('task', DEFAULT_TASK)


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task of `config`; one ValueError line for an unknown config.task."""
  name = task_name(config)
  if name not in TASKS:
    raise ValueError(f'config.task must be one of {sorted(TASKS)}, got {name!r}.')
  return TASKS[name](config)
