"""Memory-efficient inference (paper Section 5.1): bottleneck blocks in channel groups.

A bottleneck block F(x) = [A o N o B](x) (expansion B, per-channel depthwise +
ReLU6 N, projection A) is a sum over any partition of its t*k inner channels:
F(x) = sum_g A_g(N_g(B_g(x))), because N acts channel by channel and A is
linear. So the block can be computed in T groups, each producing the expanded
slice, its depthwise output and its partial projection, which is added to an
accumulator; the projection BN is applied after the sum. Only one group of the
wide inner tensor is ever live, the MAdds do not change, and the result equals
the normal network up to float summation order.

How XLA is made to keep one group live (measured with
`compiled.memory_analysis()`, see benchmarks/memory_benchmark.py):
- The groups run in a `lax.fori_loop` whose carry is the accumulator: the loop
  body is one computation executed T times, so its buffers are reused. A
  Python loop over static slices (or the same loop unrolled) gives XLA T
  independent sub-graphs that it schedules side by side: on CPU the 1.0@224
  network then needs *more* temp memory at T=4 (16.2 MB) than unsplit
  (9.8 MB). `lax.optimization_barrier` between groups does not help, the
  CPU pipeline removes barriers before scheduling.
- Every group has the same static size G = ceil(C / T); group g starts at
  g * G, the last one is moved back to C - G so that its slice stays in
  bounds, and the channels it shares with the previous group are masked out
  of its projection rows. T need not divide C (a block then runs
  ceil(C / G) <= T groups) and no kernel is padded or copied.
- The per-group slices that elementwise code reads (BN vectors, depthwise
  taps, the input slice of a block without expansion) are cut with
  `dynamic_slice` *one iteration ahead* and passed through the loop carry.
  Sliced inside the iteration that uses them, XLA fuses the dynamic slice
  into the elementwise depthwise/BN loops, which then run about 3x slower
  (per-element index arithmetic); as carried buffers they are plain operands
  and a group costs about what the unsplit layer costs per channel. Kernel
  slices (expansion, stem, projection rows) feed convolutions/dots, which XLA
  does not fuse with the slice, and are cut in the iteration itself: carrying
  them would add double-buffered copies of up to 240x320 weights per block.

The paper applies the same trick to the first layer (Table 3): the stem
convolution's output channels are the inner tensor of the first block (t = 1,
no expansion), so stem conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 ->
projection is split in the same way and the stem output (the widest tensor at
112x112) is never materialised either. Without this the stem and the first
block set the network's peak once the other blocks are split.

With the 'expansion' shortcut (Figure 6b ablation) a block's expanded tensor
receives the expanded tensor of the block before; to keep that tensor
unmaterialised too, each group recomputes the source blocks' expansion slices
from their (narrow) inputs, which costs the extra expansion MAdds of those
source blocks.

Everything here is inference only: BN uses the running statistics.
"""

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture
from mnv2_jax.models.depthwise import depthwise_conv, is_cpu_form
from mnv2_jax.models.layers import BATCH_NORM_EPSILON, relu6, same_patches

# (params, batch_stats) of one Flax submodule tree, e.g. of block_3.
Variables = tuple[Mapping[str, Any], Mapping[str, Any]]

# Unrolling the group loop lets XLA schedule the groups side by side (more
# memory, see the module docstring); benchmarks/memory_benchmark.py sets this
# to measure exactly that. Never set it otherwise.
UNROLL_GROUPS = False


def validate_memory_split(memory_split) -> None:
  if isinstance(memory_split, bool) or not isinstance(memory_split, int) or memory_split < 1:
    raise ValueError(
        f'memory_split must be an integer >= 1 (1 = the normal network; the paper finds 2-5 '
        f'fastest), got {memory_split!r}.')


def group_size(channels: int, memory_split: int) -> int:
  """Channels per group: ceil(C / T)."""
  return -(-channels // memory_split)


def num_groups(channels: int, memory_split: int) -> int:
  """Groups actually run for C channels split T ways: ceil(C / ceil(C / T)) <= T."""
  return -(-channels // group_size(channels, memory_split))


def _slice_channels(array: jax.Array, start, size: int) -> jax.Array:
  """array[..., start:start + size] with a possibly traced start."""
  return jax.lax.dynamic_slice_in_dim(array, start, size, axis=array.ndim - 1)


def _conv(inputs: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The normal network's convolution (flax nn.Conv: TF-'SAME' padding, no bias)."""
  return jax.lax.conv_general_dilated(
      inputs, kernel, window_strides=(stride, stride), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _batch_norm_slices(params: Mapping[str, Any], stats: Mapping[str, Any], start,
                       size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(mean, multiplier, bias) of channels [start, start + size) of an inference BN."""
  mean, var, scale, bias = (_slice_channels(v, start, size) for v in
                            (stats['mean'], stats['var'], params['scale'], params['bias']))
  return mean, jax.lax.rsqrt(var + BATCH_NORM_EPSILON) * scale, bias


def _apply_batch_norm(inputs: jax.Array, slices, dtype: Any) -> jax.Array:
  # The same operation order as flax nn.BatchNorm, so float results match closely.
  mean, multiplier, bias = slices
  return jnp.asarray((inputs - mean) * multiplier + bias, dtype)


def _grouped_bottleneck(block_input: jax.Array, inner_vectors: Callable[[Any, int], Any],
                        inner_kernels: Callable[[Any, int], Any],
                        inner_group: Callable[[Any, Any], jax.Array], inner_channels: int,
                        block: Variables, stride: int, out_shape: Sequence[int],
                        memory_split: int, depthwise_impl: str, dtype: Any) -> jax.Array:
  """sum over groups of project_g(ReLU6(BN_g(depthwise_g(inner group g)))), before the last BN.

  For group [start, start + size) of the inner tensor, `inner_vectors` cuts
  what elementwise code reads (BN slices, or an input slice) and
  `inner_kernels` the convolution kernel slices; `inner_group(vectors,
  kernels)` computes the (post-ReLU6) group from them. `block_input` is what
  the block computes from (see `_zero_depending_on`).
  """
  params, stats = block
  size = group_size(inner_channels, memory_split)
  groups = num_groups(inner_channels, memory_split)
  depthwise_kernel = params['depthwise_conv']['kernel'].astype(dtype)
  project_kernel = params['project_conv']['kernel'].astype(dtype)
  project_kernel = project_kernel.reshape(project_kernel.shape[-2:])

  def group_start(group):
    # The last group is moved back to stay in bounds; the channels it shares
    # with the previous group are masked out of its projection rows.
    return group * size, jnp.minimum(group * size, inner_channels - size)

  def vector_slices(group):
    """What elementwise loops read: carried one iteration ahead (module docstring)."""
    _, start = group_start(group)
    return dict(inner=inner_vectors(start, size),
                depthwise_kernel=_slice_channels(depthwise_kernel, start, size),
                depthwise_bn=_batch_norm_slices(params['depthwise_bn'], stats['depthwise_bn'],
                                                start, size))

  def kernel_slices(group):
    """What the convolutions read: cut in the iteration, kept out of the loop carry."""
    first_owned, start = group_start(group)
    owned = (start + jnp.arange(size)) >= first_owned
    rows = jax.lax.dynamic_slice_in_dim(project_kernel, start, size, axis=0)
    return dict(inner=inner_kernels(start, size),
                project_rows=rows * owned[:, None].astype(dtype))

  def partial_projection(vectors, kernels):
    hidden = inner_group(vectors['inner'], kernels['inner'])
    hidden = depthwise_conv(hidden, vectors['depthwise_kernel'], stride, impl=depthwise_impl)
    hidden = relu6(_apply_batch_norm(hidden, vectors['depthwise_bn'], dtype))
    return jnp.einsum('nhwc,cd->nhwd', hidden, kernels['project_rows'])

  if groups == 1:
    return partial_projection(vector_slices(0), kernel_slices(0))

  def loop_body(group, carry):
    accumulator, vectors = carry
    next_vectors = vector_slices(jnp.minimum(group + 1, groups - 1))
    return accumulator + partial_projection(vectors, kernel_slices(group)), next_vectors

  # The first slices and the zero accumulator depend only on parameters, so
  # XLA would compute them (for every block) at the start of the program and
  # keep them live throughout; a data dependency on the block's input keeps
  # them local to the block.
  zero = _zero_depending_on(block_input)
  carry = (jnp.full(out_shape, zero.astype(dtype)), vector_slices(zero))
  # One loop body executed once per group: its buffers are reused, so only one
  # group of the inner tensor is live (measured, see the module docstring).
  accumulator, _ = jax.lax.fori_loop(0, groups, loop_body, carry, unroll=UNROLL_GROUPS)
  return accumulator


def _zero_depending_on(array: jax.Array) -> jax.Array:
  """An int32 0 that XLA cannot compute before `array` (NaN != NaN is not folded)."""
  element = array.reshape(-1)[0]
  return jnp.minimum((element != element).astype(jnp.int32), 0)


def _project_output(projection: jax.Array, block: Variables, bottleneck_activation: str,
                    dtype: Any) -> jax.Array:
  params, stats = block
  channels = projection.shape[-1]
  output = _apply_batch_norm(
      projection, _batch_norm_slices(params['project_bn'], stats['project_bn'], 0, channels),
      dtype)
  if bottleneck_activation == 'relu6':
    output = relu6(output)
  return output


def split_stem_and_first_block(images: jax.Array, stem: Variables, first_block: Variables,
                               spec: architecture.MobileNetV2Spec, memory_split: int, *,
                               bottleneck_activation: str, depthwise_impl: str,
                               dtype: Any) -> jax.Array:
  """Stem conv + the t=1 first block, split over the stem's output channels (Table 3).

  `stem` holds 'stem_conv' and 'stem_bn' (e.g. the whole network's variables).
  """
  block_spec = spec.blocks[0]
  if block_spec.has_expansion or block_spec.residual:
    raise ValueError('The first MobileNetV2 block must have t=1 and no residual (Table 2).')
  stem_params, stem_stats = stem
  images = images.astype(dtype)
  stem_kernel = stem_params['stem_conv']['kernel'].astype(dtype)

  def stem_vectors(start, size):
    return _batch_norm_slices(stem_params['stem_bn'], stem_stats['stem_bn'], start, size)

  def stem_kernel_slice(start, size):
    return _slice_channels(stem_kernel, start, size)

  # On CPU the stem is a matrix product over the image's patches, as in the normal network
  # (layers.patches_conv); the patches are cut once, before the group loop.
  if is_cpu_form(depthwise_impl):
    patches = same_patches(images, stem_kernel.shape[0], 2)
    stem_conv = lambda kernel: jnp.einsum('nhwc,cd->nhwd', patches,
                                          kernel.reshape(-1, kernel.shape[-1]))
  else:
    stem_conv = lambda kernel: _conv(images, kernel, 2)

  def stem_group(batch_norm, kernel):
    return relu6(_apply_batch_norm(stem_conv(kernel), batch_norm, dtype))

  height, width = (architecture.conv_output_size(size, 2) for size in images.shape[1:3])
  out_shape = (images.shape[0], architecture.conv_output_size(height, block_spec.stride),
               architecture.conv_output_size(width, block_spec.stride), block_spec.out_channels)
  projection = _grouped_bottleneck(images, stem_vectors, stem_kernel_slice, stem_group, spec.stem_channels, first_block,
                                   block_spec.stride, out_shape, memory_split, depthwise_impl,
                                   dtype)
  return _project_output(projection, first_block, bottleneck_activation, dtype)


def split_bottleneck(inputs: jax.Array, block: Variables, block_spec: architecture.BottleneckSpec,
                     memory_split: int, *, bottleneck_activation: str,
                     add_bottleneck_shortcut: bool, depthwise_impl: str, dtype: Any,
                     expansion_shortcut: Sequence[tuple[jax.Array, Variables]] = ()) -> jax.Array:
  """One inverted residual block (the variables of `InvertedResidual`) in T groups.

  `expansion_shortcut` lists (inputs, variables) of the blocks whose expanded
  tensors reach this block's ('expansion' shortcut): the chain of sources,
  nearest first. Their expansion slices are recomputed for every group.
  """
  inputs = inputs.astype(dtype)
  # This block first, then its sources nearest first.
  expanders = [(inputs, block)] + [(x.astype(dtype), v) for x, v in expansion_shortcut]

  def inner_vectors(start, size):
    if not block_spec.has_expansion:
      return _slice_channels(inputs, start, size)
    return [_batch_norm_slices(params['expand_bn'], stats['expand_bn'], start, size)
            for _, (params, stats) in expanders]

  def inner_kernels(start, size):
    if not block_spec.has_expansion:
      return None
    return [_slice_channels(params['expand_conv']['kernel'].astype(dtype), start, size)
            for _, (params, _) in expanders]

  def inner_group(vectors, kernels):
    if not block_spec.has_expansion:
      return vectors
    expansions = [relu6(_apply_batch_norm(_conv(x, kernel, 1), batch_norm, dtype))
                  for (x, _), kernel, batch_norm in zip(expanders, kernels, vectors)]
    # The normal network adds each source's expanded tensor (which includes
    # its own source) to the next block's: summing from the farthest source
    # keeps its float summation order.
    hidden = expansions[-1]
    for expansion in reversed(expansions[:-1]):
      hidden = expansion + hidden
    return hidden

  out_shape = (inputs.shape[0],) + tuple(
      architecture.conv_output_size(size, block_spec.stride) for size in inputs.shape[1:3]) + (
          block_spec.out_channels,)
  projection = _grouped_bottleneck(inputs, inner_vectors, inner_kernels, inner_group, block_spec.expanded_channels, block,
                                   block_spec.stride, out_shape, memory_split, depthwise_impl,
                                   dtype)
  output = _project_output(projection, block, bottleneck_activation, dtype)
  if add_bottleneck_shortcut:
    output = output + inputs
  return output
