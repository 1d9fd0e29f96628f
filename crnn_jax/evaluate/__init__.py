"""Evaluation: metrics of predictions, results.json, reports and pictures.

Evaluators never import the trainer: they receive a function that predicts a
split (logits, losses, labels) and turn what it returns into numbers, text and
pictures. docs/architecture.md lists the modules.
"""
