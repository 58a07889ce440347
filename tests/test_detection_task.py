"""The detection task in the one training loop: examples, COCO mAP, config checks, a real run."""

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
from flax import traverse_util

from configs import default, ssdlite_coco, ssdlite_default
from mnv2_jax import data, detect, metrics
from mnv2_jax import tasks
from mnv2_jax.tasks import detection
from mnv2_jax.train import loop
import train_test_utils as utils


def _config(data_dir=None, *, steps=4, width=0.35, res=64, batch=16):
  config = ssdlite_default.get_config(f'width={width},res={res},batch={batch},steps={steps}')
  with config.unlocked():
    config.data.data_dir = data_dir
    config.data.update(num_train_examples=64, num_test_examples=32, eval_batch_size=16)
    config.train.update(eval_every_steps=2, checkpoint_every_steps=2, log_every_steps=1)
  return config


def _examples(gt_boxes, detections):
  """One image per entry: ground truth [(box, label)], detections [(box, label, score)]."""
  def padded(rows, width, fill):
    out = np.full((len(rows), 3, width), fill, np.float32)
    for i, image in enumerate(rows):
      for j, row in enumerate(image):
        out[i, j] = row
    return out
  gt = padded([[list(box) + [label] for box, label in image] for image in gt_boxes], 5, 0)
  dt = padded([[list(box) + [label, score] for box, label, score in image]
               for image in detections], 6, 0)
  return {'gt_boxes': gt[..., :4], 'gt_labels': gt[..., 4].astype(int),
          'gt_valid': np.array([[j < len(image) for j in range(3)] for image in gt_boxes]),
          'boxes': dt[..., :4], 'classes': dt[..., 4].astype(int), 'scores': dt[..., 5],
          'valid': np.array([[j < len(image) for j in range(3)] for image in detections])}


BOX_A, BOX_B = (0.1, 0.1, 0.5, 0.6), (0.4, 0.3, 0.9, 0.8)


def test_coco_map_is_1_for_exact_detections_and_0_without_any():
  gt = [[(BOX_A, 3)], [(BOX_B, 5), (BOX_A, 3)]]
  exact = [[(BOX_A, 3, 0.9)], [(BOX_B, 5, 0.8), (BOX_A, 3, 0.7)]]
  names = [f'shape {i}' for i in range(6)]
  assert detection.coco_metrics(_examples(gt, exact), 96, names) == pytest.approx({
      'map': 1.0, 'map50': 1.0, 'map75': 1.0, 'ap_shape_3': 1.0, 'ap_shape_5': 1.0})
  assert detection.coco_metrics(_examples(gt, [[], []]), 96, names) == {
      'map': 0.0, 'map50': 0.0, 'map75': 0.0, 'ap_shape_3': 0.0, 'ap_shape_5': 0.0}


def test_per_class_ap_averages_to_the_map_and_map75_needs_the_tighter_overlap():
  gt = [[(BOX_A, 3)], [(BOX_B, 5)]]
  result = detection.coco_metrics(_examples(gt, [[(BOX_A, 3, 0.9)], []]), 96)
  assert (result['ap_3'], result['ap_5'], result['map']) == pytest.approx((1.0, 0.0, 0.5))
  loose = (0.0, 0.0, 0.5, 0.8)  # IoU 0.625 with (0, 0, 0.5, 0.5): a hit at 0.5, not at 0.75
  result = detection.coco_metrics(_examples([[((0.0, 0.0, 0.5, 0.5), 1)]],
                                            [[(loose, 1, 0.9)]]), 96)
  assert (result['map50'], result['map75']) == pytest.approx((1.0, 0.0))


def test_coco_map_of_finding_one_of_two_objects_is_coco_101_point_average_precision():
  gt = [[(BOX_A, 3)], [(BOX_A, 3)]]
  found_one = [[(BOX_A, 3, 0.9)], []]
  # Precision 1 up to recall 0.5, then nothing: 51 of COCO's 101 recall points.
  result = detection.coco_metrics(_examples(gt, found_one), 96)
  assert result['map'] == pytest.approx(51 / 101) and result['map50'] == pytest.approx(51 / 101)
  # The right box with the wrong class finds nothing.
  wrong_class = [[(BOX_A, 4, 0.9)], []]
  assert detection.coco_metrics(_examples(gt, wrong_class), 96)['map'] == 0.0


def _scene_example(box, size=80):
  """A black image with a white rectangle at `box` (normalised corners), as TFDS gives it."""
  image = np.zeros((size, size, 3), np.uint8)
  ymin, xmin, ymax, xmax = (round(v * size) for v in box)
  image[ymin:ymax, xmin:xmax] = 255
  return {'image': tf.constant(image),
          'objects': {'bbox': tf.constant([box], tf.float32), 'label': tf.constant([7], tf.int64)}}


def _bright_box(image):
  rows, cols = np.nonzero(image[..., 0] > 0)
  size = image.shape[0]
  return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / size


def test_training_example_flips_the_boxes_with_the_image_and_repeats_for_a_seed():
  task = tasks.get_task(_config())
  example = _scene_example((0.25, 0.125, 0.75, 0.5))
  flips = 0
  for k in range(8):
    seed = tf.constant([3, k], tf.int64)
    first, again = task.train_example(example, seed), task.train_example(example, seed)
    np.testing.assert_array_equal(first['image'].numpy(), again['image'].numpy())
    image, boxes = first['image'].numpy(), first['boxes'].numpy()
    assert image.shape == (64, 64, 3) and -1 <= image.min() and image.max() <= 1
    np.testing.assert_allclose(_bright_box(image), boxes[0], atol=1.5 / 64)
    assert first['boxes_valid'].numpy().tolist() == [True, False, False, False]
    assert first['labels'].numpy()[0] == 7
    flips += boxes[0][1] > 0.4
  assert 0 < flips < 8  # both ways occur


def test_ground_truth_is_padded_or_truncated_to_max_boxes():
  task = tasks.get_task(_config())
  boxes = tf.constant([[0.1, 0.1, 0.2, 0.2]] * 6)
  example = {'image': tf.zeros((70, 70, 3), tf.uint8),
             'objects': {'bbox': boxes, 'label': tf.range(6, dtype=tf.int64)}}
  out = task.eval_example(example)
  assert out['boxes'].shape == (4, 4) and out['boxes_valid'].numpy().all()
  assert out['labels'].numpy().tolist() == [0, 1, 2, 3]
  padding = task.padding_example()
  assert {name: tuple(value.shape) for name, value in padding.items()} == {
      name: tuple(value.shape) for name, value in out.items()}


@pytest.mark.parametrize('field, value, message', [
    ('model.name', 'mobilenet_v2', 'config.model.name must be one of'),
    ('model.head', 'retina', 'config.model.head must be one of'),
    ('data.resolution', 48, 'config.data.resolution must be an integer >= 64'),
    ('detection.max_boxes', 0, 'config.detection.max_boxes must be an integer >= 1'),
    ('detection.random_crop', 'random', 'config.detection.random_crop must be one of'),
    ('optimizer.classifier_learning_rate_multiplier', 0.1,
     'config.optimizer.classifier_learning_rate_multiplier must be 1.0 for'),
])
def test_a_bad_detection_config_is_one_line_naming_the_field(field, value, message):
  config = _config()
  section, name = field.rsplit('.', 1) if '.' in field else (None, field)
  with config.unlocked():
    (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message) as error:
    loop.validate_config(config)
  assert '\n' not in str(error.value)


def test_counts_equal_the_parameters_model_init_creates():
  config = _config(res=96, width=0.5)
  task = tasks.get_task(config)
  model = task.create_model(20, 'batch')
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 96, 96, 3))))
  assert task.counts(20)['params'] == sum(x.size for x in jax.tree.leaves(shapes['params']))


def test_detection_starts_from_a_classifier_trains_evaluates_and_resumes_in_the_loop(tmp_path):
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'run')
  classifier = utils.save_random_classifier(tmp_path / 'pretrained')  # width 0.35, as _config
  config = _config(data_dir, steps=2)
  with config.unlocked():
    config.init_from = str(tmp_path / 'pretrained')
  state = loop.train_and_evaluate(config, workdir)
  # A TF1-RMSProp step (accumulator starting at 1, eps 1) moves a weight by at most
  # lr * sqrt(10): after 2 steps the backbone still holds the classifier's weights.
  bound = 2 * config.optimizer.base_learning_rate * np.sqrt(10) * 1.01
  backbone = traverse_util.flatten_dict(jax.device_get(state.params['backbone']))
  for path in (('stem_conv', 'kernel'), ('block_16', 'project_conv', 'kernel')):
    np.testing.assert_allclose(backbone[path], classifier[path], atol=bound)
  loop.train_and_evaluate(_config(data_dir, steps=4), workdir)  # resumes from step 2
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    final = json.load(f)
  assert final['step'] == 4
  for key in ('eval_map', 'eval_map50', 'eval_ema_map', 'eval_ema_map50'):
    assert 0 <= final[key] <= 1
  with open(os.path.join(workdir, 'run_info.json')) as f:
    run_info = json.load(f)
  assert run_info['task'] == 'detection' and run_info['num_classes'] == 20
  lines = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  trained = [line for line in lines if 'train_loss' in line]
  assert {'train_localization_loss', 'train_classification_loss',
          'train_num_positives'} <= set(trained[0])
  assert [line['step'] for line in lines if 'eval_map' in line] == [2, 4]

  # The trained detector on image files: one JSON record per image, the boxes drawn.
  image_path = str(tmp_path / 'scene.png')
  PIL.Image.fromarray(np.full((50, 70, 3), 120, np.uint8)).save(image_path)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert detect.main(['--workdir', workdir, '--json', '--score-threshold', '0',
                        '--draw', str(tmp_path / 'drawn'), image_path]) == 0
  record = json.loads(printed.getvalue())
  assert record['image'] == image_path and record['detections']
  assert all(0 <= d['box_ymin_xmin_ymax_xmax'][2] <= 50 and d['class'] for d in
             record['detections'])
  assert os.path.getsize(tmp_path / 'drawn' / 'scene.png') > 0


def test_detect_refuses_a_classification_workdir_in_one_line(tmp_path, capsys):
  workdir = tmp_path / 'classifier'
  workdir.mkdir()
  (workdir / 'config.json').write_text(default.get_config().to_json())
  (workdir / 'run_info.json').write_text(json.dumps({'num_classes': 10}))
  (workdir / 'checkpoints').mkdir()
  assert detect.main(['--workdir', str(workdir), __file__]) == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error.startswith('error: ') and 'is a classification run' in error


def _mock_coco(builder, split, **unused_kwargs):
  """48 COCO-shaped examples a split: 1-5 objects each, some of them crowds.

  (mock_data's own generator gives the fields of one Sequence different lengths.)
  """
  del builder, split

  def example(index):
    seed = tf.stack([tf.constant(7, tf.int64), index])
    count = 1 + index % 5
    corners = tf.sort(tf.random.stateless_uniform([count, 2, 2], seed), axis=1)
    return {
        'image': tf.cast(tf.random.stateless_uniform([48, 72, 3], seed, maxval=256), tf.uint8),
        'objects': {
            'bbox': tf.reshape(corners, [count, 4]),  # [ymin, xmin], [ymax, xmax]
            'label': tf.random.stateless_uniform([count], seed, maxval=80, dtype=tf.int64),
            'is_crowd': tf.range(count) == 3,
        },
    }
  return tf.data.Dataset.range(48).map(example)


def test_coco_2017_examples_through_the_pipeline_drop_crowds_for_training_only(monkeypatch):
  """configs/ssdlite_coco.py reads TFDS coco/2017 (served by tfds.testing.mock_data): its
  config passes the loop's checks, and the task's examples batch with static shapes, crowd
  regions dropped from the training targets and kept, flagged, for the evaluation."""
  utils.mock_tfds(monkeypatch, as_dataset_fn=_mock_coco)
  config = ssdlite_coco.get_config('width=0.35,res=64,batch=8')
  with config.unlocked():
    config.data.update(eval_batch_size=8, shuffle_buffer_size=16)
  loop.validate_config(config)
  task = tasks.get_task(config)
  data.validate_data_config(config.data, num_devices=1, process_count=1,
                            check_dataset=task.check_dataset)
  assert data.get_dataset_info(config.data, task.num_classes).num_classes == 80
  train = next(data.create_train_iterator(config.data, seed=0, example_fn=task.train_example))
  evaluation = next(data.create_eval_iterator(config.data, example_fn=task.eval_example,
                                              padding_example=task.padding_example()))
  assert train['image'].shape == (8, 64, 64, 3) and train['boxes'].shape == (8, 100, 4)
  assert set(train) == {'image', 'boxes', 'labels', 'boxes_valid'}
  # Example k of _mock_coco has 1 + k % 5 objects, the fourth of them a crowd.
  assert evaluation['boxes_valid'].sum(axis=1).tolist() == [1 + k % 5 for k in range(8)]
  assert evaluation['boxes_crowd'].sum(axis=1).tolist() == [int(k % 5 >= 3) for k in range(8)]
  five_objects = next(iter(_mock_coco(None, None).skip(4)))
  with config.unlocked():
    config.detection.random_crop = 'none'  # SSD's crop (the config's) may drop boxes too
  trained = tasks.get_task(config).train_example(five_objects, tf.constant([0, 4], tf.int64))
  assert trained['boxes_valid'].numpy().sum() == 4  # the crowd is no training target
