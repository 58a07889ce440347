"""Bad inputs to every command: one `error:` line naming the field or path, status 2, no writes.

Each case is a real command line a user might type: a missing or mistyped
config file, field or value, a workdir that is a file or holds another model's
checkpoints, pretrained directories that are truncated, unreadable or of
another width, an unknown sweep, a negative --parallel, a non-numeric --split,
... Every one must exit with status 2 and print exactly one line, starting
with `error:` and naming the offending flag, field or path, without a
traceback, and must leave every existing file as it was (and create none).

Most cases run in one interpreter (tests/entry_point_driver.py calls each
command's entry function with its argv, as `python -m` would): an interpreter
start costs 10-15 s of imports. A few run as real `python -m` subprocesses, to
prove the command lines themselves.
"""

import functools
import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default as default_config
from mnv2_jax import checkpoint, data, parallel, pretrained
from mnv2_jax.train import optimizer as optimizer_lib
from mnv2_jax.train import state as state_lib
import train_test_utils as utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, 'tests', 'entry_point_driver.py')
TIMEOUT_SECONDS = 600
NUM_CLASSES = 10  # of the built-in dataset
TINY_DATA = {'num_train_examples': 64, 'num_test_examples': 16}
# What TensorFlow's and XLA's C++ code prints on import, before any command
# runs (TF_CPP_MIN_LOG_LEVEL does not silence it); nothing a command prints.
NATIVE_IMPORT_NOTICE = re.compile(
    r'WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
    r'|[IWE]\d{4} \S+ +\d+ \S+\.(cc|h):\d+\] ')


def _tiny_config(width: float):
  config = default_config.get_config(f'width={width},res=32,batch=8')
  with config.unlocked():
    config.data.update(TINY_DATA)
  return config


def _abstract_state(config):
  """The training state's shapes and dtypes for `config` (nothing compiled)."""
  model = state_lib.create_model(config, NUM_CLASSES, batch_norm_axis_name=parallel.BATCH_AXIS)
  learning_rate_fn = optimizer_lib.create_learning_rate_schedule(config, steps_per_epoch=8)
  tx = optimizer_lib.create_optimizer(config, 8, learning_rate_fn)
  return jax.eval_shape(functools.partial(
      state_lib.create_train_state, jax.random.key(0), model, tx, (1, 32, 32, 3)))


def _zeros(tree):
  return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)


def _write_workdir_of_width_half(workdir):
  """A workdir with a checkpoint at step 2 of MobileNetV2 0.5 (and its config.json)."""
  config = _tiny_config(0.5)
  state = _zeros(_abstract_state(config))
  checkpointer = checkpoint.Checkpointer(workdir, save_every_steps=2, keep=2)
  checkpointer.save(2, state, np.zeros(2, np.uint32))
  checkpointer.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


def _write_pretrained(directory, width_multiplier=0.35):
  """A pretrained directory of MobileNetV2 at width 0.35 (zero weights) for the built-in data."""
  state = _abstract_state(_tiny_config(0.35))
  variables = {'params': _zeros(state.params), 'batch_stats': _zeros(state.batch_stats)}
  pretrained.save_pretrained(directory, variables, dict(
      name='mobilenet_v2', width_multiplier=width_multiplier, expansion_ratio=6,
      num_classes=NUM_CLASSES, resolution=32, source='tests'))


@pytest.fixture(scope='module')
def paths(tmp_path_factory):
  """Existing inputs for the bad command lines (the data prepared, so no case renders it)."""
  root = tmp_path_factory.mktemp('bad_inputs')
  paths = {name: str(root / name) for name in (
      'tfds', 'other_model', 'pretrained_truncated', 'pretrained_garbage',
      'pretrained_width_half', 'a_file', 'garbage.h5', 'workroot', 'new')}
  data_config = _tiny_config(0.35).data
  with data_config.unlocked():
    data_config.data_dir = paths['tfds']
  data.get_dataset_info(data_config)

  os.makedirs(paths['other_model'])
  _write_workdir_of_width_half(paths['other_model'])

  _write_pretrained(paths['pretrained_truncated'])
  # An interrupted copy: the arrays' data files are missing.
  data_files = [path for path in glob.glob(os.path.join(
      paths['pretrained_truncated'], pretrained.VARIABLES_DIR, '**', 'd', '*'), recursive=True)
      if os.path.isfile(path)]
  assert data_files
  for path in data_files:
    os.remove(path)
  _write_pretrained(paths['pretrained_garbage'])
  with open(os.path.join(paths['pretrained_garbage'], pretrained.MODEL_CONFIG_FILE), 'wb') as f:
    f.write(b'\x89\xff\x00 not json')
  _write_pretrained(paths['pretrained_width_half'], width_multiplier=0.5)

  with open(paths['a_file'], 'w') as f:
    f.write('a file, not a directory\n')
  with open(paths['garbage.h5'], 'wb') as f:
    f.write(b'\x00\x01 not an HDF5 file' * 10)
  os.makedirs(paths['workroot'])
  paths['root'] = str(root)
  return paths


def _main_argv(paths, *flags, workdir=None, config='configs/default.py:width=0.35,res=32,batch=8'):
  """mnv2_jax.main on the tiny built-in data; the workdir is new unless given."""
  return (['--config', config, '--workdir', workdir or os.path.join(paths['new'], 'run'),
           f'--config.data.data_dir={paths["tfds"]}'] +
          [f'--config.data.{name}={value}' for name, value in TINY_DATA.items()] + list(flags))


def _cases(paths):
  """(id, command, argv, what the error line must name)."""
  new = paths['new']
  main = functools.partial(_main_argv, paths)
  return [
      # The config file and its argument.
      ('missing config file', 'mnv2_jax.main',
       main(config='configs/nonexistent.py'), ['configs/nonexistent.py']),
      ('config file is a directory', 'mnv2_jax.main', main(config='configs'), ["'configs'"]),
      ('non-numeric config arg', 'mnv2_jax.main', main(config='configs/default.py:width=abc'),
       ['configs/default.py:width=abc', "width must be a number, got 'abc'"]),
      ('unknown config arg', 'mnv2_jax.main', main(config='configs/default.py:wdth=0.5'),
       ["'wdth'", 'known keys']),
      # Config fields and values.
      ('misspelt field', 'mnv2_jax.main', main('--config.model.nme=foo'),
       ['--config.model.nme', "did you mean 'name'?"]),
      ('misspelt section', 'mnv2_jax.main', main('--config.modle.name=foo'),
       ['--config.modle.name', "did you mean 'model'?"]),
      ('non-numeric value', 'mnv2_jax.main', main('--config.model.width_multiplier=abc'),
       ['--config.model.width_multiplier=abc']),
      ('fractional step count', 'mnv2_jax.main', main('--config.train.num_steps=1.5'),
       ['--config.train.num_steps=1.5']),
      ('non-boolean flag', 'mnv2_jax.main', main('--config.model.zero_init_residual=maybe'),
       ['--config.model.zero_init_residual=maybe', 'true or false']),
      ('negative width', 'mnv2_jax.main', main('--config.model.width_multiplier=-1'),
       ['config.model.width_multiplier']),
      ('unknown model', 'mnv2_jax.main', main('--config.model.name=resnet50'),
       ['config.model.name', 'resnet50']),
      ('zero batch', 'mnv2_jax.main', main('--config.data.batch_size=0'), ['data.batch_size']),
      ('resolution too small', 'mnv2_jax.main', main('--config.data.resolution=16'),
       ['data.resolution']),
      ('imagenet for imagenet2012', 'mnv2_jax.main', main('--config.data.dataset=imagenet'),
       ['data.dataset', "'imagenet2012'"]),
      ('image folder without a folder', 'mnv2_jax.main',
       main('--config.data.dataset=image_folder'), ['data.image_folder']),
      # Flags and arguments.
      ('unknown flag', 'mnv2_jax.main', main('--wrkdir=x'), ['--wrkdir', '--workdir']),
      ('missing workdir', 'mnv2_jax.main', ['--config', 'configs/default.py'], ['--workdir']),
      ('stray argument', 'mnv2_jax.main', main('train'), ["'train'"]),
      # Workdirs and checkpoints.
      ('workdir is a file', 'mnv2_jax.main', main(workdir=paths['a_file']), [paths['a_file']]),
      ('workdir of another model', 'mnv2_jax.main', main(workdir=paths['other_model']),
       [paths['other_model'], 'another model']),
      ('evaluation without weights', 'mnv2_jax.main', main('--config.eval_only=True'),
       ['config.eval_only']),
      ('unreadable pretrained description', 'mnv2_jax.main',
       main(f'--config.init_from={paths["pretrained_garbage"]}'),
       [os.path.join(paths['pretrained_garbage'], pretrained.MODEL_CONFIG_FILE)]),
      ('pretrained of another width', 'mnv2_jax.main',
       main(f'--config.init_from={paths["pretrained_width_half"]}'),
       ['width_multiplier: checkpoint has 0.5, config wants 0.35']),
      ('training workdir as pretrained', 'mnv2_jax.main',
       main(f'--config.init_from={paths["other_model"]}'),
       [paths['other_model'], 'training workdir']),
      # python -m mnv2_jax.stats
      ('non-numeric --split', 'mnv2_jax.stats', ['--memory', '--split', 'a,b'], ['--split']),
      ('zero width', 'mnv2_jax.stats', ['--width', '0'], ['width_multiplier']),
      ('unknown stats model', 'mnv2_jax.stats', ['--model', 'resnet50'], ['--model']),
      ('resolution below 32', 'mnv2_jax.stats', ['--resolution', '31'], ['resolution']),
      # python -m mnv2_jax.convert
      ('missing weights file', 'mnv2_jax.convert',
       ['--weights', os.path.join(new, 'missing.h5'), '--out', os.path.join(new, 'out')],
       [os.path.join(new, 'missing.h5')]),
      ('unreadable weights file', 'mnv2_jax.convert',
       ['--width', '0.35', '--resolution', '96', '--weights', paths['garbage.h5'],
        '--out', os.path.join(new, 'out')], [paths['garbage.h5']]),
      ('output is a file', 'mnv2_jax.convert', ['--out', paths['a_file']], [paths['a_file']]),
      ('non-numeric width', 'mnv2_jax.convert', ['--width', 'abc', '--out', new], ['--width']),
      # python -m mnv2_jax.export
      ('unknown export format', 'mnv2_jax.export',
       ['--workdir', paths['other_model'], '--format', 'coreml', '--out',
        os.path.join(paths['root'], 'model.mlmodel')], ['--format', 'coreml']),
      ('export of a workdir without checkpoints', 'mnv2_jax.export',
       ['--workdir', paths['workroot'], '--format', 'tflite', '--out',
        os.path.join(paths['root'], 'model.tflite')], [paths['workroot']]),
      ('export resolution below 32', 'mnv2_jax.export',
       ['--workdir', paths['other_model'], '--format', 'tflite', '--resolution', '16', '--out',
        os.path.join(paths['root'], 'model.tflite')], ['--resolution']),
      ('export to a directory', 'mnv2_jax.export',
       ['--workdir', paths['other_model'], '--format', 'tflite', '--out', paths['root']],
       [paths['root']]),
      ('export batch that is no number', 'mnv2_jax.export',
       ['--workdir', paths['other_model'], '--format', 'onnx', '--batch', 'any', '--out',
        os.path.join(paths['root'], 'model.onnx')], ['--batch', "'any'"]),
      ('export --raw of a pretrained directory', 'mnv2_jax.export',
       ['--pretrained', paths['pretrained_width_half'], '--raw', '--format', 'tflite', '--out',
        os.path.join(paths['root'], 'model.tflite')], ['--raw']),
      # python -m mnv2_jax.detect
      ('detect with a classification workdir', 'mnv2_jax.detect',
       ['--workdir', paths['other_model'], paths['a_file']],
       [paths['other_model'], 'is a classification run', 'detection workdir']),
      ('detect a missing image', 'mnv2_jax.detect',
       ['--workdir', paths['other_model'], os.path.join(new, 'missing.png')],
       [os.path.join(new, 'missing.png')]),
      ('detect with a bad score threshold', 'mnv2_jax.detect',
       ['--workdir', paths['other_model'], '--score-threshold', '2', paths['a_file']],
       ['--score-threshold']),
      # python -m mnv2_jax.segment
      ('segment with a classification workdir', 'mnv2_jax.segment',
       ['--workdir', paths['other_model'], paths['a_file']],
       [paths['other_model'], 'is a classification run', 'segmentation workdir']),
      ('segment a workdir without a config', 'mnv2_jax.segment',
       ['--workdir', paths['workroot'], paths['a_file']], [paths['workroot'], 'config.json']),
      ('segment a missing image', 'mnv2_jax.segment',
       ['--workdir', paths['other_model'], os.path.join(new, 'missing.png')],
       [os.path.join(new, 'missing.png')]),
      ('segment two images to one --out', 'mnv2_jax.segment',
       ['--workdir', paths['other_model'], '--out', os.path.join(paths['root'], 'mask.png'),
        paths['a_file'], paths['a_file']], ['--out', '2 images', '--draw']),
      # python -m launch.sweep
      ('unknown sweep', 'launch.sweep',
       ['--config', 'configs/default.py', '--sweep', 'fig55', '--workroot', new],
       ["'fig55'", 'fig5']),
      ('negative --parallel', 'launch.sweep',
       ['--config', 'configs/default.py', '--sweep', 'fig5', '--workroot', new,
        '--parallel', '-1'], ['--parallel']),
      ('missing sweep config', 'launch.sweep',
       ['--config', 'configs/nonexistent.py', '--sweep', 'fig5', '--workroot', new],
       ['configs/nonexistent.py']),
      ('unknown backend', 'launch.sweep',
       ['--config', 'configs/default.py', '--sweep', 'fig5', '--workroot', new,
        '--backend', 'kubernetes'], ['--backend']),
      # python -m experiments.*
      ('missing workroot', 'experiments.collect', ['--workroot', new], [new]),
      ('figures of a missing workroot', 'experiments.figures', ['--workroot', new], [new]),
      ('unknown figure metric', 'experiments.figures',
       ['--workroot', paths['workroot'], '--metric', 'accuracy'], ['--metric']),
      ('claims of a missing workroot', 'experiments.claims', ['--workroot', new], [new]),
      ('random-box baseline of a missing config', 'experiments.detection_baseline',
       ['--config', 'configs/nonexistent.py'], ['configs/nonexistent.py']),
  ]


def _digests(root):
  """{path: sha256} of every file below `root`, so that a changed or new file shows."""
  digests = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, 'rb') as f:
        digests[path] = hashlib.sha256(f.read()).hexdigest()
  return digests


def _environment():
  env = utils.subprocess_environment(PYTHONPATH=REPO)  # one CPU device, as a user's machine
  env.pop('MNV2_TRACEBACK', None)
  return env


def _check_refusal(status, stderr, expected, command_line=False):
  """Status 2 and one `error:` line naming `expected`; a subprocess may add native notices."""
  assert 'Traceback' not in stderr, stderr
  lines = stderr.splitlines()
  if command_line:
    lines = [line for line in lines if not NATIVE_IMPORT_NOTICE.match(line)]
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  for fragment in expected:
    assert fragment in lines[0], (fragment, lines[0])
  assert status == 2, (status, stderr)


def test_every_bad_input_is_one_error_line_with_status_2_and_changes_nothing(paths, tmp_path):
  cases = _cases(paths)
  assert len(cases) >= 20
  cases_file, results_file = tmp_path / 'cases.json', tmp_path / 'results.json'
  cases_file.write_text(json.dumps([{'command': command, 'argv': argv}
                                    for _, command, argv, _ in cases]))
  before = _digests(paths['root'])
  subprocess.run([sys.executable, DRIVER, str(cases_file), str(results_file)], cwd=REPO,
                 env=_environment(), check=True, timeout=TIMEOUT_SECONDS)
  results = json.loads(results_file.read_text())
  assert len(results) == len(cases)
  failures = []
  for (name, _, _, expected), result in zip(cases, results):
    try:
      _check_refusal(result['status'], result['stderr'], expected)
    except AssertionError as error:
      failures.append(f'{name}: {error}')
  assert not failures, '\n'.join(failures)
  assert _digests(paths['root']) == before  # nothing written, changed or created


# Cases for real `python -m` processes; the truncated pretrained directory is
# one of them because orbax, when a failed read follows a successful one in the
# same process, prints asyncio tracebacks from its threads (a real command makes
# at most one of the two).
REAL_COMMAND_LINES = {
    'main: missing config file': (
        lambda paths, new: ['mnv2_jax.main', '--config', 'configs/nonexistent.py',
                            '--workdir', new],
        ['configs/nonexistent.py']),
    'main: misspelt field': (
        lambda paths, new: ['mnv2_jax.main', '--config', 'configs/default.py', '--workdir', new,
                            '--config.model.nme=foo'],
        ["did you mean 'name'?"]),
    'main: truncated pretrained directory': (
        lambda paths, new: ['mnv2_jax.main'] + _main_argv(
            paths, f'--config.init_from={paths["pretrained_truncated"]}', workdir=new),
        ['pretrained_truncated/variables', 'incomplete or damaged']),
    'stats: non-numeric --split': (
        lambda paths, new: ['mnv2_jax.stats', '--memory', '--split', '1,two'], ['--split']),
    'sweep: unknown sweep': (
        lambda paths, new: ['launch.sweep', '--config', 'configs/default.py', '--sweep', 'fig55',
                            '--workroot', new],
        ["'fig55'"]),
}


@pytest.mark.parametrize('name', REAL_COMMAND_LINES)
def test_the_real_command_lines_refuse_with_one_line(paths, tmp_path, name):
  command_line, expected = REAL_COMMAND_LINES[name]
  new = str(tmp_path / 'new')
  before = _digests(paths['root'])
  result = subprocess.run([sys.executable, '-m'] + command_line(paths, new), cwd=REPO,
                          env=_environment(), capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
  _check_refusal(result.returncode, result.stderr, expected, command_line=True)
  assert not os.path.exists(new)
  assert _digests(paths['root']) == before


def test_verbose_shows_the_traceback_of_a_user_error(capsys):
  from mnv2_jax.stats.__main__ import main as stats_main  # pylint: disable=g-import-not-at-top
  assert stats_main(['--width', '0', '--verbose']) == 2
  stderr = capsys.readouterr().err
  assert 'Traceback' in stderr and stderr.splitlines()[-1].startswith('error: ')
