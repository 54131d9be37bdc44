"""Results of the attack suite: results.json, report.md, and every figure the project draws."""
