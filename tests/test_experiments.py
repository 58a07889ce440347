"""experiments.collect and experiments.figures on synthetic workroots (contracts.md layout)."""

import csv
import json
import math
import pathlib

import numpy as np
import pytest

from experiments import collect, detection_baseline, figures
from synthetic_runs import write_run

SWEEP_RESOLUTIONS = (32, 48, 64)
SWEEP_WIDTHS = (0.35, 1.0)


@pytest.fixture
def workroot(tmp_path):
  root = tmp_path / 'sweeps'
  for width in SWEEP_WIDTHS:
    for resolution in SWEEP_RESOLUTIONS:
      accuracy = 0.2 + 0.3 * width + resolution / 200
      finished = not (width == 1.0 and resolution == 64)
      write_run(root, f'fig5/v2_w{width}_r{resolution}', width=width, resolution=resolution,
                evals=((100, accuracy - 0.1), (200, accuracy)), finished=finished)
  write_run(root, 'fig5/v2_w1.4_r64', width=1.4, resolution=64, evals=((100, 0.7), (200, 0.8)))
  write_run(root, 'fig5/v1_w1.0_r64', model='mobilenet_v1', width=1.0, resolution=64,
            evals=((100, 0.5), (200, 0.6)))
  write_run(root, 'fig5/v1_w1.0_r48', model='mobilenet_v1', width=1.0, resolution=48,
            evals=((100, 0.4), (200, 0.5)))
  write_run(root, 'fig6a/linear_bottleneck', evals=((100, 0.4), (200, 0.6), (300, 0.7)))
  write_run(root, 'fig6a/relu6_bottleneck', activation='relu6',
            evals=((100, 0.3), (200, 0.5), (300, 0.6)))
  for shortcut, name in (('bottleneck', 'shortcut_bottleneck'),
                         ('expansion', 'shortcut_expansion'), ('none', 'no_shortcut')):
    write_run(root, f'fig6b/{name}', shortcut=shortcut, evals=((100, 0.4), (200, 0.55)))
  for t in (1, 2, 6):
    write_run(root, f'expansion/t{t}', expansion_ratio=t, evals=((100, 0.3), (200, 0.4 + t / 100)))
  # A run that failed before writing anything: only the manifest knows it.
  (root / 'fig6b').mkdir(exist_ok=True)
  (root / 'fig6b' / 'manifest.json').write_text(json.dumps({'sweep': 'fig6b', 'runs': [
      {'name': 'fig6b/broken', 'overrides': {'model.shortcut': 'sideways'},
       'workdir': str(root / 'fig6b' / 'broken'), 'command': '...', 'status': 'failed'}]}))
  return root


def test_collect_has_one_row_per_run_with_every_column(workroot, tmp_path):
  out = tmp_path / 'results.csv'
  assert collect.main(['--workroot', str(workroot), '--out', str(out)]) == 0
  with open(out) as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  assert tuple(reader.fieldnames) == collect.COLUMNS
  for column in ('sweep', 'name', 'model', 'width_multiplier', 'resolution', 'expansion_ratio',
                 'bottleneck_activation', 'shortcut', 'params', 'madds', 'step', 'final_top1',
                 'final_top5', 'final_ema_top1', 'final_ema_top5', 'best_top1', 'best_top5',
                 'best_ema_top1', 'best_ema_top5', 'wall_time_seconds'):
    assert column in reader.fieldnames
  names = [row['name'] for row in rows]
  assert len(names) == 6 + 1 + 2 + 2 + 4 + 3  # checkpoint config.json files are not runs
  assert 'fig6b/broken' in names
  by_name = {row['name']: row for row in rows}
  assert {row['sweep'] for row in rows} == {'fig5', 'fig6a', 'fig6b', 'expansion'}
  finished = by_name['fig5/v2_w0.35_r48']
  assert finished['status'] == 'finished'
  assert float(finished['final_top1']) == pytest.approx(100 * (0.2 + 0.105 + 0.24))
  assert float(finished['final_ema_top1']) == pytest.approx(100 * (0.2 + 0.105 + 0.24 - 0.01))
  assert float(finished['wall_time_seconds']) == 12.5
  assert finished['shortcut'] == 'bottleneck' and finished['expansion_ratio'] == '6'


def test_collect_marks_partial_runs_and_uses_their_last_eval(workroot):
  rows = {row['name']: row for row in collect.collect(workroot)}
  partial = rows['fig5/v2_w1.0_r64']
  assert partial['status'] == 'unfinished'
  assert partial['step'] == 200
  assert partial['final_top1'] == pytest.approx(100 * (0.5 + 0.32))
  assert partial['best_top5'] == pytest.approx(100.0)
  assert partial['wall_time_seconds'] is None
  assert rows['fig6b/broken']['status'] == 'failed'
  assert rows['fig6b/broken']['final_top1'] is None
  v1 = rows['fig5/v1_w1.0_r64']
  assert v1['model'] == 'mobilenet_v1' and v1['expansion_ratio'] is None
  assert rows['fig6a/relu6_bottleneck']['bottleneck_activation'] == 'relu6'
  assert rows['fig6a/relu6_bottleneck']['best_top1'] == pytest.approx(60.0)


def seeded_workroot(root: pathlib.Path, finals_of_linear=(0.50, 0.56, 0.62)) -> pathlib.Path:
  """fig6a with the linear bottleneck at three seeds and ReLU6 at one."""
  for seed, final in enumerate(finals_of_linear):
    write_run(root, f'fig6a/linear_bottleneck/seed{seed}', seed=seed,
              evals=((100, final - 0.2), (200, final)))
  write_run(root, 'fig6a/relu6_bottleneck/seed0', activation='relu6', seed=0,
            evals=((100, 0.3), (200, 0.4)))
  return root


def test_seeded_runs_carry_their_seed_and_configuration(tmp_path):
  rows = collect.collect(seeded_workroot(tmp_path / 'sweeps'))
  assert [(row['configuration'], row['seed']) for row in rows] == [
      ('fig6a/linear_bottleneck', 0), ('fig6a/linear_bottleneck', 1),
      ('fig6a/linear_bottleneck', 2), ('fig6a/relu6_bottleneck', 0)]
  assert rows[1]['name'] == 'fig6a/linear_bottleneck/seed1' and rows[1]['sweep'] == 'fig6a'
  assert collect.split_seed('fig5/v2_w0.35_r96') == ('fig5/v2_w0.35_r96', None)


def test_aggregate_gives_mean_std_and_the_95_percent_t_interval_over_seeds(tmp_path):
  root = seeded_workroot(tmp_path / 'sweeps')
  out = tmp_path / 'results' / 'results.csv'
  assert collect.main(['--workroot', str(root), '--out', str(out)]) == 0
  with open(tmp_path / 'results' / 'results_aggregate.csv') as f:
    reader = csv.DictReader(f)
    rows = {row['configuration']: row for row in reader}
  assert tuple(reader.fieldnames) == collect.AGGREGATE_COLUMNS
  linear = rows['fig6a/linear_bottleneck']
  # 50, 56 and 62%: mean 56, standard deviation 6, and 56 +- t(0.975; 2) * 6 / sqrt(3).
  half_width = 4.302653 * 6 / math.sqrt(3)
  assert (linear['n'], linear['n_finished'], linear['seeds']) == ('3', '3', '0 1 2')
  assert float(linear['final_top1_mean']) == pytest.approx(56.0)
  assert float(linear['final_top1_std']) == pytest.approx(6.0)
  assert float(linear['final_top1_ci95_low']) == pytest.approx(56.0 - half_width, abs=1e-4)
  assert float(linear['final_top1_ci95_high']) == pytest.approx(56.0 + half_width, abs=1e-4)
  assert float(linear['final_ema_top1_mean']) == pytest.approx(55.0)  # EMA is 1 point lower
  assert linear['status'] == 'finished' and linear['bottleneck_activation'] == 'linear'
  # One seed: its value, and no spread or interval.
  relu6 = rows['fig6a/relu6_bottleneck']
  assert relu6['n'] == '1' and float(relu6['final_top1_mean']) == pytest.approx(40.0)
  assert relu6['final_top1_std'] == relu6['final_top1_ci95_low'] == ''


def test_aggregate_path_and_option(tmp_path):
  assert collect.aggregate_path(pathlib.Path('results/cpu/results.csv')) == pathlib.Path(
      'results/cpu/results_aggregate.csv')
  root = seeded_workroot(tmp_path / 'sweeps')
  assert collect.main(['--workroot', str(root), '--out', str(tmp_path / 'runs.csv'),
                       '--aggregate-out', str(tmp_path / 'by_configuration.csv')]) == 0
  assert (tmp_path / 'by_configuration.csv').read_text().count('\n') == 1 + 2


@pytest.mark.parametrize('evals, finished, converged', [
    # Total 400 steps: the last quarter starts at step 300.
    (((100, 0.30), (300, 0.59), (400, 0.60)), True, True),      # +1 point
    (((100, 0.30), (300, 0.57), (400, 0.60)), True, False),     # +3 points
    (((100, 0.30), (200, 0.59), (400, 0.60)), True, True),      # latest eval before 300
    (((100, 0.30), (300, 0.65), (400, 0.60)), True, True),      # a loss counts as settled
    (((400, 0.60),), True, None),                               # no eval before the window
    (((100, 0.30), (300, 0.59), (400, 0.60)), False, None),     # unfinished
])
def test_converged_means_less_than_2_points_of_ema_top1_in_the_last_quarter(
    tmp_path, evals, finished, converged):
  write_run(tmp_path, 'fig6a/run', evals=evals, finished=finished)
  [row] = collect.collect(tmp_path)
  assert row['converged'] is converged


def test_converged_fraction_counts_the_runs_where_the_rule_decides(tmp_path):
  for seed, evals in enumerate((((100, 0.3), (300, 0.59), (400, 0.60)),
                                ((100, 0.3), (300, 0.50), (400, 0.60)),
                                ((400, 0.60),))):
    write_run(tmp_path, f'fig6a/run/seed{seed}', seed=seed, evals=evals)
  [row] = collect.aggregate(collect.collect(tmp_path))
  assert row['converged_fraction'] == 0.5 and row['n_convergence_known'] == 2
  assert row['n_converged'] == 1


def test_each_run_names_the_processors_and_commits_it_ran_on(tmp_path):
  def start(step, cpu, commit, modified=False):
    return {'start_step': step, 'machine': {'cpu_model': cpu},
            'code': {'commit': commit, 'modified': modified}}
  write_run(tmp_path, 'fig6a/moved/seed0', starts=[
      start(0, 'AMD EPYC', 'a' * 40), start(400, 'AMD EPYC', 'a' * 40),
      start(800, 'Intel(R) Xeon(R) Processor', 'b' * 40, modified=True)])
  write_run(tmp_path, 'fig6a/old/seed0')  # written before run_info.json had its starts
  write_run(tmp_path, 'fig6a/installed/seed0', starts=[start(0, 'AMD EPYC', None)])
  rows = {row['name']: row for row in collect.collect(tmp_path)}
  assert rows['fig6a/moved/seed0']['cpu_models'] == 'AMD EPYC + Intel(R) Xeon(R) Processor'
  assert rows['fig6a/moved/seed0']['code_commits'] == 'aaaaaaaaaaaa + bbbbbbbbbbbb+modified'
  assert rows['fig6a/old/seed0']['cpu_models'] is None
  assert rows['fig6a/old/seed0']['code_commits'] is None
  assert rows['fig6a/installed/seed0']['code_commits'] is None


def test_a_run_that_never_left_chance_converges_but_has_not_learned(tmp_path):
  # 10 classes (synthetic_runs): chance 10%, learned from 20% EMA top-1 on.
  for seed, final in enumerate((0.11, 0.19, 0.25, 0.60)):  # EMA: 1 point lower
    write_run(tmp_path, f'fig6b/run/seed{seed}', seed=seed,
              evals=((100, final), (300, final), (400, final)))
  rows = collect.collect(tmp_path)
  assert [row['converged'] for row in rows] == [True] * 4
  assert [row['learned'] for row in rows] == [False, False, True, True]
  [aggregate] = collect.aggregate(rows)
  assert aggregate['learned_fraction'] == 0.5


def _lines(ax):
  return {line.get_label(): line for line in ax.get_lines()}


def test_figure5_has_a_line_per_resolution_and_per_width_and_v1_points(workroot):
  rows = collect.collect(workroot)
  made = figures.make_figures(rows, metric='final_top1')
  assert set(made) == {'figure5', 'figure6a', 'figure6b', 'expansion'}
  ours, reference = made['figure5'].axes
  lines = _lines(ours)
  for resolution in SWEEP_RESOLUTIONS:
    assert f'MobileNetV2, {resolution} px' in lines
  top = lines['MobileNetV2, 64 px']
  # Widths 0.35, 1.0 and 1.4 at 64 px, ordered by MAdds.
  assert len(top.get_xdata()) == 3
  assert list(top.get_xdata()) == sorted(top.get_xdata())
  assert top.get_ydata()[-1] == pytest.approx(80.0)
  width_line = lines['MobileNetV2, width 0.35']
  assert list(width_line.get_ydata()) == pytest.approx(
      [100 * (0.2 + 0.105 + r / 200) for r in SWEEP_RESOLUTIONS])
  assert 'MobileNetV2, width 1.4' not in lines  # a single point is no line
  assert sorted(lines['MobileNetV1'].get_ydata()) == pytest.approx([50.0, 60.0])
  assert ours.get_xscale() == 'log'
  assert 'multiply-adds' in ours.get_xlabel() and 'top-1' in ours.get_ylabel()
  assert 'procedural_shapes' in ours.get_title() and '32-64 px' in ours.get_title()
  # Not ImageNet: the official numbers go to their own panel, 21 points of Figure 5.
  reference_lines = _lines(reference)
  official = [line for label, line in reference_lines.items() if label.endswith(' px')]
  assert sum(len(line.get_xdata()) for line in official) == 21
  assert reference_lines['MobileNetV2, 224 px'].get_ydata()[-1] == 75.0  # 1.4@224
  assert len(reference_lines['MobileNetV1'].get_xdata()) == 7
  assert 'ImageNet' in reference.get_title()


def test_figure5_overlays_the_reference_on_imagenet_runs(workroot):
  rows = collect.collect(workroot)
  for row in rows:
    row['dataset'] = 'imagenet2012'
  figure = figures.make_figures(rows, metric='final_top1')['figure5']
  assert len(figure.axes) == 1
  labels = _lines(figure.axes[0])
  assert 'MobileNetV2, 64 px' in labels and 'ImageNet reference: MobileNetV2, 96 px' in labels


def test_figure6_has_one_training_curve_per_variant(workroot):
  made = figures.make_figures(collect.collect(workroot))
  lines_6a = _lines(made['figure6a'].axes[0])
  # One seed each: no band, and the legend says so.
  assert set(lines_6a) == {'Linear bottleneck (n = 1, no band)',
                           'ReLU6 in bottleneck (n = 1, no band)'}
  assert not made['figure6a'].axes[0].collections
  assert list(lines_6a['Linear bottleneck (n = 1, no band)'].get_xdata()) == [100, 200, 300]
  # The default metric is the EMA weights' accuracy.
  assert list(lines_6a['ReLU6 in bottleneck (n = 1, no band)'].get_ydata()) == pytest.approx(
      [29.0, 49.0, 59.0])
  assert made['figure6a'].axes[0].get_xlabel() == 'training step'
  # In the paper's legend order.
  assert [line.get_label() for line in made['figure6b'].axes[0].get_lines()] == [
      'Shortcut between bottlenecks (n = 1, no band)',
      'Shortcut between expansions (n = 1, no band)', 'No residual (n = 1, no band)']


def test_expansion_figure_plots_final_top1_against_t(workroot):
  figure = figures.make_figures(collect.collect(workroot), metric='final_top1')['expansion']
  final_ax, curves_ax = figure.axes
  line = _lines(final_ax)['MobileNetV2']
  assert list(line.get_xdata()) == [1, 2, 6]
  assert list(line.get_ydata()) == pytest.approx([41.0, 42.0, 46.0])
  assert set(_lines(curves_ax)) == {'t = 1', 't = 2', 't = 6'}


# Three seeds whose final raw top-1 lies 3 points below, at and above the
# configuration's accuracy: mean = that accuracy, std = 3 points.
SEED_OFFSETS = (-0.03, 0.0, 0.03)
HALF_WIDTH_3_SEEDS = 4.302653 * 3 / math.sqrt(3)  # t(0.975; 2) * std / sqrt(n)


def _accuracy(width, resolution):
  return 0.2 + 0.3 * width + resolution / 200


@pytest.fixture
def three_seed_workroot(tmp_path):
  """fig5, fig6a and expansion at three seeds, each with one configuration at one seed."""
  root = tmp_path / 'seeds'
  for seed, offset in enumerate(SEED_OFFSETS):
    for width in SWEEP_WIDTHS:
      for resolution in (32, 64):
        accuracy = _accuracy(width, resolution)
        write_run(root, f'fig5/v2_w{width}_r{resolution}/seed{seed}', width=width,
                  resolution=resolution, seed=seed,
                  evals=((100, accuracy - 0.1), (200, accuracy + offset)))
    write_run(root, f'fig5/v1_w1.0_r64/seed{seed}', model='mobilenet_v1', resolution=64,
              seed=seed, evals=((100, 0.4), (200, 0.5 + offset)))
    write_run(root, f'fig6a/linear_bottleneck/seed{seed}', seed=seed,
              evals=((100, 0.4 + offset), (200, 0.6 + offset)))
    for t in (2, 6):
      write_run(root, f'expansion/t{t}/seed{seed}', expansion_ratio=t, seed=seed,
                evals=((100, 0.3), (200, 0.4 + t / 100 + offset)))
  write_run(root, 'fig5/v2_w1.4_r64/seed0', width=1.4, resolution=64,
            evals=((100, 0.7), (200, 0.8)))
  write_run(root, 'fig6a/relu6_bottleneck/seed0', activation='relu6',
            evals=((100, 0.3), (200, 0.5)))
  write_run(root, 'expansion/t1/seed0', expansion_ratio=1, evals=((100, 0.3), (200, 0.41)))
  return root


def _error_bars(ax):
  """(x, low, high) of every error bar on `ax`, sorted."""
  return sorted((float(x), float(low), float(high)) for container in ax.containers
                for collection in container.lines[2]
                for (x, low), (_, high) in collection.get_segments())


def test_figure5_points_are_means_over_seeds_with_95_percent_interval_bars(
    three_seed_workroot):
  figure = figures.make_figures(collect.collect(three_seed_workroot), metric='final_top1',
                                reference='none')['figure5']
  [ax] = figure.axes
  lines = _lines(ax)
  assert list(lines['MobileNetV2, 32 px'].get_ydata()) == pytest.approx(
      [100 * _accuracy(width, 32) for width in SWEEP_WIDTHS])
  bars = _error_bars(ax)
  # Four V2 points and the V1 point have three seeds; 1.4@64 has one and no bar.
  assert len(bars) == 5
  for x, low, high in bars:
    assert high - low == pytest.approx(2 * HALF_WIDTH_3_SEEDS)
  v1_x = lines['MobileNetV1'].get_xdata()[0]
  assert (v1_x, 50.0 - HALF_WIDTH_3_SEEDS, 50.0 + HALF_WIDTH_3_SEEDS) == pytest.approx(
      [bar for bar in bars if bar[0] == pytest.approx(v1_x)][0])
  single = lines[figures.SINGLE_RUN_LABEL]
  assert list(single.get_ydata()) == pytest.approx([80.0])
  assert 'mean of n = 1-3 seeds' in ax.get_title()


def test_figure5_with_one_seed_everywhere_has_no_bars_and_says_so(workroot):
  [ours, _] = figures.make_figures(collect.collect(workroot))['figure5'].axes
  assert _error_bars(ours) == []
  assert len(_lines(ours)[figures.SINGLE_RUN_LABEL].get_xdata()) == 6 + 1 + 2
  assert 'one seed per point' in ours.get_title()


def test_figure6a_draws_the_mean_curve_with_a_shaded_interval(three_seed_workroot):
  ax = figures.make_figures(collect.collect(three_seed_workroot))['figure6a'].axes[0]
  lines = _lines(ax)
  assert set(lines) == {'Linear bottleneck (n = 3)', 'ReLU6 in bottleneck (n = 1, no band)'}
  # EMA top-1 is 1 point below the raw top-1 of 40% and 60%.
  assert list(lines['Linear bottleneck (n = 3)'].get_ydata()) == pytest.approx([39.0, 59.0])
  [band] = ax.collections  # the single-seed curve has none
  low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
  assert (low, high) == pytest.approx((39.0 - HALF_WIDTH_3_SEEDS, 59.0 + HALF_WIDTH_3_SEEDS))


def test_expansion_figure_has_interval_bars_over_seeds(three_seed_workroot):
  final_ax, curves_ax = figures.make_figures(
      collect.collect(three_seed_workroot), metric='final_top1')['expansion'].axes
  assert list(_lines(final_ax)['MobileNetV2'].get_ydata()) == pytest.approx([41.0, 42.0, 46.0])
  [bar_t2, bar_t6] = _error_bars(final_ax)
  assert bar_t2 == pytest.approx((2.0, 42.0 - HALF_WIDTH_3_SEEDS, 42.0 + HALF_WIDTH_3_SEEDS))
  assert bar_t6 == pytest.approx((6.0, 46.0 - HALF_WIDTH_3_SEEDS, 46.0 + HALF_WIDTH_3_SEEDS))
  assert list(_lines(final_ax)[figures.SINGLE_RUN_LABEL].get_xdata()) == [1.0]
  assert set(_lines(curves_ax)) == {'t = 1', 't = 2', 't = 6'}


def test_figures_render_with_three_seeds(three_seed_workroot, tmp_path):
  out = tmp_path / 'figures'
  assert figures.main(['--workroot', str(three_seed_workroot), '--out', str(out)]) == 0
  assert sorted(path.name for path in out.glob('*.png')) == [
      'expansion.png', 'figure5.png', 'figure6a.png']


def test_figures_cli_writes_png_and_pdf_for_the_sweeps_it_has(workroot, tmp_path):
  out = tmp_path / 'figures'
  assert figures.main(['--workroot', str(workroot), '--out', str(out)]) == 0
  assert sorted(path.name for path in out.iterdir()) == sorted(
      f'{name}.{extension}' for name in ('figure5', 'figure6a', 'figure6b', 'expansion')
      for extension in ('png', 'pdf'))
  assert (out / 'figure5.png').read_bytes()[:4] == b'\x89PNG'
  assert (out / 'figure5.pdf').read_bytes()[:4] == b'%PDF'


def test_figures_skip_sweeps_without_data(tmp_path):
  root = tmp_path / 'only6a'
  write_run(root, 'fig6a/linear_bottleneck')
  assert set(figures.make_figures(collect.collect(root))) == {'figure6a'}
  assert figures.main(['--workroot', str(tmp_path / 'only6a' / 'fig6a' / 'linear_bottleneck'),
                       '--out', str(tmp_path / 'none')]) == 1


def test_metric_falls_back_to_raw_weights_without_ema():
  assert figures.metric_value({'final_ema_top1': None, 'final_top1': 42.0},
                              'final_ema_top1') == 42.0
  assert math.isclose(figures.metric_value({'final_ema_top1': 41.0, 'final_top1': 42.0},
                                           'final_ema_top1'), 41.0)


def test_random_detection_boxes_are_valid_corners_of_any_class_and_repeat_for_a_seed():
  first = detection_baseline.random_detections(50, 100, 20, seed=3)
  again = detection_baseline.random_detections(50, 100, 20, seed=3)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  boxes = first['boxes']
  assert boxes.shape == (50, 100, 4) and 0 <= boxes.min() and boxes.max() <= 1
  sides = boxes[..., 2:] - boxes[..., :2]
  assert sides.min() >= detection_baseline.MIN_SIDE * 0.99
  assert set(np.unique(first['classes'])) == set(range(20)) and first['valid'].all()


def test_figures_regenerated_from_the_same_runs_are_the_same_files(workroot, tmp_path):
  for out in ('first', 'second'):
    assert figures.main(['--workroot', str(workroot), '--out', str(tmp_path / out)]) == 0
  for path in sorted((tmp_path / 'first').iterdir()):
    assert path.read_bytes() == (tmp_path / 'second' / path.name).read_bytes(), path.name
