r"""Batch-1 inference latency on this CPU, the paper's way (Table 4: TF-Lite on one Pixel 1 core).

  python -m mnv2_jax.stats --latency [--runtime litert,onnxruntime,jax] [--threads 1] \
      [--width 1.0,1.4] [--resolution 224] [--latency-runs 50] [--split 1,4] [--json]

Times MobileNetV1 1.0 (the paper's baseline) and MobileNetV2 at 1.0, 1.4 and any other --width,
at each --resolution: the TFLite and ONNX files of `mnv2_jax.export` (float32 and int8) in LiteRT
and ONNX Runtime, and the jitted `model.apply` (float32) in JAX, all at batch 1 on --threads
threads (default 1, the paper's one core). Every variant is converted, loaded and warmed up
first; then the timed runs go round the variants, one run of each per round, --latency-runs
rounds (default 50), so that other load on the machine hits all of them alike. A row has the
median and the 90th percentile, and the median's ratio to MobileNetV1 1.0's (same runtime,
precision, resolution) beside the paper's: 75 / 113 = 0.66 for MobileNetV2 1.0, 143 / 113 = 1.27
for 1.4. `--split T` (T > 1) adds the float32 rows of MobileNetV2's Section 5.1 split inference.

Peak memory (LiteRT and ONNX Runtime rows, 'peak MB'): both runtimes allocate in C++, where
Python's allocator statistics cannot see, so each file is loaded and run once in a fresh Python
process that imports only numpy and the runtime; the row reports how far that process's peak
resident set (VmHWM, reset just before) rose above its resident set before the runtime read the
model: the activation arena and working buffers, plus whatever the runtime copies of the weights
(e.g. XNNPACK's packed kernels). Linux only (None elsewhere); JAX rows have none here (XLA's
own temp memory is `--memory-split`'s column).

The weights are random (latency does not depend on them); int8 is calibrated on random images.
Threads: LiteRT's `num_threads`, ONNX Runtime's intra- and inter-op threads, and for JAX the XLA
CPU flags `--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N`, which only act if
set before JAX starts its CPU backend: `python -m mnv2_jax.stats --latency` sets them first, and
each JAX row says whether they took effect (`threads` None when not).
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnv2_jax import export, models

RUNTIMES = ('litert', 'onnxruntime', 'jax')
PRECISIONS = ('float32', 'int8')
FILE_FORMATS = {'litert': 'tflite', 'onnxruntime': 'onnx'}
BASELINE = ('mobilenet_v1', 1.0)
# Paper Table 4 (ms, TF-Lite on one large core of a Google Pixel 1, 224 px).
PAPER_TABLE4_MS = {('mobilenet_v1', 1.0): 113, ('mobilenet_v2', 1.0): 75,
                   ('mobilenet_v2', 1.4): 143}
DEFAULT_WIDTHS = (1.0, 1.4)
DEFAULT_RUNS = 50
WARMUP_RUNS = 5
NUM_CLASSES = 1000
CALIBRATION_IMAGES = 8


def set_jax_threads(threads: int) -> bool:
  """Asks XLA's CPU backend for `threads` intra-op threads; whether it can still take effect."""
  if jax._src.xla_bridge.backends_are_initialized():  # pylint: disable=protected-access
    return False
  flags = f'--xla_cpu_multi_thread_eigen={"true" if threads > 1 else "false"} ' \
          f'intra_op_parallelism_threads={threads}'
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {flags}'.strip()
  return True


@dataclasses.dataclass
class Variant:
  """One network in one runtime and precision, ready to run on a batch of one image."""
  model: str
  width: float
  resolution: int
  runtime: str
  precision: str
  split: int
  threads: Optional[int]
  run: Callable[[np.ndarray], object]
  # The exported file (LiteRT and ONNX Runtime rows), for the peak-memory process.
  model_bytes: Optional[bytes] = None


# Run by a fresh interpreter (argv: file, format, threads, side): only numpy and the runtime
# are imported, so the resident set before loading the model is the runtime's own. (Not
# ru_maxrss: Linux carries the forking parent's peak over into it.)
_PEAK_MEMORY_CHILD = '''
import json, sys
import numpy as np
path, file_format, threads, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
images = np.zeros((1, side, side, 3), np.float32)
if file_format == 'tflite':
  from ai_edge_litert import interpreter as litert
else:
  import onnxruntime as ort
with open(path, 'rb') as f:
  model = f.read()

def status_bytes(field):
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ':'))

with open('/proc/self/clear_refs', 'w') as f:
  f.write('5')  # the peak resident set (VmHWM) starts again from the current one
before = status_bytes('VmRSS')
if file_format == 'tflite':
  interpreter = litert.Interpreter(model_content=model, num_threads=threads)
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]['index'], images)
  interpreter.invoke()
else:
  options = ort.SessionOptions()
  options.intra_op_num_threads = options.inter_op_num_threads = threads
  session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
  session.run(None, {session.get_inputs()[0].name: images})
print(json.dumps({'before': before, 'peak': status_bytes('VmHWM')}))
'''


def peak_memory_growth(model_bytes: bytes, file_format: str, resolution: int,
                       threads: int = 1) -> Optional[int]:
  """Bytes by which one batch-1 inference of the file raises a fresh process's peak
  resident set (see the module docstring); None off Linux."""
  if not sys.platform.startswith('linux'):
    return None
  with tempfile.NamedTemporaryFile(suffix='.' + file_format) as f:
    f.write(model_bytes)
    f.flush()
    result = subprocess.run(
        [sys.executable, '-c', _PEAK_MEMORY_CHILD, f.name, file_format, str(threads),
         str(resolution)], capture_output=True, text=True, check=True)
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  return max(measured['peak'] - measured['before'], 0)


def _random_variables(model, resolution: int) -> dict:
  variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, resolution, resolution, 3)),
                                             train=False))(jax.random.key(0))
  return jax.tree.map(np.asarray, dict(variables))


def build_variants(networks: Sequence[tuple[str, float]], resolutions: Sequence[int],
                   runtimes: Sequence[str] = RUNTIMES, splits: Sequence[int] = (1,),
                   threads: int = 1, jax_threads: Optional[int] = None,
                   precisions: Sequence[str] = PRECISIONS) -> list[Variant]:
  """The variants to time: each network x resolution x runtime x precision, and the splits.

  Split rows (T > 1) are MobileNetV2's, float32 only: LiteRT cannot run the
  int8 group loop (docs/export.md). `jax_threads` is what the JAX rows report.
  """
  for runtime in runtimes:
    if runtime not in RUNTIMES:
      raise ValueError(f'runtime must be among {list(RUNTIMES)}, got {runtime!r}.')
  rng = np.random.default_rng(0)
  variants = []
  for name, width in networks:
    for resolution in resolutions:
      model = models.MODELS[name](num_classes=NUM_CLASSES, width_multiplier=width)
      variables = _random_variables(model, resolution)
      calibration = rng.uniform(-1, 1, (CALIBRATION_IMAGES, resolution, resolution, 3))
      for split in splits:
        if split > 1 and name != 'mobilenet_v2':
          continue
        for runtime in runtimes:
          for precision in precisions:
            if precision == 'int8' and (runtime == 'jax' or split > 1):
              continue
            if runtime == 'jax':
              # MobileNetV1 has no memory split (only split 1 reaches here for it).
              timed_model = model.clone(memory_split=split) if split > 1 else model
              # Bound now: the loop rebinds `variables` for the next network.
              apply = jax.jit(lambda x, m=timed_model, v=variables: m.apply(v, x, train=False))
              run = lambda x, f=apply: jax.block_until_ready(f(x))
              row_threads = jax_threads
            else:
              source = export.Source(model, variables, resolution, NUM_CLASSES, 'random weights')
              file_format = FILE_FORMATS[runtime]
              model_bytes = export.export(
                  source, file_format, memory_split=split,
                  quantize='int8' if precision == 'int8' else 'none', calibration=calibration)
              run = export.Runtime(model_bytes, file_format, threads=threads)
              row_threads = threads
            variants.append(Variant(name, width, resolution, runtime, precision, split,
                                    row_threads, run,
                                    None if runtime == 'jax' else model_bytes))
  return variants


def time_variants(variants: Sequence[Variant], runs: int = DEFAULT_RUNS,
                  warmup: int = WARMUP_RUNS,
                  clock: Callable[[], float] = time.perf_counter) -> list[dict]:
  """Median and 90th percentile (ms) of `runs` batch-1 runs of each variant, round-robin,
  and the exported files' peak memory growth in MB."""
  if runs < 1:
    raise ValueError(f'runs must be >= 1, got {runs}.')
  images = {resolution: np.random.default_rng(1).uniform(
      -1, 1, (1, resolution, resolution, 3)).astype(np.float32)
            for resolution in {variant.resolution for variant in variants}}
  for variant in variants:
    for _ in range(warmup):
      variant.run(images[variant.resolution])
  milliseconds = [[] for _ in variants]
  for _ in range(runs):
    for variant, times in zip(variants, milliseconds):
      start = clock()
      variant.run(images[variant.resolution])
      times.append((clock() - start) * 1000)
  rows = [{'model': variant.model, 'width': variant.width, 'resolution': variant.resolution,
           'runtime': variant.runtime, 'precision': variant.precision, 'split': variant.split,
           'threads': variant.threads, 'runs': runs,
           'median_ms': float(np.median(times)), 'p90_ms': float(np.percentile(times, 90)),
           'peak_memory_mb': _peak_memory_mb(variant)}
          for variant, times in zip(variants, milliseconds)]
  return with_ratios(rows)


def _peak_memory_mb(variant: Variant) -> Optional[float]:
  if variant.model_bytes is None:
    return None
  growth = peak_memory_growth(variant.model_bytes, FILE_FORMATS[variant.runtime],
                              variant.resolution, variant.threads or 1)
  return None if growth is None else growth / 2**20


def with_ratios(rows: Sequence[dict]) -> list[dict]:
  """Adds each median's ratio to MobileNetV1 1.0's of the same runtime, precision and size,
  and the paper's ratio for the networks of Table 4."""
  baselines = {(row['runtime'], row['precision'], row['resolution']): row['median_ms']
               for row in rows if (row['model'], row['width']) == BASELINE and row['split'] == 1}
  paper_baseline = PAPER_TABLE4_MS[BASELINE]
  result = []
  for row in rows:
    baseline = baselines.get((row['runtime'], row['precision'], row['resolution']))
    paper = PAPER_TABLE4_MS.get((row['model'], row['width']))
    result.append(dict(row, ratio_to_v1=row['median_ms'] / baseline if baseline else None,
                       paper_ratio_to_v1=(paper / paper_baseline
                                          if paper and row['split'] == 1 else None)))
  return result


def ordering_holds(rows: Sequence[dict]) -> dict[tuple[str, str, int], Optional[bool]]:
  """Per (runtime, precision, resolution): whether the paper's ordering holds here,
  MobileNetV2 1.0 < MobileNetV1 1.0 < MobileNetV2 1.4 (None: a network is missing)."""
  medians = {}
  for row in rows:
    if row['split'] == 1:
      medians.setdefault((row['runtime'], row['precision'], row['resolution']), {})[
          (row['model'], row['width'])] = row['median_ms']
  order = [('mobilenet_v2', 1.0), BASELINE, ('mobilenet_v2', 1.4)]
  return {key: (all(by_network[a] < by_network[b] for a, b in zip(order, order[1:]))
                if all(network in by_network for network in order) else None)
          for key, by_network in medians.items()}


def format_table(rows: Sequence[dict]) -> str:
  header = ('model', 'width', 'res', 'runtime', 'precision', 'split', 'threads', 'median ms',
            'p90 ms', 'vs V1 1.0', 'paper', 'peak MB')
  lines = [header]
  for row in rows:
    lines.append((row['model'], f'{row["width"]:g}', str(row['resolution']), row['runtime'],
                  row['precision'], str(row['split']),
                  '-' if row['threads'] is None else str(row['threads']),
                  f'{row["median_ms"]:.2f}', f'{row["p90_ms"]:.2f}',
                  '-' if row['ratio_to_v1'] is None else f'{row["ratio_to_v1"]:.2f}',
                  '-' if row['paper_ratio_to_v1'] is None else f'{row["paper_ratio_to_v1"]:.2f}',
                  '-' if row.get('peak_memory_mb') is None else f'{row["peak_memory_mb"]:.1f}'))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  table = '\n'.join('  '.join(cell.ljust(w) if i < 5 else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(line, widths)))
                    for line in lines)
  verdicts = [f'{runtime} {precision} {resolution}px: MobileNetV2 1.0 < MobileNetV1 1.0 < '
              f'MobileNetV2 1.4 (the paper\'s order) '
              f'{"holds" if holds else "does not hold" if holds is not None else "-"}'
              for (runtime, precision, resolution), holds in ordering_holds(rows).items()
              if holds is not None]
  return '\n'.join([table] + verdicts)


def latency_rows(widths: Sequence[float] = DEFAULT_WIDTHS, resolutions: Sequence[int] = (224,),
                 runtimes: Sequence[str] = RUNTIMES, splits: Sequence[int] = (1,),
                 threads: int = 1, runs: int = DEFAULT_RUNS,
                 jax_threads: Optional[int] = None) -> list[dict]:
  """MobileNetV1 1.0 and MobileNetV2 at `widths` (with 1.0 and 1.4), timed (see module doc)."""
  networks = [BASELINE] + [('mobilenet_v2', width)
                           for width in sorted(set(DEFAULT_WIDTHS) | set(widths))]
  variants = build_variants(networks, resolutions, runtimes, sorted(set(splits) | {1}),
                            threads, jax_threads)
  return time_variants(variants, runs)
