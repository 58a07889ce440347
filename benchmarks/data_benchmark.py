r"""Throughput of the training input pipeline (images/s), and dataset generation.

Cases (each runs the real `create_train_iterator`: reading, shuffling, the
Inception-style train preprocessing, batching; the numbers are what a
training loop pulling batches would see):
  imagenet   ImageNet-style at --imagenet-resolution (224): TFDS mock
             `imagenet2012` whose examples are JPEGs of ImageNet's typical
             size (500x375, made from built-in renders: decoding cost depends
             on the pixel count), so the fused decode-and-crop path is timed.
  shapes     the built-in procedural_shapes dataset at --shapes-resolution
             (64), read from its TFDS files and cached in memory after the first
             epoch, timed with its images cached decoded (what the pipeline
             does) and encoded (decoded again every epoch).
  generate   rendering + writing --generate-examples (20k) training images of
             the built-in dataset at 64 px (plus 10% test images), timed.

The target is a pipeline at least 5x faster than training the model at the
same resolution on the same machine (benchmarks/model_benchmark.py), so the
input never limits training.

Examples:
  python benchmarks/data_benchmark.py
  python benchmarks/data_benchmark.py --cases imagenet --batch 128 --batches 20
  # the ablation sweeps' input (0.35 at 48 px, batch 64: configs/default.py)
  python benchmarks/data_benchmark.py --cases shapes --shapes-version 2.0.0 \
      --shapes-resolution 48 --shapes-train-examples 10000 --min-crop-area 0.5 \
      --no-color-jitter --batches 150
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import data
from mnv2_jax.data import input_pipeline
from mnv2_jax.data import procedural_shapes

IMAGENET_TYPICAL_SIZE = (375, 500)  # height, width of most ImageNet JPEGs


def _time_iterator(iterator, batch_size: int, warmup: int, batches: int):
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return batch_size * batches / seconds


def _imagenet_like_jpegs(count: int) -> list[bytes]:
  rng = np.random.default_rng(0)
  labels = np.arange(count) % procedural_shapes.NUM_CLASSES
  renders = procedural_shapes.render_images(labels, 128, rng)
  resized = tf.cast(tf.image.resize(renders, IMAGENET_TYPICAL_SIZE), tf.uint8)
  return [tf.io.encode_jpeg(image, quality=90).numpy() for image in resized]


def benchmark_imagenet(args) -> float:
  jpegs = _imagenet_like_jpegs(64)
  num_examples = 100_000

  def as_dataset(self, split, decoders=None, read_config=None,
                 shuffle_files=False):
    del self, split, decoders, read_config, shuffle_files
    images = tf.data.Dataset.from_tensor_slices(jpegs)
    labels = tf.data.Dataset.range(1000)
    ds = tf.data.Dataset.zip({'image': images.repeat(),
                              'label': labels.repeat()})
    return ds.take(num_examples)  # encoded, as read with SkipDecoding

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    config = data.get_data_config(
        dataset='imagenet2012', resolution=args.imagenet_resolution,
        batch_size=args.batch, color_jitter=True, shuffle_buffer_size=1000)
    iterator = data.create_train_iterator(config, seed=0)
    return _time_iterator(iterator, args.batch, args.warmup, args.batches)


def benchmark_shapes(args, data_dir: str) -> dict[str, float]:
  """images/s of the cached built-in pipeline, its images cached decoded and encoded.

  Timed after the first epoch (--shapes-train-examples / --batch steps), when every
  example comes from the cache.
  """
  config = data.get_data_config(
      data_dir=data_dir, resolution=args.shapes_resolution,
      batch_size=args.batch, num_train_examples=args.shapes_train_examples,
      num_test_examples=16, color_jitter=args.color_jitter,
      min_crop_area=args.min_crop_area, dataset_version=args.shapes_version, cache=True)
  data.get_dataset_info(config)  # renders it (not timed)
  first_epoch = args.shapes_train_examples // args.batch
  rates = {}
  for cache, limit in (('decoded', input_pipeline.DECODED_CACHE_LIMIT_BYTES), ('encoded', 0)):
    input_pipeline.DECODED_CACHE_LIMIT_BYTES = limit
    iterator = data.create_train_iterator(config, seed=0)
    rates[cache] = _time_iterator(iterator, args.batch, first_epoch + args.warmup, args.batches)
  return rates


def benchmark_generation(args, data_dir: str) -> float:
  config = data.get_data_config(
      data_dir=data_dir, resolution=64,
      num_train_examples=args.generate_examples,
      num_test_examples=args.generate_examples // 10)
  start = time.perf_counter()
  data.get_dataset_info(config)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--cases', default='imagenet,shapes,generate')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--batches', type=int, default=15)
  parser.add_argument('--imagenet-resolution', type=int, default=224)
  parser.add_argument('--shapes-resolution', type=int, default=64)
  parser.add_argument('--shapes-version', default=None,
                      help='procedural_shapes version (default: the data config default)')
  parser.add_argument('--shapes-train-examples', type=int, default=4096)
  parser.add_argument('--min-crop-area', type=float, default=0.05)
  parser.add_argument('--color-jitter', action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument('--generate-examples', type=int, default=20_000)
  parser.add_argument('--data-dir', default=None,
                      help='where the built-in dataset goes (default: a '
                      'temporary directory, so generation is really timed)')
  args = parser.parse_args()
  cases = args.cases.split(',')
  print(f'CPU cores: {os.cpu_count()}, load average: '
        f'{", ".join(f"{x:.1f}" for x in os.getloadavg())}')
  with tempfile.TemporaryDirectory() as temporary:
    data_dir = args.data_dir or temporary
    if 'imagenet' in cases:
      rate = benchmark_imagenet(args)
      print(f'imagenet-style train pipeline @{args.imagenet_resolution} '
            f'(JPEG 500x375, fused decode+crop, colour jitter), batch '
            f'{args.batch}: {rate:.0f} images/s')
    if 'shapes' in cases:
      rates = benchmark_shapes(args, data_dir)
      for cache, rate in rates.items():
        print(f'procedural_shapes {args.shapes_version or "(default version)"} train pipeline '
              f'@{args.shapes_resolution} (colour jitter {args.color_jitter}, crops >= '
              f'{args.min_crop_area:.0%} of the area, cached {cache}), batch {args.batch}: '
              f'{rate:.0f} images/s')
    if 'generate' in cases:
      seconds = benchmark_generation(args, data_dir)
      print(f'procedural_shapes generation of {args.generate_examples} train '
            f'+ {args.generate_examples // 10} test images at 64 px: '
            f'{seconds:.1f} s')


if __name__ == '__main__':
  main()
