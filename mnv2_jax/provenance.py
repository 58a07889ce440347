"""Where a run's numbers come from: the code, the libraries, the processor.

Figures from different processors or commits differ by float rounding (results/cpu/README.md: one
configuration, same seed, up to 1.3 points apart on two machines), so each start of a run records
what it ran on in run_info.json, and a result can be traced to its code and machine without
anyone's notes. Everything here is best effort: a missing git or /proc gives None, never an error.
"""

import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys
from typing import Optional

# The distributions whose versions decide what a run computes or how it reads its data.
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets')
# The vector extensions that matter to XLA:CPU and oneDNN.
CPU_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_bf16')
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def machine_description() -> dict:
  """`lscpu`'s model name, the vector extensions among CPU_FLAGS, and the number of CPUs."""
  model, flags = None, set()
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      for line in cpuinfo:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and model is None:
          model = value.strip()
        elif key.strip() == 'flags' and not flags:
          flags = set(value.split())
  except OSError:
    pass
  return {'cpu_model': model or platform.processor() or 'unknown',
          'cpu_flags': [flag for flag in CPU_FLAGS if flag in flags],
          'cpu_count': os.cpu_count()}


def _git(*args: str) -> Optional[str]:
  try:
    result = subprocess.run(['git', '-C', str(PACKAGE_DIR), *args], capture_output=True,
                            text=True, timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict:
  """The commit of the checkout this package runs from, and whether tracked files differ from it.

  {'commit': None, 'modified': None} for an installed copy outside a git checkout.
  """
  commit = _git('rev-parse', 'HEAD')
  if commit is None:
    return {'commit': None, 'modified': None}
  status = _git('status', '--porcelain', '--untracked-files=no')
  return {'commit': commit, 'modified': None if status is None else bool(status)}


def library_versions() -> dict:
  versions = {'python': platform.python_version()}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def environment(start_step: int, devices) -> dict:
  """One start of a run: the step it started from, code, libraries, processor and devices."""
  return {
      'start_step': int(start_step),
      'code': code_version(),
      'versions': library_versions(),
      'machine': machine_description(),
      'platform': devices[0].platform if devices else None,
      'device_kind': devices[0].device_kind if devices else None,
      'command': ' '.join(sys.argv),
  }


def starts_of_run(previous_run_info: Optional[dict], start_step: int, devices) -> list[dict]:
  """run_info.json's 'starts': the earlier starts that this one continues, then this one.

  A run resumed on another machine or from other code keeps both records. Starts at or after
  `start_step` are dropped: nothing they trained survives (the run resumes from an earlier
  checkpoint, or from step 0).
  """
  earlier = (previous_run_info or {}).get('starts', [])
  return [start for start in earlier if start.get('start_step', 0) < start_step] + [
      environment(start_step, devices)]
