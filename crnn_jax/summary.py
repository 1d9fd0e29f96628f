"""``--mode=summary``: a per-layer table of the model a config builds."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from crnn_jax import models


def layer_rows(config: ml_collections.ConfigDict, num_classes: int, num_tabular: int,
               frames: int = 1292) -> list[tuple[str, str, int]]:
  """(layer path, output shape, parameter count) for every parameterised layer."""
  model = models.create_model(config.model, num_classes, num_tabular)
  spec = jax.numpy.zeros((1, 128, frames, 1))
  tab = jax.numpy.zeros((1, num_tabular)) if num_tabular else None
  captured = {}

  def record(mdl, method_name):
    del method_name
    return not isinstance(mdl, models.CRNN)

  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), spec, tab, capture_intermediates=record))
  for path, out in _flatten(variables['intermediates']):
    captured[path] = out
  params = variables['params']
  order = ([f'conv{i + 1}' for i in range(len(config.model.conv_features))]
           + [f'gru_l{i}' for i in range(config.model.gru_layers)]
           + ['linear', 'audio_fc']
           + [f'tab_fc{i + 1}' for i in range(len(config.model.tabular_features))]
           + ['final_layer'])
  rows = []
  for name in [n for n in order if n in params]:
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params[name]))
    out_key = name.replace('gru_l', 'rnn_l') + '/__call__'
    out = captured.get(out_key)
    shape = 'x'.join(str(d) for d in out[0].shape) if out is not None else '-'
    rows.append((name, shape, n))
  return rows


def _flatten(tree, prefix=''):
  for key, value in tree.items():
    path = f'{prefix}/{key}' if prefix else key
    if isinstance(value, dict):
      yield from _flatten(value, path)
    else:
      yield path, value


def layer_table(config: ml_collections.ConfigDict) -> str:
  """The model of the config's data set if it is prepared; else of the config
  alone (class names, ``data.num_tabular``, 30-s clips)."""
  from crnn_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  from crnn_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  try:
    info = input_pipeline.load_info(config)
    num_classes, num_tabular = len(info.class_names), info.num_tabular
    frames, source = info.frames or 1292, f'data set {info.name!r}'
  except UserError:
    num_classes = len(config.data.class_names) or 10
    num_tabular, frames = max(int(config.data.num_tabular), 0), 1292  # raw encoding
    source = 'config (data set not prepared)'
  rows = layer_rows(config, num_classes, num_tabular, frames)
  width = max(len(r[0]) for r in rows)
  lines = [(f'CRNN ({config.model.variant}) for {source}: {num_classes} classes, '
            f'{num_tabular} tabular inputs, input 128x{frames}'),
           f'{"layer":<{width}}  {"output":>14}  {"params":>9}']
  lines += [f'{p:<{width}}  {s:>14}  {n:>9,}' for p, s, n in rows]
  lines.append(f'total params: {sum(r[2] for r in rows)}')
  return '\n'.join(lines)
