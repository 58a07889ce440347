"""The end-of-run summary and curves.png (mnv2_jax.run_report, experiments.figures --workdir)."""

import json

import pytest

from experiments import figures
from mnv2_jax import run_report
from synthetic_runs import write_run

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

FINAL = {'step': 800, 'eval_top1': 0.503, 'eval_top5': 0.9315, 'eval_ema_top1': 0.4855,
         'eval_ema_top5': 0.92, 'best_eval_top1': 0.5125, 'best_eval_top1_step': 700,
         'best_eval_ema_top1': 0.4855, 'best_eval_ema_top1_step': 800,
         'wall_time_seconds': 135.24, 'mean_images_per_second': 412.34, 'params': 408938,
         'madds': 3203456}
RUN_INFO = {'model': 'mobilenet_v2', 'width_multiplier': 0.35, 'resolution': 48}


def test_summary_shows_every_number_of_final_metrics_and_where_to_look():
  summary = run_report.summary_text(FINAL, '/runs/default', RUN_INFO)
  assert summary.splitlines()[0] == ('Run finished at step 800: 135.2 s (2 min 15 s), 412.3 '
                                     'images/s while training')
  assert 'raw 50.30% / 93.15%   EMA 48.55% / 92.00%' in summary
  assert 'raw 51.25% at step 700   EMA 48.55% at step 800' in summary
  assert 'mobilenet_v2 width 0.35 at 48 px: 408,938 parameters, 3,203,456 multiply-adds' in summary
  assert '/runs/default' in summary and 'curves.png' in summary
  assert summary.splitlines()[-1].startswith('Open the curves: tensorboard --logdir '
                                             '/runs/default/tensorboard')


def test_summary_of_an_older_final_metrics_file_marks_what_it_lacks():
  older = {key: FINAL[key] for key in ('step', 'eval_top1', 'eval_top5', 'eval_ema_top1',
                                       'eval_ema_top5', 'best_eval_top1', 'best_eval_ema_top1',
                                       'wall_time_seconds', 'params', 'madds')}
  summary = run_report.summary_text(older, '/runs/old')
  assert 'raw 51.25%   EMA 48.55%' in summary and 'images/s' not in summary


def test_curves_of_a_running_workdir_are_drawn_and_redrawn_in_place(tmp_path, capsys):
  # Unfinished: a cut-short last line, a non-finite loss stored as a string.
  workdir = write_run(tmp_path, 'sweep/running', finished=False)
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('\n' + json.dumps({'step': 300, 'epoch': 6.0, 'train_loss': 'nan',
                               'learning_rate': 0.1}) + '\n')
  assert figures.main(['--workdir', str(workdir)]) == 0
  curves = workdir / run_report.CURVES_FILE
  assert capsys.readouterr().out.strip() == str(curves)
  assert curves.read_bytes()[:8] == PNG_SIGNATURE
  assert figures.main(['--workdir', str(workdir), '--out', str(tmp_path / 'elsewhere')]) == 0
  assert (tmp_path / 'elsewhere' / run_report.CURVES_FILE).read_bytes()[:8] == PNG_SIGNATURE
  assert [path.name for path in workdir.iterdir() if 'tmp' in path.name] == []


def test_a_workdir_that_logged_nothing_yet_has_no_curves(tmp_path, capsys):
  (tmp_path / 'metrics.jsonl').write_text('')
  assert run_report.write_curves(str(tmp_path)) is None
  assert figures.main(['--workdir', str(tmp_path)]) == 1
  assert 'nothing logged yet' in capsys.readouterr().out


@pytest.mark.parametrize('make, message', [
    (lambda path: path / 'missing', 'is not a directory'),
    (lambda path: path, 'has no metrics.jsonl'),
])
def test_figures_refuses_a_path_that_is_not_a_runs_workdir(tmp_path, capsys, make, message):
  assert figures.main(['--workdir', str(make(tmp_path))]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count('\n') == 1


def test_figures_takes_a_workroot_or_a_workdir_not_both(tmp_path, capsys):
  assert figures.main(['--workroot', str(tmp_path), '--workdir', str(tmp_path)]) == 2
  assert 'not allowed with argument' in capsys.readouterr().err
