r"""Does the Section 5.1 split save memory in LiteRT, with the group loop and unrolled?

  python benchmarks/split_export_memory.py [--width 1.0] [--resolution 224] [--split 4]

Exports MobileNetV2 (random weights) unsplit, split with the group loop (a
WHILE, what `mnv2_jax.export --memory-split` writes) and split with the loop
unrolled (`memory_split.UNROLL_GROUPS`, every kernel slice a constant), in
float32 and int8, and prints for each: batch-1 latency in LiteRT on one thread
(median of 30, as `mnv2_jax.stats --latency` times), the peak memory growth of one inference in a fresh process
(`mnv2_jax.stats.latency.peak_memory_growth`) and the file size (parity of the
split files is tests/test_export.py's). Results: docs/export.md.
"""

import argparse

import numpy as np

from mnv2_jax import export
from mnv2_jax.models import memory_split
from mnv2_jax.models.mobilenet_v2 import MobileNetV2
from mnv2_jax.stats import latency

RUNS = 30


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--split', type=int, default=4)
  args = parser.parse_args()
  model = MobileNetV2(num_classes=latency.NUM_CLASSES, width_multiplier=args.width)
  variables = latency._random_variables(model, args.resolution)  # pylint: disable=protected-access
  source = export.Source(model, variables, args.resolution, latency.NUM_CLASSES, 'random')
  calibration = np.random.default_rng(0).uniform(
      -1, 1, (8, args.resolution, args.resolution, 3)).astype(np.float32)
  for form, split, unroll in (('unsplit', 1, False), ('loop', args.split, False),
                              ('unrolled', args.split, True)):
    memory_split.UNROLL_GROUPS = unroll
    for precision, quantize in (('float32', 'none'), ('int8', 'int8')):
      try:
        model_bytes = export.export(source, 'tflite', memory_split=split, quantize=quantize,
                                    calibration=calibration)
      except export.ExportError as e:
        print(f'{form:9s} {precision:7s} refused: {e}')
        continue
      # Timed and measured as `python -m mnv2_jax.stats --latency` times its rows.
      variant = latency.Variant('mobilenet_v2', args.width, args.resolution, 'litert',
                                precision, split, 1,
                                export.Runtime(model_bytes, 'tflite', threads=1), model_bytes)
      [row] = latency.time_variants([variant], runs=RUNS)
      print(f'{form:9s} {precision:7s} {row["median_ms"]:7.2f} ms  peak '
            f'{row["peak_memory_mb"]:5.1f} MB  file {len(model_bytes) / 2**20:5.1f} MB',
            flush=True)
  memory_split.UNROLL_GROUPS = False


if __name__ == '__main__':
  main()
