r"""What MobileNetV2 computes at initialisation, for each initialisation option.

  python -m experiments.initial_signal [--seeds 0,1,2,3,4]

One training batch of the default run's data (64 images of procedural_shapes
at 48 px), its network (MobileNetV2 0.35), and each initialisation in
`configs/default.py`'s PLATEAU_VARIANTS, averaged over the given seeds:
  loss            cross-entropy in train mode (BN on batch statistics), without
                  label smoothing; log(10) = 2.303 is an uninformed guess;
  logit_std       the spread of the logits across classes (a large value is a
                  confident guess before anything was learnt);
  image_share     the share of the logits' variance that depends on the image
                  (the rest is one bias shared by every image);
  top_class       the share of the batch given the most frequent prediction;
  grad_*          gradient norm of the stem, block 0, block 6, block 16, the
                  last conv and the classifier kernels;
  eval_last_std   the last conv's output stddev in inference mode with fresh BN
                  statistics (mean 0, variance 1), the state early evaluations
                  start from.
The results and what they explain are in results/cpu/PROTOCOL.md.
"""

import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from mnv2_jax import data
from mnv2_jax import errors
from mnv2_jax.train import state as state_lib
from mnv2_jax.train import step as step_lib

GRADIENT_GROUPS = {'stem': 'stem_conv', 'block_0': 'block_0', 'block_6': 'block_6',
                   'block_16': 'block_16', 'last_conv': 'last_conv', 'classifier': 'classifier'}
INIT_FIELDS = ('model.kernel_init', 'model.zero_init_residual', 'model.zero_init_classifier')


def _group_norm(grads: dict, prefix: str) -> float:
  leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(grads)
            if path[0].key == prefix and path[-1].key == 'kernel']
  return float(jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in leaves)))


def measure(config, batch: dict, seed: int) -> dict:
  """The quantities of the module docstring for one config and initialisation seed."""
  model = state_lib.create_model(config, num_classes=10)
  variables = model.init(jax.random.key(seed), batch['image'][:1])

  def loss_fn(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            batch['image'], train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(seed + 1)})
    return jnp.mean(step_lib.cross_entropy_loss(logits, batch['label'], 0.0)), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
  total_variance = float(jnp.var(logits))
  image_variance = float(jnp.mean(jnp.var(logits, axis=0)))
  predictions = np.asarray(jnp.argmax(logits, -1))
  _, endpoints = model.apply(variables, batch['image'], train=False, return_endpoints=True)
  result = {
      'loss': float(loss),
      'logit_std': float(jnp.mean(jnp.std(logits, axis=1))),
      'image_share': image_variance / total_variance if total_variance > 0 else float('nan'),
      'top_class': np.bincount(predictions).max() / len(predictions),
      'eval_last_std': float(jnp.std(endpoints['last_conv'])),
  }
  for group, prefix in GRADIENT_GROUPS.items():
    result[f'grad_{group}'] = _group_norm(grads, prefix)
  return result


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = errors.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', default='0,1,2,3,4')
  args = parser.parse_args(argv)
  try:
    seeds = [int(seed) for seed in args.seeds.split(',')]
  except ValueError:
    raise errors.UserError(f'--seeds must be comma-separated integers, got {args.seeds!r}.')
  config = default.get_config()
  batch = next(data.create_train_iterator(config.data, seed=0))
  batch = {'image': jnp.asarray(batch['image']), 'label': jnp.asarray(batch['label'])}

  rows = []
  for name, changes in default.PLATEAU_VARIANTS.items():
    if any(key not in INIT_FIELDS for key in changes):
      continue  # not an initialisation change
    variant = config.copy_and_resolve_references()
    for key, value in {**default.OFFICIAL_INIT, **changes}.items():
      variant.model[key.split('.')[1]] = value
    results = [measure(variant, batch, seed) for seed in seeds]
    rows.append((name, {key: float(np.mean([r[key] for r in results])) for key in results[0]}))

  keys = list(rows[0][1])
  print(f'{len(seeds)} seeds, one batch of {batch["image"].shape[0]} images at '
        f'{batch["image"].shape[1]} px, {config.model.name} {config.model.width_multiplier}')
  print('| initialisation | ' + ' | '.join(keys) + ' |')
  print('|---' * (len(keys) + 1) + '|')
  for name, values in rows:
    print(f'| {name} | ' + ' | '.join(f'{values[key]:.3g}' for key in keys) + ' |')


if __name__ == '__main__':
  sys.exit(main())
