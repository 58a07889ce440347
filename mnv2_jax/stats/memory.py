"""Peak activation memory (paper Section 5.1, eq. 2, Table 3): analytic and compiled by XLA.

Analytic model (eq. 2; `mnv2_jax/models/memory_plan.py`, which the model reads
too): a network is a chain of operations whose peak memory is the max over
operations of inputs + outputs + scratch (in elements, times the bytes per
element and the batch); a bottleneck block in g channel groups keeps one group
of its inner t*k tensors live. With `memory_split` = T a block that fits
within the peak of all blocks in T groups runs whole, the others in T groups,
the stem fused with the t=1 first block in T groups.

Table 3 (`table3`): the largest tensor that must be materialised at each
resolution, in channels and KB (H*W*C*2/1000 bytes, 16-bit), when each
operation above keeps its inner tensors unmaterialised: for MobileNetV2 the
bottleneck tensors (stem and first block fused; the last 1x1 conv fused with
the average pool, whose mean can be accumulated like the projection), for
MobileNetV1 every layer output. This reproduces the paper's MobileNetV1 column
exactly (its printed 199 KB at 7x7 is 100: 7*7*1024*2 bytes) and the
MobileNetV2 rows at 112x112 (16 / 400 KB, the maximum), 7x7 and 1x1. The
paper's MobileNetV2 rows at 56x56 (32), 28x28 (64) and 14x14 (160) list the
output width of the stride-2 block that *leaves* that resolution, which exists
only at the next resolution; the tensors that exist there are 24, 32 and 96
wide. Both are printed; neither changes the maximum (400 vs 1600 KB).

Compiled memory (`compiled_memory`): XLA's `memory_analysis()` of the jitted
inference function at batch 1. `temp_size_in_bytes` is XLA's peak scratch for
the activations (the arguments, i.e. the variables and the image, and the
output are reported separately): it includes whatever the compiler chooses to
materialise, e.g. the padded copy the 'shifted' CPU depthwise convolution
makes of its input, layout copies and allocator fragmentation, which the
analytic model leaves out.
"""

import statistics
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture, memory_plan, memory_split
from mnv2_jax.models.mobilenet_v2 import MobileNetV2

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Table 3 assumes 16-bit activations; its KB are 1000 bytes.
TABLE3_BYTES_PER_ELEMENT = 2
TABLE3_RESOLUTIONS = (112, 56, 28, 14, 7, 1)
# The paper's Table 3 as printed: resolution -> (max channels, KB).
PAPER_TABLE3 = {
    'mobilenet_v1': {112: (64, 1600), 56: (128, 800), 28: (256, 400), 14: (512, 200),
                     7: (1024, 199), 1: (1024, 2)},
    'mobilenet_v2': {112: (16, 400), 56: (32, 200), 28: (64, 100), 14: (160, 62),
                     7: (320, 32), 1: (1280, 2)},
}
PAPER_TABLE3_MAX_KB = {'mobilenet_v1': 1600, 'mobilenet_v2': 400}


# Eq. (2) itself lives beside the model, which reads the same groups (memory_plan.py).
Operation = memory_plan.Operation
analytic_peak = memory_plan.analytic_peak


def mobilenet_v2_operations(width_multiplier: float = 1.0, resolution: int = 224,
                            memory_split_groups: int = 1, expansion_ratio: float = 6,
                            shortcut: str = 'bottleneck',
                            num_classes: int = 1000) -> list[Operation]:
  """The chain of operations of MobileNetV2 inference with T = `memory_split_groups`.

  Each block has the groups `MobileNetV2(memory_split=T)` gives it
  (`memory_plan.group_plan`).
  """
  spec = architecture.mobilenet_v2_spec(width_multiplier, expansion_ratio)
  return memory_plan.operations(spec, resolution, memory_split_groups, shortcut, num_classes)


def analytic_peak_bytes(width_multiplier: float = 1.0, resolution: int = 224,
                        memory_split_groups: int = 1, bytes_per_element: int = 4,
                        batch_size: int = 1, **options) -> int:
  operations = mobilenet_v2_operations(width_multiplier, resolution, memory_split_groups,
                                       **options)
  return analytic_peak(operations).total * bytes_per_element * batch_size


def _materialised_tensors(model: str, width_multiplier: float,
                          resolution: int) -> list[tuple[int, int]]:
  """(spatial size, channels) of every tensor Table 3 counts as materialised."""
  size = architecture.conv_output_size(resolution, 2)
  if model == 'mobilenet_v1':
    spec = architecture.mobilenet_v1_spec(width_multiplier)
    tensors = [(size, spec.stem_channels)]
    for layer in spec.layers:
      tensors.append((architecture.conv_output_size(size, layer.stride), layer.in_channels))
      size = architecture.conv_output_size(size, layer.stride)
      tensors.append((size, layer.out_channels))
    return tensors + [(1, spec.layers[-1].out_channels)]
  spec = architecture.mobilenet_v2_spec(width_multiplier)
  tensors = []  # The stem output is the first block's inner tensor: not materialised.
  for block in spec.blocks:
    size = architecture.conv_output_size(size, block.stride)
    tensors.append((size, block.out_channels))
  # The last 1x1 conv is fused with the average pool (its mean accumulates).
  return tensors + [(1, spec.last_channels)]


def table3(model: str, width_multiplier: float = 1.0, resolution: int = 224,
           bytes_per_element: int = TABLE3_BYTES_PER_ELEMENT) -> dict[int, tuple[int, float]]:
  """Spatial size -> (max materialised channels, KB) as in the paper's Table 3."""
  architecture.validate_choice('model', model, tuple(PAPER_TABLE3))
  table = {}
  for size, channels in _materialised_tensors(model, width_multiplier, resolution):
    if channels > table.get(size, (0, 0))[0]:
      table[size] = (channels, size * size * channels * bytes_per_element / 1000)
  return table


def format_table3(width_multiplier: float = 1.0, resolution: int = 224) -> str:
  models = tuple(PAPER_TABLE3)
  tables = {model: table3(model, width_multiplier, resolution) for model in models}
  lines = [f'Table 3 (max channels / KB materialised, 16-bit, width {width_multiplier:g}, '
           f'{resolution}px): computed | paper']
  header = ['size'] + [f'{model} computed | paper' for model in models]
  rows = [header]
  for size in sorted(set().union(*tables.values()), reverse=True):
    cells = [f'{size}x{size}']
    for model in models:
      channels, kilobytes = tables[model].get(size, (0, 0.0))
      paper = PAPER_TABLE3[model].get(size)
      paper_text = f'{paper[0]}/{paper[1]}' if paper and width_multiplier == 1.0 else '-'
      cells.append(f'{channels}/{kilobytes:.1f} | {paper_text}')
    rows.append(cells)
  maxima = ['max'] + [
      f'{max(kb for _, kb in tables[m].values()):.1f} | '
      f'{PAPER_TABLE3_MAX_KB[m] if width_multiplier == 1.0 else "-"}' for m in models]
  rows.append(maxima)
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  lines += ['  '.join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
  return '\n'.join(lines)


def _network(width_multiplier: float, split: int, dtype: Any, **options) -> MobileNetV2:
  return MobileNetV2(width_multiplier=width_multiplier, memory_split=split, dtype=dtype,
                     **options)


def _abstract_inputs(width_multiplier: float, resolution: int, batch_size: int, **options):
  images = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
  variables = jax.eval_shape(_network(width_multiplier, 1, jnp.float32, **options).init,
                             jax.random.PRNGKey(0), images)
  return variables, images


def compile_inference(width_multiplier: float, resolution: int, split: int,
                      dtype: Any = jnp.float32, batch_size: int = 1, **options):
  """The compiled inference function (variables, images) -> logits; no computation runs."""
  variables, images = _abstract_inputs(width_multiplier, resolution, batch_size, **options)
  model = _network(width_multiplier, split, dtype, **options)
  return jax.jit(model.apply).lower(variables, images).compile()


def compiled_memory(width_multiplier: float, resolution: int, split: int,
                    dtype: Any = jnp.float32, batch_size: int = 1, **options) -> dict[str, int]:
  """XLA's memory analysis of whole-network inference (bytes)."""
  analysis = compile_inference(width_multiplier, resolution, split, dtype, batch_size,
                               **options).memory_analysis()
  return {'temp_bytes': int(analysis.temp_size_in_bytes),
          'argument_bytes': int(analysis.argument_size_in_bytes),
          'output_bytes': int(analysis.output_size_in_bytes)}


def memory_rows(width_multiplier: float = 1.0, resolution: int = 224,
                splits: Sequence[int] = (1, 2, 4, 8), dtype: str = 'float32',
                batch_size: int = 1, latency_runs: int = 20,
                expansion_ratio: Optional[float] = None) -> list[dict]:
  """One row per T: analytic and compiled peak memory and inference latency.

  Latency: every T is compiled first, then `latency_runs` rounds time each T
  once in turn (so that load on the machine hits all T alike); the median
  and the minimum are reported. `latency_runs=0` skips running the network.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {list(DTYPES)}, got {dtype!r}.')
  for split in splits:
    memory_split.validate_memory_split(split)
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}.')
  options = {} if expansion_ratio is None else {'expansion_ratio': expansion_ratio}
  bytes_per_element = jnp.dtype(DTYPES[dtype]).itemsize
  compiled = {split: compile_inference(width_multiplier, resolution, split, DTYPES[dtype],
                                       batch_size, **options) for split in splits}
  latencies = {split: [] for split in splits}
  if latency_runs > 0:
    images = jax.random.uniform(jax.random.PRNGKey(1), (batch_size, resolution, resolution, 3),
                                minval=-1, maxval=1)
    variables = jax.jit(_network(width_multiplier, 1, jnp.float32, **options).init)(
        jax.random.PRNGKey(0), images)
    for function in compiled.values():
      function(variables, images).block_until_ready()  # Warm-up.
    for _ in range(latency_runs):
      for split, function in compiled.items():
        start = time.perf_counter()
        function(variables, images).block_until_ready()
        latencies[split].append((time.perf_counter() - start) * 1000)
  rows = []
  for split in splits:
    operations = mobilenet_v2_operations(width_multiplier, resolution, split, **options)
    peak = analytic_peak(operations)
    analysis = compiled[split].memory_analysis()
    rows.append({
        'width': width_multiplier,
        'resolution': resolution,
        'batch_size': batch_size,
        'split': split,
        'dtype': dtype,
        'analytic_peak_bytes': peak.total * bytes_per_element * batch_size,
        'analytic_peak_operation': peak.name,
        'compiled_temp_bytes': int(analysis.temp_size_in_bytes),
        'compiled_argument_bytes': int(analysis.argument_size_in_bytes),
        'compiled_output_bytes': int(analysis.output_size_in_bytes),
        'latency_ms': statistics.median(latencies[split]) if latencies[split] else None,
        'latency_min_ms': min(latencies[split]) if latencies[split] else None,
        'device': jax.devices()[0].device_kind,
    })
  return rows


def format_memory_rows(rows: Sequence[dict]) -> str:
  """A table with each T's reduction relative to T=1 of the same model, when present."""
  baselines = {(row['width'], row['resolution'], row['dtype']): row
               for row in rows if row['split'] == 1}
  header = ('width', 'res', 'dtype', 'T', 'analytic peak', 'peak op', 'XLA temp',
            'temp vs T=1', 'latency ms (median/min)', 'latency vs T=1')
  lines = [header]
  for row in rows:
    baseline = baselines.get((row['width'], row['resolution'], row['dtype']))
    temp_ratio = latency_ratio = '-'
    if baseline:
      temp_ratio = f'{baseline["compiled_temp_bytes"] / row["compiled_temp_bytes"]:.2f}x less'
      if row['latency_ms'] is not None:
        latency_ratio = f'{row["latency_min_ms"] / baseline["latency_min_ms"]:.2f}x'
    latency = ('-' if row['latency_ms'] is None else
               f'{row["latency_ms"]:.1f}/{row["latency_min_ms"]:.1f}')
    lines.append((f'{row["width"]:g}', str(row['resolution']), row['dtype'], str(row['split']),
                  f'{row["analytic_peak_bytes"] / 1e6:.2f} MB', row['analytic_peak_operation'],
                  f'{row["compiled_temp_bytes"] / 1e6:.2f} MB', temp_ratio, latency,
                  latency_ratio))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return '\n'.join('  '.join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def main() -> None:
  """`python -m mnv2_jax.stats.memory`: the 1.0@224 table (the full CLI is `--memory`)."""
  print(format_table3())
  print()
  print(format_memory_rows(memory_rows()))


if __name__ == '__main__':
  main()
