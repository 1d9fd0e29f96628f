"""Fine-tuning: a run that starts from another model (config.init_from: a
workdir, or the name of a model shipped with crnn_jax such as ``genres``).

The model splits in two parameter groups, by layer name:

  body  conv1..convN (conv, batch norm) and the GRU layers: loaded from the
        pretrained workdir with their batch-norm statistics; the shapes must
        match exactly.
  head  everything after the GRU readout (``linear``; the metal model's
        ``audio_fc``, ``tab_fc*`` and ``final_layer``): the logits layer keeps
        the pretrained rows of classes with the same name (or the one
        ``config.finetune.class_map`` names: 'orchestral=classical,...') and
        starts fresh for the others; other head layers are kept where their
        shapes match. A model with ``readout='mean'`` can start from a
        'flatten' one: the kernel reading the readout is summed over time
        steps (``as_mean_readout``).

``config.finetune.trainable`` = 'head' trains the head only (a linear probe:
the body frozen, its batch norm on its running statistics, which stay as
loaded); ``body_lr_scale`` < 1 gives the body a lower learning rate. Both are
optax ``multi_transform`` groups over ``param_labels``. ``batch_norm`` =
'frozen' trains every weight but normalises with the loaded running statistics
and keeps them: the pretrained model's statistics come from far more clips
than a small data set's batches of 8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from crnn_jax.core.errors import UserError
from crnn_jax.data.info import DataInfo
from crnn_jax.pretrained import resolve

BODY = 'body'
HEAD = 'head'
# Layers after the GRU readout (crnn_jax/model/crnn.py); every other layer is body.
HEAD_LAYER_PREFIXES = ('linear', 'audio_fc', 'tab_fc', 'final_layer')
LOGITS_LAYERS = ('linear', 'final_layer')
# The layer that reads the GRU readout: the metal model's audio_fc, else the logits.
READOUT_READERS = ('audio_fc', 'linear')
# config.model fields that fix the body's shapes.
BODY_FIELDS = ('conv_features', 'pool_windows', 'gru_features', 'gru_layers', 'gru_hidden_bias_rz')
TRAINABLE = ('all', 'head')
BATCH_NORM = ('update', 'frozen')

Flat = dict[tuple[str, ...], Any]


def group_of(path: Sequence[str]) -> str:
  """'body' or 'head' for a parameter path (its first element is the layer)."""
  return HEAD if str(path[0]).startswith(HEAD_LAYER_PREFIXES) else BODY


def param_labels(params: Any) -> Any:
  """The group of every parameter, as a tree like ``params`` (optax's labels)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: group_of([getattr(k, 'key', k) for k in path]), params)


def split(params: Mapping[str, Any]) -> tuple[Flat, Flat]:
  """(body, head) as flat {path: array} dicts."""
  flat = traverse_util.flatten_dict(dict(params))
  body = {p: v for p, v in flat.items() if group_of(p) == BODY}
  return body, {p: v for p, v in flat.items() if p not in body}


def join(body: Flat, head: Flat) -> dict[str, Any]:
  return traverse_util.unflatten_dict({**body, **head})


def body_frozen(config: ml_collections.ConfigDict) -> bool:
  return check_settings(config)[0] == 'head'


def batch_norm_frozen(config: ml_collections.ConfigDict) -> bool:
  """Whether training normalises with the running statistics and leaves them
  as loaded: a linear probe, or config.finetune.batch_norm='frozen'."""
  return body_frozen(config) or (config.get('finetune') or {}).get('batch_norm') == 'frozen'


def check_settings(config: ml_collections.ConfigDict) -> tuple[str, float]:
  """(config.finetune.trainable, body_lr_scale), checked against the rest of the config."""
  ft = config.get('finetune') or {}
  trainable = ft.get('trainable', 'all')
  if trainable not in TRAINABLE:
    raise UserError(f"config.finetune.trainable {trainable!r}: use 'all' or 'head'")
  scale = float(ft.get('body_lr_scale', 1.0))
  if not 0.0 < scale <= 1.0:
    raise UserError(f'config.finetune.body_lr_scale={scale}: use a factor in (0, 1]')
  batch_norm = ft.get('batch_norm', 'update')
  if batch_norm not in BATCH_NORM:
    raise UserError(f"config.finetune.batch_norm {batch_norm!r}: use 'update' or 'frozen'")
  settings = [s for s, on in (("trainable='head'", trainable == 'head'),
                              (f'body_lr_scale={scale}', scale != 1.0),
                              ("batch_norm='frozen'", batch_norm == 'frozen')) if on]
  if settings and not config.get('init_from'):
    raise UserError(f'config.finetune.{settings[0]} is for fine-tuning a pretrained model: set '
                    '--config.init_from=genres (a shipped model) or a trained or imported '
                    "model's workdir")
  frozen = ("a linear probe (finetune.trainable='head')" if trainable == 'head' else
            "finetune.batch_norm='frozen'" if batch_norm == 'frozen' else '')
  if frozen and (config.get('eval') or {}).get('recompute_bn'):
    raise UserError("config.eval.recompute_bn would change the frozen batch-norm statistics of "
                    f'{frozen}; set it False')
  return trainable, scale


# --------------------------------------------------------------------------
# Loading the pretrained model into a fresh one
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Pretrained:
  """config.init_from's model: its config, variables and data description."""
  workdir: str  # as config.init_from names it: a workdir, or a shipped model's name
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  info: DataInfo


def load(init_from: str) -> Pretrained:
  """config.init_from's model: a workdir's best (else latest) checkpoint, or a
  model shipped with crnn_jax by name; one-line errors naming the fix."""
  try:
    found = resolve.load_init_from(init_from)
  except UserError as e:
    raise UserError(f'config.init_from {init_from!r}: {e}') from None
  return Pretrained(init_from, found.config, found.variables, DataInfo.from_json(found.data_info))


def initial_variables(config: ml_collections.ConfigDict, info: DataInfo,
                      fresh: Mapping[str, Any], pretrained: Pretrained
                      ) -> tuple[dict[str, Any], list[str]]:
  """``fresh`` {'params', 'batch_stats'} with the pretrained body and the head
  rows of shared classes; and lines saying what was loaded."""
  _check_body_config(config.model, pretrained)
  where = f'config.init_from {pretrained.workdir!r}'
  body, head = split(fresh['params'])
  pre_body, pre_head = split(pretrained.variables['params'])
  body = _matching(body, pre_body, where, 'weights')
  stats = traverse_util.flatten_dict(dict(fresh['batch_stats']))
  stats = _matching(stats, traverse_util.flatten_dict(dict(pretrained.variables['batch_stats'])),
                    where, 'batch-norm statistics')
  head, notes = _head(head, pre_head, info.class_names, pretrained, config, where)
  layers = sorted({p[0] for p in body})
  notes.insert(0, f'loaded from {pretrained.workdir}: {", ".join(layers)} with batch-norm '
               'statistics')
  return {'params': join(body, head), 'batch_stats': traverse_util.unflatten_dict(stats)}, notes


def _check_body_config(model: ml_collections.ConfigDict, pretrained: Pretrained) -> None:
  for field in BODY_FIELDS:
    mine, theirs = model.get(field), pretrained.config.model.get(field)
    if _plain(mine) != _plain(theirs):
      hint = (' (other spectrogram height per GRU step)'
              if field in ('pool_windows', 'conv_features') else '')
      raise UserError(f'config.init_from {pretrained.workdir!r}: the pretrained model has '
                      f'model.{field}={_plain(theirs)}, this config {_plain(mine)}{hint}; set '
                      f'--config.model.{field} to match, or train from scratch')


def _plain(x: Any) -> Any:
  if isinstance(x, (list, tuple)):
    return tuple(_plain(v) for v in x)
  return x


def _matching(mine: Flat, theirs: Flat, where: str, what: str) -> Flat:
  """``theirs`` for every path of ``mine``; a UserError where one is missing or
  has another shape."""
  out = {}
  for path, value in mine.items():
    name = '/'.join(path)
    if path not in theirs:
      raise UserError(f'{where}: the pretrained model has no {what} {name}; it is another '
                      'architecture: fine-tune from a model of this config, or train from scratch')
    if np.shape(theirs[path]) != np.shape(value):
      raise UserError(f'{where}: {what} {name} is {np.shape(theirs[path])} in the pretrained '
                      f'model, {np.shape(value)} here (another spectrogram height, pooling or '
                      'width); use the pretrained model\'s config.model')
    out[path] = np.asarray(theirs[path], np.asarray(value).dtype)
  return out


def class_sources(config: ml_collections.ConfigDict, classes: Sequence[str],
                  pre_classes: Sequence[str]) -> dict[str, str]:
  """This data set's class -> the pretrained class whose head row it starts
  from: the same name, or config.finetune.class_map ('new=pretrained,...')."""
  text = (config.get('finetune') or {}).get('class_map', '') or ''
  mapping = {}
  for pair in filter(None, (p.strip() for p in text.split(','))):
    new, _, old = (x.strip() for x in pair.partition('='))
    if new not in classes or old not in pre_classes:
      raise UserError(f'config.finetune.class_map {pair!r}: give NEW=PRETRAINED pairs with NEW '
                      f'one of {list(classes)} and PRETRAINED one of {list(pre_classes)}')
    mapping[new] = old
  return {c: mapping.get(c, c) for c in classes if mapping.get(c, c) in pre_classes}


def _head(head: Flat, pre_head: Flat, classes: Sequence[str], pretrained: Pretrained,
          config: ml_collections.ConfigDict, where: str) -> tuple[Flat, list[str]]:
  """The head: logits rows of shared class names, other layers where shapes match."""
  out = dict(head)
  pre_readout = pretrained.config.model.get('readout')
  converted = (pre_readout, config.model.readout) == ('flatten', 'mean')
  if converted:
    pre_head = as_mean_readout(pre_head, head)
  pre_classes = list(pretrained.info.class_names)
  sources = class_sources(config, classes, pre_classes)
  shared = list(sources)
  logits = next(p[0] for p in head if p[0] in LOGITS_LAYERS)
  notes, kept_layers = [], set()
  for path in head:
    if path[0] != logits and path in pre_head and np.shape(pre_head[path]) == np.shape(head[path]):
      out[path] = np.asarray(pre_head[path])
      kept_layers.add(path[0])
  if kept_layers:
    notes.append(f'head layers kept: {", ".join(sorted(kept_layers))}')
  kernel, bias = (logits, 'kernel'), (logits, 'bias')
  if not shared or kernel not in pre_head:
    why = (f'no class of this data set is among the pretrained classes {pre_classes}'
           if not shared else f'the pretrained model has no {logits} layer (another head)')
    notes.append(f'head {logits} initialised fresh: {why}')
    return out, notes
  readout_differs = pre_readout != config.model.readout and not converted
  if pre_head[kernel].shape[0] != head[kernel].shape[0] or readout_differs:
    also_mean = ' (or mean, its head converted)' if pre_readout == 'flatten' else ''
    raise UserError(
        f'{where}: its head reads {pre_head[kernel].shape[0]} features (model.readout '
        f'{pre_readout!r}, {pretrained.info.frames} frames), this model {head[kernel].shape[0]} '
        f'({config.model.readout!r}); to keep the head of the shared classes {shared}, use '
        f'--config.model.readout={pre_readout}{also_mean} and clips of the same length')
  rows_new = [classes.index(c) for c in shared]
  rows_old = [pre_classes.index(sources[c]) for c in shared]
  k, b = np.array(head[kernel]), np.array(head[bias])
  k[:, rows_new] = np.asarray(pre_head[kernel])[:, rows_old]
  b[rows_new] = np.asarray(pre_head[bias])[rows_old]
  out[kernel], out[bias] = k, b
  fresh = [c for c in classes if c not in shared]
  kept = [c if sources[c] == c else f'{c} (from {sources[c]})' for c in shared]
  notes.append(f'head {logits}: kept for {", ".join(kept)}'
               + (f'; initialised fresh for {", ".join(fresh)}' if fresh else ''))
  return out, notes


def as_mean_readout(pre_head: Flat, head: Flat) -> Flat:
  """A flatten readout's head as a mean readout's: the kernel of the layer that
  reads the readout, (T * F, n) from T time steps of F features, becomes the
  sum of its T per-step blocks, (F, n). Mean readout times the summed kernel is
  the flatten head with every step's weights replaced by their average, so it
  gives the pretrained logits on a sequence constant in time, and the fine-tuned
  model reads every step alike (time shifts change nothing, 20x fewer weights)."""
  out = dict(pre_head)
  reader = next(((layer, 'kernel') for layer in READOUT_READERS
                 if (layer, 'kernel') in pre_head and (layer, 'kernel') in head), None)
  if reader is None:
    return out
  features = np.shape(head[reader])[0]
  steps, rest = divmod(np.shape(pre_head[reader])[0], features)
  if steps > 1 and not rest:
    out[reader] = np.asarray(pre_head[reader]).reshape(steps, features, -1).sum(axis=0)
  return out
