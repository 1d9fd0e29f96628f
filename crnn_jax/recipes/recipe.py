"""One recipe, run to a finished workdir: ``train_recipe(config, workdir, recipe)``.

  ''         the config as it is (``trainer.train_and_evaluate``)
  probe      logistic regression on ``init_from``'s embeddings (crnn_jax/recipes/probe.py)
  finetune   every layer trains from ``init_from`` (finetune.trainable='all')
  head       the classifier layer alone trains, the body frozen on its statistics
             (finetune.trainable='head')

Each leaves the same workdir: checkpoints, config.json, results.json and the
reports, so predict, serve and export need not know which recipe made it.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from crnn_jax.core.errors import UserError
from crnn_jax.recipes import probe
from crnn_jax.train import trainer
from crnn_jax.workdir import checkpoints

SINGLE = ('probe', 'head', 'finetune')  # the recipes that make one model, simplest first
TRAINABLE = {'finetune': 'all', 'head': 'head'}


def with_recipe(config: ml_collections.ConfigDict, recipe: str) -> ml_collections.ConfigDict:
  """A copy of the config set for the recipe: its name, and for a fine-tune
  what trains (the head alone on the loaded batch-norm statistics, which a
  recomputation would change)."""
  out = config.copy_and_resolve_references()
  out.recipe = recipe
  if recipe in TRAINABLE:
    out.finetune.trainable = TRAINABLE[recipe]
  if recipe == 'head':
    out.eval.recompute_bn = False
  return out


def train_recipe(config: ml_collections.ConfigDict, workdir: str, recipe: str) -> dict[str, Any]:
  """Runs one recipe ('' or one of SINGLE) in ``workdir``; its results."""
  check_workdir(workdir, recipe)
  if recipe == 'probe':
    return probe.train_probe(with_recipe(config, recipe), workdir)
  return trainer.train_and_evaluate(with_recipe(config, recipe) if recipe else config, workdir)


def check_workdir(workdir: str, recipe: str) -> None:
  """A probe and a trained model do not share a workdir: the probe's step-0
  checkpoint would sit beside trained ones, or training would resume it."""
  holds_probe = probe.read_record(workdir) is not None
  folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  trained = not holds_probe and os.path.isdir(folder) and any(
      name.isdigit() for name in os.listdir(folder))
  if recipe == 'probe' and trained:
    raise UserError(f'{workdir!r} holds a trained model; fit the probe in a fresh --workdir')
  if recipe != 'probe' and holds_probe:
    raise UserError(f'{workdir!r} holds a probe (probe.json); train in a fresh --workdir, or '
                    'refit it with --config.recipe=probe')
