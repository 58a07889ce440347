r"""What random boxes score on a detection config's eval split: the floor a detector must clear.

  python -m experiments.detection_baseline [--config configs/ssdlite_default.py] \
      [--seeds 0,1,2] [--boxes 100]

For every eval image, `--boxes` detections with uniform random corners (each
side at least 1% of the image), a uniform random class and a uniform random
score, scored by the same COCO evaluation the training loop uses
(`tasks.detection.coco_metrics`, pycocotools) on the same examples (the
config's eval split through the task's `eval_example`). Prints mAP and mAP@0.5
per seed and their mean with a 95% t-interval. docs/detection.md compares the
trained detector with it.
"""

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

from experiments import uncertainty
from launch import manifest
from mnv2_jax import data, errors, tasks
from mnv2_jax.tasks import detection

MIN_SIDE = 0.01


def ground_truth(config) -> tuple[dict[str, np.ndarray], int]:
  """The eval split's padded ground truth, as the loop's evaluation sees it (real images),
  and the dataset's number of classes."""
  task = tasks.get_task(config)
  data.validate_data_config(config.data, num_devices=1, process_count=1,
                            check_dataset=task.check_dataset)
  num_classes = data.get_dataset_info(config.data, task.num_classes).num_classes
  parts = {'gt_boxes': [], 'gt_labels': [], 'gt_valid': [], 'gt_crowd': []}
  for batch in data.create_eval_iterator(config.data, example_fn=task.eval_example,
                                         padding_example=task.padding_example()):
    real = batch['mask']
    for key, field in (('gt_boxes', 'boxes'), ('gt_labels', 'labels'),
                       ('gt_valid', 'boxes_valid'), ('gt_crowd', 'boxes_crowd')):
      parts[key].append(np.asarray(batch[field])[real])
  return {key: np.concatenate(value) for key, value in parts.items()}, num_classes


def random_detections(num_images: int, num_boxes: int, num_classes: int,
                      seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  corners = rng.uniform(0, 1 - MIN_SIDE, (num_images, num_boxes, 2))
  far = corners + MIN_SIDE + rng.uniform(0, 1, (num_images, num_boxes, 2)) * (
      1 - MIN_SIDE - corners)
  return {'boxes': np.concatenate([corners, far], axis=-1),  # [ymin, xmin, ymax, xmax]
          'scores': rng.uniform(0, 1, (num_images, num_boxes)),
          'classes': rng.integers(0, num_classes, (num_images, num_boxes)),
          'valid': np.ones((num_images, num_boxes), bool)}


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.detection_baseline',
                                 description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/ssdlite_default.py',
                      help='a detection config file, optionally with its argument (FILE:ARG)')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--boxes', type=int, default=100)
  args = parser.parse_args(argv)
  with errors.user_input():
    seeds = [int(seed) for seed in args.seeds.split(',')]
    path, arg = manifest.split_config_arg(args.config)
    config = manifest.load_config_module(path).get_config(arg)
    truth, num_classes = ground_truth(config)
  num_images = len(truth['gt_boxes'])
  results = []
  for seed in seeds:
    examples = dict(truth, **random_detections(num_images, args.boxes, num_classes, seed))
    metrics = detection.coco_metrics(examples, config.data.resolution)
    results.append(metrics)
    print(f'seed {seed}: mAP {100 * metrics["map"]:.3f} %  mAP@0.5 '
          f'{100 * metrics["map50"]:.3f} %  ({num_images} images, {args.boxes} random '
          f'boxes each)', flush=True)
  for key, label in (('map', 'mAP'), ('map50', 'mAP@0.5')):
    estimate = uncertainty.mean_interval([100 * r[key] for r in results])
    interval = (f', 95% t-interval {estimate.low:.3f}-{estimate.high:.3f}'
                if estimate.has_interval else '')
    print(f'{label}: mean {estimate.value:.3f} %{interval} over seeds {args.seeds}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
