"""DataInfo: what the model, reports and prediction need to know about a data set.

A workdir keeps it as ``data_info.json``, so evaluation and prediction of a
trained or imported model work without the data set itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model, reports and prediction need to know about a data set."""
  name: str
  class_names: tuple[str, ...]
  num_tabular: int  # width after encoding: the model's tabular input
  categorical_encoding: str
  split_sizes: Mapping[str, int]
  frames: int | None
  metadata: Mapping[str, Any]  # the data set's own metadata (tabular stats, clip, ...)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['class_names'] = list(self.class_names)
    d['split_sizes'] = dict(self.split_sizes)
    d['metadata'] = _jsonable(self.metadata)
    return d

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> DataInfo:
    return cls(name=d['name'], class_names=tuple(d['class_names']),
               num_tabular=int(d['num_tabular']),
               categorical_encoding=d['categorical_encoding'],
               split_sizes=dict(d['split_sizes']), frames=d.get('frames'),
               metadata=dict(d['metadata']))


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x
