"""The small files of finished runs, kept in the repository; a sweep resumes from them.

  python -m experiments.archive --workroot sweeps/final --out results/cpu/runs
  python -m experiments.archive --restore --workroot sweeps/final --out results/cpu/runs

A sweep of several hours outlives the machine it started on. Its checkpoints are
too large to commit, but a finished run is fully described by four small files
(config.json, run_info.json, metrics.jsonl, final_metrics.json: tens of kB).
The first command copies those of every finished run under the workroot into
the archive, at the same relative path ('fig5/v2_w0.35_r40/seed1/...'), so that
`experiments.collect`, `experiments.figures` and `experiments.claims` read the
archive as a workroot. `--restore` copies the archive back into a (new)
workroot: `launch.sweep` then counts those runs as finished (final_metrics.json
exists) and trains only the rest. Unfinished runs are never archived; their
checkpoints stay where they are, and a new machine restarts them from step 0.
"""

import pathlib
import shutil
import sys
from typing import Optional, Sequence

from experiments import collect
from mnv2_jax import errors


def finished_runs(root: pathlib.Path) -> list[pathlib.Path]:
  """Workdirs below `root` (relative to it) that hold final_metrics.json and config.json."""
  runs = []
  for final in sorted(root.rglob(collect.FINAL_METRICS_FILE)):
    workdir = final.parent
    relative = workdir.relative_to(root)
    if any(part in collect.SKIPPED_DIRS for part in relative.parts):
      continue
    if (workdir / collect.CONFIG_FILE).exists():
      runs.append(relative)
  return runs


def copy_runs(source: pathlib.Path, destination: pathlib.Path) -> tuple[int, int]:
  """Copies each finished run's RUN_FILES; returns (runs copied or refreshed, runs new there)."""
  copied = new = 0
  for relative in finished_runs(source):
    target = destination / relative
    new += not (target / collect.FINAL_METRICS_FILE).exists()
    target.mkdir(parents=True, exist_ok=True)
    for name in collect.RUN_FILES:
      if (source / relative / name).exists():
        shutil.copyfile(source / relative / name, target / name)
    copied += 1
  return copied, new


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = errors.ArgumentParser(prog='python -m experiments.archive',
                                 description=__doc__.split('\n\n')[1])
  parser.add_argument('--workroot', required=True, help='the sweeps\' workroot')
  parser.add_argument('--out', required=True, help='the archive (a directory in the repository)')
  parser.add_argument('--restore', action='store_true',
                      help='copy the archive into the workroot instead')
  args = parser.parse_args(argv)
  workroot, archive = pathlib.Path(args.workroot), pathlib.Path(args.out)
  source, destination = (archive, workroot) if args.restore else (workroot, archive)
  if not source.is_dir():
    raise errors.UserError(
        f'{source} is not a directory; pass the '
        f'{"archive as --out" if args.restore else "sweeps workroot as --workroot"}')
  copied, new = copy_runs(source, destination)
  print(f'{"restored" if args.restore else "archived"} {copied} finished runs '
        f'({new} new) from {source} to {destination}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
