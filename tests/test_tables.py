"""experiments.tables: the results pages' tables come from the runs, with known numbers."""

import pytest

from experiments import collect, tables
from synthetic_runs import write_run

SETTLED = ((100, 0.90), (200, 0.91))  # EMA top-1 gains 1 point over the last quarter
CLIMBING = ((100, 0.30), (200, 0.50))  # gains 20 points: not converged


@pytest.fixture
def workroot(tmp_path):
  """fig5: two V2 cells and a V1 point over seeds; expansion with t = 2 and 10; fig6b climbing."""
  root = tmp_path / 'runs'
  for seed, top1 in enumerate((0.90, 0.92, 0.94)):
    write_run(root, f'fig5/v2_w0.35_r40/seed{seed}', width=0.35, resolution=40, seed=seed,
              evals=((100, top1 - 0.005), (200, top1)))
    write_run(root, f'fig5/v2_w0.35_r48/seed{seed}', width=0.35, resolution=48, seed=seed,
              evals=SETTLED)
  write_run(root, 'fig5/v1_w1.0_r64/seed0', model='mobilenet_v1', resolution=64, evals=SETTLED)
  write_run(root, 'expansion/t10/seed0', expansion_ratio=10, evals=SETTLED)
  write_run(root, 'expansion/t2/seed0', expansion_ratio=2, evals=SETTLED)
  write_run(root, 'fig6b/no_shortcut/seed0', shortcut='none', evals=CLIMBING)
  write_run(root, 'fig6b/no_shortcut/seed1', shortcut='none', seed=1, evals=CLIMBING,
            finished=False)  # unfinished: not in the tally
  return root


def test_convergence_tally_counts_finished_runs_per_sweep_and_over_all(workroot):
  tally = {entry['sweep']: entry for entry in tables.convergence_tally(collect.collect(workroot))}
  assert (tally['fig5']['runs'], tally['fig5']['converged']) == (7, 7)
  assert (tally['fig6b']['runs'], tally['fig6b']['converged']) == (1, 0)
  assert (tally['all']['runs'], tally['all']['converged']) == (10, 9)
  assert tally['all']['fraction'] == pytest.approx(0.9)


def test_the_page_states_whether_each_sweep_meets_the_90_percent_target(workroot):
  text = tables.render(workroot)
  assert '| fig5 | 7 | 7 | 100.0% | met |' in text
  assert '| fig6b | 1 | 0 | 0.0% | not met |' in text
  assert '| **all** | 10 | 9 | 90.0% | met |' in text


def test_a_configuration_row_has_mean_sd_t_interval_and_each_seed(workroot):
  text = tables.render(workroot)
  # EMA top-1 is top-1 - 1 point: 89, 91, 93 -> mean 91, sd 2, t(2) = 4.303 -> +-4.97.
  row = next(line for line in text.splitlines() if line.startswith('| `fig5/v2_w0.35_r40`'))
  assert '| 0 1 2 |' in row
  assert '91.00 ± 2.00' in row
  assert '[86.03, 95.97]' in row
  assert '89.00 / 91.00 / 93.00' in row
  assert '| 3/3 | 100% |' in row


def test_runs_not_converged_or_unfinished_are_marked_and_one_seed_has_no_interval(workroot):
  lines = tables.render(workroot).splitlines()
  row = next(line for line in lines if line.startswith('| `fig6b/no_shortcut`'))
  assert '| 49.00* / 49.00 (unfinished) | 0/1 |' in row
  row = next(line for line in lines if line.startswith('| `expansion/t2`'))
  assert '| n = 1 |' in row


def test_configurations_sort_by_their_numbers(workroot):
  text = tables.render(workroot)
  assert text.index('`expansion/t2`') < text.index('`expansion/t10`')


def test_figure5_grid_has_a_cell_per_width_and_resolution_and_the_v1_points(workroot):
  text = tables.render(workroot)
  assert '| MobileNetV2 width \\ resolution | 40 px | 48 px |' in text
  grid_row = next(line for line in text.splitlines() if line.startswith('| 0.35 |'))
  assert grid_row.startswith('| 0.35 | 91.00 [86.03, 95.97]')
  assert '| 1.0 | 64 px |' in text  # MobileNetV1's point


def test_command_line_writes_the_page_and_refuses_a_missing_workroot(workroot, tmp_path, capsys):
  out = tmp_path / 'TABLES.md'
  assert tables.main(['--workroot', str(workroot), '--out', str(out)]) == 0
  assert out.read_text().startswith('# Tables of the archived runs')
  assert tables.main(['--workroot', str(tmp_path / 'missing')]) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and 'missing' in error[0]
