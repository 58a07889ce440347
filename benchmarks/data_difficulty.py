r"""How hard is the built-in dataset? A linear probe on pixels vs a small CNN.

The dataset is meant to keep a linear classifier on raw pixels well below a small
CNN on procedural_shapes (the classes are defined by spatial structure, with
colour, position, scale, rotation, clutter and noise as nuisances). This
script measures both on the same splits, read through the Data API:
  linear  softmax regression on the eval-preprocessed pixels (R*R*3 inputs),
          Adam, full passes over the training set;
  cnn     a plain six-conv CNN (`PlainCNN`, full resolution until its first
          max-pool) trained from scratch with Adam 2e-3 on the augmented
          train iterator (random crop, flips) for a fixed number of steps.
Both report top-1 on the test split (chance: 1 / the number of classes). MobileNetV2 itself is
measured by the training loop (`configs/default.py`): it needs more steps than
this CNN to start learning small images.

Example (the table in results/cpu/PROTOCOL.md, section 4):
  python benchmarks/data_difficulty.py --version 2.0.0 --resolutions 32,48,64 \
      --widths 0.5,1,2 --seeds 0,1,2 --cnn-steps 1500 --linear-steps 0
"""

import argparse
import csv
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnv2_jax import data


def _eval_arrays(config):
  images, labels = [], []
  for batch in data.create_eval_iterator(config):
    images.append(batch['image'][batch['mask']])
    labels.append(batch['label'][batch['mask']])
  return np.concatenate(images), np.concatenate(labels)


def linear_probe(config, steps: int) -> tuple[float, float]:
  """(train top-1, test top-1) of softmax regression on pixels."""
  train_config = config.copy_and_resolve_references()
  train_config.eval_split = config.train_split
  train_x, train_y = _eval_arrays(train_config)
  test_x, test_y = _eval_arrays(config)
  train_x = train_x.reshape(len(train_x), -1)
  test_x = test_x.reshape(len(test_x), -1)
  num_classes = data.get_dataset_info(config).num_classes
  params = {'w': jnp.zeros((train_x.shape[1], num_classes)), 'b': jnp.zeros(num_classes)}
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  def loss_fn(params, x, y):
    logits = x @ params['w'] + params['b']
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(0)
  for _ in range(steps):
    index = rng.integers(0, len(train_x), 256)
    params, opt_state = step(params, opt_state, train_x[index], train_y[index])
  accuracy = lambda x, y: float(np.mean(
      np.argmax(x @ params['w'] + params['b'], -1) == y))
  return accuracy(train_x, train_y), accuracy(test_x, test_y)


class PlainCNN(nn.Module):
  """Six 3x3 conv + BN + ReLU layers (two each at 16, 32, 64 channels times
  `width`), a 2x2 max-pool after each pair, global average pooling and a
  linear classifier."""
  num_classes: int = 10
  width: float = 1.0

  @nn.compact
  def __call__(self, images, train: bool):
    x = images
    for features in (16, 32, 64):
      for _ in range(2):
        x = nn.Conv(max(1, round(features * self.width)), (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def small_cnn(config, steps: int, width: float = 1.0, seed: int = 0) -> float:
  """Test top-1 of `PlainCNN` after `steps` Adam steps on the train iterator."""
  model = PlainCNN(num_classes=data.get_dataset_info(config).num_classes, width=width)
  resolution = config.resolution
  variables = model.init(jax.random.PRNGKey(seed),
                         jnp.zeros((1, resolution, resolution, 3)), train=False)
  params, batch_stats = variables['params'], variables['batch_stats']
  optimizer = optax.adam(2e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, images, train=True,
          mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates['batch_stats']
    grads, batch_stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  @jax.jit
  def predict(params, batch_stats, images):
    logits = model.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    return jnp.argmax(logits, -1)

  iterator = data.create_train_iterator(config, seed=seed)
  for _ in range(steps):
    batch = next(iterator)
    params, batch_stats, opt_state = step(params, batch_stats, opt_state,
                                          batch['image'], batch['label'])
  correct = total = 0
  for batch in data.create_eval_iterator(config):
    predictions = np.asarray(predict(params, batch_stats, batch['image']))
    correct += int(np.sum((predictions == batch['label']) & batch['mask']))
    total += int(batch['mask'].sum())
  return correct / total


def _ints(text: str) -> list[int]:
  return [int(item) for item in text.split(',')]


def _floats(text: str) -> list[float]:
  return [float(item) for item in text.split(',')]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolutions', type=_ints, default=[32],
                      help='comma-separated input (and render) resolutions')
  parser.add_argument('--widths', type=_floats, default=[1.0],
                      help="comma-separated channel multipliers of the plain CNN")
  parser.add_argument('--seeds', type=_ints, default=[0],
                      help='comma-separated seeds (initialisation and data order)')
  parser.add_argument('--version', default=None,
                      help='procedural_shapes version (default: the newest)')
  parser.add_argument('--num-train', type=int, default=10_000)
  parser.add_argument('--num-test', type=int, default=2_000)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--linear-steps', type=int, default=600, help='0: no linear probe')
  parser.add_argument('--cnn-steps', type=int, default=600)
  parser.add_argument('--min-crop-area', type=float, default=0.5,
                      help="the random crop's smallest area (configs/default.py's)")
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--csv', default=None, help='also write one row per CNN run here')
  args = parser.parse_args()
  rows = []
  for resolution in args.resolutions:
    config = data.get_data_config(
        data_dir=args.data_dir, resolution=resolution, dataset_version=args.version,
        batch_size=args.batch, eval_batch_size=250, color_jitter=False,
        min_crop_area=args.min_crop_area,
        num_train_examples=args.num_train, num_test_examples=args.num_test)
    info = data.get_dataset_info(config)
    if args.linear_steps:
      train_top1, test_top1 = linear_probe(config, args.linear_steps)
      print(f'linear probe on {resolution}px pixels ({args.linear_steps} Adam steps of 256): '
            f'train top-1 {train_top1:.3f}, test top-1 {test_top1:.3f} '
            f'(chance {1 / info.num_classes:.3f})', flush=True)
    for width in args.widths:
      for seed in args.seeds:
        start = time.perf_counter()
        cnn_top1 = small_cnn(config, args.cnn_steps, width=width, seed=seed)
        seconds = time.perf_counter() - start
        rows.append({'version': args.version or 'newest', 'resolution': resolution,
                     'width': width, 'seed': seed, 'steps': args.cnn_steps,
                     'top1': round(cnn_top1, 4), 'seconds': round(seconds, 1)})
        print(f'plain 6-conv CNN x{width:g} @{resolution}px seed {seed}, {args.cnn_steps} Adam '
              f'steps of {args.batch} (min crop area {args.min_crop_area}, flips) in '
              f'{seconds:.0f} s: test top-1 {cnn_top1:.3f}', flush=True)
  if args.csv:
    with open(args.csv, 'w', newline='') as file:
      writer = csv.DictWriter(file, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
  print('\n| resolution | width | CNN test top-1, mean ± sd (min-max) | seeds |')
  print('|---|---|---|---|')
  for resolution in args.resolutions:
    for width in args.widths:
      top1 = np.array([row['top1'] for row in rows
                       if row['resolution'] == resolution and row['width'] == width]) * 100
      print(f'| {resolution} | {width:g} | {top1.mean():.1f} ± {top1.std(ddof=1) if len(top1) > 1 else 0:.1f} '
            f'({top1.min():.1f}-{top1.max():.1f}) | {len(top1)} |')


if __name__ == '__main__':
  main()
