"""Runs a trained detector on image files: `python -m mnv2_jax.detect --workdir W IMAGE...`.

Prints one line per detection (image, class, score, box in pixels of the image)
or, with --json, one JSON record per image; with --draw DIR also writes each
image with its boxes drawn to DIR/<name>.png. The weights are the workdir's
newest checkpoint (EMA by default, --raw for the raw ones), the input is
resized to the resolution it was trained at, exactly as in its evaluation
(`tasks.detection.network_input`), and the post-processing is the evaluation's
(per-class NMS, `config.detection`).
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
from mnv2_jax.detection import postprocess as postprocess_lib
from mnv2_jax.tasks import detection as detection_task
from mnv2_jax.trained import Source, drawing_paths, load_workdir, read_images, require_files

DEFAULT_SCORE_THRESHOLD = 0.3


def class_names(source: Source) -> Optional[list[str]]:
  """The dataset's class names from its TFDS metadata, or None where they are not at hand."""
  # pylint: disable=g-import-not-at-top
  from mnv2_jax.data import datasets
  try:
    builder = datasets.get_builder(source.config.data)
    return list(builder.info.features['objects']['label'].names)
  except Exception:  # pylint: disable=broad-except  # names are a nicety, ids still print
    return None


class Detector:
  """The network, its anchors and the evaluation's post-processing, compiled once."""

  def __init__(self, source: Source):
    self.source = source
    self.task = detection_task.Detection(source.config)
    section = source.config.detection
    anchors = jnp.asarray(self.task.anchors())

    @jax.jit
    def detect(images):
      outputs = source.model.apply(source.variables, images, train=False)
      return postprocess_lib.postprocess(
          outputs['box_encodings'], outputs['class_logits'], anchors,
          max_detections=section.max_detections, iou_threshold=section.nms_iou_threshold,
          score_threshold=section.score_threshold)
    self._detect = detect

  def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
    """Detections of one uint8 image: boxes [K, 4] (normalised corners), scores, classes."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    network_input = detection_task.network_input(tf.constant(image), self.source.resolution)
    result = jax.device_get(self._detect(network_input.numpy()[None]))
    keep = result['valid'][0]
    return {name: np.asarray(result[name][0][keep]) for name in ('boxes', 'scores', 'classes')}


def draw(image: np.ndarray, detections: dict, names: Optional[list[str]], path: str) -> None:
  """`image` with each detection's box and label, as a PNG at `path`."""
  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure
  from matplotlib.patches import Rectangle
  height, width = image.shape[:2]
  figure = Figure(figsize=(width / 100, height / 100), dpi=100)
  axes = figure.add_axes((0, 0, 1, 1))
  axes.imshow(image)
  axes.set_axis_off()
  for (ymin, xmin, ymax, xmax), score, label in zip(detections['boxes'], detections['scores'],
                                                    detections['classes']):
    axes.add_patch(Rectangle((xmin * width, ymin * height), (xmax - xmin) * width,
                             (ymax - ymin) * height, fill=False, color='yellow', linewidth=1))
    name = names[label] if names else str(label)
    axes.text(xmin * width, ymin * height, f'{name} {score:.2f}', color='black', fontsize=6,
              va='bottom', bbox={'facecolor': 'yellow', 'pad': 0, 'linewidth': 0})
  figure.savefig(path, format='png')


def _parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(prog='python -m mnv2_jax.detect',
                                 description='Runs a trained detector on image files.')
  parser.add_argument('images', nargs='+', help='image files')
  parser.add_argument('--workdir', required=True, help='a detection run\'s workdir')
  parser.add_argument('--raw', action='store_true', help='the raw weights instead of the EMA')
  parser.add_argument('--score-threshold', type=float, default=DEFAULT_SCORE_THRESHOLD,
                      help='print and draw detections scoring at least this (default 0.3)')
  parser.add_argument('--json', action='store_true', help='one JSON record per image')
  parser.add_argument('--draw', metavar='DIR', help='write each image with its boxes to DIR')
  return parser


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  with errors.logs_held_back():
    if not 0 <= args.score_threshold <= 1:
      raise errors.UserError(f'--score-threshold must be in [0, 1], got {args.score_threshold}.')
    drawn = drawing_paths(args.images, args.draw) if args.draw else [None] * len(args.images)
    require_files(args.images)
    detector = Detector(load_workdir(args.workdir, raw=args.raw, task='detection',
                                     reader='mnv2_jax.detect'))
    images = read_images(args.images)  # nothing printed or drawn if one cannot be read
  names = class_names(detector.source)
  if args.draw:
    os.makedirs(args.draw, exist_ok=True)
  for path, image, drawing in zip(args.images, images, drawn):
    found = detector(image)
    keep = found['scores'] >= args.score_threshold
    found = {name: value[keep] for name, value in found.items()}
    height, width = image.shape[:2]
    pixels = found['boxes'] * np.array([height, width, height, width])
    labels = [names[c] if names else int(c) for c in found['classes']]
    if args.json:
      print(json.dumps({'image': path, 'detections': [
          {'class': label, 'score': round(float(score), 4),
           'box_ymin_xmin_ymax_xmax': [round(float(v), 1) for v in box]}
          for label, score, box in zip(labels, found['scores'], pixels)]}))
    else:
      for label, score, box in zip(labels, found['scores'], pixels):
        print(f'{path}\t{label}\t{score:.3f}\t' + ' '.join(f'{v:.1f}' for v in box))
      if not len(labels):
        print(f'{path}\t(no detection scores {args.score_threshold} or more)')
    if drawing:
      draw(image, found, names, drawing)
  return 0


if __name__ == '__main__':
  sys.exit(main())
