r"""Launches a sweep defined in a config file's SWEEPS dict.

  python -m launch.sweep --config configs/default.py --sweep fig5 \
      --workroot sweeps/cpu --backend local [--seeds 0,1,2] [--parallel N] [--dry-run]
  python -m launch.sweep --workroot sweeps/cpu --status

Each run trains in WORKROOT/<sweep>/<run> with
`python -m mnv2_jax.main --config CONFIG --workdir WORKDIR --config.a.b=value ...`,
and WORKROOT/<sweep>/manifest.json lists the runs (name, overrides, workdir,
command, status) before any starts.

--seeds 0,1,2 repeats every run once per seed, in WORKROOT/<sweep>/<run>/seed<k>
with --config.seed=k: every seed is a run of its own for every backend
(finished seeds are skipped, a failed seed does not stop the others). The
runs go seed by seed, so a sweep stopped part-way has whole sweeps at its
first seeds. Without --seeds the runs use the config's seed.

Backends:
  local  runs them here, --parallel at a time; run the same command again to
         skip finished runs and resume the others; Ctrl-C stops them resumably.
  slurm  writes WORKROOT/<sweep>/sweep.sbatch (one array task per unfinished
         run, --gpus-per-run GPUs each) and submits it with sbatch.
  tpu    runs each entry on a TPU VM slice with
         `gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=all --command ...`
         and jax.distributed initialised.
--dry-run writes nothing and starts nothing: it prints the manifest (local),
the sbatch script (slurm) or the gcloud commands (tpu).

--status starts nothing either: per sweep of the workroot (or the one that
--config and --sweep name), how many runs are finished, running (with their
step), failed (with the last line of their log) and not started, and the time
left estimated from the measured step times (`launch/status.py`). The local
backend prints the same line each time a run ends.

Then: `python -m experiments.collect --workroot WORKROOT` (per-run and
per-configuration CSVs), `python -m experiments.figures --workroot WORKROOT`
and `python -m experiments.claims --workroot WORKROOT --out CLAIMS.md`.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from etils import epath

from launch import local
from launch import manifest as manifest_lib
from launch import slurm
from launch import status as status_lib
from launch import tpu
from mnv2_jax import errors

BACKENDS = ('local', 'slurm', 'tpu')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = errors.ArgumentParser(
      prog='python -m launch.sweep', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  # Required, except that --status needs only the workroot.
  parser.add_argument('--config',
                      help='config file with a SWEEPS dict, optionally with :arg '
                      '(as for mnv2_jax.main)')
  parser.add_argument('--sweep', help='a key of the config file\'s SWEEPS')
  parser.add_argument('--workroot', required=True,
                      help='directory (or gs:// URL for tpu) that gets <sweep>/<run>/ workdirs')
  parser.add_argument('--backend', choices=BACKENDS, default='local')
  parser.add_argument('--parallel', type=int, default=1,
                      help='local: runs at a time; slurm: array throttle (%%N)')
  parser.add_argument('--dry-run', action='store_true',
                      help='print the manifest / sbatch script / gcloud commands; start nothing')
  parser.add_argument('--status', action='store_true',
                      help='start nothing; print how far each sweep of the workroot is (only '
                      'this sweep with --config and --sweep) and the time left')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='override for every run, e.g. --set train.num_steps=100 (repeatable)')
  parser.add_argument('--seeds', metavar='K,K,...',
                      help='run every run once per seed, in <run>/seed<k> with '
                      'config.seed=k, e.g. --seeds 0,1,2')
  parser.add_argument('--compilation-cache', default=manifest_lib.USE_DEFAULT_CACHE,
                      metavar='DIR',
                      help='JAX persistent compilation cache shared by the runs, so each '
                      'program compiles once per sweep (default: WORKROOT/compilation_cache; '
                      "'none' turns it off)")
  parser.add_argument('--only', action='append', default=[], metavar='PATTERN',
                      help="run only names matching this glob, e.g. 'fig5/v2_w0.35_*' or "
                      "'fig5/*/seed0' (repeatable)")
  parser.add_argument('--python', default=None,
                      help='interpreter in the commands (default: this one for local, '
                      'python3 for slurm/tpu)')
  group = parser.add_argument_group('local')
  group.add_argument('--grace-seconds', type=float, default=120.0,
                     help='after Ctrl-C, how long runs get to save before SIGKILL')
  group = parser.add_argument_group('slurm')
  group.add_argument('--partition')
  group.add_argument('--time', default='48:00:00', help='time limit per run')
  group.add_argument('--gpus-per-run', type=int, default=1,
                     help='GPUs of each array task (#SBATCH --gpus-per-task)')
  group.add_argument('--gres', help="instead of --gpus-per-run, e.g. 'gpu:a100:8'")
  group.add_argument('--cpus-per-run', type=int, default=8)
  group.add_argument('--account')
  group.add_argument('--sbatch-arg', action='append', default=[], metavar='--KEY=VALUE',
                     help="extra #SBATCH line, e.g. --sbatch-arg=--mem=200G (repeatable)")
  group = parser.add_argument_group('tpu')
  group.add_argument('--tpu-name')
  group.add_argument('--zone')
  group.add_argument('--project')
  group.add_argument('--tpu-repo-dir', default='mnv2_jax',
                     help='repository checkout on the TPU VMs (relative to the home directory)')
  args = parser.parse_args(argv)
  missing = [flag for flag, value in (('--config', args.config), ('--sweep', args.sweep))
             if value is None]
  if missing and not (args.status and (args.config is None or args.sweep is not None)):
    parser.error(f'the following arguments are required: {", ".join(missing)}')
  return args


def print_status(args: argparse.Namespace, python: str, seeds: Sequence[int]) -> int:
  """--status: one report per sweep; 0, or 1 when the workroot has no sweep to report."""
  if not epath.Path(manifest_lib.resolve_workroot(args.workroot)).exists():
    raise ValueError(f'--workroot {args.workroot} does not exist; pass the --workroot a sweep '
                     f'was launched with.')
  if args.config is not None:
    built = manifest_lib.build_manifest(args.config, args.sweep, args.workroot, args.backend,
                                        python=python, extra_overrides=args.set,
                                        only=args.only, seeds=seeds)
    recorded = status_lib.manifests_in(args.workroot, args.sweep)
    manifests = [status_lib.with_recorded_statuses(built, recorded[0] if recorded else None)]
  else:
    manifests = status_lib.manifests_in(args.workroot, args.sweep)
  if not manifests:
    where = f'{args.workroot}/{args.sweep}' if args.sweep else f'{args.workroot}/*'
    print(f'no sweep manifest in {where}/{manifest_lib.MANIFEST_FILE}: launch a sweep there, '
          f'or pass --config and --sweep to list its runs.')
    return 1
  for manifest in manifests:
    print(status_lib.report(status_lib.sweep_status(manifest)))
  return 0


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  python = args.python or (sys.executable if args.backend == 'local' else 'python3')
  try:
    if args.parallel < 1:
      raise ValueError(f'--parallel must be >= 1, got {args.parallel}.')
    seeds = manifest_lib.parse_seeds(args.seeds) if args.seeds is not None else []
    if args.status:
      return print_status(args, python, seeds)
    # Backend options are checked before the config is loaded, which is slower.
    slurm_options = tpu_options = None
    if args.backend == 'slurm':
      slurm_options = slurm.SlurmOptions(
          partition=args.partition, time=args.time, gpus_per_run=args.gpus_per_run,
          gres=args.gres, cpus_per_run=args.cpus_per_run, account=args.account,
          max_parallel=args.parallel if args.parallel > 1 else None,
          extra_sbatch=tuple(args.sbatch_arg))
    elif args.backend == 'tpu':
      tpu_options = tpu.TpuOptions(tpu_name=args.tpu_name, zone=args.zone,
                                   project=args.project, repo_dir=args.tpu_repo_dir)
    manifest = manifest_lib.build_manifest(
        args.config, args.sweep, args.workroot, args.backend, python=python,
        extra_overrides=args.set, only=args.only, seeds=seeds,
        compilation_cache=None if args.compilation_cache == 'none' else args.compilation_cache)
    if args.backend == 'local':
      if args.dry_run:
        print(json.dumps(manifest, indent=2))
        return 0
      return local.LocalRunner(manifest, parallel=args.parallel,
                               grace_seconds=args.grace_seconds).run()
    if args.backend == 'slurm':
      return slurm.submit(manifest, slurm_options, dry_run=args.dry_run)
    return tpu.launch(manifest, tpu_options, dry_run=args.dry_run)
  except ValueError as error:
    raise errors.UserError(errors.one_line(error)) from error


if __name__ == '__main__':
  sys.exit(main())
