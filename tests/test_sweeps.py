"""The sweep definitions: configs/sweeps.py and the SWEEPS of both config files."""

import pathlib

import pytest

from configs import sweeps
from launch import manifest
from mnv2_jax import reference

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = ('configs/default.py', 'configs/imagenet.py')
SWEEP_NAMES = {'fig5', 'expansion', 'fig6a', 'fig6b'}


def runs_of(sweep, name='test'):
  return dict(manifest.expand_sweep(sweep, name))


def test_fig5_has_the_papers_21_v2_runs_and_the_v1_papers_7_points():
  runs = runs_of(sweeps.fig5, 'fig5')
  v2 = {(o['model.width_multiplier'], o['data.resolution']) for o in runs.values()
        if o['model.name'] == 'mobilenet_v2'}
  assert v2 == {(w, r) for w in (0.35, 0.5, 0.75, 1.0) for r in (96, 128, 160, 192, 224)} | {
      (1.4, 224)}
  assert len(v2) == 21
  v1 = {(o['model.width_multiplier'], o['data.resolution']) for o in runs.values()
        if o['model.name'] == 'mobilenet_v1'}
  assert v1 == {(row['multiplier'], row['resolution']) for row in reference.mobilenet_v1()}
  assert 'fig5/v2_w0.35_r96' in runs and 'fig5/v2_w1.4_r224' in runs
  assert 'fig5/v1_w0.25_r224' in runs and 'fig5/v1_w1.0_r128' in runs
  assert all(o['model.dropout_rate'] == sweeps.V1_DROPOUT_RATE for n, o in runs.items()
             if '/v1_' in n)


def test_fig5_scales_the_v1_points_with_the_resolution_grid():
  runs = runs_of(lambda add: sweeps.fig5(add, resolutions=(64, 32, 40, 48, 56)), 'fig5')
  assert len(runs) == 21 + 7
  v1 = sorted((o['model.width_multiplier'], o['data.resolution']) for o in runs.values()
              if o['model.name'] == 'mobilenet_v1')
  assert v1 == [(0.25, 64), (0.5, 64), (0.75, 64), (1.0, 40), (1.0, 48), (1.0, 56), (1.0, 64)]
  assert 'fig5/v2_w1.4_r64' in runs


def test_fig5_can_keep_only_the_v1_width_series():
  runs = runs_of(lambda add: sweeps.fig5(add, resolutions=(32, 40, 48, 56, 64),
                                         v1_num_resolutions=1), 'fig5')
  v1 = sorted((o['model.width_multiplier'], o['data.resolution']) for o in runs.values()
              if o['model.name'] == 'mobilenet_v1')
  assert v1 == [(0.25, 64), (0.5, 64), (0.75, 64), (1.0, 64)] and len(runs) == 21 + 4


def test_expansion_sweeps_t_from_1_to_10_at_one_width_and_resolution():
  runs = runs_of(lambda add: sweeps.expansion(add, width_multiplier=0.5, resolution=48),
                 'expansion')
  assert [o['model.expansion_ratio'] for o in runs.values()] == list(range(1, 11))
  assert list(runs)[0] == 'expansion/t1' and list(runs)[-1] == 'expansion/t10'
  assert {(o['model.width_multiplier'], o['data.resolution']) for o in runs.values()} == {
      (0.5, 48)}


def test_fig6a_compares_linear_and_relu6_bottlenecks_with_the_standard_shortcut():
  runs = runs_of(lambda add: sweeps.fig6a(add, width_multiplier=1.0, resolution=224), 'fig6a')
  assert {n: o['model.bottleneck_activation'] for n, o in runs.items()} == {
      'fig6a/linear_bottleneck': 'linear', 'fig6a/relu6_bottleneck': 'relu6'}
  assert {o['model.shortcut'] for o in runs.values()} == {'bottleneck'}


def test_fig6b_compares_the_three_shortcut_placements_with_linear_bottlenecks():
  runs = runs_of(lambda add: sweeps.fig6b(add, width_multiplier=1.0, resolution=224), 'fig6b')
  assert {n: o['model.shortcut'] for n, o in runs.items()} == {
      'fig6b/shortcut_bottleneck': 'bottleneck', 'fig6b/shortcut_expansion': 'expansion',
      'fig6b/no_shortcut': 'none'}
  assert {o['model.bottleneck_activation'] for o in runs.values()} == {'linear'}


def test_common_overrides_reach_every_run():
  runs = runs_of(lambda add: sweeps.fig6b(add, width_multiplier=0.35, resolution=32,
                                          common={'train.num_steps': 7}))
  assert {o['train.num_steps'] for o in runs.values()} == {7}


def test_width_names_keep_one_decimal():
  assert [sweeps.format_width(w) for w in (0.35, 0.5, 1, 1.0, 1.4)] == [
      '0.35', '0.5', '1.0', '1.0', '1.4']


def test_duplicate_or_unsafe_run_names_are_refused():
  with pytest.raises(ValueError, match='twice'):
    manifest.expand_sweep(lambda add: [add('a', {}), add('a', {})], 's')
  for bad in ('a/b', '', '.hidden', 'with space'):
    with pytest.raises(ValueError, match='run name'):
      manifest.expand_sweep(lambda add, bad=bad: add(bad, {}), 's')
  with pytest.raises(ValueError, match='no runs'):
    manifest.expand_sweep(lambda add: None, 's')


@pytest.mark.parametrize('config_file', CONFIG_FILES)
def test_config_files_define_the_four_sweeps_and_every_override_fits_their_config(config_file):
  module = manifest.load_config_module(str(REPO_ROOT / config_file))
  assert SWEEP_NAMES <= set(module.SWEEPS)
  config = module.get_config()
  sizes = {}
  for sweep_name, sweep in module.SWEEPS.items():
    runs = manifest.expand_sweep(sweep, sweep_name)
    sizes[sweep_name] = len(runs)
    for name, overrides in runs:
      manifest.apply_overrides(config, overrides, name)  # raises on a bad field or type
  assert {name: sizes[name] for name in SWEEP_NAMES} == {
      # CPU: 4 resolutions x 4 widths + 1.4 at the top one, MobileNetV1 at 4 widths.
      'fig5': 28 if config_file == 'configs/imagenet.py' else 21,
      'expansion': 10, 'fig6a': 2, 'fig6b': 3}


def test_the_plateau_sweep_changes_the_previous_default_one_thing_at_a_time():
  """Each run is the default run as it was measured (official initialisation, lr 0.00075,
  TF1's mean square from 1.0, 800 steps evaluated every 100) plus its variant's changes."""
  module = manifest.load_config_module(str(REPO_ROOT / 'configs/default.py'))
  config = module.get_config()
  runs = dict(manifest.expand_sweep(module.SWEEPS['plateau'], 'plateau'))
  assert set(runs) == {f'plateau/{name}' for name in module.PLATEAU_VARIANTS}
  baseline = manifest.apply_overrides(config, runs['plateau/slim_init'], 'plateau/slim_init')
  assert (baseline.model.kernel_init, baseline.model.zero_init_residual,
          baseline.model.zero_init_classifier) == ('truncated_normal', False, False)
  assert (baseline.optimizer.base_learning_rate, baseline.optimizer.initial_scale) == (
      0.00075, 1.0)
  assert (baseline.train.num_steps, baseline.train.eval_every_steps) == (800, 100)
  for name, changes in module.PLATEAU_VARIANTS.items():
    variant = manifest.apply_overrides(config, runs[f'plateau/{name}'], name)
    differences = {key for key in runs['plateau/slim_init']
                   if _field(variant, key) != _field(baseline, key)}
    differences |= {key for key in changes if _field(variant, key) != _field(baseline, key)}
    assert differences == set(changes), name


def _field(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config


def test_imagenet_sweeps_use_the_papers_resolutions_and_default_scales_them_down():
  resolutions = {}
  for config_file in CONFIG_FILES:
    module = manifest.load_config_module(str(REPO_ROOT / config_file))
    runs = manifest.expand_sweep(module.SWEEPS['fig5'], 'fig5')
    resolutions[config_file] = sorted({o['data.resolution'] for _, o in runs})
  assert resolutions['configs/imagenet.py'] == [96, 128, 160, 192, 224]
  cpu = resolutions['configs/default.py']
  # Scaled down, but no lower than where the network still leaves chance early (40 px).
  assert len(cpu) >= 4 and cpu[0] >= 40 and cpu[-1] < 96


def test_cpu_sweeps_run_on_the_fine_dataset_with_a_warm_up_and_a_cosine_decay():
  module = manifest.load_config_module(str(REPO_ROOT / 'configs/default.py'))
  assert module.get_config().data.dataset_version == '1.2.0'  # the README's main job
  for sweep_name in SWEEP_NAMES:
    for name, overrides in manifest.expand_sweep(module.SWEEPS[sweep_name], sweep_name):
      assert overrides['data.dataset_version'] == '2.0.0', name
      assert overrides['optimizer.schedule'] == 'cosine', name
      assert overrides['optimizer.warmup_epochs'] == 1.0, name
      # The convergence rule needs an evaluation where the last quarter starts.
      assert 0.75 * overrides['train.num_steps'] % overrides['train.eval_every_steps'] == 0, name


def test_every_cpu_fig5_run_trains_on_the_same_budget():
  # Uneven budgets would make Figure 5 compare training lengths, not networks.
  module = manifest.load_config_module(str(REPO_ROOT / 'configs/default.py'))
  budgets = {(overrides['train.num_steps'], overrides['data.batch_size'],
              overrides['train.eval_every_steps'])
             for _, overrides in manifest.expand_sweep(module.SWEEPS['fig5'], 'fig5')}
  assert budgets == {(7200, 32, 600)}


def test_the_cpu_ablations_and_the_expansion_study_share_one_budget():
  # Figure 6a, 6b and the expansion study train the same network; on 2,400 steps
  # each had variants still learning (results/cpu/PROTOCOL.md section 5).
  module = manifest.load_config_module(str(REPO_ROOT / 'configs/default.py'))
  budgets = {(overrides['train.num_steps'], overrides['data.batch_size'],
              overrides['train.eval_every_steps'], overrides['train.checkpoint_every_steps'])
             for sweep in ('fig6a', 'fig6b', 'expansion')
             for _, overrides in manifest.expand_sweep(module.SWEEPS[sweep], sweep)}
  assert budgets == {(4800, 64, 400, 800)}
