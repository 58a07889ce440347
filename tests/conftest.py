"""Test setup: eight fake CPU devices, TensorFlow kept off accelerators."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
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
