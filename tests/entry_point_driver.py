"""Runs many command lines in one interpreter, each as `python -m <command> <argv>` would.

  python tests/entry_point_driver.py CASES.json RESULTS.json

CASES.json is a list of {"command": "mnv2_jax.main", "argv": [...]}. For each
case the driver calls the command's entry function with `argv` and records its
exit status and everything written to file descriptor 2 (by Python and by
native code alike) into RESULTS.json as {"status": ..., "stderr": ...}. An
exception that escapes is recorded as the traceback the command would print,
with status 1. One interpreter start (10-15 s of imports) then serves every
case (tests/test_bad_inputs.py).
"""

import importlib
import json
import os
import sys
import tempfile
import traceback

# The module (as `python -m` names it) -> (the module defining it, its entry function).
ENTRY_POINTS = {
    'mnv2_jax.main': ('mnv2_jax.main', 'run'),
    'mnv2_jax.stats': ('mnv2_jax.stats.__main__', 'main'),
    'mnv2_jax.convert': ('mnv2_jax.convert', 'main'),
    'mnv2_jax.export': ('mnv2_jax.export', 'main'),
    'mnv2_jax.detect': ('mnv2_jax.detect', 'main'),
    'mnv2_jax.segment': ('mnv2_jax.segment', 'main'),
    'launch.sweep': ('launch.sweep', 'main'),
    'experiments.collect': ('experiments.collect', 'main'),
    'experiments.figures': ('experiments.figures', 'main'),
    'experiments.claims': ('experiments.claims', 'main'),
    'experiments.detection_baseline': ('experiments.detection_baseline', 'main'),
}


def _entry_function(command):
  module, function = ENTRY_POINTS[command]
  return getattr(importlib.import_module(module), function)


def _reset_absl_flags():
  """Forgets the previous case's flags, as a fresh `python -m mnv2_jax.main` would."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.unparse_flags()
  for name in list(flags.FLAGS):
    if name.startswith('config.'):  # ml_collections defines one flag per override given
      delattr(flags.FLAGS, name)


def run_case(command, argv):
  """(exit status, stderr) of `command` with `argv`."""
  function = _entry_function(command)
  sys.stdout.flush()
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      try:
        status = function(list(argv))
      except SystemExit as exit_request:
        status = exit_request.code
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        status = 1
      sys.stderr.flush()
    finally:
      os.dup2(saved_stderr, 2)
      os.close(saved_stderr)
      if command == 'mnv2_jax.main':
        _reset_absl_flags()
    captured.seek(0)
    stderr = captured.read().decode('utf-8', errors='replace')
  return status, stderr


def main():
  cases_path, results_path = sys.argv[1:3]
  with open(cases_path) as f:
    cases = json.load(f)
  results = []
  for case in cases:
    status, stderr = run_case(case['command'], case['argv'])
    results.append({'status': status, 'stderr': stderr})
  with open(results_path, 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
