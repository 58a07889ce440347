"""Entry points restart themselves once with an allocator that keeps freed memory."""

import os
import subprocess
import sys

from mnv2_jax import allocator

# Reports, from inside the (possibly restarted) process, what it runs with.
PROBE = ('import os; from mnv2_jax import allocator; allocator.reexecute_with_fast_allocator(); '
         "maps = open('/proc/self/maps').read(); "
         "print(os.getpid(), allocator.active_allocator(), 'libjemalloc' in maps, "
         "os.environ.get('MNV2_ALLOCATOR'))")


def _run_probe(**env_overrides):
  env = {k: v for k, v in os.environ.items()
         if k not in ('LD_PRELOAD', 'GLIBC_TUNABLES', 'MALLOC_CONF', allocator.ALLOCATOR_VARIABLE,
                      allocator.OPT_OUT_VARIABLE)}
  env.update(env_overrides)
  process = subprocess.Popen([sys.executable, '-c', PROBE], env=env, stdout=subprocess.PIPE,
                             text=True)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 0
  pid, active, jemalloc_mapped, marker = output.split()
  return process.pid, int(pid), active, jemalloc_mapped == 'True', marker


def test_a_plain_process_restarts_once_in_place_with_the_best_allocator_available():
  spawned_pid, pid, active, jemalloc_mapped, marker = _run_probe()
  assert pid == spawned_pid  # exec, not a child process: signals and PIDs stay the user's
  if allocator.find_jemalloc():
    assert (active, jemalloc_mapped, marker) == ('jemalloc', True, 'jemalloc')
  else:
    assert (active, jemalloc_mapped, marker) == ('glibc-hugetlb', False, 'glibc-hugetlb')


def test_the_opt_out_variable_keeps_the_system_allocator():
  _, _, active, jemalloc_mapped, marker = _run_probe(**{allocator.OPT_OUT_VARIABLE: '1'})
  assert (active, jemalloc_mapped, marker) == ('system', False, 'None')


def test_a_process_started_with_jemalloc_or_huge_pages_is_not_restarted():
  assert not allocator.should_reexecute({'LD_PRELOAD': '/x/libjemalloc.so.2'}, 'linux')
  assert not allocator.should_reexecute({'GLIBC_TUNABLES': allocator.HUGETLB_TUNABLE}, 'linux')
  assert not allocator.should_reexecute({allocator.ALLOCATOR_VARIABLE: 'system'}, 'linux')
  assert not allocator.should_reexecute({}, 'darwin')
  assert allocator.should_reexecute({}, 'linux')


def test_jemalloc_is_preloaded_before_other_libraries_and_keeps_freed_pages():
  env = allocator.fast_allocator_environment(
      {'LD_PRELOAD': 'libother.so', 'MALLOC_CONF': 'narenas:2'}, '/lib/libjemalloc.so.2')
  assert env['LD_PRELOAD'] == '/lib/libjemalloc.so.2:libother.so'
  assert env['MALLOC_CONF'] == 'narenas:2,dirty_decay_ms:-1,muzzy_decay_ms:-1'
  assert 'GLIBC_TUNABLES' not in env


def test_without_jemalloc_glibc_tunables_gain_huge_pages_and_keep_their_other_settings():
  env = allocator.fast_allocator_environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, None)
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  assert 'LD_PRELOAD' not in env
  assert allocator.active_allocator(env) == 'glibc-hugetlb'


def test_find_jemalloc_takes_the_first_existing_candidate(tmp_path):
  library = tmp_path / 'libjemalloc.so.2'
  library.write_bytes(b'')
  assert allocator.find_jemalloc((str(tmp_path / 'missing.so'), str(library))) == str(library)
  assert allocator.find_jemalloc((str(tmp_path / 'missing.so'),)) is None
