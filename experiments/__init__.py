"""Results of sweeps: `collect` (per-run and per-configuration CSVs), `figures` (the paper's
Figures 5 and 6 with 95% intervals over seeds), `claims` (each claim of the paper measured, with a
verdict) and `uncertainty` (the intervals they share)."""
