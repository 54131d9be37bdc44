"""Every figure the project draws (plots only, imports nothing above the workdir's helpers) and the markdown table
helpers every report shares (tables.py); the attack suite's results.json and report.md are written by
:mod:`rsrnn_jax.robustness.results` (report.md's text: :mod:`rsrnn_jax.robustness.report_md`)."""
