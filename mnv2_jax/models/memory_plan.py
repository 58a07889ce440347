"""Eq. (2) of the paper as data, and the channel groups memory-efficient inference uses.

A network is a chain of operations whose peak memory is the max over
operations of inputs + outputs + scratch (elements per image). A bottleneck
block is one operation whose inner t*k tensors are scratch: evaluated in g
channel groups (`memory_split.py`), only one group of ceil(t*k / g) channels
of the expanded tensor and of its depthwise output is live, so its scratch is
G * (H_in^2 + H_out^2). With T > 1 the stem is fused with the t=1 first block
in the same way (as the paper does for Table 3); with T = 1 (the normal
network) the stem and every layer's output are materialised. With the
'expansion' shortcut and T = 1 a source block's expanded tensor stays live into
the next block; with T > 1 the next block reads the source blocks' (narrow)
inputs and recomputes their expansion slices.

`memory_split=T` promises the peak of eq. (2) with every block in T groups.
Only the blocks at high resolution need T groups for that (at 1.0 @ 224 and
T = 4, blocks 4-16 are below that peak even whole), and every group costs a
loop iteration of smaller, less efficient kernels, so `group_plan` runs whole
every block that fits within the T-way peak whole and the others in T groups:
the same analytic peak, fewer loops. `mnv2_jax.models.mobilenet_v2` and
`mnv2_jax.stats.memory` both read it.
"""

import dataclasses
from typing import Mapping, Optional

from mnv2_jax.models import architecture
from mnv2_jax.models.memory_split import group_size, validate_memory_split


@dataclasses.dataclass(frozen=True)
class Operation:
  """One operation of eq. (2), sizes in elements per image."""
  name: str
  inputs: int
  outputs: int
  scratch: int = 0

  @property
  def total(self) -> int:
    return self.inputs + self.outputs + self.scratch


def operations(spec: architecture.MobileNetV2Spec, resolution: int, memory_split: int = 1,
               shortcut: str = 'bottleneck', num_classes: int = 1000,
               block_groups: Optional[Mapping[int, int]] = None) -> list[Operation]:
  """The chain of operations of MobileNetV2 inference with T = `memory_split`.

  `block_groups` maps a block index (>= 1) to its number of groups; by default
  `group_plan`'s. The stem and block 0 are fused in T groups when T > 1.
  """
  validate_memory_split(memory_split)
  architecture.validate_resolution(resolution)
  architecture.validate_choice('shortcut', shortcut, architecture.SHORTCUTS)
  split = memory_split
  if block_groups is None:
    block_groups = group_plan(spec, resolution, split, shortcut)
  sources = architecture.expansion_shortcut_sources(spec) if shortcut == 'expansion' else {}
  receivers = {source: block for block, source in sources.items()}
  size = architecture.conv_output_size(resolution, 2)
  image = resolution**2 * 3
  chain = []
  first = spec.blocks[0]
  first_out = architecture.conv_output_size(size, first.stride)
  if split == 1:
    chain.append(Operation('stem', image, size**2 * spec.stem_channels))
  else:
    group = group_size(spec.stem_channels, split)
    chain.append(Operation('stem+block_0', image, first_out**2 * first.out_channels,
                           group * (size**2 + first_out**2)))
    size = first_out
  block_inputs = {}
  for block in spec.blocks[0 if split == 1 else 1:]:
    out_size = architecture.conv_output_size(size, block.stride)
    block_inputs[block.index] = size**2 * block.in_channels
    inputs = block_inputs[block.index]
    outputs = out_size**2 * block.out_channels
    if block.index in sources:
      if split == 1:  # The source's whole expanded tensor is still live.
        inputs += size**2 * block.expanded_channels
      else:  # The chain of sources' inputs, to recompute their expansion slices.
        source = sources[block.index]
        while source is not None:
          inputs += block_inputs[source]
          source = sources.get(source)
    if split == 1 and block.index in receivers:
      outputs += size**2 * block.expanded_channels  # Kept for the next block's shortcut.
    group = group_size(block.expanded_channels, block_groups.get(block.index, split))
    chain.append(Operation(f'block_{block.index}', inputs, outputs,
                           group * (size**2 + out_size**2)))
    size = out_size
  last_input = size**2 * spec.blocks[-1].out_channels
  chain.append(Operation('last_conv', last_input, size**2 * spec.last_channels))
  chain.append(Operation('average_pool', size**2 * spec.last_channels, spec.last_channels))
  chain.append(Operation('classifier', spec.last_channels, num_classes))
  return chain


def analytic_peak(chain: list[Operation]) -> Operation:
  """The operation that sets the peak of eq. (2)."""
  return max(chain, key=lambda operation: operation.total)


def group_plan(spec: architecture.MobileNetV2Spec, resolution: int, memory_split: int,
               shortcut: str = 'bottleneck') -> dict[int, int]:
  """Block index (>= 1) -> 1 if the block fits the T-way peak whole, else T.

  Block 0 is fused with the stem and always runs in T groups. With the
  'expansion' shortcut every block keeps T groups: a block reads its sources'
  expansion slices group by group, so their groups must match. Why all or
  nothing rather than the fewest groups within the peak: that gave 1.0 @ 224
  block 2 two groups and XLA 10% more temp memory at T = 4 (3.90 against 3.55
  MB, its buffers are not eq. (2)'s), for 1.45x instead of 1.52x the latency of
  T = 1 (docs/memory.md).
  """
  blocks = [block.index for block in spec.blocks[1:]]
  if memory_split == 1 or shortcut == 'expansion':
    return {index: memory_split for index in blocks}
  whole = {operation.name: operation.total for operation in
           operations(spec, resolution, memory_split, shortcut, block_groups=dict.fromkeys(blocks, 1))}
  peak = analytic_peak(operations(spec, resolution, memory_split, shortcut,
                                  block_groups=dict.fromkeys(blocks, memory_split))).total
  return {index: 1 if whole[f'block_{index}'] <= peak else memory_split for index in blocks}
