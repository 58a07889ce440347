"""End-to-end `train_and_evaluate` on the built-in dataset and on TFDS mock data (tiny models)."""

import contextlib
import io
import json
import math
import os

from absl import logging
import jax
import numpy as np
import pytest
import tensorflow as tf

from experiments import figures
from mnv2_jax import checkpoint, data, metrics, pretrained, run_report
from mnv2_jax.train import loop
from mnv2_jax.train import step as step_lib
import train_test_utils as utils
from train_test_utils import shapes_data_dir  # noqa: F401 (fixture)

TRAIN_KEYS = {'step', 'epoch', 'train_loss', 'learning_rate', 'images_per_second'}
EVAL_KEYS = {'step', 'epoch', 'eval_loss', 'eval_top1', 'eval_top5', 'eval_ema_top1',
             'eval_ema_top5'}
RUN_INFO_KEYS = {'task', 'model', 'width_multiplier', 'resolution', 'expansion_ratio', 'params',
                 'host_allocator',
                 'params_no_bn', 'madds', 'num_classes', 'num_devices', 'process_count',
                 'steps_per_epoch', 'total_steps', 'starts'}
FINAL_KEYS = {'step', 'eval_top1', 'eval_top5', 'eval_ema_top1', 'eval_ema_top5',
              'best_eval_top1', 'best_eval_top1_step', 'best_eval_ema_top1',
              'best_eval_ema_top1_step', 'wall_time_seconds', 'mean_images_per_second',
              'params', 'madds'}
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _tensorboard_tags(workdir):
  tags = set()
  for root, _, files in os.walk(os.path.join(workdir, metrics.TENSORBOARD_DIR)):
    for name in files:
      for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
        tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, shapes_data_dir):
  """Four steps of the tiny model on the built-in dataset: (config, workdir, final state,
  what the run printed)."""
  workdir = str(tmp_path_factory.mktemp('finished_run'))
  config = utils.tiny_config(shapes_data_dir, num_steps=4)
  with contextlib.redirect_stdout(io.StringIO()) as printed:
    state = loop.train_and_evaluate(config, workdir)
  return config, workdir, state, printed.getvalue()


def _variables(state, num_classes=None, seed=0):
  """Host {'params', 'batch_stats'} of a state, optionally with a new random classifier."""
  variables = jax.tree.map(np.asarray, jax.device_get(
      {'params': state.params, 'batch_stats': state.batch_stats}))
  if num_classes is not None:
    rng = np.random.default_rng(seed)
    kernel = variables['params']['classifier']['kernel']
    variables['params']['classifier'] = {
        'kernel': rng.normal(0, 0.09, (kernel.shape[0], num_classes)).astype(np.float32),
        'bias': np.zeros(num_classes, np.float32)}
  return variables


def test_built_in_dataset_run_writes_the_documented_workdir(finished_run):
  config, workdir, _, _ = finished_run
  assert _read_json(os.path.join(workdir, 'config.json')) == json.loads(config.to_json())
  run_info = _read_json(os.path.join(workdir, 'run_info.json'))
  assert set(run_info) == RUN_INFO_KEYS
  assert run_info['num_classes'] == 10 and run_info['total_steps'] == 4
  assert run_info['num_devices'] == jax.device_count() == 8
  assert run_info['params'] == utils.count_params(config, 10)
  [start] = run_info['starts']  # where this run's numbers come from
  assert start['start_step'] == 0 and start['platform'] == 'cpu'
  assert start['versions']['jax'] == jax.__version__ and start['machine']['cpu_count'] >= 1

  lines = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_lines = [line for line in lines if 'train_loss' in line]
  eval_lines = [line for line in lines if 'eval_top1' in line]
  assert [line['step'] for line in train_lines] == [1, 2, 3, 4]  # log_every_steps=1
  assert [line['step'] for line in eval_lines] == [2, 4]  # eval_every_steps=2
  for line in train_lines:
    assert TRAIN_KEYS <= set(line) and math.isfinite(line['train_loss'])
  # The first step's time, compilation included, once, with the first train line.
  assert train_lines[0]['first_step_seconds'] > 0
  assert not any('first_step_seconds' in line for line in lines[1:])
  for line in eval_lines:
    assert EVAL_KEYS <= set(line)
    for key in ('eval_top1', 'eval_top5', 'eval_ema_top1', 'eval_ema_top5'):
      assert 0 <= line[key] <= 1
  assert all(isinstance(line['step'], int) and isinstance(line['epoch'], float) for line in lines)

  final = _read_json(os.path.join(workdir, 'final_metrics.json'))
  assert set(final) == FINAL_KEYS
  assert final['step'] == 4 and final['eval_top1'] == eval_lines[-1]['eval_top1']
  assert final['best_eval_top1'] == max(line['eval_top1'] for line in eval_lines)
  best = max(eval_lines, key=lambda line: (line['eval_ema_top1'], -line['step']))
  assert (final['best_eval_ema_top1'], final['best_eval_ema_top1_step']) == (
      best['eval_ema_top1'], best['step'])
  assert final['mean_images_per_second'] > 0
  with open(os.path.join(workdir, run_report.CURVES_FILE), 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE
  assert {'train_loss', 'learning_rate', 'eval_top1', 'eval_ema_top1'} <= _tensorboard_tags(
      workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']  # keep 2


def test_the_run_ends_with_a_summary_of_its_final_metrics(finished_run):
  _, workdir, _, printed = finished_run
  final = _read_json(os.path.join(workdir, 'final_metrics.json'))
  summary = run_report.summary_text(final, workdir,
                                    _read_json(os.path.join(workdir, 'run_info.json')))
  assert printed.rstrip().endswith(summary)
  for number in (f'{100 * final["eval_top1"]:.2f}%', f'{100 * final["eval_ema_top5"]:.2f}%',
                 f'{100 * final["best_eval_top1"]:.2f}% at step {final["best_eval_top1_step"]}',
                 f'{final["wall_time_seconds"]:.1f} s',
                 f'{final["mean_images_per_second"]:.1f} images/s',
                 f'{final["params"]:,} parameters', f'{final["madds"]:,} multiply-adds',
                 f'tensorboard --logdir {workdir}/tensorboard'):
    assert number in summary
  assert 'Downloading' not in printed


def test_curves_png_is_redrawn_for_a_finished_workdir(finished_run, capsys):
  _, workdir, _, _ = finished_run
  curves = os.path.join(workdir, run_report.CURVES_FILE)
  os.remove(curves)
  assert figures.main(['--workdir', workdir]) == 0
  assert capsys.readouterr().out.strip() == curves
  with open(curves, 'rb') as f:
    assert f.read(8) == PNG_SIGNATURE


def test_rerunning_a_finished_run_changes_nothing(finished_run, capsys):
  config, workdir, state, _ = finished_run
  before = open(os.path.join(workdir, 'metrics.jsonl')).read()
  again = loop.train_and_evaluate(config, workdir)
  assert open(os.path.join(workdir, 'metrics.jsonl')).read() == before
  final = _read_json(os.path.join(workdir, 'final_metrics.json'))
  assert run_report.summary_text(final, workdir, _read_json(
      os.path.join(workdir, 'run_info.json'))) in capsys.readouterr().out
  assert int(jax.device_get(again.step)) == 4
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_precise_batch_norm_is_reported_beside_the_moving_averages_changing_no_training_number(
    tmp_path, finished_run):
  config, workdir, _, _ = finished_run
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.precise_batch_norm_batches = 2
  precise_workdir = str(tmp_path / 'precise')
  with contextlib.redirect_stdout(io.StringIO()) as printed:
    loop.train_and_evaluate(config, precise_workdir)
  read = lambda directory: metrics.read_jsonl(os.path.join(directory, metrics.METRICS_FILE))
  history, baseline = read(precise_workdir), read(workdir)
  precise_keys = {'eval_precise_bn_top1', 'eval_precise_bn_top5', 'eval_precise_bn_loss',
                  'eval_precise_bn_ema_top1', 'eval_precise_bn_ema_top5'}
  evaluations = [row for row in history if 'eval_top1' in row]
  assert [row['step'] for row in evaluations] == [2, 4]
  assert all(precise_keys <= set(row) for row in evaluations)
  for key in ('train_loss', 'eval_top1', 'eval_ema_top1', 'eval_loss'):
    assert ([row[key] for row in history if key in row] ==
            [row[key] for row in baseline if key in row]), key
  final = _read_json(os.path.join(precise_workdir, loop.FINAL_METRICS_FILE))
  assert final['eval_precise_bn_top1'] == evaluations[-1]['eval_precise_bn_top1']
  assert final['eval_precise_bn_ema_top1'] == evaluations[-1]['eval_precise_bn_ema_top1']
  assert 'precise BN' in printed.getvalue()


def test_tfds_mock_cifar10_trains_and_evaluates(tmp_path, monkeypatch):
  utils.mock_tfds(monkeypatch)
  config = utils.tiny_config(None, num_steps=2)
  with config.unlocked():
    config.data.dataset = 'cifar10'
    config.data.eval_split = 'test'
  loop.train_and_evaluate(config, str(tmp_path))
  final = _read_json(os.path.join(tmp_path, 'final_metrics.json'))
  assert final['step'] == 2 and 0 <= final['eval_top1'] <= 1
  run_info = _read_json(os.path.join(tmp_path, 'run_info.json'))
  assert run_info['num_classes'] == 10 and run_info['steps_per_epoch'] == 48 // 16
  evals = [line for line in metrics.read_jsonl(os.path.join(tmp_path, 'metrics.jsonl'))
           if 'eval_top1' in line]
  assert [line['step'] for line in evals] == [2]


def test_nan_in_the_data_stops_within_one_step_keeping_the_last_good_checkpoint(
    tmp_path, shapes_data_dir, monkeypatch):
  bad_step = 4  # a checkpoint step: its state must not be saved
  real_iterator = data.create_train_iterator

  def iterator_with_nan(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real_iterator(*args, start_step=start_step, **kwargs),
                                 start=start_step + 1):
      if step == bad_step:
        batch = dict(batch, image=np.full_like(batch['image'], np.nan))
      yield batch

  monkeypatch.setattr(data, 'create_train_iterator', iterator_with_nan)
  config = utils.tiny_config(shapes_data_dir, num_steps=8)
  with pytest.raises(loop.NonFiniteLossError, match=f'at step {bad_step}: stopping') as error:
    loop.train_and_evaluate(config, str(tmp_path))
  assert '\n' not in str(error.value) and 'step 2' in str(error.value)
  steps = metrics.read_jsonl(os.path.join(tmp_path, 'metrics.jsonl'))
  assert max(line['step'] for line in steps) < bad_step
  assert not os.path.exists(os.path.join(tmp_path, 'final_metrics.json'))
  checkpointer = checkpoint.Checkpointer(str(tmp_path), save_every_steps=2, keep=2)
  assert checkpointer.all_steps() == [2]
  checkpointer.close()


def test_bad_config_fails_before_anything_is_compiled_or_written(tmp_path, monkeypatch):
  def no_compilation(*args, **kwargs):
    raise AssertionError('compiled before validating the config')

  monkeypatch.setattr(jax, 'jit', no_compilation)
  monkeypatch.setattr(jax, 'pmap', no_compilation)
  for field, value, message in [
      ('train.parallel_strategy', 'ddp', 'config.train.parallel_strategy must be one of'),
      ('data.dataset', 'no_such_dataset', 'no_such_dataset'),
      ('data.batch_size', 12, '12'),  # not divisible by the 8 devices
      ('train.precise_batch_norm_batches', -1, 'config.train.precise_batch_norm_batches must be'),
      ('train.matmul_precision', 'fast', 'config.train.matmul_precision must be'),
  ]:
    config = utils.tiny_config(None, num_steps=2)
    section, name = field.split('.')
    with config.unlocked():
      config[section][name] = value
    with pytest.raises(ValueError, match=message):
      loop.train_and_evaluate(config, str(tmp_path / 'run'))
    assert not os.path.exists(tmp_path / 'run')


def test_the_train_and_eval_steps_compile_under_the_configured_matmul_precision(
    tmp_path, monkeypatch, shapes_data_dir):
  traced_under = {}

  def recording(name, step_fn):
    def step(*args, **kwargs):  # runs while jax traces the step
      traced_under.setdefault(name, set()).add(jax.config.jax_default_matmul_precision)
      return step_fn(*args, **kwargs)
    return step

  for name in ('train_step', 'eval_step'):
    monkeypatch.setattr(step_lib, name, recording(name, getattr(step_lib, name)))
  config = utils.tiny_config(shapes_data_dir, num_steps=2)
  config.train.matmul_precision = 'highest'
  with contextlib.redirect_stdout(io.StringIO()):
    loop.train_and_evaluate(config, str(tmp_path))
  assert traced_under == {'train_step': {'highest'}, 'eval_step': {'highest'}}
  assert jax.config.jax_default_matmul_precision is None  # restored after the run


def test_pretrained_weights_evaluate_like_the_run_that_trained_them(tmp_path, finished_run):
  config, workdir, state, _ = finished_run
  config = config.copy_and_resolve_references()
  pretrained.save_pretrained(tmp_path / 'pretrained', _variables(state),
                             utils.model_config(config, 10))
  with config.unlocked():
    config.init_from = str(tmp_path / 'pretrained')
    config.eval_only = True
  loop.train_and_evaluate(config, str(tmp_path / 'eval'))
  final = _read_json(os.path.join(tmp_path, 'eval', 'final_metrics.json'))
  trained = _read_json(os.path.join(workdir, 'final_metrics.json'))
  assert final['step'] == 0
  assert final['eval_top1'] == trained['eval_top1']  # the raw weights of the run
  assert final['eval_ema_top1'] == final['eval_top1']  # the EMA starts equal
  assert not os.listdir(os.path.join(tmp_path, 'eval', 'checkpoints'))


def test_pretrained_weights_of_another_width_are_refused_naming_the_field(
    tmp_path, finished_run):
  config, _, state, _ = finished_run
  config = config.copy_and_resolve_references()
  pretrained.save_pretrained(tmp_path / 'pretrained', _variables(state),
                             dict(utils.model_config(config, 10), width_multiplier=0.5))
  with config.unlocked():
    config.init_from = str(tmp_path / 'pretrained')
  with pytest.raises(ValueError, match='width_multiplier: checkpoint has 0.5, config wants 0.35'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_fine_tuning_with_other_classes_reinitialises_the_classifier(
    tmp_path, finished_run, monkeypatch):
  config, _, state, _ = finished_run
  config = config.copy_and_resolve_references()
  source = _variables(state, num_classes=7)
  pretrained.save_pretrained(tmp_path / 'pretrained', source, utils.model_config(config, 7))
  with config.unlocked():
    config.init_from = str(tmp_path / 'pretrained')
    config.train.num_steps = 1
  warnings = []
  monkeypatch.setattr(logging, 'warning', lambda message, *args: warnings.append(message % args))
  tuned = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert any('7 classes, the dataset 10: re-initialising the classifier' in w
             for w in warnings), warnings
  assert tuned.params['classifier']['kernel'].shape == (1280, 10)
  # One TF1-RMSProp step moves a weight by at most lr * sqrt(10) (accumulator
  # starting at 1, eps 1): every other layer still holds the loaded weights.
  learning_rate = metrics.read_jsonl(os.path.join(tmp_path, 'run', 'metrics.jsonl'))[0][
      'learning_rate']
  for name in ('stem_conv', 'block_5', 'last_conv'):
    for loaded, now in zip(jax.tree.leaves(source['params'][name]),
                           jax.tree.leaves(jax.device_get(tuned.params[name]))):
      assert np.max(np.abs(np.asarray(now) - loaded)) <= learning_rate * np.sqrt(10) + 1e-7
