r"""XLA:CPU's own options, each measured on the training step of the sweeps' workloads.

XLA reads XLA_FLAGS once, when its CPU backend starts, so every option runs in
its own process: `model_benchmark.py --json --skip-latency` with XLA_FLAGS set,
for each workload. The variants run in turn, `--repeats` times over (baseline
first and last in each pass). One process per variant is not enough: on the
2-core machine the same program measured 347 and 447 img/s in two processes,
so the table gives the mean and range over the repeats, and says whether the
option changed the optimised HLO at all (a change of speed without one is noise,
unless the option acts on code generation: vector width, fast math).

  python benchmarks/xla_flags.py                       # every variant below
  python benchmarks/xla_flags.py --variants baseline,onednn --workloads 0.35:48:64
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = {
    'baseline': '',
    'onednn': '--xla_cpu_use_onednn=true',
    'onednn_fusion': ('--xla_cpu_use_onednn=true '
                      '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise'),
    'xnnpack': '--xla_cpu_use_xnnpack=true',
    'xnn_fusion': '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce',
    'vector_width_512': '--xla_cpu_prefer_vector_width=512',
    'vector_width_128': '--xla_cpu_prefer_vector_width=128',
    'fast_math': '--xla_cpu_enable_fast_math=true',
    'concurrency_scheduler': '--xla_cpu_enable_concurrency_optimized_scheduler=true',
}
# width:resolution:batch, the sweeps' training workloads (configs/default.py).
DEFAULT_WORKLOADS = ('0.35:48:64', '1.0:64:32')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help='comma-separated names from: ' + ', '.join(VARIANTS))
  parser.add_argument('--workloads', default=','.join(DEFAULT_WORKLOADS),
                      help='comma-separated width:resolution:batch')
  parser.add_argument('--rounds', type=int, default=3, help="model_benchmark's --rounds")
  parser.add_argument('--repeats', type=int, default=2,
                      help='processes per variant and workload, alternated with the others')
  args = parser.parse_args(argv)
  args.variants = [name.strip() for name in args.variants.split(',') if name.strip()]
  unknown = [name for name in args.variants if name not in VARIANTS]
  if unknown or not args.variants:
    parser.error(f'--variants: unknown {unknown}; choose from {", ".join(VARIANTS)}.')
  try:
    args.workloads = [tuple(float(part) if i == 0 else int(part)
                            for i, part in enumerate(item.split(':')))
                      for item in args.workloads.split(',')]
  except ValueError:
    parser.error(f'--workloads: {args.workloads!r} is not a list of width:resolution:batch, '
                 'e.g. 0.35:48:64,1.0:64:32.')
  if any(len(workload) != 3 for workload in args.workloads):
    parser.error('--workloads: each item is width:resolution:batch, e.g. 0.35:48:64.')
  return args


def measure(flags: str, workload: tuple, rounds: int) -> dict:
  width, resolution, batch = workload
  env = dict(os.environ, XLA_FLAGS=' '.join(filter(None, [os.environ.get('XLA_FLAGS'), flags])))
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model_benchmark.py')
  command = [sys.executable, script, '--json', '--skip-latency', '--width', str(width),
             '--resolution', str(resolution), '--batch', str(batch), '--rounds', str(rounds),
             '--num-classes', '1000']
  completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  if completed.returncode != 0:
    return {'error': completed.stderr.strip().splitlines()[-1:]}
  result = json.loads(completed.stdout)['results'][0]
  return {'images_per_second': result['train_images_per_second'],
          'compile_seconds': result['compile_seconds'], 'hlo': result['train_step_hlo_sha1']}


def main(argv=None) -> None:
  args = parse_args(argv)
  one_pass = ['baseline'] + [name for name in args.variants if name != 'baseline'] + ['baseline']
  order = one_pass * max(1, args.repeats)
  measured = {name: {} for name in one_pass}
  for name in order:
    for workload in args.workloads:
      print(f'{name} ({VARIANTS[name] or "no options"}) {workload} ...', file=sys.stderr,
            flush=True)
      result = measure(VARIANTS[name], workload, args.rounds)
      measured[name].setdefault(workload, []).append(result)
  labels = [f'{w:g}@{r} batch {b}' for w, r, b in args.workloads]
  header = ('| variant | XLA_FLAGS | ' + ' | '.join(f'{label} img/s (vs baseline)'
                                                  for label in labels)
            + ' | optimised HLO | compile s |')
  lines = [header, '|' + '---|' * (4 + len(labels))]
  for name in dict.fromkeys(order):
    cells, compiles = [], []
    for workload in args.workloads:
      results = measured[name][workload]
      errors = [r['error'] for r in results if 'error' in r]
      if errors:
        cells.append(f'failed: {errors[0]}')
        continue
      rate = statistics.mean(r['images_per_second'] for r in results)
      base = statistics.mean(r['images_per_second'] for r in measured['baseline'][workload]
                             if 'error' not in r)
      spread = (f' [{min(r["images_per_second"] for r in results):.0f}-'
                f'{max(r["images_per_second"] for r in results):.0f}]' if len(results) > 1 else '')
      cells.append(f'{rate:.1f}{spread} ({rate / base:.2f}x)')
      compiles += [r['compile_seconds'] for r in results]
    compile_cell = f'{statistics.mean(compiles):.1f}' if compiles else '-'
    programs = {workload: {r.get('hlo') for r in measured[name][workload] if 'error' not in r}
                for workload in args.workloads}
    baselines = {workload: {r.get('hlo') for r in measured['baseline'][workload]
                            if 'error' not in r} for workload in args.workloads}
    program = ('-' if name == 'baseline' else
               'same as baseline' if programs == baselines else 'differs')
    lines.append(f'| {name} | `{VARIANTS[name] or "(none)"}` | ' + ' | '.join(cells)
                 + f' | {program} | {compile_cell} |')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
