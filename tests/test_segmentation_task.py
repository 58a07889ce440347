"""Semantic segmentation in the one training loop: the task's loss, mIOU, examples, checks, counts.

One short run of `train_and_evaluate` on the built-in segmentation scenes
(module fixture, on the eight fake CPU devices of conftest.py) serves the
end-to-end, resume and learning tests; everything else runs without compiling
a network.
"""

import contextlib
import io
import json
import math
import os
import shutil

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import pytest
import tensorflow as tf

from configs import deeplab_default
from mnv2_jax import data, segment, tasks
from mnv2_jax.data import datasets
from mnv2_jax.stats import segmentation as segmentation_stats
from mnv2_jax.tasks import segmentation
from mnv2_jax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = segmentation.IGNORE_LABEL
RESOLUTION = 64
# The loop's run: 32 scenes (2 batches of 16), evaluated on the same scenes.
RUN_STEPS, EVAL_EVERY, CHECKPOINT_EVERY = 200, 100, 50
RUN_DATA = dict(num_train_examples=32, num_test_examples=16, render_resolution=RESOLUTION,
                eval_split='train', eval_batch_size=32)
NUM_CLASSES = 11  # configs/deeplab_default.py: background and the 10 shapes of 1.2.0


def _config(data_dir=None, **arg) -> ml_collections.ConfigDict:
  arg = ','.join(f'{key}={value}' for key, value in {'res': RESOLUTION, 'batch': 16,
                                                    **arg}.items())
  config = deeplab_default.get_config(arg)
  with config.unlocked():
    config.data.data_dir = data_dir
    config.data.update(RUN_DATA)
  return config


def _read_json(path):
  with open(path) as f:
    return json.load(f)


# --- loss and metrics -----------------------------------------------------------


def test_the_loss_averages_over_the_non_ignored_pixels_only():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 4, 4, 5)), jnp.float32)
  labels = rng.integers(0, 5, size=(2, 4, 4))
  labels[0, :2] = IGNORE
  labels[1, :, 3] = IGNORE
  labels = jnp.asarray(labels, jnp.int32)
  valid = np.asarray(labels) != IGNORE
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(
      logits[valid], labels[valid])
  loss, metrics = segmentation.segmentation_loss(logits, {'label': labels})
  np.testing.assert_allclose(loss, jnp.mean(per_pixel), rtol=1e-6)
  assert metrics['loss'] == loss
  np.testing.assert_allclose(
      metrics['pixel_accuracy'],
      np.mean(np.argmax(np.asarray(logits), -1)[valid] == np.asarray(labels)[valid]), rtol=1e-6)

  # The ignored pixels' logits change nothing and get no gradient.
  noisy = jnp.where(jnp.asarray(valid)[..., None], logits, 100.0 * logits)
  assert segmentation.segmentation_loss(noisy, {'label': labels})[0] == loss
  grad = jax.grad(lambda x: segmentation.segmentation_loss(x, {'label': labels})[0])(logits)
  assert np.all(np.asarray(grad)[~valid] == 0) and np.any(np.asarray(grad)[valid] != 0)
  # A batch of padding only: zero, not NaN.
  all_ignored = jnp.full_like(labels, IGNORE)
  assert segmentation.segmentation_loss(logits, {'label': all_ignored})[0] == 0


def _evaluate(predictions, labels, mask, num_classes):
  logits = 10.0 * jax.nn.one_hot(jnp.asarray(predictions), num_classes)
  task = segmentation.Segmentation(_config())
  sums, examples = task.evaluate(logits, {'label': jnp.asarray(labels, jnp.int32)},
                                 jnp.asarray(mask, jnp.float32))
  assert examples == {}
  return task, jax.tree.map(np.asarray, sums)


def test_miou_of_the_confusion_matrix_equals_a_hand_computation():
  labels = [[[0, 0, 1, 1], [2, 2, IGNORE, 0]],
            [[1, 1, 1, 1], [2, 2, 2, 2]]]  # a padding example: counts nowhere
  predictions = [[[0, 1, 1, 1], [2, 0, 2, 0]],
                 [[0, 0, 0, 0], [0, 0, 0, 0]]]
  # 4 classes: class 3 is in neither the ground truth nor the predictions.
  task, sums = _evaluate(predictions, labels, [1, 0], num_classes=4)
  np.testing.assert_array_equal(sums['confusion_matrix'], [[2, 1, 0, 0],
                                                           [0, 2, 0, 0],
                                                           [1, 0, 1, 0],
                                                           [0, 0, 0, 0]])
  assert sums['pixels'] == 7
  # IoU: class 0 2 / (3 + 3 - 2), class 1 2 / (2 + 3 - 2), class 2 1 / (2 + 1 - 1); class 3 none.
  metrics = task.eval_metrics(dict(sums, count=1.0), {})
  assert metrics['miou'] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
  assert metrics['pixel_accuracy'] == pytest.approx(5 / 7)
  assert math.isfinite(metrics['loss'])


def test_predicting_background_everywhere_scores_the_background_iou_over_the_classes_present():
  labels = np.zeros((1, 4, 4), np.int32)
  labels[0, :2, :2] = 1
  labels[0, 3, 3] = 2
  task, sums = _evaluate(np.zeros_like(labels), labels, [1], num_classes=21)
  metrics = task.eval_metrics(dict(sums, count=1.0), {})
  assert metrics['miou'] == pytest.approx((11 / 16) / 3)
  assert metrics['pixel_accuracy'] == pytest.approx(11 / 16)


# --- examples -------------------------------------------------------------------

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def _block_example(height=80, width=48, block=8, seed=0):
  """A mask of 8x8 blocks of labels 0-4 and an image that shows each label in its colour
  (encoded as PNG: lossless), as a TFDS example of the built-in dataset would be."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, len(PALETTE), size=(height // block, width // block))
  mask = np.kron(blocks, np.ones((block, block), np.int64)).astype(np.uint8)
  image = PALETTE[mask]
  return ({'image': tf.io.encode_png(image), 'segmentation_mask': tf.constant(mask[..., None])},
          mask)


def _colour_to_signed(labels):
  return PALETTE[labels].astype(np.float32) / 127.5 - 1


def _uniform_neighbourhood(labels):
  """True where the 3x3 neighbourhood has one label (never on the border: a crop's edge
  pixel may blend in a neighbour that the crop cut away)."""
  padded = np.pad(labels, 1, constant_values=-1)
  same = np.ones(labels.shape, bool)
  for dy in range(3):
    for dx in range(3):
      same &= padded[dy:dy + labels.shape[0], dx:dx + labels.shape[1]] == labels
  return same


def _train_example(example, seed, **section):
  config = _config()
  with config.unlocked():
    config.segmentation.update(section)
  task = segmentation.Segmentation(config)
  out = task.train_example(example, tf.constant(seed, tf.int64))
  return {name: value.numpy() for name, value in out.items()}


def test_without_scaling_the_crop_and_flip_move_image_and_mask_together_exactly():
  example, mask = _block_example()  # 80 x 48: cropped in height, padded in width
  flipped = set()
  for seed in range(12):
    out = _train_example(example, [seed, 3], min_scale_factor=1.0, max_scale_factor=1.0)
    image, labels = out['image'], out['label']
    assert image.shape == (RESOLUTION, RESOLUTION, 3) and labels.shape == (RESOLUTION,) * 2
    real = labels != IGNORE
    np.testing.assert_array_equal(image[real], _colour_to_signed(labels[real]))
    np.testing.assert_array_equal(image[~real], 0.0)  # the padding: mean grey
    assert real.sum() == 64 * 48  # 48 columns of the image, 16 of padding
    # The padding is on the right of the image, on the left when flipped.
    flipped.add(bool(real[:, -1].all()))
    # The window is one of the image's 17 vertical offsets: the rows match a crop of the mask.
    columns = labels[:, real[0]] if not real[:, -1].all() else labels[:, real[0]][:, ::-1]
    assert any(np.array_equal(columns, mask[top:top + 64]) for top in range(17))
  assert flipped == {True, False}


def test_scaled_examples_keep_image_and_mask_aligned():
  example, _ = _block_example()
  sizes = set()
  for seed in range(16):
    out = _train_example(example, [seed, 7])
    image, labels = out['image'], out['label']
    sizes.add(int((labels != IGNORE).sum()))
    inside = _uniform_neighbourhood(labels)
    real = inside & (labels != IGNORE)
    # Bilinear samples of one colour are that colour; the ignored padding is grey.
    np.testing.assert_allclose(image[real], _colour_to_signed(labels[real]), atol=1e-5)
    np.testing.assert_allclose(image[inside & (labels == IGNORE)], 0.0, atol=1e-5)
  assert len(sizes) > 3  # the scale varies (0.5-2.0 by 0.25)


def test_the_same_seed_gives_the_same_example_and_another_seed_another():
  example, _ = _block_example()
  first, again = (_train_example(example, [5, 11]) for _ in range(2))
  other = _train_example(example, [5, 12])
  for name in ('image', 'label'):
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.array_equal(first['label'], other['label'])


def test_eval_examples_scale_the_longer_side_and_pad_bottom_right():
  example, mask = _block_example(height=128, width=96)
  task = segmentation.Segmentation(_config())
  out = {name: value.numpy() for name, value in task.eval_example(example).items()}
  labels = out['label']
  assert labels.shape == (RESOLUTION, RESOLUTION) and out['image'].shape == (64, 64, 3)
  np.testing.assert_array_equal(labels[:, :48], mask[1::2, 1::2])  # nearest, half-pixel
  assert np.all(labels[:, 48:] == IGNORE) and np.all(out['image'][:, 48:] == 0)
  padding = task.padding_example()
  assert np.all(padding['label'].numpy() == IGNORE) and np.all(padding['image'].numpy() == 0)


# --- config, dataset and counts ------------------------------------------------------


@pytest.mark.parametrize('field, value, message', [
    ('model.name', 'mobilenet_v2', "config.model.name must be 'deeplabv3'"),
    ('model.backbone', 'resnet', 'config.model.backbone must be one of'),
    ('model.width_multiplier', 0, 'config.model.width_multiplier must be'),
    ('model.output_stride', 4, r'config.model.output_stride must be one of \[8, 16, 32\]'),
    ('model.output_stride', True, 'config.model.output_stride must be one of'),
    ('model.aspp', 'yes', 'config.model.aspp must be True or False'),
    ('model.dropout_rate', 1.0, r'config.model.dropout_rate must be a number in \[0, 1\)'),
    ('model.batch_norm_momentum', 1.5, 'config.model.batch_norm_momentum must be'),
    ('model.depthwise_impl', 'fast', 'config.model.depthwise_impl must be one of'),
    ('model.dtype', 'float16', 'config.model.dtype must be one of'),
    ('model.kernel_init', 'zeros', 'config.model.kernel_init must be one of'),
    ('model.zero_init_residual', 1, 'config.model.zero_init_residual must be True or False'),
    ('model.num_classes', 1, 'config.model.num_classes must be None'),
    ('segmentation.ignore_label', 256, r'config.segmentation.ignore_label must be an integer in'),
    ('segmentation.min_scale_factor', 0.0, 'config.segmentation.min_scale_factor must be'),
    ('segmentation.max_scale_factor', 0.25, r'max_scale_factor must be a number >= '
                                            r'min_scale_factor \(0.5\), got 0.25'),
    ('segmentation.scale_factor_step_size', -1, 'scale_factor_step_size must be'),
    ('segmentation.eval_output_stride', 4, 'config.segmentation.eval_output_stride must be'),
    ('segmentation.eval_multi_scale_flip', 'yes',
     'config.segmentation.eval_multi_scale_flip must be True or False'),
])
def test_a_bad_config_field_is_one_line_naming_it(field, value, message):
  config = _config()
  section, name = field.split('.')
  with config.unlocked(), config.ignore_type():  # a Python config can hold any type
    config[section][name] = value
  with pytest.raises(ValueError, match=message) as error:
    loop.validate_config(config)
  assert '\n' not in str(error.value) and repr(value) in str(error.value)


def test_mobilenet_v1_has_no_residual_branches_to_start_at_zero():
  config = _config()
  with config.unlocked():
    config.model.backbone = 'mobilenet_v1'
  with pytest.raises(ValueError, match='config.model.zero_init_residual must be False with '
                                       'the mobilenet_v1 backbone'):
    loop.validate_config(config)


def test_a_config_without_the_segmentation_section_is_refused_naming_it():
  config = _config()
  with config.unlocked():
    del config['segmentation']
  with pytest.raises(ValueError, match='config.segmentation must be a ConfigDict section'):
    loop.validate_config(config)


def test_a_dataset_without_masks_is_refused_in_one_line(tmp_path):
  config = _config(str(tmp_path))
  with config.unlocked():
    config.data.dataset = 'procedural_shapes'  # classification: image and label
  with pytest.raises(ValueError, match="no 'segmentation_mask' feature") as error:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert '\n' not in str(error.value) and not os.path.exists(tmp_path / 'run')


class _OtherBuilder:
  name = 'voc2012_segmentation'


def test_the_number_of_classes_comes_from_the_built_in_dataset_or_the_config():
  config = _config()
  task = segmentation.Segmentation(config)
  with config.unlocked():
    config.data.dataset_version = '2.0.0'
  builder = datasets.get_builder(config.data)  # not rendered: its config is enough
  assert task.num_classes(builder) == 21  # background + the 20 shapes of 2.0.0
  with config.unlocked():
    config.data.dataset_version = '1.2.0'
  assert task.num_classes(datasets.get_builder(config.data)) == 11
  with config.unlocked():
    config.model.num_classes = 5
  with pytest.raises(ValueError, match='config.model.num_classes must be None or 11'):
    task.num_classes(datasets.get_builder(config.data))
  assert task.num_classes(_OtherBuilder()) == 5
  with config.unlocked():
    config.model.num_classes = None
  with pytest.raises(ValueError, match="number of classes of .*, background included"):
    task.num_classes(_OtherBuilder())
  with config.unlocked():
    config.model.num_classes, config.segmentation.ignore_label = 30, 20
  with pytest.raises(ValueError, match=r'ignore_label must be >= the number of classes \(30\)'):
    task.num_classes(_OtherBuilder())


@pytest.mark.parametrize('backbone, output_stride, aspp, aspp_convolution', [
    ('mobilenet_v2', 16, False, 'regular'), ('mobilenet_v2', 8, True, 'regular'),
    ('mobilenet_v1', 16, True, 'separable')])
def test_counts_equal_the_parameters_of_model_init(backbone, output_stride, aspp,
                                                   aspp_convolution):
  config = _config()
  with config.unlocked():
    config.model.update(backbone=backbone, output_stride=output_stride, aspp=aspp,
                        aspp_convolution=aspp_convolution,
                        zero_init_residual=backbone == 'mobilenet_v2')
  task = segmentation.Segmentation(config)
  counts = task.counts(21)
  model = task.create_model(21, batch_norm_axis_name='batch')
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, RESOLUTION, RESOLUTION, 3))))
  assert counts['params'] == sum(x.size for x in jax.tree.leaves(shapes['params']))
  assert counts['madds'] > 0 and counts['model'] == f'deeplabv3_{backbone}'
  assert (counts['output_stride'], counts['aspp'], counts['resolution']) == (
      output_stride, aspp, RESOLUTION)


@pytest.mark.parametrize('spec', ['configs/deeplab_default.py',
                                  'configs/deeplab_default.py:width=0.5,res=96,batch=32,steps=10'])
def test_the_config_loads_as_main_loads_it_and_is_valid(spec):
  argv = ['main', f'--config={os.path.join(REPO, spec)}', '--config.model.aspp=True']
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  loop.validate_config(config)
  assert config.task == 'segmentation' and config.model.aspp
  if ':' in spec:
    assert (config.model.width_multiplier, config.data.resolution, config.data.batch_size,
            config.train.num_steps) == (0.5, 96, 32, 10)
  with open(os.path.join(REPO, 'configs/deeplab_default.py')) as f:
    assert 'python -m mnv2_jax.main --config configs/deeplab_default.py' in f.read()


def test_zero_init_residual_starts_the_backbones_residual_branches_at_zero():
  model = segmentation.Segmentation(_config()).create_model(NUM_CLASSES, 'batch')
  params = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))()['params']
  backbone = params['backbone']
  assert not np.any(backbone['block_2']['project_bn']['scale'])  # same channels in and out
  assert np.all(backbone['block_1']['project_bn']['scale'] == 1)  # stride 2: no shortcut


def test_the_task_is_registered():
  assert isinstance(tasks.get_task(_config()), segmentation.Segmentation)


# --- the training loop ---------------------------------------------------------------


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """RUN_STEPS steps on 32 scenes, evaluated on them: (config, workdir, final weights).

  configs/deeplab_default.py made cheap and quick to fit, so that the run says
  that the loop, the loss and the examples learn the task (generalisation is
  measured by the config's runs, docs/segmentation.md): output stride 16 (a
  third of the multiply-adds), no random scale, a 6.7x higher learning rate
  and the BN statistics of the whole batch (sync_batch_norm: 2 images a fake
  device are too few). Measured on one device: EMA mIOU 0.29 after 200 steps,
  3.5x predicting background everywhere.
  """
  config = _config(str(tmp_path_factory.mktemp('tfds')))
  with config.unlocked():
    config.model.output_stride = 16
    config.segmentation.update(min_scale_factor=1.0, max_scale_factor=1.0)
    config.optimizer.base_learning_rate = 0.06
    config.train.sync_batch_norm = True
    config.train.num_steps = RUN_STEPS
    config.train.eval_every_steps = EVAL_EVERY
    config.train.checkpoint_every_steps = CHECKPOINT_EVERY  # 2 kept: 150 and 200
    config.train.log_every_steps = 50
  workdir = str(tmp_path_factory.mktemp('segmentation_run'))
  with contextlib.redirect_stdout(io.StringIO()):
    state = loop.train_and_evaluate(config, workdir)
  weights = jax.tree.map(np.asarray, jax.device_get(
      {'params': state.params, 'batch_stats': state.batch_stats, 'ema': state.ema_params}))
  return config, workdir, weights


def test_the_loop_writes_the_segmentation_metrics_and_counts(run):
  config, workdir, _ = run
  final = _read_json(os.path.join(workdir, loop.FINAL_METRICS_FILE))
  assert final['step'] == RUN_STEPS
  for key in ('eval_miou', 'eval_ema_miou', 'eval_pixel_accuracy', 'eval_ema_pixel_accuracy'):
    assert 0 <= final[key] <= 1, key
  run_info = _read_json(os.path.join(workdir, loop.RUN_INFO_FILE))
  assert run_info['task'] == 'segmentation' and run_info['num_classes'] == NUM_CLASSES
  assert run_info['model'] == 'deeplabv3_mobilenet_v2' and run_info['output_stride'] == 16
  assert run_info['params'] == final['params'] == segmentation.Segmentation(config).counts(
      NUM_CLASSES)['params']
  lines = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert all(math.isfinite(line['train_loss']) for line in lines if 'train_loss' in line)
  assert {'train_pixel_accuracy', 'eval_loss', 'eval_ema_loss'} <= set().union(*lines)
  assert [line['step'] for line in lines if 'eval_miou' in line] == [100, 200]


def _background_only_miou(config) -> float:
  """The mIOU of predicting background everywhere on the eval split."""
  task = segmentation.Segmentation(config)
  confusion = np.zeros((NUM_CLASSES, NUM_CLASSES))
  for batch in data.create_eval_iterator(config.data, example_fn=task.eval_example,
                                         padding_example=task.padding_example()):
    labels = batch['label'][batch['mask']]
    confusion[:, 0] += np.bincount(labels[labels != IGNORE], minlength=NUM_CLASSES)
  return segmentation.mean_iou(confusion)


def test_a_few_hundred_steps_learn_the_scenes_far_beyond_predicting_background(run):
  # On the scenes it trained on (see `run`).
  config, workdir, _ = run
  baseline = _background_only_miou(config)
  final = _read_json(os.path.join(workdir, loop.FINAL_METRICS_FILE))
  assert 0.05 < baseline < 0.12
  assert final['eval_ema_miou'] > 2.5 * baseline, (final, baseline)


def test_the_segment_command_finds_the_shapes_of_a_scene_the_run_trained_on(
    run, tmp_path, capsys):
  config, workdir, _ = run
  builder = datasets.get_builder(config.data)
  scene = next(iter(builder.as_dataset(split='train').take(1)))
  image_path = str(tmp_path / 'scene.png')
  tf.io.write_file(image_path, tf.io.encode_png(scene['image']))
  assert segment.main(['--workdir', workdir, '--json', image_path]) == 0
  record = json.loads(capsys.readouterr().out)
  predicted = {entry['label'] for entry in record['classes'] if entry['label'] != 0}
  present = set(np.unique(scene['segmentation_mask'].numpy())) - {0}
  assert predicted & present, (predicted, present)
  assert sum(entry['fraction'] for entry in record['classes']) == pytest.approx(1.0)


def test_run_info_counts_the_evaluation_as_configured():
  """eval_madds: one image evaluated at eval_output_stride, all 12 passes with MF."""
  config = _config()
  counts = lambda: segmentation.Segmentation(config).counts(NUM_CLASSES)
  trained = counts()
  assert (trained['eval_output_stride'], trained['eval_multi_scale_flip']) == (8, False)
  assert trained['eval_madds'] == trained['madds']
  with config.unlocked():
    config.model.output_stride = 16
  at_16 = counts()
  with config.unlocked():
    config.segmentation.update(eval_output_stride=8, eval_multi_scale_flip=True)
  evaluated = counts()
  assert evaluated['madds'] == at_16['madds'] and evaluated['output_stride'] == 16
  assert evaluated['eval_madds'] == segmentation_stats.count_deeplab_model(
      'deeplabv3_mobilenet_v2', RESOLUTION, 8, config.model.aspp, multi_scale_flip=True,
      num_classes=NUM_CLASSES, width_multiplier=config.model.width_multiplier,
      convention='exact')['madds']
  assert evaluated['eval_madds'] > 12 * trained['madds'] > 12 * at_16['madds']


def test_a_resumed_run_ends_bitwise_like_the_uninterrupted_one(run):
  config, workdir, weights = run
  # Back to step 150, as if the run had been killed after saving it.
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert sorted(os.listdir(checkpoints), key=int) == ['150', str(RUN_STEPS)]
  shutil.rmtree(os.path.join(checkpoints, str(RUN_STEPS)))
  uninterrupted = _read_json(os.path.join(workdir, loop.FINAL_METRICS_FILE))
  os.remove(os.path.join(workdir, loop.FINAL_METRICS_FILE))
  with contextlib.redirect_stdout(io.StringIO()):
    state = loop.train_and_evaluate(config, workdir)
  final = _read_json(os.path.join(workdir, loop.FINAL_METRICS_FILE))
  assert final['step'] == RUN_STEPS
  for key in ('eval_miou', 'eval_ema_miou', 'eval_pixel_accuracy'):
    assert final[key] == uninterrupted[key], key
  resumed = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats,
                            'ema': state.ema_params})
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(weights)):
    np.testing.assert_array_equal(np.asarray(a), b)
