"""Per-channel sums of NHWC activations, written so that XLA:CPU runs them fast.

A reduction over every axis but the last (the channels, the minor axis) is what
BN's statistics and the depthwise kernel gradient need, and XLA:CPU emits it
slowly when it reads a fused producer. Summing a few consecutive rows first is
an elementwise accumulation of whole W x C rows, which XLA vectorises along the
contiguous channels and fuses with the producer of the summands (one pass over
them for all the sums at once); what is left is a reduction of 1/g of the data.
No library offers this for JAX; the measurements are in benchmarks/README.md.
"""

import jax
import jax.numpy as jnp

# Rows per group (the largest divisor of batch x rows up to this): on single depthwise
# layers 8 was fastest, 4 close, 16 and 32 about 2x slower (2-core AMD EPYC).
ROW_GROUP = 8


def sum_together(arrays, axes):
  """The sums of `arrays` (equal shapes) over `axes`, as one variadic reduction."""
  return jax.lax.reduce(tuple(arrays), tuple(jnp.zeros((), array.dtype) for array in arrays),
                        lambda a, b: tuple(x + y for x, y in zip(a, b)), axes)


def channel_sums(arrays, row_group=None):
  """Each (N, H, W, C) array of `arrays` summed over N, H and W: within groups of rows, then across."""
  row_group = ROW_GROUP if row_group is None else row_group
  batch, rows, width, channels = arrays[0].shape
  group = max(size for size in range(1, row_group + 1) if batch * rows % size == 0)
  grouped = [array.reshape(batch * rows // group, group, width, channels) for array in arrays]
  return [jnp.sum(partial, axis=(0, 1)) for partial in sum_together(grouped, (1,))]
