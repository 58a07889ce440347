"""Test setup: eight fake CPU devices, TensorFlow kept off accelerators."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
