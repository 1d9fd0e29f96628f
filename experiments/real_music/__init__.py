"""Real music, little data: training recipes and fine-tuning on real recordings
(``python -m experiments.real_music``; study.py says how, README.md what it found)."""
