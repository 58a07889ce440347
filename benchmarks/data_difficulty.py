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
Both report top-1 on the test split (chance: 10%). MobileNetV2 itself is
measured by the training loop (`configs/default.py`): it needs more steps than
this CNN to start learning small images.

Example:
  python benchmarks/data_difficulty.py --resolution 32 --cnn-steps 600
"""

import argparse
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
  params = {'w': jnp.zeros((train_x.shape[1], 10)), 'b': jnp.zeros(10)}
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
  """Six 3x3 conv + BN + ReLU layers (two each at 16, 32, 64 channels), a 2x2
  max-pool after each pair, global average pooling and a linear classifier."""

  @nn.compact
  def __call__(self, images, train: bool):
    x = images
    for features in (16, 32, 64):
      for _ in range(2):
        x = nn.Conv(features, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def small_cnn(config, steps: int) -> float:
  """Test top-1 of `PlainCNN` after `steps` Adam steps on the train iterator."""
  model = PlainCNN()
  resolution = config.resolution
  variables = model.init(jax.random.PRNGKey(0),
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

  iterator = data.create_train_iterator(config, seed=0)
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--num-train', type=int, default=10_000)
  parser.add_argument('--num-test', type=int, default=2_000)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--linear-steps', type=int, default=600)
  parser.add_argument('--cnn-steps', type=int, default=600)
  parser.add_argument('--min-crop-area', type=float, default=0.5,
                      help="the random crop's smallest area (configs/default.py's)")
  parser.add_argument('--data-dir', default=None)
  args = parser.parse_args()
  config = data.get_data_config(
      data_dir=args.data_dir, resolution=args.resolution,
      batch_size=args.batch, eval_batch_size=256, color_jitter=False,
      min_crop_area=args.min_crop_area,
      num_train_examples=args.num_train, num_test_examples=args.num_test)
  data.get_dataset_info(config)
  train_top1, test_top1 = linear_probe(config, args.linear_steps)
  print(f'linear probe on {args.resolution}px pixels ({args.linear_steps} '
        f'Adam steps of 256): train top-1 {train_top1:.3f}, test top-1 '
        f'{test_top1:.3f}')
  start = time.perf_counter()
  cnn_top1 = small_cnn(config, args.cnn_steps)
  print(f'plain 6-conv CNN @{args.resolution}px, {args.cnn_steps} Adam steps of '
        f'{args.batch} (min crop area {args.min_crop_area}, flips) in '
        f'{time.perf_counter() - start:.0f} s: test top-1 {cnn_top1:.3f}')


if __name__ == '__main__':
  main()
