r"""Where a CPU training step's time goes: XLA's kernels summed by kind and by name.

Compiles the same plain training step as `model_benchmark.py` (forward,
backward, RMSProp), runs a few steps under `jax.profiler.trace` with XLA:CPU's
per-kernel trace events on (`--xla_cpu_enable_xprof_traceme=true`, set here
before JAX starts), and reads the Perfetto trace that JAX writes beside it
(`create_perfetto_trace=True`): every XLA kernel's duration, summed over the
profiled steps and over the threads that ran it (so the total can exceed the
step's wall time on several cores), divided by the number of steps. The trace
events cost time themselves (a step with a few hundred small kernels runs up to
~2x slower profiled): read the shares, and time steps with model_benchmark.py.

Kernels are grouped by what they compute, read off the compiled HLO:
convolutions (the stem; the 3x3 depthwise layers when XLA runs them as
convolutions), matrix products (the 1x1 layers), reductions (BN statistics and
their gradients, the depthwise kernel gradients), slices and pads (the shifted
depthwise convolution's taps), copies/transposes, and elementwise fusions.

  python benchmarks/profile_step.py --width 1.0 --resolution 224 --batch 32
  python benchmarks/profile_step.py --width 0.35 --resolution 48 --batch 64 --top 25
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

# Before JAX initialises XLA: per-kernel trace events of the CPU backend.
_TRACEME = '--xla_cpu_enable_xprof_traceme=true'
if _TRACEME not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, [os.environ.get('XLA_FLAGS'), _TRACEME]))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_benchmark  # noqa: E402  (after XLA_FLAGS)

# A kernel's kind is read off the operations inside it (its fused computation in
# the compiled HLO), first match wins: names alone do not say (YNNPACK's fusions
# are all called ynn_fusion).
KINDS = (
    ('convolution', ('convolution',)),
    ('matrix product', ('dot', 'custom-call')),
    ('reduction', ('reduce', 'reduce-window')),
    ('slices and pads (shifted depthwise)', ('slice', 'dynamic-slice', 'pad')),
    ('copy / transpose', ('copy', 'transpose')),
)
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%([\w.\-]+) = .*?\s([a-z][\w-]*)\((.*)$')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%([\w.\-]+) .*\{\s*$')


def operations_by_kernel(hlo_text: str) -> dict:
  """For each instruction of the compiled module: the opcodes it runs (a fusion's, inside)."""
  computations, current = {}, None
  instructions = {}
  for line in hlo_text.splitlines():
    computation = _COMPUTATION.match(line)
    if computation:
      current = computations.setdefault(computation.group(1), set())
      continue
    instruction = _INSTRUCTION.match(line)
    if instruction and current is not None:
      name, opcode, rest = instruction.groups()
      current.add(opcode)
      called = re.search(r'calls=%([\w.\-]+)', rest)
      instructions[name] = (opcode, called.group(1) if called else None)
  return {name: computations.get(called, set()) | {opcode}
          for name, (opcode, called) in instructions.items()}


def kind_of(name: str, operations: dict) -> str:
  opcodes = operations.get(name, set())
  for kind, patterns in KINDS:
    if opcodes & set(patterns):
      return kind
  return 'elementwise' if opcodes else 'other'


def kernel_durations(trace_file: str) -> dict:
  """Total microseconds per event name of the XLA CPU kernels in a Perfetto JSON trace."""
  with gzip.open(trace_file, 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  for event in events:
    if event.get('ph') != 'X' or 'dur' not in event:
      continue
    name = event.get('name', '')
    # Host-side Python/runtime events are not kernels; XLA's kernel events carry HLO names.
    if '::' in name or name.startswith(('$', 'PjitFunction', 'jit_', 'pjit', 'Thunk')):
      continue  # the runtime's and Python's own events
    totals[name] += float(event['dur'])
  return totals


def main(argv=None) -> None:
  parser = model_benchmark.workload_argument_parser(__doc__)
  parser.add_argument('--steps', type=int, default=3, help='profiled steps (after 2 warm-up)')
  parser.add_argument('--batch-norm', default='fused', choices=['fused', 'flax'])
  parser.add_argument('--top', type=int, default=15, help='kernels listed by name')
  args = parser.parse_args(argv)
  # The allocator of the training entry points (model_benchmark.py's note on it).
  model_benchmark.allocator.reexecute_with_fast_allocator()
  import jax  # pylint: disable=import-outside-toplevel

  bench_args = model_benchmark.parse_args([
      '--width', str(args.width), '--resolution', str(args.resolution),
      '--batch', str(args.batch)])
  engine = model_benchmark.JaxEngine(bench_args, 'auto', batch_norm=args.batch_norm)
  for _ in range(2):
    engine.train_step()
  wall = []
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      for _ in range(args.steps):
        wall.append(model_benchmark._time(engine.train_step))  # pylint: disable=protected-access
    trace_files = glob.glob(os.path.join(log_dir, '**', '*.trace.json.gz'), recursive=True)
    if not trace_files:
      sys.exit('profile_step: JAX wrote no Perfetto trace; is this jax >= 0.4.x?')
    totals = kernel_durations(trace_files[0])
  operations = operations_by_kernel(engine.compiled_train_step_text())
  per_step = {name: micros / args.steps / 1e3 for name, micros in totals.items()
              if name in operations}
  by_kind = collections.Counter()
  for name, ms in per_step.items():
    by_kind[kind_of(name, operations)] += ms
  print(f'{engine.name} {args.width:g}@{args.resolution} batch {args.batch}: '
        f'{sum(wall) / len(wall) * 1e3:.0f} ms per step (wall, profiled), '
        f'{sum(per_step.values()):.0f} ms of kernels per step (summed over threads), '
        f'allocator {model_benchmark.allocator.active_allocator()}')
  print('\n| kind | ms per step | share |\n|---|---|---|')
  total = sum(by_kind.values()) or 1.0
  for kind, ms in by_kind.most_common():
    print(f'| {kind} | {ms:.1f} | {ms / total:.0%} |')
  print(f'\n| kernel (HLO name) | kind | ms per step |\n|---|---|---|')
  for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[:args.top]:
    print(f'| {name[:70]} | {kind_of(name, operations)} | {ms:.1f} |')


if __name__ == '__main__':
  main()
