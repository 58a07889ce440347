"""A trained network read back: a training workdir's or a pretrained directory's.

`load_workdir` rebuilds the model of a run from its config.json and run_info.json
(through the run's task, so classifiers and detectors alike) and reads the
newest readable checkpoint's EMA (or raw) weights; `load_pretrained_directory`
does the same for a `pretrained.save_pretrained` directory. Both only read:
`mnv2_jax.export`, `mnv2_jax.detect` and `mnv2_jax.segment` use them. The last
section holds what the two commands that run a network on image files share:
reading the images and naming the pictures they draw.
"""

import dataclasses
import json
import logging as std_logging
import os
from typing import Optional, Sequence

from absl import logging
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnv2_jax import checkpoint as checkpoint_lib
from mnv2_jax import errors, models, pretrained, tasks
from mnv2_jax.models import architecture
from mnv2_jax.train import loop


@dataclasses.dataclass
class Source:
  """A network and its weights, as read from a workdir or a pretrained directory."""
  model: nn.Module     # as configured for training (its depthwise impl, dtype, ...)
  variables: dict      # {'params', 'batch_stats'} of host numpy arrays
  resolution: int      # the input side it was trained at
  num_classes: int
  description: str     # for messages, e.g. 'WORKDIR step 1600 (EMA weights)'
  config: Optional[ml_collections.ConfigDict] = None  # the run's; None for a pretrained dir

  @property
  def task(self) -> str:
    """The run's config.task ('classification' for a pretrained directory)."""
    return tasks.task_name(self.config) if self.config is not None else tasks.DEFAULT_TASK


def _read_json(path: str, what: str) -> dict:
  try:
    with open(path, 'rb') as f:
      value = json.loads(f.read())
  except FileNotFoundError:
    raise errors.UserError(f'{path} does not exist: {what}') from None
  except OSError as e:
    raise errors.UserError(f'{path} cannot be read ({e.strerror}).') from e
  except ValueError as e:
    raise errors.UserError(f'{path} is not valid JSON: {e}.') from e
  if not isinstance(value, dict):
    raise errors.UserError(f'{path} must hold a JSON object.')
  return value


def _fit_variables(variables: dict, model: nn.Module, resolution: int, where: str) -> dict:
  """`variables` checked against `model`'s, as host float arrays.

  A pmap run saves its state with a leading device axis: its first replica is taken.
  """
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, resolution, resolution, 3), jnp.float32), train=False))
  fitted = {}
  for collection in pretrained.VARIABLE_COLLECTIONS:
    wanted = traverse_util.flatten_dict(dict(expected.get(collection, {})))
    found = traverse_util.flatten_dict(dict(variables.get(collection) or {}))
    if set(wanted) != set(found):
      path = sorted(set(wanted) ^ set(found))[0]
      raise errors.UserError(f'{where} does not match its model: {collection}/{"/".join(path)} '
                             f'is in only one of them.')
    for path, like in wanted.items():
      value = np.asarray(found[path])
      if value.shape != like.shape and value.shape[1:] == like.shape:
        value = value[0]
      if value.shape != like.shape:
        raise errors.UserError(f'{where} does not match its model: {collection}/'
                               f'{"/".join(path)} has shape {value.shape}, the model '
                               f'{like.shape}.')
      found[path] = value.astype(np.float32)
    fitted[collection] = traverse_util.unflatten_dict({path: found[path] for path in wanted})
  return fitted


class _StepMetadataNotice(std_logging.Filter):
  """Hides orbax's notice that an item has no step metadata (it lives one level up)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return 'Metadata file does not exist' not in record.getMessage()


def _read_checkpoint_state(path: str) -> dict:
  """The 'state' item of a training checkpoint as a dict of host numpy arrays (read only)."""
  notice = _StepMetadataNotice()
  logging.get_absl_logger().addFilter(notice)
  try:
    return pretrained.restore_as_numpy(path)
  finally:
    logging.get_absl_logger().removeFilter(notice)


def load_workdir(workdir: str, raw: bool = False, *, task: Optional[str] = None,
                 reader: str = 'this command') -> Source:
  """The model of a training workdir with the weights of its newest readable checkpoint.

  With `task`, a run of another config.task is refused (one line naming
  `reader`) before any weights are read. Unlike a resumed run this only
  reads: an unreadable checkpoint is skipped with a warning (the previous one
  is used), not set aside.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise errors.UserError(f'--workdir {workdir} does not exist or is not a directory.')
  config = ml_collections.ConfigDict(_read_json(
      os.path.join(workdir, loop.CONFIG_FILE),
      'not a training workdir (mnv2_jax.main writes config.json once its state is ready)'))
  if task is not None and tasks.task_name(config) != task:
    raise errors.UserError(f'{workdir} is a {tasks.task_name(config)} run; {reader} needs a '
                           f'{task} workdir (config.task={task!r}).')
  run_info = _read_json(os.path.join(workdir, loop.RUN_INFO_FILE),
                        'not a training workdir (mnv2_jax.main writes run_info.json)')
  try:
    with errors.user_input():
      model = tasks.get_task(config).create_model(run_info['num_classes'],
                                                  batch_norm_axis_name='batch')
      resolution = config.data.resolution
      architecture.validate_resolution(resolution)
  except (AttributeError, KeyError, TypeError) as e:  # written by another version of the code
    raise errors.UserError(f'{workdir}/{loop.CONFIG_FILE} or {loop.RUN_INFO_FILE} lacks a '
                           f'field the model needs ({e}).') from e
  directory = os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)
  # orbax finalises a checkpoint by renaming its temporary directory to the step.
  steps = sorted((int(name) for name in (os.listdir(directory) if os.path.isdir(directory)
                                         else []) if name.isdigit()), reverse=True)
  if not steps:
    raise errors.UserError(
        f'workdir {workdir} has no finished checkpoint ({checkpoint_lib.CHECKPOINT_DIR}/ holds '
        f'none yet): let the run reach its first save (config.train.checkpoint_every_steps) '
        f'or pass another --workdir.')
  prefix = '' if raw else 'ema_'
  for step in steps:
    try:
      state = _read_checkpoint_state(os.path.join(directory, str(step), 'state'))
    except Exception as e:  # pylint: disable=broad-except  # damaged: an older one may do
      logging.warning('Checkpoint %d in %s cannot be read (%s: %s); trying the previous one.',
                      step, directory, type(e).__name__, (str(e).splitlines() or [''])[0][:200])
      continue
    variables = {'params': state.get(f'{prefix}params'),
                 'batch_stats': state.get(f'{prefix}batch_stats')}
    description = f'{workdir} step {step} ({"raw" if raw else "EMA"} weights)'
    return Source(model, _fit_variables(variables, model, resolution,
                                        f'checkpoint {step} of {workdir}'),
                  resolution, run_info['num_classes'], description, config)
  raise errors.UserError(f'workdir {workdir} has no readable checkpoint (steps {steps} all '
                         f'fail to restore; see the warnings with --verbose).')


def load_pretrained_directory(directory: str) -> Source:
  """The model described by a pretrained directory's model_config.json, with its weights."""
  with errors.user_input():
    variables, model_config = pretrained.load_pretrained(directory)
  kwargs = dict(num_classes=model_config['num_classes'],
                width_multiplier=model_config['width_multiplier'])
  if model_config['name'] == 'mobilenet_v2':
    kwargs['expansion_ratio'] = model_config['expansion_ratio']
  model = models.MODELS[model_config['name']](**kwargs)
  directory = os.path.abspath(directory)
  resolution = model_config['resolution']
  return Source(model, _fit_variables(variables, model, resolution,
                                      f'pretrained directory {directory}'),
                resolution, model_config['num_classes'], f'{directory} ({model_config["source"]})')


# --- image files (mnv2_jax.detect, mnv2_jax.segment) --------------------------------


def require_files(paths: Sequence[str]) -> None:
  """UserError naming the first of `paths` that is not a file."""
  for path in paths:
    if not os.path.isfile(path):
      raise errors.UserError(f'{path} is not a file; pass image files.')


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] of an image file (any format TensorFlow decodes); UserError otherwise."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    encoded = tf.io.read_file(path)
    return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
  except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
    raise errors.UserError(f'{path} cannot be read as an image ({type(e).__name__}); pass '
                           f'JPEG, PNG, GIF or BMP files.') from None


def read_images(paths: Sequence[str]) -> list[np.ndarray]:
  """Every one of `paths` decoded, so that a command refuses an unreadable image
  before it prints or writes anything."""
  return [read_image(path) for path in paths]


def drawing_paths(images: Sequence[str], directory: str) -> list[str]:
  """DIR/<image name without extension>.png for each image; UserError where `directory` is
  a file or two images would be drawn to one file (a/x.jpg and b/x.png)."""
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise errors.UserError(f'--draw {directory} is a file; give a directory (made if needed).')
  paths, seen = [], {}
  for image in images:
    path = os.path.join(directory, os.path.splitext(os.path.basename(image))[0] + '.png')
    if path in seen and seen[path] != image:
      raise errors.UserError(f'--draw: {seen[path]} and {image} would both be drawn to {path}; '
                             f'rename one or run them separately.')
    seen[path] = image
    paths.append(path)
  return paths
