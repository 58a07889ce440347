"""Helpers shared by the training-loop tests: a tiny config and pretrained variables."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from mnv2_jax import checkpoint, compilation_cache, data, models, pretrained
from mnv2_jax.train import state as state_lib

# A few dozen images are enough for the loop. 48 training images, as many as
# tfds.testing.mock_data gives, make the same steps per epoch (3) in runs on
# either, so their training steps are one program (the learning-rate schedule
# is compiled into it) and compile once for both.
TINY_SHAPES = dict(num_train_examples=48, num_test_examples=64)


def subprocess_environment(**variables: str) -> dict:
  """The environment for a `python -m ...` subprocess of a test, plus `variables`:
  CPU only, the compile flags of conftest.py (in XLA_FLAGS) and this pytest run's
  compilation cache, so that runs of the same program in several tests and
  processes compile it once."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(
                 compilation_cache.MIN_COMPILE_SECONDS_TO_CACHE))
  cache = os.environ.get('MNV2_JAX_TEST_COMPILATION_CACHE')  # set by conftest.py
  if cache:
    env['JAX_COMPILATION_CACHE_DIR'] = cache
  env.update(variables)
  return env


def tiny_config(data_dir, *, num_steps: int) -> ml_collections.ConfigDict:
  """configs/default.py at width 0.35, 32 px, batch 16 (2 per fake device)."""
  config = default.get_config('width=0.35,res=32,batch=16')
  with config.unlocked():
    config.train.num_steps = num_steps
    config.train.eval_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.train.log_every_steps = 1
    config.train.keep_checkpoints = 2
    config.data.eval_batch_size = 16
    config.data.data_dir = data_dir
    config.data.update(TINY_SHAPES)
  return config


@pytest.fixture(scope='module')
def shapes_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def init_variables(config, num_classes: int, seed: int = 0) -> dict:
  model = state_lib.create_model(config, num_classes)
  resolution = config.data.resolution
  variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, resolution, resolution, 3)),
                                             train=False))(jax.random.key(seed))
  return jax.tree.map(np.asarray, dict(variables))


def count_params(config, num_classes: int) -> int:
  model = state_lib.create_model(config, num_classes)
  resolution = config.data.resolution
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, resolution, resolution, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def model_config(config, num_classes: int) -> dict:
  return dict(name=config.model.name, width_multiplier=config.model.width_multiplier,
              expansion_ratio=config.model.expansion_ratio, num_classes=num_classes,
              resolution=config.data.resolution, source='tests')


def _mocked(function, **mock_kwargs):
  """`function` run under tfds.testing.mock_data, its iterator's first batch included.

  The mock stays off while the loop writes checkpoints (orbax's asynchronous
  writer fails under the mock's patches); the tf.data pipeline it built keeps
  yielding mock examples afterwards.
  """
  def wrapper(*args, **kwargs):
    with tfds.testing.mock_data(num_examples=48, **mock_kwargs):
      result = function(*args, **kwargs)
      if not hasattr(result, '__next__'):
        return result
      first = next(result)
    return itertools.chain([first], result)

  return wrapper


def mock_tfds(monkeypatch, **mock_kwargs) -> None:
  """Serves every TFDS dataset the loop reads from `tfds.testing.mock_data` (48 random
  examples a split, no files), with synchronous checkpoint saves: an asynchronous write
  still running when the eval iterator switches the mock on again would fail under its
  file patches. `mock_kwargs` go to mock_data (e.g. as_dataset_fn)."""
  for name in ('validate_data_config', 'get_dataset_info', 'create_train_iterator',
               'create_eval_iterator'):
    monkeypatch.setattr(data, name, _mocked(getattr(data, name), **mock_kwargs))
  monkeypatch.setattr(checkpoint, 'Checkpointer',
                      functools.partial(checkpoint.Checkpointer, async_save=False))


def random_variables(module, *example_args, seed: int, **example_kwargs) -> dict:
  """Variables of `module` that make every layer shape its output, drawn by NumPy.

  Kernels are normal with variance 2 / fan-in (He: the signal neither fades nor
  grows through the ReLU6s, whatever the model's own initialisation, e.g.
  configs/default.py's zero-initialised classifier and residual branches), and
  BN's scales, offsets and statistics are random. The tree comes from tracing
  `module.init(key, *example_args, **example_kwargs)` alone: compiling a
  network's initialisation costs tens of seconds on a CPU.
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_args,
                                              **example_kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(path[-1].key)
    if name in ('scale', 'var'):
      value = rng.uniform(0.7, 1.4, leaf.shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0, 0.2, leaf.shape)
    else:  # a kernel: (..., fan-in, out); a depthwise one (3, 3, 1, C) has fan-in 9
      value = rng.normal(0, (2 / np.prod(leaf.shape[:-1])) ** 0.5, leaf.shape)
    return value.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def save_random_classifier(directory, name='mobilenet_v2', width=0.35, num_classes=10, seed=1):
  """A classifier's pretrained directory with seeded random weights; returns its flat params."""
  from flax import traverse_util
  module = (models.MobileNetV2 if name == 'mobilenet_v2' else models.MobileNetV1)(
      num_classes=num_classes, width_multiplier=width)
  variables = random_variables(module, jnp.zeros((1, 32, 32, 3)), seed=seed)
  pretrained.save_pretrained(directory, variables, dict(
      name=name, width_multiplier=width, expansion_ratio=6,  # recorded for V1 too
      num_classes=num_classes, resolution=224, source='tests'))
  return traverse_util.flatten_dict(variables['params'])


def load_config_as_main(spec: str, *overrides: str) -> ml_collections.ConfigDict:
  """Parses `--config spec overrides...` exactly as mnv2_jax.main does."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  argv = ['main', f'--config={os.path.join(repo, spec)}', *overrides]
  flag_values = flags.FlagValues()
  # config_flags finds the `--config.a.b` overrides in argv (sys.argv when run as main).
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config
