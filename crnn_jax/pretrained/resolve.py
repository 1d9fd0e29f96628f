"""A model to use, named by a shipped model's name or by a workdir.

Prediction, the web page and export take exactly one of ``--model=NAME`` (a
model shipped in this package) and ``--workdir=DIR`` (a trained or imported
model's folder); ``config.init_from`` takes either in one field. Both give the
same thing: the config, the variables and the data description, as a
workdir's checkpoint (crnn_jax.workdir.checkpoints) gives them. A workdir
holding an average of models (average.json, config.recipe='average') gives
each member's, in ``members``; fine-tuning starts from one model only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from crnn_jax.core.errors import UserError
from crnn_jax.pretrained import store
from crnn_jax.workdir import checkpoints, files


@dataclasses.dataclass
class ModelToUse:
  """What InferenceModel and fine-tuning need, with where it came from."""
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  data_info: dict[str, Any]
  origin: str  # for messages: "the shipped model 'genres'" or "workdir 'W'"
  name: str = ''  # the shipped model's name; '' for a workdir
  workdir: str = ''  # '' for a shipped model
  threshold: float | None = None  # multi-label threshold chosen on validation
  threshold_source: str = ''
  # An average's members (each a workdir's model); () for one model. The fields
  # above are then the first member's, except origin and workdir.
  members: tuple[ModelToUse, ...] = ()


def check_one_named(model: str | None, workdir: str | None) -> None:
  """A UserError unless exactly one of ``--model`` and ``--workdir`` is given."""
  if bool(model) == bool(workdir):
    raise UserError(f'give {"only " if model else ""}one of --model=NAME (a shipped model: '
                    f'{", ".join(store.names())}) and --workdir=DIR (a trained or imported '
                    "model's folder)")


def load(model: str | None = None, workdir: str | None = None,
         checkpoint: str = 'best') -> ModelToUse:
  """The shipped model ``model``, or the workdir's best (else latest) or
  latest checkpoint; exactly one of the two is given."""
  check_one_named(model, workdir)
  if model:
    return shipped(model)
  if not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} does not exist: train with main.py or import a '
                    'model first, or fix --workdir')
  members = files.average_members(workdir)
  if members:
    return average(workdir, [load(workdir=m, checkpoint=checkpoint) for m in members])
  saved = checkpoints.load_for_use(workdir, checkpoint)
  threshold, source = files.validation_threshold(workdir)
  return ModelToUse(saved.config, saved.variables, saved.data_info,
                    f'the checkpoint of workdir {workdir!r}', workdir=workdir,
                    threshold=threshold, threshold_source=source)


def average(workdir: str, members: list[ModelToUse]) -> ModelToUse:
  """The average of ``members``' models: they must score the same classes from
  the same inputs, each a single single-label model."""
  first = members[0]
  ours = _inputs_and_outputs(first.data_info)
  for member in members:
    if member.members:
      raise UserError(f'{member.workdir!r}: a member of an average cannot be an average itself')
    if member.config.get('multilabel'):
      raise UserError(f'{member.workdir!r}: an average of multi-label models is not supported')
    theirs = _inputs_and_outputs(member.data_info)
    for key in ours:
      if theirs[key] != ours[key]:
        raise UserError(f'the members of {workdir!r} differ in {key}: {ours.get(key)!r} in '
                        f'{first.workdir!r}, {theirs.get(key)!r} in {member.workdir!r}')
  return dataclasses.replace(first, origin=f'the average of workdir {workdir!r}',
                             workdir=workdir, members=tuple(members))


def _inputs_and_outputs(data_info: dict[str, Any]) -> dict[str, Any]:
  """What members of an average must share: their classes and what they read."""
  metadata = data_info.get('metadata') or {}
  return {'class_names': data_info.get('class_names'), 'frames': data_info.get('frames'),
          'num_tabular': data_info.get('num_tabular'), **{
              key: metadata.get(key) for key in ('clip', 'tabular_names', 'tabular_mean',
                                                 'tabular_std')}}


def shipped(name: str) -> ModelToUse:
  found = store.load(name)
  return ModelToUse(found.config, found.variables, found.data_info,
                    f'the shipped model {name!r}', name=name)


def load_init_from(value: str) -> ModelToUse:
  """config.init_from: a workdir where ``value`` is a folder, else a shipped
  model's name; a UserError naming both kinds otherwise."""
  if os.path.isdir(value):
    found = load(workdir=value)
    if found.members:
      raise UserError('holds an average of models, and a fine-tune starts from one: name one of '
                      f'its members ({", ".join(m.workdir for m in found.members)})')
    return found
  if value in store.names():
    return shipped(value)
  raise UserError('does not exist, and no shipped model has that name: give a crnn_jax workdir '
                  '(trained with main.py, or made by python -m crnn_jax.import_reference) or a '
                  f'shipped model: {", ".join(store.names())}')
