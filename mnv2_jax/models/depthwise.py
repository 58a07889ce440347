"""3x3 depthwise convolution with TF-'SAME' padding, in three equivalent forms.

'xla' is XLA's grouped convolution (`feature_group_count=channels`): the right
choice on GPU/TPU, where it has dedicated kernels. On CPU that grouped
convolution is roughly 10x slower than it needs to be, so 'shifted' writes the
same operation as nine strided slices of the padded input, each multiplied by
its per-channel tap and summed; XLA fuses these into a few elementwise loops.
No library provides a fast CPU depthwise convolution for JAX, hence this code.
'ffi' (CPU only, `depthwise_ffi.py`) is a hand-written C++ kernel called
through XLA's FFI, built with the system's compiler at first use.
'auto' picks 'shifted' on CPU and 'xla' elsewhere.

Both take a `dilation` (atrous rate) for the dense-prediction backbones: tap
(i, j) then reads the input `dilation` * (i, j) pixels away, with TF-'SAME'
padding of the dilated kernel.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import depthwise_ffi, reductions
from mnv2_jax.models.architecture import KERNEL_SIZE, same_padding

DEPTHWISE_IMPLS = ('auto', 'xla', 'shifted', 'ffi')
# How the shifted form's backward sums the kernel gradient (read when the gradient is
# traced; benchmarks/model_benchmark.py --depthwise-kernel-gradient times them):
# 'nine_reductions' (one per tap), 'one_reduction' (one variadic reduction over the
# nine products) or 'row_groups' (the nine products first summed over groups of
# rows, then over the groups: `reductions.channel_sums`). Measured on a 2-core AMD
# EPYC (benchmarks/README.md): one reduction trained 1.06-1.20x faster than nine;
# row groups computed the kernel gradient alone 2-3.4x faster than one reduction.
KERNEL_GRADIENT_FORMS = ('nine_reductions', 'one_reduction', 'row_groups')
KERNEL_GRADIENT_FORM = 'row_groups'
# The input gradient of a strided layer: 'spread' correlates the output gradient
# spread out by the stride (zeros between its elements: at stride 2, 3/4 of the
# work multiplies zeros); 'polyphase' computes each residue class of input rows
# and columns from the taps that reach it, on the output gradient itself. Whole
# training steps, interleaved (2026-12-03, AMD EPYC): polyphase 0.98x at 0.35 @ 48
# batch 64, 0.96x at 1.0 @ 64 batch 32, 1.02x at 1.0 @ 224 batch 32 (its classes
# are interleaved back by a stack and reshape, which costs what the zeros did).
INPUT_GRADIENT_FORMS = ('spread', 'polyphase')
INPUT_GRADIENT_FORM = 'spread'


def resolve_depthwise_impl(impl: str) -> str:
  if impl not in DEPTHWISE_IMPLS:
    raise ValueError(f'depthwise_impl must be one of {list(DEPTHWISE_IMPLS)}, got {impl!r}.')
  if impl == 'auto':
    return 'shifted' if jax.default_backend() == 'cpu' else 'xla'
  if impl == 'ffi' and jax.default_backend() != 'cpu':
    raise ValueError(f"depthwise_impl='ffi' is a CPU kernel and the backend is "
                     f"{jax.default_backend()}; use 'auto' or 'xla'.")
  return impl


def is_cpu_form(impl: str) -> bool:
  """Whether `impl` resolves to one of the CPU forms (which also run the stem as patches)."""
  return resolve_depthwise_impl(impl) in ('shifted', 'ffi')


def depthwise_conv(inputs: jax.Array, kernel: jax.Array, stride: int, dilation: int = 1,
                   impl: str = 'auto') -> jax.Array:
  """The depthwise convolution in the form `impl` names; 'ffi' runs float32 only (else shifted)."""
  impl = resolve_depthwise_impl(impl)
  if impl == 'xla':
    return depthwise_conv_xla(inputs, kernel, stride, dilation)
  if impl == 'ffi' and inputs.dtype == jnp.float32 and kernel.dtype == jnp.float32:
    return depthwise_ffi.depthwise_conv_ffi(inputs, kernel, stride, dilation)
  return depthwise_conv_shifted(inputs, kernel, stride, dilation)


def depthwise_conv_xla(inputs: jax.Array, kernel: jax.Array, stride: int,
                       dilation: int = 1) -> jax.Array:
  """`inputs` NHWC, `kernel` (3, 3, 1, C) as Flax/XLA HWIO for grouped convolution."""
  padding = [same_padding(inputs.shape[1], stride, kernel.shape[0], dilation),
             same_padding(inputs.shape[2], stride, kernel.shape[1], dilation)]
  return jax.lax.conv_general_dilated(
      inputs, kernel, window_strides=(stride, stride), padding=padding,
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=inputs.shape[-1])


def _padded_windows(padded: jax.Array, kernel_size: tuple[int, int], stride: int,
                    out_h: int, out_w: int, dilation: int = 1):
  """Yields ((i, j), the strided slice of `padded` that tap (i, j) multiplies)."""
  for i in range(kernel_size[0]):
    for j in range(kernel_size[1]):
      top, left = i * dilation, j * dilation
      yield (i, j), jax.lax.slice(
          padded, (0, top, left, 0),
          (padded.shape[0], top + stride * (out_h - 1) + 1, left + stride * (out_w - 1) + 1,
           padded.shape[3]),
          (1, stride, stride, 1))


def _sum_of_shifted_taps(padded: jax.Array, taps: jax.Array, stride: int, out_h: int,
                         out_w: int, dilation: int = 1) -> jax.Array:
  output = None
  for (i, j), window in _padded_windows(padded, taps.shape[:2], stride, out_h, out_w, dilation):
    term = window * taps[i, j]
    output = term if output is None else output + term
  return output


def _same_padded(inputs: jax.Array, kernel_size: tuple[int, int], stride: int,
                 dilation: int) -> jax.Array:
  pad_h = same_padding(inputs.shape[1], stride, kernel_size[0], dilation)
  pad_w = same_padding(inputs.shape[2], stride, kernel_size[1], dilation)
  return jnp.pad(inputs, ((0, 0), pad_h, pad_w, (0, 0)))


def depthwise_conv_shifted_autodiff(inputs: jax.Array, kernel: jax.Array, stride: int,
                                    dilation: int = 1) -> jax.Array:
  """The sum of kernel_size**2 strided slices times per-channel taps, differentiated by JAX.

  Its automatic gradient is correct but slow on CPU (each slice's transpose is
  a pad of the full output gradient, fused with whatever produced the input);
  `depthwise_conv_shifted` has the same value with a hand-written gradient.
  """
  kernel_size = kernel.shape[:2]
  out_h, out_w = -(-inputs.shape[1] // stride), -(-inputs.shape[2] // stride)
  return _sum_of_shifted_taps(_same_padded(inputs, kernel_size, stride, dilation),
                              kernel.reshape(*kernel_size, -1), stride, out_h, out_w, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_shifted(inputs: jax.Array, kernel: jax.Array, stride: int,
                           dilation: int = 1) -> jax.Array:
  """`inputs` NHWC, `kernel` (kh, kw, 1, C); the same convolution as `depthwise_conv_xla`.

  Forward: nine strided slices of the padded input times their taps, summed.
  Backward (hand-written, see `_shifted_backward`): the input gradient is
  again a shifted depthwise convolution, and the kernel gradient the sums of
  the nine taps' products (`KERNEL_GRADIENT_FORM`).
  """
  return depthwise_conv_shifted_autodiff(inputs, kernel, stride, dilation)


def _shifted_forward(inputs, kernel, stride, dilation):
  return depthwise_conv_shifted_autodiff(inputs, kernel, stride, dilation), (inputs, kernel)


def _shifted_backward(stride, dilation, residuals, output_grad):
  """Gradients of the strided depthwise correlation y = sum_ij window_ij(pad(x)) * k_ij.

  Input gradient: x[h] feeds y[o] through tap i where
  h = stride*o + dilation*i - pad_before, so dx is the stride-1 correlation of
  the output gradient, spread out by `stride` (zeros between its elements) and
  padded, with the spatially flipped kernel at the same dilation (or, with
  `INPUT_GRADIENT_FORM = 'polyphase'`, computed by residue classes).
  Kernel gradient: dk_ij = sum over batch and positions of window_ij(pad(x)) * dy,
  accumulated in float32.
  """
  inputs, kernel = residuals
  kernel_h, kernel_w = kernel.shape[:2]
  height, width = inputs.shape[1:3]
  out_h, out_w = output_grad.shape[1:3]
  input_gradient = (_polyphase_input_gradient if stride > 1 and INPUT_GRADIENT_FORM == 'polyphase'
                    else _spread_input_gradient)
  input_grad = input_gradient(output_grad, kernel, stride, dilation, height, width)

  padded = _same_padded(inputs, (kernel_h, kernel_w), stride, dilation)
  # Materialise the padded input and the output gradient before the nine products: fused into
  # the reduction instead, their producers (the previous BN + ReLU6, this BN's gradient) were
  # recomputed for every tap. Whole training steps 1.01-1.04x faster (benchmarks/README.md).
  padded, output_grad = jax.lax.optimization_barrier((padded, output_grad))
  products = [window.astype(jnp.float32) * output_grad.astype(jnp.float32)
              for _, window in _padded_windows(padded, (kernel_h, kernel_w), stride,
                                               out_h, out_w, dilation)]
  if KERNEL_GRADIENT_FORM == 'row_groups':
    tap_grads = reductions.channel_sums(products)
  elif KERNEL_GRADIENT_FORM == 'one_reduction':
    # One variadic reduce: a single pass over the output gradient and the input
    # accumulates all nine taps, where nine separate reductions each read a
    # materialised copy of their window. Keeping the batch axis and summing it
    # after measured faster still (more independent work for XLA:CPU's threads).
    per_example = reductions.sum_together(products, (1, 2))
    tap_grads = [jnp.sum(taps, axis=0) for taps in per_example]
  else:
    tap_grads = [jnp.sum(product, axis=(0, 1, 2)) for product in products]
  kernel_grad = jnp.stack(tap_grads).reshape(kernel.shape).astype(kernel.dtype)
  return input_grad.astype(inputs.dtype), kernel_grad


def _spread_input_gradient(output_grad, kernel, stride, dilation, height, width):
  """The stride-1 correlation of the spread-out, padded output gradient with the flipped taps."""
  kernel_h, kernel_w = kernel.shape[:2]
  out_h, out_w = output_grad.shape[1:3]
  # The extent of the dilated kernel: the taps span this many input pixels.
  span_h, span_w = dilation * (kernel_h - 1) + 1, dilation * (kernel_w - 1) + 1
  pad_h = same_padding(height, stride, kernel_h, dilation)
  pad_w = same_padding(width, stride, kernel_w, dilation)
  # Pad the spread-out gradient so that the correlation with the dilated taps
  # yields exactly height x width outputs.
  before_h, before_w = span_h - 1 - pad_h[0], span_w - 1 - pad_w[0]
  after_h = height + span_h - 1 - (stride * (out_h - 1) + 1) - before_h
  after_w = width + span_w - 1 - (stride * (out_w - 1) + 1) - before_w
  spread = jax.lax.pad(output_grad, jnp.zeros((), output_grad.dtype),
                       ((0, 0, 0), (before_h, after_h, stride - 1),
                        (before_w, after_w, stride - 1), (0, 0, 0)))
  flipped_taps = kernel.reshape(kernel_h, kernel_w, -1)[::-1, ::-1]
  return _sum_of_shifted_taps(spread, flipped_taps, 1, height, width, dilation)


def _polyphase_input_gradient(output_grad, kernel, stride, dilation, height, width):
  """dx[s*a + p, s*b + q] for every residue (p, q), from the taps that reach that class.

  x[h] meets tap i at output o when h + pad_before = s*o + dilation*i, so the
  rows of residue p take tap i (if (p + pad_before - dilation*i) is a multiple
  of s) from output row a + (p + pad_before - dilation*i) / s.
  """
  kernel_h, kernel_w = kernel.shape[:2]
  taps = kernel.reshape(kernel_h, kernel_w, -1)
  pad_top = same_padding(height, stride, kernel_h, dilation)[0]
  pad_left = same_padding(width, stride, kernel_w, dilation)[0]
  rows, cols = -(-height // stride), -(-width // stride)  # per residue class, the last cropped

  def taps_of_residues(pad_before, size):
    return [[(i, (p + pad_before - dilation * i) // stride) for i in range(size)
             if (p + pad_before - dilation * i) % stride == 0] for p in range(stride)]

  row_taps, col_taps = taps_of_residues(pad_top, kernel_h), taps_of_residues(pad_left, kernel_w)
  row_offsets = [m for residue in row_taps for _, m in residue]
  col_offsets = [m for residue in col_taps for _, m in residue]
  top, left = max(0, -min(row_offsets)), max(0, -min(col_offsets))
  bottom = max(0, rows - 1 + max(row_offsets) - (output_grad.shape[1] - 1))
  right = max(0, cols - 1 + max(col_offsets) - (output_grad.shape[2] - 1))
  padded = jnp.pad(output_grad, ((0, 0), (top, bottom), (left, right), (0, 0)))
  classes = []
  for p in range(stride):
    row_of_classes = []
    for q in range(stride):
      total = jnp.zeros(output_grad.shape[:1] + (rows, cols) + output_grad.shape[3:],
                        output_grad.dtype)
      for i, m in row_taps[p]:
        for j, n in col_taps[q]:
          total = total + padded[:, top + m:top + m + rows, left + n:left + n + cols] * taps[i, j]
      row_of_classes.append(total)
    classes.append(jnp.stack(row_of_classes, axis=3))  # (N, rows, cols, q, C)
  interleaved = jnp.stack(classes, axis=2)  # (N, rows, p, cols, q, C)
  batch, channels = output_grad.shape[0], output_grad.shape[-1]
  interleaved = interleaved.reshape(batch, rows * stride, cols * stride, channels)
  return interleaved[:, :height, :width]


depthwise_conv_shifted.defvjp(_shifted_forward, _shifted_backward)


class DepthwiseConv(nn.Module):
  """3x3 depthwise convolution without bias; kernel shape (3, 3, 1, C).

  `dilation` > 1 is the atrous convolution of the dense-prediction backbones.
  """
  stride: int = 1
  impl: str = 'auto'
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.truncated_normal(stddev=0.09)
  dilation: int = 1

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    channels = inputs.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (KERNEL_SIZE, KERNEL_SIZE, 1, channels),
                        jnp.float32)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    return depthwise_conv(inputs, kernel, self.stride, self.dilation, self.impl)
