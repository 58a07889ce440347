"""Train and eval iterators: TFDS reading, per-process sharding, batching.

Each process reads its own contiguous part of a split
(`tfds.even_splits(split, process_count)[process_index]`: disjoint, together
the whole split) and yields process-local numpy batches of
batch_size // process_count examples; the training loop places them on its
local devices.

Train: epoch e of process p reads its part with the files shuffled by a seed
derived from (seed, e, p), shuffles examples with the same seed, numbers them
0, 1, ... and preprocesses example i with the stateless seed (epoch seed, i).
Each epoch drops its last partial batch, so step k is batch k % steps_per_epoch
of epoch k // steps_per_epoch: `start_step=k` rebuilds that epoch and skips
the earlier examples before they are decoded, which reproduces exactly what
an iterator started at 0 yields after k steps.

Eval: the part is read in order, preprocessed deterministically and padded
with masked (mask False) examples up to the same number of full batches on
every process, as multi-host steps need equal counts; every example of the
split appears exactly once with mask True over all processes.
"""

import itertools
from typing import Callable, Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax.data import datasets
from mnv2_jax.data import preprocessing

Batch = dict[str, np.ndarray]
# (example, per-example stateless seed [2]) -> the example's arrays (tf), e.g. a task's
# `train_example`; example -> arrays for evaluation; and an eval padding example.
TrainExampleFn = Callable[[dict, tf.Tensor], dict]
EvalExampleFn = Callable[[dict], dict]


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in '
                     f'[0, process_count={process_count}).')


def _process_split(split: str, process_index: int, process_count: int):
  """This process's contiguous part of `split` (a TFDS sub-split)."""
  _check_process(process_index, process_count)
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count,
                          drop_remainder=False)[process_index]


def _part_sizes(builder, split: str, process_count: int) -> list[int]:
  """Examples in each process's part of `split`."""
  if datasets.is_image_folder(builder):
    total = datasets.num_examples(builder, split)
    return [len(range(index, total, process_count))
            for index in range(process_count)]
  return [datasets.num_examples(builder, _process_split(split, index,
                                                        process_count))
          for index in range(process_count)]


def _read_part(builder, split: str, process_index: int, process_count: int,
               shuffle_seed: int | None = None) -> tf.data.Dataset:
  """This process's part of `split`, images still encoded.

  With `shuffle_seed` the file order is shuffled by it; otherwise it is read
  in order.
  """
  _check_process(process_index, process_count)
  decoders = _decoders(builder)
  if datasets.is_image_folder(builder):
    # ImageFolder supports neither sub-splits nor seeded file shuffling (its
    # example list is already in a fixed random order): shard by example.
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders=decoders)
    return ds.shard(process_count, process_index)
  return builder.as_dataset(
      split=_process_split(split, process_index, process_count),
      shuffle_files=shuffle_seed is not None, decoders=decoders,
      read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                  options=_options()))


def _decoders(builder: tfds.core.DatasetBuilder):
  """Keeps Image features encoded, so preprocessing can crop while decoding."""
  if isinstance(builder.info.features['image'], tfds.features.Image):
    return {'image': tfds.decode.SkipDecoding()}
  return None


# A cached split whose decoded images take at most this many bytes is cached decoded.
DECODED_CACHE_LIMIT_BYTES = 2 * 2**30


def _fixed_image_shape(builder) -> Optional[tuple[int, ...]]:
  """The shape of every image of `builder`, or None where images differ in size."""
  feature = builder.info.features['image']
  if not isinstance(feature, tfds.features.Image) or None in feature.shape:
    return None
  return tuple(feature.shape)


def _cached_part(builder, split: str, process_index: int, process_count: int,
                 num_examples: int) -> tf.data.Dataset:
  """This process's part of `split` in file order, kept in memory after the first pass.

  Images of a fixed shape that fit in DECODED_CACHE_LIMIT_BYTES are decoded before
  caching: the built-in datasets' JPEGs are then decoded once instead of every epoch
  (the ablation sweeps' pipeline 1.4x faster: docs/data.md).
  Preprocessing slices the crop out of the decoded image, the same pixels that
  `decode_and_crop_jpeg` decodes (tests/test_data.py compares a whole epoch). Others stay
  encoded: ImageNet decoded would not fit, and its crops decode only their own blocks.
  """
  ds = _read_part(builder, split, process_index, process_count)
  shape = _fixed_image_shape(builder)
  if shape is not None and num_examples * int(np.prod(shape)) <= DECODED_CACHE_LIMIT_BYTES:

    def decode(example):
      image = tf.io.decode_image(example['image'], channels=shape[-1], expand_animations=False)
      image.set_shape(shape)
      return dict(example, image=image)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.cache()


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 0  # tf.data's shared pool
  return options


def _epoch_seed(seed: int, epoch: int, process_index: int) -> int:
  """An int64-safe seed for one epoch of one process."""
  return int(np.random.SeedSequence(
      [seed, epoch, process_index]).generate_state(1)[0])


def _process_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise ValueError(f'batch size {batch_size} is not divisible by the process '
                     f'count {process_count}; use a multiple of it.')
  return batch_size // process_count


def create_train_iterator(data_config: ml_collections.ConfigDict, *, seed: int,
                          start_step: int = 0, process_index: int = 0,
                          process_count: int = 1,
                          example_fn: Optional[TrainExampleFn] = None) -> Iterator[Batch]:
  """Infinite iterator of batches of `example_fn`'s arrays, b = batch_size // process_count.

  `example_fn(example, seed)` maps one TFDS example and its stateless seed to
  arrays; the default is classification's {'image': f32 [R, R, 3] in [-1, 1],
  'label': i32}. Starting at `start_step=k` yields what an iterator started at
  0 yields after k batches.
  """
  if example_fn is None:
    example_fn = lambda example, seed: preprocessing.classification_train_example(
        example, seed, data_config)
  builder = datasets.get_builder(data_config)
  datasets.prepare(builder)
  split = data_config.train_split
  batch_size = _process_batch_size(data_config.batch_size, process_count)
  _check_process(process_index, process_count)
  num_examples = _part_sizes(builder, split, process_count)[process_index]
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f'{data_config.dataset} {split!r} has {num_examples} examples in '
        f'process {process_index}\'s part, fewer than one process batch '
        f'({batch_size}); lower data.batch_size or use a larger split.')
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0.')
  buffer_size = min(data_config.shuffle_buffer_size, num_examples)

  cached = None
  if data_config.cache:
    # Examples in file order, kept in memory after the first pass (decoded where
    # they fit); every epoch shuffles them with its own seed.
    cached = _cached_part(builder, split, process_index, process_count, num_examples)

  def epoch_dataset(epoch: int, skip_examples: int) -> tf.data.Dataset:
    epoch_seed = _epoch_seed(seed, epoch, process_index)
    if cached is not None:
      ds = cached
    else:
      ds = _read_part(builder, split, process_index, process_count,
                      shuffle_seed=epoch_seed)
    ds = ds.shuffle(buffer_size, seed=epoch_seed,
                    reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(skip_examples)

    def preprocess(index, example):
      return example_fn(example, tf.stack([tf.constant(epoch_seed, tf.int64), index]))

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options())

  def batches():
    start_epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    for epoch in itertools.count(start_epoch):
      skip = step_in_epoch * batch_size if epoch == start_epoch else 0
      yield from tfds.as_numpy(epoch_dataset(epoch, skip))

  # Returned rather than yielded from here, so that bad arguments raise at
  # the call, not at the first next().
  return batches()


def create_eval_iterator(data_config: ml_collections.ConfigDict, *,
                         process_index: int = 0,
                         process_count: int = 1,
                         example_fn: Optional[EvalExampleFn] = None,
                         padding_example: Optional[dict] = None) -> Iterator[Batch]:
  """Finite iterator of batches of `example_fn`'s arrays plus 'mask', of fixed size.

  Size eval_batch_size // process_count; `padding_example` (shaped like
  `example_fn`'s output) fills the last batches with mask False, and every
  process yields the same number of batches. The defaults are
  classification's ('image', 'label').
  """
  if example_fn is None:
    example_fn = lambda example: preprocessing.classification_eval_example(example, data_config)
    padding_example = preprocessing.classification_padding_example(data_config)
  builder = datasets.get_builder(data_config)
  datasets.prepare(builder)
  eval_split = datasets.resolve_eval_split(data_config, builder)
  batch_size = _process_batch_size(
      data_config.eval_batch_size or data_config.batch_size, process_count)
  _check_process(process_index, process_count)
  counts = _part_sizes(builder, eval_split, process_count)
  num_batches = -(-max(counts) // batch_size)
  num_padding = num_batches * batch_size - counts[process_index]
  if padding_example is None:
    raise ValueError('create_eval_iterator: pass padding_example with example_fn.')

  def preprocess(example):
    return dict(example_fn(example), mask=tf.constant(True))

  ds = _read_part(builder, eval_split, process_index, process_count)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors(
      dict(padding_example, mask=tf.constant(False))).repeat(num_padding)
  ds = ds.concatenate(padding).batch(batch_size, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
  return iter(tfds.as_numpy(ds))
