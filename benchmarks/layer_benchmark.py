r"""Where a training step's time goes against PyTorch: every layer's forward + backward, both engines.

For one MobileNetV2 configuration, times each layer of the network as the
training step runs it (train-mode BN, forward and backward to the input and
the parameters; the stem's to its parameters only, as the image needs no
gradient) in JAX (the project's layers: `PointwiseConv`, `DepthwiseConv`,
`BatchNorm`, ReLU6, the stem in the model's form for the backend) and in an
equivalent PyTorch layer (Conv2d + BatchNorm2d + ReLU6, channels-last), the
two engines interleaved in rounds, and prints a per-layer table and the sums
by kind of layer (stem, 1x1 expansion, 3x3 depthwise, 1x1 projection, last
1x1). Unlike a profile of the whole step, the timings are not slowed by trace
events, and each is set beside PyTorch's, so the table says which layers make
the difference between the engines' steps (model_benchmark.py --suite). The
layers alone do not add up to a step (no residual adds, classifier or
optimizer), and in the whole step XLA fuses across layer boundaries: a change
that speeds a layer up here can slow the step down (benchmarks/README.md has
two), so confirm every change on whole steps.

  python benchmarks/layer_benchmark.py --width 1.0 --resolution 224 --batch 32
  python benchmarks/layer_benchmark.py --width 0.35 --resolution 48 --batch 64 --kinds depthwise

PyTorch is needed (`pip install torch==2.13.0`, the CPU build).
"""

import collections
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_benchmark  # noqa: E402  (the allocator, timing and PyTorch helpers)
from mnv2_jax import provenance  # noqa: E402

KINDS = ('stem', 'expand', 'depthwise', 'project', 'last')


def network_layers(width: float, resolution: int, expansion_ratio: float):
  """(name, kind, input height, in channels, out channels, stride, activation) of every layer."""
  from mnv2_jax.models import architecture  # pylint: disable=import-outside-toplevel
  spec = architecture.mobilenet_v2_spec(width, expansion_ratio)
  size = -(-resolution // architecture.STEM_STRIDE)
  layers = [('stem', 'stem', resolution, 3, spec.stem_channels, architecture.STEM_STRIDE, True)]
  for block in spec.blocks:
    name = f'block{block.index}'
    if block.has_expansion:
      layers.append((f'{name}/expand', 'expand', size, block.in_channels,
                     block.expanded_channels, 1, True))
    layers.append((f'{name}/depthwise', 'depthwise', size, block.expanded_channels,
                   block.expanded_channels, block.stride, True))
    size = -(-size // block.stride)
    layers.append((f'{name}/project', 'project', size, block.expanded_channels,
                   block.out_channels, 1, False))
  layers.append(('last', 'last', size, spec.blocks[-1].out_channels, spec.last_channels, 1, True))
  return layers


class JaxLayer:
  """One layer with train-mode BN: a compiled forward + backward to the input and parameters."""

  def __init__(self, kind, size, in_channels, out_channels, stride, activation, batch):
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    from mnv2_jax.models import depthwise, layers  # pylint: disable=import-outside-toplevel

    class Layer(nn.Module):

      @nn.compact
      def __call__(self, x):
        if kind == 'depthwise':
          x = depthwise.DepthwiseConv(stride=stride)(x)
        else:
          # 'auto': the model's form on this backend (the stem as patches on CPU).
          x = layers.conv(out_channels, 3 if kind == 'stem' else 1, stride, jnp.float32, 'conv',
                          impl='auto')(x)
        x = layers.batch_norm(True, None, jnp.float32, 'bn')(x)
        return layers.relu6(x) if activation else x

    rng = np.random.default_rng(0)
    self.inputs = jnp.asarray(rng.standard_normal((batch, size, size, in_channels)), jnp.float32)
    model = Layer()
    variables = model.init(jax.random.key(0), self.inputs)
    out_size = -(-size // stride)
    cotangent = jnp.asarray(rng.standard_normal((batch, out_size, out_size, out_channels)),
                            jnp.float32)

    def forward_backward(params, batch_stats, inputs):
      def loss(params, inputs):
        outputs, updates = model.apply({'params': params, 'batch_stats': batch_stats}, inputs,
                                       mutable=['batch_stats'])
        return jnp.sum(outputs * cotangent), updates
      # The stem's input is the image, whose gradient a training step never computes.
      return jax.grad(loss, argnums=0 if kind == 'stem' else (0, 1), has_aux=True)(params, inputs)

    self.args = (variables['params'], variables['batch_stats'], self.inputs)
    self.compiled = jax.jit(forward_backward).lower(*self.args).compile()
    self.block = jax.block_until_ready

  def run(self):
    self.block(self.compiled(*self.args))


class TorchLayer:
  """The same layer in PyTorch (channels-last): Conv2d + BatchNorm2d (+ ReLU6), backward to all."""

  def __init__(self, torch, kind, size, in_channels, out_channels, stride, activation, batch):
    nn = torch.nn
    kernel = 1 if kind in ('expand', 'project', 'last') else 3
    groups = in_channels if kind == 'depthwise' else 1
    modules = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                         bias=False), nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.003)]
    if activation:
      modules.append(nn.ReLU6())
    self.layer = nn.Sequential(*modules).to(memory_format=torch.channels_last)
    self.inputs = torch.randn(batch, in_channels, size, size).contiguous(
        memory_format=torch.channels_last).requires_grad_(kind != 'stem')
    out_size = -(-size // stride)
    self.cotangent = torch.randn(batch, out_channels, out_size, out_size).contiguous(
        memory_format=torch.channels_last)

  def run(self):
    self.inputs.grad = None
    self.layer.zero_grad(set_to_none=True)
    self.layer(self.inputs).backward(self.cotangent)


def main(argv=None) -> None:
  parser = model_benchmark.workload_argument_parser(__doc__)
  parser.add_argument('--expansion-ratio', type=float, default=6)
  parser.add_argument('--kinds', default=','.join(KINDS),
                      help=f'comma-separated kinds of layer to time, of {",".join(KINDS)}')
  parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds per layer')
  parser.add_argument('--runs-per-round', type=int, default=3)
  parser.add_argument('--torch-threads', type=int, default=None)
  args = parser.parse_args(argv)
  kinds = args.kinds.split(',')
  unknown = sorted(set(kinds) - set(KINDS))
  if unknown:
    parser.error(f'--kinds: unknown {unknown}; choose from {list(KINDS)}')
  model_benchmark.allocator.reexecute_with_fast_allocator()
  torch = model_benchmark.import_torch()
  if torch is None:
    sys.exit('layer_benchmark: PyTorch is not installed (pip install torch==2.13.0, the CPU '
             'build); this benchmark compares against it.')
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  import jax  # pylint: disable=import-outside-toplevel

  print(f'{provenance.machine_description()["cpu_model"]}, jax {jax.__version__}, '
        f'torch {torch.__version__} ({torch.get_num_threads()} threads), allocator '
        f'{model_benchmark.allocator.active_allocator()}; MobileNetV2 {args.width:g}@'
        f'{args.resolution} batch {args.batch}, forward + backward per layer, median ms of '
        f'{args.rounds} x {args.runs_per_round} interleaved runs\n')
  print('| layer | input | channels | stride | JAX ms | PyTorch ms | JAX / PyTorch |\n'
        '|---|---|---|---|---|---|---|')
  by_kind = collections.defaultdict(lambda: [0.0, 0.0])
  for name, kind, size, cin, cout, stride, activation in network_layers(
      args.width, args.resolution, args.expansion_ratio):
    if kind not in kinds:
      continue
    engines = (JaxLayer(kind, size, cin, cout, stride, activation, args.batch),
               TorchLayer(torch, kind, size, cin, cout, stride, activation, args.batch))
    times = ([], [])
    for engine in engines:  # warm-up
      for _ in range(3):
        engine.run()
    for _ in range(args.rounds):
      for engine, engine_times in zip(engines, times):
        for _ in range(args.runs_per_round):
          engine_times.append(model_benchmark._time(engine.run) * 1e3)  # pylint: disable=protected-access
    jax_ms, torch_ms = (statistics.median(t) for t in times)
    by_kind[kind][0] += jax_ms
    by_kind[kind][1] += torch_ms
    print(f'| {name} | {size}x{size} | {cin} -> {cout} | {stride} | {jax_ms:.2f} | '
          f'{torch_ms:.2f} | {jax_ms / torch_ms:.2f}x |', flush=True)
  print('\n| kind | JAX ms | PyTorch ms | JAX / PyTorch | JAX - PyTorch ms |\n|---|---|---|---|---|')
  for kind in KINDS:
    if kind in by_kind:
      jax_ms, torch_ms = by_kind[kind]
      print(f'| {kind} | {jax_ms:.1f} | {torch_ms:.1f} | {jax_ms / torch_ms:.2f}x | '
            f'{jax_ms - torch_ms:+.1f} |')
  jax_total, torch_total = (sum(values[i] for values in by_kind.values()) for i in (0, 1))
  print(f'| all | {jax_total:.1f} | {torch_total:.1f} | {jax_total / torch_total:.2f}x | '
        f'{jax_total - torch_total:+.1f} |')


if __name__ == '__main__':
  main()
