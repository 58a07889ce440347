"""A sweep as one Slurm job array: one array task per unfinished run.

Each task gets one node with `gpus_per_run` GPUs (`--gpus-per-task`, or a
`--gres` string instead) and runs a single `mnv2_jax.main` process, which uses
all GPUs it sees with data parallelism (no jax.distributed needed on one
node). `--signal=B:TERM@300` lets a run save a checkpoint before the time
limit; submitting the sweep again resumes the unfinished runs, since finished
ones are left out of the array (and a task whose run finished meanwhile exits
at once).
"""

import dataclasses
import pathlib
import shlex
import subprocess
from typing import Any, Mapping, Optional, Sequence

from launch import manifest as manifest_lib

SCRIPT_FILE = 'sweep.sbatch'


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  partition: Optional[str] = None
  time: str = '48:00:00'
  gpus_per_run: int = 1
  gres: Optional[str] = None  # e.g. 'gpu:a100:8'; replaces --gpus-per-task
  cpus_per_run: int = 8
  account: Optional[str] = None
  max_parallel: Optional[int] = None  # the array's %N throttle
  extra_sbatch: Sequence[str] = ()  # further '--key=value' lines, e.g. '--mem=200G'

  def __post_init__(self):
    if self.gpus_per_run < 0 or self.cpus_per_run < 1:
      raise ValueError('--gpus-per-run must be >= 0 and --cpus-per-run >= 1.')


def sbatch_script(manifest: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                  options: SlurmOptions) -> str:
  """The sbatch array script for `runs` (array index i runs runs[i])."""
  if not runs:
    raise ValueError('no unfinished runs to submit.')
  sweep_dir = pathlib.PurePath(manifest['workroot']) / manifest['sweep']
  array = f'0-{len(runs) - 1}' + (f'%{options.max_parallel}' if options.max_parallel else '')
  directives = [
      f'--job-name=mnv2_jax-{manifest["sweep"]}',
      f'--array={array}',
      '--nodes=1',
      '--ntasks=1',
      f'--cpus-per-task={options.cpus_per_run}',
  ]
  if options.gres:
    directives.append(f'--gres={options.gres}')
  elif options.gpus_per_run:
    directives.append(f'--gpus-per-task={options.gpus_per_run}')
  directives.append(f'--time={options.time}')
  if options.partition:
    directives.append(f'--partition={options.partition}')
  if options.account:
    directives.append(f'--account={options.account}')
  directives += ['--signal=B:TERM@300', f'--output={sweep_dir}/slurm/%A_%a.out',
                 *options.extra_sbatch]
  lines = ['#!/bin/bash'] + [f'#SBATCH {directive}' for directive in directives] + [
      f'# Sweep {manifest["sweep"]} of {manifest["config"]}: one array task per run.',
      '# Written by `python -m launch.sweep --backend slurm`; submit again to resume.',
      'set -euo pipefail',
      f'cd {shlex.quote(manifest["repo_dir"])}',
      'case "${SLURM_ARRAY_TASK_ID}" in',
  ]
  for index, run in enumerate(runs):
    lines += [
        f'  {index})  # {run["name"]}',
        f'    WORKDIR={shlex.quote(run["workdir"])}',
        f'    COMMAND=({run["command"]}) ;;',
    ]
  lines += [
      '  *) echo "no run for array task ${SLURM_ARRAY_TASK_ID}" >&2; exit 2 ;;',
      'esac',
      f'if [[ -f "${{WORKDIR}}/{manifest_lib.FINAL_METRICS_FILE}" ]]; then',
      '  echo "already finished: ${WORKDIR}"; exit 0',
      'fi',
      'mkdir -p "${WORKDIR}"',
      'exec "${COMMAND[@]}"',
  ]
  return '\n'.join(lines) + '\n'


def submit(manifest: dict, options: SlurmOptions, dry_run: bool, echo=print) -> int:
  """Writes the manifest and script and runs sbatch, or prints the script (dry run)."""
  runs = [run for run in manifest['runs'] if run['status'] != 'finished']
  if not runs:
    echo(f'sweep {manifest["sweep"]}: every run has finished; nothing to submit.')
    return 0
  script = sbatch_script(manifest, runs, options)
  if dry_run:
    echo(script)
    return 0
  path = manifest_lib.manifest_path(manifest).parent / SCRIPT_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  (path.parent / 'slurm').mkdir(exist_ok=True)
  path.write_text(script)
  manifest_lib.write_manifest(manifest)
  try:
    result = subprocess.run(['sbatch', '--parsable', str(path)], check=True,
                            capture_output=True, text=True)
  except FileNotFoundError:
    raise ValueError('sbatch is not on PATH; run on a Slurm login node, or use --dry-run '
                     f'and submit {path} yourself.') from None
  except subprocess.CalledProcessError as error:
    echo(f'sbatch failed (exit code {error.returncode}): {error.stderr.strip()}')
    return 1
  job_id = result.stdout.strip().split(';')[0]
  for index, run in enumerate(runs):
    run.update(status='submitted', slurm_job=f'{job_id}_{index}', submitted=manifest_lib.now())
  manifest['slurm_script'] = str(path)
  manifest_lib.write_manifest(manifest)
  echo(f'submitted {len(runs)} runs as Slurm array job {job_id} ({path})')
  return 0
