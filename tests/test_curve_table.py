"""experiments.curve_table: top-1 at chosen steps over seeds, the table of results/cpu/PROTOCOL.md."""

from experiments import curve_table
from synthetic_runs import write_run


def test_each_step_shows_mean_std_and_range_over_the_seeds_that_reached_it(tmp_path):
  for seed, (early, late) in enumerate([(0.10, 0.50), (0.20, 0.60), (0.30, 0.70)]):
    write_run(tmp_path, f'plateau/slim_init/seed{seed}', evals=((100, early), (200, late)),
              seed=seed)
  write_run(tmp_path, 'plateau/zero_classifier/seed0', evals=((100, 0.40), (200, 0.90)))
  write_run(tmp_path, 'plateau/zero_classifier/seed1', evals=((100, 0.50),), finished=False)

  rows = {row['configuration']: row for row in curve_table.curve_rows(tmp_path / 'plateau',
                                                                      [100, 200])}
  assert rows['slim_init']['top1_at_step'] == {100: [10.0, 20.0, 30.0], 200: [50.0, 60.0, 70.0]}
  assert rows['slim_init']['final_ema_top1'] == [49.0, 59.0, 69.0]
  # An unfinished seed counts where it has evals and has no final accuracy.
  assert rows['zero_classifier']['top1_at_step'] == {100: [40.0, 50.0], 200: [90.0]}
  assert rows['zero_classifier']['seeds'] == 2

  table = curve_table.markdown(list(rows.values()), [100, 200]).splitlines()
  assert table[0] == ('| configuration | top-1 @ 100 | top-1 @ 200 | final EMA top-1 | seeds |')
  assert table[2] == ('| slim_init | 20.0 ± 10.0 (10.0-30.0) | 60.0 ± 10.0 (50.0-70.0) '
                      '| 59.0 ± 10.0 (49.0-69.0) | 3 |')
  assert table[3] == '| zero_classifier | 45.0 ± 7.1 (40.0-50.0) | 90.0 | 89.0 | 2 |'


def test_a_missing_sweep_is_one_error_line(tmp_path, capsys):
  assert curve_table.main(['--workroot', str(tmp_path), '--sweep', 'plateau']) == 2
  error = capsys.readouterr().err
  assert error.startswith('error: ') and error.count('\n') == 1 and 'plateau' in error
