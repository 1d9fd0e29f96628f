"""A per-layer table of a model: output shapes and parameter counts.

The input size comes from the caller (the spectrogram contract lives in
crnn_jax.core.audio; the model does not read files)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from crnn_jax.model.crnn import CRNN, create_model, dummy_inputs


def layer_rows(model_config: ml_collections.ConfigDict, num_classes: int, num_tabular: int,
               mels: int, frames: int) -> list[tuple[str, str, int]]:
  """(layer path, output shape, parameter count) for every parameterised layer."""
  model = create_model(model_config, num_classes, num_tabular)
  spec, tab = dummy_inputs(model, mels, frames)

  def record(mdl, method_name):
    del method_name
    return not isinstance(mdl, CRNN)

  _, variables = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), spec, tab, capture_intermediates=record))
  captured = dict(_flatten(variables['intermediates']))
  params = variables['params']
  order = ([f'conv{i + 1}' for i in range(len(model_config.conv_features))]
           + [f'gru_l{i}' for i in range(model_config.gru_layers)]
           + ['linear', 'audio_fc']
           + [f'tab_fc{i + 1}' for i in range(len(model_config.tabular_features))]
           + ['final_layer'])
  rows = []
  for name in [n for n in order if n in params]:
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params[name]))
    out = captured.get(name.replace('gru_l', 'rnn_l') + '/__call__')
    shape = 'x'.join(str(d) for d in out[0].shape) if out is not None else '-'
    rows.append((name, shape, n))
  return rows


def _flatten(tree: dict[str, Any], prefix: str = '') -> Iterator[tuple[str, Any]]:
  for key, value in tree.items():
    path = f'{prefix}/{key}' if prefix else key
    if isinstance(value, dict):
      yield from _flatten(value, path)
    else:
      yield path, value


def layer_table(model_config: ml_collections.ConfigDict, num_classes: int, num_tabular: int,
                mels: int, frames: int, source: str = '') -> str:
  """The rows as text; the last line is ``total params: N``."""
  rows = layer_rows(model_config, num_classes, num_tabular, mels, frames)
  width = max(len(r[0]) for r in rows)
  lines = [(f'CRNN ({model_config.variant}) for {source}: {num_classes} classes, '
            f'{num_tabular} tabular inputs, input {mels}x{frames}'),
           f'{"layer":<{width}}  {"output":>14}  {"params":>9}']
  lines += [f'{p:<{width}}  {s:>14}  {n:>9,}' for p, s, n in rows]
  lines.append(f'total params: {sum(r[2] for r in rows)}')
  return '\n'.join(lines)
