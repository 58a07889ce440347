"""JAX's persistent compilation cache, so that a program is compiled once per sweep.

Every run of a sweep, every seed and every resume builds the same training and
evaluation programs for the same shapes; compiling them takes 20-30 s on a CPU
for MobileNetV2 (longer on TPU). With the cache, the first run stores the
compiled executables in a directory and the later ones load them instead.

`launch.sweep` turns it on for its runs (`--compilation-cache`, by default
WORKROOT/compilation_cache); `python -m mnv2_jax.main --compilation_cache DIR`
does it for a single run; code that imports the package calls `enable(DIR)`
before its first `jit`, or sets JAX_COMPILATION_CACHE_DIR as JAX documents.
"""

import os
from typing import Optional

import jax

# The cache key covers the program, the compiler options, the jax/jaxlib
# versions and the device kind, so one directory can serve several machines.
# Only programs that took this long to compile are stored (the training step
# does; the many small host<->device helpers would only fill the directory).
MIN_COMPILE_SECONDS_TO_CACHE = 0.5


def enable(directory: Optional[str],
           min_compile_seconds: float = MIN_COMPILE_SECONDS_TO_CACHE) -> Optional[str]:
  """Stores and reuses compiled programs in `directory` (None: leave JAX as configured).

  Returns the directory in use, which `run_info.json` records. Local paths are
  created; gs:// and other remote paths are passed to JAX as they are.
  """
  if not directory:
    return jax.config.jax_compilation_cache_dir
  if '://' not in directory:
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', min_compile_seconds)
  return directory
