"""How XLA's compiled memory of split inference depends on the way the groups are looped.

  python benchmarks/memory_benchmark.py [--width 1.0] [--resolution 224] [--split 1,2,4,8]

Prints, for batch-1 float32 inference, XLA's temp memory (`memory_analysis()`)
of (a) the whole network with the group loop as implemented (`lax.fori_loop`)
and (b) the same loop unrolled (the groups become independent sub-graphs that
XLA may schedule side by side), and (c) the largest block alone
(block 1: 112x112x16 -> 56x56x24, t=6). The latency table is
`python -m mnv2_jax.stats --memory`.
"""

import argparse

import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture, memory_split
from mnv2_jax.stats import memory


def block_temp_bytes(width: float, resolution: int, index: int, split: int) -> int:
  spec = architecture.mobilenet_v2_spec(width)
  size = architecture.conv_output_size(resolution, 2)
  for block in spec.blocks[:index]:
    size = architecture.conv_output_size(size, block.stride)
  block = spec.blocks[index]
  network_variables, _ = memory._abstract_inputs(width, resolution, 1)
  variables = (network_variables['params'][f'block_{index}'],
               network_variables['batch_stats'][f'block_{index}'])
  inputs = jax.ShapeDtypeStruct((1, size, size, block.in_channels), jnp.float32)
  function = lambda variables, inputs: memory_split.split_bottleneck(
      inputs, variables, block, split, bottleneck_activation='linear',
      add_bottleneck_shortcut=block.residual, depthwise_impl='auto', dtype=jnp.float32)
  compiled = jax.jit(function).lower(variables, inputs).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--split', default='1,2,4,8')
  args = parser.parse_args()
  splits = [int(split) for split in args.split.split(',')]
  print(f'{jax.devices()[0].device_kind}: MobileNetV2 {args.width:g}@{args.resolution}, '
        f'batch 1, float32; XLA temp memory in MB')
  print('T  network(fori_loop)  network(unrolled)  block_1 alone')
  for split in splits:
    fori = memory.compiled_memory(args.width, args.resolution, split)['temp_bytes']
    memory_split.UNROLL_GROUPS = True
    try:
      unrolled = memory.compiled_memory(args.width, args.resolution, split)['temp_bytes']
    finally:
      memory_split.UNROLL_GROUPS = False
    block = block_temp_bytes(args.width, args.resolution, 1, split)
    print(f'{split:<2} {fori / 1e6:18.2f}  {unrolled / 1e6:17.2f}  {block / 1e6:13.2f}',
          flush=True)


if __name__ == '__main__':
  main()
