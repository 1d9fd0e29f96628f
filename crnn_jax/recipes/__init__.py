"""Recipes: what main.py runs for a config, above training and inference: the
config as it is, the probe, a fine-tune, or the one of them cross-validation
chooses. docs/architecture.md lists the modules."""
