"""Each start of a run records the code, libraries and processor its numbers come from."""

import re
import subprocess

import jax

from mnv2_jax import provenance


def test_the_machine_is_described_by_its_cpu_model_flags_and_count():
  machine = provenance.machine_description()
  assert machine['cpu_model'] and machine['cpu_count'] >= 1
  assert set(machine['cpu_flags']) <= set(provenance.CPU_FLAGS)


def test_code_version_is_the_commit_of_the_checkout_the_package_runs_from():
  head = subprocess.run(['git', '-C', str(provenance.PACKAGE_DIR), 'rev-parse', 'HEAD'],
                        capture_output=True, text=True, check=False)
  code = provenance.code_version()
  if head.returncode != 0:  # an installed copy, outside a checkout
    assert code == {'commit': None, 'modified': None}
  else:
    assert code['commit'] == head.stdout.strip() and re.fullmatch('[0-9a-f]{40}', code['commit'])
    assert isinstance(code['modified'], bool)


def test_outside_a_git_checkout_the_code_version_is_unknown_not_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(provenance, 'PACKAGE_DIR', tmp_path)
  assert provenance.code_version() == {'commit': None, 'modified': None}


def test_library_versions_name_what_decides_a_runs_numbers():
  versions = provenance.library_versions()
  assert versions['jax'] == jax.__version__
  assert set(provenance.LIBRARIES) <= set(versions) and versions['python']


def _start(step):
  return {'start_step': step, 'code': {'commit': f'c{step}'}}


def test_a_resumed_run_keeps_its_earlier_starts():
  previous = {'starts': [_start(0), _start(400)]}
  starts = provenance.starts_of_run(previous, 800, jax.devices())
  assert [start['start_step'] for start in starts] == [0, 400, 800]
  assert starts[:2] == previous['starts']
  assert starts[-1]['device_kind'] == jax.devices()[0].device_kind


def test_starts_whose_training_was_discarded_are_dropped():
  previous = {'starts': [_start(0), _start(400), _start(800)]}
  # resumed from the checkpoint at 400: what the starts at 400 and 800 trained is gone
  assert [s['start_step'] for s in provenance.starts_of_run(previous, 400, [])] == [0, 400]
  # started again from scratch
  assert [s['start_step'] for s in provenance.starts_of_run(previous, 0, [])] == [0]
  # a workdir written before run_info.json had starts
  assert [s['start_step'] for s in provenance.starts_of_run({'params': 1}, 400, [])] == [400]
  assert provenance.starts_of_run(None, 0, [])[0]['platform'] is None
