"""The scene renderer of the built-in datasets: shapes over a cluttered background.

One renderer serves the three built-in datasets (`procedural_shapes` for
classification, `procedural_shapes_detection`, `procedural_shapes_segmentation`;
their builders are in procedural_shapes.py), so they share the shape classes,
the backgrounds, the clutter, the noise and the determinism rules. It is a
module of its own because it knows nothing of TFDS: what a dataset draws (how
many objects, which classes, how large) and how it stores it is the dataset's
business, how a scene becomes pixels and annotations is this module's.

A batch of n scenes is drawn for one resolution (`draw_scenes`) and rendered
(`render_scenes`). Each scene has

  * a background: a linear colour gradient in a random direction between a
    random colour and one within +-0.3 of it per channel, a low-frequency
    sinusoidal shading and 0-4 soft Gaussian blobs (opacity 0.4) of random
    colour, position and size;
  * clutter: 0-3 thin line segments (opacity 0.5) of random colour, position,
    length and width;
  * K >= 1 object slots, composited back to front (a later object occludes the
    earlier ones); a scene may leave its last slots empty. An object is its
    class's shape, described by a signed distance function in the object's own
    frame, at a centre (the object lies fully inside the image), a scale (its
    radius in half-image units), a rotation and a colour kept at least 0.5 (RGB
    distance) from the background mean. Edges are anti-aliased (coverage from
    the signed distance in pixels), so the classes render at any resolution >=
    32;
  * noise: i.i.d. Gaussian pixel noise with a random standard deviation of 0-5%
    of the range, then quantisation to uint8.

The shape classes and how coverage is sampled are those of a procedural_shapes
version (`version_spec`):

  2.0.0  20 classes: each 1.2.0 shape and a twin that differs from it only in
         a fine detail (a small hole, a second ring or frame, stripes or checks
         at half the period, rings instead of discs); a pixel's coverage is the
         share of its area inside the object (computed on a grid of >= 128 px a
         side and averaged down), as a camera's pixel integrates light.
  1.2.0  10 classes (disc, ring, square, frame, triangle, cross, stripes,
         checker, pair, triad), each defined only by its spatial structure
         (silhouette, holes, arrangement or texture); coverage sampled at the
         pixel centres.

Annotations follow one rule: a pixel shows an object when the object's own
coverage there is >= 0.5 and no object in front of it has coverage >= 0.5 there
(the top-most such object; with 1.2.0's sampling, "the pixel centre is inside
it"). The object map and the class map (0 background, 1 + class) say which
object, and which class, each pixel shows; an object's box is the tight
axis-aligned box of the pixels that show it (its visible part, so occlusion can
shrink it), in pixel edges normalised to [0, 1]: [ymin, xmin, ymax, xmax].

All randomness comes from the generator passed to `draw_scenes`, in a fixed
order (background, clutter, object frames, object colours, noise), and
rendering is a function of the drawn scenes; a single-object batch draws
exactly what procedural_shapes 1.2.0 and 2.0.0 always drew, so their images
stay the same bit for bit.
"""

import dataclasses
from typing import Callable, NamedTuple, Optional

import numpy as np

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
# Coverage a pixel needs for the object to be what it shows (see the docstring).
SHOWN_COVERAGE = 0.5


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
class VersionSpec:
  """The shapes of a procedural_shapes version and how it renders them."""
  class_names: tuple[str, ...]
  class_sdf: Callable[[int, np.ndarray, np.ndarray], np.ndarray]
  object_scale: tuple[float, float]  # the classification's object radius, half-image units
  # The object's coverage is computed on a grid of at least this many pixels
  # a side and box-averaged down to the render resolution (1: pixel centres).
  supersampled_side: int


_VERSIONS = {
    '1.2.0': VersionSpec(CLASS_NAMES, _class_sdf, (0.45, 0.85), 1),
    '2.0.0': VersionSpec(FINE_CLASS_NAMES, _fine_class_sdf, (0.35, 0.85), 128),
}
VERSIONS = tuple(_VERSIONS)


def version_spec(version: str) -> VersionSpec:
  if str(version) not in _VERSIONS:
    raise ValueError(f'procedural_shapes has no version {version!r}; the versions are '
                     f'{", ".join(VERSIONS)}.')
  return _VERSIONS[str(version)]


def class_names(version: str = LATEST_VERSION) -> tuple[str, ...]:
  """The class names of a version's shapes, in label order."""
  return version_spec(version).class_names


def _clip(values: np.ndarray, low: float, high: float) -> np.ndarray:
  # np.clip's result, at a third of its time on NumPy 2.
  return np.minimum(np.maximum(values, low), high)


def _coverage(signed_distance_pixels: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage of a pixel from its signed distance in pixels."""
  return _clip(0.5 - signed_distance_pixels, 0.0, 1.0)


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


def _render_clutter(image: np.ndarray, rng: np.random.Generator) -> None:
  """Thin line segments over the background ([n, 3, R, R], in place)."""
  n, resolution = len(image), image.shape[-1]
  x, y = _pixel_grid(resolution)
  pixels_per_unit = resolution / 2
  for _ in range(3):
    present = rng.uniform(0, 1, n) < 0.7
    start = rng.uniform(-1, 1, (n, 2))[present]
    delta = rng.uniform(-1, 1, (n, 2))[present]
    half_width = _column(rng.uniform(0.25, 0.75, n)[present])
    colour = rng.uniform(0, 1, (n, 3))[present]
    # Only the images that draw this segment are computed: a missing one
    # would be blended with opacity 0, which leaves every pixel as it is.
    px, py = x - _column(start[:, 0]), y - _column(start[:, 1])
    dx, dy = _column(delta[:, 0]), _column(delta[:, 1])
    t = _clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
    distance = np.hypot(px - t * dx, py - t * dy) * pixels_per_unit
    drawn = image[present]
    _blend(drawn, _coverage(distance - half_width) * np.float32(0.5), colour)
    image[present] = drawn


def object_coverage(labels, resolution, centre, angle, scale, spec: VersionSpec,
                    corner=None, size=None):
  """Anti-aliased coverage of one object per image, supersampled per `spec`.

  [n, R, R], or [n, size, size] pixels from each image's `corner` ([n, 2]
  (row, column), in render pixels) on: the same values as the whole image's
  there, so an object's coverage is computed only where it can be nonzero.
  """
  factor = max(1, -(-spec.supersampled_side // resolution))  # ceil
  side = resolution * factor
  size = size or resolution
  corner = np.zeros((len(labels), 2), int) if corner is None else np.asarray(corner)
  axis = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1  # as `_pixel_grid`'s
  span = np.arange(size * factor)
  y = axis[corner[:, :1] * factor + span][:, :, None]  # [n, S, 1]
  x = axis[corner[:, 1:] * factor + span][:, None, :]  # [n, 1, S]
  cos, sin, s = _column(np.cos(angle)), _column(np.sin(angle)), _column(scale)
  dx, dy = x - _column(centre[:, 0]), y - _column(centre[:, 1])
  u = (cos * dx + sin * dy) / s
  v = (cos * dy - sin * dx) / s
  signed_distance = np.empty(u.shape, np.float32)
  for label in np.unique(labels):
    members = labels == label
    signed_distance[members] = spec.class_sdf(int(label), u[members], v[members])
  alpha = _coverage(signed_distance * (s * side / 2))
  if factor == 1:
    return alpha
  return alpha.reshape(len(labels), size, factor, size, factor).mean(axis=(2, 4))


def _object_windows(centre, scale, resolution) -> tuple[np.ndarray, int]:
  """Corners [n, 2] (row, column) and the side of squares of pixels that hold each object.

  Every shape lies within its radius and its anti-aliased edge reaches at most
  a pixel beyond (half a pixel where the signed distance is exact, a pixel at a
  triangle's corners); the squares reach at least a pixel beyond the radius
  on every side.
  """
  radius = scale * resolution / 2
  size = min(resolution, int(np.ceil(2 * radius.max())) + 4)
  centre_pixels = (centre[:, ::-1] + 1) * resolution / 2  # (row, column)
  corner = np.floor(centre_pixels - radius[:, None]).astype(int) - 2
  return np.clip(corner, 0, resolution - size), size


def _contrasting_colours(backdrop: np.ndarray, num_slots: int,
                         rng: np.random.Generator) -> np.ndarray:
  """[n, K, 3] object colours at least ~0.5 (RGB distance) from the backdrop's mean."""
  background_mean = backdrop.mean(axis=(2, 3))[:, None]  # [n, 1, 3]
  foreground = rng.uniform(0, 1, (len(backdrop), num_slots, 3))
  offset = foreground - background_mean
  distance = np.linalg.norm(offset, axis=-1, keepdims=True)
  pushed = np.clip(background_mean + offset / np.maximum(distance, 1e-3) * 0.5,
                   0, 1)
  foreground = np.where(distance < 0.5, pushed, foreground)
  still_close = np.linalg.norm(foreground - background_mean, axis=-1,
                               keepdims=True) < 0.45
  return np.where(still_close, 1 - background_mean, foreground)


@dataclasses.dataclass(frozen=True)
class Scenes:
  """n scenes drawn for one resolution, each with K object slots (back to front).

  The background and clutter carry no annotation, so they are kept rendered
  (`backdrop`); the objects are kept as parameters, so a test or a dataset can
  move, remove or recolour one and render the scene again.
  """
  version: str            # whose shapes and coverage sampling (`version_spec`)
  backdrop: np.ndarray    # [n, 3, R, R] float32 in [0, 1]: background and clutter
  labels: np.ndarray      # [n, K] int: each object's class
  present: np.ndarray     # [n, K] bool: False leaves the slot empty
  centre: np.ndarray      # [n, K, 2] (x, y), one unit = half the image side
  scale: np.ndarray       # [n, K] object radius in the same units
  angle: np.ndarray       # [n, K] rotation in radians
  colour: np.ndarray      # [n, K, 3] RGB in [0, 1]
  noise: np.ndarray       # [n, 3, R, R] float32, added after the objects

  @property
  def resolution(self) -> int:
    return self.backdrop.shape[-1]


class Rendering(NamedTuple):
  """Rendered scenes and their annotations (see the module docstring's rule)."""
  images: np.ndarray            # [n, R, R, 3] uint8
  class_map: np.ndarray         # [n, R, R] uint8: 0 background, 1 + class
  object_map: np.ndarray        # [n, R, R] int8: slot of the object shown, -1 background
  boxes: np.ndarray             # [n, K, 4] float32 [ymin, xmin, ymax, xmax] of the pixels
                                # showing each object; zeros when none does
  visible_fraction: np.ndarray  # [n, K] float32: pixels showing the object / pixels it
                                # covers (>= 0.5) unoccluded; 0 for empty slots
  labels: np.ndarray            # [n, K] as in the scenes, so that a rendering
  present: np.ndarray           # [n, K] holds everything the annotations need


def draw_scenes(labels: np.ndarray, resolution: int, rng: np.random.Generator,
                version: str = LATEST_VERSION,
                object_scale: Optional[tuple[float, float]] = None,
                present: Optional[np.ndarray] = None) -> Scenes:
  """Draws n scenes with objects of `labels` ([n, K], back to front) at `resolution`.

  `object_scale`: the range of object radii (half-image units; default: the
  version's classification range); `present` ([n, K] bool, default all):
  the slots that hold an object. Objects lie fully inside the image.
  """
  spec = version_spec(version)
  if resolution < MIN_RENDER_RESOLUTION:
    raise ValueError(f'render resolution {resolution} is below '
                     f'{MIN_RENDER_RESOLUTION}; use a resolution >= '
                     f'{MIN_RENDER_RESOLUTION}.')
  labels = np.asarray(labels)
  n, num_slots = labels.shape
  backdrop = _render_background(n, resolution, rng)  # [n, 3, R, R]
  _render_clutter(backdrop, rng)
  # Drawn as [n, K] arrays: with K = 1 these are the very draws of the [n]
  # arrays of the single-object renderer (procedural_shapes 1.2.0 and 2.0.0).
  scale = rng.uniform(*(object_scale or spec.object_scale), (n, num_slots))
  centre = rng.uniform(-1, 1, (n, num_slots, 2)) * (1 - scale[..., None])
  angle = rng.uniform(0, 2 * np.pi, (n, num_slots))
  colour = _contrasting_colours(backdrop, num_slots, rng)
  noise_std = rng.uniform(0, 0.05, n).astype(np.float32)[:, None, None, None]
  noise = rng.standard_normal(backdrop.shape, dtype=np.float32) * noise_std
  if present is None:
    present = np.ones((n, num_slots), bool)
  return Scenes(str(version), backdrop, labels, np.asarray(present, bool), centre, scale,
                angle, colour, noise)


def _boxes(shown: np.ndarray) -> np.ndarray:
  """[n, 4] normalised [ymin, xmin, ymax, xmax] of the True pixels of [n, R, R] (0 if none)."""
  resolution = shown.shape[-1]
  rows, columns = shown.any(axis=2), shown.any(axis=1)
  boxes = np.stack([rows.argmax(axis=1), columns.argmax(axis=1),
                    resolution - rows[:, ::-1].argmax(axis=1),
                    resolution - columns[:, ::-1].argmax(axis=1)], axis=1)
  return np.where(rows.any(axis=1, keepdims=True), boxes / resolution, 0).astype(np.float32)


def render_scenes(scenes: Scenes) -> Rendering:
  """Composites the objects over the backdrop back to front, adds the noise, quantises."""
  spec = version_spec(scenes.version)
  n, num_slots = scenes.labels.shape
  resolution = scenes.resolution
  image = scenes.backdrop.copy()
  object_map = np.full((n, resolution, resolution), -1, np.int8)
  covered_pixels = np.zeros((n, num_slots), np.int64)
  for slot in range(num_slots):
    members = scenes.present[:, slot]
    alpha = np.zeros((n, resolution, resolution), np.float32)
    if members.any():
      centre, scale = scenes.centre[members, slot], scenes.scale[members, slot]
      corner, size = _object_windows(centre, scale, resolution)
      span = np.arange(size)
      alpha[np.flatnonzero(members)[:, None, None], (corner[:, :1] + span)[:, :, None],
            (corner[:, 1:] + span)[:, None, :]] = object_coverage(
                scenes.labels[members, slot], resolution, centre,
                scenes.angle[members, slot], scale, spec, corner, size)
    _blend(image, alpha, scenes.colour[:, slot])
    covered = alpha >= SHOWN_COVERAGE
    object_map[covered] = slot  # in front of every earlier slot
    covered_pixels[:, slot] = covered.sum(axis=(1, 2))
  image += scenes.noise
  image = _clip(image * 255 + 0.5, 0, 255).astype(np.uint8)

  boxes = np.zeros((n, num_slots, 4), np.float32)
  shown_pixels = np.zeros((n, num_slots), np.int64)
  for slot in range(num_slots):
    shown = object_map == slot
    boxes[:, slot] = _boxes(shown)
    shown_pixels[:, slot] = shown.sum(axis=(1, 2))
  visible_fraction = (shown_pixels / np.maximum(covered_pixels, 1)).astype(np.float32)
  shown_label = np.take_along_axis(scenes.labels, np.maximum(object_map, 0).reshape(n, -1),
                                   axis=1).reshape(object_map.shape)
  class_map = np.where(object_map >= 0, 1 + shown_label, 0).astype(np.uint8)
  return Rendering(image.transpose(0, 2, 3, 1), class_map, object_map, boxes,
                   visible_fraction, scenes.labels, scenes.present)
