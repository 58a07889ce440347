r"""What a sweep costs on this machine: measured step times x the sweep's steps.

For every run of the named sweeps of a config file, the script times the
training step of that run's network at its batch and resolution
(`model_benchmark.run`: a jit'd step with the TF1 RMSProp of the recipe, median
of the timed steps after warm-up, the training entry point's allocator) and
multiplies it by the run's number of steps. Evaluation adds its forward passes
(the test split once per evaluation; a forward pass is counted as a third of a
training step per image, the usual backward ~ 2x forward), and every run pays
its compile (measured) once. Runs with the same network width, expansion
ratio, batch and resolution are timed once (the Figure 6 variants differ only in
an activation or a residual addition, a negligible share of a step). The total is for `--seeds` seeds of every run.

Time it on an idle machine: another process on the cores changes every figure.

Example (the cost table of results/cpu/PROTOCOL.md):
  python benchmarks/sweep_cost.py --config configs/default.py \
      --sweeps fig5,fig6a,fig6b,expansion --seeds 3
"""

import argparse
import os
import sys

from launch import manifest
from mnv2_jax import allocator
from mnv2_jax import provenance
from mnv2_jax.data import procedural_shapes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_benchmark  # noqa: E402  (a sibling script, not a package)

FORWARD_SHARE_OF_A_STEP = 1 / 3


def _network_key(config) -> tuple:
  model = config.model
  return (model.name, model.width_multiplier, model.get('expansion_ratio', 6),
          config.data.batch_size, config.data.resolution)


def time_training_step(model: str, width: float, expansion_ratio: float, batch: int,
                       resolution: int, num_classes: int) -> dict:
  """Seconds per training step and compile seconds of one network (model_benchmark)."""
  args = model_benchmark.parse_args([
      '--model', model, '--width', str(width), '--expansion-ratio', str(expansion_ratio),
      '--batch', str(batch), '--resolution', str(resolution), '--num-classes', str(num_classes),
      '--skip-latency', '--warmup-steps', '5', '--rounds', '10', '--steps-per-round', '10'])
  result = model_benchmark.run(args)['results'][0]
  return {'step_seconds': result['train_step_seconds_median'],
          'compile_seconds': result['compile_seconds']}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--sweeps', default='fig5,fig6a,fig6b,expansion')
  parser.add_argument('--seeds', type=int, default=3, help='seeds of every run')
  args = parser.parse_args(argv)
  allocator.reexecute_with_fast_allocator()

  module = manifest.load_config_module(args.config)
  base = module.get_config()
  timings = {}
  rows = []
  for sweep_name in args.sweeps.split(','):
    for name, overrides in manifest.expand_sweep(module.SWEEPS[sweep_name], sweep_name):
      config = manifest.apply_overrides(base, overrides, name)
      num_classes = len(procedural_shapes.class_names(
          config.data.dataset_version or procedural_shapes.LATEST_VERSION))
      key = _network_key(config)
      if key not in timings:
        print(f'timing {name} ...', file=sys.stderr, flush=True)
        timings[key] = time_training_step(*key, num_classes=num_classes)
      timing = timings[key]
      steps = config.train.num_steps
      evaluations = steps // config.train.eval_every_steps
      eval_steps = (evaluations * config.data.num_test_examples / config.data.batch_size
                    * FORWARD_SHARE_OF_A_STEP)
      seconds = (timing['compile_seconds'] + (steps + eval_steps) * timing['step_seconds'])
      rows.append((sweep_name, name, config.data.batch_size / timing['step_seconds'], steps,
                   seconds))

  model_name = provenance.machine_description()['cpu_model']
  print(f'Machine: {model_name}, {os.cpu_count()} CPUs; allocator '
        f'{allocator.active_allocator()}.\n')
  print('| sweep | run | training img/s | steps | minutes per seed |')
  print('|---|---|---|---|---|')
  for sweep_name, name, images_per_second, steps, seconds in rows:
    print(f'| {sweep_name} | {name.split("/", 1)[1]} | {images_per_second:.0f} | {steps} | '
          f'{seconds / 60:.1f} |')
  print(f'\n| sweep | runs | hours for {args.seeds} seeds |')
  print('|---|---|---|')
  total = 0.0
  for sweep_name in args.sweeps.split(','):
    seconds = sum(row[4] for row in rows if row[0] == sweep_name) * args.seeds
    total += seconds
    count = sum(1 for row in rows if row[0] == sweep_name)
    print(f'| {sweep_name} | {count} | {seconds / 3600:.2f} |')
  print(f'| all | {len(rows)} | {total / 3600:.2f} |')


if __name__ == '__main__':
  main()
