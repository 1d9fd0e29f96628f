"""Inference: a trained or imported workdir applied to audio.

The predict command (crnn_jax/predict.py) is a thin layer over this package,
and so are the web page and the export. docs/architecture.md lists the modules.
"""
