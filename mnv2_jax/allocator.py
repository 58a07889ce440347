"""Run CPU training with a memory allocator that keeps freed memory.

XLA:CPU allocates the buffers of every step afresh, and glibc's malloc hands
blocks above its mmap threshold (at most 32 MiB) back to the kernel on free,
so each step page-faults, and the kernel zeroes, its whole working set again.
Measured on the 2-core machine (median s/step, benchmarks/README.md):
MobileNetV2 0.35@48 batch 64 (configs/default.py) 0.119 glibc, 0.079 with
glibc's huge-page tunable, 0.071 with jemalloc; 1.0@224 batch 32 3.6 glibc,
1.8 huge pages, 1.5 jemalloc.

Both remedies must be in place before the process starts (LD_PRELOAD, or
GLIBC_TUNABLES, which glibc reads once), so the entry points call
`reexecute_with_fast_allocator()` first: it restarts the same command once
with jemalloc preloaded when the system has it (Debian/Ubuntu:
`apt-get install libjemalloc2`), else with glibc's transparent-huge-page
malloc (glibc >= 2.35; older versions ignore the tunable). Nothing on PyPI
ships jemalloc for preloading, hence this module. `MNV2_SYSTEM_MALLOC=1`
keeps the process as it was started.
"""

import os
import sys
from typing import Mapping, Optional

JEMALLOC_CANDIDATES = (
    '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2',
    '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2',
    '/usr/lib64/libjemalloc.so.2',
    '/usr/lib/libjemalloc.so.2',
)
# Never return freed pages to the kernel: the next step reuses them.
JEMALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'
HUGETLB_TUNABLE = 'glibc.malloc.hugetlb=1'
# Set in the re-executed process: which allocator it runs with.
ALLOCATOR_VARIABLE = 'MNV2_ALLOCATOR'
OPT_OUT_VARIABLE = 'MNV2_SYSTEM_MALLOC'


def find_jemalloc(candidates=JEMALLOC_CANDIDATES) -> Optional[str]:
  return next((path for path in candidates if os.path.exists(path)), None)


def fast_allocator_environment(environ: Mapping[str, str],
                               jemalloc: Optional[str]) -> dict[str, str]:
  """`environ` with jemalloc preloaded if given, else with glibc's huge-page malloc."""
  env = dict(environ)
  if jemalloc:
    env['LD_PRELOAD'] = ':'.join(filter(None, [jemalloc, env.get('LD_PRELOAD')]))
    env['MALLOC_CONF'] = ','.join(filter(None, [env.get('MALLOC_CONF'), JEMALLOC_CONF]))
    env[ALLOCATOR_VARIABLE] = 'jemalloc'
  else:
    env['GLIBC_TUNABLES'] = ':'.join(filter(None, [env.get('GLIBC_TUNABLES'), HUGETLB_TUNABLE]))
    env[ALLOCATOR_VARIABLE] = 'glibc-hugetlb'
  return env


def active_allocator(environ: Mapping[str, str] = os.environ) -> str:
  """'jemalloc', 'glibc-hugetlb' or 'system' (what this process was started with)."""
  if 'libjemalloc' in environ.get('LD_PRELOAD', ''):
    return 'jemalloc'
  if HUGETLB_TUNABLE in environ.get('GLIBC_TUNABLES', ''):
    return 'glibc-hugetlb'
  return 'system'


def should_reexecute(environ: Mapping[str, str] = os.environ,
                     platform: str = sys.platform) -> bool:
  return (platform.startswith('linux') and not environ.get(OPT_OUT_VARIABLE)
          and ALLOCATOR_VARIABLE not in environ and active_allocator(environ) == 'system')


def reexecute_with_fast_allocator() -> None:
  """Restarts this very command (same PID, same arguments) once with a faster allocator."""
  if not should_reexecute():
    return
  env = fast_allocator_environment(os.environ, find_jemalloc())
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
