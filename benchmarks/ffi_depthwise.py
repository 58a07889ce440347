r"""Would a hand-written depthwise kernel beat the 'shifted' form? A forward-only probe.

Compiles `ffi_depthwise.cc` (a plain C++ 3x3 depthwise convolution, NHWC,
stride 1, rows shared out by OpenMP) with the system's g++, registers it with
XLA:CPU through `jax.ffi`, and times the forward pass at MobileNetV2's stride-1
depthwise shapes, interleaved in one process:

- `shifted`: the project's CPU form (`depthwise.depthwise_conv_shifted`);
- `ffi`: the hand-written kernel;
- as in the network, after the previous layer's BN + ReLU6 (a per-channel
  affine and a clip): `shifted` with that producer (XLA fuses it into the
  taps), `ffi` after it (the producer becomes its own pass over memory, as in
  PyTorch), and `fused ffi` (the kernel applies it to each input row itself);
- PyTorch's channels-last depthwise `Conv2d` (oneDNN) when torch is installed.

A second table times forward + backward as training runs it (the gradient of
sum(y * g) for the input before BN + ReLU6 and for the kernel): `shifted`
with its hand-written gradient against the kernel with two more calls for the
backward pass (the input gradient is the forward kernel with the taps
flipped; the kernel gradient sums the nine taps' products per thread), the
producer and its gradient left to XLA.

Every form is checked equal to `shifted` (float32, 1e-5 relative to the
output's scale) before it is timed. Stride 1 only, and not used by the
package (benchmarks/README.md says what it measured and what is missing).

  python benchmarks/ffi_depthwise.py
  python benchmarks/ffi_depthwise.py --shapes 32x112x112x32,32x14x14x576 --runs 30

Needs g++ with OpenMP (Debian: `apt-get install g++`) and jaxlib's FFI headers
(shipped with jaxlib).
"""

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_benchmark  # noqa: E402  (the allocator, machine and PyTorch helpers)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ffi_depthwise.cc')
# MobileNetV2 1.0 @ 224 batch 32: the stride-1 depthwise layers' inputs, and one at 64 px.
DEFAULT_SHAPES = ('32x112x112x32', '32x56x56x144', '32x28x28x192', '32x14x14x576',
                  '32x7x7x960', '32x16x16x192')


def build_kernel(directory: str) -> str:
  """Compiles the kernel for this machine; returns the shared library's path."""
  import jax  # pylint: disable=import-outside-toplevel
  compiler = shutil.which('g++')
  if compiler is None:
    sys.exit('ffi_depthwise.py: g++ not found; install it (Debian: apt-get install g++).')
  library = os.path.join(directory, 'libffi_depthwise.so')
  subprocess.run([compiler, '-O3', '-march=native', '-fopenmp', '-shared', '-fPIC', '-std=c++17',
                  '-w', f'-I{jax.ffi.include_dir()}', SOURCE, '-o', library], check=True)
  return library


def median_ms(fn, runs: int) -> float:
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shapes', default=','.join(DEFAULT_SHAPES),
                      help='comma-separated NxHxWxC inputs of stride-1 3x3 depthwise layers')
  parser.add_argument('--runs', type=int, default=20, help='timed calls per form and round')
  parser.add_argument('--rounds', type=int, default=3, help='rounds over the forms (interleaved)')
  args = parser.parse_args(argv)
  shapes = [tuple(int(n) for n in shape.split('x')) for shape in args.shapes.split(',')]
  if any(len(shape) != 4 for shape in shapes):
    parser.error(f'--shapes: each shape is NxHxWxC, got {args.shapes!r}')
  model_benchmark.allocator.reexecute_with_fast_allocator()

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mnv2_jax.models import depthwise  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as directory:
    library = ctypes.cdll.LoadLibrary(build_kernel(directory))
  for name in ('depthwise_forward', 'depthwise_fused_forward', 'depthwise_kernel_grad'):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform='cpu')
  torch = model_benchmark.import_torch()
  machine = model_benchmark.machine_description()
  print(f'{machine["cpu_model"]} ({machine["cpu_count"]} CPUs; {" ".join(machine["cpu_flags"])}), '
        f'jax {jax.__version__}, '
        + (f'torch {torch.__version__} ({torch.get_num_threads()} threads), ' if torch else '')
        + f'allocator {model_benchmark.allocator.active_allocator()}, '
        f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "(unset)")}')

  def producer(x, scale, shift):  # the previous layer's BN + ReLU6
    return jnp.clip(x * scale + shift, 0.0, 6.0)

  def ffi_forward(x, kernel):
    return jax.ffi.ffi_call('depthwise_forward', jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x, kernel.reshape(9, -1))

  def ffi_fused_forward(x, scale, shift, kernel):
    return jax.ffi.ffi_call('depthwise_fused_forward', jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x, scale, shift, kernel.reshape(9, -1))

  @jax.custom_vjp
  def ffi_depthwise(x, kernel):
    return ffi_forward(x, kernel)

  def ffi_depthwise_forward(x, kernel):
    return ffi_forward(x, kernel), (x, kernel)

  def ffi_depthwise_backward(residuals, output_grad):
    x, kernel = residuals
    input_grad = ffi_forward(output_grad, kernel[::-1, ::-1])
    kernel_grad = jax.ffi.ffi_call(
        'depthwise_kernel_grad', jax.ShapeDtypeStruct((9, x.shape[-1]), x.dtype))(x, output_grad)
    return input_grad, kernel_grad.reshape(kernel.shape)

  ffi_depthwise.defvjp(ffi_depthwise_forward, ffi_depthwise_backward)

  def training(convolution):
    def loss(x, scale, shift, kernel, weights):
      return jnp.sum(convolution(producer(x, scale, shift), kernel) * weights)
    return jax.grad(loss, argnums=(0, 3))

  training_forms = {
      'shifted': training(lambda x, k: depthwise.depthwise_conv_shifted(x, k, 1)),
      'ffi': training(ffi_depthwise),
  }

  forms = {
      'shifted': lambda x, s, b, k: depthwise.depthwise_conv_shifted(x, k, 1),
      'ffi': lambda x, s, b, k: ffi_forward(x, k),
      'BN+ReLU6, shifted': lambda x, s, b, k: depthwise.depthwise_conv_shifted(
          producer(x, s, b), k, 1),
      'BN+ReLU6, ffi': lambda x, s, b, k: ffi_forward(producer(x, s, b), k),
      'BN+ReLU6, fused ffi': ffi_fused_forward,
  }
  rows = []
  for shape in shapes:
    rng = np.random.default_rng(0)
    channels = shape[-1]
    arrays = [rng.standard_normal(shape, np.float32), rng.uniform(0.5, 1.5, channels).astype(
        np.float32), rng.uniform(-0.5, 0.5, channels).astype(np.float32),
              rng.standard_normal((3, 3, 1, channels), np.float32)]
    x, scale, shift, kernel = map(jnp.asarray, arrays)
    compiled = {name: jax.jit(form) for name, form in forms.items()}
    for name, fn in compiled.items():  # equal to the reference before anything is timed
      reference = compiled['BN+ReLU6, shifted' if name.startswith('BN') else 'shifted']
      want, got = reference(x, scale, shift, kernel), fn(x, scale, shift, kernel)
      error = float(jnp.max(jnp.abs(want - got)) / jnp.max(jnp.abs(want)))
      if error > 1e-5:
        sys.exit(f'ffi_depthwise.py: {name} differs from the shifted form at {shape}: {error:.1e}')
    weights = jnp.asarray(rng.standard_normal(shape, np.float32))
    compiled_training = {name: jax.jit(form) for name, form in training_forms.items()}
    want = compiled_training['shifted'](x, scale, shift, kernel, weights)
    got = compiled_training['ffi'](x, scale, shift, kernel, weights)
    for name, a, b in zip(('input', 'kernel'), want, got):
      error = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
      if error > 1e-5:
        sys.exit(f'ffi_depthwise.py: the {name} gradient differs from the shifted form\'s at '
                 f'{shape}: {error:.1e}')
    calls = {name: (lambda fn=fn: jax.block_until_ready(fn(x, scale, shift, kernel)))
             for name, fn in compiled.items()}
    calls.update({f'train: {name}': (
        lambda fn=fn: jax.block_until_ready(fn(x, scale, shift, kernel, weights)))
                  for name, fn in compiled_training.items()})
    if torch is not None:
      torch_input = torch.from_numpy(arrays[0].copy()).permute(0, 3, 1, 2).contiguous(
          memory_format=torch.channels_last)
      conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
      conv = conv.to(memory_format=torch.channels_last)

      def torch_call():
        with torch.no_grad():
          conv(torch_input)
      calls['torch'] = torch_call
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
      for name, call in calls.items():
        times[name].append(median_ms(call, args.runs))
    rows.append((shape, {name: statistics.median(values) for name, values in times.items()}))

  names = [name for name in rows[0][1] if not name.startswith('train: ')]
  print('\nforward, median ms (median over rounds); time ratios against `shifted` in the same '
        'producer setting\n')
  print('| input | ' + ' | '.join(names) +
        ' | time: ffi / shifted | time: fused ffi / shifted (BN+ReLU6) |')
  print('|---' * (len(names) + 3) + '|')
  for shape, ms in rows:
    print(f'| {"x".join(map(str, shape))} | ' + ' | '.join(f'{ms[n]:.2f}' for n in names)
          + f' | {ms["ffi"] / ms["shifted"]:.2f}x'
          + f' | {ms["BN+ReLU6, fused ffi"] / ms["BN+ReLU6, shifted"]:.2f}x |')
  print('\nforward + backward after BN + ReLU6 (gradients for the input and the kernel), '
        'median ms\n')
  print('| input | shifted | ffi | time: ffi / shifted |')
  print('|---|---|---|---|')
  for shape, ms in rows:
    print(f'| {"x".join(map(str, shape))} | {ms["train: shifted"]:.2f} | {ms["train: ffi"]:.2f} '
          f'| {ms["train: ffi"] / ms["train: shifted"]:.2f}x |')


if __name__ == '__main__':
  main()
