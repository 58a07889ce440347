"""Data parallelism: devices, batch placement and the data-parallel step wrapper.

The train and eval steps (`mnv2_jax.train.step`) are written for one device
with a named axis, `BATCH_AXIS`; `DataParallel` runs them on every device with
one of two strategies that wrap the SAME function:

- 'shard_map' (default): `jax.jit(jax.shard_map(step, mesh=Mesh(devices,
  ('batch',)), ...))`, with the state replicated (`P()`) and the batch split
  along 'batch' (`P('batch')`). Arrays are global `jax.Array`s on the mesh.
- 'pmap': `jax.pmap(step, axis_name='batch')` (maintenance mode upstream, and
  itself implemented on shard_map since JAX 0.8), with the state stacked over
  the local devices and the batch reshaped to [local_devices, per_device, ...].

`check_vma=False` for shard_map: with it on, JAX would insert the gradient
all-reduce for replicated parameters itself, and the explicit `lax.pmean` of
the per-device step would be redundant and behave differently; off, the
per-device step has exactly pmap's semantics (which is how `jax.pmap` calls
shard_map too).

Multi-host: call `initialize_distributed(config)` first. Every process then
builds the same `DataParallel`, feeds its own slice of the global batch to
`shard_batch` (`jax.make_array_from_process_local_data`) and gets the same
replicated state and metrics back; `unreplicate` returns host NumPy arrays (what
process 0 saves or logs).

Typical use::

  dp = DataParallel(config.train.parallel_strategy)
  state = dp.replicate(create_train_state(...))
  p_train = dp.wrap_train_step(functools.partial(step.train_step, label_smoothing=...))
  state, metrics = p_train(state, dp.shard_batch(local_batch), jax.random.key(seed))
  metrics = dp.fetch_metrics(metrics)
"""

import functools
import logging
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXIS = 'batch'
STRATEGIES = ('shard_map', 'pmap')


def initialize_distributed(config) -> None:
  """Joins a multi-process run when `config.distributed.initialize` is set.

  Must run before anything touches the devices. Missing coordinator address,
  process count or id (None) are left to `jax.distributed.initialize`'s
  auto-detection (SLURM, TPU pods, Open MPI). CPU collectives across processes
  use gloo (the default CPU backend has none); the setting affects only the CPU
  backend, so it is harmless on GPU/TPU.
  """
  distributed = config.get('distributed')
  if not distributed or not distributed.get('initialize'):
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=distributed.get('coordinator_address'),
                             num_processes=distributed.get('num_processes'),
                             process_id=distributed.get('process_id'))
  logging.info('Process %d of %d, %d local devices, %d devices in all.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def _to_host(x: Any) -> np.ndarray:
  """A host copy of a replicated array, from this process's first shard."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


class DataParallel:
  """Runs per-device step functions on all devices with one strategy.

  Attributes:
    strategy: 'shard_map' or 'pmap'.
    devices: all participating devices, ordered by process (every process of a
      multi-host run must pass the same list, default `jax.devices()`).
    local_devices: those of this process.
    mesh: the 1-D device mesh with axis `BATCH_AXIS`.
  """

  def __init__(self, strategy: str = 'shard_map',
               devices: Optional[Sequence[jax.Device]] = None):
    if strategy not in STRATEGIES:
      raise ValueError(f'config.train.parallel_strategy must be one of {STRATEGIES}, '
                       f'got {strategy!r}.')
    self.strategy = strategy
    self._explicit_devices = devices is not None
    devices = list(jax.devices() if devices is None else devices)
    # Process-major order, so that each process's slice of the batch is contiguous.
    self.devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
    self.mesh = Mesh(np.asarray(self.devices), (BATCH_AXIS,))
    self._local_mesh = Mesh(np.asarray(self.local_devices), (BATCH_AXIS,))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def num_local_devices(self) -> int:
    return len(self.local_devices)

  # --- placement ---------------------------------------------------------

  def replicated_shapes(self, tree: Any) -> Any:
    """The shapes and dtypes `replicate` gives `tree`, without placing anything."""
    leading = (self.num_local_devices,) if self.strategy == 'pmap' else ()
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(leading + tuple(np.shape(x)), x.dtype),
                        tree)

  def replicate(self, tree: Any) -> Any:
    """Puts a host (or single-device) pytree on every device as replicated state."""
    if self.strategy == 'pmap':
      sharding = NamedSharding(self._local_mesh, P(BATCH_AXIS))
      stack = lambda x: np.stack([np.asarray(x)] * self.num_local_devices)
      return jax.tree.map(lambda x: jax.device_put(stack(x), sharding), tree)
    sharding = NamedSharding(self.mesh, P())

    def put(x):
      x = np.asarray(x)
      # From the callback rather than device_put: valid when some devices
      # belong to other processes (each process holds the same host copy).
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)

  def unreplicate(self, tree: Any) -> Any:
    """Host NumPy copy of a replicated pytree (e.g. the state for saving)."""
    if self.strategy == 'pmap':
      # pmap outputs carry a leading local-device axis; a scalar came from
      # plain jit (e.g. a reduction over the state) and is returned as is.
      return jax.tree.map(
          lambda x: _to_host(x) if np.ndim(x) == 0 else _to_host(x.addressable_data(0))[0], tree)
    return jax.tree.map(_to_host, tree)

  def shard_batch(self, local_batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Places this process's slice of the global batch on its local devices.

    Args:
      local_batch: arrays with leading dimension global_batch / process_count
        (what `mnv2_jax.data` iterators yield for this process).
    """
    for name, value in local_batch.items():
      if value.shape[0] % self.num_local_devices:
        raise ValueError(
            f'Batch field {name!r} has {value.shape[0]} examples in this process, not divisible '
            f'by its {self.num_local_devices} devices; choose a batch size divisible by '
            f'{self.num_devices}.')
    if self.strategy == 'pmap':
      sharding = NamedSharding(self._local_mesh, P(BATCH_AXIS))
      return {name: jax.device_put(
                  np.reshape(value, (self.num_local_devices, -1) + value.shape[1:]), sharding)
              for name, value in local_batch.items()}
    sharding = NamedSharding(self.mesh, P(BATCH_AXIS))
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in local_batch.items()}

  def fetch_metrics(self, metrics: Dict[str, Any]) -> Dict[str, Any]:
    """Replicated metrics on the host (blocks until computed): scalars as Python floats,
    arrays (e.g. segmentation's summed confusion matrix) as NumPy arrays."""
    return {name: float(value) if np.ndim(value) == 0 else np.asarray(value)
            for name, value in self.unreplicate(metrics).items()}

  def _place_key(self, key: jax.Array) -> jax.Array:
    """A PRNG key (typed or raw uint32) replicated for the shard_map step."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      data = self.replicate(jax.random.key_data(key))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
    return self.replicate(key)

  # --- steps ----------------------------------------------------------------

  def wrap_train_step(self, train_step: Callable[..., Any], donate_state: bool = False
                      ) -> Callable[[Any, Dict[str, Any], jax.Array], Any]:
    """`(state, batch, dropout_rng) -> (state, metrics)` on all devices.

    Args:
      train_step: per-device `train_step(state, batch, rng, *, axis_name)`,
        with its other keyword arguments already bound (functools.partial).
      donate_state: let XLA reuse the input state's buffers for the output
        (saves one state copy of device memory; the input state is invalid
        afterwards).
    """
    step = functools.partial(train_step, axis_name=BATCH_AXIS)
    donate = (0,) if donate_state else ()
    if self.strategy == 'pmap':
      devices = self.devices if self._explicit_devices else None
      return jax.pmap(step, axis_name=BATCH_AXIS, in_axes=(0, 0, None), devices=devices,
                      donate_argnums=donate)
    mapped = jax.jit(jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(BATCH_AXIS), P()),
                                   out_specs=(P(), P()), check_vma=False),
                     donate_argnums=donate)

    placed = {}  # The loop passes the same key every step: place it once.

    def run(state, batch, dropout_rng):
      if placed.get('source') is not dropout_rng:
        placed.update(source=dropout_rng, key=self._place_key(dropout_rng))
      return mapped(state, batch, placed['key'])

    return run

  def wrap_eval_step(self, eval_step: Callable[..., Any]
                     ) -> Callable[[Any, Dict[str, Any]], tuple[Any, Any]]:
    """`(state, batch) -> (sums, examples)` on all devices, for `eval_step(state, batch, *,
    axis_name)` returning psum'd sums and per-example arrays split along the batch
    (read them with `fetch_metrics` and `gather_examples`)."""
    return self._wrap_state_and_batch_step(eval_step, out_specs=(P(), P(BATCH_AXIS)))

  def wrap_statistics_step(self, statistics_step: Callable[..., Any]
                           ) -> Callable[[Any, Dict[str, Any]], Any]:
    """`(state, batch) -> statistics` on all devices, for `statistics_step(state, batch, *,
    axis_name)` returning values already averaged over the axis: replicated like the
    state, so that they can replace parts of it."""
    return self._wrap_state_and_batch_step(statistics_step, out_specs=P())

  def _wrap_state_and_batch_step(self, step: Callable[..., Any], out_specs: Any
                                 ) -> Callable[[Any, Dict[str, Any]], Any]:
    """A per-device `step(state, batch, *, axis_name)` on all devices: the state
    replicated, the batch split; `out_specs` says how shard_map lays out the outputs."""
    step = functools.partial(step, axis_name=BATCH_AXIS)
    if self.strategy == 'pmap':
      devices = self.devices if self._explicit_devices else None
      return jax.pmap(step, axis_name=BATCH_AXIS, devices=devices)
    return jax.jit(jax.shard_map(step, mesh=self.mesh, in_specs=(P(), P(BATCH_AXIS)),
                                 out_specs=out_specs, check_vma=False))

  def gather_examples(self, examples: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Per-example outputs of a step, split along the batch, as host arrays of the GLOBAL
    batch in example order (every process gets all of them)."""
    def local(x):
      if self.strategy == 'pmap':  # [local devices, per device, ...] -> [local examples, ...]
        x = np.asarray(jax.device_get(x))
        return x.reshape((-1,) + x.shape[2:])
      return x
    if jax.process_count() == 1:
      return {name: np.asarray(jax.device_get(local(x))) for name, x in examples.items()}
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return {name: np.asarray(multihost_utils.process_allgather(local(x), tiled=True))
            for name, x in examples.items()}
