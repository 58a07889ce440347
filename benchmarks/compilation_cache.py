r"""What the persistent compilation cache saves a sweep: the first step of a run, cold and cached.

  python benchmarks/compilation_cache.py [--config configs/default.py] [--steps 20]

Runs `python -m mnv2_jax.main` three times on fresh workdirs, as a sweep's runs
do: without a cache, then twice with `--compilation_cache` on one new cache
directory (the first fills it, the second loads from it). Prints each run's
`first_step_seconds` (the first training step, compilation included, from
metrics.jsonl) and the command's wall time. The dataset must be rendered
already (run the config once), so that rendering is not timed.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time


def run(config: str, steps: int, workdir: pathlib.Path, cache: str | None) -> dict:
  command = [sys.executable, '-m', 'mnv2_jax.main', '--config', config, '--workdir', str(workdir),
             f'--config.train.num_steps={steps}', f'--config.train.eval_every_steps={steps}',
             f'--config.train.log_every_steps={steps}']
  if cache:
    command.append(f'--compilation_cache={cache}')
  start = time.perf_counter()
  subprocess.run(command, check=True, capture_output=True)
  wall = time.perf_counter() - start
  first_step = next(json.loads(line)['first_step_seconds']
                    for line in (workdir / 'metrics.jsonl').read_text().splitlines()
                    if 'first_step_seconds' in line)
  return {'first_step_seconds': first_step, 'wall_seconds': wall}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--steps', type=int, default=20)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as scratch:
    root = pathlib.Path(scratch)
    cache = str(root / 'compilation_cache')
    rows = [('no cache', run(args.config, args.steps, root / 'cold', None)),
            ('cache, first run', run(args.config, args.steps, root / 'fill', cache)),
            ('cache, second run', run(args.config, args.steps, root / 'hit', cache))]
  print(f'{args.config}, {args.steps} steps')
  print('| run | first step (s, incl. compilation) | command wall time (s) |')
  print('|---|---|---|')
  for name, row in rows:
    print(f'| {name} | {row["first_step_seconds"]:.2f} | {row["wall_seconds"]:.1f} |')


if __name__ == '__main__':
  main()
