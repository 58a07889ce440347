"""The PASCAL VOC 2012 (+ SBD) reader on a tiny VOCdevkit and SBD, and configs/deeplab_voc.py.

The trees hold 20x24 images laid out as the real archives are: VOC's palette
PNGs with a 255 border, SBD's cls/<id>.mat with the MATLAB struct GTcls
(Boundaries, Segmentation, CategoriesPresent). The real split sizes
(voc_segmentation.NUM_*) are not checked here.
"""

import io
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import scipy.io
import scipy.sparse
import tensorflow_datasets as tfds

from mnv2_jax import data, tasks
from mnv2_jax.data import datasets
from mnv2_jax.data import voc_segmentation
from mnv2_jax.train import loop
from mnv2_jax.train import optimizer as optimizer_lib
import train_test_utils as utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 20, 24
VOID = voc_segmentation.VOID_LABEL
VOC_TRAIN, VOC_VAL = ['2008_000001', '2008_000002'], ['2008_000003', '2008_000004']
# 01 is in VOC train too (its VOC mask wins), 03 is a VOC val image (left out of
# training), 05 has its image in VOC's JPEGImages, 06 only in SBD's img/.
SBD_TRAIN, SBD_VAL = ['2008_000001', '2008_000003', '2008_000005'], ['2008_000006']
TRAIN_AUG = ['2008_000001', '2008_000002', '2008_000005', '2008_000006']


def _voc_palette() -> list[int]:
  """VOC's colour map (the devkit's labelcolormap): the colours of the class indices."""
  palette = []
  for index in range(256):
    red = green = blue = 0
    for bit in range(8):
      red |= ((index >> (3 * bit)) & 1) << (7 - bit)
      green |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
      blue |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
    palette += [red, green, blue]
  return palette


def _class_map(rng, void_border: bool) -> np.ndarray:
  mask = rng.integers(0, voc_segmentation.NUM_CLASSES, (HEIGHT, WIDTH)).astype(np.uint8)
  if void_border:
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = VOID
  return mask


def _write_jpeg(path, rng) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)).save(
      buffer, format='JPEG')
  with open(path, 'wb') as f:
    f.write(buffer.getvalue())
  return buffer.getvalue()


def _write_palette_png(path, mask):
  png = Image.new('P', (WIDTH, HEIGHT))
  png.putpalette(_voc_palette())
  png.putdata(mask.ravel().tolist())
  png.save(path)


def _write_sbd_mat(path, mask):
  """GTcls as SBD stores it: a 1x1 struct; Boundaries a 20x1 cell of sparse edge maps."""
  boundaries = np.empty((voc_segmentation.NUM_CLASSES - 1, 1), dtype=object)
  for index in range(boundaries.shape[0]):
    boundaries[index, 0] = scipy.sparse.csc_matrix((HEIGHT, WIDTH), dtype=np.float64)
  present = np.unique(mask[mask > 0]).astype(np.uint8)[:, None]
  scipy.io.savemat(path, {'GTcls': {'Boundaries': boundaries, 'Segmentation': mask,
                                    'CategoriesPresent': present}})


def _write_lists(directory, **lists):
  for name, ids in lists.items():
    with open(os.path.join(directory, f'{name}.txt'), 'w') as f:
      f.write(''.join(f'{image_id}\n' for image_id in ids))


def _make_trees(manual_dir, with_sbd=True) -> dict:
  """Writes VOCdevkit/VOC2012 (and SBD); returns {'voc'|'sbd': {id: (jpeg bytes, mask)}}."""
  rng = np.random.default_rng(0)
  written = {'voc': {}, 'sbd': {}}
  voc = os.path.join(manual_dir, voc_segmentation.VOC_DIR)
  for sub in ('JPEGImages', 'SegmentationClass', os.path.join('ImageSets', 'Segmentation')):
    os.makedirs(os.path.join(voc, sub))
  _write_lists(os.path.join(voc, 'ImageSets', 'Segmentation'), train=VOC_TRAIN, val=VOC_VAL)
  for image_id in VOC_TRAIN + VOC_VAL:
    mask = _class_map(rng, void_border=True)
    _write_palette_png(os.path.join(voc, 'SegmentationClass', f'{image_id}.png'), mask)
    written['voc'][image_id] = (
        _write_jpeg(os.path.join(voc, 'JPEGImages', f'{image_id}.jpg'), rng), mask)
  # Every SBD image but 06 is also in VOC's JPEGImages, as in the real data.
  written['voc']['2008_000005'] = (
      _write_jpeg(os.path.join(voc, 'JPEGImages', '2008_000005.jpg'), rng), None)
  if with_sbd:
    sbd = os.path.join(manual_dir, voc_segmentation.SBD_DIR)
    os.makedirs(os.path.join(sbd, 'cls'))
    os.makedirs(os.path.join(sbd, 'img'))
    _write_lists(sbd, train=SBD_TRAIN, val=SBD_VAL)
    for image_id in SBD_TRAIN + SBD_VAL:
      mask = _class_map(rng, void_border=False)
      _write_sbd_mat(os.path.join(sbd, 'cls', f'{image_id}.mat'), mask)
      written['sbd'][image_id] = (
          _write_jpeg(os.path.join(sbd, 'img', f'{image_id}.jpg'), rng), mask)
  return written


def _prepare(name, data_dir, manual_dir) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _read(builder, split) -> dict:
  """{file_name: (jpeg bytes as stored, mask [H, W] as decoded)}."""
  dataset = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  return {example['file_name'].decode(): (example['image'], example['segmentation_mask'][..., 0])
          for example in tfds.as_numpy(dataset)}


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
  """The trees and a data_dir in which both configs are prepared."""
  root = tmp_path_factory.mktemp('voc')
  manual_dir, data_dir = root / 'manual', str(root / 'tfds')
  written = _make_trees(str(manual_dir))
  builders = {name: _prepare(f'voc_segmentation/{name}', data_dir, manual_dir)
              for name in ('2012', '2012_sbd')}
  return written, builders, data_dir


def test_2012_holds_the_listed_ids_with_their_jpeg_bytes_and_mask_indices(voc):
  written, builders, _ = voc
  for split, ids in (('train', VOC_TRAIN), ('validation', VOC_VAL)):
    examples = _read(builders['2012'], split)
    assert sorted(examples) == [f'{image_id}.jpg' for image_id in ids]
    for image_id in ids:
      jpeg, mask = examples[f'{image_id}.jpg']
      assert jpeg == written['voc'][image_id][0]  # passed through, not re-encoded
      np.testing.assert_array_equal(mask, written['voc'][image_id][1])  # 255 kept
      assert (mask == VOID).any()


def test_2012_sbd_trains_on_the_union_less_voc_val_preferring_voc_masks_and_images(voc):
  written, builders, _ = voc
  train = _read(builders['2012_sbd'], 'train')
  assert sorted(train) == [f'{image_id}.jpg' for image_id in TRAIN_AUG]
  expected = {  # (whose image, whose mask)
      '2008_000001': ('voc', 'voc'), '2008_000002': ('voc', 'voc'),
      '2008_000005': ('voc', 'sbd'), '2008_000006': ('sbd', 'sbd')}
  for image_id, (image_source, mask_source) in expected.items():
    jpeg, mask = train[f'{image_id}.jpg']
    assert jpeg == written[image_source][image_id][0]
    np.testing.assert_array_equal(mask, written[mask_source][image_id][1])
  validation = _read(builders['2012_sbd'], 'validation')
  assert sorted(validation) == [f'{image_id}.jpg' for image_id in VOC_VAL]
  np.testing.assert_array_equal(validation['2008_000003.jpg'][1],
                                written['voc']['2008_000003'][1])


def test_masks_are_read_as_class_indices_from_both_formats(tmp_path):
  mask = _class_map(np.random.default_rng(1), void_border=True)
  _write_palette_png(str(tmp_path / 'a.png'), mask)
  _write_sbd_mat(str(tmp_path / 'a.mat'), np.where(mask == VOID, 0, mask))
  # The file as SBD's readers index it: GTcls[0][0] with Segmentation its second field.
  assert scipy.io.loadmat(str(tmp_path / 'a.mat'))['GTcls'].dtype.names == (
      'Boundaries', 'Segmentation', 'CategoriesPresent')
  np.testing.assert_array_equal(voc_segmentation.read_mask(str(tmp_path / 'a.png'))[..., 0],
                                mask)
  np.testing.assert_array_equal(voc_segmentation.read_mask(str(tmp_path / 'a.mat'))[..., 0],
                                np.where(mask == VOID, 0, mask))
  # A colour rendering of the mask is refused: its values are not the classes.
  Image.open(str(tmp_path / 'a.png')).convert('RGB').save(str(tmp_path / 'rgb.png'))
  with pytest.raises(ValueError, match="rgb.png is a 'RGB' PNG"):
    voc_segmentation.read_mask(str(tmp_path / 'rgb.png'))


@pytest.mark.parametrize('config, missing', [
    ('2012', voc_segmentation.VOC_DIR), ('2012_sbd', voc_segmentation.VOC_DIR),
    ('2012_sbd', voc_segmentation.SBD_DIR)])
def test_a_missing_tree_is_one_line_naming_its_path_before_anything_is_written(
    tmp_path, config, missing):
  manual_dir = tmp_path / 'manual'
  _make_trees(str(manual_dir), with_sbd=missing != voc_segmentation.SBD_DIR)
  if missing == voc_segmentation.VOC_DIR:
    os.rename(manual_dir / 'VOCdevkit', tmp_path / 'elsewhere')
  with pytest.raises(ValueError) as raised:
    _prepare(f'voc_segmentation/{config}', str(tmp_path / 'tfds'), manual_dir)
  message = str(raised.value)
  assert '\n' not in message
  assert f'{manual_dir / missing} is missing; extract' in message
  assert not list((tmp_path / 'tfds').glob('voc_segmentation/*/*/*.tfrecord*'))


def test_an_empty_manual_dir_is_one_line_naming_what_belongs_there(tmp_path):
  config = data.get_data_config(dataset='voc_segmentation/2012_sbd', data_dir=str(tmp_path))
  builder = datasets.get_builder(config)
  with pytest.raises(ValueError) as raised:
    datasets._check_manual_download(config, builder)  # pylint: disable=protected-access
  message = str(raised.value)
  assert '\n' not in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  assert 'VOCdevkit/VOC2012/' in message and 'benchmark_RELEASE/dataset/' in message
  # Preparing anyway names the first missing directory, not TFDS's page of instructions.
  with pytest.raises(ValueError, match='VOC2012 is missing; extract'):
    builder.download_and_prepare()


def test_examples_go_through_the_segmentation_task_with_the_void_label_kept(voc):
  written, _, data_dir = voc
  resolution = 33
  config = utils.load_config_as_main(f'configs/deeplab_voc.py:res={resolution},batch=2',
                        f'--config.data.data_dir={data_dir}',
                        '--config.segmentation.min_scale_factor=1.0',
                        '--config.segmentation.max_scale_factor=1.0')
  task = tasks.get_task(config)
  data.validate_data_config(config.data, 1, 1, task.check_dataset)
  assert data.get_dataset_info(config.data, task.num_classes) == (21, len(TRAIN_AUG),
                                                                  len(VOC_VAL))
  # Training: at scale 1 the 20x24 image is padded to 33x33 and cropped whole (flipped or
  # not), so each class keeps its pixel count and the void count grows by the padding.
  builder = datasets.get_builder(config.data)
  for example in builder.as_dataset(split='train',
                                    decoders={'image': tfds.decode.SkipDecoding()}):
    image_id = example['file_name'].numpy().decode()[:-len('.jpg')]
    mask = (written['voc'] if image_id in VOC_TRAIN else written['sbd'])[image_id][1]
    label = task.train_example(example, [1, 2])['label'].numpy()
    assert label.shape == (resolution, resolution)
    padding = resolution * resolution - HEIGHT * WIDTH
    expected = np.bincount(mask.ravel(), minlength=256)
    expected[VOID] += padding
    np.testing.assert_array_equal(np.bincount(label.ravel(), minlength=256), expected)
  # Evaluation through the input pipeline: the longer side scaled to 33 (20x24 -> 28x33,
  # nearest keeps every value), the bottom padded with the void label.
  batches = list(data.create_eval_iterator(config.data, example_fn=task.eval_example,
                                           padding_example=task.padding_example()))
  labels = np.concatenate([batch['label'] for batch in batches])
  assert labels.shape == (len(VOC_VAL), resolution, resolution)
  val_values = sorted(tuple(np.unique(written['voc'][image_id][1])) for image_id in VOC_VAL)
  assert sorted(tuple(np.unique(label)) for label in labels) == val_values
  assert (labels[:, 28:] == VOID).all() and (labels[:, 0, 0] == VOID).all()


def test_the_voc_config_is_the_papers_setting_and_validates():
  config = utils.load_config_as_main('configs/deeplab_voc.py')
  loop.validate_config(config)
  model = config.model
  assert (model.name, model.backbone, model.width_multiplier, model.output_stride, model.aspp,
          model.num_classes) == ('deeplabv3', 'mobilenet_v2', 1.0, 16, True, 21)
  assert (config.data.dataset, config.data.resolution, config.data.batch_size,
          config.train.num_steps) == ('voc_segmentation/2012_sbd', 513, 16, 30_000)
  assert (config.segmentation.min_scale_factor, config.segmentation.max_scale_factor) == (0.5, 2.0)
  assert utils.load_config_as_main('configs/deeplab_voc.py:sbd=false').data.dataset == 'voc_segmentation/2012'
  with open(os.path.join(REPO, 'configs/deeplab_voc.py')) as f:
    source = f.read()
  assert 'python -m mnv2_jax.main --config configs/deeplab_voc.py' in source
  assert '--config.init_from=' in source


def test_the_voc_configs_optimizer_is_deeplabs_momentum_sgd_with_poly_decay():
  config = utils.load_config_as_main('configs/deeplab_voc.py')
  steps_per_epoch = 100
  schedule = optimizer_lib.create_learning_rate_schedule(config, steps_per_epoch)
  optimizer = optimizer_lib.create_optimizer(config, steps_per_epoch)
  total = config.train.num_steps
  # DeepLab's poly: 0.007 * (1 - step / total) ** 0.9 at batch 16.
  for step in (0, total // 2, total - 1, total):
    assert float(schedule(step)) == pytest.approx(0.007 * (1 - step / total) ** 0.9, abs=1e-9)
  rng = np.random.default_rng(0)
  params = {'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)},
            'depthwise_conv': {'kernel': jnp.ones((3, 3, 1, 8), jnp.float32)},
            'bn': {'scale': jnp.ones((8,), jnp.float32)}}
  decayed = {'conv': {'kernel': True}, 'depthwise_conv': {'kernel': False},
             'bn': {'scale': False}}
  state = optimizer.init(params)
  velocity = jax.tree.map(jnp.zeros_like, params)
  expected = params
  for step in range(4):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 3, jnp.float32),
                         params)
    updates, state = optimizer.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    # TF's MomentumOptimizer with coupled L2: v <- 0.9 v + (g + 4e-5 w); w <- w - lr_t v.
    velocity = jax.tree.map(
        lambda v, g, w, decay: 0.9 * v + (g + (4e-5 * w if decay else 0.0)),
        velocity, grads, expected, decayed)
    expected = jax.tree.map(lambda w, v: w - schedule(step) * v, expected, velocity)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
