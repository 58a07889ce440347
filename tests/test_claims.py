"""experiments.claims on synthetic runs whose verdicts are known."""

import json
import math

import pytest

from experiments import claims
from synthetic_runs import write_run

T_975_DF2 = 4.302653  # three seeds: t(0.975; 2)


def run(sweep, configuration, seed, top1, *, model='mobilenet_v2', width=1.0, resolution=64,
        madds=None, expansion_ratio=6, activation='linear', shortcut='bottleneck',
        status='finished'):
  """A row as experiments.collect gives it, with the fields the claims read."""
  return {'sweep': sweep, 'name': f'{sweep}/{configuration}/seed{seed}',
          'configuration': f'{sweep}/{configuration}', 'seed': seed, 'status': status,
          'model': model, 'width_multiplier': width, 'resolution': resolution, 'madds': madds,
          'expansion_ratio': expansion_ratio if model == 'mobilenet_v2' else None,
          'bottleneck_activation': activation, 'shortcut': shortcut, 'final_ema_top1': top1}


def fig6a(linear, relu6, relu6_seeds=None):
  """Runs of Figure 6a with the given top-1 per seed (seeds 0, 1, ... unless given)."""
  relu6_seeds = relu6_seeds or range(len(relu6))
  return ([run('fig6a', 'linear_bottleneck', seed, top1) for seed, top1 in enumerate(linear)] +
          [run('fig6a', 'relu6_bottleneck', seed, top1, activation='relu6')
           for seed, top1 in zip(relu6_seeds, relu6)])


def finding_of(rows, number):
  [finding] = [finding for claim, finding in claims.evaluate(rows)['results']
               if claim.number == number]
  return finding


def result(rows, number):
  """(verdict, comparisons) of claim `number`."""
  finding = finding_of(rows, number)
  return finding.verdict, finding.comparisons


def test_a_linear_bottleneck_ahead_on_every_seed_agrees_with_a_paired_interval():
  verdict, [comparison] = result(fig6a([80, 82, 84], [70, 71, 75]), '3')
  # Per-seed differences 10, 11, 9: mean 10, std 1, 10 +- t(0.975; 2) / sqrt(3).
  assert verdict == claims.AGREES == comparison.verdict
  assert comparison.estimate.value == pytest.approx(10.0)
  assert comparison.estimate.low == pytest.approx(10 - T_975_DF2 / math.sqrt(3), abs=1e-5)
  assert comparison.estimate.high == pytest.approx(10 + T_975_DF2 / math.sqrt(3), abs=1e-5)
  assert comparison.estimate.method == 'paired by seed (3 seeds)'


def test_a_relu6_bottleneck_ahead_on_every_seed_disagrees():
  verdict, [comparison] = result(fig6a([70, 71, 75], [80, 82, 84]), '3')
  assert verdict == claims.DISAGREES
  assert comparison.estimate.high < 0


def test_an_interval_that_contains_zero_is_inconclusive():
  verdict, [comparison] = result(fig6a([80, 76, 82], [75, 80, 80]), '3')  # +5, -4, +2
  assert verdict == claims.INCONCLUSIVE
  assert comparison.estimate.low < 0 < comparison.estimate.high


def test_one_seed_gives_no_interval_and_no_verdict_either_way():
  verdict, [comparison] = result(fig6a([90], [10]), '3')
  assert verdict == claims.INCONCLUSIVE and not comparison.estimate.has_interval


def test_runs_without_shared_seeds_get_welchs_interval():
  verdict, [comparison] = result(fig6a([80, 82, 84], [70, 71, 72], relu6_seeds=[3, 4, 5]), '3')
  assert comparison.estimate.value == pytest.approx(82 - 71)
  assert comparison.estimate.method.startswith('Welch')
  assert verdict == claims.AGREES


def test_figure_6b_disagrees_when_one_link_of_the_order_is_reversed():
  rows = []
  for seed in range(3):
    rows += [run('fig6b', 'shortcut_bottleneck', seed, 80 + seed),
             run('fig6b', 'shortcut_expansion', seed, 70 + seed, shortcut='expansion'),
             run('fig6b', 'no_shortcut', seed, 75 + seed, shortcut='none')]
  verdict, comparisons = result(rows, '4')
  assert [(c.description, c.verdict) for c in comparisons] == [
      ('shortcut between bottlenecks - shortcut between expansions', claims.AGREES),
      ('shortcut between expansions - no shortcut', claims.DISAGREES)]
  assert verdict == claims.DISAGREES


def test_the_summary_counts_inconclusive_estimates_that_point_against_the_paper():
  rows = [run('fig6b', 'shortcut_bottleneck', 0, 60),
          run('fig6b', 'shortcut_expansion', 0, 70, shortcut='expansion'),
          run('fig6b', 'no_shortcut', 0, 80, shortcut='none')]
  markdown = claims.render_markdown(claims.evaluate(rows), 'sweeps/cpu')
  assert ('| inconclusive | 2 comparisons: 0 agree, 0 disagree, 2 inconclusive (2 of them with '
          'the estimate against the paper) |') in markdown


def fig5_grid(top1_of, seeds=(0, 1, 2)):
  """V2 runs at widths 0.5/1.0 x 32/48/64 px; MAdds grow with both."""
  return [run('fig5', f'v2_w{width}_r{resolution}', seed, top1_of(width, resolution, seed),
              width=width, resolution=resolution, madds=width**2 * resolution**2 * 1e3)
          for seed in seeds for width in (0.5, 1.0) for resolution in (32, 48, 64)]


def test_figure_5_per_slice_steps_name_the_step_that_falls():
  def top1(width, resolution, seed):
    dip = 10 if (width, resolution) == (0.5, 48) else 0  # 0.5@48 below 0.5@32
    return 40 + 20 * width + resolution / 4 - dip + seed

  rows = fig5_grid(top1)
  verdict, comparisons = result(rows, '1a')
  assert [(c.description, c.verdict) for c in comparisons] == [
      ('width 0.5: 32 -> 48 px', claims.DISAGREES), ('width 0.5: 48 -> 64 px', claims.AGREES),
      ('width 1.0: 32 -> 48 px', claims.AGREES), ('width 1.0: 48 -> 64 px', claims.AGREES)]
  assert verdict == claims.DISAGREES
  verdict, comparisons = result(rows, '1b')
  assert [c.description for c in comparisons] == [
      '32 px: width 0.5 -> 1.0', '48 px: width 0.5 -> 1.0', '64 px: width 0.5 -> 1.0']
  assert verdict == claims.AGREES


@pytest.mark.parametrize('top1_of, verdict', [
    (lambda width, resolution, seed: width * resolution + seed / 10, claims.AGREES),
    (lambda width, resolution, seed: 100 - width * resolution + seed / 10, claims.DISAGREES),
    # No relation: the ranks zigzag.
    (lambda width, resolution, seed: [50, 10, 60, 20, 55, 15][
        [(0.5, 32), (0.5, 48), (0.5, 64), (1.0, 32), (1.0, 48), (1.0, 64)].index(
            (width, resolution))] + 30 * seed, claims.INCONCLUSIVE),
])
def test_spearman_of_top1_with_madds_has_a_deterministic_bootstrap_interval(top1_of, verdict):
  rows = fig5_grid(top1_of)
  found, [comparison] = result(rows, '1c')
  assert found == verdict
  assert comparison.estimate.n == 18
  assert comparison.estimate.low <= comparison.estimate.value <= comparison.estimate.high
  _, [again] = result(rows, '1c')
  assert (again.estimate.low, again.estimate.high) == (comparison.estimate.low,
                                                       comparison.estimate.high)


def test_v2_is_compared_with_v1_interpolated_in_log_madds():
  rows = []
  for seed, offset in enumerate((-1, 0, 1)):
    rows += [run('fig5', 'v1_w0.5_r64', seed, 40 + offset, model='mobilenet_v1', madds=10e6),
             run('fig5', 'v1_w1.0_r64', seed, 60 + offset, model='mobilenet_v1', madds=40e6),
             # 20M is halfway between 10M and 40M in log MAdds: V1's curve there is 50%.
             run('fig5', 'v2_w0.5_r48', seed, 55 + offset, madds=20e6),
             run('fig5', 'v2_w1.0_r48', seed, 58 + offset, madds=40e6),  # at V1's own point
             run('fig5', 'v2_w0.35_r32', seed, 30, madds=5e6)]  # below V1's range
  finding = finding_of(rows, '2')
  first, second = finding.comparisons
  assert first.description.startswith('v2_w0.5_r48 (20.00M MAdds)')
  assert 'between v1_w0.5_r64 and v1_w1.0_r64' in first.description
  assert first.estimate.value == pytest.approx(5.0) and first.verdict == claims.AGREES
  assert second.estimate.value == pytest.approx(-2.0) and second.verdict == claims.DISAGREES
  assert finding.verdict == claims.DISAGREES
  assert 'v2_w0.35_r32' in finding.notes[0] and 'not compared' in finding.notes[0]


def expansion_runs(top1_of_t):
  return [run('expansion', f't{t}', seed, top1_of_t(t) + seed, expansion_ratio=t)
          for seed in range(3) for t in range(1, 11)]


def test_expansion_ratios_5_to_10_within_the_band_and_lower_below_5_agree():
  rows = expansion_runs(lambda t: 80 + (0.5 if t % 2 else -0.5) if t >= 5 else 40 + t)
  verdict, comparisons = result(rows, '5a')
  assert verdict == claims.AGREES and len(comparisons) == 6
  assert comparisons[0].description == 't = 5 - mean of t = 5-10'
  assert comparisons[0].estimate.value == pytest.approx(0.5)
  verdict, comparisons = result(rows, '5b')
  assert verdict == claims.AGREES
  assert [c.description for c in comparisons] == [
      f'mean of t = 5-10 - t = {t}' for t in (1, 2, 3, 4)]
  assert comparisons[0].estimate.value == pytest.approx(80 - 41)


def test_one_expansion_ratio_far_outside_the_band_disagrees_and_the_band_is_stated():
  finding = finding_of(expansion_runs(lambda t: 90 if t == 8 else 80), '5a')
  verdicts = {c.description: c.verdict for c in finding.comparisons}
  # Seeds add 0, 1, 2 points to 80% (90% at t = 8): the band's mean is 81 + 10/6, t = 8
  # sits 8.3 points above it and the others 1.7 below.
  assert verdicts['t = 8 - mean of t = 5-10'] == claims.DISAGREES
  assert verdicts['t = 5 - mean of t = 5-10'] == claims.AGREES
  assert finding.verdict == claims.DISAGREES
  assert 'from 81.0% (t = 5) to 91.0% (t = 8), a spread of 10.0 points' in finding.notes[0]


def test_a_sweep_without_runs_is_not_measured():
  verdicts = {claim.number: finding.verdict
              for claim, finding in claims.evaluate(fig6a([80, 81], [70, 71]))['results']}
  assert verdicts == {'1a': claims.NOT_MEASURED, '1b': claims.NOT_MEASURED,
                      '1c': claims.NOT_MEASURED, '2': claims.NOT_MEASURED,
                      '3': claims.AGREES, '4': claims.NOT_MEASURED,
                      '5a': claims.NOT_MEASURED, '5b': claims.NOT_MEASURED}


def test_cli_writes_markdown_and_json_and_prints_disagreements_with_their_numbers(tmp_path):
  root = tmp_path / 'sweeps'
  for seed, (linear, relu6) in enumerate(((0.70, 0.80), (0.71, 0.82), (0.75, 0.84))):
    write_run(root, f'fig6a/linear_bottleneck/seed{seed}', seed=seed,
              evals=((100, 0.3), (200, linear)))
    write_run(root, f'fig6a/relu6_bottleneck/seed{seed}', seed=seed, activation='relu6',
              evals=((100, 0.3), (200, relu6)))
  write_run(root, 'fig6a/linear_bottleneck/seed3', seed=3, finished=False)
  out = tmp_path / 'results' / 'CLAIMS.md'
  assert claims.main(['--workroot', str(root), '--out', str(out)]) == 0
  report = json.loads((tmp_path / 'results' / 'CLAIMS.json').read_text())
  assert report['metric'] == 'final_ema_top1'
  assert (report['runs_used'], report['runs_left_out']) == (6, 1)
  [fig6a_claim] = [claim for claim in report['claims'] if claim['number'] == '3']
  assert fig6a_claim['verdict'] == 'disagrees'
  assert fig6a_claim['comparisons'][0]['effect'] == pytest.approx(-10.0)
  markdown = out.read_text()
  assert '`final_ema_top1`' in markdown
  assert ('| 3 | Figure 6a | A linear bottleneck trains to a higher top-1 than a ReLU6 after '
          'the projection. | **disagrees** | -10.00 (95% CI [') in markdown
  assert '| linear bottleneck - ReLU6 bottleneck | > 0 | -10.00 |' in markdown


def test_cli_refuses_a_workroot_without_finished_runs(tmp_path, capsys):
  write_run(tmp_path, 'fig6a/linear_bottleneck', finished=False)
  assert claims.main(['--workroot', str(tmp_path)]) == 1
  assert 'no finished runs' in capsys.readouterr().err
  assert not (tmp_path / 'CLAIMS.md').exists()
