"""Results of sweeps: `collect` (one CSV of all runs) and `figures` (the paper's Figures 5 and 6)."""
