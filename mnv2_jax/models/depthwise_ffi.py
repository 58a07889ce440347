"""The depthwise convolution as a hand-written CPU kernel called through XLA's FFI ('ffi').

`mnv2_jax/kernels/depthwise_cpu.cc` holds three kernels (forward, input
gradient, kernel gradient; float32 NHWC, any stride and dilation). They are
compiled with the system's C++ compiler the first time a process needs them,
for the machine at hand (-march=native), into a cache keyed by the source, the
jaxlib version and the CPU, so that later processes load the library at once:
`$MNV2_JAX_KERNEL_CACHE`, else `~/.cache/mnv2_jax/kernels`. `$CXX` names the
compiler (default g++; OpenMP needed). Why a build step at first use rather
than at `pip install`: the package stays pure Python, and a machine without a
compiler still trains with the 'shifted' form; asking for 'ffi' there fails
with one line naming what is missing.

Same value as `depthwise.depthwise_conv_shifted` (tests/test_depthwise_ffi.py
holds both forms and both gradients equal); float32 only: other dtypes take
the shifted form.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from mnv2_jax.models.architecture import same_padding

SOURCE = pathlib.Path(__file__).resolve().parent.parent / 'kernels' / 'depthwise_cpu.cc'
TARGETS = ('mnv2_depthwise_forward', 'mnv2_depthwise_input_grad', 'mnv2_depthwise_kernel_grad')


class KernelUnavailable(RuntimeError):
  """The FFI kernels could not be built or loaded here (the message says why and what to do)."""


def _cpu_signature() -> str:
  """The CPU model and flags: -march=native code is only valid on the CPU it was built for."""
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      lines = [line for line in cpuinfo if line.startswith(('model name', 'flags'))][:2]
  except OSError:
    lines = [platform.processor()]
  return ''.join(lines)


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('MNV2_JAX_KERNEL_CACHE')
                      or pathlib.Path.home() / '.cache' / 'mnv2_jax' / 'kernels')


def _library_path(compiler: str) -> pathlib.Path:
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), jaxlib.__version__.encode(), _cpu_signature().encode(),
               compiler.encode()):
    key.update(part)
  return cache_dir() / f'depthwise_cpu-{key.hexdigest()[:16]}.so'


def _build(library: pathlib.Path, compiler: str) -> None:
  library.parent.mkdir(parents=True, exist_ok=True)
  # Build beside the target and rename: processes building at once never load half a file.
  with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
    built = pathlib.Path(scratch) / library.name
    command = [compiler, '-O3', '-march=native', '-fopenmp', '-shared', '-fPIC', '-std=c++17',
               '-w', f'-I{jax.ffi.include_dir()}', str(SOURCE), '-o', str(built)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      last = (result.stderr.strip().splitlines() or ['(no message)'])[-1]
      raise KernelUnavailable(f"depthwise_impl='ffi': compiling {SOURCE.name} failed ({last}); "
                              "use depthwise_impl='shifted', or fix the compiler ($CXX, OpenMP).")
    os.replace(built, library)


@functools.cache
def load() -> None:
  """Builds (once per machine) and registers the kernels with XLA:CPU; raises KernelUnavailable."""
  compiler = os.environ.get('CXX', 'g++')
  if shutil.which(compiler) is None:
    raise KernelUnavailable(f"depthwise_impl='ffi' needs a C++ compiler with OpenMP to build its "
                            f"CPU kernel, and {compiler!r} was not found; install one (Debian: "
                            "apt-get install g++) or use depthwise_impl='shifted'.")
  library_path = _library_path(compiler)
  if not library_path.exists():
    _build(library_path, compiler)
  library = ctypes.cdll.LoadLibrary(str(library_path))
  for target in TARGETS:
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                platform='cpu')


def available() -> bool:
  try:
    load()
  except KernelUnavailable:
    return False
  return True


def _geometry(height: int, width: int, kernel_shape, stride: int, dilation: int) -> dict:
  """The kernels' attributes: TF-'SAME' padding before the first row and column."""
  pad_top = same_padding(height, stride, kernel_shape[0], dilation)[0]
  pad_left = same_padding(width, stride, kernel_shape[1], dilation)[0]
  return dict(stride=stride, dilation=dilation, pad_top=pad_top, pad_left=pad_left)


def _call(target: str, result_shape, *operands, **geometry) -> jax.Array:
  # Under vmap (e.g. per-example gradients) the kernels run once per mapped element: they
  # take NHWC arrays only.
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(result_shape, jnp.float32),
                          vmap_method='sequential')(
      *operands, **{name: np.int64(value) for name, value in geometry.items()})


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_ffi(inputs: jax.Array, kernel: jax.Array, stride: int,
                       dilation: int = 1) -> jax.Array:
  """`inputs` NHWC float32, `kernel` (kh, kw, 1, C); the same as `depthwise_conv_shifted`."""
  return _forward(inputs, kernel, stride, dilation)[0]


def _forward(inputs, kernel, stride, dilation):
  load()
  batch, height, width, channels = inputs.shape
  out_shape = (batch, -(-height // stride), -(-width // stride), channels)
  geometry = _geometry(height, width, kernel.shape, stride, dilation)
  output = _call(TARGETS[0], out_shape, inputs, kernel.reshape(*kernel.shape[:2], channels),
                 **geometry)
  return output, (inputs, kernel)


def _backward(stride, dilation, residuals, output_grad):
  inputs, kernel = residuals
  height, width, channels = inputs.shape[1:]
  geometry = _geometry(height, width, kernel.shape, stride, dilation)
  taps = kernel.reshape(*kernel.shape[:2], channels)
  input_grad = _call(TARGETS[1], inputs.shape, output_grad, taps, **geometry)
  kernel_grad = _call(TARGETS[2], taps.shape, inputs, output_grad, **geometry)
  return input_grad, kernel_grad.reshape(kernel.shape)


depthwise_conv_ffi.defvjp(_forward, _backward)
