"""3x3 depthwise convolution with TF-'SAME' padding, in two equivalent forms.

'xla' is XLA's grouped convolution (`feature_group_count=channels`): the right
choice on GPU/TPU, where it has dedicated kernels. On CPU that grouped
convolution is roughly 10x slower than it needs to be, so 'shifted' writes the
same operation as nine strided slices of the padded input, each multiplied by
its per-channel tap and summed; XLA fuses these into a few elementwise loops.
No library provides a fast CPU depthwise convolution for JAX, hence this code.
'auto' picks 'shifted' on CPU and 'xla' elsewhere.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models.architecture import KERNEL_SIZE, same_padding

DEPTHWISE_IMPLS = ('auto', 'xla', 'shifted')


def resolve_depthwise_impl(impl: str) -> str:
  if impl not in DEPTHWISE_IMPLS:
    raise ValueError(f'depthwise_impl must be one of {list(DEPTHWISE_IMPLS)}, got {impl!r}.')
  if impl == 'auto':
    return 'shifted' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def depthwise_conv_xla(inputs: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`inputs` NHWC, `kernel` (3, 3, 1, C) as Flax/XLA HWIO for grouped convolution."""
  padding = [same_padding(inputs.shape[1], stride, kernel.shape[0]),
             same_padding(inputs.shape[2], stride, kernel.shape[1])]
  return jax.lax.conv_general_dilated(
      inputs, kernel, window_strides=(stride, stride), padding=padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=inputs.shape[-1])


def depthwise_conv_shifted(inputs: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The same convolution as a sum of kernel_size**2 strided slices times per-channel taps."""
  kernel_h, kernel_w = kernel.shape[0], kernel.shape[1]
  height, width = inputs.shape[1], inputs.shape[2]
  pad_h = same_padding(height, stride, kernel_h)
  pad_w = same_padding(width, stride, kernel_w)
  padded = jnp.pad(inputs, ((0, 0), pad_h, pad_w, (0, 0)))
  out_h = -(-height // stride)
  out_w = -(-width // stride)
  taps = kernel.reshape(kernel_h, kernel_w, -1)
  output = None
  for i in range(kernel_h):
    for j in range(kernel_w):
      window = jax.lax.slice(
          padded, (0, i, j, 0),
          (padded.shape[0], i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1,
           padded.shape[3]),
          (1, stride, stride, 1))
      term = window * taps[i, j]
      output = term if output is None else output + term
  return output


class DepthwiseConv(nn.Module):
  """3x3 depthwise convolution without bias; kernel shape (3, 3, 1, C)."""
  stride: int = 1
  impl: str = 'auto'
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.truncated_normal(stddev=0.09)

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    channels = inputs.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (KERNEL_SIZE, KERNEL_SIZE, 1, channels),
                        jnp.float32)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    if resolve_depthwise_impl(self.impl) == 'xla':
      return depthwise_conv_xla(inputs, kernel, self.stride)
    return depthwise_conv_shifted(inputs, kernel, self.stride)
