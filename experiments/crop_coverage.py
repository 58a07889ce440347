r"""How much of the object does the training crop keep on procedural_shapes?

  python -m experiments.crop_coverage [--min-areas 0.05,0.5,1.0] [--samples 20000]

The random crop of the input pipeline (`preprocessing.random_crop_window`, the
Inception crop with a smallest area fraction) is drawn here with the same
TensorFlow op and seeds, and laid over objects placed as the renderer places
them (`procedural_shapes`: object radius s uniform in [0.45, 0.85] half-sides,
centre uniform such that the object lies inside the image). For each smallest
area it prints the share of training examples whose crop keeps less than 25%,
50% and 75% of the object's bounding square. An example that keeps little of
its object carries a label the image no longer shows: label noise that slows
the first steps (results/cpu/PROTOCOL.md).
"""

import sys
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from mnv2_jax import errors
from mnv2_jax.data import preprocessing

IMAGE_SIDE = 256  # pixels; the crop window is computed in pixels, then normalised
OBJECT_RADIUS_RANGE = (0.45, 0.85)  # half-sides, as procedural_shapes renders objects
THRESHOLDS = (0.25, 0.5, 0.75)


def kept_fractions(min_area: float, samples: int, seed: int = 0) -> np.ndarray:
  """Per sample, the fraction of the object's bounding square inside the crop."""
  rng = np.random.default_rng(seed)
  radius = rng.uniform(*OBJECT_RADIUS_RANGE, samples)
  centre = rng.uniform(-1, 1, (samples, 2)) * (1 - radius[:, None])
  # Object box in [0, 1] image coordinates (y and x alike).
  low = (centre - radius[:, None] + 1) / 2
  high = (centre + radius[:, None] + 1) / 2
  shape = tf.constant([IMAGE_SIDE, IMAGE_SIDE], tf.int32)
  windows = np.stack([
      preprocessing.random_crop_window(shape, tf.constant([seed, i]), min_area).numpy()
      for i in range(samples)]) / IMAGE_SIDE  # [offset_y, offset_x, height, width]
  crop_low, crop_high = windows[:, :2], windows[:, :2] + windows[:, 2:]
  overlap = np.clip(np.minimum(high, crop_high) - np.maximum(low, crop_low), 0, None)
  return overlap.prod(axis=1) / (high - low).prod(axis=1)


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--min-areas', default='0.05,0.5,1.0')
  parser.add_argument('--samples', type=int, default=20_000)
  args = parser.parse_args(argv)
  try:
    min_areas = [float(text) for text in args.min_areas.split(',')]
  except ValueError:
    raise errors.UserError(f'--min-areas must be comma-separated numbers, got '
                           f'{args.min_areas!r}.') from None
  print('| smallest crop area | ' + ' | '.join(f'keeps < {t:.0%} of the object'
                                                 for t in THRESHOLDS) + ' | mean kept |')
  print('|---' * (len(THRESHOLDS) + 2) + '|')
  for min_area in min_areas:
    kept = kept_fractions(min_area, args.samples)
    cells = [f'{np.mean(kept < threshold):.1%}' for threshold in THRESHOLDS]
    print(f'| {min_area:g} | ' + ' | '.join(cells) + f' | {kept.mean():.1%} |')


if __name__ == '__main__':
  sys.exit(main())
