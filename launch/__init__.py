"""Launchers for the sweeps defined in config files (`python -m launch.sweep --help`).

manifest.py  expands a config file's SWEEPS entry into runs (name, overrides,
             workdir, command), one per seed with --seeds, and keeps the
             sweep's manifest.json.
local.py     runs them on this machine, N at a time, resumable.
status.py    how far each sweep is: runs finished, running, failed, not
             started, and the time left (`launch.sweep --status`).
slurm.py     one sbatch array task per run.
tpu.py       one `gcloud compute tpus tpu-vm ssh --worker=all` command per run.
"""
