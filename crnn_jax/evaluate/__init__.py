"""Evaluation: metrics of predictions, results.json, reports and pictures.

Evaluators never import the trainer: they receive a function that predicts a
split (logits, losses, labels) and turn what it returns into numbers, text and
pictures. ``metrics.py`` holds the metrics (scikit-learn's where it has them),
``report.py`` results.json and the test report, ``plots.py`` the PNGs.
"""
