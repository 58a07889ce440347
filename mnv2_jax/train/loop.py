"""`train_and_evaluate(config, workdir)`: the training loop and everything around it.

The loop owns the side effects (data iterators, checkpoints, metrics, the
progress bar); the arithmetic is in `train.step` (per-device steps),
`train.optimizer` (the paper's recipe) and `parallel` (the data-parallel
wrapper). Workdir layout (docs/training.md says more):

  WORKDIR/config.json          the full config (process 0, once the state is ready)
  WORKDIR/run_info.json        model, counts (params, MAdds), devices, steps
  WORKDIR/metrics.jsonl        one JSON line per logged step / evaluation
  WORKDIR/final_metrics.json   written when the run completes (its numbers end the
                               run's output: `run_report.summary_text`)
  WORKDIR/curves.png           loss, learning rate and eval top-1 by step, redrawn at
                               each evaluation (`run_report.write_curves`)
  WORKDIR/checkpoints/         orbax checkpoints (see `mnv2_jax.checkpoint`)
  WORKDIR/tensorboard/         TensorBoard events
  WORKDIR/run.lock             held while a run uses the workdir (see `mnv2_jax.workdir_lock`)

Re-running on the same workdir resumes from the newest readable checkpoint,
bitwise identically on CPU: the state (incl. EMA and optimizer), the base RNG
key (dropout keys are `fold_in(key, step)`, nothing consumed) and the data
position (`start_step`) all come from the checkpoint. That holds for the same
config and code only: resuming with a config that differs from the workdir's
config.json logs a warning naming the changed fields.

Every config value is checked (`validate_config`, `data.validate_data_config`,
the pretrained model description) before anything is compiled, and the
workdir's checkpoints and the pretrained weights are checked against the model
before anything in the workdir is written: a mistake is one `errors.UserError`
line, and a workdir of another model is refused rather than started afresh.
The training loss is read back on the host one step behind the device (so the host never
stalls the device queue): a non-finite loss stops the run within one step of
its appearance, before any checkpoint of the broken state is written.
"""

import contextlib
import functools
import json
import logging as std_logging
import math
import os
import time
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
import tqdm

from mnv2_jax import allocator
from mnv2_jax import checkpoint as checkpoint_lib
from mnv2_jax import data
from mnv2_jax import errors
from mnv2_jax import metrics as metrics_lib
from mnv2_jax import tasks
from mnv2_jax import parallel
from mnv2_jax import pretrained
from mnv2_jax import provenance
from mnv2_jax import run_report
from mnv2_jax import workdir_lock
from mnv2_jax.train import optimizer as optimizer_lib
from mnv2_jax.train import state as state_lib
from mnv2_jax.train import step as step_lib

CONFIG_FILE = 'config.json'
RUN_INFO_FILE = 'run_info.json'
FINAL_METRICS_FILE = 'final_metrics.json'
# Metrics with recomputed BN statistics (config.train.precise_batch_norm_batches) are
# 'eval_precise_bn_<metric>' and 'eval_precise_bn_ema_<metric>'.
PRECISE_BN_PREFIX = 'precise_bn_'
# Their training batches come from the stream of seed + this offset, not the run's own.
PRECISE_BN_SEED_OFFSET = 1_000_003
# config.train.matmul_precision: the names jax.default_matmul_precision takes for float32 work.
MATMUL_PRECISIONS = ('default', 'high', 'highest', 'bfloat16', 'tensorfloat32', 'float32')


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the run stopped without saving it."""


# ----------------------------------------------------------------------------
# Validation (cheap, before any compilation)


def _check(condition: bool, field: str, allowed: str, value: Any) -> None:
  if not condition:
    raise ValueError(f'config.{field} must be {allowed}, got {value!r}.')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises one ValueError line naming the first invalid task/model/optimizer/train field.

  The model fields are the task's (`mnv2_jax.tasks`).
  The data fields are checked by `data.validate_data_config`, which needs the
  device count.
  """
  for section in ('model', 'data', 'optimizer', 'train'):
    _check(isinstance(config.get(section), ml_collections.ConfigDict), section,
           'a ConfigDict section', config.get(section))
  _check(_is_int(config.get('seed')), 'seed', 'an integer', config.get('seed'))

  task = tasks.get_task(config)
  task.validate_config()

  optimizer_lib.validate_optimizer_config(config.optimizer)
  multiplier = config.optimizer.get('classifier_learning_rate_multiplier', 1.0)
  _check(multiplier == 1.0 or task.has_classifier, 'optimizer.classifier_learning_rate_multiplier',
         f'1.0 for config.task={task.name!r} (its model has no classifier layer)', multiplier)

  train = config.train
  _check(_is_number(train.num_epochs) and train.num_epochs > 0, 'train.num_epochs',
         'a number > 0', train.num_epochs)
  _check(train.num_steps is None or (_is_int(train.num_steps) and train.num_steps >= 1),
         'train.num_steps', 'None (use num_epochs) or an integer >= 1', train.num_steps)
  for field in ('eval_every_steps', 'checkpoint_every_steps', 'log_every_steps',
                'keep_checkpoints'):
    _check(_is_int(train[field]) and train[field] >= 1, f'train.{field}', 'an integer >= 1',
           train[field])
  _check(train.parallel_strategy in parallel.STRATEGIES, 'train.parallel_strategy',
         f'one of {list(parallel.STRATEGIES)}', train.parallel_strategy)
  _check(isinstance(train.sync_batch_norm, bool), 'train.sync_batch_norm', 'True or False',
         train.sync_batch_norm)
  precision = train.get('matmul_precision')
  _check(precision is None or precision in MATMUL_PRECISIONS, 'train.matmul_precision',
         f"None (JAX's default) or one of {list(MATMUL_PRECISIONS)}", precision)
  precise = train.get('precise_batch_norm_batches', 0)
  _check(_is_int(precise) and precise >= 0, 'train.precise_batch_norm_batches',
         'an integer >= 0 (0: evaluate with the BN moving averages only)', precise)

  _check(isinstance(config.get('eval_only'), bool), 'eval_only', 'True or False',
         config.get('eval_only'))
  init_from = config.get('init_from')
  _check(init_from is None or (isinstance(init_from, str) and init_from), 'init_from',
         'None or a directory written by mnv2_jax.pretrained.save_pretrained', init_from)
  _check(init_from is None or task.init_from_target() is not None, 'init_from',
         f'None for config.task={task.name!r} (it cannot start from a pretrained classifier)',
         init_from)


def _check_init_from(config: ml_collections.ConfigDict,
                     target: Optional[tasks.InitFromTarget], num_classes: int) -> Optional[dict]:
  """Reads and checks the description of config.init_from (no weights loaded yet)."""
  if not config.init_from:
    return None
  model_config = pretrained.load_model_config(config.init_from)
  whole_model = not target.scope
  pretrained.check_model_matches(
      model_config, name=target.name, width_multiplier=target.width_multiplier,
      expansion_ratio=(target.expansion_ratio if target.expansion_ratio is not None
                       else model_config['expansion_ratio']),
      num_classes=num_classes if config.eval_only and whole_model else None)
  return model_config


# ----------------------------------------------------------------------------
# State initialisation


def _load_pretrained(directory: str, abstract_state: state_lib.TrainState,
                     num_classes: int, target: tasks.InitFromTarget) -> tuple[dict, dict]:
  """The weights of a pretrained directory as flat host dicts, checked against the model.

  Returns ({'params': {path: array}, 'batch_stats': {...}}, model_config) with
  paths in the model's tree: the whole classifier, or (target.scope) the layers
  of a task's backbone. A classifier with another number of classes is
  fine-tuned with a new classifier layer, so that layer is left out; so are the
  pretrained layers a task's backbone does not have (the classifier head; for
  DeepLab, also the last 1x1 conv). Everything left out starts fresh
  (`_pretrained_state`). Raises UserError for an unreadable directory or weights
  of other shapes, and when the model has a layer the checkpoint lacks.
  """
  with errors.user_input():
    variables, model_config = pretrained.load_pretrained(directory)
  scope = tuple(target.scope)
  new_classifier = not scope and model_config['num_classes'] != num_classes
  loaded = {}
  for name in ('params', 'batch_stats'):
    wanted = {path[len(scope):]: value
              for path, value in traverse_util.flatten_dict(getattr(abstract_state, name)).items()
              if path[:len(scope)] == scope}
    new = traverse_util.flatten_dict(variables[name])
    if new_classifier:
      wanted, new = ({path: value for path, value in tree.items() if path[0] != 'classifier'}
                     for tree in (wanted, new))
    unmatched = set(wanted) - set(new) if scope else set(wanted) ^ set(new)
    if unmatched:
      where = '/'.join(scope + sorted(unmatched)[0])
      raise errors.UserError(f'init_from {directory} does not match the model: {name} entry '
                             f'{where} is in only one of them.')
    for path, value in wanted.items():
      if tuple(value.shape) != np.shape(new[path]):
        raise errors.UserError(f'init_from {directory} does not match the model: {name}/'
                               f'{"/".join(scope + path)} has shape {np.shape(new[path])}, '
                               f'the model {tuple(value.shape)}.')
    loaded[name] = {scope + path: new[path] for path in wanted}
  return loaded, model_config


def _pretrained_state(directory: str, loaded: dict, model_config: dict,
                      abstract_state: state_lib.TrainState, fresh_state_fn,
                      num_classes: int) -> state_lib.TrainState:
  """A step-0 state holding the weights `_load_pretrained` returned (on the host).

  The layers the checkpoint does not provide (a new classifier layer for
  another class count; a detector's or segmenter's heads) take the fresh
  initialisation; only then is the network initialised. The EMA starts equal to
  the resulting weights and the optimizer state starts afresh.
  """
  wanted = {name: traverse_util.flatten_dict(getattr(abstract_state, name))
            for name in ('params', 'batch_stats')}
  fresh_paths = {name: sorted(set(wanted[name]) - set(loaded[name])) for name in wanted}
  trees = {name: dict(loaded[name]) for name in wanted}
  if any(fresh_paths.values()):
    if 'classifier' in {path[0] for path in fresh_paths['params']}:
      logging.warning('init_from %s has %d classes, the dataset %d: re-initialising the '
                      'classifier for fine-tuning.', directory, model_config['num_classes'],
                      num_classes)
    fresh_state = jax.device_get(fresh_state_fn())
    for name, paths in fresh_paths.items():
      fresh = traverse_util.flatten_dict(getattr(fresh_state, name))
      trees[name].update({path: fresh[path] for path in paths})
  params, batch_stats = (
      jax.tree.map(lambda x, like: np.asarray(x, like.dtype),
                   traverse_util.unflatten_dict(trees[name]), getattr(abstract_state, name))
      for name in ('params', 'batch_stats'))
  started_fresh = sorted({path[0] for paths in fresh_paths.values() for path in paths})
  logging.info('Initialised weights from %s (%s)%s.', directory, model_config.get('source'),
               f'; fresh: {", ".join(started_fresh)}' if started_fresh else '')
  return abstract_state.replace(
      step=np.zeros([], np.int32), params=params, batch_stats=batch_stats,
      opt_state=jax.device_get(jax.jit(abstract_state.tx.init)(params)),
      ema_params=jax.tree.map(np.copy, params), ema_batch_stats=jax.tree.map(np.copy, batch_stats))


def changed_config_fields(previous: Any, current: Any, prefix: str = '') -> list[str]:
  """Dotted names of the fields that differ between two JSON configs (added/removed too)."""
  if not (isinstance(previous, dict) and isinstance(current, dict)):
    return [] if previous == current else [prefix.rstrip('.') or '<config>']
  changed = []
  for key in sorted(set(previous) | set(current)):
    if key not in previous or key not in current:
      changed.append(prefix + key)
    else:
      changed.extend(changed_config_fields(previous[key], current[key], f'{prefix}{key}.'))
  return changed


def _warn_if_config_changed(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Warns when a resumed run's config differs from the one the checkpoints were trained with.

  Resuming is bitwise identical to an uninterrupted run only with the same
  config (and code): a changed field (e.g. a new BN momentum picked up from an
  edited config file) silently changes the rest of the run.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not (_checkpoint_steps(workdir) and os.path.exists(path)):
    return
  try:
    with open(path) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    return
  changed = changed_config_fields(previous, json.loads(config.to_json_best_effort()))
  if changed:
    logging.warning('Resuming %s with a config that differs from the previous run in %s: the '
                    'result will differ from an uninterrupted run.', workdir,
                    ', '.join(changed[:10]) + (' ...' if len(changed) > 10 else ''))


def _checkpoint_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, checkpoint_lib.CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return []
  return [int(name) for name in os.listdir(directory) if name.isdigit()]


# ----------------------------------------------------------------------------
# Evaluation


def _split_by_weights(values: dict) -> dict[str, dict]:
  """{'': the raw weights' entries, 'ema_': the EMA's (prefix removed)}; 'count' in both."""
  raw = {name: value for name, value in values.items() if not name.startswith('ema_')}
  ema = {name[len('ema_'):]: value for name, value in values.items() if name.startswith('ema_')}
  if 'count' in raw:
    ema['count'] = raw['count']
  return {'': raw, 'ema_': ema}


def _evaluate_weights(p_eval_step, state, dp: parallel.DataParallel,
                      config: ml_collections.ConfigDict, task: tasks.Task) -> dict[str, float]:
  """The task's metrics of the raw ('eval_*') and EMA ('eval_ema_*') weights of `state`
  over the whole eval split."""
  sums, examples = {}, {}
  iterator = data.create_eval_iterator(config.data, process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       example_fn=task.eval_example,
                                       padding_example=task.padding_example())
  for batch in iterator:
    batch_sums, batch_examples = p_eval_step(state, dp.shard_batch(batch))
    for name, value in dp.fetch_metrics(batch_sums).items():
      sums[name] = sums.get(name, 0.0) + value
    if batch_examples:
      batch_examples = dp.gather_examples(batch_examples)
      real = batch_examples.pop('mask')
      for name, value in batch_examples.items():
        examples.setdefault(name, []).append(value[real])
  if not sums.get('count'):
    raise ValueError(f'The eval split {config.data.eval_split!r} of {config.data.dataset!r} '
                     f'yielded no examples.')
  examples = _split_by_weights({name: np.concatenate(parts) for name, parts in examples.items()})
  metrics = {}
  for prefix, weight_sums in _split_by_weights(sums).items():
    for name, value in task.eval_metrics(weight_sums, examples[prefix]).items():
      metrics[f'eval_{prefix}{name}'] = value
  return metrics


def recompute_batch_norm(p_statistics_step, state, dp: parallel.DataParallel,
                         config: ml_collections.ConfigDict, task: tasks.Task):
  """`state` with the BN averages of its raw and EMA weights replaced by the mean of the
  batch statistics of `config.train.precise_batch_norm_batches` training batches, the
  weights fixed ("precise BN", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").

  The moving averages trail weights that still move fast: early in a short run they
  describe the network of tens of steps ago (results/cpu/PROTOCOL.md, section 2). The
  batches are the training split's, augmented as in training, from a stream of their
  own (seed + PRECISE_BN_SEED_OFFSET): the same ones at every evaluation, so that a
  resumed run evaluates as an uninterrupted one and training sees the batches it would
  have seen without this.
  """
  num_batches = config.train.precise_batch_norm_batches
  iterator = data.create_train_iterator(
      config.data, seed=config.seed + PRECISE_BN_SEED_OFFSET,
      process_index=jax.process_index(), process_count=jax.process_count(),
      example_fn=task.train_example)
  total = None
  for _ in range(num_batches):
    statistics = p_statistics_step(state, dp.shard_batch(next(iterator)))
    total = statistics if total is None else jax.tree.map(jnp.add, total, statistics)
  return state.replace(**jax.tree.map(lambda x: x / num_batches, total))


def evaluate(p_eval_step, state, dp: parallel.DataParallel, config: ml_collections.ConfigDict,
             task: tasks.Task, p_statistics_step=None) -> dict[str, float]:
  """The task's metrics of the raw ('eval_*') and EMA ('eval_ema_*') weights over the
  whole eval split; with `p_statistics_step` (config.train.precise_batch_norm_batches >
  0) also those with recomputed BN statistics ('eval_precise_bn_*',
  'eval_precise_bn_ema_*'), reported beside the moving averages' ones, not instead."""
  metrics = _evaluate_weights(p_eval_step, state, dp, config, task)
  if p_statistics_step is not None:
    precise_state = recompute_batch_norm(p_statistics_step, state, dp, config, task)
    for key, value in _evaluate_weights(p_eval_step, precise_state, dp, config, task).items():
      metrics['eval_' + PRECISE_BN_PREFIX + key[len('eval_'):]] = value
  return metrics


def _write_final_metrics(workdir: str, step: int, eval_metrics: dict, counts: dict,
                         wall_time_seconds: float, task: tasks.Task) -> dict:
  """final_metrics.json: the last evaluation of the task's headline metrics, the best ones
  of its first headline metric and the throughput over all of the run's starts."""
  history = metrics_lib.read_jsonl(os.path.join(workdir, metrics_lib.METRICS_FILE))
  final = {'step': step}
  for prefix in ('', 'ema_', PRECISE_BN_PREFIX, PRECISE_BN_PREFIX + 'ema_'):
    for name, _ in task.headline:
      if f'eval_{prefix}{name}' in eval_metrics:  # precise BN only when configured
        final[f'eval_{prefix}{name}'] = eval_metrics[f'eval_{prefix}{name}']
  first = task.headline[0][0]
  for prefix in ('', 'ema_'):
    key = f'eval_{prefix}{first}'
    final[f'best_{key}'], final[f'best_{key}_step'] = metrics_lib.best_eval(history, key)
  final.update({
      'wall_time_seconds': wall_time_seconds,
      'mean_images_per_second': metrics_lib.mean_images_per_second(history),
      'params': counts['params'],
      'madds': counts['madds'],
  })
  metrics_lib.write_json(os.path.join(workdir, FINAL_METRICS_FILE), final)
  return final


def _read_json_or_none(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _print_summary(workdir: str, final: dict, task: tasks.Task) -> None:
  """The end-of-run block (`run_report.summary_text`), from final_metrics.json's numbers."""
  run_info = _read_json_or_none(os.path.join(workdir, RUN_INFO_FILE))
  print(run_report.summary_text(final, workdir, run_info, task.headline), flush=True)


# ----------------------------------------------------------------------------
# The loop


class _LibraryInfoFilter(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per save) and TFDS (a few lines per
  evaluation, and per split while the built-in dataset renders, which says so itself),
  which would bury the progress bar and the evaluation lines."""
  CHATTY_PACKAGES = tuple(f'{os.sep}{name}{os.sep}' for name in ('orbax', 'tensorflow_datasets'))

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING or
            not any(package in record.pathname for package in self.CHATTY_PACKAGES))


def _quiet_library_info_logs() -> None:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_workdir_path(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir} exists and is not a directory; pass --workdir a new '
                     f'or an existing directory.')


def _lock_workdir(workdir: str) -> workdir_lock.WorkdirLock:
  """Locks `workdir` for this run (process 0 for the job); every process learns the outcome.

  Raises UserError on every process when the workdir is in use (or cannot be
  created), so that a refused multi-host job stops everywhere instead of
  leaving its other processes waiting for process 0.
  """
  lock = workdir_lock.WorkdirLock(workdir)
  refusal = None
  if jax.process_index() == 0:
    try:
      killed = lock.acquire()
    except errors.UserError as error:
      refusal = error
    else:
      if killed:
        logging.warning('Taking over workdir %s from a run that ended without releasing it '
                        '(%s): it was killed.', workdir, workdir_lock.describe(killed))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
    if refused and refusal is None:
      refusal = errors.UserError(f'process 0 could not lock workdir {workdir}; its error line '
                                 f'says why.')
  if refusal is not None:
    raise refusal
  return lock


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.TrainState:
  """Trains (or, with config.eval_only, evaluates) as described by `config`; writes `workdir`.

  Returns the final training state (replicated on the devices).
  Raises errors.UserError (a ValueError) for an invalid config, data, init_from
  or workdir: before anything is compiled, and before anything in the workdir
  is written; NonFiniteLossError when the loss diverges, checkpoint.Preempted
  after a SIGTERM-triggered save. Holds the workdir's lock (`workdir_lock`)
  while it runs: a second run on the same workdir is refused.
  """
  start_time = time.time()
  workdir = os.path.abspath(workdir)
  lock = checkpointer = writer = None
  precision_scope = contextlib.ExitStack()
  try:
    # Until the state is ready: a refused run prints only its error line.
    with errors.logs_held_back() as show_held_logs:
      with errors.user_input():
        validate_config(config)
        _check_workdir_path(workdir)
        task = tasks.get_task(config)
      # Everything compiled from here on (initialisation, train, eval and statistics steps).
      precision_scope.enter_context(
          jax.default_matmul_precision(config.train.get('matmul_precision')))
      _quiet_library_info_logs()
      parallel.initialize_distributed(config)
      dp = parallel.DataParallel(config.train.parallel_strategy)
      process_index, process_count = jax.process_index(), jax.process_count()
      is_primary = process_index == 0
      with errors.user_input():
        data.validate_data_config(config.data, num_devices=dp.num_devices,
                                  process_count=process_count,
                                  check_dataset=task.check_dataset)
        if data.needs_preparing(config.data):
          show_held_logs()  # preparing takes a while: its log lines show as it goes
        dataset_info = data.get_dataset_info(config.data, task.num_classes)
        num_classes = dataset_info.num_classes
        _check_init_from(config, task.init_from_target(), num_classes)
        if config.eval_only and not (config.init_from or _checkpoint_steps(workdir)):
          raise ValueError(f'config.eval_only needs weights: set config.init_from to a '
                           f'pretrained directory or use a workdir with checkpoints '
                           f'({workdir} has none).')

      global_batch = config.data.batch_size
      steps_per_epoch = max(1, dataset_info.num_train_examples // global_batch)
      total_steps = optimizer_lib.total_train_steps(config, steps_per_epoch)
      resolution = config.data.resolution
      counts = task.counts(num_classes)
      logging.info('%s: %s width %s at %dpx, %d classes: %s parameters, %s MAdds.',
                   task.name, config.model.name, config.model.width_multiplier, resolution,
                   num_classes, f'{counts["params"]:,}', f'{counts["madds"]:,}')
      logging.info('%d devices in %d processes; global batch %d; %d steps per epoch; %d steps.',
                   dp.num_devices, process_count, global_batch, steps_per_epoch, total_steps)

      model = task.create_model(num_classes, batch_norm_axis_name=parallel.BATCH_AXIS)
      learning_rate_fn = optimizer_lib.create_learning_rate_schedule(config, steps_per_epoch)
      tx = optimizer_lib.create_optimizer(config, steps_per_epoch, learning_rate_fn)
      init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
      fresh_state_fn = functools.partial(state_lib.create_train_state, init_rng, model, tx,
                                         (1, resolution, resolution, 3))
      # Shapes only: initialising the network compiles for a while, and is not
      # needed to restore a checkpoint or to load pretrained weights.
      abstract_state = jax.eval_shape(fresh_state_fn)
      checkpoint_lib.check_fits(workdir, dp.replicated_shapes(abstract_state))
      load_pretrained = functools.partial(_load_pretrained, config.init_from, abstract_state,
                                          num_classes, task.init_from_target())
      # Read and checked before the workdir is touched, unless a checkpoint replaces them.
      pretrained_weights = (load_pretrained() if config.init_from and
                            not _checkpoint_steps(workdir) else None)

      # --- the workdir: locked, then the state from its checkpoint, pretrained, or fresh
      lock = _lock_workdir(workdir)
      base_rng_data = np.asarray(jax.random.key_data(dropout_rng))
      checkpointer = checkpoint_lib.Checkpointer(
          workdir, save_every_steps=config.train.checkpoint_every_steps,
          keep=config.train.keep_checkpoints)
      start_step, previous_wall_time, restored = 0, 0.0, None
      if checkpointer.all_steps():
        template = dp.replicate(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                                             abstract_state))
        restored = checkpointer.restore_latest(template)
      if restored is not None:
        state, base_rng_data, meta = restored
        start_step = int(meta['data_start_step'])
        previous_wall_time = float(meta.get('wall_time_seconds', 0.0))
        logging.info('Resuming from step %d.', start_step)
      elif config.init_from:
        if pretrained_weights is None:  # every checkpoint turned out unreadable
          pretrained_weights = load_pretrained()
        state = dp.replicate(_pretrained_state(config.init_from, *pretrained_weights,
                                               abstract_state, fresh_state_fn, num_classes))
      else:
        state = dp.replicate(fresh_state_fn())

    if is_primary:
      _warn_if_config_changed(workdir, config)
      with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
      run_info_path = os.path.join(workdir, RUN_INFO_FILE)
      starts = provenance.starts_of_run(_read_json_or_none(run_info_path), start_step,
                                        jax.devices())
      metrics_lib.write_json(run_info_path, {
          'task': task.name,
          **counts,
          'num_classes': num_classes,
          'num_devices': dp.num_devices,
          'host_allocator': allocator.active_allocator(),
          'process_count': process_count,
          'steps_per_epoch': steps_per_epoch,
          'total_steps': total_steps,
          'starts': starts,
      })
    dropout_rng = jax.random.wrap_key_data(base_rng_data)
    wall_time = lambda: previous_wall_time + time.time() - start_time

    p_eval_step = dp.wrap_eval_step(functools.partial(step_lib.eval_step,
                                                      evaluate_fn=task.evaluate,
                                                      predict_fn=task.predictor(model)))
    p_statistics_step = None
    if config.train.get('precise_batch_norm_batches', 0):
      p_statistics_step = dp.wrap_statistics_step(functools.partial(
          step_lib.batch_statistics_step,
          statistics_model=step_lib.precise_batch_norm_model(model)))
    evaluate_state = functools.partial(evaluate, p_eval_step, dp=dp, config=config, task=task,
                                       p_statistics_step=p_statistics_step)
    writer = metrics_lib.MetricsWriter(workdir, is_primary=is_primary, resume_step=start_step)
    final_metrics_path = os.path.join(workdir, FINAL_METRICS_FILE)
    if config.eval_only:
      eval_metrics = evaluate_state(state)
      writer.write(start_step, start_step / steps_per_epoch, eval_metrics)
      logging.info('Evaluation at step %d: %s', start_step, eval_metrics)
      if is_primary:
        _print_summary(workdir, _write_final_metrics(workdir, start_step, eval_metrics,
                                                     counts, wall_time(), task), task)
      return state
    if start_step >= total_steps and os.path.exists(final_metrics_path):
      logging.info('The run in %s already finished (step %d); nothing to do.', workdir,
                   start_step)
      if is_primary:
        with open(final_metrics_path) as f:
          _print_summary(workdir, json.load(f), task)
      return state
    if is_primary and os.path.exists(final_metrics_path):
      os.remove(final_metrics_path)  # the run continues (e.g. num_steps was raised)
    return _train(config, task, workdir, dp, state, dropout_rng, start_step, total_steps,
                  steps_per_epoch, learning_rate_fn, evaluate_state, checkpointer, writer,
                  counts, wall_time)
  finally:
    precision_scope.close()
    if writer is not None:
      writer.close()
    if checkpointer is not None:
      checkpointer.close()
    if lock is not None:
      lock.release()


def _train(config, task, workdir, dp, state, dropout_rng, start_step, total_steps, steps_per_epoch,
           learning_rate_fn, evaluate_state, checkpointer, writer, counts, wall_time):
  """Steps `start_step`..`total_steps - 1`, with logging, evaluation and checkpoints."""
  is_primary = jax.process_index() == 0
  global_batch = config.data.batch_size
  p_train_step = dp.wrap_train_step(
      functools.partial(step_lib.train_step, loss_fn=task.loss,
                        ema_decay=config.optimizer.ema_decay,
                        learning_rate_fn=learning_rate_fn),
      donate_state=True)
  p_all_finite = jax.jit(_all_finite)
  train_iterator = data.create_train_iterator(
      config.data, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count(),
      example_fn=task.train_example)
  preemption = checkpoint_lib.PreemptionWatcher()
  progress = tqdm.tqdm(total=total_steps, initial=start_step, disable=not is_primary,
                       unit='step', dynamic_ncols=True, smoothing=0.1,
                       desc=f'{config.model.name} {config.model.width_multiplier}')
  eval_metrics = None
  interval_losses, interval_start, interval_steps = [], None, 0
  pending = None  # (step, metrics on device) of the last dispatched update
  unlogged_first_step_seconds = None  # goes into the first train line of this start

  def check_pending():
    """Reads back the pending step's metrics; stops on a non-finite loss."""
    nonlocal pending, interval_start, interval_steps, unlogged_first_step_seconds
    if pending is None:
      return
    step, device_metrics = pending
    pending = None
    step_metrics = dp.fetch_metrics(device_metrics)
    if not math.isfinite(step_metrics['loss']):
      raise NonFiniteLossError(
          f'Training loss is {step_metrics["loss"]} at step {step}: stopping without saving. '
          f'The last good checkpoint (step {checkpointer.latest_step()}) in '
          f'{checkpointer.directory} is kept; lower config.optimizer.base_learning_rate or '
          f'check the data.')
    interval_losses.append(step_metrics)
    interval_steps += 1
    if interval_start is None:  # the first step includes compilation: not timed
      interval_start, interval_steps = time.time(), 0
    progress.update(step - progress.n)
    if step % config.train.log_every_steps == 0 or step == total_steps:
      elapsed = time.time() - interval_start
      images_per_second = (interval_steps * global_batch / elapsed
                           if interval_steps and elapsed > 0 else float('nan'))
      scalars = {f'train_{name}': float(np.mean([m[name] for m in interval_losses]))
                 for name in step_metrics if name != 'learning_rate'}
      scalars.update(learning_rate=step_metrics['learning_rate'],
                     images_per_second=images_per_second)
      if unlogged_first_step_seconds is not None:
        scalars['first_step_seconds'] = unlogged_first_step_seconds
        unlogged_first_step_seconds = None
      writer.write(step, step / steps_per_epoch, scalars)
      progress.set_postfix(loss=f'{scalars["train_loss"]:.3f}',
                           img_per_s=f'{images_per_second:.0f}', refresh=False)
      interval_losses.clear()
      interval_start, interval_steps = time.time(), 0

  def save(step):
    check_pending()  # the loss that produced this state must be finite
    if not bool(dp.fetch_metrics({'finite': p_all_finite(state.params)})['finite']):
      raise NonFiniteLossError(
          f'The parameters became non-finite at step {step}: stopping without saving. The last '
          f'good checkpoint (step {checkpointer.latest_step()}) is kept; lower '
          f'config.optimizer.base_learning_rate.')
    checkpointer.save(step, state, np.asarray(jax.random.key_data(dropout_rng)),
                      extra={'wall_time_seconds': wall_time()})

  try:
    for step in range(start_step + 1, total_steps + 1):  # `step` counts updates done
      batch = dp.shard_batch(next(train_iterator))
      dispatched = time.time()
      state, device_metrics = p_train_step(state, batch, dropout_rng)
      if step == start_step + 1:
        # Waiting for the first step alone costs one step of overlap and gives
        # its wall time with tracing and compilation (not reading the batch),
        # which is what a warm compilation cache shortens.
        jax.block_until_ready(device_metrics)
        unlogged_first_step_seconds = time.time() - dispatched
      check_pending()  # the previous step's loss, while this one runs
      pending = (step, device_metrics)
      stop = preemption.stop_requested or checkpointer.manager.reached_preemption(step)
      if step == total_steps or stop or checkpointer.should_save(step):
        save(step)
      if stop:
        checkpointer.wait()
        raise checkpoint_lib.Preempted(
            f'stopped at step {step} on request; the checkpoint is saved in '
            f'{checkpointer.directory}: re-run the same command to resume.')
      if step % config.train.eval_every_steps == 0 or step == total_steps:
        check_pending()
        eval_metrics = evaluate_state(state)
        writer.write(step, step / steps_per_epoch, eval_metrics)
        writer.flush()
        if is_primary:
          run_report.write_curves(workdir, headline=task.headline)
        progress.write(f'step {step}: {run_report.eval_line(eval_metrics, task.headline)}')
        interval_start, interval_steps = time.time(), 0  # evaluation time is not training
    check_pending()
    if eval_metrics is None:  # resumed at the end, before the final evaluation ran
      eval_metrics = evaluate_state(state)
      writer.write(total_steps, total_steps / steps_per_epoch, eval_metrics)
      if is_primary:
        run_report.write_curves(workdir, headline=task.headline)
    checkpointer.wait()
    if is_primary:
      final = _write_final_metrics(workdir, total_steps, eval_metrics, counts, wall_time(), task)
  finally:
    progress.close()
    preemption.close()
  if is_primary:
    _print_summary(workdir, final, task)
  return state
