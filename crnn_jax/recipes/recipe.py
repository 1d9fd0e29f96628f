"""One recipe, run to a finished workdir: ``train_recipe(config, workdir, recipe)``.

  ''         the config as it is (``trainer.train_and_evaluate``)
  probe      logistic regression on ``init_from``'s embeddings (crnn_jax/recipes/probe.py)
  finetune   every layer trains from ``init_from`` (finetune.trainable='all')
  head       the classifier layer alone trains, the body frozen on its statistics
             (finetune.trainable='head')
  average    the probe and the fine-tune, each in WORKDIR/members/NAME, and the
             mean of their probabilities as the workdir's model (average.json)

Each leaves a workdir that predict, serve and export use without knowing the
recipe: checkpoints (an average: its members'), config.json, results.json and
the reports.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.data import source
from crnn_jax.data.info import DataInfo
from crnn_jax.evaluate import report
from crnn_jax.recipes import probe
from crnn_jax.train import trainer
from crnn_jax.workdir import checkpoints, files

SINGLE = ('probe', 'head', 'finetune')  # the recipes that make one network, simplest first
AVERAGE = 'average'
KEPT = (*SINGLE, AVERAGE)  # what a workdir can hold, simplest first
AVERAGE_MEMBERS = ('probe', 'finetune')
MEMBERS_DIR = 'members'
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
  """Runs one recipe ('' or one of KEPT) in ``workdir``; its results."""
  check_workdir(workdir, recipe)
  if recipe == 'probe':
    return probe.train_probe(with_recipe(config, recipe), workdir)
  if recipe == AVERAGE:
    return train_average(config, workdir)
  return trainer.train_and_evaluate(with_recipe(config, recipe) if recipe else config, workdir)


def check_workdir(workdir: str, recipe: str) -> None:
  """A probe, a trained model and an average do not share a workdir: the
  probe's step-0 checkpoint would sit beside trained ones, or training would
  resume it, or an average would hide them."""
  holds_probe = probe.read_record(workdir) is not None
  holds_average = bool(files.average_members(workdir))
  folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  trained = not holds_probe and os.path.isdir(folder) and any(
      name.isdigit() for name in os.listdir(folder))
  if recipe in ('probe', AVERAGE) and trained:
    raise UserError(f'{workdir!r} holds a trained model; make the {recipe} in a fresh --workdir')
  if recipe != 'probe' and holds_probe:
    raise UserError(f'{workdir!r} holds a probe (probe.json); train in a fresh --workdir, or '
                    'refit it with --config.recipe=probe')
  if recipe != AVERAGE and holds_average:
    raise UserError(f'{workdir!r} holds an average of models ({files.AVERAGE_FILE}); train in '
                    'a fresh --workdir')


def finished(run_dir: str, run_config: ml_collections.ConfigDict) -> bool:
  """Whether a run has its test predictions; a run of another config is
  refused (its figures would not be this config's)."""
  changed = files.config_differences(run_dir, run_config)
  if changed:
    raise UserError(f'{run_dir} was trained with another config ({"; ".join(changed)}): remove '
                    f'{os.path.dirname(run_dir)} to choose the recipe again, or use a fresh '
                    '--workdir')
  return os.path.exists(os.path.join(run_dir, files.PREDICTIONS_FILE.format(split='test')))


# --------------------------------------------------------------------------
# The average of the probe and the fine-tune
# --------------------------------------------------------------------------
def train_average(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Each member trained in WORKDIR/members/NAME (a finished fine-tune is
  reused; the probe, seconds, is refitted), then average.json and the
  average's evaluation from the members' predictions of each split."""
  workdir = files.ensure_workdir(workdir)
  members = []
  for name in AVERAGE_MEMBERS:
    member = os.path.join(workdir, MEMBERS_DIR, name)
    print(f'average: its member {name}, in {member}', flush=True)
    if name == 'probe' or not finished(member, with_recipe(config, name)):
      train_recipe(config, member, name)
    members.append(member)
  data_info = files.load_data_info(members[0])
  files.save_config(workdir, with_recipe(config, AVERAGE))
  files.save_data_info(workdir, data_info)
  files.write_average(workdir, members)
  return evaluate_average(with_recipe(config, AVERAGE), workdir, members,
                          DataInfo.from_json(data_info))


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval: the workdir's model on the config's data set (validation and
  test, with reports). An average's members are each evaluated with the config
  they were trained with (their network, their batch-norm rule) on that data,
  then the mean of their probabilities, as train_average evaluates it."""
  members = files.average_members(workdir)
  if not members:
    return trainer.evaluate_only(config, workdir)
  for member in members:
    member_config = files.load_config(member)
    member_config.data = config.data.copy_and_resolve_references()
    print(f'average: evaluating its member {member}', flush=True)
    trainer.evaluate_only(member_config, member)
  return evaluate_average(with_recipe(config, AVERAGE), workdir, members, source.load_info(config))


def evaluate_average(config: ml_collections.ConfigDict, workdir: str, members: list[str],
                     info: DataInfo) -> dict[str, Any]:
  """Validation and test reports of the members' averaged probabilities (the
  model predict scores with: InferenceModel averages them the same way)."""
  predictions = {split: report.average_predictions([report.read_predictions(m, split)
                                                    for m in members])
                 for split in ('validation', 'test')}
  results = [storage.read_json(os.path.join(m, files.RESULTS_FILE)) for m in members]
  return report.evaluate_and_report(
      predictions.__getitem__, info, config, workdir,
      num_params=sum(int(r['num_params']) for r in results), step=0, history=[],
      lr_schedule=None, steps_per_epoch=None, ancestors=None,
      checkpoint={'checkpoint': 'the members\'', 'members': {
          os.path.relpath(m, workdir): r.get('checkpoint', {}) for m, r in zip(members, results)}})
