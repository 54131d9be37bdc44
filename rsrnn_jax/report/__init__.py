"""Every figure the project draws (plots only, imports nothing above the workdir's helpers); the attack suite's
results.json and report.md are written by :mod:`rsrnn_jax.robustness.results`."""
