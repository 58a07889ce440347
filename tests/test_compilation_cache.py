"""The persistent compilation cache: a sweep's runs compile each program once."""

import json
import subprocess
import sys

from launch import manifest

# A process that compiles one program with the cache in DIR and reports whether
# JAX loaded it from the cache ('/jax/compilation_cache/cache_hits' events).
PROBE = r'''
import json, sys
import jax
from mnv2_jax import compilation_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event) if event.endswith('cache_hits') else None)
directory = compilation_cache.enable(sys.argv[1], min_compile_seconds=0)
value = jax.jit(lambda x: jax.numpy.tanh(x) * 3 + 1)(jax.numpy.ones(8)).sum()
print(json.dumps({'hits': len(hits), 'directory': directory, 'value': float(value)}))
'''


def _probe(directory):
  result = subprocess.run([sys.executable, '-c', PROBE, str(directory)], capture_output=True,
                          text=True, check=True, timeout=300)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_program_from_the_cache(tmp_path):
  cache = tmp_path / 'cache'
  first = _probe(cache)
  assert first['hits'] == 0 and first['directory'] == str(cache)
  assert any(cache.iterdir())  # the compiled program was stored
  second = _probe(cache)
  assert second['hits'] >= 1 and second['value'] == first['value']


def test_sweep_commands_share_the_workroots_cache_by_default(tmp_path):
  built = manifest.build_manifest('configs/default.py', 'fig6a', str(tmp_path), 'local',
                                  seeds=[0, 1])
  cache = str(tmp_path / 'compilation_cache')
  assert built['compilation_cache'] == cache
  assert all(f'--compilation_cache={cache}' in run['command'] for run in built['runs'])


def test_the_cache_can_be_moved_or_turned_off(tmp_path):
  moved = manifest.build_manifest('configs/default.py', 'fig6a', str(tmp_path), 'local',
                                  compilation_cache='/scratch/cache')
  assert all('--compilation_cache=/scratch/cache' in run['command'] for run in moved['runs'])
  off = manifest.build_manifest('configs/default.py', 'fig6a', str(tmp_path), 'local',
                                compilation_cache=None)
  assert off['compilation_cache'] is None
  assert not any('--compilation_cache' in run['command'] for run in off['runs'])
