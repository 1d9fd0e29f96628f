"""PyTorch reference state_dict <-> crnn_jax variables ({'params', 'batch_stats'}).

Works on plain mappings name -> array (numpy arrays, or CPU torch tensors,
which ``np.asarray`` reads), so nothing here imports torch: reading the
pickle is :mod:`crnn_jax.import_reference`'s job.

Layouts (docs/reference.md section 8 names on the left):
  cnn.conv{i}.0.weight (O, I, 3, 3)  -> conv{i}/conv/kernel (3, 3, I, O)
  cnn.conv{i}.1.{weight, bias}        -> conv{i}/bn/{scale, bias}
  cnn.conv{i}.1.running_{mean, var}   -> batch_stats conv{i}/bn/{mean, var}
  rnn.gru.weight_ih_l{k} (3H, in)     -> gru_l{k}/{ir, iz, in}/kernel (in, H), rows r, z, n
  rnn.gru.weight_hh_l{k} (3H, H)      -> gru_l{k}/{hr, hz, hn}/kernel
  rnn.gru.bias_ih_l{k}, bias_hh_l{k}  -> the six gates' biases one to one; for a
      plain flax GRUCell (no hr/hz bias) b_hr and b_hz are added to ir/iz, which
      is the same function (both sit inside the same sigmoid)
  rnn.linear (genre), rnn.fc / fcn.fc1 / fcn.fc2 / final_layer (metal)
      -> linear, audio_fc / tab_fc1 / tab_fc2 / final_layer, kernel = weight.T
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

GATES = ('r', 'z', 'n')
HEADS = {  # torch module -> flax module
    'genre': {'rnn.linear': 'linear'},
    'metal': {'rnn.fc': 'audio_fc', 'fcn.fc1': 'tab_fc1', 'fcn.fc2': 'tab_fc2',
              'final_layer': 'final_layer'},
}
_BN_STATE = 'num_batches_tracked'  # torch bookkeeping with no flax counterpart


class ReferenceWeightsError(ValueError):
  """A state_dict that does not fit the model; the message is one line."""


def _count(state_dict: Mapping[str, Any], pattern: str, first: int) -> int:
  """How many consecutive indices first, first+1, ... fill ``pattern``'s {}."""
  n = 0
  while pattern.format(first + n) in state_dict:
    n += 1
  return n


def _head_kind(names: Any) -> str:
  """'genre' or 'metal', from torch names (rnn.linear / rnn.fc) or flax ones."""
  names = set(names)
  if any(n.startswith('rnn.linear.') for n in names) or 'linear' in names:
    return 'genre'
  if any(n.startswith('rnn.fc.') for n in names) or 'audio_fc' in names:
    return 'metal'
  raise ReferenceWeightsError(
      'not a reference CRNN: found neither the genre head (rnn.linear) nor the metal head (rnn.fc)')


def _f32(x: Any) -> np.ndarray:
  return np.array(np.asarray(x), dtype=np.float32)


# --------------------------------------------------------------------------
# torch -> flax
# --------------------------------------------------------------------------
def to_flax(state_dict: Mapping[str, Any], hidden_bias_rz: bool = True) -> dict[str, dict]:
  """A reference state_dict -> {'params', 'batch_stats'} of crnn_jax.model.CRNN.

  ``hidden_bias_rz`` False targets ``gru_hidden_bias_rz=False`` (flax's own
  GRUCell): the r and z hidden biases are folded into the input ones.
  Raises ReferenceWeightsError naming the first missing tensor.
  """
  sd = state_dict

  def get(name: str) -> np.ndarray:
    if name not in sd:
      raise ReferenceWeightsError(f'missing tensor {name!r} in the state_dict')
    return _f32(sd[name])

  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  for i in range(1, _count(sd, 'cnn.conv{}.0.weight', 1) + 1):
    p = f'cnn.conv{i}'
    params[f'conv{i}'] = {
        'conv': {'kernel': get(f'{p}.0.weight').transpose(2, 3, 1, 0), 'bias': get(f'{p}.0.bias')},
        'bn': {'scale': get(f'{p}.1.weight'), 'bias': get(f'{p}.1.bias')},
    }
    stats[f'conv{i}'] = {'bn': {'mean': get(f'{p}.1.running_mean'),
                                'var': get(f'{p}.1.running_var')}}
  if 'conv1' not in params:
    raise ReferenceWeightsError("missing tensor 'cnn.conv1.0.weight' in the state_dict")

  for k in range(_count(sd, 'rnn.gru.weight_ih_l{}', 0)):
    w_ih, w_hh = get(f'rnn.gru.weight_ih_l{k}'), get(f'rnn.gru.weight_hh_l{k}')
    b_ih, b_hh = get(f'rnn.gru.bias_ih_l{k}'), get(f'rnn.gru.bias_hh_l{k}')
    for name, arr in (('weight_ih', w_ih), ('weight_hh', w_hh), ('bias_ih', b_ih),
                      ('bias_hh', b_hh)):
      if arr.shape[0] % 3:
        raise ReferenceWeightsError(
            f'rnn.gru.{name}_l{k}: first axis {arr.shape[0]} is not 3 stacked gates')
    h = w_ih.shape[0] // 3
    cell = {}
    for g, gate in enumerate(GATES):
      rows = slice(g * h, (g + 1) * h)
      cell[f'i{gate}'] = {'kernel': w_ih[rows].T.copy(), 'bias': b_ih[rows].copy()}
      cell[f'h{gate}'] = {'kernel': w_hh[rows].T.copy(), 'bias': b_hh[rows].copy()}
    if not hidden_bias_rz:
      for gate in ('r', 'z'):
        cell[f'i{gate}']['bias'] = cell[f'i{gate}']['bias'] + cell[f'h{gate}'].pop('bias')
    params[f'gru_l{k}'] = cell

  for torch_name, flax_name in HEADS[_head_kind(sd.keys())].items():
    params[flax_name] = {'kernel': get(f'{torch_name}.weight').T.copy(),
                         'bias': get(f'{torch_name}.bias')}
  return {'params': params, 'batch_stats': stats}


# --------------------------------------------------------------------------
# flax -> torch
# --------------------------------------------------------------------------
def to_torch(variables: Mapping[str, Any], num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """crnn_jax variables -> a state_dict the reference (and the torch port) loads strictly.

  A plain flax GRUCell's folded biases go to ``bias_ih`` with zero r/z
  ``bias_hh``: the same function. ``num_batches_tracked`` is torch-only
  bookkeeping (unused with momentum 0.1); pass the step count to keep it.
  """
  params, stats = variables['params'], variables['batch_stats']
  sd: dict[str, np.ndarray] = {}
  i = 1
  while f'conv{i}' in params:
    p, conv, bn = f'cnn.conv{i}', params[f'conv{i}']['conv'], params[f'conv{i}']['bn']
    sd[f'{p}.0.weight'] = _f32(conv['kernel']).transpose(3, 2, 0, 1).copy()
    sd[f'{p}.0.bias'] = _f32(conv['bias'])
    sd[f'{p}.1.weight'] = _f32(bn['scale'])
    sd[f'{p}.1.bias'] = _f32(bn['bias'])
    sd[f'{p}.1.running_mean'] = _f32(stats[f'conv{i}']['bn']['mean'])
    sd[f'{p}.1.running_var'] = _f32(stats[f'conv{i}']['bn']['var'])
    sd[f'{p}.1.{_BN_STATE}'] = np.array(num_batches_tracked, dtype=np.int64)
    i += 1
  k = 0
  while f'gru_l{k}' in params:
    cell = params[f'gru_l{k}']
    h = _f32(cell['hr']['kernel']).shape[1]
    zeros = np.zeros(h, np.float32)
    sd[f'rnn.gru.weight_ih_l{k}'] = np.concatenate(
        [_f32(cell[f'i{g}']['kernel']).T for g in GATES])
    sd[f'rnn.gru.weight_hh_l{k}'] = np.concatenate(
        [_f32(cell[f'h{g}']['kernel']).T for g in GATES])
    sd[f'rnn.gru.bias_ih_l{k}'] = np.concatenate([_f32(cell[f'i{g}']['bias']) for g in GATES])
    sd[f'rnn.gru.bias_hh_l{k}'] = np.concatenate(
        [_f32(cell[f'h{g}']['bias']) if 'bias' in cell[f'h{g}'] else zeros for g in GATES])
    k += 1
  for torch_name, flax_name in HEADS[_head_kind(params.keys())].items():
    sd[f'{torch_name}.weight'] = _f32(params[flax_name]['kernel']).T.copy()
    sd[f'{torch_name}.bias'] = _f32(params[flax_name]['bias'])
  return sd


# --------------------------------------------------------------------------
# Checked conversion for a given model
# --------------------------------------------------------------------------
def _zeros_like(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _zeros_like(v) for k, v in tree.items()}
  return np.zeros(tuple(tree.shape), np.float32)


def _is_folded(template: Mapping[str, Any]) -> bool:
  cell = template['params'].get('gru_l0', {})
  return bool(cell) and 'bias' not in cell.get('hr', {})


def convert_for(state_dict: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, dict]:
  """Converts ``state_dict`` to variables shaped exactly like ``template``.

  ``template`` is the model's variables or their shapes (e.g. from
  ``jax.eval_shape(model.init, ...)``). Every tensor is checked before any
  conversion: the first missing, unexpected or wrongly shaped one is named
  in a one-line ReferenceWeightsError.
  """
  template = {'params': template['params'], 'batch_stats': template.get('batch_stats', {})}
  expected = to_torch(_zeros_like(template))
  want, got = _head_kind(template['params'].keys()), _head_kind(state_dict.keys())
  if want != got:
    raise ReferenceWeightsError(
        f'the state_dict is a {got} model ({", ".join(HEADS[got])}) but the config builds a '
        f'{want} model: use the matching config (configs/genres.py or configs/metal.py)')
  for name, want in expected.items():
    if name not in state_dict:
      if name.endswith(_BN_STATE):
        continue  # saved by torch >= 0.4.1 only; carries no weights
      raise ReferenceWeightsError(f'missing tensor {name!r}: the model config expects shape '
                                  f'{tuple(want.shape)}')
    got = tuple(np.shape(state_dict[name]))
    if got != tuple(want.shape):
      raise ReferenceWeightsError(f'tensor {name!r} has shape {got}, the model config expects '
                                  f'{tuple(want.shape)}')
  for name in state_dict:
    if name not in expected:
      raise ReferenceWeightsError(f'unexpected tensor {name!r} (shape '
                                  f'{tuple(np.shape(state_dict[name]))}): not part of this model')
  return to_flax(state_dict, hidden_bias_rz=not _is_folded(template))
