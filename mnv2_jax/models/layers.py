"""Building blocks shared by the MobileNet modules: conv + BN + activation.

1x1 convolutions (every expansion, projection and pointwise layer: nearly all
of the network's multiply-adds) are written as matrix products over the
channel axis, with a hand-written gradient. It is the same operation and the
same (1, 1, in, out) kernel as `nn.Conv`, but XLA:CPU runs a convolution's
weight gradient 2-6x slower than the equivalent matrix product (measured at
batch 32 on the 56x56 and 112x112 layers), and the weight gradient that JAX
derives from a plain `dot_general` is contracted in an order that XLA:CPU
also runs ~3x slower than `inputs^T @ output_grad` (benchmarks/README.md).
On GPU/TPU a 1x1 convolution is a matrix product too, so nothing changes there.

The stem's 3x3 stride-2 convolution of the 3-channel image is, on CPU (the
'shifted' depthwise form, which 'auto' picks there), one matrix product over
its 27-value patches: XLA:CPU's convolution of a 3-channel input and its
kernel gradient took 2-3x longer (benchmarks/README.md). Same kernel, same
parameters; GPU/TPU and export keep `nn.Conv`.
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnv2_jax.models import architecture
from mnv2_jax.models.batch_norm import BatchNorm
from mnv2_jax.models.depthwise import DEPTHWISE_IMPLS, is_cpu_form

# The official TF-Slim initialiser for every convolution, depthwise and logits kernel.
kernel_init = nn.initializers.truncated_normal(stddev=0.09)

# Kernel initialisers a config can name (`config.model.kernel_init`):
#   'truncated_normal' - the official TF-Slim one above, the same stddev for
#                        every layer whatever its fan-in;
#   'fan_in'           - He et al. 2015 variance scaling (2 / fan-in, truncated
#                        normal), which keeps the activations' scale through
#                        ReLU layers; a CPU-scale option (results/cpu/PROTOCOL.md).
KERNEL_INITS = {
    'truncated_normal': kernel_init,
    'fan_in': nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal'),
}

# BN as in the official network: decay 0.997, epsilon 1e-3, with scale and bias.
BATCH_NORM_MOMENTUM = 0.997
BATCH_NORM_EPSILON = 1e-3


def validate_layer_options(depthwise_impl: str, batch_norm_momentum: float,
                           kernel_init: str = 'truncated_normal') -> None:
  """Checks the options every network passes to these building blocks (one ValueError line)."""
  architecture.validate_choice('depthwise_impl', depthwise_impl, DEPTHWISE_IMPLS)
  architecture.validate_choice('kernel_init', kernel_init, tuple(KERNEL_INITS))
  architecture.validate_batch_norm_momentum(batch_norm_momentum)


def relu6(x: jax.Array) -> jax.Array:
  return jnp.minimum(jnp.maximum(x, 0), 6)


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any, name: str,
               momentum: float = BATCH_NORM_MOMENTUM, zero_scale: bool = False) -> BatchNorm:
  """BN over the batch; `axis_name` set means statistics are averaged across devices.

  `momentum` is the decay of the moving averages used at evaluation; the
  official 0.997 needs thousands of steps, short runs need a smaller one.
  `zero_scale` starts the scale (gamma) at 0 instead of 1, so the layer's
  output starts at its bias (0): for the last BN of a residual branch this
  makes the block start as the identity (Goyal et al. 2017). The module is
  `nn.BatchNorm`'s variables and values with a faster gradient (batch_norm.py).
  """
  return BatchNorm(use_running_average=not train, momentum=momentum,
                   epsilon=BATCH_NORM_EPSILON, axis_name=axis_name if train else None,
                   dtype=dtype,
                   scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
                   name=name)


@jax.custom_vjp
def pointwise_conv(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution of NHWC `inputs` with a (1, 1, in, out) kernel, as a matrix product."""
  return jax.lax.dot_general(inputs, kernel[0, 0], (((inputs.ndim - 1,), (0,)), ((), ())))


def _pointwise_conv_forward(inputs, kernel):
  return pointwise_conv(inputs, kernel), (inputs, kernel)


def _pointwise_conv_backward(residuals, output_grad):
  inputs, kernel = residuals
  in_channels, out_channels = kernel.shape[2:]
  # d inputs = output_grad @ kernel^T, over the channel axis.
  input_grad = jax.lax.dot_general(output_grad, kernel[0, 0],
                                   (((output_grad.ndim - 1,), (1,)), ((), ())))
  # d kernel = inputs^T @ output_grad with every position (batch x height x
  # width) as the contracted axis, in this operand order (see the module docstring).
  kernel_grad = (jnp.transpose(inputs.reshape(-1, in_channels))
                 @ output_grad.reshape(-1, out_channels))
  return input_grad, kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_conv_forward, _pointwise_conv_backward)


class PointwiseConv(nn.Module):
  """1x1 convolution without bias: the parameters of `nn.Conv(features, (1, 1))`."""
  features: int
  dtype: Any = jnp.float32
  kernel_init: Any = kernel_init

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init, (1, 1, inputs.shape[-1], self.features),
                        jnp.float32)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    return pointwise_conv(inputs, kernel)


def same_patches(inputs: jax.Array, kernel_size: int, stride: int) -> jax.Array:
  """The TF-'SAME' k x k patches of NHWC `inputs` at `stride`, (N, H', W', k*k*C).

  Tap (i, j)'s channels sit at (i * k + j) * C + c, the order of an HWIO
  kernel reshaped to (k*k*C, out).
  """
  batch, height, width, channels = inputs.shape
  out_h, out_w = -(-height // stride), -(-width // stride)
  padded = jnp.pad(inputs, ((0, 0), architecture.same_padding(height, stride, kernel_size),
                            architecture.same_padding(width, stride, kernel_size), (0, 0)))
  taps = [jax.lax.slice(padded, (0, i, j, 0),
                        (batch, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1,
                         channels), (1, stride, stride, 1))
          for i in range(kernel_size) for j in range(kernel_size)]
  return jnp.concatenate(taps, axis=-1)


def patches_conv(inputs: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A k x k convolution with TF-'SAME' padding as one matrix product over its k*k*in patches.

  Worth it for few input channels only: the patches are k*k times the input.
  """
  kernel_size, _, in_channels, out_channels = kernel.shape
  return pointwise_conv(same_patches(inputs, kernel_size, stride),
                        kernel.reshape(1, 1, kernel_size * kernel_size * in_channels,
                                       out_channels))


class PatchesConv(nn.Module):
  """A k x k convolution without bias as `patches_conv`: the parameters of `nn.Conv`."""
  features: int
  kernel_size: int
  stride: int
  dtype: Any = jnp.float32
  kernel_init: Any = kernel_init

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.kernel_size, self.kernel_size, inputs.shape[-1], self.features),
                        jnp.float32)
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=self.dtype)
    return patches_conv(inputs, kernel, self.stride)


def conv(features: int, kernel_size: int, stride: int, dtype: Any, name: str,
         init: Any = kernel_init, impl: str = 'xla') -> nn.Module:
  """A convolution without bias; a CPU depthwise form (`is_cpu_form`) runs a k x k one as patches."""
  if kernel_size == 1 and stride == 1:
    return PointwiseConv(features, dtype=dtype, kernel_init=init, name=name)
  if is_cpu_form(impl):
    return PatchesConv(features, kernel_size, stride, dtype=dtype, kernel_init=init, name=name)
  # Flax 'SAME' is TF 'SAME': for stride 2 on an even input it pads 0 before and 1 after.
  return nn.Conv(features, (kernel_size, kernel_size), strides=(stride, stride), padding='SAME',
                 use_bias=False, kernel_init=init, dtype=dtype,
                 param_dtype=jnp.float32, name=name)
