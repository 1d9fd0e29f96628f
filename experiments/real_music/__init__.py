"""Real music, little data: training recipes and fine-tuning on real recordings
(``python -m experiments.real_music``; its README has what it found)."""
