"""Config files: documented arguments, command-line overrides, the recipe, bad values."""

import os

from absl import flags
import pytest

import configs
from mnv2_jax.train import loop
import train_test_utils as utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = ('configs/default.py', 'configs/imagenet.py')


@pytest.mark.parametrize('spec', [
    'configs/default.py', 'configs/default.py:width=0.5,res=48',
    'configs/default.py:width=0.35,res=32,batch=64,steps=100',
    'configs/imagenet.py', 'configs/imagenet.py:width=1.4,res=224',
    'configs/imagenet.py:width=0.35,res=96,replicas=1,t=4'])
def test_documented_config_args_give_valid_configs(spec):
  config = utils.load_config_as_main(spec)
  loop.validate_config(config)
  args = dict(item.split('=') for item in spec.partition(':')[2].split(',') if item)
  if 'width' in args:
    assert config.model.width_multiplier == float(args['width'])
  if 'res' in args:
    assert config.data.resolution == int(args['res'])


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_config_docstring_holds_the_command_that_runs_it(path):
  with open(os.path.join(REPO, path)) as f:
    source = f.read()
  docstring = source.split('"""')[1]
  assert f'python -m mnv2_jax.main --config {path}' in docstring
  assert '--workdir' in docstring


def test_command_line_overrides_reach_every_sweep_field():
  config = utils.load_config_as_main('configs/imagenet.py:width=0.5', '--config.train.num_steps=7',
                 '--config.data.batch_size=64', '--config.model.shortcut=expansion',
                 '--config.model.bottleneck_activation=relu6', '--config.seed=3',
                 '--config.init_from=/tmp/pretrained', '--config.train.eval_every_steps=5')
  assert config.train.num_steps == 7
  assert config.data.batch_size == 64
  assert config.model.shortcut == 'expansion'
  assert config.model.bottleneck_activation == 'relu6'
  assert config.seed == 3 and config.init_from == '/tmp/pretrained'
  loop.validate_config(config)


def test_unknown_fields_are_rejected_by_the_locked_config():
  with pytest.raises(Exception, match='num_step'):
    utils.load_config_as_main('configs/default.py', '--config.train.num_step=7')


def test_unknown_config_arg_names_the_known_ones():
  with pytest.raises(flags.IllegalFlagValueError, match=r"unknown config arg 'widht'.*'width'"):
    utils.load_config_as_main('configs/default.py:widht=0.5')


def test_imagenet_config_is_the_official_recipe():
  config = utils.load_config_as_main('configs/imagenet.py')
  assert config.data.dataset == 'imagenet2012'
  assert config.data.batch_size == 96 * 8  # 8 synchronous clones of 96
  optimizer = config.optimizer
  assert (optimizer.base_learning_rate, optimizer.base_batch_size) == (0.045, 96)
  assert (optimizer.rmsprop_decay, optimizer.momentum, optimizer.epsilon,
          optimizer.initial_scale) == (0.9, 0.9, 1.0, 1.0)
  assert optimizer.schedule == 'exponential' and optimizer.staircase
  assert (optimizer.decay_rate, optimizer.decay_epochs) == (0.98, 2.5)
  assert (optimizer.weight_decay, optimizer.label_smoothing, optimizer.ema_decay) == (
      4e-5, 0.1, 0.9999)
  assert config.model.dropout_rate == 0.2
  assert config.model.batch_norm_momentum == 0.997  # the official BN decay
  assert config.model.kernel_init == 'truncated_normal'  # slim's stddev 0.09
  assert not config.model.zero_init_residual and not config.model.zero_init_classifier
  assert config.train.num_epochs == 420 and config.train.num_steps is None
  assert not config.train.sync_batch_norm


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_configs_hold_durations_not_derived_values(path):
  config = utils.load_config_as_main(path)
  flat = _flatten(config.to_dict())
  for name in flat:
    assert not any(word in name for word in ('steps_per_epoch', 'decay_steps', 'warmup_steps',
                                             'total_steps', 'learning_rate_scaled')), name


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


BAD_VALUES = [
    ('model.name', 'resnet50'), ('model.width_multiplier', 0.0),
    ('model.expansion_ratio', 0.5), ('model.bottleneck_activation', 'relu'),
    ('model.shortcut', 'dense'), ('model.dropout_rate', 1.0),
    ('model.depthwise_impl', 'cudnn'), ('model.dtype', 'float16'),
    ('model.batch_norm_momentum', 1.0), ('model.batch_norm_momentum', -0.1),
    ('model.kernel_init', 'xavier'), ('model.zero_init_residual', None),
    ('model.zero_init_classifier', None),
    ('optimizer.schedule', 'linear'), ('optimizer.momentum', 1.5),
    ('optimizer.ema_decay', 1.0), ('optimizer.base_learning_rate', -0.1),
    ('train.num_epochs', 0), ('train.num_steps', 0), ('train.eval_every_steps', 0),
    ('train.checkpoint_every_steps', -5), ('train.log_every_steps', 0),
    ('train.keep_checkpoints', 0), ('train.parallel_strategy', 'ddp'),
]


@pytest.mark.parametrize('field,value', BAD_VALUES, ids=[f'{f}={v}' for f, v in BAD_VALUES])
def test_bad_config_value_raises_one_line_naming_the_field(field, value):
  config = configs_default()
  section, _, name = field.rpartition('.')
  with config.unlocked():
    (config[section] if section else config)[name] = value
  with pytest.raises(ValueError) as error:
    loop.validate_config(config)
  message = str(error.value)
  assert '\n' not in message
  assert f'config.{field}' in message or f'config.{section}.{name}' in message, message


def configs_default():
  return utils.load_config_as_main('configs/default.py')


def test_parse_arg_types_follow_the_defaults():
  arg = configs.parse_arg('width=0.5,res=48,flag=false', width=1.0, res=224, flag=True)
  assert (arg.width, arg.res, arg.flag) == (0.5, 48, False)
  with pytest.raises(ValueError, match='res must be an integer'):
    configs.parse_arg('res=4.5', res=224)


def test_recipe_sections_reject_a_field_they_do_not_have():
  from configs import recipe  # pylint: disable=g-import-not-at-top
  assert recipe.optimizer(base_learning_rate=0.01).base_learning_rate == 0.01
  with pytest.raises(KeyError, match='base_lr'):
    recipe.optimizer(base_lr=0.01)
  with pytest.raises(KeyError, match='widht'):
    recipe.model(widht=0.5)
