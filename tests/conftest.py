"""Test setup: eight fake CPU devices, TensorFlow kept off accelerators."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The tests compile far more than they run (tiny batches, a few steps): LLVM's
# optimisation of the generated CPU code is most of XLA's compile time and buys
# nothing here (the 0.35-wide network's init 10.2 -> 4.4 s, its training step
# 16.6 -> 10.9 s on a 2-core AMD EPYC). Results can differ from optimised code
# by rounding (4% of that network's initial weights by one ulp); the tests'
# subprocesses inherit the flag (train_test_utils.subprocess_environment).
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import tempfile  # noqa: E402

from mnv2_jax import compilation_cache  # noqa: E402

# Many tests train, resume and train again: the same programs compiled several
# times, in one test process and in both of pytest-xdist's workers. JAX's
# persistent cache turns the repeats into loads, as it does for the runs of a
# sweep: one directory per pytest run, made by the first process that imports
# this file (xdist's controller, whose environment its workers inherit).
_CACHE_VARIABLE = 'MNV2_JAX_TEST_COMPILATION_CACHE'
if not os.environ.get(_CACHE_VARIABLE):
  os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix='mnv2_jax_test_compilation_cache_')
compilation_cache.enable(os.environ[_CACHE_VARIABLE])
