"""The release pipeline: config.py (release.toml, validated), run.py (steps, ledger,
gates), publish.py (the model, its manifest, the reports)."""
