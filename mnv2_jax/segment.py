"""Runs a trained segmenter on image files: `python -m mnv2_jax.segment --workdir W IMAGE...`.

  python -m mnv2_jax.segment --workdir W scene.png --out scene_mask.png
  python -m mnv2_jax.segment --workdir W a.jpg b.png --draw drawn/ [--json] [--raw]

Prints, for each image, the pixels of each predicted class (one line per class,
or with --json one record per image: its path, height and width, and for each
predicted class its label, name, pixel count, fraction of the image and overlay
colour). With --out FILE.png (one image) or --draw DIR (DIR/<name>.png for each)
it also writes the image with its predicted mask overlaid: each class in a fixed
colour (the PASCAL VOC palette, `palette`) blended half and half with the image;
background pixels are left as they are, so the picture differs from the image
only where something other than background is predicted.

The weights are the workdir's newest checkpoint (EMA by default, --raw for the
raw ones). Each image goes through the task's evaluation preprocessing
(`tasks.segmentation.eval_example`: the longer side scaled to data.resolution,
bilinear, aspect kept, padded at the bottom and the right to a square), the
network runs in inference mode, the argmax of each pixel is taken, and the label
map is cropped back to the unpadded region and resized, nearest-neighbour, to the
image's own size: the counts and the picture are those of the original pixels.

Class names: the built-in scenes' ('background' and the shapes of their
version); for any other dataset the label index stands for the class.

A workdir of another task or without a finished checkpoint, a missing or
unreadable image, --out with several images or not a .png, --draw a file, are
refused in one line (status 2) before anything is printed or written; each
picture is written whole or not at all.
"""

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax import errors
from mnv2_jax.data import datasets, procedural_shapes, scenes
from mnv2_jax.export import write_atomically
from mnv2_jax.tasks import segmentation as segmentation_task
from mnv2_jax.trained import Source, drawing_paths, load_workdir, read_images, require_files

BACKGROUND = 0  # label 0 is the background (the built-in scenes, PASCAL VOC)
BACKGROUND_NAME = 'background'
ALPHA = 0.5  # the class colour's share of an overlaid pixel


def palette(num_classes: int) -> np.ndarray:
  """uint8 [num_classes, 3]: PASCAL VOC's colour map (the bits of the label spread over
  R, G and B from the high bit down: 1 dark red, 2 dark green, 3 olive, 4 dark blue, ...).
  Labels from 256 on reuse the colours of 1-255, never the background's black."""
  colours = np.zeros((256, 3), np.uint8)
  for label in range(256):
    value, colour = label, [0, 0, 0]
    for bit in range(7, -1, -1):
      for channel in range(3):
        colour[channel] |= ((value >> channel) & 1) << bit
      value >>= 3
    colours[label] = colour
  labels = np.arange(num_classes)
  return colours[np.where(labels < 256, labels, 1 + (labels - 1) % 255)]


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """uint8 [H, W, 3]: `image` with each non-background pixel blended with its class colour."""
  colours = palette(num_classes)[labels].astype(np.float32)
  tinted = np.round((1 - ALPHA) * image.astype(np.float32) + ALPHA * colours).astype(np.uint8)
  return np.where((labels != BACKGROUND)[..., None], tinted, image)


def class_names(source: Source) -> Optional[list[str]]:
  """'background' and the shapes of the built-in scenes; None for another dataset."""
  data = source.config.data
  if data.get('dataset') != datasets.BUILT_IN_SEGMENTATION_DATASET:
    return None
  try:
    names = [BACKGROUND_NAME] + list(scenes.class_names(
        data.get('dataset_version') or procedural_shapes.SCENE_SHAPES_VERSION))
  except ValueError:  # a version this code does not know: the indices still print
    return None
  return names if len(names) == source.num_classes else None


def network_input(image: np.ndarray, resolution: int, ignore_label: int
                  ) -> tuple[np.ndarray, tuple[int, int]]:
  """(float32 [R, R, 3] in [-1, 1], the (height, width) of its unpadded top-left region)
  of a uint8 image: exactly the evaluation's example (`segmentation.eval_example`), made
  with a mask of zeros whose ignored padding marks the region the image fills."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = image.shape[:2]
  example = segmentation_task.eval_example(
      tf.constant(image), tf.zeros([height, width, 1], tf.uint8), resolution, ignore_label)
  real = example['label'].numpy() != ignore_label
  return example['image'].numpy(), (int(real[:, 0].sum()), int(real[0].sum()))


class Segmenter:
  """The network and its per-pixel argmax, compiled once (one input shape: R x R)."""

  def __init__(self, source: Source):
    self.source = source
    section = source.config.get('segmentation') or {}
    self.ignore_label = section.get('ignore_label', segmentation_task.IGNORE_LABEL)
    model = source.model
    self._predict = jax.jit(lambda variables, images: jnp.argmax(
        model.apply(variables, images, train=False), axis=-1).astype(jnp.int32))

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """int32 [H, W]: the predicted label of each pixel of a uint8 [H, W, 3] image."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    inputs, (height, width) = network_input(image, self.source.resolution, self.ignore_label)
    labels = np.asarray(self._predict(self.source.variables, inputs[None]))[0]
    labels = labels[:height, :width, None]
    return tf.image.resize(labels, image.shape[:2], method='nearest').numpy()[..., 0]


def summary(labels: np.ndarray, num_classes: int, names: Optional[list[str]]) -> list[dict]:
  """One record per predicted class, by label: name, pixels, fraction, overlay colour."""
  counts = np.bincount(labels.reshape(-1), minlength=num_classes)
  colours = palette(num_classes)
  return [{'label': int(label), 'class': names[label] if names else int(label),
           'pixels': int(count), 'fraction': round(float(count / labels.size), 6),
           'colour': None if label == BACKGROUND else colours[label].tolist()}
          for label, count in enumerate(counts) if count]


def _check_out(out: str) -> str:
  if os.path.isdir(out):
    raise errors.UserError(f'--out {out} is a directory; give the PNG file to write.')
  if not out.lower().endswith('.png'):
    raise errors.UserError(f'--out {out}: the picture is a PNG; give a file name ending in .png.')
  directory = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(directory):
    raise errors.UserError(f'--out {out}: its directory {directory} does not exist.')
  return out


def _parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(prog='python -m mnv2_jax.segment',
                                 description='Runs a trained segmenter on image files.')
  parser.add_argument('images', nargs='+', help='image files')
  parser.add_argument('--workdir', required=True, help='a segmentation run\'s workdir')
  parser.add_argument('--raw', action='store_true', help='the raw weights instead of the EMA')
  parser.add_argument('--json', action='store_true', help='one JSON record per image')
  pictures = parser.add_mutually_exclusive_group()
  pictures.add_argument('--out', metavar='FILE.png',
                        help='write the one image with its predicted mask overlaid to FILE.png')
  pictures.add_argument('--draw', metavar='DIR',
                        help='write each image with its predicted mask overlaid to DIR/<name>.png')
  return parser


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  with errors.logs_held_back():
    if args.out is not None:
      if len(args.images) > 1:
        raise errors.UserError(f'--out names one file, and {len(args.images)} images were '
                               f'given; pass --draw DIR to write a picture of each.')
      pictures = [_check_out(args.out)]
    elif args.draw is not None:
      pictures = drawing_paths(args.images, args.draw)
    else:
      pictures = [None] * len(args.images)
    require_files(args.images)
    segmenter = Segmenter(load_workdir(args.workdir, raw=args.raw, task='segmentation',
                                       reader='mnv2_jax.segment'))
    images = read_images(args.images)  # nothing printed or written if one cannot be read
  num_classes = segmenter.source.num_classes
  names = class_names(segmenter.source)
  if args.draw is not None:
    os.makedirs(args.draw, exist_ok=True)
  for path, image, picture in zip(args.images, images, pictures):
    labels = segmenter(image)
    classes = summary(labels, num_classes, names)
    if picture:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      write_atomically(picture, tf.io.encode_png(overlay(image, labels, num_classes)).numpy())
    if args.json:
      height, width = image.shape[:2]
      print(json.dumps({'image': path, 'height': height, 'width': width, 'overlay': picture,
                        'classes': classes}))
    else:
      for record in classes:
        print(f'{path}\t{record["class"]}\t{record["pixels"]}\t'
              f'{100 * record["fraction"]:.2f}%')
  return 0


if __name__ == '__main__':
  sys.exit(main())
