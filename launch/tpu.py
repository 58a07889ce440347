"""A sweep on a Cloud TPU VM slice: one `gcloud ... ssh --worker=all` per run.

Every worker of the slice runs the same `mnv2_jax.main` command with
`--config.distributed.initialize=True`, so `jax.distributed.initialize()`
finds its peers from the TPU metadata; each process feeds its own shard of the
data and only process 0 writes logs. The runs go one after another (each takes
the whole slice). The workroot should be a bucket (gs://...) that every worker
can write: checkpoints are written by all processes.
"""

import dataclasses
import shlex
import subprocess
from typing import Any, Mapping, Optional

from launch import manifest as manifest_lib

DISTRIBUTED_FLAG = '--config.distributed.initialize=True'


@dataclasses.dataclass(frozen=True)
class TpuOptions:
  tpu_name: str
  zone: str
  project: Optional[str] = None
  repo_dir: str = 'mnv2_jax'  # on the TPU VMs, relative to the ssh user's home

  def __post_init__(self):
    if not self.tpu_name or not self.zone:
      raise ValueError('--backend tpu needs --tpu-name and --zone.')


def remote_command(run: Mapping[str, Any], options: TpuOptions) -> str:
  """The shell command each worker runs: the run's command with jax.distributed on."""
  return f'cd {shlex.quote(options.repo_dir)} && {run["command"]} {DISTRIBUTED_FLAG}'


def gcloud_command(run: Mapping[str, Any], options: TpuOptions) -> list[str]:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', options.tpu_name,
             f'--zone={options.zone}']
  if options.project:
    command.append(f'--project={options.project}')
  return command + ['--worker=all', f'--command={remote_command(run, options)}']


def launch(manifest: dict, options: TpuOptions, dry_run: bool, echo=print) -> int:
  """Prints (dry run) or runs each unfinished run's gcloud command in turn."""
  runs = [run for run in manifest['runs'] if run['status'] != 'finished']
  for run in runs:
    run['launch_command'] = shlex.join(gcloud_command(run, options))
  if dry_run:
    for run in runs:
      echo(run['launch_command'])
    return 0
  manifest_lib.write_manifest(manifest)
  failed = 0
  for run in runs:
    if manifest_lib.is_finished(run['workdir']):
      run['status'] = 'finished'
      continue
    echo(f'started  {run["name"]} on {options.tpu_name}')
    run.update(status='running', started=manifest_lib.now())
    manifest_lib.write_manifest(manifest)
    try:
      exit_code = subprocess.run(gcloud_command(run, options)).returncode
    except FileNotFoundError:
      raise ValueError('gcloud is not on PATH; install the Google Cloud CLI or use '
                       '--dry-run to print the commands.') from None
    except KeyboardInterrupt:
      run.update(status='interrupted', ended=manifest_lib.now())
      manifest_lib.write_manifest(manifest)
      return 130
    finished = exit_code == 0 and manifest_lib.is_finished(run['workdir'])
    run.update(status='finished' if finished else 'failed', exit_code=exit_code,
               ended=manifest_lib.now())
    failed += not finished
    manifest_lib.write_manifest(manifest)
    echo(f'{run["status"]:8s} {run["name"]}  (exit code {exit_code})')
  return 1 if failed else 0
