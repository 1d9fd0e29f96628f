"""Recipes: what main.py runs for a config (train it as it is, the probe, a
fine-tune of every layer or of the head), above training and inference."""
