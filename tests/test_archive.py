"""experiments.archive: finished runs' small files into the repository and back."""

from experiments import archive, collect
from synthetic_runs import write_run

def test_archive_keeps_the_four_files_of_finished_runs_only(tmp_path):
  workroot, runs = tmp_path / 'sweeps', tmp_path / 'runs'
  write_run(workroot, 'fig6a/linear_bottleneck/seed0')
  write_run(workroot, 'fig6a/linear_bottleneck/seed1', seed=1, finished=False)
  assert archive.main(['--workroot', str(workroot), '--out', str(runs)]) == 0
  kept = sorted(str(path.relative_to(runs)) for path in runs.rglob('*') if path.is_file())
  assert kept == sorted(f'fig6a/linear_bottleneck/seed0/{name}' for name in collect.RUN_FILES)

def test_the_archive_collects_as_its_workroot_did(tmp_path):
  workroot, runs = tmp_path / 'sweeps', tmp_path / 'runs'
  for seed, top1 in enumerate((0.7, 0.8, 0.9)):
    write_run(workroot, f'fig6b/no_shortcut/seed{seed}', seed=seed, shortcut='none',
              evals=((100, top1 - 0.2), (200, top1)))
  archive.main(['--workroot', str(workroot), '--out', str(runs)])
  ignored = {'workdir'}
  strip = lambda rows: [{k: v for k, v in row.items() if k not in ignored} for row in rows]
  assert strip(collect.collect(runs)) == strip(collect.collect(workroot))

def test_restore_makes_a_new_workroot_count_archived_runs_as_finished(tmp_path, capsys):
  from launch import manifest
  workroot, runs, fresh = tmp_path / 'sweeps', tmp_path / 'runs', tmp_path / 'new_machine'
  write_run(workroot, 'fig6a/relu6_bottleneck/seed2', seed=2, activation='relu6')
  archive.main(['--workroot', str(workroot), '--out', str(runs)])
  assert archive.main(['--restore', '--workroot', str(fresh), '--out', str(runs)]) == 0
  assert 'restored 1 finished runs (1 new)' in capsys.readouterr().out
  assert manifest.is_finished(str(fresh / 'fig6a/relu6_bottleneck/seed2'))

def test_a_missing_workroot_is_one_line_naming_it(tmp_path, capsys):
  assert archive.main(['--workroot', str(tmp_path / 'nowhere'), '--out', str(tmp_path)]) == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith('error: ') and 'nowhere' in error and '\n' not in error
