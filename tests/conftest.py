"""Test setup: eight fake CPU devices, TensorFlow kept off accelerators."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import tempfile  # noqa: E402

from mnv2_jax import compilation_cache  # noqa: E402

# Many tests train, resume and train again: the same programs compiled several
# times in one test process. JAX's persistent cache (one directory per test
# process) turns the repeats into loads, as it does for the runs of a sweep.
compilation_cache.enable(tempfile.mkdtemp(prefix='mnv2_jax_test_compilation_cache_'))
