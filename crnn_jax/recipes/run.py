"""What main.py runs: ``train(config, workdir)``, the recipe ``config.recipe`` names,
and ``evaluate(config, workdir)`` (--mode=eval) of the workdir it leaves.

  ''        the config as it is; with config.data.folder and config.init_from, 'auto'
  probe, finetune, head, average   one recipe (crnn_jax/recipes/recipe.py)
  auto      the best of config.recipe_candidates by cross-validation on the
            training split, retrained on all of it (crnn_jax/recipes/choose.py)

Also what main.py needs around it: the clips a folder is prepared with, and
the summary a finished run prints.
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
from crnn_jax.recipes import choose
from crnn_jax.recipes import recipe as recipe_lib
from crnn_jax.train import finetune

RECIPES = ('', *recipe_lib.KEPT, 'auto')


def check(config: ml_collections.ConfigDict) -> str:
  """The recipe to run: config.recipe checked ('' becomes 'auto' on the
  folder path from a pretrained model), with init_from where it needs one."""
  recipe = config.get('recipe', '')
  if recipe not in RECIPES:
    raise UserError(f'config.recipe {recipe!r}: use one of {", ".join(repr(r) for r in RECIPES)}')
  if not recipe and config.data.get('folder') and config.get('init_from'):
    recipe = 'auto'
  if recipe and not config.get('init_from'):
    raise UserError(f"config.recipe '{recipe}' starts from a pretrained model: set "
                    '--config.init_from (a shipped model name or a crnn_jax workdir)')
  return recipe


def cross_validation_folds(config: ml_collections.ConfigDict) -> int:
  """The folds the run's training split is cut into to choose the recipe (0: none)."""
  return int(config.recipe_folds) if check(config) == 'auto' else 0


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the config's recipe in ``workdir``; its results (results.json)."""
  recipe = check(config)
  if recipe == 'auto':
    return choose.train_auto(config, workdir)
  return recipe_lib.train_recipe(config, workdir, recipe)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval of any workdir a recipe leaves, an average's too; its results."""
  return recipe_lib.evaluate_workdir(config, workdir)


def clip_settings(config: ml_collections.ConfigDict) -> audio.ClipSettings:
  """How config.data.folder's tracks become clips: init_from's clip length
  (its readout may read every time step), at config.data.clip_position."""
  clip = audio.ClipSettings(position=config.data.clip_position)
  if config.get('init_from'):
    pre = finetune.load(config.init_from)
    theirs = audio.ClipSettings.from_metadata(pre.info.metadata.get('clip'))
    clip = dataclasses.replace(clip, seconds=theirs.seconds)
  return clip


def summary(results: Mapping[str, Any], config: ml_collections.ConfigDict, workdir: str) -> str:
  """What a finished run says last: with the automatic recipe, the choice and
  the cross-validated figures; the test top-1 per clip and per track with
  their intervals, the most confused pairs, and how to use the model."""
  test, k = results['test'], config.eval.top_k
  lines = [choose.describe(results['recipe'])] if 'recipe' in results else []
  lines.append(f'test: {report.top1_summary(test)}; top-{k} {test[f"top{k}"]:.4f}, '
               f'loss {test["loss"]:.4f}; results in {os.path.join(workdir, "results.json")}')
  confused = (test.get('track') or test).get('most_confused')
  if confused:
    lines.append('most confused (true -> predicted: tracks): ' + '; '.join(
        f'{c["true"]} -> {c["predicted"]}: {c["count"]}' for c in confused[:3]))
  lines.append(f'predict with it: python -m crnn_jax.predict --workdir={workdir} '
               'song.mp3 more_songs/')
  return '\n'.join(lines)
