"""ProceduralShapes: a built-in image-classification dataset rendered locally.

This machine-independent dataset lets every command of the repository run with
no download. It is a TFDS `GeneratorBasedBuilder` (registered as
``'procedural_shapes'`` when `mnv2_jax.data` is imported), so it goes through
exactly the same `tfds` reading, caching, splitting and preprocessing code as
ImageNet: the first use renders it into
``<data_dir>/procedural_shapes/<config>/`` and later uses read the cached
TFRecord files.

Two versions, both selectable (`tfds.builder('procedural_shapes:1.2.0')`, or
`data.dataset_version` in a config); rendering is a function of the version, so
each version's images stay the same bit for bit:

  2.0.0  (the newest) 20 classes: each 1.2.0 shape and a twin that differs
         from it only in a fine detail (a small hole, a second ring or frame,
         stripes or checks at half the period, rings instead of discs), so
         that a higher input resolution resolves more of what tells classes
         apart; objects span 35%-85% of the image side; a pixel's object
         coverage is the share of its area inside the object (computed on a
         grid of >= 128 px a side and averaged down), as a camera's pixel
         integrates light, so the same scene at 32 px is the one at 128 px
         seen through 4x4 larger pixels.
  1.2.0  the 10 classes below; objects span 45%-85%; coverage sampled at the
         pixel centres.

Classes of 1.2.0. Each image shows one foreground object whose class is defined
only by its spatial structure (silhouette, holes, arrangement or texture):

  0 disc        filled disc
  1 ring        annulus (a disc with a hole)
  2 square      filled square
  3 frame       hollow square
  4 triangle    filled equilateral triangle
  5 cross       plus sign
  6 stripes     disc filled with parallel stripes (texture)
  7 checker     square filled with a checkerboard (texture)
  8 pair        two small discs side by side (arrangement)
  9 triad       three small discs on a triangle (arrangement)

Generative process (per image, all parameters drawn independently):
  * background: a linear colour gradient in a random direction between a
    random colour and one within +-0.3 of it per channel, a low-frequency
    sinusoidal shading and 0-4 soft Gaussian blobs (opacity 0.4) of random
    colour, position and size;
  * clutter: 0-3 thin line segments (opacity 0.5) of random colour, position,
    length and width, drawn behind the object;
  * object: its class's shape, described by a signed distance function in the
    object's own frame, with random centre (fully inside the image), scale
    (the span of the version, above), rotation (0-360
    degrees) and a random colour kept at least 0.5 (RGB distance) from the
    background mean;
    edges are anti-aliased (coverage from the signed distance in pixels), so
    the same classes render at any resolution >= 32;
  * noise: i.i.d. Gaussian pixel noise with a random standard deviation of
    0-5% of the range, then quantisation to uint8. Stored as JPEG (quality 95,
    no chroma subsampling; ~5 KB an image at 64 px, mean absolute error ~3/255)
    so that it is read through the same fused decode-and-crop path as ImageNet.

Nothing about a class is carried by colour, position or size, so a linear
classifier on raw pixels stays close to chance while a small CNN learns the
classes. Labels are balanced (example i of a split has label i mod the number
of classes).
Rendering is vectorised with NumPy over chunks of images; a chunk's random
state is seeded from (seed, split, chunk index), so a split is a deterministic
function of (version, seed, number of examples, render resolution).
"""

import contextlib
import dataclasses
import io
import logging
from typing import Callable, Iterator

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
import tqdm

# 1.2.0's classes; 2.0.0 adds a fine-detail twin after each (`FINE_CLASS_NAMES`).
CLASS_NAMES = ('disc', 'ring', 'square', 'frame', 'triangle', 'cross',
               'stripes', 'checker', 'pair', 'triad')
NUM_CLASSES = len(CLASS_NAMES)
FINE_CLASS_NAMES = ('disc', 'holed_disc', 'ring', 'double_ring', 'square', 'holed_square',
                    'frame', 'double_frame', 'triangle', 'holed_triangle', 'cross',
                    'holed_cross', 'stripes', 'fine_stripes', 'checker', 'fine_checker',
                    'pair', 'pair_of_rings', 'triad', 'triad_of_rings')
LATEST_VERSION = '2.0.0'
MIN_RENDER_RESOLUTION = 32
_CHUNK_SIZE = 256
_JPEG_QUALITY = 95
_SPLIT_IDS = {'train': 0, 'test': 1}
# For the "about S s" of the announcement: rendering, JPEG encoding and TFDS's
# writing and shuffling took 2.7-3.8 ms an image at 48-64 px on a shared
# 2-core CPU (22,000 images at 64 px in 59 s, 12,000 at 48 px in ~45 s); the
# rendering grows with the pixel count above that.
_SECONDS_PER_IMAGE = 0.003
_MEASURED_RESOLUTION = 64


def estimated_render_seconds(num_images: int, resolution: int) -> float:
  """A rough wall time for rendering and storing `num_images`; the progress bar shows the real
  one."""
  return num_images * _SECONDS_PER_IMAGE * max(1.0, (resolution / _MEASURED_RESOLUTION) ** 2)


def announcement(num_train_examples: int, num_test_examples: int, resolution: int,
                 directory: str) -> str:
  """The one line printed before the dataset is rendered."""
  seconds = estimated_render_seconds(num_train_examples + num_test_examples, resolution)
  return (f'rendering procedural_shapes: {num_train_examples:,} train + {num_test_examples:,} '
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


def _box(u, v, half_u, half_v):
  """Signed distance (approximately, L-inf inside) to an axis-aligned box."""
  return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _discs(u, v, centres, radius):
  dists = [np.hypot(u - cu, v - cv) for cu, cv in centres]
  return np.minimum.reduce(dists) - radius


def _class_sdf(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance to the class's shape in object units (object fits r<=1)."""
  r = np.hypot(u, v)
  if label == 0:  # disc
    return r - 0.9
  if label == 1:  # ring
    return np.abs(r - 0.68) - 0.22
  if label == 2:  # square
    return _box(u, v, 0.68, 0.68)
  if label == 3:  # frame
    return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.56) - 0.14
  if label == 4:  # triangle with circumradius 0.95
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    edges = [u * np.cos(a) + v * np.sin(a) for a in angles]
    return np.maximum.reduce(edges) - 0.475
  if label == 5:  # cross
    return np.minimum(_box(u, v, 0.9, 0.25), _box(u, v, 0.25, 0.9))
  if label == 6:  # stripes: 2 periods per unit, half duty cycle
    period = 0.5
    stripe = np.abs(np.mod(u, period) - period / 2) - period / 4
    return np.maximum(r - 0.9, stripe)
  if label == 7:  # checker: 4x4 cells over the square
    cell = 0.35
    checker = np.sin(np.pi * u / cell) * np.sin(np.pi * v / cell)
    return np.maximum(_box(u, v, 0.7, 0.7), -checker * cell / np.pi)
  if label == 8:  # pair
    return _discs(u, v, ((-0.5, 0.0), (0.5, 0.0)), 0.36)
  if label == 9:  # triad
    angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
    centres = [(0.55 * np.cos(a), 0.55 * np.sin(a)) for a in angles]
    return _discs(u, v, centres, 0.32)
  raise ValueError(f'label {label} is not in 0..{NUM_CLASSES - 1}')


def _fine_class_sdf(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """2.0.0: even labels are 1.2.0's shapes, odd ones their fine-detail twins.

  Each twin keeps its shape's silhouette and differs inside it by a detail of
  0.13-0.25 object units (at the smallest object at 32 px, one unit is ~5.6 px).
  """
  shape = label // 2
  coarse = _class_sdf(shape, u, v)
  if label % 2 == 0:
    return coarse
  r = np.hypot(u, v)
  if shape == 0:  # disc with a central hole
    return np.maximum(coarse, 0.25 - r)
  if shape == 1:  # two thin concentric rings instead of one thick ring
    return np.minimum(np.abs(r - 0.8) - 0.1, np.abs(r - 0.45) - 0.1)
  if shape in (2, 4):  # square or triangle with a central hole
    return np.maximum(coarse, -_box(u, v, 0.2, 0.2) if shape == 2 else 0.22 - r)
  if shape == 3:  # two thin concentric frames
    chebyshev = np.maximum(np.abs(u), np.abs(v))
    return np.minimum(np.abs(chebyshev - 0.62) - 0.08, np.abs(chebyshev - 0.32) - 0.08)
  if shape == 5:  # cross with a square hole where the arms meet
    return np.maximum(coarse, -_box(u, v, 0.13, 0.13))
  if shape == 6:  # stripes at half the period
    period = 0.25
    stripe = np.abs(np.mod(u, period) - period / 2) - period / 4
    return np.maximum(r - 0.9, stripe)
  if shape == 7:  # 8x8 checks instead of 4x4
    cell = 0.175
    checker = np.sin(np.pi * u / cell) * np.sin(np.pi * v / cell)
    return np.maximum(_box(u, v, 0.7, 0.7), -checker * cell / np.pi)
  if shape in (8, 9):  # the pair's or the triad's discs become rings
    radius = 0.36 if shape == 8 else 0.32
    hole = 0.16 if shape == 8 else 0.14
    if shape == 8:
      centres = ((-0.5, 0.0), (0.5, 0.0))
    else:
      angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
      centres = [(0.55 * np.cos(a), 0.55 * np.sin(a)) for a in angles]
    distance = _discs(u, v, centres, 0.0)
    return np.abs(distance - (radius + hole) / 2) - (radius - hole) / 2
  raise ValueError(f'label {label} is not in 0..{len(FINE_CLASS_NAMES) - 1}')


@dataclasses.dataclass(frozen=True)
class _VersionSpec:
  """What a dataset version draws and how it renders the object."""
  class_names: tuple[str, ...]
  class_sdf: Callable[[int, np.ndarray, np.ndarray], np.ndarray]
  object_scale: tuple[float, float]  # object radius in half-image units
  # The object's coverage is computed on a grid of at least this many pixels
  # a side and box-averaged down to the render resolution (1: pixel centres).
  supersampled_side: int


_VERSIONS = {
    '1.2.0': _VersionSpec(CLASS_NAMES, _class_sdf, (0.45, 0.85), 1),
    '2.0.0': _VersionSpec(FINE_CLASS_NAMES, _fine_class_sdf, (0.35, 0.85), 128),
}
VERSIONS = tuple(_VERSIONS)


def _version_spec(version: str) -> _VersionSpec:
  if str(version) not in _VERSIONS:
    raise ValueError(f'procedural_shapes has no version {version!r}; the versions are '
                     f'{", ".join(VERSIONS)}.')
  return _VERSIONS[str(version)]


def class_names(version: str = LATEST_VERSION) -> tuple[str, ...]:
  """The class names of a dataset version, in label order."""
  return _version_spec(version).class_names


def _coverage(signed_distance_pixels: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage of a pixel from its signed distance in pixels."""
  return np.clip(0.5 - signed_distance_pixels, 0.0, 1.0)


def _bilinear_upsample_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] matrix of bilinear interpolation weights."""
  position = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
  position = np.clip(position, 0, size_in - 1)
  lower = np.floor(position).astype(int)
  upper = np.minimum(lower + 1, size_in - 1)
  weight = (position - lower).astype(np.float32)
  matrix = np.zeros((size_out, size_in), np.float32)
  matrix[np.arange(size_out), lower] += 1 - weight
  matrix[np.arange(size_out), upper] += weight
  return matrix


def _pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in [-1, 1] (one unit = half the image side)."""
  axis = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1
  y, x = np.meshgrid(axis, axis, indexing='ij')
  return x[None], y[None]  # [1, R, R]


def _column(values) -> np.ndarray:
  """Per-image scalars shaped to broadcast against [n, R, R]."""
  return np.asarray(values, np.float32)[:, None, None]


def _blend(image, alpha, colour):
  """Alpha-composites `colour` ([n, 3]) over a channel-first image in place."""
  for channel in range(3):
    target = _column(colour[:, channel])
    image[:, channel] += alpha * (target - image[:, channel])


def _render_background(n: int, resolution: int,
                       rng: np.random.Generator) -> np.ndarray:
  """Gradient + shading + soft blobs, [n, 3, R, R] float32.

  All of it is smooth, so it is rendered on a coarse grid and upsampled
  bilinearly, which keeps generation fast at any resolution.
  """
  coarse = 16
  x, y = _pixel_grid(coarse)
  colour_a = rng.uniform(0, 1, (n, 3))
  # The second colour stays near the first: a gradient between unrelated
  # colours would leave parts of the object without contrast.
  colour_b = np.clip(colour_a + rng.uniform(-0.3, 0.3, (n, 3)), 0, 1)
  direction = rng.uniform(0, 2 * np.pi, n)
  ramp = (_column(np.cos(direction)) * x + _column(np.sin(direction)) * y
          + 1) / 2
  image = (colour_a.astype(np.float32)[:, :, None, None] * (1 - ramp[:, None]) +
           colour_b.astype(np.float32)[:, :, None, None] * ramp[:, None])
  frequency = _column(rng.uniform(0.5, 2.0, n)) * np.pi
  phase = _column(rng.uniform(0, 2 * np.pi, n))
  wave_angle = rng.uniform(0, 2 * np.pi, n)
  wave = (_column(np.cos(wave_angle)) * x + _column(np.sin(wave_angle)) * y)
  image += 0.1 * np.sin(frequency * wave + phase)[:, None]
  for _ in range(4):
    present = _column(rng.uniform(0, 1, n) < 0.6)
    centre = rng.uniform(-1, 1, (n, 2))
    sigma = _column(rng.uniform(0.05, 0.2, n))
    colour = rng.uniform(0, 1, (n, 3))
    squared = ((x - _column(centre[:, 0])) ** 2 +
               (y - _column(centre[:, 1])) ** 2)
    alpha = np.exp(-squared / (2 * sigma * sigma)) * present * 0.4
    _blend(image, alpha, colour)
  upsample = _bilinear_upsample_matrix(coarse, resolution)
  return np.matmul(np.matmul(upsample, image.astype(np.float32)), upsample.T)


def _object_coverage(labels, resolution, centre, angle, scale, spec: _VersionSpec):
  """Anti-aliased coverage [n, R, R] of each image's object, supersampled per `spec`."""
  factor = max(1, -(-spec.supersampled_side // resolution))  # ceil
  side = resolution * factor
  x, y = _pixel_grid(side)
  cos, sin, s = _column(np.cos(angle)), _column(np.sin(angle)), _column(scale)
  dx, dy = x - _column(centre[:, 0]), y - _column(centre[:, 1])
  u = (cos * dx + sin * dy) / s
  v = (cos * dy - sin * dx) / s
  signed_distance = np.empty((len(labels), side, side), np.float32)
  for label in np.unique(labels):
    members = labels == label
    signed_distance[members] = spec.class_sdf(int(label), u[members], v[members])
  alpha = _coverage(signed_distance * (s * side / 2))
  if factor == 1:
    return alpha
  return alpha.reshape(len(labels), resolution, factor, resolution, factor).mean(axis=(2, 4))


def render_images(labels: np.ndarray, resolution: int, rng: np.random.Generator,
                  version: str = LATEST_VERSION) -> np.ndarray:
  """One image per label: uint8 [len(labels), resolution, resolution, 3]."""
  spec = _version_spec(version)
  if resolution < MIN_RENDER_RESOLUTION:
    raise ValueError(f'render resolution {resolution} is below '
                     f'{MIN_RENDER_RESOLUTION}; use a resolution >= '
                     f'{MIN_RENDER_RESOLUTION}.')
  n = len(labels)
  x, y = _pixel_grid(resolution)
  pixels_per_unit = resolution / 2
  image = _render_background(n, resolution, rng)  # [n, 3, R, R]

  # Clutter: thin line segments behind the object.
  for _ in range(3):
    present = _column(rng.uniform(0, 1, n) < 0.7)
    start = rng.uniform(-1, 1, (n, 2))
    delta = rng.uniform(-1, 1, (n, 2))
    half_width = _column(rng.uniform(0.25, 0.75, n))
    colour = rng.uniform(0, 1, (n, 3))
    px, py = x - _column(start[:, 0]), y - _column(start[:, 1])
    dx, dy = _column(delta[:, 0]), _column(delta[:, 1])
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
    distance = np.hypot(px - t * dx, py - t * dy) * pixels_per_unit
    _blend(image, _coverage(distance - half_width) * (present * 0.5), colour)

  # Object frame: scale (object radius in units), rotation, centre inside.
  scale = rng.uniform(*spec.object_scale, n)
  centre = rng.uniform(-1, 1, (n, 2)) * (1 - scale[:, None])
  angle = rng.uniform(0, 2 * np.pi, n)
  alpha = _object_coverage(labels, resolution, centre, angle, scale, spec)

  # Foreground colour far enough from the background for the shape to show.
  background_mean = image.mean(axis=(2, 3))
  foreground = rng.uniform(0, 1, (n, 3))
  offset = foreground - background_mean
  distance = np.linalg.norm(offset, axis=1, keepdims=True)
  pushed = np.clip(background_mean + offset / np.maximum(distance, 1e-3) * 0.5,
                   0, 1)
  foreground = np.where(distance < 0.5, pushed, foreground)
  still_close = np.linalg.norm(foreground - background_mean, axis=1,
                               keepdims=True) < 0.45
  foreground = np.where(still_close, 1 - background_mean, foreground)
  _blend(image, alpha, foreground)

  noise_std = rng.uniform(0, 0.05, n).astype(np.float32)[:, None, None, None]
  image += rng.standard_normal(image.shape, dtype=np.float32) * noise_std
  image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
  return image.transpose(0, 2, 3, 1)


def render_split(num_examples: int, resolution: int, seed: int, split: str,
                 version: str = LATEST_VERSION) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (images, labels) chunks of a split, deterministically."""
  num_classes = len(class_names(version))
  for start in range(0, num_examples, _CHUNK_SIZE):
    stop = min(start + _CHUNK_SIZE, num_examples)
    labels = np.arange(start, stop) % num_classes
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], start // _CHUNK_SIZE])
    yield render_images(labels, resolution, rng, version), labels


def _encode_jpeg(image: np.ndarray) -> bytes:
  # PIL encodes ~5x faster than TFDS's per-image TensorFlow encoder.
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=_JPEG_QUALITY,
                             subsampling=0)  # 4:4:4: keep thin coloured lines.
  return buffer.getvalue()


@dataclasses.dataclass
class ProceduralShapesConfig(tfds.core.BuilderConfig):
  """Size, render resolution and seed of the built-in dataset."""
  num_train_examples: int = 10_000
  num_test_examples: int = 2_000
  render_resolution: int = 64
  seed: int = 0


def make_builder_config(num_train_examples: int = 10_000,
                        num_test_examples: int = 2_000,
                        render_resolution: int = 64,
                        seed: int = 0,
                        version: str = LATEST_VERSION) -> ProceduralShapesConfig:
  """A config whose name encodes its parameters (the cache directory name).

  The version is the config's own, so TFDS renders any version this file knows
  (it renders only a builder's newest version otherwise) into
  ``<data_dir>/procedural_shapes/<name>/<version>``.
  """
  _version_spec(version)
  name = (f'train{num_train_examples}_test{num_test_examples}'
          f'_res{render_resolution}_seed{seed}')
  return ProceduralShapesConfig(
      name=name, version=tfds.core.Version(version), num_train_examples=num_train_examples,
      num_test_examples=num_test_examples, render_resolution=render_resolution,
      seed=seed)


class ProceduralShapes(tfds.core.GeneratorBasedBuilder):
  """10 shape/texture/arrangement classes rendered with nuisance variation."""

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

  # tfds 4.9.10 derives `code_path` through `importlib_resources`, which is
  # only installed on Python < 3.9; the file path is what it needs.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    resolution = self.builder_config.render_resolution
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(resolution, resolution, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=class_names(str(self.version))),
        }),
        supervised_keys=('image', 'label'),
    )

  def __init__(self, **kwargs):
    with _expected_tfds_warnings_hidden():
      super().__init__(**kwargs)

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
                       config.render_resolution, self.data_dir), flush=True)

  def _log_download_done(self) -> None:
    pass  # the rendering bar has already shown the end

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    config = self.builder_config
    progress = tqdm.tqdm(total=config.num_train_examples + config.num_test_examples,
                         desc='rendering procedural_shapes', unit='img', dynamic_ncols=True)
    return {
        'train': self._generate_examples('train', config.num_train_examples, progress),
        'test': self._generate_examples('test', config.num_test_examples, progress),
    }

  def _generate_examples(self, split: str, num_examples: int, progress: tqdm.tqdm):
    config = self.builder_config
    index = 0
    for images, labels in render_split(num_examples, config.render_resolution,
                                       config.seed, split, str(self.version)):
      for image, label in zip(images, labels):
        yield index, {'image': _encode_jpeg(image), 'label': int(label)}
        index += 1
      progress.update(len(labels))
    if progress.n >= progress.total:  # both splits rendered (TFDS runs them in turn)
      progress.close()
