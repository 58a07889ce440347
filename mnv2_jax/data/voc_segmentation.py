"""PASCAL VOC 2012 semantic segmentation, optionally with SBD's masks (paper Section 6.3).

A TFDS `GeneratorBasedBuilder` (registered when `mnv2_jax.data` is imported)
that reads the standard archives, extracted by the user into TFDS's manual
directory (``<data_dir>/downloads/manual/``; `MANUAL_DOWNLOAD_INSTRUCTIONS`),
and writes TFRecords that the segmentation task reads like any TFDS dataset
(``data.dataset='voc_segmentation/2012_sbd'``).

Features: ``image`` (the original JPEG bytes, not re-encoded),
``segmentation_mask`` (PNG [H, W, 1]: 0 background, 1-20 the classes of
`CLASS_NAMES`, 255 VOC's 'void' object boundaries, which the task ignores) and
``file_name`` ('<id>.jpg').

Configs:
  2012      train = VOC 2012 train, validation = VOC 2012 val.
  2012_sbd  train = DeepLab's 'train_aug': VOC train, SBD train and SBD val,
            less every VOC val image (so that no validation image is trained
            on); validation = VOC 2012 val. An id with a VOC mask takes it
            (it has the 255 boundary); the others take SBD's, which has none.
            Images come from VOC's JPEGImages, else SBD's img/.

Every directory, list, image and mask is looked up before anything is
written, so a missing one is a single ValueError line naming it.
"""

import dataclasses
import io
import os
from typing import Iterator, NamedTuple, Optional

from etils import epath
import numpy as np
from PIL import Image
import scipy.io
import tensorflow_datasets as tfds

CLASS_NAMES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
    'sheep', 'sofa', 'train', 'tvmonitor')
NUM_CLASSES = len(CLASS_NAMES)  # 21, background included
VOID_LABEL = 255  # VOC's object boundaries and unlabelled pixels

# The real split sizes, for the reader's orientation (not checked, so that tests
# can use tiny trees): the VOC 2012 devkit's ImageSets/Segmentation/{train,val}.txt,
# and DeepLab's train_aug (datasets/data_generator.py, _PASCAL_VOC_SEG_INFORMATION:
# train 1,464, train_aug 10,582, val 1,449). SBD's own lists: train 8,498, val 2,857.
NUM_VOC_TRAIN_IMAGES = 1_464
NUM_VOC_VAL_IMAGES = 1_449
NUM_TRAIN_AUG_IMAGES = 10_582

VOC_DIR = os.path.join('VOCdevkit', 'VOC2012')
SBD_DIR = os.path.join('benchmark_RELEASE', 'dataset')
VOC_ARCHIVE = 'VOCtrainval_11-May-2012.tar'
SBD_ARCHIVE = 'benchmark.tgz'

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Extract into the manual directory (<data_dir>/downloads/manual/):
  {VOC_ARCHIVE} (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/), giving
    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png   (palette PNGs: index = class, 255 void)
    VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt
  and, for the 2012_sbd config, SBD's {SBD_ARCHIVE}
  (http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/),
  giving
    benchmark_RELEASE/dataset/cls/<id>.mat   (GTcls.Segmentation: the class map)
    benchmark_RELEASE/dataset/img/<id>.jpg
    benchmark_RELEASE/dataset/train.txt, val.txt
"""
# What `datasets._check_manual_download` names when the manual directory is empty.
MANUAL_DIR_CONTENTS = (f'{VOC_DIR}/ ({VOC_ARCHIVE} extracted) and, for 2012_sbd, {SBD_DIR}/ '
                       f'(SBD\'s {SBD_ARCHIVE} extracted)')


class _Example(NamedTuple):
  """Where one example's files are."""
  image_id: str
  image_path: str
  mask_path: str  # a VOC .png or an SBD .mat


@dataclasses.dataclass
class VocSegmentationConfig(tfds.core.BuilderConfig):
  """Whether SBD's images join VOC's training images."""
  with_sbd: bool = False


def read_mask(path: str) -> np.ndarray:
  """uint8 [H, W, 1] class indices of a VOC palette PNG or an SBD cls/.mat.

  PIL gives a palette ('P') image's indices, which are VOC's classes; decoding
  it as TensorFlow does would give its colours. SBD's .mat holds the MATLAB
  struct GTcls with fields Boundaries, Segmentation and CategoriesPresent.
  """
  if path.endswith('.mat'):
    mask = scipy.io.loadmat(path)['GTcls']['Segmentation'][0, 0]
  else:
    with Image.open(path) as png:
      if png.mode not in ('P', 'L'):
        raise ValueError(
            f'{path} is a {png.mode!r} PNG; VOC masks are palette (or grayscale) PNGs whose '
            f'values are the class ids (SegmentationClass/, not a colour rendering).')
      mask = np.array(png)
  invalid = (mask >= NUM_CLASSES) & (mask != VOID_LABEL)
  if invalid.any():
    raise ValueError(
        f'{path} has values {sorted(np.unique(mask[invalid]).tolist())[:5]} outside the '
        f'classes 0-{NUM_CLASSES - 1} and the void label {VOID_LABEL}.')
  return mask.astype(np.uint8)[..., None]


def _encode_png(mask: np.ndarray) -> bytes:
  # A grayscale PNG, which tf.io.decode_png reads as the indices.
  buffer = io.BytesIO()
  Image.fromarray(mask[..., 0]).save(buffer, format='PNG')
  return buffer.getvalue()


def _read_ids(path: str) -> list[str]:
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


class VocSegmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation masks (21 classes, 255 void), optionally with SBD's."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First version.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  MANUAL_DIR_CONTENTS = MANUAL_DIR_CONTENTS
  BUILDER_CONFIGS = [
      VocSegmentationConfig(name='2012', description='VOC 2012 train / val.'),
      VocSegmentationConfig(name='2012_sbd', with_sbd=True,
                            description="DeepLab's train_aug (VOC + SBD) / VOC 2012 val."),
  ]

  # tfds 4.9.10 derives `code_path` through `importlib_resources`, which is
  # only installed on Python < 3.9 (as in procedural_shapes.py).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'segmentation_mask': tfds.features.Image(shape=(None, None, 1),
                                                     encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation_mask'),
        homepage='http://host.robots.ox.ac.uk/pascal/VOC/voc2012/',
    )

  def _split_generators(self, dl_manager):
    examples = self.find_examples(_manual_dir(dl_manager))
    return {split: self._generate_examples(split_examples)
            for split, split_examples in examples.items()}

  def find_examples(self, manual_dir: str) -> dict[str, list[_Example]]:
    """{'train': ..., 'validation': ...}, every file checked (one ValueError line if not)."""
    name = f'{self.name}/{self.builder_config.name}'
    voc = os.path.join(manual_dir, VOC_DIR)
    voc_lists = os.path.join(voc, 'ImageSets', 'Segmentation')
    _require(name, f'extract {VOC_ARCHIVE} into {manual_dir} so that it holds '
             f'{VOC_DIR}/{{JPEGImages,SegmentationClass,ImageSets/Segmentation}}',
             voc, os.path.join(voc, 'JPEGImages'), os.path.join(voc, 'SegmentationClass'),
             os.path.join(voc_lists, 'train.txt'), os.path.join(voc_lists, 'val.txt'))
    val_ids = _read_ids(os.path.join(voc_lists, 'val.txt'))
    train_ids = _read_ids(os.path.join(voc_lists, 'train.txt'))
    sbd = None
    if self.builder_config.with_sbd:
      sbd = os.path.join(manual_dir, SBD_DIR)
      _require(name, f'extract SBD\'s {SBD_ARCHIVE} into {manual_dir} so that it holds '
               f'{SBD_DIR}/{{cls,img,train.txt,val.txt}} (or use {self.name}/2012)',
               sbd, os.path.join(sbd, 'cls'), os.path.join(sbd, 'img'),
               os.path.join(sbd, 'train.txt'), os.path.join(sbd, 'val.txt'))
      train_ids = sorted((set(train_ids) | set(_read_ids(os.path.join(sbd, 'train.txt'))) |
                          set(_read_ids(os.path.join(sbd, 'val.txt')))) - set(val_ids))
    return {'train': [_locate(name, image_id, voc, sbd, 'train') for image_id in train_ids],
            'validation': [_locate(name, image_id, voc, None, 'validation')
                           for image_id in val_ids]}

  def _generate_examples(self, examples: list[_Example]) -> Iterator[tuple[str, dict]]:
    for example in examples:
      mask = read_mask(example.mask_path)
      with Image.open(example.image_path) as image:  # reads the header only
        width, height = image.size
      if mask.shape[:2] != (height, width):
        raise ValueError(
            f'{example.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image '
            f'{example.image_path} is {width}x{height}; a mask must cover its image.')
      yield example.image_id, {
          'image': example.image_path,  # TFDS stores the file's bytes
          'segmentation_mask': _encode_png(mask),
          'file_name': os.path.basename(example.image_path),
      }


def _manual_dir(dl_manager) -> str:
  """The manual directory, also when it is missing or empty (then `find_examples` names
  what belongs there in one line, where TFDS would raise a page of instructions)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:
    return os.fspath(dl_manager._manual_dir)  # pylint: disable=protected-access


def _require(name: str, fix: str, *paths: str) -> None:
  for path in paths:
    if not os.path.exists(path):
      raise ValueError(f'{name}: {path} is missing; {fix}.')


def _locate(name: str, image_id: str, voc: str, sbd: Optional[str], split: str) -> _Example:
  """The image and mask of a listed id: VOC's first, then SBD's (when `sbd` is given)."""
  images = [os.path.join(voc, 'JPEGImages', f'{image_id}.jpg')]
  masks = [os.path.join(voc, 'SegmentationClass', f'{image_id}.png')]
  if sbd:
    images.append(os.path.join(sbd, 'img', f'{image_id}.jpg'))
    masks.append(os.path.join(sbd, 'cls', f'{image_id}.mat'))
  found = {}
  for what, candidates in (('image', images), ('mask', masks)):
    found[what] = next((path for path in candidates if os.path.exists(path)), None)
    if found[what] is None:
      raise ValueError(f'{name}: the {split} id {image_id!r} has no {what}: none of '
                       f'{", ".join(candidates)} exists.')
  return _Example(image_id, found['image'], found['mask'])
