"""``train(config, workdir)``: the recipe ``config.recipe`` names, run to a finished workdir.

  ''         the config as it is (``trainer.train_and_evaluate``)
  probe      logistic regression on ``init_from``'s embeddings (crnn_jax/recipes/probe.py)
  finetune   every layer trains from ``init_from`` (finetune.trainable='all')
  head       the classifier layer alone trains, the body frozen on its statistics
             (finetune.trainable='head')

Each leaves the same workdir: checkpoints, config.json, results.json and the
reports, so predict, serve and export need not know which recipe made it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from crnn_jax.core import audio
from crnn_jax.core.errors import UserError
from crnn_jax.evaluate import report
from crnn_jax.recipes import probe
from crnn_jax.train import finetune, trainer
from crnn_jax.workdir import checkpoints

RECIPES = ('', 'probe', 'finetune', 'head')
TRAINABLE = {'finetune': 'all', 'head': 'head'}


def check(config: ml_collections.ConfigDict) -> str:
  """config.recipe, checked: a known name, with init_from where it needs one."""
  recipe = config.get('recipe', '')
  if recipe not in RECIPES:
    raise UserError(f'config.recipe {recipe!r}: use one of {", ".join(repr(r) for r in RECIPES)}')
  if recipe and not config.get('init_from'):
    raise UserError(f"config.recipe '{recipe}' starts from a pretrained model: set "
                    '--config.init_from (a shipped model name or a crnn_jax workdir)')
  return recipe


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


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the config's recipe in ``workdir``; its results (results.json)."""
  recipe = check(config)
  check_workdir(workdir, recipe)
  if recipe == 'probe':
    return probe.train_probe(with_recipe(config, recipe), workdir)
  return trainer.train_and_evaluate(with_recipe(config, recipe) if recipe else config, workdir)


def clip_settings(config: ml_collections.ConfigDict) -> audio.ClipSettings:
  """How config.data.folder's tracks become clips: init_from's clip length
  (its readout may read every time step), at config.data.clip_position."""
  clip = audio.ClipSettings(position=config.data.clip_position)
  if config.get('init_from'):
    pre = finetune.load(config.init_from)
    theirs = audio.ClipSettings.from_metadata(pre.info.metadata.get('clip'))
    clip = dataclasses.replace(clip, seconds=theirs.seconds)
  return clip


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


def summary(results: Mapping[str, Any], config: ml_collections.ConfigDict, workdir: str) -> str:
  """What a finished run says last: the test top-1 per clip and per track with
  their intervals, the most confused pairs, and how to use the model."""
  test, k = results['test'], config.eval.top_k
  lines = [(f'test: {report.top1_summary(test)}; top-{k} {test[f"top{k}"]:.4f}, '
            f'loss {test["loss"]:.4f}; results in {os.path.join(workdir, "results.json")}')]
  confused = (test.get('track') or test).get('most_confused')
  if confused:
    lines.append('most confused (true -> predicted: tracks): ' + '; '.join(
        f'{c["true"]} -> {c["predicted"]}: {c["count"]}' for c in confused[:3]))
  lines.append(f'predict with it: python -m crnn_jax.predict --workdir={workdir} '
               'song.mp3 more_songs/')
  return '\n'.join(lines)
