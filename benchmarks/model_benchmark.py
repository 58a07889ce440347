r"""Compile time, training throughput and batch-1 latency of a MobileNet configuration.

For each depthwise implementation given, the script builds the Flax model and
reports
  * compile time of the training step (lowering + XLA compilation),
  * training throughput: images/s of a full step (forward, backward, RMSProp
    update with the TF1 settings of the paper, BN in train mode), the median
    over the timed steps after warm-up,
  * batch-1 inference latency (train=False), median milliseconds.
With `--torch` it also times an equivalent PyTorch MobileNetV2 (written below:
same layers, channels-last, same batch, RMSProp) in the same process, and
prints the JAX/PyTorch throughput ratio. PyTorch is optional: without it that
part is skipped with a message.

The timed steps of all engines are interleaved in rounds (engine A, engine B,
..., then again). Load from other processes does not hit them alike, though:
PyTorch's OpenMP threads lose far more than XLA's thread pool when another
process takes a core (benchmarks/README.md), so compare on an idle machine.

Allocator: XLA:CPU allocates its buffers afresh for every execution, and with
glibc's malloc every step page-faults its working set again. Unless
`--system-malloc` is given, the script restarts itself once as the training
entry point does (`mnv2_jax/allocator.py`): with jemalloc preloaded when the
system has it, else with glibc's huge-page tunable. It applies to PyTorch in
the same process alike; the report records which allocator was active.

`--suite` times a fixed set of workloads instead (the sweeps' training sizes and
1.0@224, batch-1 latency at two sizes, memory-efficient inference) and prints
the JAX/PyTorch ratios against their targets as markdown tables
(benchmarks/README.md keeps the latest).

Examples:
  python benchmarks/model_benchmark.py --suite
  python benchmarks/model_benchmark.py --width 1.0 --resolution 224 --batch 32 \
      --depthwise-impl xla,shifted --torch
  python benchmarks/model_benchmark.py --width 0.35 --resolution 96 --batch 8 --json
"""

import argparse
import contextlib
import functools
import hashlib
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional

from mnv2_jax import allocator
from mnv2_jax import provenance


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='mobilenet_v2', choices=['mobilenet_v2', 'mobilenet_v1'])
  parser.add_argument('--width', type=float, default=1.0, help='width multiplier')
  parser.add_argument('--expansion-ratio', type=float, default=6,
                      help='t of every block but the first (MobileNetV2 only)')
  parser.add_argument('--depthwise-impl', default='auto',
                      help="comma-separated list of 'xla', 'shifted', 'ffi', 'auto'; each is timed")
  parser.add_argument('--batch-norm', default='fused',
                      help="comma-separated: 'fused' (the model's BatchNorm, hand-written "
                           "gradient) and/or 'flax' (the same model with flax's nn.BatchNorm, "
                           "the reference it was measured against)")
  parser.add_argument('--depthwise-kernel-gradient', default=None,
                      help="comma-separated forms of the shifted depthwise kernel gradient to "
                           "time: 'nine_reductions', 'one_reduction', 'row_groups' (default: the model's)")
  parser.add_argument('--batch-norm-sums', default=None,
                      help="comma-separated ways for the fused BN to sum over the activations: "
                           "'reduce', 'row_groups' (default: the model's)")
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--batch', type=int, default=32, help='training batch size')
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--warmup-steps', type=int, default=2,
                      help='untimed training steps per engine after compilation')
  parser.add_argument('--rounds', type=int, default=3,
                      help='rounds of interleaved timing over all engines')
  parser.add_argument('--steps-per-round', type=int, default=2,
                      help='timed training steps per engine and round')
  parser.add_argument('--latency-runs', type=int, default=20,
                      help='timed batch-1 inference calls per engine')
  parser.add_argument('--skip-latency', action='store_true', help='do not time batch-1 inference')
  parser.add_argument('--torch', action='store_true',
                      help='also time an equivalent PyTorch MobileNetV2 (if torch is installed)')
  parser.add_argument('--torch-threads', type=int, default=None,
                      help='torch.set_num_threads (default: PyTorch\'s own choice)')
  parser.add_argument('--system-malloc', action='store_true',
                      help='do not restart with jemalloc or glibc huge pages (the allocator '
                           'the process was started with is kept)')
  parser.add_argument('--json', action='store_true', help='print the results as JSON')
  parser.add_argument('--suite', action='store_true',
                      help='time the fixed set of workloads (training at the sweep sizes and '
                           '1.0@224, batch-1 latency, memory_split) against PyTorch when '
                           'installed; --width/--resolution/--batch/--torch are then ignored')
  args = parser.parse_args(argv)
  impls = [impl.strip() for impl in args.depthwise_impl.split(',') if impl.strip()]
  for impl in impls:
    if impl not in ('xla', 'shifted', 'ffi', 'auto'):
      parser.error(f"--depthwise-impl: unknown {impl!r}; use a comma-separated list of "
                   f"'xla', 'shifted', 'ffi', 'auto'.")
  if not impls:
    parser.error("--depthwise-impl is empty; give e.g. 'shifted' or 'xla,shifted'.")
  args.depthwise_impls = impls
  args.batch_norms = [name.strip() for name in args.batch_norm.split(',') if name.strip()]
  if not args.batch_norms or set(args.batch_norms) - {'fused', 'flax'}:
    parser.error(f"--batch-norm: {args.batch_norm!r}; use 'fused', 'flax' or 'fused,flax'.")
  from mnv2_jax.models import depthwise  # pylint: disable=import-outside-toplevel
  args.kernel_gradients = ([depthwise.KERNEL_GRADIENT_FORM] if args.depthwise_kernel_gradient
                           is None else [name.strip() for name in
                                         args.depthwise_kernel_gradient.split(',')
                                         if name.strip()])
  if not args.kernel_gradients or set(args.kernel_gradients) - set(
      depthwise.KERNEL_GRADIENT_FORMS):
    parser.error(f'--depthwise-kernel-gradient: {args.depthwise_kernel_gradient!r}; use a '
                 f'comma-separated list of {list(depthwise.KERNEL_GRADIENT_FORMS)}.')
  from mnv2_jax.models import batch_norm  # pylint: disable=import-outside-toplevel
  args.batch_norm_sum_forms = ([batch_norm.SUM_FORM] if args.batch_norm_sums is None else
                               [name.strip() for name in args.batch_norm_sums.split(',')
                                if name.strip()])
  if not args.batch_norm_sum_forms or set(args.batch_norm_sum_forms) - set(batch_norm.SUM_FORMS):
    parser.error(f'--batch-norm-sums: {args.batch_norm_sums!r}; use a comma-separated list of '
                 f'{list(batch_norm.SUM_FORMS)}.')
  for name in ('batch', 'rounds', 'steps_per_round', 'latency_runs', 'num_classes'):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
  if args.warmup_steps < 0:
    parser.error(f'--warmup-steps must be >= 0, got {args.warmup_steps}.')
  if args.resolution < 32:
    parser.error(f'--resolution must be >= 32 (the networks downsample 32x), '
                 f'got {args.resolution}.')
  if args.width <= 0:
    parser.error(f'--width must be > 0, got {args.width}.')
  if args.torch and args.model != 'mobilenet_v2':
    parser.error('--torch compares MobileNetV2 only; drop --torch or use --model mobilenet_v2.')
  return args


# ----------------------------------------------------------------------------- JAX


@contextlib.contextmanager
def _model_variant(batch_norm: str, kernel_gradient: Optional[str],
                   batch_norm_sums: Optional[str] = None):
  """While tracing: 'flax' builds the BN layers as flax's nn.BatchNorm (models/batch_norm.py's
  reference: the same variables and values, the gradient JAX derives); `kernel_gradient`
  sets the shifted depthwise kernel gradient's form and `batch_norm_sums` the fused BN's
  way of summing (None: the model's)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from mnv2_jax.models import batch_norm as fused_batch_norm  # pylint: disable=import-outside-toplevel
  from mnv2_jax.models import depthwise, layers  # pylint: disable=import-outside-toplevel
  saved = layers.BatchNorm, depthwise.KERNEL_GRADIENT_FORM, fused_batch_norm.SUM_FORM
  if batch_norm == 'flax':
    layers.BatchNorm = functools.partial(nn.BatchNorm, param_dtype=jnp.float32)
  if kernel_gradient is not None:
    depthwise.KERNEL_GRADIENT_FORM = kernel_gradient
  if batch_norm_sums is not None:
    fused_batch_norm.SUM_FORM = batch_norm_sums
  try:
    yield
  finally:
    layers.BatchNorm, depthwise.KERNEL_GRADIENT_FORM, fused_batch_norm.SUM_FORM = saved


class JaxEngine:
  """One Flax model configuration: a compiled training step and batch-1 inference."""

  def __init__(self, args: argparse.Namespace, depthwise_impl: str, train: bool = True,
               memory_split: int = 1, batch_norm: str = 'fused',
               kernel_gradient: Optional[str] = None, batch_norm_sums: Optional[str] = None):
    # Everything is traced and compiled here, so the variant chosen holds for the engine.
    with _model_variant(batch_norm, kernel_gradient, batch_norm_sums):
      self._build(args, depthwise_impl, train, memory_split, batch_norm, kernel_gradient,
                  batch_norm_sums)

  def _build(self, args, depthwise_impl, train, memory_split, batch_norm, kernel_gradient,
             batch_norm_sums):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from mnv2_jax import models
    from mnv2_jax.models.depthwise import resolve_depthwise_impl

    self.name = f'jax/{depthwise_impl}'
    if depthwise_impl == 'auto':
      self.name += f'({resolve_depthwise_impl("auto")})'
    if batch_norm == 'flax':
      self.name += '/flax-bn'
    if kernel_gradient is not None:
      self.name += f'/{kernel_gradient}'
    if batch_norm_sums is not None:
      self.name += f'/bn-{batch_norm_sums}'
    self.batch = args.batch
    dtype = jnp.bfloat16 if args.dtype == 'bfloat16' else jnp.float32
    kwargs = dict(num_classes=args.num_classes, width_multiplier=args.width,
                  depthwise_impl=depthwise_impl, dtype=dtype)
    if args.model == 'mobilenet_v2':
      kwargs['expansion_ratio'] = args.expansion_ratio
    model = models.MODELS[args.model](**kwargs)
    rng = np.random.default_rng(0)
    self.images = jnp.asarray(
        rng.uniform(-1, 1, (args.batch, args.resolution, args.resolution, 3)), jnp.float32)
    self.labels = jnp.asarray(rng.integers(0, args.num_classes, args.batch), jnp.int32)
    variables = jax.jit(lambda: model.init(jax.random.key(0), self.images[:1], train=False))()
    if memory_split > 1:
      self.name += f'/memory_split={memory_split}'
      inference_model = model.clone(memory_split=memory_split)
    else:
      inference_model = model
    # TF1 RMSProp as in the paper's recipe (decay 0.9, momentum 0.9, eps 1.0 inside the sqrt).
    optimizer = optax.rmsprop(0.045 * args.batch / 96, decay=0.9, eps=1.0, initial_scale=1.0,
                              eps_in_sqrt=True, momentum=0.9)

    def train_step(params, batch_stats, opt_state, images, labels, step):
      def loss_fn(params):
        logits, updates = model.apply(
            {'params': params, 'batch_stats': batch_stats}, images, train=True,
            mutable=['batch_stats'], rngs={'dropout': jax.random.fold_in(jax.random.key(1), step)})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates['batch_stats']
      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    self.compile_seconds = None
    if train:
      self.state = (variables['params'], variables['batch_stats'],
                    optimizer.init(variables['params']))
      start = time.perf_counter()
      self._train_step = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(
          *self.state, self.images, self.labels, 0).compile()
      self.compile_seconds = time.perf_counter() - start
    self._step = 0

    image = self.images[:1]
    start = time.perf_counter()
    self._infer = jax.jit(
        lambda variables, image: inference_model.apply(variables, image, train=False)).lower(
            variables, image).compile()
    self.inference_compile_seconds = time.perf_counter() - start
    self._inference_args = (jax.tree.map(jnp.copy, variables), image)
    self._block = jax.block_until_ready

  def train_step(self) -> float:
    """Runs one training step to completion; returns the loss."""
    params, batch_stats, opt_state, loss = self._train_step(
        *self.state, self.images, self.labels, self._step)
    self.state = (params, batch_stats, opt_state)
    self._step += 1
    return float(self._block(loss))

  def infer_one(self) -> None:
    self._block(self._infer(*self._inference_args))

  def compiled_train_step_text(self) -> str:
    """The optimised HLO of the compiled training step (for profiles and fingerprints)."""
    return self._train_step.as_text()


# ----------------------------------------------------------------------------- PyTorch


def build_torch_mobilenet_v2(torch, width: float, expansion_ratio: float, num_classes: int):
  """MobileNetV2 in PyTorch with the layers of `mnv2_jax.models.MobileNetV2`.

  Same channels (from the shared architecture table), BN (momentum 0.003 in
  PyTorch's convention = decay 0.997, eps 1e-3), ReLU6, residuals, dropout 0.2
  and classifier. Padding is symmetric (PyTorch has no 'SAME'); for the
  stride-2 layers on even inputs this shifts the window by one pixel but gives
  the same output sizes and the same number of operations.
  """
  from mnv2_jax.models import architecture
  nn = torch.nn
  spec = architecture.mobilenet_v2_spec(width, expansion_ratio)

  def conv_bn(in_channels, out_channels, kernel_size, stride, groups=1, activation=True):
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                        groups=groups, bias=False),
              nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.003)]
    if activation:
      layers.append(nn.ReLU6(inplace=True))
    return layers

  class InvertedResidual(nn.Module):

    def __init__(self, block):
      super().__init__()
      layers = []
      if block.has_expansion:
        layers += conv_bn(block.in_channels, block.expanded_channels, 1, 1)
      layers += conv_bn(block.expanded_channels, block.expanded_channels, 3, block.stride,
                        groups=block.expanded_channels)
      layers += conv_bn(block.expanded_channels, block.out_channels, 1, 1, activation=False)
      self.layers = nn.Sequential(*layers)
      self.residual = block.residual

    def forward(self, x):
      return x + self.layers(x) if self.residual else self.layers(x)

  class MobileNetV2(nn.Module):

    def __init__(self):
      super().__init__()
      last_in = spec.blocks[-1].out_channels
      self.features = nn.Sequential(
          *conv_bn(3, spec.stem_channels, 3, 2),
          *[InvertedResidual(block) for block in spec.blocks],
          *conv_bn(last_in, spec.last_channels, 1, 1))
      self.dropout = nn.Dropout(0.2)
      self.classifier = nn.Linear(spec.last_channels, num_classes)

    def forward(self, x):
      x = self.features(x).mean((2, 3))
      return self.classifier(self.dropout(x))

  return MobileNetV2()


class TorchEngine:
  """The PyTorch MobileNetV2 (channels-last, float32) with the same batch and optimizer."""

  def __init__(self, args: argparse.Namespace, torch):
    self.name = 'torch'
    self.batch = args.batch
    if args.torch_threads:
      torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    self._torch = torch
    self.model = build_torch_mobilenet_v2(torch, args.width, args.expansion_ratio,
                                          args.num_classes).to(memory_format=torch.channels_last)
    self.images = torch.empty(args.batch, 3, args.resolution, args.resolution).uniform_(-1, 1)
    self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.labels = torch.randint(0, args.num_classes, (args.batch,))
    # PyTorch's eps is outside the square root; the work per step is the same.
    self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=0.045 * args.batch / 96,
                                         alpha=0.9, eps=1.0, momentum=0.9)
    self.loss_fn = torch.nn.CrossEntropyLoss()
    self.compile_seconds = None  # Eager: nothing to compile.
    self.inference_compile_seconds = None
    self._image = self.images[:1].clone().contiguous(memory_format=torch.channels_last)
    self._eval_model = None

  def train_step(self) -> float:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.loss_fn(self.model(self.images), self.labels)
    loss.backward()
    self.optimizer.step()
    return loss.item()

  def infer_one(self) -> None:
    self.model.eval()
    with self._torch.inference_mode():
      self.model(self._image)


def import_torch() -> Optional[Any]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return torch


# ----------------------------------------------------------------------------- timing


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _time(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _time_wall_and_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
  """Wall seconds and CPU seconds of this process (all threads) spent in fn."""
  start, start_cpu = time.perf_counter(), _cpu_seconds()
  fn()
  return time.perf_counter() - start, _cpu_seconds() - start_cpu


def run(args: argparse.Namespace) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  engines = []
  for impl in args.depthwise_impls:
    for batch_norm in args.batch_norms:
      for kernel_gradient in args.kernel_gradients:
        for sums in args.batch_norm_sum_forms:
          print(f'compiling {args.model} {args.width}@{args.resolution} batch {args.batch} '
                f'depthwise_impl={impl} batch_norm={batch_norm} kernel_gradient='
                f'{kernel_gradient} batch_norm_sums={sums} ...', file=sys.stderr, flush=True)
          engines.append(JaxEngine(
              args, impl, batch_norm=batch_norm,
              kernel_gradient=kernel_gradient if len(args.kernel_gradients) > 1 else None,
              batch_norm_sums=sums if len(args.batch_norm_sum_forms) > 1 else None))
  torch_note = None
  if args.torch:
    torch = import_torch()
    if torch is None:
      torch_note = ('torch is not installed: PyTorch comparison skipped '
                    '(pip install torch==2.13.0 for the CPU build).')
      print(torch_note, file=sys.stderr)
    else:
      engines.append(TorchEngine(args, torch))

  losses = {}
  for engine in engines:
    for _ in range(args.warmup_steps):
      losses[engine.name] = engine.train_step()
  step_seconds = {engine.name: [] for engine in engines}
  step_cpu_seconds = {engine.name: [] for engine in engines}
  for round_index in range(args.rounds):
    for engine in engines:
      for _ in range(args.steps_per_round):
        wall, cpu = _time_wall_and_cpu(engine.train_step)
        step_seconds[engine.name].append(wall)
        step_cpu_seconds[engine.name].append(cpu)
    print(f'round {round_index + 1}/{args.rounds}: ' + ', '.join(
        f'{name} {statistics.median(times[-args.steps_per_round:]):.2f} s/step'
        for name, times in step_seconds.items()), file=sys.stderr, flush=True)

  latency_ms = {} if args.skip_latency else _interleaved_latency_ms(engines, args.latency_runs)

  results = []
  for engine in engines:
    times = step_seconds[engine.name]
    median = statistics.median(times)
    cpu_median = statistics.median(step_cpu_seconds[engine.name])
    results.append({
        'engine': engine.name,
        'compile_seconds': engine.compile_seconds,
        'inference_compile_seconds': engine.inference_compile_seconds,
        'train_step_seconds_median': median,
        'train_step_seconds_min': min(times),
        'train_step_seconds_max': max(times),
        'train_images_per_second': args.batch / median,
        # CPU time of the process (all threads) per step: robust to other
        # processes taking cores, but it counts PyTorch's OpenMP spin-waiting too.
        'train_step_cpu_seconds_median': cpu_median,
        'train_images_per_cpu_second': args.batch / cpu_median,
        'batch1_latency_ms_median': latency_ms.get(engine.name),
        'final_loss': losses.get(engine.name),
        # Which program ran: benchmarks/xla_flags.py tells options that change it from those
        # that do not (a difference in speed between equal programs is the machine's noise).
        'train_step_hlo_sha1': (hashlib.sha1(engine.compiled_train_step_text().encode())
                                .hexdigest() if hasattr(engine, 'compiled_train_step_text')
                                else None),
    })
  torch_result = next((r for r in results if r['engine'] == 'torch'), None)
  if torch_result is not None:
    for result in results:
      result['speedup_vs_torch'] = (result['train_images_per_second']
                                    / torch_result['train_images_per_second'])
      result['cpu_time_speedup_vs_torch'] = (result['train_images_per_cpu_second']
                                             / torch_result['train_images_per_cpu_second'])
  return {
      'config': {
          'model': args.model, 'width_multiplier': args.width,
          'expansion_ratio': args.expansion_ratio, 'dtype': args.dtype, 'batch': args.batch,
          'resolution': args.resolution, 'num_classes': args.num_classes,
          'timed_steps_per_engine': args.rounds * args.steps_per_round,
      },
      'environment': {
          'jax': jax.__version__, 'backend': jax.default_backend(),
          'cpu_count': os.cpu_count(), 'allocator': allocator.active_allocator(),
          'torch': getattr(import_torch(), '__version__', None) if args.torch else None,
          'torch_threads': (import_torch().get_num_threads()
                            if args.torch and import_torch() is not None else None),
      },
      'torch_note': torch_note,
      'results': results,
  }


# ----------------------------------------------------------------------------- the suite

# (label, width, resolution, batch, target JAX/PyTorch training throughput). The
# first three are the sweeps' workloads (configs/default.py: the main job and
# Figure 6 at 0.35 @ 48 px, CPU Figure 5 at 64 px), the last the paper's size.
SUITE_TRAINING = (
    ('0.35@48 batch 64', 0.35, 48, 64, 1.5),
    ('1.0@64 batch 32', 1.0, 64, 32, 1.5),
    ('1.4@64 batch 32', 1.4, 64, 32, 1.5),
    ('1.0@224 batch 32', 1.0, 224, 32, 1.0),
)
# (label, width, resolution): batch-1 inference, target JAX <= PyTorch.
SUITE_LATENCY = (('1.0@224', 1.0, 224), ('0.35@96', 0.35, 96))
# Memory-efficient inference (Section 5.1) at 1.0 @ 224: T=4 within 1.3x of T=1.
SUITE_MEMORY_SPLIT, SUITE_MEMORY_SPLIT_TARGET = 4, 1.3
# A round times each engine for about this long, so small and large steps get alike weight.
SUITE_SECONDS_PER_ROUND = 1.5
# Warm-up and rounds of the suite's training timings. The sweeps' small steps (15-30 ms) reach
# their steady speed only after several steps: with 3 warm-up steps and 5 rounds, 0.35 @ 48 px
# timed 1.5x slower than with 5 warm-up steps and 10 rounds (benchmarks/README.md).
SUITE_WARMUP_SECONDS, SUITE_MIN_WARMUP_STEPS, SUITE_MIN_ROUNDS = 3.0, 5, 10


def workload_argument_parser(description: str) -> argparse.ArgumentParser:
  """The command line of the scripts that time one MobileNetV2 workload (width, resolution, batch)."""
  parser = argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--batch', type=int, default=32)
  return parser


def _interleaved_step_times(engines, rounds: int, warmup_steps: int) -> dict:
  """Median seconds per training step of each engine, timed in interleaved rounds."""
  warm = {}
  for engine in engines:
    times = [_time(engine.train_step) for _ in range(max(1, warmup_steps))]
    while sum(times) < SUITE_WARMUP_SECONDS:
      times.append(_time(engine.train_step))
    warm[engine.name] = statistics.median(times[-warmup_steps:])
  steps_per_round = {name: max(1, min(20, round(SUITE_SECONDS_PER_ROUND / seconds)))
                     for name, seconds in warm.items()}
  times = {engine.name: [] for engine in engines}
  for _ in range(rounds):
    for engine in engines:
      for _ in range(steps_per_round[engine.name]):
        times[engine.name].append(_time(engine.train_step))
  return {name: statistics.median(values) for name, values in times.items()}


def _interleaved_latency_ms(engines, runs: int) -> dict:
  """Median batch-1 milliseconds of each engine, after 3 warm-up calls, runs interleaved."""
  for engine in engines:
    for _ in range(3):
      engine.infer_one()
  times = {engine.name: [] for engine in engines}
  for _ in range(runs):
    for engine in engines:
      times[engine.name].append(_time(engine.infer_one) * 1e3)
  return {name: statistics.median(values) for name, values in times.items()}


def _with_workload(args: argparse.Namespace, **changes) -> argparse.Namespace:
  return argparse.Namespace(**{**vars(args), **changes})


def run_suite(args: argparse.Namespace) -> dict:
  """Every workload of the suite: JAX against PyTorch (when installed), engines interleaved."""
  import gc  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  torch = import_torch()
  impl = args.depthwise_impls[0]
  training = []
  for label, width, resolution, batch, target in SUITE_TRAINING:
    print(f'suite: training {label} ...', file=sys.stderr, flush=True)
    workload = _with_workload(args, width=width, resolution=resolution, batch=batch)
    engines = [JaxEngine(workload, impl)]
    first_step = {engines[0].name: engines[0].compile_seconds
                  + _time(engines[0].train_step)}
    if torch is not None:
      engines.append(TorchEngine(workload, torch))
      first_step['torch'] = _time(engines[1].train_step)
    seconds = _interleaved_step_times(engines, max(args.rounds, SUITE_MIN_ROUNDS),
                                      max(args.warmup_steps, SUITE_MIN_WARMUP_STEPS))
    jax_name = engines[0].name
    row = {'workload': label, 'batch': batch, 'jax_images_per_second': batch / seconds[jax_name],
           'jax_compile_seconds': engines[0].compile_seconds,
           'jax_first_step_seconds': first_step[jax_name], 'target_vs_torch': target}
    if torch is not None:
      row.update(torch_images_per_second=batch / seconds['torch'],
                 torch_first_step_seconds=first_step['torch'],
                 jax_vs_torch=seconds['torch'] / seconds[jax_name])
      row['met'] = row['jax_vs_torch'] >= target
    training.append(row)
    del engines
    gc.collect()

  latency = []
  for label, width, resolution in SUITE_LATENCY:
    print(f'suite: batch-1 latency {label} ...', file=sys.stderr, flush=True)
    workload = _with_workload(args, width=width, resolution=resolution, batch=1)
    engines = [JaxEngine(workload, impl, train=False)]
    if torch is not None:
      engines.append(TorchEngine(workload, torch))
    milliseconds = _interleaved_latency_ms(engines, args.latency_runs)
    row = {'workload': label, 'jax_ms': milliseconds[engines[0].name],
           'jax_compile_seconds': engines[0].inference_compile_seconds}
    if torch is not None:
      row.update(torch_ms=milliseconds['torch'], jax_vs_torch=row['jax_ms'] / milliseconds['torch'])
      row['met'] = row['jax_ms'] <= milliseconds['torch']
    latency.append(row)
    del engines
    gc.collect()

  print(f'suite: memory_split={SUITE_MEMORY_SPLIT} latency 1.0@224 ...', file=sys.stderr,
        flush=True)
  workload = _with_workload(args, width=1.0, resolution=224, batch=1)
  engines = [JaxEngine(workload, impl, train=False),
             JaxEngine(workload, impl, train=False, memory_split=SUITE_MEMORY_SPLIT)]
  milliseconds = _interleaved_latency_ms(engines, args.latency_runs)
  whole, split = (milliseconds[engine.name] for engine in engines)
  memory_split = {'workload': '1.0@224', 'memory_split': SUITE_MEMORY_SPLIT, 'whole_ms': whole,
                  'split_ms': split, 'ratio': split / whole,
                  'target': SUITE_MEMORY_SPLIT_TARGET,
                  'met': split / whole <= SUITE_MEMORY_SPLIT_TARGET}
  return {
      'environment': {
          **provenance.machine_description(), 'jax': jax.__version__, 'backend': jax.default_backend(),
          'allocator': allocator.active_allocator(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'torch': getattr(torch, '__version__', None),
          'torch_threads': torch.get_num_threads() if torch is not None else None,
          'depthwise_impl': impl, 'dtype': args.dtype,
          'rounds': max(args.rounds, SUITE_MIN_ROUNDS),
          'latency_runs': args.latency_runs,
      },
      'torch_note': None if torch is not None else (
          'torch is not installed: JAX alone (pip install torch==2.13.0 for the CPU build).'),
      'training': training, 'latency': latency, 'memory_split': memory_split,
  }


def format_suite(report: dict) -> str:
  env = report['environment']
  yes_no = lambda row: '-' if 'met' not in row else ('yes' if row['met'] else 'no')
  ratio = lambda row: f"{row['jax_vs_torch']:.2f}x" if 'jax_vs_torch' in row else '-'
  lines = [
      f"{env['cpu_model']} ({env['cpu_count']} CPUs; {' '.join(env['cpu_flags'])}), "
      f"jax {env['jax']}, torch {env['torch'] or '-'} ({env['torch_threads'] or '-'} threads), "
      f"allocator {env['allocator']}, XLA_FLAGS={env['xla_flags'] or '(none)'}, "
      f"depthwise {env['depthwise_impl']}, {env['dtype']}",
      '',
      '| training | JAX img/s | PyTorch img/s | JAX / PyTorch | target | met '
      '| JAX compile s | JAX first step s | PyTorch first step s |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for row in report['training']:
    torch_ips = f"{row['torch_images_per_second']:.1f}" if 'torch_images_per_second' in row else '-'
    torch_first = (f"{row['torch_first_step_seconds']:.2f}"
                   if 'torch_first_step_seconds' in row else '-')
    lines.append(f"| {row['workload']} | {row['jax_images_per_second']:.1f} | {torch_ips} "
                 f"| {ratio(row)} | >= {row['target_vs_torch']:.1f}x | {yes_no(row)} "
                 f"| {row['jax_compile_seconds']:.1f} | {row['jax_first_step_seconds']:.1f} "
                 f"| {torch_first} |")
  lines += ['', '| batch-1 latency | JAX ms | PyTorch ms | JAX / PyTorch | target | met '
                '| JAX compile s |', '|---|---|---|---|---|---|---|']
  for row in report['latency']:
    torch_ms = f"{row['torch_ms']:.1f}" if 'torch_ms' in row else '-'
    lines.append(f"| {row['workload']} | {row['jax_ms']:.1f} | {torch_ms} | {ratio(row)} "
                 f"| <= 1.00x | {yes_no(row)} | {row['jax_compile_seconds']:.1f} |")
  split = report['memory_split']
  lines += ['', '| memory-efficient inference | T=1 ms | T=%d ms | ratio | target | met |'
            % split['memory_split'], '|---|---|---|---|---|---|',
            f"| {split['workload']} batch 1 | {split['whole_ms']:.1f} | {split['split_ms']:.1f} "
            f"| {split['ratio']:.2f}x | <= {split['target']:.1f}x "
            f"| {'yes' if split['met'] else 'no'} |"]
  if report['torch_note']:
    lines.append(report['torch_note'])
  return '\n'.join(lines)


def format_table(report: dict) -> str:
  config, env = report['config'], report['environment']
  lines = [
      f"{config['model']} width {config['width_multiplier']} t={config['expansion_ratio']} "
      f"@{config['resolution']} {config['dtype']}, training batch {config['batch']}, "
      f"{config['timed_steps_per_engine']} timed steps per engine (interleaved); "
      f"jax {env['jax']} on {env['backend']} ({env['cpu_count']} CPUs), "
      f"allocator {env['allocator']}"
      + (f", torch {env['torch']} ({env['torch_threads']} threads)" if env['torch'] else ''),
      f"{'engine':<20} {'compile s':>9} {'step s':>8} {'min s':>7} {'max s':>7} "
      f"{'img/s':>7} {'vs torch':>8} {'cpu s':>7} {'img/cpu-s':>9} {'vs torch':>8} {'b1 ms':>8}",
  ]
  for r in report['results']:
    compile_s = f"{r['compile_seconds']:.1f}" if r['compile_seconds'] is not None else '-'
    speedup = f"{r['speedup_vs_torch']:.2f}x" if 'speedup_vs_torch' in r else '-'
    cpu_speedup = (f"{r['cpu_time_speedup_vs_torch']:.2f}x"
                   if 'cpu_time_speedup_vs_torch' in r else '-')
    latency = (f"{r['batch1_latency_ms_median']:.1f}"
               if r['batch1_latency_ms_median'] is not None else '-')
    lines.append(f"{r['engine']:<20} {compile_s:>9} {r['train_step_seconds_median']:>8.3f} "
                 f"{r['train_step_seconds_min']:>7.3f} {r['train_step_seconds_max']:>7.3f} "
                 f"{r['train_images_per_second']:>7.2f} {speedup:>8} "
                 f"{r['train_step_cpu_seconds_median']:>7.2f} "
                 f"{r['train_images_per_cpu_second']:>9.2f} {cpu_speedup:>8} {latency:>8}")
  if report['torch_note']:
    lines.append(report['torch_note'])
  return '\n'.join(lines)


def main(argv=None) -> None:
  args = parse_args(argv)
  if not args.system_malloc:
    allocator.reexecute_with_fast_allocator()
  if args.suite:
    report = run_suite(args)
    print(json.dumps(report, indent=2) if args.json else format_suite(report))
    return
  report = run(args)
  print(json.dumps(report, indent=2) if args.json else format_table(report))


if __name__ == '__main__':
  main()
