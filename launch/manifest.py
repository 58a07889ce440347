"""A sweep as a list of runs, and the manifest.json that records them.

`build_manifest` loads a config file (the same `--config path[:arg]` that
`mnv2_jax.main` takes), expands its `SWEEPS[name](add)` into runs named
'<sweep>/<run>', checks every override against `get_config(arg)` (unknown field
or wrong type -> ValueError before anything starts) and gives each run its
workdir WORKROOT/<sweep>/<run> and its command:

  python -m mnv2_jax.main --config CONFIG --workdir WORKDIR --config.a.b=value ...

With seeds (`launch.sweep --seeds 0,1,2`) every run becomes one run per seed,
'<sweep>/<run>/seed<k>' in WORKROOT/<sweep>/<run>/seed<k> with --config.seed=k;
each is a run of its own (finished, resumed or failed on its own).

The manifest (WORKROOT/<sweep>/manifest.json) holds, per run: name,
overrides, workdir, command, and the launcher's bookkeeping: status
('pending', 'running', 'finished', 'failed', 'interrupted', 'submitted',
'running_elsewhere' when another launcher's copy of the run holds its
workdir), exit_code, error (the log's last lines), log, started/ended times.
A run is finished when WORKDIR/final_metrics.json exists (mnv2_jax.main writes
it last). A run whose WORKDIR/config.json (written when it started) contradicts
the sweep's overrides, e.g. a budget changed since, is refused: launching would
keep or resume it under the old setting.
"""

import copy
import datetime
import fnmatch
import importlib.util
import json
import os
import pathlib
import shlex
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from etils import epath

MAIN_MODULE = 'mnv2_jax.main'
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MANIFEST_FILE = 'manifest.json'
FINAL_METRICS_FILE = 'final_metrics.json'
LOG_FILE = 'launch.log'
RUN_CONFIG_FILE = 'config.json'  # what mnv2_jax.main records in a workdir when a run starts
_ABSENT = object()
STATUSES = ('pending', 'running', 'finished', 'failed', 'interrupted', 'submitted',
            'running_elsewhere')
SEED_DIR_PREFIX = 'seed'  # a seeded run's workdir is <run>/seed<k>
COMPILATION_CACHE_DIR = 'compilation_cache'  # below the workroot, beside the sweeps
USE_DEFAULT_CACHE = 'default'  # build_manifest's compilation_cache: WORKROOT/compilation_cache


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def split_config_arg(config: str) -> tuple[str, Optional[str]]:
  """'configs/default.py:width=0.5' -> ('configs/default.py', 'width=0.5')."""
  path, separator, arg = config.partition(':')
  return path, (arg if separator else None)


def load_config_module(config_path: str):
  """Imports a config file by path, as ml_collections.config_flags does."""
  path = pathlib.Path(config_path)
  if not path.is_file():
    raise ValueError(f'--config {config_path!r} is not a file; pass a config file such as '
                     'configs/default.py.')
  spec = importlib.util.spec_from_file_location(f'_sweep_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def expand_sweep(sweep: Callable, sweep_name: str) -> list[tuple[str, dict[str, Any]]]:
  """Calls `sweep(add)`; returns [('<sweep_name>/<name>', overrides)] in the order added.

  Run names become directory names, so they must be unique, non-empty and free
  of '/', whitespace and a leading '.'.
  """
  runs: list[tuple[str, dict[str, Any]]] = []
  seen = set()

  def add(name: str, overrides: Mapping[str, Any]) -> None:
    if (not isinstance(name, str) or not name or '/' in name or name.startswith('.') or
        any(character.isspace() for character in name)):
      raise ValueError(f'sweep {sweep_name!r}: run name {name!r} must be a non-empty string '
                       'without "/", whitespace or a leading ".".')
    if name in seen:
      raise ValueError(f'sweep {sweep_name!r} adds run {name!r} twice; give each run a '
                       'unique name.')
    seen.add(name)
    runs.append((f'{sweep_name}/{name}', dict(overrides)))

  sweep(add)
  if not runs:
    raise ValueError(f'sweep {sweep_name!r} adds no runs.')
  return runs


def apply_overrides(config, overrides: Mapping[str, Any], run_name: str):
  """Returns a copy of `config` with dotted `overrides` set; ValueError names a bad field."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for depth, part in enumerate(parents + [leaf]):
      if not hasattr(node, 'keys') or part not in node:
        prefix = '.'.join((parents + [leaf])[:depth]) or 'config'
        known = sorted(node.keys()) if hasattr(node, 'keys') else []
        raise ValueError(f'run {run_name!r}: override {key!r} names no config field '
                         f'({prefix} has {known}); fix the sweep or --set.')
      if depth < len(parents):
        node = node[part]
    try:
      node[leaf] = value
    except (TypeError, ValueError) as error:
      raise ValueError(f'run {run_name!r}: override {key}={value!r} does not fit the config '
                       f'field: {error}') from None
  return config


def format_value(value: Any) -> str:
  """A value as ml_collections.config_flags parses it back."""
  if isinstance(value, float):
    return repr(value)
  return str(value)


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  return [f'--config.{key}={format_value(value)}' for key, value in overrides.items()]


def parse_set(items: Sequence[str]) -> dict[str, str]:
  """--set model.dtype=bfloat16 -> {'model.dtype': 'bfloat16'} (strings; typed on load)."""
  overrides = {}
  for item in items:
    key, separator, value = item.partition('=')
    if not separator or not key:
      raise ValueError(f'--set {item!r} must look like field.name=value.')
    overrides[key.strip()] = value.strip()
  return overrides


def parse_seeds(text: str) -> list[int]:
  """--seeds 0,1,2 -> [0, 1, 2]: distinct non-negative integers, in the order given."""
  try:
    seeds = [int(part) for part in text.split(',')]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f'--seeds {text!r} must be distinct non-negative integers separated by '
                     'commas, e.g. --seeds 0,1,2.')
  return seeds


def with_seeds(runs: Sequence[tuple[str, dict[str, Any]]],
               seeds: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
  """Each run once per seed: ('<name>/seed<k>', overrides + {'seed': k}); no seeds: `runs`.

  Seed-major order (every run at the first seed, then at the next): a sweep
  stopped part-way has whole sweeps at its first seeds rather than a few runs
  at every seed.
  """
  if not seeds:
    return list(runs)
  return [(f'{name}/{SEED_DIR_PREFIX}{seed}', {**overrides, 'seed': seed})
          for seed in seeds for name, overrides in runs]


def _typed(config, key: str, text: str) -> Any:
  """Parses a --set string with the type of the config field it overrides.

  Unknown fields stay strings; apply_overrides then names them.
  """
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    if not hasattr(node, 'keys') or part not in node:
      return text
    node = node[part]
  if not hasattr(node, 'get_type') or leaf not in node:
    return text
  field_type = node.get_type(leaf)  # also known for None placeholders
  if text.lower() == 'none':
    return None
  try:
    if field_type is bool:
      if text.lower() not in ('true', 'false'):
        raise ValueError
      return text.lower() == 'true'
    if field_type in (int, float):
      return field_type(text)
  except ValueError:
    raise ValueError(f'--set {key}={text}: {key} is a {field_type.__name__}.') from None
  return text


def config_for_command(config_path: str, arg: Optional[str], repo_dir: pathlib.Path) -> str:
  """The --config value as seen from the repository root (relative when inside it)."""
  path = pathlib.Path(config_path).resolve()
  try:
    text = str(path.relative_to(repo_dir.resolve()))
  except ValueError:
    text = str(path)
  return text if arg is None else f'{text}:{arg}'


def resolve_workroot(workroot: str) -> str:
  """Absolute local path, or a URL (gs://...) kept as is."""
  return workroot if '://' in workroot else str(pathlib.Path(workroot).resolve())


def main_command(python: str, config: str, workdir: str, overrides: Mapping[str, Any],
                 compilation_cache: Optional[str] = None) -> str:
  cache_flags = [f'--compilation_cache={compilation_cache}'] if compilation_cache else []
  return shlex.join([python, '-m', MAIN_MODULE, '--config', config, '--workdir', workdir,
                     *cache_flags, *override_flags(overrides)])


def default_compilation_cache(workroot: str) -> str:
  """WORKROOT/compilation_cache: shared by every run, seed and resume of the workroot's sweeps."""
  return os.path.join(workroot, COMPILATION_CACHE_DIR)


def is_finished(workdir: str) -> bool:
  """Whether WORKDIR/final_metrics.json exists; False when the store cannot say.

  (A remote workroot may be unreachable from here, e.g. a gs:// bucket without
  credentials; re-running a finished run is harmless, mnv2_jax.main returns at once.)
  """
  try:
    return (epath.Path(workdir) / FINAL_METRICS_FILE).exists()
  except Exception:  # pylint: disable=broad-except  # e.g. tf.errors.OpError for gs://
    return False


def recorded_config_conflicts(workdir: str, overrides: Mapping[str, Any]) -> list[str]:
  """The overrides that WORKDIR/config.json (written when the run started) contradicts.

  'field=recorded (the sweep now sets new)' for each; empty when the workdir has
  no readable config yet, and for a field the recorded config does not have
  (a run from before the field existed ran with its default).
  """
  try:
    recorded = json.loads((epath.Path(workdir) / RUN_CONFIG_FILE).read_text())
  except Exception:  # pylint: disable=broad-except  # absent, unreadable or remote without access
    return []
  conflicts = []
  for key, value in overrides.items():
    node = recorded
    for part in key.split('.'):
      node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
    if node is not _ABSENT and node != json.loads(json.dumps(value)):
      conflicts.append(f'{key}={format_value(node)} (the sweep now sets {format_value(value)})')
  return conflicts


def _varied_fields(overrides_of_runs: Sequence[Mapping[str, Any]]) -> set[str]:
  """Fields whose value is not the same in every run."""
  fields = set().union(*overrides_of_runs)
  missing = object()
  return {field for field in fields
          if len({repr(overrides.get(field, missing)) for overrides in overrides_of_runs}) > 1}


def build_manifest(config: str, sweep: str, workroot: str, backend: str, *,
                   python: str = sys.executable, extra_overrides: Sequence[str] = (),
                   only: Sequence[str] = (), seeds: Sequence[int] = (),
                   compilation_cache: Optional[str] = USE_DEFAULT_CACHE,
                   repo_dir: pathlib.Path = REPO_ROOT) -> dict:
  """Expands `sweep` of config file `config` into a manifest dict (nothing is written).

  extra_overrides: 'field=value' strings applied to every run (e.g. shorter
    runs); they replace the sweep's value of a field that is the same in all
    its runs, and a field the sweep varies is refused, since run names would lie.
  only: fnmatch patterns on run names ('fig5/v2_w0.35_*', 'fig6a/*/seed1');
    empty keeps all.
  seeds: one run per seed and run, '<run>/seed<k>' with config.seed = k (see
    `with_seeds`); empty keeps the runs as the sweep defines them.
  compilation_cache: the directory of JAX's persistent compilation cache that
    every run's command names (`mnv2_jax.compilation_cache`): by default
    WORKROOT/compilation_cache, None for no cache.
  """
  config_path, arg = split_config_arg(config)
  module = load_config_module(config_path)
  sweeps = getattr(module, 'SWEEPS', None)
  if not isinstance(sweeps, Mapping) or not sweeps:
    raise ValueError(f'{config_path} defines no SWEEPS dict; add '
                     "SWEEPS = {'name': sweep_function} at its end.")
  if sweep not in sweeps:
    raise ValueError(f'{config_path} has no sweep {sweep!r}; choose one of {sorted(sweeps)}.')
  base_config = module.get_config(arg) if arg is not None else module.get_config()
  extra = parse_set(extra_overrides)
  extra = {key: _typed(base_config, key, value) for key, value in extra.items()}
  workroot = resolve_workroot(workroot)
  if compilation_cache == USE_DEFAULT_CACHE:
    compilation_cache = default_compilation_cache(workroot)
  command_config = config_for_command(config_path, arg, repo_dir)
  expanded = expand_sweep(sweeps[sweep], sweep)
  varied = _varied_fields([overrides for _, overrides in expanded])
  conflicts = sorted(set(extra) & varied)
  if conflicts:
    raise ValueError(f'--set {conflicts} conflicts with sweep {sweep!r}, which varies it '
                     'between runs (run names would lie); drop it from --set.')
  if seeds and 'seed' in extra:
    raise ValueError('--set seed=... conflicts with --seeds; give the seeds with --seeds only.')
  if seeds and any('seed' in overrides for _, overrides in expanded):
    raise ValueError(f'--seeds conflicts with sweep {sweep!r}, which sets config.seed itself.')
  runs = []
  for name, overrides in with_seeds(expanded, seeds):
    if only and not any(fnmatch.fnmatchcase(name, pattern) for pattern in only):
      continue
    overrides = {**overrides, **extra}
    apply_overrides(base_config, overrides, name)
    workdir = os.path.join(workroot, *name.split('/'))
    conflicts = recorded_config_conflicts(workdir, overrides)
    if conflicts:
      raise ValueError(
          f'{name} in {workdir} was run with {"; ".join(conflicts)}: launching would '
          f'{"keep its result" if is_finished(workdir) else "resume it"} under the old setting. '
          'Move that workdir away (or launch into a fresh --workroot) and launch again.')
    runs.append({
        'name': name,
        'overrides': overrides,
        'workdir': workdir,
        'command': main_command(python, command_config, workdir, overrides, compilation_cache),
        'status': 'finished' if is_finished(workdir) else 'pending',
    })
  if not runs:
    raise ValueError(f'--only {list(only)} matches no run of sweep {sweep!r}.')
  return {
      'sweep': sweep,
      'config': command_config,
      'backend': backend,
      'workroot': workroot,
      'repo_dir': str(repo_dir),
      'compilation_cache': compilation_cache,
      'created': now(),
      'runs': runs,
  }


def manifest_path(manifest: Mapping[str, Any]) -> epath.Path:
  return epath.Path(manifest['workroot']) / manifest['sweep'] / MANIFEST_FILE


def write_manifest(manifest: Mapping[str, Any]) -> epath.Path:
  """Writes the manifest atomically (a reader never sees half a file)."""
  path = manifest_path(manifest)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.parent / f'.{MANIFEST_FILE}.tmp'
  temporary.write_text(json.dumps(manifest, indent=2) + '\n')
  temporary.replace(path)
  return path


def read_manifest(path) -> dict:
  return json.loads(epath.Path(path).read_text())
