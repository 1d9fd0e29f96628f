"""Reading a PyTorch checkpoint safely: the only place crnn_jax imports torch.

The file is loaded with ``weights_only=True`` and only numpy's scalar and dtype
types allowed (a fastai v1 ``opt`` entry holds numpy scalars), so a crafted
file cannot run code; it is never unpickled with ``weights_only=False``.
torch is imported inside ``load_torch_checkpoint``: it is an optional extra
(``pip install -e '.[torch]'``), needed only for this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy._core.multiarray import scalar

from crnn_jax.core.errors import UserError

TORCH_HINT = "pip install -e '.[torch]'"


def numpy_safe_globals() -> list:
  """numpy scalar and dtype types: what a fastai v1 ``opt`` entry pickles."""
  return ([(scalar, 'numpy.core.multiarray.scalar'), np.dtype]
          + [type(np.dtype(t)) for t in ('float64', 'float32', 'int64')])


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
  """Safely unpickles a PyTorch checkpoint: tensors, containers, numpy scalars only.

  Raises UserError (one line) if torch is missing, the file is unreadable,
  or it is not a plain checkpoint (a safe load refuses other globals).
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError(f'reading a PyTorch checkpoint needs torch: {TORCH_HINT}') from None
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f'checkpoint {path!r} not found')
  try:
    with torch.serialization.safe_globals(numpy_safe_globals()):
      return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
    raise UserError(f'{path!r} is not a reference checkpoint that can be loaded safely '
                    f'({_load_failure_reason(e)}); nothing in it was run') from None


_TORCH_BOILERPLATE = ('Weights only load failed', 'Please file an issue', 'Check the documentation')


def _load_failure_reason(error: Exception) -> str:
  """The informative line of torch's error, without its advice to retry with
  weights_only=False (which would run whatever the file contains)."""
  for line in str(error).splitlines():
    line = line.strip()
    if line and not line.startswith(_TORCH_BOILERPLATE):
      return line.replace('WeightsUnpickler error:', '').strip()[:200] or type(error).__name__
  return type(error).__name__


def state_dict_arrays(obj: Any, origin: str = 'checkpoint') -> dict[str, np.ndarray]:
  """The ``model`` state_dict of a reference checkpoint as numpy arrays."""
  if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
    obj = obj['model']  # the reference's {'model': state_dict, 'opt': ...}
  if (not isinstance(obj, Mapping) or not obj
      or not all(hasattr(v, 'detach') for v in obj.values())):
    found = f'keys {list(obj)[:5]}' if isinstance(obj, Mapping) else f'a {type(obj).__name__}'
    raise UserError(f'{origin} is not a reference checkpoint: expected a dict with a "model" '
                    f'state_dict of tensors, found {found}')
  return {str(name): value.detach().cpu().numpy() for name, value in obj.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  return state_dict_arrays(load_torch_checkpoint(path), repr(os.fspath(path)))
