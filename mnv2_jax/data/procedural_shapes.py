"""The built-in datasets: classification, detection and segmentation of rendered shapes.

These machine-independent datasets let every command of the repository run with
no download. Each is a TFDS `GeneratorBasedBuilder` (registered when
`mnv2_jax.data` is imported), so it goes through exactly the same `tfds`
reading, caching, splitting and preprocessing code as ImageNet or COCO: the
first use renders it into ``<data_dir>/<name>/<config>/<version>/`` and later
uses read the cached TFRecord files. All three render their images with the
one scene renderer of scenes.py (shape classes, backgrounds, clutter, noise,
annotations; its docstring describes the generative process), so a class looks
the same in all of them.

``procedural_shapes`` (classification; image JPEG, label). Each image shows
one object; two versions, both selectable
(`tfds.builder('procedural_shapes:1.2.0')`, or `data.dataset_version` in a
config); rendering is a function of the version, so each version's images stay
the same bit for bit:

  2.0.0  (the newest) 20 classes: each 1.2.0 shape and a twin that differs
         from it only in a fine detail, so that a higher input resolution
         resolves more of what tells classes apart; objects span 35%-85% of
         the image side; supersampled coverage (the same scene at 32 px is the
         one at 128 px seen through 4x4 larger pixels).
  1.2.0  10 classes (disc, ring, square, frame, triangle, cross, stripes,
         checker, pair, triad); objects span 45%-85%; coverage sampled at the
         pixel centres.

Nothing about a class is carried by colour, position or size, so a linear
classifier on raw pixels stays close to chance while a small CNN learns the
classes. Labels are balanced (example i of a split has label i mod the number
of classes).

``procedural_shapes_detection`` (image JPEG; objects: Sequence of {bbox:
BBoxFeature, label: ClassLabel}, TFDS's object-detection convention, as
``coco/2017`` has it) and ``procedural_shapes_segmentation`` (image JPEG;
segmentation_mask: PNG (R, R, 1), 0 background, 1 + class) show the same scenes
for the same config: 1-4 objects an image (example i shows 1 + i mod 4, the
counts shuffled within a chunk of 256), each 20%-50% of the image side
(`SCENE_OBJECT_SCALE`), placed independently, so they overlap and occlude each
other. Object j of a split (over its examples in order) has class j mod the
number of classes, shuffled within the chunk, so the rendered objects are
balanced exactly. The classes are 2.0.0's by default (the config's
`shapes_version`). A box is the tight box of the pixels that show the object
(see scenes.py); an object that shows on less than `MIN_VISIBLE_FRACTION` (25%)
of the pixels it would cover unoccluded is left out of the detection
annotations (it is mostly hidden: a detector could not be asked to find it),
while the segmentation mask shows every pixel as it is. The top-most object is
never hidden, so every image keeps at least one annotation.

Images are stored as JPEG (quality 95, no chroma subsampling; ~5 KB an image
at 64 px, mean absolute error ~3/255), so they are read through the same fused
decode-and-crop path as ImageNet. Rendering is vectorised with NumPy over
chunks of images; a chunk's random state is seeded from (seed, split, chunk
index), so a split is a deterministic function of (dataset, version, seed,
number of examples, render resolution).
"""

import contextlib
import dataclasses
import io
import logging
from typing import Iterator, NamedTuple

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
import tqdm

from mnv2_jax.data import scenes
# pylint: disable=unused-import
from mnv2_jax.data.scenes import CLASS_NAMES
from mnv2_jax.data.scenes import class_names
from mnv2_jax.data.scenes import FINE_CLASS_NAMES
from mnv2_jax.data.scenes import LATEST_VERSION
from mnv2_jax.data.scenes import MIN_RENDER_RESOLUTION
from mnv2_jax.data.scenes import NUM_CLASSES
from mnv2_jax.data.scenes import VERSIONS
# pylint: enable=unused-import

_CHUNK_SIZE = 256
_JPEG_QUALITY = 95
_SPLIT_IDS = {'train': 0, 'test': 1}
# The detection and segmentation datasets' scenes (see the docstring).
SCENES_VERSION = '1.0.0'  # of both datasets
SCENE_SHAPES_VERSION = '2.0.0'
SCENE_OBJECT_SCALE = (0.2, 0.5)  # object radius in half-image units
MAX_OBJECTS = 4
MIN_VISIBLE_FRACTION = 0.25


class _RenderCost(NamedTuple):
  """Wall time of rendering and storing an image at `resolution` or below (the announcement's
  "about S s"); the cost grows with the pixel count above it."""
  seconds_per_image: float
  resolution: int


# Rendering, JPEG encoding and TFDS's writing and shuffling took 2.7-3.8 ms an
# image at 48-64 px on a shared 2-core CPU (22,000 images at 64 px in 59 s,
# 12,000 at 48 px in ~45 s).
_CLASSIFICATION_COST = _RenderCost(0.003, 64)
# A chunk of 256 detection scenes at 128 px took 3.2-5.2 ms of CPU time an
# image to render and 0.4 ms to encode on the same machine (load average ~6),
# plus an allowance of ~1 ms for TFDS's writing (not measured on its own).
_SCENE_COST = _RenderCost(0.006, 128)


def estimated_render_seconds(num_images: int, resolution: int,
                             cost: _RenderCost = _CLASSIFICATION_COST) -> float:
  """A rough wall time for rendering and storing `num_images`; the progress bar shows the real
  one."""
  return num_images * cost.seconds_per_image * max(1.0, (resolution / cost.resolution) ** 2)


def announcement(num_train_examples: int, num_test_examples: int, resolution: int,
                 directory: str, dataset: str = 'procedural_shapes',
                 cost: _RenderCost = _CLASSIFICATION_COST) -> str:
  """The one line printed before the dataset is rendered."""
  seconds = estimated_render_seconds(num_train_examples + num_test_examples, resolution, cost)
  return (f'rendering {dataset}: {num_train_examples:,} train + {num_test_examples:,} '
          f'test images at {resolution} px into {directory} (about {max(1, round(seconds))} s)')


class _ExpectedTfdsWarnings(logging.Filter):
  """TFDS's warnings that describe this dataset working as intended.

  Every size, resolution or seed but the default one is a "custom data
  configuration", and a version folder that is about to be rendered "has no
  dataset_info.json"; a newcomer would read either as a problem.
  """
  EXPECTED = ('Using custom data configuration', 'Variant folder')

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.EXPECTED)


@contextlib.contextmanager
def _expected_tfds_warnings_hidden() -> Iterator[None]:
  """Hides `_ExpectedTfdsWarnings` (TFDS logs through absl's 'absl' logger) inside the block."""
  absl_logger = logging.getLogger('absl')
  expected = _ExpectedTfdsWarnings()
  absl_logger.addFilter(expected)
  try:
    yield
  finally:
    absl_logger.removeFilter(expected)


def render_images(labels: np.ndarray, resolution: int, rng: np.random.Generator,
                  version: str = LATEST_VERSION) -> np.ndarray:
  """One image per label: uint8 [len(labels), resolution, resolution, 3] (one-object scenes)."""
  labels = np.asarray(labels)
  drawn = scenes.draw_scenes(labels[:, None], resolution, rng, version)
  return scenes.render_scenes(drawn).images


def render_split(num_examples: int, resolution: int, seed: int, split: str,
                 version: str = LATEST_VERSION) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (images, labels) chunks of a classification split, deterministically."""
  num_classes = len(class_names(version))
  for start in range(0, num_examples, _CHUNK_SIZE):
    stop = min(start + _CHUNK_SIZE, num_examples)
    labels = np.arange(start, stop) % num_classes
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], start // _CHUNK_SIZE])
    yield render_images(labels, resolution, rng, version), labels


def _objects_before(index: int) -> int:
  """Objects in a scene split's examples before `index` (example i shows 1 + i mod 4)."""
  cycles, rest = divmod(index, MAX_OBJECTS)
  return cycles * MAX_OBJECTS * (MAX_OBJECTS + 1) // 2 + rest * (rest + 1) // 2


def scene_layout(start: int, stop: int, num_classes: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Labels and occupied slots ([n, MAX_OBJECTS], back to front) of examples start..stop-1.

  The object counts and the classes are the split's balanced sequences (1 + i
  mod 4 objects, class j mod num_classes) over this chunk, shuffled within it,
  so no count or class pairing follows an example's position.
  """
  counts = rng.permutation(1 + np.arange(start, stop) % MAX_OBJECTS)
  classes = rng.permutation(
      np.arange(_objects_before(start), _objects_before(stop)) % num_classes)
  present = np.arange(MAX_OBJECTS) < counts[:, None]
  labels = np.zeros(present.shape, np.int64)
  labels[present] = classes
  return labels, present


def render_scene_split(num_examples: int, resolution: int, seed: int, split: str,
                       shapes_version: str = SCENE_SHAPES_VERSION) -> Iterator[scenes.Rendering]:
  """Yields the rendered chunks of a detection/segmentation split, deterministically."""
  num_classes = len(class_names(shapes_version))
  for start in range(0, num_examples, _CHUNK_SIZE):
    stop = min(start + _CHUNK_SIZE, num_examples)
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], start // _CHUNK_SIZE])
    labels, present = scene_layout(start, stop, num_classes, rng)
    yield scenes.render_scenes(scenes.draw_scenes(
        labels, resolution, rng, shapes_version, SCENE_OBJECT_SCALE, present))


def annotations(rendering: scenes.Rendering) -> list[tuple[np.ndarray, np.ndarray]]:
  """Per image, the boxes [m, 4] and labels [m] of the objects visible enough to annotate."""
  kept = rendering.present & (rendering.visible_fraction >= MIN_VISIBLE_FRACTION)
  return [(boxes[keep], labels[keep])
          for boxes, labels, keep in zip(rendering.boxes, rendering.labels, kept)]


def _encode(image: np.ndarray, image_format: str) -> bytes:
  # PIL encodes ~5x faster than TFDS's per-image TensorFlow encoder.
  buffer = io.BytesIO()
  if image_format == 'JPEG':
    Image.fromarray(image).save(buffer, format='JPEG', quality=_JPEG_QUALITY,
                               subsampling=0)  # 4:4:4: keep thin coloured lines.
  else:
    Image.fromarray(image).save(buffer, format=image_format)
  return buffer.getvalue()


def _config_name(num_train_examples, num_test_examples, render_resolution, seed) -> str:
  return (f'train{num_train_examples}_test{num_test_examples}'
          f'_res{render_resolution}_seed{seed}')


@dataclasses.dataclass
class ProceduralShapesConfig(tfds.core.BuilderConfig):
  """Size, render resolution and seed of a built-in dataset."""
  num_train_examples: int = 10_000
  num_test_examples: int = 2_000
  render_resolution: int = 64
  seed: int = 0


@dataclasses.dataclass
class ProceduralScenesConfig(ProceduralShapesConfig):
  """A detection/segmentation config: also whose shapes (a procedural_shapes version)."""
  shapes_version: str = SCENE_SHAPES_VERSION


def make_builder_config(num_train_examples: int = 10_000,
                        num_test_examples: int = 2_000,
                        render_resolution: int = 64,
                        seed: int = 0,
                        version: str = LATEST_VERSION) -> ProceduralShapesConfig:
  """A classification config whose name encodes its parameters (the cache directory name).

  The version is the config's own, so TFDS renders any version this file knows
  (it renders only a builder's newest version otherwise) into
  ``<data_dir>/procedural_shapes/<name>/<version>``.
  """
  scenes.version_spec(version)  # raises for an unknown version
  return ProceduralShapesConfig(
      name=_config_name(num_train_examples, num_test_examples, render_resolution, seed),
      version=tfds.core.Version(version), num_train_examples=num_train_examples,
      num_test_examples=num_test_examples, render_resolution=render_resolution,
      seed=seed)


# TFDS refuses a config named like a predefined one unless it is that very
# object, so a name (which encodes every parameter) gives back one object.
_scene_configs: dict[str, ProceduralScenesConfig] = {}


def make_scene_builder_config(num_train_examples: int = 5_000,
                              num_test_examples: int = 1_000,
                              render_resolution: int = 128,
                              seed: int = 0,
                              shapes_version: str = SCENE_SHAPES_VERSION
                              ) -> ProceduralScenesConfig:
  """A detection/segmentation config, named like `make_builder_config`'s (plus
  ``_shapes<version>`` for shapes other than 2.0.0's)."""
  scenes.version_spec(shapes_version)  # raises for an unknown version
  name = _config_name(num_train_examples, num_test_examples, render_resolution, seed)
  if shapes_version != SCENE_SHAPES_VERSION:
    name += f'_shapes{shapes_version}'
  return _scene_configs.setdefault(name, ProceduralScenesConfig(
      name=name, version=tfds.core.Version(SCENES_VERSION),
      num_train_examples=num_train_examples, num_test_examples=num_test_examples,
      render_resolution=render_resolution, seed=seed, shapes_version=shapes_version))


class _RenderedDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What the built-in datasets share: rendering in chunks under one line and one bar."""

  RENDER_COST = _CLASSIFICATION_COST

  # tfds 4.9.10 derives `code_path` through `importlib_resources`, which is
  # only installed on Python < 3.9; the file path is what it needs.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, **kwargs):
    with _expected_tfds_warnings_hidden():
      super().__init__(**kwargs)

  def _image_dataset_info(self, supervised_keys=None, **features) -> tfds.core.DatasetInfo:
    """The info of a dataset of rendered JPEG images (`image`) and these other features."""
    resolution = self.builder_config.render_resolution
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(resolution, resolution, 3),
                                         encoding_format='jpeg'),
            **features,
        }),
        supervised_keys=supervised_keys,
    )

  def is_prepared(self) -> bool:
    with _expected_tfds_warnings_hidden():
      return super().is_prepared()

  def download_and_prepare(self, *args, **kwargs):
    # TFDS's own bars (the splits, each split's examples without a total, the
    # shuffling) would stack under the rendering bar below and add nothing.
    # They are back on afterwards, as TFDS has them by default (nothing in this
    # repository turns them off).
    tfds.display_progress_bar(False)
    try:
      with _expected_tfds_warnings_hidden():
        super().download_and_prepare(*args, **kwargs)
    finally:
      tfds.display_progress_bar(True)

  # TFDS announces every preparation as "Downloading and preparing dataset
  # Unknown size (download: Unknown size, ...)" and ends with "downloaded and
  # prepared"; nothing is downloaded here, so these two hooks say what happens.
  def _log_download_bytes(self) -> None:
    config = self.builder_config
    print(announcement(config.num_train_examples, config.num_test_examples,
                       config.render_resolution, self.data_dir, self.name, self.RENDER_COST),
          flush=True)

  def _log_download_done(self) -> None:
    pass  # the rendering bar has already shown the end

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    config = self.builder_config
    progress = tqdm.tqdm(total=config.num_train_examples + config.num_test_examples,
                         desc=f'rendering {self.name}', unit='img', dynamic_ncols=True)
    return {
        'train': self._generate_examples('train', config.num_train_examples, progress),
        'test': self._generate_examples('test', config.num_test_examples, progress),
    }

  def _generate_examples(self, split: str, num_examples: int, progress: tqdm.tqdm):
    index = 0
    for chunk in self._render_chunks(split, num_examples):
      for example in chunk:
        yield index, example
        index += 1
      progress.update(len(chunk))
    if progress.n >= progress.total:  # both splits rendered (TFDS runs them in turn)
      progress.close()

  def _render_chunks(self, split: str, num_examples: int) -> Iterator[list[dict]]:
    """The split's examples (feature dicts), a chunk at a time."""
    raise NotImplementedError


class ProceduralShapes(_RenderedDataset):
  """Shape/texture/arrangement classes (10 or 20) rendered with nuisance variation."""

  VERSION = tfds.core.Version(LATEST_VERSION)
  SUPPORTED_VERSIONS = [tfds.core.Version(version) for version in VERSIONS
                        if version != LATEST_VERSION]
  RELEASE_NOTES = {
      '1.0.0': 'First version (PNG).',
      '1.1.0': 'JPEG (quality 95, 4:4:4): faster to generate and read.',
      '1.2.0': 'Larger, higher-contrast objects; gentler clutter and noise.',
      '2.0.0': ('20 classes: a fine-detail twin of each 1.2.0 shape; objects 35%-85% of the '
                'side; supersampled object coverage. 1.2.0 stays selectable.'),
  }
  BUILDER_CONFIGS = [make_builder_config(version=version) for version in VERSIONS]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._image_dataset_info(
        supervised_keys=('image', 'label'),
        label=tfds.features.ClassLabel(names=class_names(str(self.version))))

  def _render_chunks(self, split, num_examples):
    config = self.builder_config
    for images, labels in render_split(num_examples, config.render_resolution,
                                       config.seed, split, str(self.version)):
      yield [{'image': _encode(image, 'JPEG'), 'label': int(label)}
             for image, label in zip(images, labels)]


class _SceneDataset(_RenderedDataset, skip_registration=True):
  """What the multi-object datasets share: their version, configs and rendering cost."""

  VERSION = tfds.core.Version(SCENES_VERSION)
  RELEASE_NOTES = {SCENES_VERSION: 'First version.'}
  BUILDER_CONFIGS = [make_scene_builder_config()]
  RENDER_COST = _SCENE_COST


class ProceduralShapesDetection(_SceneDataset):
  """1-4 occluding shapes an image with their visible boxes and classes."""

  def _info(self) -> tfds.core.DatasetInfo:
    names = class_names(self.builder_config.shapes_version)
    return self._image_dataset_info(objects=tfds.features.Sequence({
        'bbox': tfds.features.BBoxFeature(),
        'label': tfds.features.ClassLabel(names=names),
    }))

  def _render_chunks(self, split, num_examples):
    config = self.builder_config
    for rendering in render_scene_split(num_examples, config.render_resolution, config.seed,
                                        split, config.shapes_version):
      yield [{'image': _encode(image, 'JPEG'), 'objects': {'bbox': boxes, 'label': labels}}
             for image, (boxes, labels) in zip(rendering.images, annotations(rendering))]


class ProceduralShapesSegmentation(_SceneDataset):
  """The detection dataset's scenes with a per-pixel class mask."""

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.render_resolution
    return self._image_dataset_info(
        supervised_keys=('image', 'segmentation_mask'),
        # 0 background, 1 + the class of procedural_shapes' class list.
        segmentation_mask=tfds.features.Image(shape=(resolution, resolution, 1),
                                              encoding_format='png'))

  def _render_chunks(self, split, num_examples):
    config = self.builder_config
    for rendering in render_scene_split(num_examples, config.render_resolution, config.seed,
                                        split, config.shapes_version):
      yield [{'image': _encode(image, 'JPEG'), 'segmentation_mask': _encode(mask, 'PNG')}
             for image, mask in zip(rendering.images, rendering.class_map)]
