"""One CSV row per run of a workroot, and one per configuration over its seeds.

  python -m experiments.collect --workroot sweeps/cpu [--out results.csv]
      [--aggregate-out results_aggregate.csv]

A run is a directory under the workroot holding mnv2_jax.main's files
(config.json, run_info.json, metrics.jsonl, final_metrics.json; see
notes/contracts.md), or one that a sweep manifest lists as failed. Its name is
its path below the workroot ('fig5/v2_w0.35_r96/seed1') and its sweep the
first part. Its configuration is the name without the seed directory that
`launch.sweep --seeds` adds ('fig5/v2_w0.35_r96'); its seed is config.seed.

Accuracies are in percent. 'final_*' come from final_metrics.json when the
run finished; otherwise from the last eval line of metrics.jsonl, and the
run's status says 'unfinished' (or 'failed', as the manifest records it).
'best_*' are maxima over all eval lines. 'converged' applies the convergence
rule (see CONVERGENCE_GAIN_POINTS) to finished runs and is empty where it
cannot be decided; 'learned' says whether the run left chance at all
(LEARNED_CHANCE_MULTIPLE). Partial sweeps are fine: every run with any data gets a row.

The aggregate CSV (default: next to --out, '<stem>_aggregate.csv') has one
row per configuration: n (runs with an accuracy), n_finished, their seeds,
and for the final raw and EMA top-1/top-5 the mean, the standard deviation
and the 95% t-interval of the mean over seeds (empty for n = 1), plus the
fractions of runs that converged and that learned. Its status is 'finished' when every run of
the configuration finished.
"""

import csv
import json
import os
import pathlib
import re
import sys
from typing import Any, Iterable, Optional, Sequence

from experiments import uncertainty
from mnv2_jax import errors
from mnv2_jax import metrics as metrics_lib

CONFIG_FILE = 'config.json'
RUN_INFO_FILE = 'run_info.json'
METRICS_FILE = 'metrics.jsonl'
FINAL_METRICS_FILE = 'final_metrics.json'
MANIFEST_FILE = 'manifest.json'
RUN_FILES = (CONFIG_FILE, RUN_INFO_FILE, METRICS_FILE, FINAL_METRICS_FILE)
SKIPPED_DIRS = ('checkpoints', 'tensorboard', 'compilation_cache')
# launch.sweep --seeds puts seed k of run R in R/seed<k>.
SEEDED_NAME = re.compile(r'(?P<configuration>.+)/seed(?P<seed>\d+)')

CONVERGENCE_GAIN_POINTS = 2.0
"""A finished run has converged when its EMA top-1 gained less than this many
points over the last CONVERGENCE_WINDOW of its steps: its final EMA top-1 minus
that of its latest eval at or before step (1 - CONVERGENCE_WINDOW) * total
steps. A run still gaining more is stopped on its learning curve, and compares
how fast runs learn rather than what they reach."""
CONVERGENCE_WINDOW = 0.25

LEARNED_CHANCE_MULTIPLE = 2.0
"""A finished run has learned when its final EMA top-1 is at least this multiple
of chance (100 / classes %). A run that never left chance gains nothing over its
last quarter and so passes the convergence rule: 'learned' tells the two apart
(the no-shortcut networks of Figure 6b sat at 6-8% of a 20-class task)."""

ACCURACIES = {  # CSV column stem -> metrics.jsonl / final_metrics.json key
    'top1': 'eval_top1', 'top5': 'eval_top5',
    'ema_top1': 'eval_ema_top1', 'ema_top5': 'eval_ema_top5',
}
CONFIGURATION_FIELDS = (
    'model', 'width_multiplier', 'resolution', 'expansion_ratio', 'bottleneck_activation',
    'shortcut', 'dataset', 'params', 'madds',
)
COLUMNS = (
    'sweep', 'name', 'configuration', 'seed', 'status', *CONFIGURATION_FIELDS, 'step',
    'total_steps', *(f'final_{stem}' for stem in ACCURACIES),
    *(f'best_{stem}' for stem in ACCURACIES), 'converged', 'learned', 'wall_time_seconds',
    'cpu_models', 'code_commits', 'workdir',
)
AGGREGATED_METRICS = tuple(f'final_{stem}' for stem in ACCURACIES)
STATISTICS = ('mean', 'std', 'ci95_low', 'ci95_high')
AGGREGATE_COLUMNS = (
    'sweep', 'configuration', 'status', 'n', 'n_finished', 'seeds', *CONFIGURATION_FIELDS,
    'total_steps', *(f'{metric}_{statistic}' for metric in AGGREGATED_METRICS
                     for statistic in STATISTICS),
    'converged_fraction', 'n_converged', 'n_convergence_known', 'learned_fraction',
)


def _read_json(path: pathlib.Path) -> Optional[dict]:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


_number = metrics_lib.finite_number  # metrics.jsonl writes non-finite values as strings


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """metrics.jsonl lines; a line cut short by a kill is skipped."""
  records = []
  try:
    lines = (workdir / METRICS_FILE).read_text().splitlines()
  except FileNotFoundError:
    return records
  for line in lines:
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def eval_curve(workdir: pathlib.Path, key: str = 'eval_top1') -> tuple[list[int], list[float]]:
  """(steps, accuracy in percent) of the eval lines that have `key`, by step."""
  points = {}
  for record in read_metrics(workdir):
    value = _number(record.get(key))
    if value is not None and 'step' in record:
      points[int(record['step'])] = 100.0 * value
  steps = sorted(points)
  return steps, [points[step] for step in steps]


def split_seed(name: str) -> tuple[str, Optional[int]]:
  """'fig5/v2_w0.35_r96/seed1' -> ('fig5/v2_w0.35_r96', 1); an unseeded name -> (name, None)."""
  match = SEEDED_NAME.fullmatch(name)
  if match is None:
    return name, None
  return match['configuration'], int(match['seed'])


def has_converged(final_ema_top1: Optional[float], ema_curve: Sequence[tuple[int, float]],
                  total_steps: Optional[int]) -> Optional[bool]:
  """The convergence rule (CONVERGENCE_GAIN_POINTS); None when it cannot be decided.

  ema_curve: (step, EMA top-1 %) of the run's evals, by step. Undecidable: no
  final accuracy or step count, or no eval at or before the window's start.
  """
  if final_ema_top1 is None or not total_steps:
    return None
  window_start = (1 - CONVERGENCE_WINDOW) * total_steps
  before = [value for step, value in ema_curve if step <= window_start]
  if not before:
    return None
  return final_ema_top1 - before[-1] < CONVERGENCE_GAIN_POINTS


def has_learned(final_ema_top1: Optional[float], num_classes: Optional[int]) -> Optional[bool]:
  """The final EMA top-1 is at least LEARNED_CHANCE_MULTIPLE x chance; None if unknown."""
  if final_ema_top1 is None or not num_classes:
    return None
  return final_ema_top1 >= LEARNED_CHANCE_MULTIPLE * 100.0 / num_classes


def find_run_dirs(workroot: pathlib.Path) -> list[pathlib.Path]:
  """Directories at or below `workroot` that hold any of mnv2_jax.main's run files."""
  found = []
  for directory, subdirectories, files in os.walk(workroot):
    # Checkpoint and TensorBoard trees are large and never hold runs.
    subdirectories[:] = sorted(name for name in subdirectories if name not in SKIPPED_DIRS)
    if any(file in files for file in RUN_FILES):
      found.append(pathlib.Path(directory))
  return found


def read_manifests(workroot: pathlib.Path) -> dict[str, dict[str, Any]]:
  """Run name -> manifest entry, over every manifest.json below the workroot."""
  entries = {}
  for path in sorted(workroot.rglob(MANIFEST_FILE)):
    manifest = _read_json(path) or {}
    for run in manifest.get('runs', []):
      entries[run['name']] = run
  return entries


def provenance_of_run(run_info: dict[str, Any]) -> dict[str, Optional[str]]:
  """The processors and commits of a run's starts (run_info.json 'starts'), ' + ' between them.

  A commit with changes to tracked files is marked '+modified'. None for runs written before
  run_info.json recorded its starts.
  """
  starts = run_info.get('starts') or []

  def distinct(values):
    values = [value for value in values if value]
    return ' + '.join(dict.fromkeys(values)) or None

  def commit(code):
    if not code.get('commit'):
      return None
    return code['commit'][:12] + ('+modified' if code.get('modified') else '')

  return {'cpu_models': distinct(start.get('machine', {}).get('cpu_model') for start in starts),
          'code_commits': distinct(commit(start.get('code', {})) for start in starts)}


def summarize_run(workdir: pathlib.Path, name: str,
                  manifest_entry: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """The CSV row of one run directory."""
  config = _read_json(workdir / CONFIG_FILE) or {}
  run_info = _read_json(workdir / RUN_INFO_FILE) or {}
  final = _read_json(workdir / FINAL_METRICS_FILE)
  overrides = (manifest_entry or {}).get('overrides', {})
  model_config = config.get('model', {})
  data_config = config.get('data', {})

  def pick(run_info_key, section, config_key, override_key):
    for value in (run_info.get(run_info_key), section.get(config_key), overrides.get(override_key)):
      if value is not None:
        return value
    return None

  model = pick('model', model_config, 'name', 'model.name')
  is_v2 = model != 'mobilenet_v1'
  evals = [record for record in read_metrics(workdir) if _number(record.get('eval_top1')) is not None]
  configuration, seed_of_name = split_seed(name)
  seed = next((value for value in (config.get('seed'), overrides.get('seed'), seed_of_name)
               if value is not None), None)
  row = {
      'sweep': name.split('/')[0] if '/' in name else '',
      'name': name,
      'configuration': configuration,
      'seed': seed,
      'model': model,
      'width_multiplier': pick('width_multiplier', model_config, 'width_multiplier',
                               'model.width_multiplier'),
      'resolution': pick('resolution', data_config, 'resolution', 'data.resolution'),
      # The V1 network has no expansion ratio, activation switch or shortcut choice.
      'expansion_ratio': pick('expansion_ratio', model_config, 'expansion_ratio',
                              'model.expansion_ratio') if is_v2 else None,
      'bottleneck_activation': pick(None, model_config, 'bottleneck_activation',
                                    'model.bottleneck_activation') if is_v2 else None,
      'shortcut': pick(None, model_config, 'shortcut', 'model.shortcut') if is_v2 else None,
      'dataset': pick(None, data_config, 'dataset', 'data.dataset'),
      'params': run_info.get('params', (final or {}).get('params')),
      'madds': run_info.get('madds', (final or {}).get('madds')),
      'total_steps': run_info.get('total_steps'),
      **provenance_of_run(run_info),
      'workdir': str(workdir),
  }
  for stem, key in ACCURACIES.items():
    values = [_number(record.get(key)) for record in evals]
    values = [value for value in values if value is not None]
    row[f'best_{stem}'] = 100.0 * max(values) if values else None
  if final is not None:
    row['status'] = 'finished'
    row['step'] = final.get('step')
    for stem, key in ACCURACIES.items():
      value = _number(final.get(key))
      row[f'final_{stem}'] = 100.0 * value if value is not None else None
    # final_metrics.json's own bests also cover evals that metrics.jsonl may lack.
    for stem in ('top1', 'ema_top1'):
      value = _number(final.get(f'best_eval_{stem}'))
      if value is not None:
        row[f'best_{stem}'] = max(100.0 * value, row[f'best_{stem}'] or 0.0)
    row['wall_time_seconds'] = final.get('wall_time_seconds')
    ema_curve = [(int(record['step']), 100.0 * _number(record.get('eval_ema_top1')))
                 for record in evals
                 if 'step' in record and _number(record.get('eval_ema_top1')) is not None]
    row['converged'] = has_converged(row['final_ema_top1'], sorted(ema_curve),
                                     row['total_steps'])
    row['learned'] = has_learned(row['final_ema_top1'], run_info.get('num_classes'))
  else:
    status = (manifest_entry or {}).get('status')
    row['status'] = 'failed' if status == 'failed' else 'unfinished'
    last = evals[-1] if evals else {}
    steps = [int(record['step']) for record in read_metrics(workdir) if 'step' in record]
    row['step'] = max(steps) if steps else None
    for stem, key in ACCURACIES.items():
      value = _number(last.get(key))
      row[f'final_{stem}'] = 100.0 * value if value is not None else None
    row['wall_time_seconds'] = None
  return {column: row.get(column) for column in COLUMNS}


def collect(workroot) -> list[dict[str, Any]]:
  """Rows for every run of `workroot`: by sweep, configuration (in manifest order), seed."""
  workroot = pathlib.Path(workroot)
  if not workroot.is_dir():
    raise ValueError(f'--workroot {workroot} is not a directory.')
  manifest = read_manifests(workroot)
  rows = {}
  for workdir in find_run_dirs(workroot):
    name = workdir.relative_to(workroot).as_posix() if workdir != workroot else workroot.name
    rows[name] = summarize_run(workdir, name, manifest.get(name))
  for name, entry in manifest.items():  # failed before writing anything (e.g. a bad config)
    if name not in rows and entry.get('status') == 'failed':
      rows[name] = summarize_run(workroot / name, name, entry)
  # A configuration sorts where its first seed stands in the manifest.
  order = {}
  for index, name in enumerate(manifest):
    order.setdefault(split_seed(name)[0], index)
  return sorted(rows.values(), key=lambda row: (
      row['sweep'], order.get(row['configuration'], len(order)), row['configuration'],
      row['seed'] if row['seed'] is not None else -1, row['name']))


def group_runs(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """Configuration -> its runs (rows), in the order of `rows`."""
  groups = {}
  for row in rows:
    groups.setdefault(row['configuration'], []).append(row)
  return groups


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row (AGGREGATE_COLUMNS) per configuration, over its runs that have an accuracy."""
  aggregated = []
  for configuration, runs in group_runs(rows).items():
    runs = [run for run in runs if run['final_top1'] is not None]
    if not runs:
      continue
    first = runs[0]
    n_finished = sum(run['status'] == 'finished' for run in runs)
    row = {
        'sweep': first['sweep'], 'configuration': configuration,
        'status': 'finished' if n_finished == len(runs) else 'unfinished',
        'n': len(runs), 'n_finished': n_finished,
        'seeds': ' '.join(str(run['seed']) for run in runs if run['seed'] is not None),
        'total_steps': first['total_steps'],
        **{field: first[field] for field in CONFIGURATION_FIELDS},
    }
    for metric in AGGREGATED_METRICS:
      values = [run[metric] for run in runs if run[metric] is not None]
      if not values:
        row.update(dict.fromkeys(f'{metric}_{statistic}' for statistic in STATISTICS))
        continue
      estimate = uncertainty.mean_interval(values)
      row.update({f'{metric}_mean': estimate.value, f'{metric}_std': estimate.std,
                  f'{metric}_ci95_low': estimate.low, f'{metric}_ci95_high': estimate.high})
    known = [run['converged'] for run in runs if run['converged'] is not None]
    row['converged_fraction'] = sum(known) / len(known) if known else None
    row['n_converged'] = sum(known)
    row['n_convergence_known'] = len(known)
    learned = [run['learned'] for run in runs if run.get('learned') is not None]
    row['learned_fraction'] = sum(learned) / len(learned) if learned else None
    aggregated.append(row)
  return aggregated


def _format(value: Any) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4f}'.rstrip('0').rstrip('.') if not value.is_integer() else str(value)
  return str(value)


def write_csv(rows: Iterable[dict[str, Any]], path, columns: Sequence[str] = COLUMNS) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({column: _format(row[column]) for column in columns})


def aggregate_path(out: pathlib.Path) -> pathlib.Path:
  """results.csv -> results_aggregate.csv, in the same directory."""
  return out.with_name(f'{out.stem}_aggregate{out.suffix or ".csv"}')


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.collect',
                                 description=__doc__.split('\n\n')[0])
  parser.add_argument('--workroot', required=True, help='directory of run workdirs')
  parser.add_argument('--out', help='per-run CSV path (default: WORKROOT/results.csv)')
  parser.add_argument('--aggregate-out',
                      help='per-configuration CSV path (default: <--out stem>_aggregate.csv '
                      'next to --out)')
  args = parser.parse_args(argv)
  try:
    rows = collect(args.workroot)
  except ValueError as error:
    raise errors.UserError(errors.one_line(error)) from error
  out = pathlib.Path(args.out or pathlib.Path(args.workroot) / 'results.csv')
  write_csv(rows, out)
  finished = sum(row['status'] == 'finished' for row in rows)
  print(f'{len(rows)} runs ({finished} finished) -> {out}')
  aggregated = aggregate(rows)
  aggregate_out = pathlib.Path(args.aggregate_out) if args.aggregate_out else aggregate_path(out)
  write_csv(aggregated, aggregate_out, AGGREGATE_COLUMNS)
  print(f'{len(aggregated)} configurations -> {aggregate_out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
