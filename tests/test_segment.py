"""python -m mnv2_jax.segment: a trained segmentation run's predictions on image files.

A workdir written as the training loop writes it (module fixture: 64 px, OS 16)
with known weights: the command's correctness does not need a good model, and the
tests compute the expected labels themselves (`model.apply` and argmax).
"""

import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from configs import deeplab_default, default, ssdlite_default
from mnv2_jax import checkpoint, segment
from mnv2_jax.data import scenes
from mnv2_jax.tasks import segmentation
from mnv2_jax.train import loop
from mnv2_jax.train import state as state_lib

RESOLUTION = 64
NUM_CLASSES = 11  # configs/deeplab_default.py: background and the 10 shapes of 1.2.0


def _config(data_dir):
  config = deeplab_default.get_config(f'res={RESOLUTION},batch=16,steps=2')
  with config.unlocked():
    config.data.data_dir = data_dir
    config.data.update(num_train_examples=32, num_test_examples=16,
                       render_resolution=RESOLUTION, eval_split='train', eval_batch_size=16)
    config.model.output_stride = 16  # a third of OS 8's multiply-adds
    config.train.update(eval_every_steps=2, checkpoint_every_steps=2, log_every_steps=1)
  return config


def _initialised(config, seed):
  """Variables of the run's network as `model.init` draws them, the residual branches live."""
  config = config.copy_and_resolve_references()
  config.model.zero_init_residual = False  # the same variables; only their values differ
  model = segmentation.Segmentation(config).create_model(NUM_CLASSES, 'batch')
  return jax.tree.map(np.asarray, jax.jit(lambda: model.init(
      jax.random.key(seed), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)), train=False))())


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(config, workdir, {'ema': variables, 'raw': variables}) of a segmentation workdir.

  The workdir holds what the loop writes (config.json, run_info.json, a checkpoint
  saved by its Checkpointer) with freshly initialised network variables, seed 1 as
  the raw and seed 2 as the EMA ones, under which each pixel's content picks its
  class; no training step is compiled (the command only reads; a trained run's
  workdir is read in tests/test_segmentation_task.py). The task's residual branches
  are live, so that the head's features vary across pixels.
  """
  config = _config(None)
  workdir = tmp_path_factory.mktemp('segmentation_run')
  (workdir / loop.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
  (workdir / loop.RUN_INFO_FILE).write_text(json.dumps(
      {'task': 'segmentation', 'num_classes': NUM_CLASSES}))
  weights = {'raw': _initialised(config, 1), 'ema': _initialised(config, 2)}
  state = state_lib.TrainState(
      step=np.ones([], np.int32), apply_fn=None, tx=None, opt_state={},
      params=weights['raw']['params'], batch_stats=weights['raw']['batch_stats'],
      ema_params=weights['ema']['params'], ema_batch_stats=weights['ema']['batch_stats'])
  checkpointer = checkpoint.Checkpointer(str(workdir), save_every_steps=1, keep=3,
                                         async_save=False)
  checkpointer.save(1, state, np.zeros(2, np.uint32))
  checkpointer.close()
  return config, str(workdir), weights


def _expected_labels(config, variables, image):
  """The labels of `image` computed here: the evaluation's example, `model.apply`, argmax,
  the unpadded region (the longer side is RESOLUTION), nearest-neighbour to the image size."""
  task = segmentation.Segmentation(config)
  height, width = image.shape[:2]
  example = task.eval_example({'image': tf.constant(image),
                               'segmentation_mask': tf.zeros([height, width, 1], tf.uint8)})
  model = task.create_model(NUM_CLASSES, 'batch')
  predict = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
  labels = np.asarray(predict(variables, example['image'].numpy()[None]))[0]
  scale = RESOLUTION / max(height, width)
  rows, cols = round(height * scale), round(width * scale)
  assert np.all(example['label'].numpy()[rows:] == segmentation.IGNORE_LABEL)
  assert np.all(example['label'].numpy()[:rows, :cols] == 0)
  cropped = labels[:rows, :cols, None]
  return tf.image.resize(cropped, [height, width], method='nearest').numpy()[..., 0]


def _image(height, width, seed=0):
  """Blocks of random colours with a bright square: something for the network to label."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3))
  image = np.kron(blocks, np.ones((8, 8, 1), np.int64))[:height, :width].astype(np.uint8)
  image[height // 4:height // 2, width // 4:width // 2] = 255
  return image


def _save(path, image):
  PIL.Image.fromarray(image).save(path)
  return str(path)


def _run(argv, capsys):
  status = segment.main(argv)
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def _refusal(argv, capsys):
  """The one `error:` line of a refused command line (status 2, nothing on stdout)."""
  status, out, err = _run(argv, capsys)
  lines = err.strip().splitlines()
  assert status == 2 and out == '' and len(lines) == 1 and lines[0].startswith('error: '), err
  return lines[0]


# --- without a model ---------------------------------------------------------------


def test_the_palette_is_pascal_vocs_and_the_overlay_tints_only_non_background_pixels():
  colours = segment.palette(300)
  assert colours[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                                  [0, 0, 128]]
  # VOC's person, tv/monitor and the border (255) colours.
  assert colours[[15, 20, 255]].tolist() == [[192, 128, 128], [0, 64, 128], [224, 224, 192]]
  assert len({tuple(c) for c in colours[1:256]}) == 255 and colours[256:].any(axis=1).all()
  image = np.full((3, 4, 3), 100, np.uint8)
  labels = np.array([[0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 4]])
  out = segment.overlay(image, labels, 5)
  assert out.dtype == np.uint8 and out.shape == image.shape
  np.testing.assert_array_equal(out[labels == 0], image[labels == 0])
  assert out[0, 1].tolist() == [114, 50, 50] and out[1, 2].tolist() == [50, 114, 50]
  assert out[2, 3].tolist() == [50, 50, 114]  # (100 + colour) / 2


# --- a trained workdir ----------------------------------------------------------------


def test_json_counts_equal_model_apply_and_the_overlay_changes_only_non_background(
    run, tmp_path, capsys):
  config, workdir, weights = run
  image = _image(72, 48)  # taller than wide: padded at the right
  path, out = _save(tmp_path / 'tall.png', image), str(tmp_path / 'tall_overlay.png')
  status, printed, _ = _run(['--workdir', workdir, '--json', '--out', out, path], capsys)
  assert status == 0
  record = json.loads(printed)
  assert (record['image'], record['height'], record['width'], record['overlay']) == (
      path, 72, 48, out)
  expected = _expected_labels(config, weights['ema'], image)
  assert np.any(expected != 0)  # the weights of `run` predict shapes
  counts = np.bincount(expected.reshape(-1), minlength=NUM_CLASSES)
  assert {c['label']: c['pixels'] for c in record['classes']} == {
      label: int(n) for label, n in enumerate(counts) if n}
  assert sum(c['fraction'] for c in record['classes']) == pytest.approx(1.0, abs=1e-5)
  names = ['background'] + list(scenes.class_names('1.2.0'))
  assert all(c['class'] == names[c['label']] for c in record['classes'])
  assert all((c['colour'] is None) == (c['label'] == 0) for c in record['classes'])

  drawn = np.asarray(PIL.Image.open(out).convert('RGB'))
  assert drawn.shape == image.shape
  changed = np.any(drawn != image, axis=-1)
  assert not np.any(changed & (expected == 0))
  # Where a class is predicted, the pixel moves halfway to its colour.
  colours = segment.palette(NUM_CLASSES)[expected].astype(int)
  np.testing.assert_allclose(drawn[expected != 0],
                             ((image.astype(int) + colours) / 2)[expected != 0], atol=0.5)
  # (a pixel within 1 of its colour in every channel may round back to itself)
  assert np.all(changed[(expected != 0) & np.any(abs(image - colours) > 1, axis=-1)])


def test_a_wider_than_tall_image_round_trips_to_its_own_size_with_the_raw_weights(
    run, tmp_path, capsys):
  config, workdir, weights = run
  image = _image(30, 100, seed=1)  # 64 x 19 at the network: 45 rows of padding
  path = _save(tmp_path / 'wide.jpg', image)
  image = np.asarray(PIL.Image.open(path).convert('RGB'))  # as decoded (JPEG is lossy)
  status, printed, _ = _run(['--workdir', workdir, '--raw', '--draw', str(tmp_path / 'drawn'),
                             path], capsys)
  assert status == 0
  drawn = np.asarray(PIL.Image.open(tmp_path / 'drawn' / 'wide.png'))
  assert drawn.shape == (30, 100, 3)
  counts = np.bincount(_expected_labels(config, weights['raw'], image).reshape(-1),
                       minlength=NUM_CLASSES)
  lines = [line.split('\t') for line in printed.splitlines()]
  assert all(line[0] == path for line in lines)
  names = ['background'] + list(scenes.class_names('1.2.0'))
  assert {line[1]: int(line[2]) for line in lines} == {
      names[label]: int(n) for label, n in enumerate(counts) if n}


def test_an_unreadable_image_is_refused_before_anything_is_printed_or_written(
    run, tmp_path, capsys):
  _, workdir, _ = run
  good = _save(tmp_path / 'good.png', _image(40, 40))
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'\x89PNG but not really')
  line = _refusal(['--workdir', workdir, '--draw', str(tmp_path / 'drawn'), good, str(bad)],
                  capsys)
  assert str(bad) in line and 'cannot be read as an image' in line
  assert not os.path.exists(tmp_path / 'drawn')


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize('task, get_config', [('classification', default.get_config),
                                              ('detection', ssdlite_default.get_config)])
def test_a_workdir_of_another_task_is_refused_in_one_line(tmp_path, capsys, task, get_config):
  workdir = tmp_path / task
  workdir.mkdir()
  (workdir / 'config.json').write_text(get_config().to_json())
  (workdir / 'run_info.json').write_text(json.dumps({'num_classes': 10}))
  (workdir / 'checkpoints').mkdir()
  line = _refusal(['--workdir', str(workdir), '--out', str(tmp_path / 'x.png'), __file__],
                  capsys)
  assert f'is a {task} run' in line and 'segmentation workdir' in line
  assert not os.path.exists(tmp_path / 'x.png')


def test_a_segmentation_workdir_without_a_finished_checkpoint_is_refused(tmp_path, capsys):
  workdir = tmp_path / 'starting'
  (workdir / 'checkpoints').mkdir(parents=True)
  (workdir / 'config.json').write_text(_config(None).to_json())
  (workdir / 'run_info.json').write_text(json.dumps({'num_classes': NUM_CLASSES}))
  image = _save(tmp_path / 'a.png', _image(16, 16))
  line = _refusal(['--workdir', str(workdir), image], capsys)
  assert 'has no finished checkpoint' in line and str(workdir) in line


def test_out_with_two_images_and_other_bad_outputs_are_refused(tmp_path, capsys):
  a, b = (_save(tmp_path / name, _image(16, 16)) for name in ('a.png', 'b.jpg'))
  workdir = str(tmp_path / 'never_read')
  out = str(tmp_path / 'mask.png')
  assert '--out names one file, and 2 images' in _refusal(
      ['--workdir', workdir, '--out', out, a, b], capsys)
  assert 'ending in .png' in _refusal(['--workdir', workdir, '--out', out + '.jpg', a], capsys)
  assert 'is a directory' in _refusal(['--workdir', workdir, '--out', str(tmp_path), a], capsys)
  assert 'not allowed with argument' in _refusal(
      ['--workdir', workdir, '--out', out, '--draw', str(tmp_path / 'd'), a], capsys)
  other = tmp_path / 'other'
  other.mkdir()
  c = _save(other / 'a.jpg', _image(16, 16))
  assert 'would both be drawn to' in _refusal(
      ['--workdir', workdir, '--draw', str(tmp_path / 'd'), a, c], capsys)
  assert sorted(os.listdir(tmp_path)) == ['a.png', 'b.jpg', 'other']
